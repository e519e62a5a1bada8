"""Result objects: ATT(g, t) cells and their aggregations, as tidy polars frames and text."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from . import aggregate as agg
from .bootstrap import Draws, bootstrap_se, sup_t_test, uniform_critical_value
from .cells import CellEstimates, CellGrid
from .honest import EventStudy, HonestResult
from .honest import honest_did as honest
from .inference import Influence, PretrendTest, standard_errors, wald_test, z_value


@dataclass(frozen=True)
class Settings:
    control_group: str
    base_period: str
    anticipation: int
    alpha: float
    bootstrap: int
    seed: int | None
    first_epoch: int | None
    est_method: str = "means"  # "means" without covariates, else "dr", "ipw" or "reg"
    covariates: tuple[str, ...] = ()
    weights: str | None = None
    cluster: str | None = None
    balanced: bool = True  # False: an unbalanced panel estimated as repeated cross sections


def _interval(att: np.ndarray, se: np.ndarray, crit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return att - crit * se, att + crit * se


def _zero_outside(lo: np.ndarray, hi: np.ndarray, banded: np.ndarray) -> list[bool | None]:
    """True/False for banded rows with a finite band, None where no simultaneous band applies."""
    out = (lo > 0) | (hi < 0)
    ok = banded & np.isfinite(lo) & np.isfinite(hi)
    return [bool(x) if k else None for x, k in zip(out, ok)]


@dataclass(frozen=True, eq=False)
class AggResult:
    """An aggregation of ATT(g, t): one row per key plus an overall row (key null)."""

    kind: str
    keys: np.ndarray
    att: np.ndarray  # (K + 1,), last = overall
    se: np.ndarray  # reported SE: bootstrap if bootstrapped, else analytic
    se_analytic: np.ndarray
    crit_value: float  # multiplier of the key rows' intervals (uniform band if bootstrapped)
    banded: bool
    alpha: float

    @property
    def overall(self) -> dict[str, float]:
        z = z_value(self.alpha)
        return {
            "att": float(self.att[-1]),
            "se": float(self.se[-1]),
            "ci_lower": float(self.att[-1] - z * self.se[-1]),
            "ci_upper": float(self.att[-1] + z * self.se[-1]),
        }

    def to_polars(self) -> pl.DataFrame:
        k = len(self.keys)
        crit = np.r_[np.full(k, self.crit_value), z_value(self.alpha)]
        lo, hi = _interval(self.att, self.se, crit)
        banded = np.r_[np.full(k, self.banded), False]
        return pl.DataFrame(
            {
                "kind": [self.kind] * (k + 1),
                "key": [*map(int, self.keys), None],
                "att": self.att,
                "se": self.se,
                "se_analytic": self.se_analytic,
                "ci_lower": lo,
                "ci_upper": hi,
                "cband": banded,
                "zero_not_in_cband": _zero_outside(lo, hi, banded),
            },
            schema_overrides={"key": pl.Int64, "zero_not_in_cband": pl.Boolean},
        ).pipe(_nan_to_null)

    def summary(self) -> str:
        label = {"dynamic": "event time", "group": "cohort", "calendar": "time", "simple": ""}[self.kind]
        band = "simultaneous" if self.banded else "pointwise"
        lines = [
            f"Aggregation: {self.kind}  ({band} {1 - self.alpha:.0%} intervals, c = {self.crit_value:.3f})"
        ]
        lines.append(_table(self.to_polars(), "key", label or "key"))
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class AttGtResult:
    """Group-time average treatment effects ATT(g, t) with analytic and bootstrap inference."""

    times: np.ndarray
    cohorts: np.ndarray
    group_sizes: np.ndarray  # (H + 1,), last = never-treated (or last-resort control)
    grid: CellGrid
    cells: CellEstimates
    influence: Influence
    draws: Draws | None
    settings: Settings
    cband_mask: np.ndarray  # (C,) cells covered by the uniform band
    notes: tuple[str, ...] = ()
    se_boot: np.ndarray | None = field(default=None)
    crit_value: float = np.nan  # uniform critical value (NaN without bootstrap)
    shares: np.ndarray | None = None  # (H + 1,) weighted cohort shares; None: group_sizes / n

    # -- basic views -------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.influence.n

    @property
    def cohort(self) -> np.ndarray:
        return self.cohorts[self.grid.group]

    @property
    def time(self) -> np.ndarray:
        return self.times[self.grid.t]

    @property
    def att(self) -> np.ndarray:
        return self.cells.att

    @property
    def se(self) -> np.ndarray:
        """Reported SE: bootstrap (IQR) if bootstrapped, else analytic (as R `did`)."""
        return self.cells.se if self.se_boot is None else self.se_boot

    def _crit(self) -> np.ndarray:
        z = z_value(self.settings.alpha)
        if self.draws is None or not np.isfinite(self.crit_value):
            return np.full(len(self.grid), z)
        return np.where(self.cband_mask, self.crit_value, z)

    def to_polars(self) -> pl.DataFrame:
        """One row per (cohort, time) cell. ci_* are the uniform band on `cband` cells, else pointwise."""
        lo, hi = _interval(self.att, self.se, self._crit())
        banded = self.cband_mask & (self.draws is not None)
        return pl.DataFrame(
            {
                "cohort": self.cohort,
                "time": self.time,
                "base_time": self.times[self.grid.b],
                "event_time": self.time - self.cohort,
                "post": self.grid.post,
                "att": self.att,
                "se": self.se,
                "se_analytic": self.cells.se,
                "ci_lower": lo,
                "ci_upper": hi,
                "cband": banded,
                "zero_not_in_cband": _zero_outside(lo, hi, banded),
                "n_treated": self.cells.n_treated.astype(np.int64),
                "n_control": self.cells.n_control.astype(np.int64),
            },
            schema_overrides={"zero_not_in_cband": pl.Boolean},
        ).pipe(_nan_to_null)

    # -- aggregation and tests ---------------------------------------------------------------
    def aggregate(
        self,
        kind: str = "simple",
        *,
        min_e: float | None = None,
        max_e: float | None = None,
        balance_e: int | None = None,
        event_time: str = "time",
    ) -> AggResult:
        """Aggregate cells: "simple", "dynamic"/"event", "group"/"cohort", "calendar"/"time".

        event_time: the scale of e = t - g (and of min_e/max_e/balance_e):
          "time"    time units, e.g. training steps. R `did` 2.5's `aggte(type="dynamic")` keys.
          "period"  R's recoding of times (and cohorts) to period indices 1..T before e = t - g:
                    e counts observed periods, so on an uneven grid (a last checkpoint off the
                    checkpoint spacing) cells one period after treatment pool under one key
                    instead of splitting into keys that only some cohorts reach. R applies this
                    scale to max_e in its simple and group aggregations. Dynamic keys are then
                    period counts; cohort and calendar keys stay in time units.
        On an evenly spaced grid both give the same groups of cells.
        Bootstrapped results reuse the cells' draws, so key rows get a uniform band over keys.
        """
        spec = self._spec(kind, event_time, min_e=min_e, max_e=max_e, balance_e=balance_e)
        est = self.att @ spec.weights
        se_a = standard_errors(np.diag(self.influence.covariance(spec.weights, spec.wif)))
        alpha = self.settings.alpha
        se, crit = se_a, z_value(alpha)
        if self.draws is not None:
            d = self.draws.combine(spec.weights, spec.wif)
            se = bootstrap_se(d, self.n)
            if spec.banded and len(spec.keys):
                crit = uniform_critical_value(d[:-1], se[:-1], alpha)
        return AggResult(
            spec.kind, spec.keys, est, se, se_a, crit, spec.banded and self.draws is not None, alpha
        )

    def aggregation_weights(
        self, kind: str = "simple", *, event_time: str = "time", **window
    ) -> tuple[np.ndarray, np.ndarray]:
        """The keys of an aggregation and its weights over the cells, (C, K + 1) with the overall
        estimate last: `aggregate(kind).att == att @ weights`. Applied to another vector of cell
        values (a known truth), they give that vector's aggregation over the same cells."""
        spec = self._spec(kind, event_time, **window)
        return spec.keys, spec.weights

    def _spec(self, kind: str, event_time: str, **window) -> agg.AggregationSpec:
        if event_time not in ("time", "period"):
            raise ValueError(f"event_time must be 'time' or 'period', got {event_time!r}")
        cohort, time, all_times = self.cohort, self.time, self.times
        if event_time == "period":
            # cohorts lie on the time grid (load_panel's rule 6), so the union R recodes is `times`
            scale = np.union1d(self.times, self.cohorts)
            cohort, time = np.searchsorted(scale, cohort) + 1, np.searchsorted(scale, time) + 1
            all_times = np.searchsorted(scale, self.times) + 1
        spec = agg.build(
            kind,
            att=self.att,
            cohort=cohort,
            time=time,
            group=self.grid.group,
            post=self.grid.post,
            shares=self.group_sizes / self.n if self.shares is None else self.shares,
            n_groups=len(self.group_sizes),
            all_times=all_times,
            **window,
        )
        if event_time == "period" and spec.kind in ("group", "calendar"):
            spec = agg.AggregationSpec(spec.kind, scale[spec.keys - 1], spec.weights, spec.wif, spec.banded)
        return spec

    def event_study(self, *, min_e: int | None = None, max_e: int | None = None) -> EventStudy:
        """The event-study aggregation (e in checkpoint periods) with e = -1 as the reference, its
        analytic covariance, as HonestDiD takes it. Needs base_period="universal": then every
        pre-period estimate is a level relative to e = -1, which Delta restricts."""
        if self.settings.base_period != "universal":
            raise ValueError(
                "HonestDiD needs pre-period estimates relative to the reference period e = -1: fit with "
                "base_period='universal' (post-treatment cells are the same under both bases)"
            )
        spec = self._spec("dynamic", "period", min_e=min_e, max_e=max_e)
        keys, weights, wif = spec.keys, spec.weights[:, :-1], spec.wif[:, :-1]
        if -1 not in keys or not (keys >= 0).any():
            raise ValueError(f"the event study needs e = -1 and some e >= 0, has e in {keys.tolist()}")
        if not np.array_equal(keys, np.arange(keys[0], keys[-1] + 1)):
            raise ValueError(f"event times must be consecutive, got {keys.tolist()}")
        keep = keys != -1
        beta = (self.att @ weights)[keep]
        sigma = self.influence.covariance(weights, wif)[np.ix_(keep, keep)]
        return EventStudy(beta=beta, sigma=sigma, n_pre=int((keys < -1).sum()), n_post=int((keys >= 0).sum()))

    def honest_did(
        self,
        e: int | str = 0,
        *,
        method: str = "relative_magnitude",
        mbar: list[float] | np.ndarray = (0.5, 1.0, 1.5, 2.0),
        min_e: int | None = None,
        max_e: int | None = None,
        grid_points: int = 1000,
        test: str = "C-LF",
    ) -> HonestResult:
        """Rambachan & Roth (2023) sensitivity of the event-study ATT at event time e (periods), or
        of the average over the post-treatment event times (e="average").

        method "relative_magnitude": post-period changes in the trend gap at most mbar times the
            largest pre-period change (Andrews, Roth & Pakes: test "C-LF", their hybrid of the
            least-favourable and conditional tests, R's default; "C", the conditional test);
            "smoothness": the trend gap's slope changes by at most mbar (= M) per period (FLCI).
        Returns the robust confidence sets over mbar and the breakdown value (the largest mbar at
        which the set still excludes 0). min_e/max_e restrict the event window (periods)."""
        es = self.event_study(min_e=min_e, max_e=max_e)
        if e != "average" and e not in range(es.n_post):
            raise ValueError(
                f"e must be a post-treatment event time in 0..{es.n_post - 1} or 'average', got {e!r}"
            )
        k = None if e == "average" else int(e)
        return honest(es, k=k, event_time=e if k is None else k, method=method, mbar=list(mbar),
                      alpha=self.settings.alpha, grid_points=grid_points, test=test)  # fmt: skip

    def pretrend_test(self, method: str = "wald", *, min_e: float | None = None) -> PretrendTest:
        """Joint placebo test that pre-treatment effects are zero.

        method="wald": R's chi2 pre-test over the pre-treatment cells (t < g) with a finite SE.
        method="wald_event": the same Wald test over the event-time aggregation's pre-treatment
            keys (e < 0, e in checkpoint periods): each key averages its cells over cohorts, so its
            covariance is estimated from every unit, not one cohort's (see PretrendTest).
        method="sup_t": max |t| over the pre-cells against the bootstrap draws.
        min_e keeps only pre-cells (or keys) with t - g >= min_e (periods for "wald_event").
        """
        if method == "wald_event":
            spec = self._spec("dynamic", "period", min_e=min_e)
            keep = np.flatnonzero(spec.keys < 0)
            weights, wif = spec.weights[:, keep], spec.wif[:, keep]
            t = wald_test(self.att @ weights, self.influence.covariance(weights, wif))
            return PretrendTest("wald_event", t.statistic, t.p_value, len(keep))
        pre = ~self.grid.post & np.isfinite(self.cells.se)
        if min_e is not None:
            pre &= self.time - self.cohort >= min_e
        idx = np.flatnonzero(pre)
        if method == "wald":
            return wald_test(self.att[idx], self.influence.cell_covariance(idx))
        if method != "sup_t":
            raise ValueError(f"method must be 'wald', 'wald_event' or 'sup_t', got {method!r}")
        if self.draws is None or self.se_boot is None:
            raise ValueError("the sup_t pre-test needs bootstrap draws: call att_gt(..., bootstrap=B)")
        stat, p = sup_t_test(self.att[idx], self.draws.cells[idx], self.se_boot[idx])
        return PretrendTest("sup_t", stat, p, len(idx))

    def covariance(self) -> np.ndarray:
        """Analytic covariance of all cell estimates (C x C; mind the size on large grids)."""
        return self.influence.cell_covariance(np.arange(len(self.grid)))

    # -- text ---------------------------------------------------------------------------------
    def summary(self, max_rows: int = 40) -> str:
        s = self.settings
        treated = self.group_sizes[:-1]
        sizes = ", ".join(f"{g}: {m}" for g, m in zip(self.cohorts, treated))
        if len(self.cohorts) > 8:
            sizes = f"{len(self.cohorts)} cohorts of {treated.min()}-{treated.max()} units"
        span = f"{len(self.times)} ({self.times[0]}..{self.times[-1]})"
        lines = [
            "Group-time average treatment effects (Callaway & Sant'Anna)",
            f"  units {self.n}  times {span}  cells {len(self.grid)}",
            f"  cohorts: {sizes};  never-treated: {self.group_sizes[-1]}",
            f"  control group {s.control_group}, base period {s.base_period}, anticipation {s.anticipation}",
        ]
        if s.covariates:
            lines.append(f"  covariates {', '.join(s.covariates)}; estimator {s.est_method}")
        if s.weights or s.cluster:
            design = [f"sampling weights {s.weights}"] * bool(s.weights) + [f"clusters {s.cluster}"] * bool(
                s.cluster
            )
            lines.append("  " + "; ".join(design))
        if self.draws is None:
            lines.append(f"  analytic (influence-function) SEs, pointwise {1 - s.alpha:.0%} intervals")
        else:
            lines.append(
                f"  multiplier bootstrap B={s.bootstrap} (Rademacher, seed {s.seed}); uniform band over "
                f"{int(self.cband_mask.sum())} cells, c = {self.crit_value:.3f}"
            )
        lines += [f"  note: {note}" for note in self.notes]
        frame = self.to_polars()
        if len(frame) > max_rows:
            lines.append(f"  (first {max_rows} of {len(frame)} cells; use .to_polars())")
            frame = frame.head(max_rows)
        lines.append(_table(frame, "cohort", "cohort", extra=("time",)))
        lines.append(str(self.pretrend_test()))
        simple = self.aggregate("simple").overall
        lines.append(f"Simple ATT: {simple['att']:.4f} (SE {simple['se']:.4f})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"AttGtResult({len(self.grid)} cells, {len(self.cohorts)} cohorts, {len(self.times)} times, "
            f"n={self.n}, control_group={self.settings.control_group!r})"
        )


def _fmt(x: float | None) -> str:
    return "NA" if x is None else f"{x:.4f}"


def _nan_to_null(frame: pl.DataFrame) -> pl.DataFrame:
    """Undefined SEs/intervals (e.g. the universal-base reference cell) as nulls, like R's NA."""
    return frame.with_columns(pl.col(pl.Float64).fill_nan(None))


def _table(frame: pl.DataFrame, key: str, label: str, extra: tuple[str, ...] = ()) -> str:
    cols = [key, *extra]
    head = "  ".join(f"{c if c != key else label:>10}" for c in cols)
    out = [f"{head}  {'att':>9}  {'se':>8}  {'ci_lower':>9}  {'ci_upper':>9}  sig"]
    for r in frame.iter_rows(named=True):
        keys = "  ".join(f"{('overall' if r[c] is None else r[c])!s:>10}" for c in cols)
        sig = "*" if r["zero_not_in_cband"] else ""
        nums = "  ".join(
            f"{_fmt(r[c]):>{w}}" for c, w in (("att", 9), ("se", 8), ("ci_lower", 9), ("ci_upper", 9))
        )
        out.append(f"{keys}  {nums}  {sig}")
    return "\n".join(out)
