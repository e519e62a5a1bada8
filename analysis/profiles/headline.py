"""The profiles study's headline, in numbers read from its marts (for the report).

The memorisation-profiles paper's findings, each on natural single-exposure rows (`units =
'single'`, its setting) with a verdict decided by the numbers: instantaneous memorisation tracks
the learning rate; the larger model memorises more and longer; profiles correlate across sizes;
duplicated rows are memorised more than single ones. Then the placebo (pre-trend) tests of every
unit set. A unit set whose smallest cohort holds fewer than `MIN_UNITS` treated rows is flagged.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np

from analysis.page import num, table, verdict
from memlake.core import query

# The fits the findings read: surprisal, never-treated controls, varying base, first epoch.
FIT = (
    "metric = 'sup_seq' and control_group = 'never_treated' and base_period = 'varying' and first_epoch "
    "and design = 'none'"
)
SINGLE = f"units = 'single' and {FIT}"
MIN_UNITS = 10
LR_R = 0.5  # "tracks the learning rate" / "profiles correlate": Pearson r above this


@dataclass
class Effects:
    e0: float  # memorisation at event time 0 (nats/token)
    later: float  # mean over event times >= 1
    residual: float  # mean memorisation at the last checkpoint
    significant: int  # event times whose uniform band excludes 0
    event_times: int


@dataclass
class ProfilesHeadline:
    models: list[str]  # smallest first
    lr: dict[str, tuple[float, int]] = field(default_factory=dict)  # model -> (Pearson r, cohorts)
    effects: dict[str, Effects] = field(default_factory=dict)
    correlation: list[tuple[str, str, float, int]] = field(default_factory=list)  # a, b, r, cells
    duplicated: dict[str, tuple[float, float]] = field(default_factory=dict)  # model -> (single, duplicated)
    pretrend: list[tuple] = field(default_factory=list)  # units, model, method, cells, p
    smallest_cohort: dict[tuple[str, str], int] = field(default_factory=dict)  # (units, model) -> n
    # model -> (method, breakdown, robust interval at the largest bound, that bound) of the average
    # persistent memorisation (HonestDiD, profiles_honest)
    honest: dict[str, tuple[str, float, float, float, float]] = field(default_factory=dict)

    def lr_holds(self) -> bool | None:
        rs = [r for r, _ in self.lr.values()]
        return all(r > LR_R for r in rs) if rs else None

    def size_holds(self) -> bool | None:
        small, large = self.effects.get(self.models[0]), self.effects.get(self.models[-1])
        if len(self.models) < 2 or small is None or large is None:
            return None
        return large.e0 > small.e0 and large.later > small.later

    def correlation_holds(self) -> bool | None:
        return all(r > LR_R for *_, r, _ in self.correlation) if self.correlation else None

    def duplicated_holds(self) -> bool | None:
        return all(d > s for s, d in self.duplicated.values()) if self.duplicated else None

    def _honest_html(self) -> str:
        sentences = "".join(
            f"<li>{_honest_sentence(html.escape(m), *v)}</li>" for m, v in self.honest.items()
        )
        return (
            "<h3>Sensitivity to parallel trends (HonestDiD)</h3><p class=muted>How large a violation of "
            "parallel trends would overturn the average persistent memorisation (event times 0..4 in "
            "checkpoint periods, 4 pre-periods; Rambachan &amp; Roth 2023). The breakdown value is the "
            "largest bound whose robust confidence set still excludes zero; it is drawn beside each "
            f"persistent curve.</p><ul>{sentences}</ul>"
        )

    def flags(self) -> list[str]:
        return [
            f"{units} on {model}: its smallest cohort holds {n} rows (< {MIN_UNITS}), too few to mean much"
            for (units, model), n in sorted(self.smallest_cohort.items())
            if n < MIN_UNITS
        ]

    def html(self) -> str:
        items = []
        text = ", ".join(
            f"{m} r = {num(f'profiles.lr_r.{m}', r)} over {n} cohorts" for m, (r, n) in self.lr.items()
        )
        items.append(
            "Instantaneous memorisation (t = g) tracks the learning rate at the cohort's checkpoint: "
            f"Pearson {text or 'no cohort'}. {verdict(self.lr_holds())} (criterion r > {LR_R})."
        )
        text = "; ".join(
            f"{m}: {num(f'profiles.e0.{m}', e.e0, '.4f')} at e = 0, "
            f"{num(f'profiles.later.{m}', e.later, '.4f')} on average over e ≥ 1, residual "
            f"{e.residual:.4f}, {e.significant} of {e.event_times} event times significant"
            for m, e in self.effects.items()
        )
        items.append(
            "The larger model memorises more and longer (nats/token, smallest to largest): "
            f"{text or 'no fit'}. {verdict(self.size_holds())} (criterion: the largest model's effect is "
            "above the smallest's at e = 0 and on average over e ≥ 1)."
        )
        text = ", ".join(
            f"{a} vs {b}: r = {num(f'profiles.corr.{a}.{b}', r)} over {n} cells"
            for a, b, r, n in self.correlation
        )
        items.append(
            f"Profiles correlate across sizes: {text or 'one model only'}. "
            f"{verdict(self.correlation_holds())} (criterion r > {LR_R})."
        )
        text = "; ".join(
            f"{m}: {num(f'profiles.duplicated.{m}', d, '.4f')} duplicated vs "
            f"{num(f'profiles.single.{m}', s, '.4f')} single" + (f" ({d / s:.1f}×)" if s > 0 else "")
            for m, (s, d) in self.duplicated.items()
        )
        items.append(
            "Duplicated rows are memorised more than single-exposure rows (mean over post-treatment "
            f"cells, nats/token): {text or 'no duplicated fit'}. {verdict(self.duplicated_holds())}."
        )
        parts = [
            "<p class=muted>Natural single-exposure rows (the paper's setting), surprisal fits, "
            "validation rows as never-treated controls, first epoch; memorisation in nats/token "
            "(positive = memorised); event time e in checkpoint periods.</p>",
            "<ul>" + "".join(f"<li>{x}</li>" for x in items) + "</ul>",
        ]
        parts += [f'<p class="flag">&#9888; {html.escape(f)}</p>' for f in self.flags()]
        if self.honest:
            parts.append(self._honest_html())
        if self.pretrend:
            rows = [
                (u, m, t, c, num(f"profiles.pretrend.{u}.{m}.{t}", p, ".3g"))
                for u, m, t, c, p in self.pretrend
            ]
            parts.append(
                "<h3>Placebo (pre-trend) tests</h3><p class=muted>p-values of the pre-treatment tests "
                "per unit set. <code>wald_event</code> (the event-study pre-test over pre-treatment "
                "event times) keeps its size with small cohorts; R's cell-level <code>wald</code> and "
                "the bootstrap <code>sup_t</code> over every pre-treatment cell over-reject when cohorts "
                "hold tens of units (their size on panels of this shape: bench/pretrend_size.py and the "
                "README's Benchmarks). Planted sets share content across rows "
                "(triggers, templates, copies), so their pre-periods are not expected to be flat.</p>"
                + table(["units", "model", "test", "cells", "p"], rows)
            )
        return "\n".join(parts)


def model_sizes(models: list[str], suite_config: Path | None) -> list[str]:
    """Models from smallest to largest (layers x hidden^2 from the suite config, else by name)."""
    import yaml

    specs = {}
    if suite_config is not None and suite_config.exists():
        cfg = yaml.safe_load(suite_config.read_text()) or {}
        specs = {m["name"]: m for m in cfg.get("suite", {}).get("models", [])}

    def size(m: str) -> tuple:
        s = specs.get(m)
        return (0, m) if s is None else (int(s["layers"]) * int(s["hidden_size"]) ** 2, m)

    return sorted(models, key=size)


def _honest_sentence(model: str, method: str, breakdown: float, lo: float, hi: float, bound: float) -> str:
    name = "M̄" if method == "relative_magnitude" else "M"
    what = (
        "a post-training change in the trend gap of up to M̄ times the largest pre-training one"
        if method == "relative_magnitude"
        else "a bend of the pre-training trend gap of up to M per checkpoint"
    )
    if np.isnan(breakdown):
        return f"{model}: the average is not significant even under parallel trends (no breakdown value)"
    return (
        f"{model}: still excludes zero under {what} for {name} ≤ "
        f"{num(f'profiles.honest.breakdown.{model}', breakdown, '.3g')}; at {name} = {bound:g} the robust "
        f"95% set is [{lo:.4f}, {hi:.4f}] (ATT units)"
    )


def profiles_headline(
    con: duckdb.DuckDBPyConnection, suite_config: Path | None = None
) -> ProfilesHeadline | None:
    """The headline of the profile marts `con` sees; None without a fit of natural rows."""
    q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
    if "profiles_attgt" not in query.view_names(con):
        return None
    fitted = [m for (m,) in q(f"select distinct model from profiles_attgt where {SINGLE}")]
    if not fitted:
        return None
    out = ProfilesHeadline(model_sizes(fitted, suite_config))
    lr = q(
        "select i.model, corr(i.memorisation, c.lr), count(*) "
        f"from (select * from profiles_instantaneous where {SINGLE}) i "
        "join checkpoints c on c.model = i.model and c.step = i.cohort group by all"
    )
    by = {m: (r, n) for m, r, n in lr if r is not None}
    out.lr = {m: by[m] for m in out.models if m in by}

    event = q(
        "select model, key, memorisation, coalesce(zero_not_in_cband, false) from profiles_aggregates "
        f"where kind = 'event' and key >= 0 and {SINGLE}"
    )
    resid = dict(q(f"select model, avg(memorisation) from profiles_residual where {SINGLE} group by all"))
    for m in out.models:
        ks = {k: (v, sig) for mm, k, v, sig in event if mm == m}
        later = [v for k, (v, _) in ks.items() if k >= 1]
        if 0 in ks and later and resid.get(m) is not None:
            out.effects[m] = Effects(
                ks[0][0], sum(later) / len(later), resid[m], sum(s for _, s in ks.values()), len(ks)
            )

    out.correlation = [
        tuple(r)
        for r in q(
            "select model_a, model_b, pearson, cells from profiles_correlation "
            f"where model_a < model_b and pearson is not null and {SINGLE} order by all"
        )
    ]
    simple = {
        (m, u): v
        for m, u, v in q(
            "select model, units, memorisation from profiles_aggregates where kind = 'simple' "
            f"and units in ('single', 'duplicated') and {FIT}"
        )
    }
    out.duplicated = {
        m: (simple[m, "single"], simple[m, "duplicated"])
        for m in out.models
        if (m, "single") in simple and (m, "duplicated") in simple
    }
    out.pretrend = [
        tuple(r)
        for r in q(
            "select units, model, method, cells, p_value from profiles_pretrend "
            f"where {FIT} order by units != 'single', units, model, method"
        )
    ]
    if "profiles_honest" in query.view_names(con):
        for m, method, b, lo, hi, bound in q(
            "select model, method, breakdown, ci_lower, ci_upper, bound from profiles_honest "
            f"where target = 'average' and {SINGLE} qualify bound = max(bound) over (partition by model)"
        ):
            out.honest[m] = (method, np.nan if b is None else b, lo, hi, bound)
    out.smallest_cohort = {
        (u, m): int(n)
        for u, m, n in q(f"select units, model, min(n_treated) from profiles_attgt where {FIT} group by all")
    }
    return out


def profiles_html(con: duckdb.DuckDBPyConnection, suite_config: Path | None = None) -> str:
    h = profiles_headline(con, suite_config)
    if h is None:
        return (
            "<p class=muted>No profile fit of natural single-exposure rows (units = 'single'): run "
            "<code>memlake profiles fit</code>.</p>"
        )
    return h.html()
