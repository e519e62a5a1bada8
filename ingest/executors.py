"""Executors: who runs the units of a plan. All run each unit the same way (`run_any`).

- `local`: a loop in this process, with a progress bar (the default); `workers=N` runs N units
  at a time in N processes instead, each on its own share of the CPU cores or on its own GPU;
- `slurm`: a Slurm job array through submitit (one array task per unit, `array_parallelism`
  at a time); `cluster="local"` runs the identical submitit path as local subprocesses,
  which is how it is tested without a cluster;
- `ray`: one Ray task per unit (`num_gpus` per task on a GPU cluster); `address=None` starts
  a local Ray instance.

Finished partitions are skipped by the units themselves, so any executor can resume a plan. A
unit is a `jobs.Unit` (run by `run_unit`) or any picklable object with its own `run(log)` and a
`label` (e.g. `ingest.stream_counts.StreamShard`).
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from ingest.jobs import Unit, run_unit
from memlake.core.errors import MemlakeError
from memlake.core.progress import progress

EXECUTORS: dict[str, Callable[..., list[dict[str, Any]]]] = {}


def register(name: str):
    def wrap(fn):
        EXECUTORS[name] = fn
        return fn

    return wrap


def run_any(unit, log=print) -> dict[str, Any]:
    """Run one unit of either kind: its own `run`, or `run_unit` for a scoring `Unit`."""
    run = getattr(unit, "run", None)
    return run(log=log) if callable(run) else run_unit(unit, log=log)


def _label(u) -> str:
    return getattr(u, "label", None) or f"{u.job} {u.model}@step{u.step} shard {u.shard}"


def execute(units: list[Unit], executor: str = "local", **opts) -> list[dict[str, Any]]:
    """Run `units` on `executor` with its options; an option it does not take is an error (a
    misspelt `--exec-opt` would otherwise be dropped silently)."""
    if executor not in EXECUTORS:
        raise MemlakeError(f"unknown executor {executor!r} (choose from {sorted(EXECUTORS)})")
    run = EXECUTORS[executor]
    known = [name for name in inspect.signature(run).parameters if name != "units"]
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise MemlakeError(
            f"executor {executor!r} takes no option {unknown[0]!r} (its options: {', '.join(known)})"
        )
    return run(units, **opts)


@register("local")
def run_local(units: list[Unit], workers: int = 1) -> list[dict[str, Any]]:
    """Run `units` here: one after the other, or `workers` at a time in as many processes.

    Workers pay off where one unit cannot use the machine: one process drives one GPU, and a small
    model's one-token decode steps spread poorly over CPU threads (whole-row forwards, as in token
    statistics, share threads well and gain nothing; README.md gives the timings). So each worker
    gets cores // workers torch threads and, with GPUs, GPU i mod n (CUDA_VISIBLE_DEVICES is set
    in the worker before CUDA starts). Units write separate partitions atomically, so workers need
    no coordination; on the first failure no further unit starts, running ones finish, and the error
    is raised here, with every finished partition kept.
    """
    if not isinstance(workers, int) or workers < 1:
        raise MemlakeError(f"executor local: workers must be a positive integer, got {workers!r}")
    workers = min(workers, len(units))
    results: list[dict[str, Any] | None] = [None] * len(units)
    with progress() as bar:
        task = bar.add_task(f"{units[0].job if units else 'ingest'}", total=len(units))
        if workers <= 1:
            for i, u in enumerate(units):
                bar.update(task, description=_label(u))
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


@register("slurm")
def run_slurm(
    units: list[Unit],
    folder: str | Path | None = None,
    cluster: str | None = None,
    partition: str | None = None,
    timeout_min: int = 60,
    gpus_per_task: int = 1,
    array_parallelism: int = 16,
) -> list[dict[str, Any]]:
    try:
        import submitit
    except ImportError:
        raise MemlakeError("executor 'slurm' needs submitit: pip install submitit") from None
    if not units:
        return []
    folder = Path(folder or Path(units[0].warehouse) / "jobs" / "slurm" / "%j")
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: dict[str, Any] = {"timeout_min": timeout_min, "slurm_array_parallelism": array_parallelism}
    if ex.cluster == "slurm":
        params.update(gpus_per_node=gpus_per_task, slurm_partition=partition)
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    jobs = ex.map_array(run_any, units)
    return [j.result() for j in jobs]


@register("ray")
def run_ray(
    units: list[Unit], address: str | None = None, num_gpus: float = 0, num_cpus: int | None = None
) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise MemlakeError("executor 'ray' needs ray: pip install 'ray[default]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_gpus=num_gpus)(run_any)
        return ray.get([remote.remote(u) for u in units])
    finally:
        if started:
            ray.shutdown()
