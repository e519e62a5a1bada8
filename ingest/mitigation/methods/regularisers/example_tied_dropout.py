"""Example-tied dropout (Maini et al. 2023) as a train-time regulariser — the corrected version.

Why it should mitigate memorisation: hidden units are split into "generalisation" units, on for
every example, and "memorisation" units, each on for a fixed random subset of examples. A rule
shared by many examples is learned fastest by the units they all share; what only one example
needs (its artifact) can be stored in the few memorisation units tied to that example. At test
time the memorisation units are dropped, and with them, ideally, the memorised exceptions.

Here the mask acts on the residual stream at the start of every transformer block,
before ln_1, through a forward pre-hook on the block:
- training (a forward inside `tied(ids)`, which the loss hook opens for each batch): the first
  round(p_fixed·d) units are always on; every other unit is on with probability p_mem, drawn once per
  (example id, layer) from a generator seeded by (seed, id), so an example gets the same mask in
  every epoch and the 10^p copies of a duplicated artifact, which share an id in
  `data.train_ids`, share it too;
- otherwise (evaluation, generation, any forward without ids): memorisation units are zeroed and
  generalisation units scaled by (p_fixed + p_mem)/p_fixed, the published rule. (The expected
  fraction of units on in training is p_fixed + (1 − p_fixed)·p_mem, so the rule over-scales a
  little, 1.5 vs 1.4 at the defaults; it is kept for parity with the paper's numbers.)

The returned model carries the evaluation behaviour: the hooks stay registered (and survive
`copy.deepcopy`), and `model.config.example_tied_dropout` records the settings so `restore(model)`
re-attaches them to a model reloaded with `from_pretrained` (hooks are not saved).

The original's flaw, fixed here: its port indexed dim 1 of the activations, which
for a transformer's [B, T, d] stream is the sequence position, so it dropped whole token
positions instead of hidden units; and it allocated a 4-D CNN-style mask table with a hard max
id of 60,000. Here masks are over hidden units (the last dim, identical at every position) and
are generated on demand from the id, so there is no table and no limit on ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ingest.lm.runtime import model_device
from ingest.mitigation.methods._base import EditResult, EditTask, register
from ingest.mitigation.methods._train import regulariser_inputs, train_regularised
from ingest.mitigation.tinymem.train import lm_loss

P_FIXED, P_MEM = 0.2, 0.1
CONFIG_KEY = "example_tied_dropout"


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks whose input is the residual stream, for GPT-2 (`h`) and GPT-NeoX (`layers`)."""
    base = model.base_model
    for attr in ("h", "layers"):
        if isinstance(getattr(base, attr, None), nn.ModuleList):
            return list(getattr(base, attr))
    raise ValueError(f"unsupported architecture {type(model).__name__}: expected GPT-2 or GPT-NeoX blocks")


class ExampleTiedDropout:
    """The masks of one model: per-example training masks and the evaluation scaling."""

    def __init__(
        self,
        n_layer: int,
        width: int,
        *,
        p_fixed: float = P_FIXED,
        p_mem: float = P_MEM,
        seed: int = 0,
        pad_id: int | None = None,
    ):
        if not 0.0 < p_fixed < 1.0 or not 0.0 <= p_mem <= 1.0:
            raise ValueError(
                f"need 0 < p_fixed < 1 and 0 <= p_mem <= 1, got p_fixed={p_fixed}, p_mem={p_mem}"
            )
        if not 0 <= seed < 2**31:
            raise ValueError(f"seed must be in [0, 2^31), got {seed}")
        self.n_layer, self.width = n_layer, width
        self.p_fixed, self.p_mem, self.seed = float(p_fixed), float(p_mem), int(seed)
        self.pad_id = pad_id  # for the training loss only
        self.n_fixed = min(width, max(1, round(p_fixed * width)))
        self._masks: torch.Tensor | None = None  # [B, L, d] while a training forward is tied to ids

    def settings(self) -> dict[str, Any]:
        return {"p_fixed": self.p_fixed, "p_mem": self.p_mem, "seed": self.seed}

    def example_mask(self, example_id: int) -> torch.Tensor:
        """[L, d] bool: the units on for this example in each layer (a pure function of id, seed)."""
        if not 0 <= example_id < 2**32:
            raise ValueError(f"example ids must be in [0, 2^32), got {example_id}")
        gen = torch.Generator().manual_seed(self.seed * 2**32 + example_id)
        on = torch.rand(self.n_layer, self.width, generator=gen) < self.p_mem
        on[:, : self.n_fixed] = True
        return on

    def masks(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, L, d] float masks for a batch of example ids (each distinct id drawn once)."""
        uniq, inverse = torch.unique(ids.cpu(), return_inverse=True)
        table = torch.stack([self.example_mask(int(i)) for i in uniq]).float()
        return table[inverse]

    def eval_scale(self) -> torch.Tensor:
        """[d]: 0 on memorisation units, (p_fixed + p_mem)/p_fixed on generalisation units."""
        scale = torch.zeros(self.width)
        scale[: self.n_fixed] = (self.p_fixed + self.p_mem) / self.p_fixed
        return scale

    @contextmanager
    def tied(self, ids: torch.Tensor, device: torch.device | None = None) -> Iterator[None]:
        """Forwards inside use the training masks of these example ids (one per batch row)."""
        self._masks = self.masks(ids).to(device) if device is not None else self.masks(ids)
        try:
            yield
        finally:
            self._masks = None

    def factor(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """What block `layer`'s input is multiplied by: [B, 1, d] training masks or the [d] scale."""
        if self._masks is None:
            return self.eval_scale().to(hidden)
        if self._masks.shape[0] != hidden.shape[0]:
            raise ValueError(f"{self._masks.shape[0]} example ids for a batch of {hidden.shape[0]} rows")
        return self._masks[:, layer, None, :].to(hidden)

    def __call__(self, model: nn.Module, tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The trainer's loss hook: the LM loss with each row's example-tied masks."""
        dev = model_device(model)
        with self.tied(ids, dev):
            return lm_loss(model, tokens.to(dev), self.pad_id)


class _BlockHook:
    """Forward pre-hook of one block: multiplies the incoming residual stream by the mask."""

    def __init__(self, dropout: ExampleTiedDropout, layer: int):
        self.dropout, self.layer = dropout, layer

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (args[0] * self.dropout.factor(self.layer, args[0]), *args[1:]), kwargs
        hidden = kwargs["hidden_states"]
        return args, {**kwargs, "hidden_states": hidden * self.dropout.factor(self.layer, hidden)}


def attach(
    model: nn.Module,
    *,
    p_fixed: float = P_FIXED,
    p_mem: float = P_MEM,
    seed: int = 0,
    pad_id: int | None = None,
) -> ExampleTiedDropout:
    """Register the hooks on every block, record the settings in the config, return the masks."""
    if isinstance(getattr(model, CONFIG_KEY, None), ExampleTiedDropout):
        raise ValueError("example-tied dropout is already attached to this model")
    blocks = transformer_blocks(model)
    width = model.get_input_embeddings().weight.shape[1]
    dropout = ExampleTiedDropout(len(blocks), width, p_fixed=p_fixed, p_mem=p_mem, seed=seed, pad_id=pad_id)
    for i, block in enumerate(blocks):
        block.register_forward_pre_hook(_BlockHook(dropout, i), with_kwargs=True)
    setattr(model, CONFIG_KEY, dropout)
    setattr(model.config, CONFIG_KEY, dropout.settings())
    return dropout


def restore(model: nn.Module) -> ExampleTiedDropout | None:
    """Re-attach the evaluation behaviour to a model loaded from a checkpoint saved after
    training with example-tied dropout (None if it was not)."""
    settings = getattr(model.config, CONFIG_KEY, None)
    if not settings or isinstance(getattr(model, CONFIG_KEY, None), ExampleTiedDropout):
        return getattr(model, CONFIG_KEY, None)
    return attach(model, **settings)


# The original ran only p_fixed = 0.2 (p_mem = 0.1); the sweep brackets it with more and fewer
# always-on units, mildest (most kept at evaluation) first.
P_FIXED_GRID = (0.4, 0.2, 0.1)


@register("example_tied_dropout", "regulariser", grid=[{"p_fixed": p} for p in P_FIXED_GRID])
def example_tied_dropout(
    model: nn.Module, task: EditTask, *, seed: int = 0, p_fixed: float = P_FIXED
) -> EditResult:
    """Train the fresh `model` on the task's training set with its recipe and example-tied dropout
    keyed on `data.train_ids`; the returned model keeps the hooks, so it evaluates with
    memorisation units dropped. The sweep varies p_fixed around the original's 0.2 (p_mem = 0.1
    throughout)."""
    data, recipe = regulariser_inputs(task)
    dropout = attach(model, p_fixed=p_fixed, p_mem=P_MEM, seed=seed, pad_id=data.pad_id)
    stats = train_regularised(model, data, recipe, dropout, seed=seed)
    return EditResult(
        model,
        {**stats, "generalisation_units": dropout.n_fixed, "eval_scale": float(dropout.eval_scale().max())},
    )
