"""Sensitivity of an event study to violations of parallel trends (Rambachan & Roth 2023).

The event-study estimates beta = (beta_pre, beta_post), normalised to 0 at the reference period
e = -1, satisfy beta = (delta_pre, tau_post + delta_post): delta is the difference in trends that
parallel trends sets to 0. The target is theta = l' tau_post (l = e_k picks one event time).
Instead of delta_post = 0 we assume delta lies in a set Delta and report confidence sets valid
for every delta in it, with delta_pre pinned down by the pre-period estimates:

  smoothness          Delta^SD(M) = {delta : |(delta_{t+1} - delta_t) - (delta_t - delta_{t-1})| <= M}
                      (a linear extrapolation of the pre-trend, bent by at most M per period).
                      Confidence set: the optimal fixed-length CI (FLCI), an affine estimator
                      l_pre' beta_pre + l' beta_post +- h cv_alpha(bias / h), whose pre-period
                      weights minimise the half-length; the worst-case bias is an LP whose dual
                      makes the search one second-order cone program per h (cvxpy).
  relative_magnitude  Delta^RM(Mbar) = {delta : |delta_{t+1} - delta_t| <= Mbar max_{s<0}
                      |delta_{s+1} - delta_s| for t >= 0}: a post-period change in trend at most
                      Mbar times the largest pre-period one. Delta^RM is a union of polyhedra,
                      one per (pre-period s attaining the max, sign); each is tested with the
                      conditional moment-inequality test of Andrews, Roth & Pakes (2023), with
                      the post-period effects other than theta as linear nuisance parameters,
                      and the confidence set is the union over polyhedra of the accepted theta.

The breakdown value is the largest M (or Mbar) at which the robust confidence set still excludes
0: how large a violation of parallel trends it takes to overturn the conclusion.

Grids and defaults follow R `HonestDiD` (theta grid of the conditional test: the point estimate
+- (Mbar sum_t t |l_t| max pre change + 20 sd), 1,000 points; the FLCI's h between the minimum
variance and the minimum bias estimators). LPs go to HiGHS through scipy, the cone programs to
Clarabel through cvxpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import polars as pl
from scipy import optimize, stats

METHODS = ("relative_magnitude", "smoothness")
TESTS = ("C-LF", "C")  # relative magnitudes: the hybrid (R's default) or the conditional test
_Z = NormalDist()


@dataclass(frozen=True)
class EventStudy:
    """beta over event times -T_pre..-2, 0..T_post-1 (the reference -1 removed) and its covariance."""

    beta: np.ndarray
    sigma: np.ndarray
    n_pre: int
    n_post: int

    @property
    def pre(self) -> np.ndarray:
        return self.beta[: self.n_pre]

    def target(self, k: int | None) -> np.ndarray:
        """l: e_k for the ATT at post event time k, or the average over post periods (k None)."""
        if k is None:
            return np.full(self.n_post, 1.0 / self.n_post)
        l_vec = np.zeros(self.n_post)
        l_vec[k] = 1.0
        return l_vec


@dataclass(frozen=True)
class HonestResult:
    """Robust confidence sets for theta over a grid of M (or Mbar), and the breakdown value."""

    method: str
    event_time: int | str  # a post event time, or "average" (the mean over post periods)
    estimate: float
    original: tuple[float, float]  # the conventional CI (parallel trends exactly)
    grid: np.ndarray  # M or Mbar values
    lower: np.ndarray
    upper: np.ndarray
    breakdown: float  # largest M/Mbar whose set excludes 0 (NaN if the original CI covers 0)
    alpha: float

    def to_polars(self) -> pl.DataFrame:
        name = "m" if self.method == "smoothness" else "mbar"
        return pl.DataFrame(
            {
                "method": self.method,
                "target": str(self.event_time),
                name: self.grid,
                "ci_lower": self.lower,
                "ci_upper": self.upper,
                "excludes_zero": (self.lower > 0) | (self.upper < 0),
            }
        )

    def __str__(self) -> str:
        name = "M" if self.method == "smoothness" else "Mbar"
        lines = [
            f"HonestDiD ({self.method}), theta = ATT at event time {self.event_time}: {self.estimate:.4f}"
            if self.event_time != "average"
            else f"HonestDiD ({self.method}), theta = average post-period ATT: {self.estimate:.4f}",
            f"  original {1 - self.alpha:.0%} CI [{self.original[0]:.4f}, {self.original[1]:.4f}]",
        ]
        lines += [
            f"  {name} = {m:g}: [{lo:.4f}, {hi:.4f}]" for m, lo, hi in zip(self.grid, self.lower, self.upper)
        ]
        lines.append(f"  breakdown {name}: {self.breakdown:.4g}")
        return "\n".join(lines)


# --- smoothness: the fixed-length confidence interval --------------------------------------------


def _second_differences(n_pre: int, n_post: int) -> np.ndarray:
    """(T - 1, T) second differences of delta over -n_pre..n_post with delta_0 = 0 dropped."""
    total = n_pre + n_post + 1
    d = np.zeros((total - 2, total))
    for r in range(total - 2):
        d[r, r : r + 3] = [1.0, -2.0, 1.0]
    return np.delete(d, n_pre, axis=1)


def _folded_normal_quantile(p: float, mean: float) -> float:
    """The p quantile of |N(mean, 1)|."""
    mean = abs(mean)
    if mean == 0:
        return _Z.inv_cdf((1 + p) / 2)

    def cdf(x: float) -> float:
        return stats.norm.cdf(x - mean) - stats.norm.cdf(-x - mean) - p

    return optimize.brentq(cdf, 0.0, mean + 10.0, xtol=1e-12)


def _flci(es: EventStudy, l_vec: np.ndarray, m: float, alpha: float) -> tuple[float, float]:
    import cvxpy as cp  # heavy import, only for HonestDiD

    n_pre, sigma = es.n_pre, es.sigma
    pre_times = np.arange(-n_pre, 0)
    post_times = np.arange(1, es.n_post + 1)
    trend = float(post_times @ l_vec)  # bias is finite iff the estimator ignores linear trends
    d = _second_differences(n_pre, es.n_post)
    l_pre = cp.Variable(n_pre)
    lam = cp.Variable(d.shape[0])
    v = cp.hstack([l_pre, l_vec])
    psd = cp.psd_wrap(sigma)
    base = [pre_times @ l_pre + trend == 0]

    def min_bias(h: float) -> tuple[float, np.ndarray]:
        prob = cp.Problem(cp.Minimize(cp.norm1(lam)), [*base, d.T @ lam == v, cp.quad_form(v, psd) <= h**2])
        prob.solve(solver=cp.CLARABEL)
        if prob.status not in ("optimal", "optimal_inaccurate"):
            return np.inf, np.zeros(n_pre)
        return float(prob.value) * m, np.asarray(l_pre.value)

    def half_length(h: float) -> float:
        bias, _ = min_bias(h)
        return h * _folded_normal_quantile(1 - alpha, bias / h) if np.isfinite(bias) else np.inf

    var = cp.Problem(cp.Minimize(cp.quad_form(v, psd)), base)
    var.solve(solver=cp.CLARABEL)
    h_lo = float(np.sqrt(var.value))
    # the minimum-bias estimator extrapolates the line through beta_{-1} and the reference 0
    extrapolate = np.r_[np.zeros(n_pre - 1), trend, l_vec]
    h_hi = float(np.sqrt(extrapolate @ sigma @ extrapolate))
    if h_hi - h_lo > 1e-12 * h_hi:
        h = optimize.minimize_scalar(
            half_length, bounds=(h_lo, h_hi), method="bounded", options={"xatol": 1e-6 * h_hi}
        ).x
    else:
        h = h_hi
    bias, weights = min_bias(h)
    if not np.isfinite(bias):  # numerical edge: the extrapolation estimator is always feasible
        h, weights, bias = h_hi, extrapolate[:n_pre], m * _min_bias_of(d, extrapolate)
    centre = float(weights @ es.pre + l_vec @ es.beta[n_pre:])
    half = h * _folded_normal_quantile(1 - alpha, bias / h)
    return centre - half, centre + half


def _min_bias_of(d: np.ndarray, v: np.ndarray) -> float:
    """min ||lambda||_1 s.t. d' lambda = v (an LP): the worst-case bias per unit of M."""
    k = d.shape[0]
    res = optimize.linprog(
        np.ones(2 * k), A_eq=np.hstack([d.T, -d.T]), b_eq=v, bounds=[(0, None)] * (2 * k), method="highs"
    )
    return float(res.fun)


# --- relative magnitudes: the conditional moment-inequality test --------------------------------


def _first_differences(n_pre: int, n_post: int) -> np.ndarray:
    """(T, T) first differences delta_{t} - delta_{t-1} over -n_pre+1..n_post, delta_0 dropped."""
    total = n_pre + n_post + 1
    d = np.zeros((total - 1, total))
    for r in range(total - 1):
        d[r, r : r + 2] = [-1.0, 1.0]
    return np.delete(d, n_pre, axis=1)


def _rm_polyhedra(n_pre: int, n_post: int, mbar: float, first: int = 0) -> list[np.ndarray]:
    """A per (s, sign): A delta <= 0 describes Delta^RM with the max pre change at s, of that sign.
    Every pre-period change delta_{s+1} - delta_s, s = -n_pre..-1, may be the max (R HonestDiD;
    `first` > 0 leaves out the earliest ones, which moderndid 0.2.0 does by an off-by-one).
    Only the rows on post-period changes enter the test (R HonestDiD's postPeriodMomentsOnly):
    the pre-period rows involve delta_pre = beta_pre alone."""
    diff = _first_differences(n_pre, n_post)
    pre_rows, post_rows = diff[:n_pre], diff[n_pre:]
    out = []
    for s in range(first, n_pre):
        for sign in (1.0, -1.0):
            bound = sign * pre_rows[s]
            out.append(np.vstack([post_rows - mbar * bound, -post_rows - mbar * bound]))
    return out


def _nuisance_basis(l_vec: np.ndarray) -> np.ndarray:
    """Columns: the direction that moves theta = l' tau by one, then a basis of {tau : l' tau = 0}."""
    k = int(np.argmax(np.abs(l_vec)))
    gamma = np.eye(len(l_vec))
    gamma[0] = l_vec
    if k:
        gamma[[k]] = np.eye(len(l_vec))[[0]]
    return np.linalg.inv(gamma)


def _truncated_quantile(p: float, lo: float, hi: float) -> float:
    if not np.isfinite(lo) and not np.isfinite(hi):
        return _Z.inv_cdf(p)
    return float(stats.truncnorm.ppf(p, lo, hi))


def _lp_value(y: np.ndarray, x: np.ndarray, sd: np.ndarray):
    """eta = min {eta : y - x tau <= sd eta}, its vertex duals (>= 0) and success."""
    k, p = x.shape
    res = optimize.linprog(
        np.r_[1.0, np.zeros(p)],
        A_ub=-np.column_stack([sd, x]),
        b_ub=-y,
        bounds=[(None, None)] * (p + 1),
        method="highs-ds",
    )
    if not res.success:
        return np.nan, np.zeros(k), False
    return float(res.x[0]), -res.ineqlin.marginals, True


def _dual_max(s: np.ndarray, b: np.ndarray, w: np.ndarray, c: float) -> tuple[float, np.ndarray | None]:
    """max_{g >= 0, w' g = e1} g'(s + b c), the LP value were gamma' y = c (S fixed), and its g."""
    rhs = np.zeros(w.shape[1])
    rhs[0] = 1.0
    res = optimize.linprog(-(s + b * c), A_eq=w.T, b_eq=rhs, bounds=[(0, None)] * len(s), method="highs")
    return (-float(res.fun), res.x) if res.success else (np.inf, None)


def _stays_optimal_until(s: np.ndarray, b: np.ndarray, w: np.ndarray, start: float, tol: float) -> float:
    """The end of the range of c, on the side of `start`, where the LP value equals c.

    The value minus c is convex and piecewise linear in c and zero on that range: from a point
    outside it, the zero of the maximising vertex's line is closer and still outside (or on the
    edge), so these steps reach the edge exactly after at most as many steps as vertices."""
    c = start
    for _ in range(100):
        value, g = _dual_max(s, b, w, c)
        if g is None:
            return np.nan
        if value - c <= tol:
            return c
        slope = 1.0 - float(g @ b)
        if abs(slope) < 1e-12:
            return np.nan
        c = float(g @ s) / slope
    return c


def arp_conditional_test(
    y: np.ndarray, x: np.ndarray, sigma: np.ndarray, alpha: float, lf: tuple[float, float] | None = None
) -> bool:
    """Reject H0: exists tau with E[y] - x tau <= 0 (Andrews, Roth & Pakes 2023, the conditional
    test). eta is the LP value; conditional on the optimal dual vertex gamma and on the part of y
    independent of gamma' y, eta / sd(gamma' y) is a standard normal truncated to where that vertex
    stays optimal, so the critical value is that truncated normal's 1 - alpha quantile.

    `lf = (kappa, c_LF)` makes it the hybrid test (their section 3.3): reject outright when eta
    exceeds the least-favourable critical value c_LF (`least_favorable_cv`, size kappa); otherwise
    run the conditional test at size (alpha - kappa) / (1 - kappa), conditioning also on eta <= c_LF.
    The first stage adds power where the conditional test's truncation is close."""
    sd = np.sqrt(np.diag(sigma))
    eta, lam, ok = _lp_value(y, x, sd)
    if not ok:
        return False
    if lf is not None:
        kappa, c_lf = lf
        if eta > c_lf:
            return True
        alpha = (alpha - kappa) / (1 - kappa)
    p = x.shape[1]
    basic = lam > 1e-6
    w = np.column_stack([sd, x])
    if basic.sum() == p + 1 and np.linalg.matrix_rank(w[basic]) == p + 1:
        # non-degenerate vertex: the basis stays optimal while every slack stays >= 0
        w_b_inv = np.linalg.inv(w[basic])
        gamma = np.zeros(len(y))
        gamma[basic] = w_b_inv.T[:, 0]
        slack = w[~basic] @ w_b_inv @ np.eye(len(y))[basic] - np.eye(len(y))[~basic]
        var = float(gamma @ sigma @ gamma)
        rho = slack @ sigma @ gamma / var
        bound = -(slack @ y) / rho + gamma @ y
        lo = np.max(bound[rho > 0], initial=-np.inf)
        hi = np.min(bound[rho < 0], initial=np.inf)
    else:
        # degenerate: find where the LP value as a function of gamma' y stays equal to it
        gamma = lam
        var = float(gamma @ sigma @ gamma)
        if var <= np.finfo(float).eps:
            return eta > 0
        b = sigma @ gamma / var
        s = y - b * (gamma @ y)
        span = max(100.0, abs(eta) + 20 * np.sqrt(var))
        tol = 1e-9 * span
        hi = _stays_optimal_until(s, b, w, eta + span, tol)
        lo = _stays_optimal_until(s, b, w, eta - span, tol)
        hi = np.inf if hi >= eta + span - tol else hi
        lo = -np.inf if lo <= eta - span + tol else lo
    if lf is not None:
        hi = min(hi, lf[1])
    sd_eta = np.sqrt(var)
    z, zlo, zhi = eta / sd_eta, lo / sd_eta, hi / sd_eta
    if not zlo - 1e-9 <= z <= zhi + 1e-9:
        return False
    return z > max(0.0, _truncated_quantile(1 - alpha, zlo, zhi))


LF_SIMS = 1000  # draws for the least-favourable critical value, as R HonestDiD
MAX_VERTICES = 50_000  # dual bases enumerated at most; beyond, one LP per draw


def least_favorable_cv(
    x: np.ndarray, sigma: np.ndarray, kappa: float, sims: int = LF_SIMS, seed: int = 0
) -> float:
    """c_LF: the 1 - kappa quantile of the LP value eta(xi) for xi ~ N(0, sigma), the least
    favourable null (every moment binding). The draws are numpy's `default_rng(seed)`, as R's
    port in moderndid draws them. eta(xi) = max over the dual feasible set's vertices of g' xi
    (LP duality), so with few enough bases all draws are one matrix product."""
    xi = np.random.default_rng(seed).multivariate_normal(np.zeros(len(sigma)), sigma, size=sims)
    sd = np.sqrt(np.diag(sigma))
    vertices = _dual_vertices(np.column_stack([sd, x]))
    if vertices is not None:
        eta = (xi @ vertices.T).max(axis=1)
    else:
        eta = np.array([_lp_value(v, x, sd)[0] for v in xi])
        eta = eta[np.isfinite(eta)]
    return float(np.quantile(eta, 1 - kappa))


def _dual_vertices(w: np.ndarray) -> np.ndarray | None:
    """The vertices of {g >= 0 : w' g = e1} (one per row), or None when there are too many bases
    to enumerate (or w has dependent columns)."""
    from itertools import combinations
    from math import comb

    k, m = w.shape
    if np.linalg.matrix_rank(w) < m or comb(k, m) > MAX_VERTICES:
        return None
    bases = np.array(list(combinations(range(k), m)))
    blocks = w[bases].transpose(0, 2, 1)  # w_B' per basis
    rhs = np.zeros(m)
    rhs[0] = 1.0
    ok = np.abs(np.linalg.det(blocks)) > 1e-12
    g_b = np.linalg.solve(blocks[ok], np.broadcast_to(rhs, (ok.sum(), m))[..., None])[..., 0]
    feasible = (g_b >= -1e-10).all(axis=1)
    out = np.zeros((int(feasible.sum()), k))
    np.put_along_axis(out, bases[ok][feasible], np.clip(g_b[feasible], 0, None), axis=1)
    return out


@dataclass(frozen=True)
class _Moments:
    """One polyhedron's moment inequalities for H0: theta = t, prepared once for every t:
    E[y0 - slope t] - x tau <= 0, with covariance sigma."""

    y0: np.ndarray
    slope: np.ndarray
    x: np.ndarray
    sigma: np.ndarray

    @classmethod
    def of(cls, es: EventStudy, l_vec: np.ndarray, a: np.ndarray) -> _Moments:
        basis = _nuisance_basis(l_vec)
        a_post = a[:, es.n_pre :]
        return cls(a @ es.beta, a_post @ basis[:, 0], a_post @ basis[:, 1:], a @ es.sigma @ a.T)

    def accepts(self, theta: float, alpha: float, test: str = "C-LF") -> bool:
        lf = (alpha / 10, self.lf_cv(alpha / 10)) if test == "C-LF" else None
        return not arp_conditional_test(self.y0 - self.slope * theta, self.x, self.sigma, alpha, lf)

    def lf_cv(self, kappa: float) -> float:
        """c_LF of this polyhedron (theta shifts only the mean): computed once per kappa."""
        cache = self.__dict__.setdefault("_lf", {})
        if kappa not in cache:
            cache[kappa] = least_favorable_cv(self.x, self.sigma, kappa)
        return cache[kappa]


def _rm_set(
    es: EventStudy,
    l_vec: np.ndarray,
    mbar: float,
    alpha: float,
    grid_points: int,
    first: int = 0,
    test: str = "C-LF",
):
    """Accepted theta on R's grid, per polyhedron searched outward from an accepted point."""
    sd_theta = float(np.sqrt(l_vec @ es.sigma[es.n_pre :, es.n_pre :] @ l_vec))
    max_pre = float(np.max(np.abs(np.diff(np.r_[es.pre, 0.0]))))
    centre = float(l_vec @ es.beta[es.n_pre :])
    half = mbar * float(np.arange(1, es.n_post + 1) @ np.abs(l_vec)) * max_pre + 20 * sd_theta
    grid = np.linspace(centre - half, centre + half, grid_points)
    accepted = np.zeros(grid_points, dtype=bool)
    for a in _rm_polyhedra(es.n_pre, es.n_post, mbar, first):
        tested: dict[int, bool] = {}
        moments = _Moments.of(es, l_vec, a)

        def ok(i: int, moments=moments, tested=tested) -> bool:
            if i not in tested:
                tested[i] = moments.accepts(float(grid[i]), alpha, test)
            return tested[i]

        start = _first_accepted(ok, _identified_centre(es, l_vec, a, grid), grid_points)
        if start is None:
            continue
        lo, hi = _edge(ok, start, 0), _edge(ok, start, grid_points - 1)
        accepted[lo : hi + 1] = True
    if not accepted.any():
        return np.nan, np.nan
    idx = np.flatnonzero(accepted)
    return float(grid[idx[0]]), float(grid[idx[-1]])


def _identified_centre(es: EventStudy, l_vec: np.ndarray, a: np.ndarray, grid: np.ndarray) -> int:
    """Grid index of the middle of the polyhedron's identified set at beta-hat (two LPs over
    delta_post with delta_pre = beta_pre): where its confidence set is centred."""
    a_pre, a_post = a[:, : es.n_pre], a[:, es.n_pre :]
    ends = []
    for sign in (1.0, -1.0):
        res = optimize.linprog(sign * l_vec, A_ub=a_post, b_ub=-a_pre @ es.pre,
                               bounds=[(None, None)] * es.n_post, method="highs")  # fmt: skip
        if not res.success:
            return len(grid) // 2
        ends.append(float(l_vec @ es.beta[es.n_pre :] - l_vec @ res.x))
    return int(np.clip(np.searchsorted(grid, np.mean(ends)), 0, len(grid) - 1))


def _first_accepted(ok, centre: int, n: int) -> int | None:
    """An accepted index: the centre, else the first of a scan over a hundred evenly spaced points
    (a set narrower than that spacing and away from the identified set's centre is missed)."""
    if ok(centre):
        return centre
    return next((i for i in range(0, n, max(1, n // 100)) if ok(i)), None)


def _edge(ok, start: int, end: int) -> int:
    """The last accepted index from `start` toward `end`, by bisection (an interval)."""
    if ok(end):
        return end
    good, bad = start, end
    while abs(bad - good) > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if ok(mid) else (good, mid)
    return good


def _rm_covers_zero(
    es: EventStudy, l_vec: np.ndarray, mbar: float, alpha: float, first: int = 0, test: str = "C-LF"
) -> bool:
    polyhedra = _rm_polyhedra(es.n_pre, es.n_post, mbar, first)
    return any(_Moments.of(es, l_vec, a).accepts(0.0, alpha, test) for a in polyhedra)


# --- the public entry point ----------------------------------------------------------------------


def honest_did(
    es: EventStudy,
    *,
    k: int | None,
    event_time: int | str,
    method: str,
    mbar: list[float] | np.ndarray,
    alpha: float = 0.05,
    grid_points: int = 1000,
    first_pre_change: int = 0,
    test: str = "C-LF",
) -> HonestResult:
    """Robust confidence sets for theta = beta_post[k] over `mbar` and the breakdown value.
    `test` (relative magnitudes): "C-LF", the hybrid of the least-favourable and conditional
    tests (R HonestDiD's default), or "C", the conditional test alone."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    grid = np.asarray(mbar, dtype=float)
    if (grid < 0).any():
        raise ValueError(f"mbar must be >= 0, got {grid.tolist()}")
    if method == "relative_magnitude" and es.n_pre < 1:
        raise ValueError("relative magnitudes need at least one pre-period change (event time -2)")
    l_vec = es.target(k)
    estimate = float(l_vec @ es.beta[es.n_pre :])
    sd = float(np.sqrt(l_vec @ es.sigma[es.n_pre :, es.n_pre :] @ l_vec))
    z = _Z.inv_cdf(1 - alpha / 2)
    original = (estimate - z * sd, estimate + z * sd)

    def robust(m: float) -> tuple[float, float]:
        if method == "smoothness":
            return _flci(es, l_vec, m, alpha)
        return _rm_set(es, l_vec, m, alpha, grid_points, first_pre_change, test)

    bounds = np.array([robust(m) for m in grid]).reshape(-1, 2)

    def covers_zero(m: float) -> bool:
        if method == "smoothness":
            lo, hi = _flci(es, l_vec, m, alpha)
            return lo <= 0 <= hi
        return _rm_covers_zero(es, l_vec, m, alpha, first_pre_change, test)

    return HonestResult(
        method=method,
        event_time=event_time,
        estimate=estimate,
        original=original,
        grid=grid,
        lower=bounds[:, 0],
        upper=bounds[:, 1],
        breakdown=_breakdown(covers_zero, excluded=not original[0] <= 0 <= original[1]),
        alpha=alpha,
    )


def _breakdown(covers_zero, excluded: bool, rel_tol: float = 1e-3) -> float:
    """sup {m : the robust set at m excludes 0}, by doubling then bisection (sets grow with m)."""
    if not excluded or covers_zero(0.0):
        return np.nan
    hi = 0.25
    while not covers_zero(hi):
        hi *= 2
        if hi > 1e6:
            return np.inf
    lo = hi / 2 if hi > 0.25 else 0.0
    while hi - lo > rel_tol * hi:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if covers_zero(mid) else (mid, hi)
    return lo
