"""The cross-analyses in words, from their marts: when each taxonomy category is memorised and
for how long, whether the attacks follow the DiD, and what each unlearning method removes."""

from __future__ import annotations

import html
import math

import duckdb
import polars as pl

from analysis.cross.figures import BEST_BY_CATEGORY
from analysis.cross.mia_vs_did import agreement
from analysis.page import Html, num, table
from analysis.profiles.metrics import SIGN
from memlake.core.query import frame, view_names


def category_timing(rows: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Per (model, category): the first and last event time >= 0 at which the 95 % interval of the
    memorisation excludes zero (memorised from, still memorised at), and its peak."""
    out = []
    sign = SIGN[metric]
    post = rows.filter((pl.col("metric") == metric) & (pl.col("event_time") >= 0))
    for (model, category), part in post.group_by("model", "category", maintain_order=True):
        part = part.sort("event_time")
        lower = (part[["ci_lower", "ci_upper"]] * sign).min_horizontal()
        on = part.filter(lower > 0)["event_time"]
        peak = part.row(int(part["memorisation"].arg_max()), named=True)
        out.append({
            "model": model, "category": category, "n_treated": part["n_treated"][0],
            "from": on.min() if len(on) else None, "until": on.max() if len(on) else None,
            "periods": len(part), "peak_event": peak["event_time"], "peak": peak["memorisation"],
            "extractable": part["memorised_share"].max(),
        })  # fmt: skip
    return pl.DataFrame(out).sort("model", "category") if out else pl.DataFrame()


def _timing_row(r: dict) -> list:
    key = f"cross.{r['model']}.{r['category']}.peak"
    share = r["extractable"]
    return [
        r["model"], r["category"], r["n_treated"],
        "never" if r["from"] is None else f"e = {r['from']}",
        "—" if r["until"] is None else f"e = {r['until']}",
        Html(f"{num(key, r['peak'], '.4f')} at e = {int(r['peak_event'])}"),
        "—" if share is None or math.isnan(share) else f"{share:.1%}",
    ]  # fmt: skip


def cross_html(con: duckdb.DuckDBPyConnection, metric: str = "sup_seq") -> str:
    have, parts = view_names(con), []
    if "profiles_by_category" in have:
        timing = category_timing(frame(con, "select * from profiles_by_category"), metric)
        body = [_timing_row(r) for r in timing.iter_rows(named=True)]
        parts.append(
            "<h3>Profiles by taxonomy category</h3><p>The DiD "
            f"({html.escape(metric)}, never-trained controls) fitted on each category's training rows of "
            "the panel: from which event time (checkpoint periods after the cohort) the 95 % interval of "
            "the memorisation excludes zero, the last event time at which it still does (of the periods "
            "observed), its peak, and the largest share of the category's rows k-extractable at one event "
            "time.</p>"
            + table(
                ["model", "category", "rows", "memorised from", "still at", "peak", "k-extractable"], body
            )
        )
    if "mia_vs_did" in have:
        agree = agreement(frame(con, "select * from mia_vs_did"))
        body = [
            [r["model"], r["attack"], r["cells"], num(f"cross.{r['model']}.{r['attack']}.rho", r["spearman"])]
            for r in agree.iter_rows(named=True)
        ]
        parts.append(
            "<h3>Do the attacks see what the DiD sees?</h3><p>Per (checkpoint, cohort) cell: each attack's "
            "AUC of the cohort's rows against the never-trained rows, against the DiD's memorisation of the "
            "same cell; the Spearman correlation over the cells.</p>"
            + table(["model", "attack", "cells", "Spearman ρ (AUC, DiD)"], body)
        )
    if {"mitigation_by_category", "mitigation_best_runs"} <= have:
        best = frame(con, BEST_BY_CATEGORY)
        if not best.is_empty():
            body = [[r["study"], r["method"], r["category"], r["n_forget"], f"{r['removed_share']:.0%}"]
                    for r in best.sort("study", "method", "category").iter_rows(named=True)]  # fmt: skip
            parts.append(
                "<h3>What each unlearning method removes</h3><p>The forget rows of each suite study by "
                "taxonomy category, and the share each method's best run no longer reproduces; the "
                "retrain oracle, which never trained on them, is the bar: what it still reproduces is "
                "not memorised.</p>" + table(["study", "method", "category", "forget rows", "removed"], body)
            )
    if not parts:
        return "<p class=muted>No cross-analyses yet: run <code>memlake cross</code>.</p>"
    return "\n".join(parts)
