"""Executors: who runs the units of a plan. All run each unit the same way (`run_any`).

An executor is a class whose constructor arguments are its options, with one method,
`run(units) -> list[dict]` (each unit's summary, in the units' order):

- `Local(workers=1)`: a loop in this process, with a progress bar (the default); `workers=N`
  runs N units at a time in N processes instead, each on its own share of the CPU cores or on its
  own GPU;
- `Slurm(folder, cluster, partition, timeout_min, gpus_per_task, array_parallelism)`: a Slurm job
  array through submitit (one array task per unit, `array_parallelism` at a time);
  `cluster="local"` runs the identical submitit path as local subprocesses, which is how it is
  tested without a cluster;
- `Ray(address, num_gpus, num_cpus)`: one Ray task per unit (`num_gpus` per task on a GPU
  cluster); `address=None` starts a local Ray instance.

They are registered by name in `EXECUTORS`; `execute(units, "slurm", **options)` is what the CLI
calls. Finished partitions are skipped by the units themselves, so any executor can resume a plan.
A unit is a `memlake.core.unit.Unit`, which writes one partition (e.g. `jobs.ScoringUnit`) or
several in one pass (e.g. `ingest.stream_counts.StreamShard`: counts and token counts), or any
picklable object with its own `run(log)` and a `label`.
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
from abc import ABC, abstractmethod
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.progress import progress
from memlake.core.registry import Registry
from memlake.core.unit import Unit


class Executor(ABC):
    """Runs units; its constructor arguments are its options (`--exec-opt k=v`)."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, units: list[Unit]) -> list[dict[str, Any]]:
        """Run every unit; their summaries in the units' order."""

    @classmethod
    def options(cls) -> list[str]:
        return list(inspect.signature(cls).parameters)


EXECUTORS: Registry[type[Executor]] = Registry("executor")


def run_any(unit, log=print) -> dict[str, Any]:
    """Run one unit (a module-level function, so that process pools and Ray can ship it)."""
    return unit.run(log=log)


def _root(u) -> str:
    """The warehouse root a unit writes to (a `Unit`'s warehouse, or a plain unit's root string)."""
    wh = u.warehouse
    return str(wh.root) if isinstance(wh, Warehouse) else str(wh)


def configure(executor: str = "local", **opts) -> Executor:
    """The executor named `executor` with its options; an option it does not take is an error (a
    misspelt `--exec-opt` would otherwise be dropped silently). Callers with slow set-up call it
    first, to refuse bad options before any work."""
    cls = EXECUTORS.get(executor)
    known = cls.options()
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise MemlakeError(
            f"executor {executor!r} takes no option {unknown[0]!r} (its options: {', '.join(known)})"
        )
    return cls(**opts)


def execute(units: list[Unit], executor: str = "local", **opts) -> list[dict[str, Any]]:
    """Run `units` on `executor` with its options (see `configure`)."""
    return configure(executor, **opts).run(units)


@EXECUTORS.register("local", named=True)
@dataclass(frozen=True)
class Local(Executor):
    """Run units here: one after the other, or `workers` at a time in as many processes.

    Workers pay off where one unit cannot use the machine: one process drives one GPU, and a small
    model's one-token decode steps spread poorly over CPU threads (whole-row forwards, as in token
    statistics, share threads well and gain nothing; README.md gives the timings). So each worker
    gets cores // workers torch threads and, with GPUs, GPU i mod n (CUDA_VISIBLE_DEVICES is set
    in the worker before CUDA starts). Units write separate partitions atomically, so workers need
    no coordination; on the first failure no further unit starts, running ones finish, and the error
    is raised here, with every finished partition kept.
    """

    workers: int = 1

    def __post_init__(self):
        if not isinstance(self.workers, int) or self.workers < 1:
            raise MemlakeError(f"executor local: workers must be a positive integer, got {self.workers!r}")

    def run(self, units: list[Unit]) -> list[dict[str, Any]]:
        workers = min(self.workers, len(units))
        results: list[dict[str, Any] | None] = [None] * len(units)
        with progress() as bar:
            task = bar.add_task(f"{units[0].job if units else 'ingest'}", total=len(units))
            if workers <= 1:
                for i, u in enumerate(units):
                    bar.update(task, description=u.label)
                    results[i] = run_any(u, log=bar.console.print)
                    bar.advance(task)
                return results
            bar.update(task, description=f"{units[0].job} ({workers} workers)")
            ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch/CUDA state
            slots = ctx.Queue()
            for i in range(workers):
                slots.put(i)
            with ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_start_worker, initargs=(slots, workers, _visible_gpus())
            ) as pool:
                pending = {pool.submit(run_any, u): i for i, u in enumerate(units)}
                while pending:
                    done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                    for f in done:
                        i = pending.pop(f)
                        if f.exception() is not None:
                            for other in pending:
                                other.cancel()
                            raise f.exception()
                        results[i] = f.result()
                        bar.advance(task)
        return results


def _visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (none on a CPU machine)."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [d.strip() for d in listed.split(",") if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def _start_worker(slots, workers: int, gpus: list[str]) -> None:
    """Worker setup, before it runs any unit: its GPU, or its share of the CPU cores."""
    index = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // workers))


@EXECUTORS.register("slurm", named=True)
@dataclass(frozen=True)
class Slurm(Executor):
    """A Slurm job array through submitit; `folder` (default `<warehouse>/jobs/slurm/%j`) holds
    its logs and pickles."""

    folder: str | Path | None = None
    cluster: str | None = None
    partition: str | None = None
    timeout_min: int = 60
    gpus_per_task: int = 1
    array_parallelism: int = 16

    def run(self, units: list[Unit]) -> list[dict[str, Any]]:
        try:
            import submitit
        except ImportError:
            raise MemlakeError("executor 'slurm' needs submitit: pip install submitit") from None
        if not units:
            return []
        folder = Path(self.folder or Warehouse.at(_root(units[0])).root / "jobs" / "slurm" / "%j")
        ex = submitit.AutoExecutor(folder=str(folder), cluster=self.cluster)
        params: dict[str, Any] = {
            "timeout_min": self.timeout_min,
            "slurm_array_parallelism": self.array_parallelism,
        }
        if ex.cluster == "slurm":
            params.update(gpus_per_node=self.gpus_per_task, slurm_partition=self.partition)
        ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
        jobs = ex.map_array(run_any, units)
        return [j.result() for j in jobs]


@EXECUTORS.register("ray", named=True)
@dataclass(frozen=True)
class Ray(Executor):
    """One Ray task per unit, on the cluster at `address` or on a local Ray started for the run."""

    address: str | None = None
    num_gpus: float = 0
    num_cpus: int | None = None

    def run(self, units: list[Unit]) -> list[dict[str, Any]]:
        try:
            import ray
        except ImportError:
            raise MemlakeError("executor 'ray' needs ray: pip install 'ray[default]'") from None
        started = not ray.is_initialized()
        if started:
            ray.init(
                address=self.address, num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False
            )
        try:
            remote = ray.remote(num_gpus=self.num_gpus)(run_any)
            return ray.get([remote.remote(u) for u in units])
        finally:
            if started:
                ray.shutdown()
