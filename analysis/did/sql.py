"""ATT(g, t) from per-cohort sufficient statistics computed in SQL: panels larger than memory.

Without covariates every cell, its analytic SE and every aggregation's SE are functions of three
statistics per row group (treated cohort or never-treated): its size n_h, the sum of its units'
outcome paths S_h (a T-vector) and the sum of their outer products P_h (T x T). The database
computes them in one pass over the long panel; Python receives a few hundred numbers per group
plus one row per unit for the sample rules (cohort, row counts), never the outcomes:

  1. per unit: cohort, rows, distinct times, finite outcomes -> the same checks and sample rules
     as the in-memory path (`panel.apply_rules`), whose result goes back as a unit -> group table;
  2. per (group, unit): the outcome path as T columns (outcomes centred by each time's mean, for
     precision), then per group: count, T sums and T (T + 1) / 2 sums of products.

The SQL of step 2 is plain (joins, CASE, SUM, AVG): `moments_sql` returns it for any engine; here
DuckDB runs it, optionally in `chunks` slices of units (hash of the unit) to bound its memory.
Analytic inference only: a multiplier bootstrap needs a weight per unit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from .api import BASE_PERIODS, CONTROL_GROUPS, _band_mask
from .cells import CohortStats, cell_grid, control_membership, estimate_cells
from .inference import Influence
from .panel import Panel, _show, apply_rules
from .results import AttGtResult, Settings

GROUPS_VIEW = "__did_unit_groups"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _source(source: str) -> str:
    """A table or view name, or a query (anything with a space is taken as a query)."""
    return f"({source})" if " " in source.strip() else _q(source)


def moments_sql(source: str, *, unit: str, time: str, outcome: str, times: list[int], groups: str,
                chunk: tuple[int, int] | None = None) -> str:  # fmt: skip
    """Per row group: n, s_i = sum of y at times[i], p_i_j = sum of y_i y_j (i <= j), outcomes centred
    by their mean at each time. `groups` is a relation (unit, grp) of the units kept."""
    u, t, y = _q(unit), _q(time), _q(outcome)
    cols = ",\n    ".join(
        f"sum(case when p.{t} = {v} then p.{y} - c.m end) as y{i}" for i, v in enumerate(times)
    )
    sums = ", ".join(f"sum(y{i}) as s{i}" for i in range(len(times)))
    prods = ", ".join(
        f"sum(y{i} * y{j}) as p{i}_{j}" for i in range(len(times)) for j in range(i, len(times))
    )
    in_times = ", ".join(map(str, times))
    slice_ = "" if chunk is None else f"\n  and hash(p.{u}) % {chunk[1]} = {chunk[0]}"
    return f"""with panel as (
  select {u}, {t}, {y} from {_source(source)} where {t} in ({in_times})
),
centre as (
  select p.{t}, avg(p.{y}) as m
  from panel as p inner join {groups} as g on p.{u} = g.unit
  group by p.{t}
),
paths as (
  select g.grp,
    {cols}
  from panel as p
  inner join {groups} as g on p.{u} = g.unit
  inner join centre as c on p.{t} = c.{t}
  where true{slice_}
  group by g.grp, p.{u}
)
select grp, count(*) as n, {sums}, {prods}
from paths
group by grp"""


def _unit_summary(con: Any, source: str, unit: str, time: str, cohort: str, outcome: str,
                  first_epoch: int | None) -> tuple[pa.Table, np.ndarray]:  # fmt: skip
    u, t, g, y = _q(unit), _q(time), _q(cohort), _q(outcome)
    keep = "" if first_epoch is None else f"where {t} <= {int(first_epoch)}"
    rows = f"(select * from {_source(source)} {keep})"
    times = con.sql(f"select distinct {t} from {rows} order by 1").fetchnumpy()[time]
    summary = con.sql(
        f"""select {u} as unit, min({g}) as g_min, max({g}) as g_max, count({g}) as n_cohort,
                   count(*) as n_rows, count(distinct {t}) as n_times,
                   count(*) filter (where isfinite({y})) as n_finite
            from {rows} group by {u} order by {u}"""
    ).to_arrow_table()
    return summary, np.asarray(times, dtype=np.int64)


def _check(summary: pa.Table, n_t: int, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The in-memory path's input checks on the per-unit summary; (cohort, never-treated)."""
    s = pl.from_arrow(summary)
    ids = s["unit"].to_numpy()
    for col, what in (("n_rows", "rows"), ("n_times", "times"), ("n_finite", "finite outcomes")):
        bad = s[col].to_numpy() != n_t
        if bad.any():
            k = int(np.argmax(bad))
            raise ValueError(
                f"unbalanced panel: unit {_show(ids[k])} has {s[col][k]} {what} for {n_t} times "
                f"({times[0]}..{times[-1]}; {int(bad.sum())} units affected); ATT(g,t) here needs a "
                "balanced panel"
            )
    n_cohort = s["n_cohort"].to_numpy()
    mixed = ((n_cohort > 0) & (n_cohort < n_t)) | (s["g_min"] != s["g_max"]).fill_null(False).to_numpy()
    if mixed.any():
        raise ValueError(
            f"unit {_show(ids[int(np.argmax(mixed))])} has more than one cohort value across its rows"
        )
    never = n_cohort == 0
    return s["g_min"].fill_null(0).to_numpy().astype(np.int64), never


def att_gt_sql(
    con: Any,
    source: str,
    *,
    unit: str,
    time: str,
    cohort: str,
    outcome: str,
    control_group: str = "never_treated",
    base_period: str = "varying",
    anticipation: int = 0,
    alpha: float = 0.05,
    cband_cells: str = "post",
    first_epoch: int | None = None,
    chunks: int = 1,
) -> AttGtResult:
    """`att_gt` (analytic, no covariates) over a table, view or query of a DuckDB connection.

    source: one row per (unit, time) as in `att_gt`; the cohort is null for never-treated units.
    chunks: split the moments query into this many slices of units (lower peak memory).
    Equal to `att_gt(..., bootstrap=0)` on the same rows to rounding (tests/unit/analysis/test_did_sql.py).
    """
    if control_group not in CONTROL_GROUPS:
        raise ValueError(f"control_group must be one of {CONTROL_GROUPS}, got {control_group!r}")
    if base_period not in BASE_PERIODS:
        raise ValueError(f"base_period must be one of {BASE_PERIODS}, got {base_period!r}")
    notes: list[str] = []
    summary, times = _unit_summary(con, source, unit, time, cohort, outcome, first_epoch)
    if len(times) < 2:
        raise ValueError("need at least two time periods")
    g, never = _check(summary, len(times), times)
    ids = summary.column("unit")
    if first_epoch is not None:
        late = ~never & (g > first_epoch)
        if late.any():
            notes.append(
                f"first_epoch={first_epoch}: dropped {int(late.sum())} units with cohort > {first_epoch}"
            )
            keep0 = ~late
            ids, g, never = ids.filter(pa.array(keep0)), g[keep0], never[keep0]
    sample = apply_rules(np.asarray(ids), g, never, times, control_group, int(anticipation), notes)
    times = times[sample.keep_t]
    ids, g, never = ids.filter(pa.array(sample.keep)), g[sample.keep], sample.never[sample.keep]
    cohorts = np.unique(g[~never])
    group = np.where(never, len(cohorts), np.searchsorted(cohorts, g))
    n_groups = len(cohorts) + 1

    con.register(GROUPS_VIEW, pa.table({"unit": ids, "grp": pa.array(group, pa.int64())}))
    try:
        parts = [
            con.sql(
                moments_sql(
                    source,
                    unit=unit,
                    time=time,
                    outcome=outcome,
                    times=times.tolist(),
                    groups=GROUPS_VIEW,
                    chunk=None if chunks == 1 else (k, chunks),
                )  # fmt: skip
            ).fetchnumpy()
            for k in range(chunks)
        ]
    finally:
        con.unregister(GROUPS_VIEW)
    stats = _stats(parts, n_groups, len(times))
    sizes = stats.sizes.astype(np.int64)
    panel = Panel(
        unit_ids=np.asarray(ids),
        times=times,
        y=np.empty((int(sizes.sum()), 0)),  # outcomes stay in the database
        cohorts=cohorts,
        group_sizes=sizes,
        group_starts=np.concatenate([[0], np.cumsum(sizes)]),
        notes=tuple(notes),
    )
    grid = cell_grid(panel, base_period, int(anticipation))
    members = control_membership(panel, grid, control_group, int(anticipation))
    cells = estimate_cells(panel, stats, grid, members)
    settings = Settings(control_group, base_period, int(anticipation), alpha, 0, None, first_epoch)
    return AttGtResult(
        times=times,
        cohorts=cohorts,
        group_sizes=sizes,
        grid=grid,
        cells=cells,
        influence=Influence.of(cells, stats, panel.n),
        draws=None,
        settings=settings,
        cband_mask=_band_mask(cband_cells, cohorts[grid.group], times[grid.t], grid.post),
        notes=tuple(notes),
    )


def _stats(parts: list[dict], n_groups: int, n_t: int) -> CohortStats:
    """Sizes, means and scatter matrices from the summed moments of every chunk."""
    n = np.zeros(n_groups)
    s = np.zeros((n_groups, n_t))
    p = np.zeros((n_groups, n_t, n_t))
    iu = np.triu_indices(n_t)
    for part in parts:
        grp = np.asarray(part["grp"], dtype=np.int64)
        n[grp] += part["n"]
        s[grp] += np.column_stack([part[f"s{i}"] for i in range(n_t)])
        upper = np.column_stack([part[f"p{i}_{j}"] for i, j in zip(*iu)])
        p[grp[:, None], iu[0][None, :], iu[1][None, :]] += upper
    p = p + np.triu(p, 1).transpose(0, 2, 1)
    means = s / np.maximum(n, 1)[:, None]
    scatter = p - n[:, None, None] * means[:, :, None] * means[:, None, :]
    return CohortStats(sizes=n, means=means, scatter=scatter, centred=np.empty((0, n_t)))
