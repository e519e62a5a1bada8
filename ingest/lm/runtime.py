"""The runtime of a causal LM in memlake: where it runs, in which dtype, and in which mode.

One home for the helpers every job and mitigation method shares (scoring, extraction, editing,
fine-tuning), so that a device or dtype rule is decided once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def inference_device(device: str | torch.device | None = None) -> tuple[torch.device, torch.dtype]:
    """Device and weight dtype for inference: bf16 weights on CUDA (Pythia's `bf16-true` runs), fp32 on CPU.

    `device=None` picks CUDA when available. The statistics are reduced in float32 either way.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)


def to_inference(model: torch.nn.Module, device: str | torch.device | None = None) -> torch.nn.Module:
    """Move `model` to `inference_device(device)`, cast its weights, and put it in eval mode."""
    dev, dtype = inference_device(device)
    return model.to(device=dev, dtype=dtype).eval()


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode for the duration (dropout off), restoring the caller's mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's (first) parameters: where its inputs must go."""
    return next(model.parameters()).device
