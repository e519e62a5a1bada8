"""Executors: who runs the units of a plan. All run the same `ingest.jobs.run_unit`.

- `local`: a loop in this process, with a progress bar (the default);
- `slurm`: a Slurm job array through submitit (one array task per unit, `array_parallelism`
  at a time); `cluster="local"` runs the identical submitit path as local subprocesses,
  which is how it is tested without a cluster;
- `ray`: one Ray task per unit (`num_gpus` per task on a GPU cluster); `address=None` starts
  a local Ray instance.

Finished partitions are skipped by the units themselves, so any executor can resume a plan.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.jobs import Unit, run_unit
from memlake.errors import MemlakeError
from memlake.progress import progress

EXECUTORS: dict[str, Callable[..., list[dict[str, Any]]]] = {}


def register(name: str):
    def wrap(fn):
        EXECUTORS[name] = fn
        return fn

    return wrap


def execute(units: list[Unit], executor: str = "local", **opts) -> list[dict[str, Any]]:
    if executor not in EXECUTORS:
        raise MemlakeError(f"unknown executor {executor!r} (choose from {sorted(EXECUTORS)})")
    return EXECUTORS[executor](units, **opts)


@register("local")
def run_local(units: list[Unit], **_) -> list[dict[str, Any]]:
    results = []
    with progress() as bar:
        task = bar.add_task(f"{units[0].job if units else 'ingest'}", total=len(units))
        for u in units:
            bar.update(task, description=f"{u.job} {u.model}@step{u.step} shard {u.shard}")
            results.append(run_unit(u, log=bar.console.print))
            bar.advance(task)
    return results


@register("slurm")
def run_slurm(
    units: list[Unit],
    folder: str | Path | None = None,
    cluster: str | None = None,
    partition: str | None = None,
    timeout_min: int = 60,
    gpus_per_task: int = 1,
    array_parallelism: int = 16,
    **_,
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
    jobs = ex.map_array(run_unit, units)
    return [j.result() for j in jobs]


@register("ray")
def run_ray(
    units: list[Unit], address: str | None = None, num_gpus: float = 0, num_cpus: int | None = None, **_
) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise MemlakeError("executor 'ray' needs ray: pip install 'ray[default]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_gpus=num_gpus)(run_unit)
        return ray.get([remote.remote(u) for u in units])
    finally:
        if started:
            ray.shutdown()
