"""Spectral-norm regularisation (Yoshida & Miyato 2017) as a train-time regulariser.

Why it should mitigate memorisation: reproducing an isolated artifact needs a function that
changes sharply between nearby inputs (the clean and the noisy row differ in a token or two),
and the top singular value σ_max of each weight matrix bounds how sharply a layer can react.
Penalising Σσ_max keeps every layer's Lipschitz constant small, which should favour the smooth
rule over the exceptions.

Loss = LM loss + (λ/2)·Σ σ_max over every weight matrix except LayerNorm, embeddings (wte, wpe,
and the unembedding, which GPT-2 ties to wte) and biases. Attention matrices mix heads that act
independently, so, as the original, the qkv projection is split into 3·n_head blocks (q, k and
v of each head) and the attention output projection into n_head blocks (each head's input
rows), each with its own σ. σ_max comes from one power iteration per step with persistent u
vectors (u ← W v / ‖W v‖ with v = Wᵀu / ‖Wᵀu‖; σ = uᵀW v, differentiable in W with u, v fixed,
so ∂σ/∂W = u vᵀ); the u's are the hook's state and are checkpointed with the trainer.

GPT-2 (`Conv1D`, weights stored [in, out]: c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) and
GPT-NeoX (`nn.Linear`, [out, in]: query_key_value, attention.dense, dense_h_to_4h, dense_4h_to_h)
are both handled; σ is the same for W and Wᵀ, only the head split depends on the layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from ingest.lm.runtime import model_device
from ingest.mitigation.methods._base import EditResult, EditTask, register
from ingest.mitigation.methods._train import regulariser_inputs, train_regularised
from ingest.mitigation.tinymem.train import lm_loss

LAMBDA_GRID = (0.001, 0.01, 0.1)
QKV = ("attn.c_attn", "attention.query_key_value")
ATTN_OUT = ("attn.c_proj", "attention.dense")


@dataclass(frozen=True)
class WeightBlocks:
    """One weight matrix and how it splits: `n` blocks along `dim` of the stored tensor."""

    name: str
    weight: nn.Parameter
    dim: int
    n: int

    def view(self) -> torch.Tensor:
        """[n, a, b] view of the blocks (no copy; gradients flow to `weight`)."""
        w = self.weight
        if self.dim == 0:
            return w.reshape(self.n, w.shape[0] // self.n, w.shape[1])
        return w.reshape(w.shape[0], self.n, w.shape[1] // self.n).transpose(0, 1)


def weight_blocks(model: nn.Module) -> list[WeightBlocks]:
    """Every penalised matrix of a GPT-2 or GPT-NeoX model with its head split (module doc)."""
    cfg = model.config
    n_head = getattr(cfg, "n_head", None) or getattr(cfg, "num_attention_heads", None)
    if not n_head:
        raise ValueError(f"{type(model).__name__}: config has no n_head / num_attention_heads")
    skip = {id(model.get_input_embeddings().weight)}
    if model.get_output_embeddings() is not None:
        skip.add(id(model.get_output_embeddings().weight))
    out = []
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Linear, Conv1D)) or id(mod.weight) in skip:
            continue
        out_dim, in_dim = (1, 0) if isinstance(mod, Conv1D) else (0, 1)
        if name.endswith(QKV):
            dim, n = out_dim, 3 * n_head
        elif name.endswith(ATTN_OUT):
            dim, n = in_dim, n_head
        else:
            dim, n = 0, 1
        if mod.weight.shape[dim] % n:
            raise ValueError(f"{name}: cannot split {tuple(mod.weight.shape)} into {n} head blocks")
        out.append(WeightBlocks(f"{name}.weight", mod.weight, dim, n))
    if not out:
        raise ValueError(f"no weight matrices to penalise in {type(model).__name__}")
    return out


@torch.no_grad()
def exact_sigmas(blocks: list[WeightBlocks]) -> torch.Tensor:
    """Every block's exact σ_max (an SVD each), concatenated: the reference for the estimates."""
    return torch.cat([torch.linalg.matrix_norm(b.view().float(), ord=2) for b in blocks])


class SpectralPenalty:
    """`loss_fn(model, tokens, ids)` for the trainer: LM loss + (λ/2)·Σσ_max, one power iteration
    per call. `sigmas()` alone gives the current estimates (for tests and stats)."""

    def __init__(self, model: nn.Module, lam: float, *, seed: int = 0, pad_id: int | None = None):
        lam = float(lam)
        if not lam >= 0.0:  # also rejects NaN
            raise ValueError(f"lam must be >= 0, got {lam}")
        self.lam = lam
        self.pad_id = pad_id
        self.blocks = weight_blocks(model)
        gen = torch.Generator().manual_seed(seed)
        self.u: dict[str, torch.Tensor] = {}
        for b in self.blocks:
            n, a, _ = b.view().shape
            u = torch.randn(n, a, generator=gen)
            self.u[b.name] = F.normalize(u, dim=1).to(b.weight.device, torch.float32)

    @torch.no_grad()
    def _iterate(self, b: WeightBlocks) -> torch.Tensor:
        """One power-iteration step for b's blocks; updates u, returns v."""
        w = b.view().float()
        v = F.normalize(torch.einsum("nab,na->nb", w, self.u[b.name]), dim=1)
        self.u[b.name] = F.normalize(torch.einsum("nab,nb->na", w, v), dim=1)
        return v

    def sigmas(self, *, iterate: bool = True) -> dict[str, torch.Tensor]:
        """σ_max estimate [n] per matrix (differentiable in the weights). With iterate=False the
        current u is used as is (v recomputed from it)."""
        out = {}
        for b in self.blocks:
            if iterate:
                v = self._iterate(b)
            else:
                with torch.no_grad():
                    v = F.normalize(torch.einsum("nab,na->nb", b.view().float(), self.u[b.name]), dim=1)
            out[b.name] = torch.einsum("na,nab,nb->n", self.u[b.name], b.view().float(), v)
        return out

    def penalty(self) -> torch.Tensor:
        return 0.5 * self.lam * sum(s.sum() for s in self.sigmas().values())

    def __call__(self, model: nn.Module, tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        loss = lm_loss(model, tokens.to(model_device(model)), self.pad_id)
        return loss + self.penalty() if self.lam > 0 else loss

    def state_dict(self) -> dict[str, Any]:
        return {"lam": self.lam, "u": {k: v.clone() for k, v in self.u.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["u"]) != set(self.u):
            raise ValueError("checkpointed spectral-norm state does not match this model's matrices")
        for k, v in state["u"].items():
            if v.shape != self.u[k].shape:
                raise ValueError(
                    f"{k}: checkpointed u has shape {tuple(v.shape)}, expected {tuple(self.u[k].shape)}"
                )
            self.u[k] = v.to(self.u[k])


@register("spectral_norm", "regulariser", grid=[{"lam": lam} for lam in LAMBDA_GRID])
def spectral_norm(model: nn.Module, task: EditTask, *, seed: int = 0, lam: float = 0.01) -> EditResult:
    """Train the fresh `model` on the task's training set with its recipe and the (λ/2)·Σσ_max
    penalty (`final_loss` includes it). Stats add the trained model's exact Σσ_max over all blocks
    and the largest σ."""
    data, recipe = regulariser_inputs(task)
    hook = SpectralPenalty(model, lam, seed=seed, pad_id=data.pad_id)
    stats = train_regularised(model, data, recipe, hook, seed=seed)
    sig = exact_sigmas(hook.blocks)
    return EditResult(model, {**stats, "sigma_sum": float(sig.sum()), "sigma_max": float(sig.max())})
