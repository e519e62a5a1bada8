"""Mitigation sweeps: every (method, hyper-parameters, seed) run is one row in `mitigation_runs`.

A `Study` fixes what runs edit and how they are scored: the base model (TinyMem trained here, or
a suite/Hub checkpoint), the `EditTask` every run gets (forget and retain sets, and for TinyMem
the training set and recipes), and `evaluate(model) -> metrics`. A `Run`
is a method name, one point of its grid and a seed; its id hashes those, so re-running a sweep
skips finished runs (one lake partition per run) and `rank`/`world_size` shard the run list the
way ingest jobs shard checkpoints.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import multiprocessing as mp
import os
import queue as queue_mod
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ingest.mitigation.methods import REGISTRY, AttributionCache, EditTask, Method, SequenceSet, get
from memlake.core import lake
from memlake.core.paths import Warehouse

N_DUP_CLASSES = 4  # per-duplication-class columns mem_{before,after}_dup0..3 (10^p copies)


@dataclass(frozen=True)
class Run:
    study: str
    method: str
    hparams: tuple[tuple[str, Any], ...]
    seed: int

    @property
    def run_id(self) -> str:
        key = json.dumps([self.method, dict(self.hparams), self.seed], sort_keys=True)
        return f"{self.method}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


@dataclass
class Study:
    name: str  # the lake partition, e.g. tinymem-increment-noise or suite-s
    model: str
    step: int
    base: nn.Module  # never edited: every run gets a deep copy
    fresh: Callable[[int], nn.Module]  # an untrained model of the same architecture (regularisers)
    task: EditTask  # what every run's method gets (a run adds its attribution cache)
    evaluate: Callable[[nn.Module], dict[str, float]]  # mem, acc, ppl, clean, mem_dup{p}
    before: dict[str, float] | None = None
    about: str = ""  # one line on how the sets were built (printed by the CLI)

    @property
    def forget(self) -> SequenceSet:
        return self.task.forget

    @property
    def retain(self) -> SequenceSet:
        return self.task.retain

    def baseline(self) -> dict[str, float]:
        if self.before is None:
            self.before = self.evaluate(self.base)
        return self.before

    def skips(self, method: Method) -> bool:
        """Whether a run of `method` has nothing to do: unlearning with nothing memorised
        (regularisers and fine-tuning need no forget rows)."""
        return len(self.forget) == 0 and method.kind not in ("regulariser", "fine_tuning")

    def starting_model(self, method: Method, seed: int) -> nn.Module:
        """What a run of `method` edits, after seeding torch with `seed`: an untrained model for a
        regulariser (it trains from scratch), else a copy of the base."""
        torch.manual_seed(seed)
        return self.fresh(seed) if method.kind == "regulariser" else copy.deepcopy(self.base)


def plan_runs(
    study: str, methods: list[str] | None = None, seeds: list[int] = (0,), max_per_method: int | None = None
) -> list[Run]:
    """Runs for every method's grid (the first `max_per_method` points of each), every seed."""
    names = methods or sorted(REGISTRY)
    runs = []
    for name in names:
        grid = list(get(name).grid or ({},))
        if max_per_method is not None and max_per_method < len(grid):
            # evenly spaced from the strongest end: grids run from the mildest setting up
            picks = (
                np.linspace(len(grid) - 1, 0, max_per_method).round().astype(int) if max_per_method else []
            )
            grid = [grid[i] for i in picks]
        for point in grid:
            runs += [Run(study, name, tuple(sorted(point.items())), int(s)) for s in seeds]
    return runs


def run_one(study: Study, run: Run, attributions: AttributionCache | None = None) -> dict[str, Any]:
    """Apply one run to a copy of the base model; the lake row of its before/after metrics.
    `attributions`: the caller's cache of ratio-independent scores (see `AttributionCache`)."""
    method = get(run.method)
    before = study.baseline()
    model = study.starting_model(method, run.seed)
    task = replace(study.task, attributions=attributions)
    t0 = time.perf_counter()
    if study.skips(method):
        result_stats, edited = {"skipped": "nothing memorised"}, model
    else:
        result = method.fn(model, task, seed=run.seed, **dict(run.hparams))
        result_stats, edited = result.stats, result.model
    seconds = time.perf_counter() - t0
    after = study.evaluate(edited)
    # with the rows the memorisation percentages are over (held-out triggered rows for a backdoor)
    stats = {**result_stats, "mem_rows": before.get("mem_rows")}
    row = {
        "study": study.name,
        "run_id": run.run_id,
        "method": run.method,
        "kind": method.kind,
        "hparams": json.dumps(dict(run.hparams), sort_keys=True),
        "seed": run.seed,
        "model": study.model,
        "step": study.step,
        "n_forget": len(study.forget),
        "mem_before": before["mem"],
        "mem_after": after["mem"],
        "clean_before": before.get("clean", math.nan),
        "clean_after": after.get("clean", math.nan),
        "acc_before": before["acc"],
        "acc_after": after["acc"],
        "ppl_before": before["ppl"],
        "ppl_after": after["ppl"],
        "seconds": seconds,
        "stats": json.dumps(stats, sort_keys=True, default=str),
    }
    for p in range(N_DUP_CLASSES):
        row[f"mem_before_dup{p}"] = before.get(f"mem_dup{p}")
        row[f"mem_after_dup{p}"] = after.get(f"mem_dup{p}")
    return row


def run_sweep(
    wh: Warehouse,
    study: Study,
    runs: list[Run],
    *,
    rank: int = 0,
    world_size: int = 1,
    config: dict | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """Run this rank's share of `runs`, skipping runs already in the lake; return the new rows.

    workers: processes sharing this rank's runs on one machine (default: the config's
    `mitigation.workers`, else 1). Small CPU models run one thread per process, so one worker
    per core keeps every core busy without threads contending. Workers are forked after the study
    is built (they share its base model and sets); each pulls whole methods, heaviest kinds first,
    from a shared counter, so one method's grid stays in one process and reuses its attribution.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if workers is None:
        workers = int(((config or {}).get("mitigation") or {}).get("workers") or 1)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    mine = runs[rank::world_size]
    small = sum(p.numel() for p in study.base.parameters()) < 5_000_000
    on_cpu = all(p.device.type == "cpu" for p in study.base.parameters())
    workers = min(workers, os.cpu_count() or 1, len({r.method for r in mine}) or 1)
    # tiny models are overhead-bound: one thread is far faster than two contending ones
    threads = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        if workers > 1 and small and on_cpu:
            return _sweep_forked(wh, study, mine, config, on_run, workers)
        return _sweep(wh, study, _units(mine), config, on_run)
    finally:
        torch.set_num_threads(threads)


# heaviest first, so the last unit to start is a short one (a longest-processing-time-first order)
_KIND_ORDER = {"regulariser": 0, "weight": 1, "fine_tuning": 2, "neuron": 3, "baseline": 4}


def _units(runs: list[Run]) -> list[list[Run]]:
    """The runs grouped by method (grid order kept), heavier kinds first."""
    by_method: dict[str, list[Run]] = {}
    for r in runs:
        by_method.setdefault(r.method, []).append(r)
    return sorted(by_method.values(), key=lambda u: _KIND_ORDER.get(get(u[0].method).kind, 9))


def _sweep(wh, study, units, config, on_run, claim: Callable[[], int] | None = None) -> list[dict[str, Any]]:
    """Run the units in order (or, with `claim`, the units whose index it hands out)."""
    rows = []
    # ratio-independent scores (neuron attributions, saliencies) are computed once per unit; the
    # cache lives as long as this call, so a process keeps no scores between sweeps
    attributions = AttributionCache()
    i = claim() if claim else 0
    while i < len(units):
        for run in units[i]:
            keys = {"study": study.name, "run_id": run.run_id}
            if lake.is_complete(wh, "mitigation_runs", keys):
                continue
            row = run_one(study, run, attributions)
            data = {k: [v] for k, v in row.items()}
            lake.write_partition(wh, "mitigation_runs", data, keys, config=config)
            rows.append(row)
            if on_run:
                on_run(row)
        i = claim() if claim else i + 1
    return rows


def _sweep_forked(wh, study, runs, config, on_run, workers) -> list[dict[str, Any]]:
    """`_sweep` in `workers` processes (this one and forked children) over a shared unit counter.
    Children send their rows back through a queue; a child that fails fails the sweep."""
    ctx = mp.get_context("fork")
    units = _units(runs)
    study.baseline()  # once, before forking: every process shares the same before-numbers
    counter = ctx.Value("i", 0)
    queue = ctx.Queue()

    def claim() -> int:
        with counter.get_lock():
            i = counter.value
            counter.value += 1
        return i

    def child() -> None:
        torch.set_num_threads(1)
        try:
            _sweep(wh, study, units, config, lambda row: queue.put(("row", row)), claim)
            queue.put(("done", None))
        except BaseException:  # noqa: BLE001 - reported to the parent, which raises
            queue.put(("error", traceback.format_exc()))

    rows: list[dict[str, Any]] = []
    state = {"pending": workers - 1, "errors": []}

    def take(message) -> None:
        kind, item = message
        if kind == "row":
            rows.append(item)
            if on_run:
                on_run(item)
        else:
            state["pending"] -= 1
            if kind == "error":
                state["errors"].append(item)

    def mine(row) -> None:  # the parent's own row, then whatever the children sent meanwhile
        rows.append(row)
        if on_run:
            on_run(row)
        while True:
            try:
                take(queue.get_nowait())
            except queue_mod.Empty:
                return

    procs = [ctx.Process(target=child, daemon=True) for _ in range(workers - 1)]
    for p in procs:
        p.start()
    try:
        _sweep(wh, study, units, config, mine, claim)
    except BaseException:
        for p in procs:
            p.terminate()
        raise
    while state["pending"]:
        alive = any(p.is_alive() for p in procs)
        try:
            take(queue.get(timeout=5 if alive else 1))
        except queue_mod.Empty:
            if not alive:  # every child has exited and nothing more came: one died silently
                state["errors"].append("a sweep worker died without reporting (killed?)")
                break
    for p in procs:
        p.join()
    if state["errors"]:
        raise RuntimeError("mitigation sweep worker failed:\n" + "\n".join(state["errors"]))
    return rows
