"""Mitigation sweeps: every (method, hyper-parameters, seed) run is one row in `mitigation_runs`.

A `Study` fixes what runs edit and how they are scored: the base model (TinyMem trained here, or
a suite/Hub checkpoint), the `EditTask` every run gets (forget and retain sets, and for TinyMem
the training set and recipes), and `evaluate(model) -> metrics`. A `Run`
is a method name, one point of its grid and a seed; its id hashes those. Each run is a
`MitigationRun` unit (one lake partition), so re-running a sweep skips finished runs, any
executor runs the plan, and `rank`/`world_size` shard the run list the way ingest jobs shard
checkpoints.

A unit carries its study's `spec`, not the study: a process that runs units of a study it does
not hold builds the study once from the spec (see `holding` and `_open`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from ingest.executors import execute
from ingest.mitigation.methods import REGISTRY, AttributionCache, EditTask, Method, SequenceSet, get
from ingest.mitigation.oracle import Probe, Reference, forget_measures, probe_scores
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.unit import Computed, Unit

if TYPE_CHECKING:
    from ingest.mitigation.studies import StudySpec

N_DUP_CLASSES = 4  # per-duplication-class columns mem_{before,after}_dup0..3 (10^p copies)
SMALL_MODEL = 5_000_000  # parameters below which a model runs on one thread (overhead-bound)


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
    spec: StudySpec | None = None  # how another process builds this study (None: it cannot)
    probe: Probe | None = None  # the rows the forget measures score (`ingest.mitigation.oracle`)
    oracle: Callable[[], nn.Module] | None = None  # the retrain oracle: trained on first call, then loaded
    _reference: Reference | None = field(default=None, repr=False)

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

    def reference(self) -> Reference | None:
        """The oracle's scores on the probe (None without an oracle or with nothing to forget)."""
        if self._reference is None and self.oracle is not None and self.probe and len(self.forget):
            self._reference = probe_scores(self.oracle(), self.probe)
        return self._reference

    def skips(self, method: Method) -> bool:
        """Whether a run of `method` has nothing to do: unlearning with nothing memorised
        (regularisers and fine-tuning need no forget rows)."""
        return len(self.forget) == 0 and method.kind not in ("regulariser", "fine_tuning")

    @property
    def small(self) -> bool:
        return sum(p.numel() for p in self.base.parameters()) < SMALL_MODEL

    @contextmanager
    def threads(self) -> Iterator[None]:
        """One torch thread for a small model while the block runs: tiny models are
        overhead-bound, and one thread is far faster than two contending ones."""
        before = torch.get_num_threads()
        if self.small:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

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
    if study.probe is not None:
        row.update(forget_measures(edited, study.probe, study.reference()))
    return row


# --------------------------------------------------------------------------- the studies a process holds

# Each study this process can run units of, with its attribution cache (ratio-independent scores,
# reused across a method's grid). `_held`: studies lent by the code that built them, for the
# duration of its `holding` block (a sweep run here). `_built`: the one study this process built
# from a unit's spec (a worker process), kept until the process ends or a unit of another study
# arrives, since a worker serves one plan at a time.
_held: dict[tuple[str, StudySpec | None], tuple[Study, AttributionCache]] = {}
_built: dict[tuple[str, StudySpec | None], tuple[Study, AttributionCache]] = {}


@contextmanager
def holding(study: Study) -> Iterator[None]:
    """Let this process's units of `study` use it (and one attribution cache for all of them)
    while the block runs, instead of building it again."""
    key = (study.name, study.spec)
    before = _held.get(key)
    _held[key] = (study, AttributionCache())
    try:
        yield
    finally:
        if before is None:
            del _held[key]
        else:
            _held[key] = before


def _open(name: str, spec: StudySpec | None) -> tuple[Study, AttributionCache]:
    """The study a unit runs on, with its attribution cache: the one held here, else one built
    from `spec` (once per process)."""
    key = (name, spec)
    if key in _held:
        return _held[key]
    if key not in _built:
        if spec is None:
            raise MemlakeError(
                f"study {name!r} has no spec to build it from in another process: run its sweep "
                "in the process that built it (executor local, workers=1)"
            )
        _built.clear()
        _built[key] = (spec.build(), AttributionCache())
    return _built[key]


# --------------------------------------------------------------------------- runs as units


@dataclass(frozen=True)
class MitigationRun(Unit):
    """One run of a study: its row of `mitigation_runs`, partition (study, run_id)."""

    job: ClassVar[str] = "mitigate"
    table: ClassVar[str] = "mitigation_runs"

    sweep_run: Run  # (not `run`: that is the unit's method)
    root: str  # the warehouse root (a string: units pickle to other processes)
    spec: StudySpec | None = None
    config: dict[str, Any] | None = field(default=None, compare=False)  # recorded in the manifest

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse.at(self.root)

    @property
    def partition(self) -> dict[str, Any]:
        return {"study": self.sweep_run.study, "run_id": self.sweep_run.run_id}

    @property
    def label(self) -> str:
        r = self.sweep_run
        hparams = [f"{k}={v}" for k, v in r.hparams]
        return " ".join(["mitigate", r.study, r.method, *hparams, f"seed {r.seed}"])

    def compute(self, log) -> Computed:
        study, attributions = _open(self.sweep_run.study, self.spec)
        with study.threads():
            row = run_one(study, self.sweep_run, attributions)
        table = pa.table({k: [v] for k, v in row.items()})
        return Computed(table, provenance=dict(self.config or {}), summary={"row": row})


@dataclass(frozen=True)
class OracleUnit(Unit):
    """A study's retrain oracle, trained (or loaded), and its `mitigation_oracles` row: what the
    oracle scores, and how far the unedited base model is from it."""

    job: ClassVar[str] = "mitigate oracle"
    table: ClassVar[str] = "mitigation_oracles"

    study: str
    root: str
    spec: StudySpec | None = None

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse.at(self.root)

    @property
    def partition(self) -> dict[str, Any]:
        return {"study": self.study}

    @property
    def label(self) -> str:
        return f"mitigate oracle {self.study}"

    def compute(self, log) -> Computed:
        study, _ = _open(self.study, self.spec)
        if study.oracle is None or study.probe is None:
            raise MemlakeError(f"study {self.study!r} has no retrain oracle: {study.about}")
        if not len(study.forget):
            raise MemlakeError(
                f"study {self.study!r} has no forget artifacts (its base model memorises none): "
                "no oracle to train"
            )
        with study.threads():
            t0 = time.perf_counter()
            model = study.oracle()
            seconds = time.perf_counter() - t0
            ref = study.reference()
            metrics = study.evaluate(model)
            base = forget_measures(study.base, study.probe, ref)
        row = {
            "study": study.name,
            "model": study.model,
            "step": study.step,
            "n_forget": len(study.probe.forget),
            "n_nonmembers": len(study.probe.nonmembers),
            "mem": metrics["mem"],
            "acc": metrics["acc"],
            "ppl": metrics["ppl"],
            "exact_memorization": float(ref.forget.em.mean()),
            "extraction_strength": float(ref.forget.es.mean()),
            "mia_auc": ref.auc,
            **{f"base_{k}": base[k] for k in ORACLE_DISTANCES},
            "seconds": seconds,
            "forget_ids": base["forget_ids"],
            "forget_extracted": None if base["forget_ids"] is None else ref.forget.extracted.tolist(),
        }
        return Computed(pa.table({k: [v] for k, v in row.items()}), summary={"row": row})


# where the unedited model stands against the oracle: the contract's base_<measure> columns
ORACLE_DISTANCES = tuple(
    n.removeprefix("base_") for n in lake.spec("mitigation_oracles").schema.names if n.startswith("base_")
)


def train_oracle(wh: Warehouse, study: Study, rank: int = 0) -> dict[str, Any] | None:
    """Train (or load) `study`'s oracle and write its `mitigation_oracles` row; the row, or None when
    it was already written. Only rank 0 of a sharded sweep trains it, so that ranks started
    together never train it twice into one folder."""
    unit = OracleUnit(study.name, str(wh.root), study.spec)
    if rank and unit.pending():
        raise MemlakeError(
            f"the retrain oracle of {study.name} is not trained yet: run `memlake mitigate oracle` "
            "for the study (or rank 0) first"
        )
    with holding(study):
        result = unit.run()
    return None if result["skipped"] else result["row"]


# heaviest first, so the last unit to start is a short one (a longest-processing-time-first order)
_KIND_ORDER = {"regulariser": 0, "weight": 1, "fine_tuning": 2, "neuron": 3, "baseline": 4}


def _ordered(runs: list[Run]) -> list[Run]:
    """The runs grouped by method (grid order kept, so a method's runs reuse its attributions
    one after the other), heavier kinds first."""
    by_method: dict[str, list[Run]] = {}
    for r in runs:
        by_method.setdefault(r.method, []).append(r)
    groups = sorted(by_method.values(), key=lambda g: _KIND_ORDER.get(get(g[0].method).kind, 9))
    return [r for g in groups for r in g]


def _default_workers(study: Study, units: list[MitigationRun], config: dict | None) -> int:
    """Local processes for a sweep whose caller named none: the config's `mitigation.workers` for
    a small model on the CPU (one thread each keeps every core busy without contention), at
    most one per core and per method still to run; else 1 (a large model fills the machine)."""
    wanted = int(((config or {}).get("mitigation") or {}).get("workers") or 1)
    on_cpu = all(p.device.type == "cpu" for p in study.base.parameters())
    if wanted <= 1 or not (study.small and on_cpu):
        return 1
    methods = {u.sweep_run.method for u in units if u.pending()}
    return max(1, min(wanted, os.cpu_count() or 1, len(methods)))


def run_sweep(
    wh: Warehouse,
    study: Study,
    runs: list[Run],
    *,
    rank: int = 0,
    world_size: int = 1,
    config: dict | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    executor: str = "local",
    **options: Any,
) -> list[dict[str, Any]]:
    """Run this rank's share of `runs` on `executor` with its `options` (`ingest.executors`),
    skipping runs already in the lake; the new rows, each also passed to `on_run`.

    This process lends `study` to the units it runs itself, so the model is built once and a
    method's grid reuses its attributions; other processes build the study from its spec.
    Without options the local executor runs `_default_workers` processes.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    root = str(wh.root)
    units = [MitigationRun(r, root, study.spec, config) for r in _ordered(runs[rank::world_size])]
    if executor == "local" and not options:
        options = {"workers": _default_workers(study, units, config)}
    if study.oracle is not None and len(study.forget) and any(u.pending() for u in units):
        train_oracle(wh, study, rank)  # before the runs, which measure their distance to it
    with holding(study):
        results = execute(units, executor, **options)
    rows = [r["row"] for r in results if not r["skipped"]]
    if on_run:
        for row in rows:
            on_run(row)
    return rows
