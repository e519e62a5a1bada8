"""The runtime of a causal LM in memlake: where it runs, in which dtype, and in which mode.

One home for the helpers every job and mitigation method shares (scoring, extraction, editing,
fine-tuning), so that a device or dtype rule is decided once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Switches:
    """Kernel and runtime choices that change how (never what) the statistics are computed.

    They come from the config's `runtime` section, so `--set runtime.fused_head=true` turns one
    on and every manifest of the run records them. A job sets them for the span of one unit
    (`using`); kernels read `switches()`.
    """

    fused_stats: bool | None = None  # the Triton reduction: None = on CUDA when Triton is installed
    fused_head: bool = False  # the LM head folded into that reduction (off until measured)
    stats_overlap: bool = False  # the reduction on a second CUDA stream beside the next head matmul
    cuda_graphs: bool = True  # the greedy decode loop captured as a CUDA graph
    head_tiles: tuple[tuple[str, int], ...] = ()  # tile overrides of the fused head (tuning runs)
    threads: int = 0  # torch threads for the unit; 0 keeps the process's (all cores, or a worker's share)

    @classmethod
    def of(cls, section: Mapping[str, Any] | None) -> Switches:
        s = dict(section or {})
        s["head_tiles"] = tuple(sorted((s.get("head_tiles") or {}).items()))
        return cls(**s)


_SWITCHES: ContextVar[Switches | None] = ContextVar("memlake_runtime_switches", default=None)


def switches() -> Switches:
    """The switches in force (the defaults outside `using`)."""
    return _SWITCHES.get() or Switches()


@contextmanager
def using(s: Switches) -> Iterator[Switches]:
    """Run a block under switches `s`; the previous ones (and thread count) are back afterwards."""
    token, threads = _SWITCHES.set(s), torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    try:
        yield s
    finally:
        _SWITCHES.reset(token)
        torch.set_num_threads(threads)


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
