"""Scoring jobs over model checkpoints: one unit of work = (job, model, revision, shard).

A unit is a pure function of its fields: it reads the panel from the lake, loads the model,
computes, and writes exactly one lake partition (atomically, with a manifest). Re-running a
unit whose partition is complete does nothing, so a killed job resumes by running the same
plan again, and any executor (local loop, Slurm array, Ray) can run units in any order.
"""

from __future__ import annotations

import functools
import json
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch

from ingest.checkpoints import ModelRef, expand_revisions, load_model, local_steps, resolve
from ingest.lm.runtime import Switches, inference_device, using
from ingest.panel import load_panel, shard_slice
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.registry import Registry
from memlake.core.unit import Computed, Unit


@dataclass(frozen=True)
class ScoringUnit(Unit):
    """One (job, model, revision, shard): a job's statistics over one shard of the panel."""

    job: str
    model: str  # as the user gave it: suite name, local folder or Hub id
    step: int
    shard: int
    num_shards: int
    root: str  # the warehouse root (a string: units pickle to other machines)
    options: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def opts(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse.at(self.root)

    @property
    def table(self) -> str:  # type: ignore[override]
        return JOBS[self.job].table

    @property
    def label(self) -> str:
        return f"{self.job} {self.model}@step{self.step} shard {self.shard}"

    @functools.cached_property
    def ref(self) -> ModelRef:
        """The checkpoint, resolved once per unit (the partition and the scoring both need it)."""
        return resolve(self.model, f"step{self.step}", self.warehouse)

    @property
    def partition(self) -> dict[str, Any]:
        return JOBS[self.job]().partition(self, self.ref)

    def check(self) -> None:
        size = self.opts.get("batch_size", "auto")
        if size != "auto" and not (isinstance(size, int) and size >= 1):
            raise MemlakeError(f"ingest.batch_size: expected a positive integer or 'auto', got {size!r}")

    def compute(self, log) -> Computed:
        return _score(self, log)


JOBS: Registry[type[Job]] = Registry("job")


class Job(ABC):
    name: ClassVar[str]
    table: ClassVar[str]

    def partition(self, unit: ScoringUnit, ref: ModelRef) -> dict[str, Any]:
        return {"model": ref.name, "step": unit.step, "shard": unit.shard}

    def check(self, tokens: np.ndarray, opts: dict[str, Any]) -> None:
        """Raise on options that cannot apply to these rows (before any model is loaded)."""
        return None  # most jobs apply to any rows

    @abstractmethod
    def compute(self, model, batch: torch.Tensor, opts: dict[str, Any]) -> dict[str, np.ndarray]:
        """Columns for one batch of rows (numpy, first axis = rows)."""

    @abstractmethod
    def to_table(self, ids: np.ndarray, cols: dict[str, np.ndarray], opts: dict[str, Any]) -> pa.Table:
        """The partition's rows in the lake table's file schema."""


@JOBS.register("token_stats", named=True)
class TokenStats(Job):
    table = "token_stats"

    def compute(self, model, batch, opts):
        from ingest.token_stats import token_statistics

        out = token_statistics(model, batch, second_moment=True)
        return {k: v.cpu().numpy() for k, v in out.items()}

    def to_table(self, ids, cols, opts):
        return pa.table(
            {
                "instance_id": pa.array(ids, pa.int64()),
                "surprisal": lake.list_column(cols["surprisal"].astype(np.float32), pa.float32()),
                "rank": lake.list_column(cols["rank"].astype(np.int32), pa.int32()),
                "entropy": lake.list_column(cols["entropy"].astype(np.float32), pa.float32()),
                "second_moment": lake.list_column(cols["second_moment"].astype(np.float32), pa.float32()),
            }
        )


@JOBS.register("extraction", named=True)
class Extraction(Job):
    table = "extraction"

    def partition(self, unit, ref):
        o = unit.opts
        return {
            "model": ref.name,
            "step": unit.step,
            "prompt_len": int(o["prompt_len"]),
            "gen_len": int(o["gen_len"]),
            "shard": unit.shard,
        }

    def check(self, tokens, opts):
        need = int(opts["prompt_len"]) + int(opts["gen_len"])
        if tokens.shape[1] < need:
            raise MemlakeError(
                f"extraction: prompt_len + gen_len = {need} exceeds the instances' length {tokens.shape[1]}"
            )

    def __init__(self):
        from ingest.extraction import DecodeBuffers

        # a job object lives for one unit, i.e. one checkpoint: its batches share decoding memory
        self.buffers = DecodeBuffers()

    def compute(self, model, batch, opts):
        from ingest.extraction import greedy_extract, match_fraction

        p, g = int(opts["prompt_len"]), int(opts["gen_len"])
        generated = greedy_extract(model, batch[:, :p], g, targets=batch[:, p : p + g], buffers=self.buffers)
        return {
            "generated": generated.cpu().numpy(),
            "match_fraction": match_fraction(generated, batch[:, p : p + g]).cpu().numpy(),
        }

    def to_table(self, ids, cols, opts):
        frac = cols["match_fraction"].astype(np.float32)
        return pa.table(
            {
                "instance_id": pa.array(ids, pa.int64()),
                "generated": lake.list_column(cols["generated"].astype(np.int32), pa.int32()),
                "match_fraction": frac,
                "memorised": frac == 1.0,
            }
        )


# --------------------------------------------------------------------------- planning


def plan_units(
    job: str,
    model: str,
    revisions: str,
    wh: Warehouse,
    num_shards: int = 1,
    options: dict[str, Any] | None = None,
) -> list[ScoringUnit]:
    JOBS.get(job)  # an unknown job fails before anything is looked up
    available = available_steps(model, wh)
    steps = expand_revisions(revisions, available)
    if available is not None:
        missing = [s for s in steps if s not in available]
        if missing:
            raise MemlakeError(
                f"model {model!r}: revision(s) {[f'step{s}' for s in missing][:5]} "
                f"not found (has {len(available)} revisions, step{available[0]}..step{available[-1]})"
            )
    opts = tuple(sorted((options or {}).items()))
    units = [
        ScoringUnit(job, model, s, k, num_shards, str(wh.root), opts)
        for s in steps
        for k in range(num_shards)
    ]
    return units


def available_steps(model: str, wh: Warehouse) -> list[int] | None:
    """Checkpoint steps of a local suite model or folder, or the revisions of a registered Hub
    suite (a known family, e.g. Pythia, is registered on first use); None for a single folder."""
    from ingest.hub_suites import ensure_registered

    for folder in (wh.suite / model, Path(model)):
        if folder.is_dir() and not (folder / "config.json").exists():
            return local_steps(folder)
    if Path(model).expanduser().exists():
        return None
    reg = ensure_registered(wh, model)
    return reg["steps"] if reg else None


# --------------------------------------------------------------------------- running


def _score(unit: ScoringUnit, log) -> Computed:
    """Load the shard's rows and the checkpoint, run the job in batches, build its table."""
    wh, opts = unit.warehouse, unit.opts
    job, ref = JOBS[unit.job](), unit.ref
    ids, tokens = load_panel(wh, opts.get("panel", {}), int(opts.get("seed", 0)))
    sl = shard_slice(len(ids), unit.shard, unit.num_shards)
    ids, tokens = ids[sl], tokens[sl]
    job.check(tokens, opts)
    device, dtype = inference_device()  # bf16 weights on a GPU, fp32 on CPU
    model = load_model(ref, dtype=dtype, device=device)
    _check_compatible(model, ref, tokens, wh)
    size = opts.get("batch_size", "auto")
    batch_size = auto_batch_size(model, tokens.shape[1], device) if size == "auto" else size
    t0 = time.perf_counter()
    with using(Switches.of(opts.get("runtime"))):
        cols = _batched(job, model, torch.from_numpy(tokens), opts, batch_size, device, log)
    seconds = time.perf_counter() - t0  # the scoring itself, without loading (for tokens/s)
    provenance = {
        "job": unit.job,
        "model": unit.model,
        "revision": f"step{unit.step}",
        "shard": unit.shard,
        "num_shards": unit.num_shards,
        "device": str(device),
        "dtype": str(dtype),
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 3),
        **opts,
    }
    summary = {"tokens": int(tokens.size), "seconds": seconds}
    return Computed(job.to_table(ids, cols, opts), provenance, summary)


def _check_compatible(model, ref: ModelRef, tokens: np.ndarray, wh: Warehouse) -> None:
    cfg = model.config
    vocab = cfg.vocab_size
    if tokens.size and int(tokens.max()) >= vocab:
        raise MemlakeError(
            f"instances: token id {int(tokens.max())} is out of range for model "
            f"{ref.name} (vocabulary {vocab})"
        )
    # A row's last token is only ever a target, so rows may be one token longer than the context
    # (Pythia: 2,049-token rows, 2,048 positions).
    context = getattr(cfg, "max_position_embeddings", None)
    if context and tokens.shape[1] - 1 > context:
        raise MemlakeError(
            f"instances: rows of {tokens.shape[1]} tokens exceed model {ref.name}'s context of {context} "
            "(+1 target token)"
        )
    theirs = _instances_tokenizer(wh)
    if theirs is None:
        return
    mine = _vocab(ref.location, ref.revision)
    if mine is not None and mine != _vocab(theirs, None):
        where = f"{ref.location}@{ref.revision}" if ref.revision else ref.location
        raise MemlakeError(
            f"tokenizer of {where} does not match the tokenizer {theirs} that made the instances"
        )


def _instances_tokenizer(wh: Warehouse) -> str | None:
    """The tokenizer that made the instances: the one the instances manifest records (Hub
    imports), else the warehouse's own (the embedded corpus), else unknown."""
    if lake.is_complete(wh, "instances", {}):
        recorded = lake.manifest(wh.table("instances")).get("config", {}).get("tokenizer")
        if recorded:
            return str(recorded)
    return str(wh.tokenizer) if (wh.tokenizer / "tokenizer.json").exists() else None


@functools.lru_cache(maxsize=16)
def _vocab(location: str, revision: str | None) -> dict[str, int] | None:
    """A tokenizer's vocabulary: read from a local tokenizer.json, else loaded the way
    `from_pretrained` finds it (Hub id + revision, cache when offline); None if it has none."""
    path = os.path.join(location, "tokenizer.json")
    if os.path.isfile(path):
        with open(path) as f:
            spec = json.load(f)
        # as get_vocab() sees it: the model's vocabulary plus the added (special) tokens
        return {**spec["model"]["vocab"], **{t["content"]: t["id"] for t in spec.get("added_tokens", [])}}
    if os.path.isdir(location):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(location, revision=revision).get_vocab()
    except (OSError, ValueError):  # the model ships no tokenizer: nothing to compare
        return None


CPU_BATCH_TOKENS = 16_384


def auto_batch_size(model, row_len: int, device: torch.device, free_bytes: int | None = None) -> int:
    """Rows per forward for `batch_size: auto`. On a CPU, the largest power of two within 16k
    tokens (256 rows of 64 tokens, 4 of Pythia's 2,049): greedy decoding pays a fixed cost per
    step and batch that small models only amortise over many rows. On a GPU, the power of two
    whose activations fit in half the free memory, next to one chunk of logits (`token_stats`),
    at most 1,024. Generous per row (24 bf16 values per hidden unit per position: QKV, the 4h MLP
    and the residual stream of one layer at a time, inference frees the rest); an out-of-memory
    batch is still halved and retried."""
    if device.type != "cuda":
        return int(2 ** max(0, (CPU_BATCH_TOKENS // max(1, row_len)).bit_length() - 1))
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    per_row = row_len * model.config.hidden_size * 24 * 2
    rows = (free_bytes // 2 - 2**30) // per_row
    return int(min(1024, 2 ** max(0, int(rows).bit_length() - 1))) if rows >= 1 else 1


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError | MemoryError) or "out of memory" in str(e).lower()


def _batched(job: Job, model, tokens: torch.Tensor, opts, batch_size: int, device: torch.device, log):
    """Run `job.compute` over batches; on out-of-memory halve the batch and say so."""
    outs: dict[str, list[np.ndarray]] = {}
    i = 0
    while i < len(tokens):
        batch = tokens[i : i + batch_size].to(device)
        try:
            with torch.inference_mode():
                cols = job.compute(model, batch, opts)
        except (RuntimeError, MemoryError) as e:
            if not _is_oom(e) or batch_size == 1:
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            batch_size //= 2
            log(f"out of memory at batch size {batch_size * 2}; retrying with {batch_size}")
            continue
        for k, v in cols.items():
            outs.setdefault(k, []).append(v)
        i += len(batch)
    return {k: np.concatenate(v) for k, v in outs.items()}
