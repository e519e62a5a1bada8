"""Long panel -> balanced unit x time outcome matrix, with R `did`'s sample rules applied.

Everything downstream works on `Panel`: an (n, T) outcome matrix whose rows are grouped by
cohort (never-treated last), so each cohort is a contiguous row slice and per-cohort sums are
matrix slices, never masks over the long frame.

Sample rules (R `did` 2.x `pre_process_did`, applied in this order):
  1. `first_epoch`: keep times <= first_epoch and drop units whose cohort > first_epoch (they
     would otherwise become controls under rule 3; for Pythia they are re-exposed documents).
  2. The panel must be balanced: every unit has exactly one row with a finite outcome at every
     time. No silent balancing: a ValueError names the first incomplete unit.
  3. A cohort after the last observed time is untreated in-sample: it joins the never-treated.
  4. No never-treated units: an error for control_group="never_treated"; for "not_yet_treated"
     times >= (last cohort - anticipation) are dropped and the last cohort only serves as a
     control (it is never treated within the remaining times).
  5. Units with cohort <= first time + anticipation have no usable pre-period and are dropped
     with a warning (R drops those treated by the first period; the rest never enter any cell).
  6. A cohort must be an observed time (a checkpoint step): anything else is a ValueError, as it
     means the treatment mapping and the time grid disagree.
  7. Cohorts with a single unit are dropped with a warning: a lone unit has no within-cohort
     variance, so its cells' analytic and bootstrap SEs would silently ignore the treated side.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl


@dataclass(frozen=True)
class Panel:
    """A balanced panel, rows sorted by cohort (never-treated group last)."""

    unit_ids: np.ndarray  # (n,) original unit ids, in row order
    times: np.ndarray  # (T,) sorted distinct times (int64)
    y: np.ndarray  # (n, T) outcome, float64
    cohorts: np.ndarray  # (H,) sorted treated cohort values that have units (int64)
    group_sizes: np.ndarray  # (H + 1,) units per cohort; index H = never-treated
    group_starts: np.ndarray  # (H + 2,) row offsets: cohort h holds rows [starts[h], starts[h+1])
    notes: tuple[str, ...]  # what the sample rules changed, for the summary
    # unit-level design, rows as `y` (see `unit_columns`): covariates (n, p), weights, cluster codes
    x: np.ndarray | None = None
    w: np.ndarray | None = None
    cluster: np.ndarray | None = None
    balanced: bool = True  # False: y holds NaN where a unit has no outcome (allow_unbalanced)

    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def n_groups(self) -> int:
        """Number of row groups: treated cohorts plus the never-treated group."""
        return len(self.group_sizes)

    def rows(self, h: int) -> slice:
        return slice(int(self.group_starts[h]), int(self.group_starts[h + 1]))


@dataclass(frozen=True)
class Sample:
    """What rules 3-7 keep, on unit-level arrays (shared by the in-memory and SQL paths)."""

    keep: np.ndarray  # (n,) units kept
    never: np.ndarray  # (n,) never-treated (or last-resort control) after rules 3-4
    keep_t: np.ndarray  # (T,) times kept


def apply_rules(
    unit_ids: np.ndarray,
    g: np.ndarray,
    never: np.ndarray,
    times: np.ndarray,
    control_group: str,
    anticipation: int,
    notes: list[str],
) -> Sample:
    """R `did`'s sample rules 3-7 (module doc) on per-unit cohorts; notes gets what they changed."""
    never = never.copy()
    keep_t = np.ones(len(times), dtype=bool)
    keep = np.ones(len(g), dtype=bool)
    late = ~never & (g > times[-1])  # rule 3
    if late.any():
        notes.append(f"{int(late.sum())} units with cohort > last time {times[-1]} used as never-treated")
        never |= late

    if not never.any():  # rule 4
        if control_group == "never_treated":
            early = int((g <= times[0]).sum())
            hint = f" ({early} units have cohort <= first time {times[0]}: is never-treated coded 0?)"
            raise ValueError(
                "no never-treated units (null cohort): use control_group='not_yet_treated'"
                + (hint if early else "")
            )
        g_last = int(g.max())
        keep_t = times < g_last - anticipation
        if keep_t.sum() < 2:
            raise ValueError("no never-treated units and fewer than two periods before the last cohort")
        times = times[keep_t]
        never = g >= g_last  # always "not yet treated" in the remaining times: a pure control
        notes.append(
            f"no never-treated units: times >= {g_last - anticipation} dropped, cohort {g_last} is the "
            "last-resort control"
        )

    early = ~never & (g <= times[0] + anticipation)  # rule 5
    if early.any():
        msg = (
            f"dropped {int(early.sum())} units with cohort <= first time {times[0]}"
            + (f" + anticipation {anticipation}" if anticipation else "")
            + " (no pre-treatment period; never-treated units must have a null cohort)"
        )
        warnings.warn(msg, stacklevel=4)
        notes.append(msg)
        keep &= ~early
    off_grid = keep & ~never & ~np.isin(g, times)  # rule 6
    if off_grid.any():
        k = int(np.argmax(off_grid))
        raise ValueError(
            f"unit {_show(unit_ids[k])} has cohort {g[k]}, which is not an observed time "
            f"({times[0]}..{times[-1]}, {len(times)} times): cohorts must lie on the time grid"
        )
    values, sizes = np.unique(g[keep & ~never], return_counts=True)  # rule 7
    lone = values[sizes == 1]
    if len(lone):
        drop = keep & ~never & np.isin(g, lone)
        msg = (
            f"dropped {len(lone)} cohorts with a single unit ({int(drop.sum()) * len(times)} rows; cohorts "
            f"{', '.join(map(str, lone[:5]))}{', ...' if len(lone) > 5 else ''}): no within-cohort variance"
        )
        warnings.warn(msg, stacklevel=4)
        notes.append(msg)
        keep &= ~drop
    if never[keep].all():
        raise ValueError("no treated cohort with a pre-treatment period")

    return Sample(keep=keep, never=never, keep_t=keep_t)


def to_polars(data: Any) -> pl.DataFrame:
    """Accept a polars/pandas DataFrame, a polars LazyFrame, a pyarrow Table or a dict of columns."""
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pl.LazyFrame):
        return data.collect()
    mod = type(data).__module__
    if mod.startswith("pandas"):
        return pl.from_pandas(data)
    if mod.startswith("pyarrow"):
        return pl.from_arrow(data)  # type: ignore[return-value]
    if isinstance(data, dict):
        return pl.DataFrame(data)
    raise TypeError(f"data must be a polars/pandas DataFrame or a pyarrow Table, got {type(data).__name__}")


def _show(x: Any) -> str:
    """A unit id for messages: 8019, 'doc-7' (not np.int64(8019))."""
    return repr(x.item() if isinstance(x, np.generic) else x)


def _column(df: pl.DataFrame, name: str, role: str) -> pl.Series:
    if name not in df.columns:
        raise KeyError(f"{role} column {name!r} not in data (columns: {', '.join(df.columns)})")
    return df.get_column(name)


def _as_int(s: pl.Series, role: str, allow_null: bool) -> tuple[np.ndarray, np.ndarray]:
    """Integer values and a null mask; floats must be integral (pandas codes int+NaN as float)."""
    if s.dtype.is_float():
        s = s.fill_nan(None)
    elif not (s.dtype.is_integer() or s.dtype == pl.Null):
        raise TypeError(f"{role} column {s.name!r} must hold integers, got {s.dtype}")
    null = s.is_null().to_numpy()
    if null.any() and not allow_null:
        raise ValueError(f"{role} column {s.name!r} has {int(null.sum())} null values")
    vals = s.fill_null(0).to_numpy()
    if s.dtype.is_float() and not np.all(vals == np.round(vals)):
        raise TypeError(f"{role} column {s.name!r} has non-integer values")
    return vals.astype(np.int64), null


RULES = {
    "covariate": (
        ": covariates must hold one value per unit here (R `did` would silently use each cell's "
        "base-period value; pass the value you mean, e.g. the pre-treatment one, as its own column)"
    ),
    "cluster": ": a unit must lie in one cluster",
    "weights": ": sampling weights are per unit",
}


def _unit_values(
    values: np.ndarray, u_idx: np.ndarray, n: int, unit_ids: np.ndarray, what: str
) -> np.ndarray:
    """The one value each unit holds in every row; a ValueError names a unit where it varies."""
    first = np.full(n, -1)
    first[u_idx[::-1]] = np.arange(len(u_idx))[::-1]
    per_unit = values[first]
    varies = values != per_unit[u_idx]
    if varies.any():
        k = int(np.argmax(varies))
        unit_id, seen = _show(unit_ids[u_idx[k]]), f"{per_unit[u_idx[k]]!r} and {values[k]!r}"
        raise ValueError(f"{what} varies within unit {unit_id} ({seen}){RULES.get(what.split()[0], '')}")
    return per_unit


def unit_columns(
    df: pl.DataFrame, covariates: tuple[str, ...], weights: str | None, cluster: str | None
) -> dict[str, np.ndarray]:
    """Row-level arrays of the design columns, validated (numeric, finite, weights >= 0)."""
    out: dict[str, np.ndarray] = {}
    for name in covariates:
        col = _column(df, name, "covariate")
        if not col.dtype.is_numeric():
            raise TypeError(
                f"covariate column {name!r} must be numeric, got {col.dtype} (encode categories as 0/1)"
            )
        vals = col.cast(pl.Float64).to_numpy()
        if col.null_count() or not np.isfinite(vals).all():
            raise ValueError(f"covariate column {name!r} has null or non-finite values")
        out[f"x:{name}"] = vals
    if weights is not None:
        col = _column(df, weights, "weights")
        vals = col.cast(pl.Float64).to_numpy() if col.dtype.is_numeric() else None
        if vals is None or col.null_count() or not np.isfinite(vals).all():
            raise ValueError(f"weights column {weights!r} must hold finite numbers")
        if (vals < 0).any():
            raise ValueError(f"weights column {weights!r} has negative values (min {vals.min():g})")
        out["w"] = vals
    if cluster is not None:
        col = _column(df, cluster, "cluster")
        if col.null_count():
            raise ValueError(f"cluster column {cluster!r} has {col.null_count()} null values")
        out["cluster"] = np.unique(col.to_numpy(), return_inverse=True)[1].ravel()
    return out


def load_panel(
    data: Any,
    *,
    unit: str,
    time: str,
    cohort: str,
    outcome: str,
    never_treated: str | None = None,
    control_group: str = "never_treated",
    anticipation: int = 0,
    first_epoch: int | None = None,
    covariates: tuple[str, ...] = (),
    weights: str | None = None,
    cluster: str | None = None,
    allow_unbalanced: bool = False,
) -> Panel:
    """Validate a long panel and build the cohort-sorted outcome matrix (rules in the module doc).

    covariates, weights and cluster are per-unit columns: each must hold one value per unit in
    all its rows (a time-varying covariate is a ValueError; R `did` would silently use each
    cell's base-period value instead). allow_unbalanced keeps missing (unit, time) outcomes as NaN
    (rule 2 then does not apply)."""
    df = to_polars(data)
    design = unit_columns(df, tuple(covariates), weights, cluster)
    notes: list[str] = []
    t_all, _ = _as_int(_column(df, time, "time"), "time", allow_null=False)
    g_row, never_row = _as_int(_column(df, cohort, "cohort"), "cohort", allow_null=True)
    if never_treated is not None:
        flag = _column(df, never_treated, "never_treated")
        if flag.dtype != pl.Boolean:
            raise TypeError(f"never_treated column {never_treated!r} must be boolean, got {flag.dtype}")
        if flag.null_count():
            raise ValueError(f"never_treated column {never_treated!r} has null values")
        flag_np = flag.to_numpy()
        bad = ~flag_np & never_row
        if bad.any():
            raise ValueError(f"{int(bad.sum())} rows have a null cohort but never_treated is False")
        never_row = flag_np
    y_row = _column(df, outcome, "outcome").cast(pl.Float64).fill_null(np.nan).to_numpy()
    u_row = _column(df, unit, "unit").to_numpy()

    if first_epoch is not None:
        keep = (t_all <= first_epoch) & (never_row | (g_row <= first_epoch))
        dropped_units = len(np.unique(u_row[~never_row & (g_row > first_epoch)]))
        if dropped_units:
            notes.append(
                f"first_epoch={first_epoch}: dropped {dropped_units} units with cohort > {first_epoch}"
            )
        t_all, g_row, never_row, y_row, u_row = (a[keep] for a in (t_all, g_row, never_row, y_row, u_row))
        design = {k: v[keep] for k, v in design.items()}
    if len(t_all) == 0:
        raise ValueError("no rows left to analyse")

    unit_ids, u_idx = np.unique(u_row, return_inverse=True)
    times, t_idx = np.unique(t_all, return_inverse=True)
    n, n_t = len(unit_ids), len(times)
    if n_t < 2:
        raise ValueError("need at least two time periods")
    flat = u_idx.astype(np.int64) * n_t + t_idx
    counts = np.bincount(flat, minlength=n * n_t)
    if (counts > 1).any():
        k = int(np.argmax(counts > 1))
        raise ValueError(f"unit {_show(unit_ids[k // n_t])} has {counts[k]} rows at time {times[k % n_t]}")
    y = np.full(n * n_t, np.nan)
    y[flat] = y_row
    missing = (counts == 0) | ~np.isfinite(y)
    if missing.any():
        k = int(np.argmax(missing))
        what = "no row" if counts[k] == 0 else "a missing outcome"
        n_bad = int(missing.reshape(n, n_t).any(axis=1).sum())
        if not allow_unbalanced:
            raise ValueError(
                f"unbalanced panel: unit {_show(unit_ids[k // n_t])} has {what} at time {times[k % n_t]} "
                f"({n_bad} of {n} units incomplete); ATT(g,t) here needs a balanced panel "
                "(allow_unbalanced_panel=True uses R's repeated-cross-section estimators instead)"
            )
        y[missing] = np.nan
        notes.append(
            f"unbalanced panel: {n_bad} of {n} units miss {int(missing.sum())} (unit, time) outcomes; "
            "cells use the repeated-cross-section estimators (R's allow_unbalanced_panel)"
        )
    y = y.reshape(n, n_t)
    roles = {"w": f"weights column {weights!r}", "cluster": f"cluster column {cluster!r}"}
    unit_design = {
        k: _unit_values(v, u_idx, n, unit_ids, roles.get(k, f"covariate column {k[2:]!r}"))
        for k, v in design.items()
    }

    # One cohort per unit (treatment is irreversible and timed once).
    never = np.zeros(n, dtype=bool)
    never[u_idx] = never_row
    g = np.zeros(n, dtype=np.int64)
    g[u_idx] = g_row
    incons = (never[u_idx] != never_row) | (~never_row & (g[u_idx] != g_row))
    if incons.any():
        bad_unit = unit_ids[u_idx[int(np.argmax(incons))]]
        raise ValueError(f"unit {_show(bad_unit)} has more than one cohort value across its rows")

    sample = apply_rules(unit_ids, g, never, times, control_group, anticipation, notes)
    y = y[sample.keep][:, sample.keep_t]
    unit_ids, g, never = unit_ids[sample.keep], g[sample.keep], sample.never[sample.keep]
    times = times[sample.keep_t]
    unit_design = {k: v[sample.keep] for k, v in unit_design.items()}

    cohorts = np.unique(g[~never])
    group = np.where(never, len(cohorts), np.searchsorted(cohorts, g))
    order = np.lexsort((np.arange(len(group)), group))  # stable: keep unit-id order within a cohort
    sizes = np.bincount(group, minlength=len(cohorts) + 1)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    unit_design = {k: v[order] for k, v in unit_design.items()}
    names = [k for k in unit_design if k.startswith("x:")]
    x = np.column_stack([unit_design[k] for k in names]) if names else None
    w = unit_design.get("w")
    if w is not None and not w.sum() > 0:
        raise ValueError(f"weights column {weights!r} sums to zero")
    codes = unit_design.get("cluster")
    if codes is not None:
        codes = np.unique(codes, return_inverse=True)[1].ravel()
    return Panel(
        unit_ids=unit_ids[order],
        times=times,
        y=np.ascontiguousarray(y[order]),
        cohorts=cohorts,
        group_sizes=sizes,
        group_starts=starts,
        notes=tuple(notes),
        x=x,
        w=w,
        cluster=codes,
        balanced=bool(np.isfinite(y).all()),
    )
