"""Train the suite on the corpus's data order, saving a Hugging Face checkpoint per grid step.

Checkpoints land in `suite/<model>/step<N>/` (config, safetensors weights, tokenizer files),
so `from_pretrained(path)` loads them exactly like a Pythia revision. Each checkpoint is
written under a temporary name and renamed, and the optimiser state of the latest one is kept,
so an interrupted run resumes from its last checkpoint and reproduces the same weights.
When every checkpoint exists the `checkpoints` lake partition for the model is written.
A counterfactual twin (`ingest/suite/twins.py`) is the same run with some rows substituted.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from ingest.corpus.build import checkpoint_steps
from ingest.hub_suites import registered
from ingest.suite.model import build_model
from ingest.suite.schedule import lr_at
from ingest.suite.twins import Draw, HeldOutUnit, substitutions
from memlake.core import lake, settings
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.progress import progress
from memlake.core.twins import twin_name
from memlake.core.unit import Computed, WarehouseUnit, run_unit

STATE = "_train_state.pt"
hf_logging.disable_progress_bar()  # one rich bar per model is enough


def model_dir(wh: Warehouse, name: str) -> Path:
    return wh.suite / name


def step_dir(wh: Warehouse, name: str, step: int) -> Path:
    return model_dir(wh, name) / f"step{step}"


def _load_training_rows(wh: Warehouse) -> tuple[torch.Tensor, np.ndarray, int]:
    t = lake.read_table(wh, "instances", columns=["instance_id", "split", "tokens"])
    train = t.filter(t["split"].to_numpy(zero_copy_only=False) == "train")
    ids = train["instance_id"].to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise MemlakeError("instances: training instance_ids must be 0..n-1 in data order")
    tokens = np.stack(train["tokens"].to_numpy(zero_copy_only=False)).astype(np.int64)
    order_path = wh.suite / "data_order.npy"
    if not order_path.exists():
        raise MemlakeError(f"{order_path} is missing: run `memlake suite corpus` first")
    return torch.from_numpy(tokens), np.load(order_path), len(ids)


def epochs_for_even_grid(steps: int, every: int, steps_per_epoch: int) -> float:
    """An `order.epochs` whose run length, ceil(steps_per_epoch * epochs), is the next multiple
    of `every` at or after `steps` (the midpoint of the interval that rounds to it)."""
    target = every * -(-steps // every)
    return round((target - 0.5) / steps_per_epoch, 4)


def check_even_grid(steps: int, every: int, steps_per_epoch: int) -> None:
    """Warn when the run length is not a multiple of the checkpoint spacing.

    The last checkpoint is then off the grid: the last cohort is treated over a shorter interval
    than the others and event times in steps split (e = 14, 30, ... next to 0, 16, 32, ...).
    The profiles recode event time to checkpoint periods, which is exact either way, but an
    even grid keeps every cohort's exposure window the same length."""
    if steps % every:
        warnings.warn(
            f"the run is {steps} steps, not a multiple of order.checkpoint_every={every}: the last "
            f"checkpoint is off the grid; order.epochs: "
            f"{epochs_for_even_grid(steps, every, steps_per_epoch)} makes it even",
            stacklevel=2,
        )


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decay matrices only (nanoGPT's rule): biases and LayerNorm gains stay undecayed.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _save_checkpoint(model, tokenizer, out: Path) -> None:
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    os.rename(tmp, out)


class Stopped(Exception):
    """Training ended early at `step` (`stop_after`): no partition is written."""

    def __init__(self, step: int):
        super().__init__(f"stopped after step {step}")
        self.step = step


@dataclass(frozen=True)
class TrainUnit(WarehouseUnit):
    """One suite model, or (`twin`) its counterfactual twin: its checkpoint folders are written
    as training goes, and its `checkpoints` partition, written last, marks it complete.
    `stop_after` ends early (for tests of resumption)."""

    model: settings.SuiteModel
    suite: settings.Suite
    order: settings.Order
    row_len: int
    seed: int
    root: str  # the warehouse root (a string: units pickle)
    stop_after: int | None = None
    twin: bool = False  # train `<model>-twin` on the rows of its `twin_heldout` partition
    table = "checkpoints"

    @property
    def name(self) -> str:
        return twin_name(self.model.name) if self.twin else self.model.name

    @property
    def partition(self) -> dict[str, Any]:
        return {"model": self.name}

    def check(self) -> None:
        if self.twin and not lake.is_complete(self.warehouse, "twin_heldout", {"model": self.name}):
            raise MemlakeError(
                f"twin_heldout has no partition for {self.name!r}: run `memlake suite train --twins`"
            )

    def compute(self, log) -> Computed:
        return _train(self, substitutions(self.warehouse, self.name) if self.twin else None)

    def run(self, log=print) -> dict[str, Any]:
        out = run_unit(self, log)
        # the partition marks the model done: the resume state is not needed any more
        (model_dir(self.warehouse, self.name) / STATE).unlink(missing_ok=True)
        return out


def train_model(
    model: settings.SuiteModel,
    suite: settings.Suite,
    order: settings.Order,
    row_len: int,
    seed: int,
    wh: Warehouse,
    stop_after: int | None = None,
    twin: Draw | None = None,
) -> dict[str, Any]:
    """Train one suite model, or (`twin`: what its held-out set is drawn from) its twin;
    resumable. `stop_after` ends early (for tests of resumption)."""
    if twin is not None:
        HeldOutUnit(model.name, twin.corpus, twin.panel, seed, str(wh.root)).run()
    unit = TrainUnit(model, suite, order, row_len, seed, str(wh.root), stop_after, twin is not None)
    try:
        r = unit.run()
    except Stopped as e:
        return {"model": unit.name, "stopped_at": e.step}
    if r["skipped"]:
        return {"model": unit.name, "skipped": True}
    return {k: r[k] for k in ("model", "steps", "seconds", "tokens_per_s", "final_loss")}


@dataclass
class Fit:
    """What one training run did: its checkpoint steps, per-step losses (from step 1), the run's
    length in steps, the step it resumed from, seconds trained and the data's shape."""

    ckpts: list[int]
    losses: list[float]
    total: int
    start: int
    seconds: float
    n_train: int


def fit(
    spec: settings.SuiteModel,
    s: settings.Suite,
    order: settings.Order,
    row_len: int,
    seed: int,
    wh: Warehouse,
    mdir: Path,
    *,
    replace: dict[int, np.ndarray] | None = None,
    stop_after: int | None = None,
    until: int | None = None,
    label: str | None = None,
) -> Fit:
    """Train `spec` on the warehouse's data order into `mdir`/step<N> folders, resuming from the
    state saved at its last checkpoint. `replace` maps training instance ids to the rows trained
    in their place (a twin's or an oracle's fillers), wherever the data order has them. `until`
    ends the run at that checkpoint step (an oracle needs no later one); `stop_after` raises
    `Stopped` (tests of resumption)."""
    threads = s.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)

    tokens, data_order, n_train = _load_training_rows(wh)
    if replace:
        ids = sorted(replace)
        tokens[torch.tensor(ids)] = torch.from_numpy(np.stack([replace[i] for i in ids]).astype(np.int64))
    bs, every = order.batch_size, order.checkpoint_every
    total = len(data_order) // bs
    check_even_grid(total, every, n_train // bs)
    ckpts = checkpoint_steps(total, every)
    if until is not None:
        if until not in ckpts:
            raise MemlakeError(
                f"step {until} is not a checkpoint step of {spec.name} ({ckpts[0]} ... {ckpts[-1]})"
            )
        ckpts, total = [c for c in ckpts if c <= until], until
    tokenizer = AutoTokenizer.from_pretrained(str(wh.tokenizer))
    torch.manual_seed(seed)
    model = build_model(spec.record(), len(tokenizer), row_len)
    opt = torch.optim.AdamW(
        _param_groups(model, s.weight_decay),
        lr=spec.lr,
        betas=tuple(s.betas),
        fused=False,
    )
    losses: list[float] = []
    start = 0
    state_path = mdir / STATE
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        if (mdir / f"step{state['step']}").exists():
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            losses, start = state["losses"], state["step"]
            torch.set_rng_state(state["rng"])
    if start == 0:
        mdir.mkdir(parents=True, exist_ok=True)
        _save_checkpoint(model, tokenizer, mdir / "step0")

    # the schedule of the full run, also when `until` ends it early
    run_length = len(data_order) // bs

    def lr(step: int) -> float:
        return lr_at(step, run_length, spec.lr, s.warmup_fraction, s.min_lr_ratio)

    model.train()
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"train {label or spec.name}", total=total, completed=start)
        for step in range(start + 1, total + 1):
            for g in opt.param_groups:
                g["lr"] = lr(step)
            batch = tokens[torch.from_numpy(data_order[(step - 1) * bs : step * bs])]
            logits = model(input_ids=batch).logits
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            opt.step()
            losses.append(loss.item())
            bar.update(task, advance=1)
            if step in ckpts:
                _save_checkpoint(model, tokenizer, mdir / f"step{step}")
                torch.save(
                    {
                        "step": step,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "losses": losses,
                        "rng": torch.get_rng_state(),
                    },
                    state_path,
                )
            if stop_after is not None and step >= stop_after:
                raise Stopped(step)
    return Fit(ckpts, losses, total, start, time.perf_counter() - t0, n_train)


def _train(unit: TrainUnit, replace: dict[int, np.ndarray] | None = None) -> Computed:
    """Train `unit`'s model (`fit`) and its `checkpoints` rows."""
    spec, s, wh = unit.model, unit.suite, unit.warehouse
    name, row_len = unit.name, unit.row_len
    f = fit(spec, s, unit.order, row_len, unit.seed, wh, model_dir(wh, name), replace=replace,
            stop_after=unit.stop_after, label=name)  # fmt: skip
    ckpts, losses, total, start, seconds, n_train = f.ckpts, f.losses, f.total, f.start, f.seconds, f.n_train
    bs, every = unit.order.batch_size, unit.order.checkpoint_every

    def lr(step: int) -> float:
        return lr_at(step, total, spec.lr, s.warmup_fraction, s.min_lr_ratio)

    rows = []
    for i, step in enumerate(ckpts):
        prev = ckpts[i - 1] if i else 0
        window = losses[prev:step]
        rows.append(
            {
                "model": name,
                "step": step,
                "path": str(step_dir(wh, name, step)),
                "lr": lr(step) if step else 0.0,
                "tokens_seen": step * bs * row_len,
                "epoch": step * bs / n_train,
                "train_loss": float(np.mean(window)) if window else None,
                "revision": f"step{step}",
                "first_epoch_end": n_train // bs,
                "twin_of": spec.name if unit.twin else None,
            }
        )
    table = pa.Table.from_pylist(rows, schema=lake.spec("checkpoints").schema)
    order, seed = unit.order.record(), unit.seed
    provenance = {"model": spec.record(), "suite": s.record(), "order": order, "seed": seed}
    if unit.twin:
        provenance["twin_of"] = spec.name
    trained = total - start
    summary = {
        "model": name,
        "steps": total,
        "seconds": seconds,
        "tokens_per_s": trained * bs * row_len / seconds if seconds else None,
        "final_loss": float(np.mean(losses[-every:])),
    }
    return Computed(table, provenance=provenance, summary=summary)


def select_models(
    suite: settings.Suite, wh: Warehouse, models: list[str] | None = None, twins: bool = False
) -> list[settings.SuiteModel]:
    """The config's suite models named by `models` (all when None)."""
    specs = suite.models
    if not models:
        return specs
    known = {m.name for m in specs}
    unknown = [m for m in models if m not in known]
    if unknown and twins:
        name = unknown[0]
        what = "is a Hub-registered model" if registered(wh, name) else "is not a model of the config's suite"
        raise MemlakeError(
            f"--twins: {name!r} {what}; a twin needs the model's training run (suite models: {sorted(known)})"
        )
    if unknown:
        raise MemlakeError(f"unknown suite model(s) {unknown} (config has {sorted(known)})")
    return [m for m in specs if m.name in models]


def train_suite(
    suite: settings.Suite,
    order: settings.Order,
    row_len: int,
    seed: int,
    wh: Warehouse,
    models: list[str] | None = None,
    twins: Draw | None = None,
) -> list[dict]:
    """Train the models (and with `twins`, what their held-out sets are drawn from, each
    model's twin after it); one record per model trained or skipped."""
    out = []
    for spec in select_models(suite, wh, models, twins=twins is not None):
        out.append(train_model(spec, suite, order, row_len, seed, wh))
        if twins is not None:
            out.append(train_model(spec, suite, order, row_len, seed, wh, twin=twins))
    return out
