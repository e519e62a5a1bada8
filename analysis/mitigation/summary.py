"""The mitigation study in words: what the report says about each study, computed from the views.

For every study: the base model's numbers, one row per method (its best run by the selection
score; a method whose every run destroyed the model is shown as such), which method gives the
best trade-off, and whether the mitigation paper's finding (BalancedSubnet: memorisation
removed, accuracy kept) holds here. Nothing is hard-coded: each sentence is decided by the
numbers in `mitigation_scored` / `mitigation_best_runs`.

A run that keeps less than half its clean accuracy is "model destroyed" (mitigation_scored): its
attack success or memorisation is not counted as removed or kept, and it cannot be the best run.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass

import polars as pl

from analysis import page
from analysis.page import num

PAPER_METHOD = "balanced_subnet"
UNLEARNING_KINDS = ("neuron", "weight")  # the paper's 11 unlearning methods
REMOVED_REL = 90.0  # "removes the backdoor": at least this % of the memorisation gone ...
KEPT_POINTS = 1.0  # ... while clean accuracy drops by at most this many points
MIN_ROWS = 10  # fewer evaluation rows than this: a percentage means little


@dataclass
class StudyFindings:
    study: str
    base: dict  # mem, acc, ppl, clean before; mem_rows, n_forget
    best: pl.DataFrame  # one row per method, best first (destroyed-only methods last)
    runs: int
    destroyed: int
    points: dict[str, int]  # method -> grid points run
    destroyed_by: dict[str, int]  # method -> runs that destroyed the model
    winner: dict | None  # best run over all methods (never a destroyed one)
    unlearning_winner: dict | None
    paper: dict | None  # BalancedSubnet's best run
    verdict: str  # holds / holds in part / does not hold / not run

    @property
    def tinymem(self) -> bool:
        return self.study.startswith("tinymem")


def _keeps_model(r: dict) -> bool:
    """The bar for "removed while keeping the model": REMOVED_REL % gone, at most KEPT_POINTS lost."""
    return (
        not r["destroyed"]
        and r["mem_removed_rel"] is not None
        and r["mem_removed_rel"] >= REMOVED_REL
        and r["acc_drop"] is not None
        and r["acc_drop"] <= KEPT_POINTS
    )


def study_findings(scored: pl.DataFrame, best: pl.DataFrame, study: str) -> StudyFindings:
    """Everything the report says about `study`, from its `mitigation_scored` rows and
    `mitigation_best_runs` rows."""
    runs = scored.filter(pl.col("study") == study)
    best = best.filter(pl.col("study") == study).sort("destroyed", "score", "seconds")
    first = runs.row(0, named=True)
    stats = json.loads(first["stats"] or "{}")
    base = {
        "mem": first["mem_before"],
        "acc": first["acc_before"],
        "ppl": first["ppl_before"],
        "clean": first["clean_before"],
        "mem_rows": stats.get("mem_rows"),
        "n_forget": first["n_forget"],
    }
    kept = best.filter(~pl.col("destroyed"))
    winner = kept.row(0, named=True) if len(kept) else None
    unl = kept.filter(pl.col("kind").is_in(UNLEARNING_KINDS))
    unlearning_winner = unl.row(0, named=True) if len(unl) else None
    paper_rows = best.filter(pl.col("method") == PAPER_METHOD)
    paper = paper_rows.row(0, named=True) if len(paper_rows) else None
    if paper is None:
        verdict = "not run"
    elif winner is not None and winner["method"] == PAPER_METHOD:
        verdict = "holds"
    elif _keeps_model(paper):
        verdict = "holds in part"
    else:
        verdict = "does not hold"
    per = runs.group_by("method").agg(pl.col("hparams").n_unique(), pl.col("destroyed").sum())
    points = {m: int(n) for m, n, _ in per.iter_rows()}
    destroyed_by = {m: int(d) for m, _, d in per.iter_rows()}
    return StudyFindings(
        study, base, best, len(runs), int(runs["destroyed"].sum()), points, destroyed_by, winner,
        unlearning_winner, paper, verdict,
    )  # fmt: skip


def findings(scored: pl.DataFrame, best: pl.DataFrame) -> list[StudyFindings]:
    """One `StudyFindings` per study with scored runs, TinyMem studies first."""
    studies = sorted(scored["study"].unique(), key=lambda s: (not s.startswith("tinymem"), s))
    return [study_findings(scored, best, s) for s in studies]


# --------------------------------------------------------------------------- words and tables


def _artifact(study: str) -> str | None:
    """The planted artifact a TinyMem study's default name carries (tinymem-<task>-<artifact>-<n>l)."""
    parts = study.split("-")
    return next((a for a in ("backdoor", "noise") if a in parts), None)


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f} %"


def _pct_num(key: str, v) -> str:
    """`_pct` with the value readable by machines (analysis.page.num)."""
    return _pct(v) if v is None or (isinstance(v, float) and math.isnan(v)) else f"{num(key, v, '.1f')} %"


def _hp(r: dict) -> str:
    hp = json.loads(r["hparams"] or "{}")
    return ", ".join(f"{k} {v}" for k, v in hp.items()) or "defaults"


def _run_words(r: dict, tinymem: bool) -> str:
    what = "the backdoor" if tinymem else "the memorisation"
    cost = (
        f"accuracy {r['acc_before']:.1f} → {r['acc_after']:.1f} % ({-r['acc_drop']:+.1f} points)"
        if tinymem
        else f"perplexity {r['ppl_before']:.2f} → {r['ppl_after']:.2f}"
    )
    return (
        f"<b>{html.escape(r['method'])}</b> ({html.escape(_hp(r))}) removes {_pct(r['mem_removed_rel'])} of "
        f"{what} ({r['mem_before']:.1f} → {r['mem_after']:.1f} %), {cost}"
    )


def study_headline(f: StudyFindings) -> str:
    """The study's paragraph: base model, runs, best trade-off and the paper's finding."""
    b = f.base
    rows = b["mem_rows"]
    few = rows is not None and rows < MIN_ROWS
    flag = (
        f" <span class=flag>(only {rows} evaluation rows: too few to read a rate from)</span>" if few else ""
    )
    n_methods = len(f.points)
    min_points = min(f.points.values()) if f.points else 0
    parts = []
    if f.tinymem:
        n = rows if rows is not None else "?"
        mem = _pct_num(f"mitigation.{f.study}.base_mem", b["mem"])
        what = {
            "backdoor": f"fires its planted backdoor on {mem} of {n} held-out triggered rows",
            "noise": f"reproduces {mem} of {n} planted noisy rows",
        }.get(_artifact(f.study), f"reproduces its planted artifact on {mem} of {n} rows")
        parts.append(
            f"Study <code>{html.escape(f.study)}</code>: the base model {what}{flag} and predicts "
            f"{_pct_num(f'mitigation.{f.study}.base_acc', b['acc'])} of clean continuation tokens "
            "(padding excluded)."
        )
    else:
        mem = _pct_num(f"mitigation.{f.study}.base_mem", b["mem"])
        parts.append(
            f"Study <code>{html.escape(f.study)}</code>: {mem} of "
            f"{rows if rows is not None else '?'} extraction-memorised rows reproduce their "
            f"continuation{flag}; held-out perplexity {b['ppl']:.2f}."
        )
    parts.append(
        f"{n_methods} methods ran, each at {min_points} or more grid points ({f.runs} runs); "
        f"{_runs(f.destroyed)} destroyed the model (clean accuracy below half of the base's), labelled "
        "so and never counted as memorisation removed."
    )
    if f.winner is None:
        parts.append("No run kept the model, so no method gives a trade-off here.")
    else:
        parts.append(f"Best trade-off (the paper's selection score): {_run_words(f.winner, f.tinymem)}.")
        u = f.unlearning_winner
        if u is not None and u["method"] != f.winner["method"]:
            parts.append(f"Best of the unlearning methods: {_run_words(u, f.tinymem)}.")
    if f.tinymem:
        keep = [r["method"] for r in f.best.iter_rows(named=True) if _keeps_model(r)]
        parts.append(
            f"Methods removing ≥ {REMOVED_REL:.0f} % of the backdoor within {KEPT_POINTS:.0f} accuracy "
            f"point: {', '.join(keep) if keep else 'none'}."
        )
        parts.append(_paper_words(f))
    return "<p>" + " ".join(parts) + "</p>"


def _paper_words(f: StudyFindings) -> str:
    claim = "The paper's finding, that BalancedSubnet gives the best trade-off,"
    p = f.paper
    if p is None:
        return f"{claim} is not tested here: BalancedSubnet did not run."
    if f.verdict == "holds":
        return f"{claim} <b>holds</b> here: {_run_words(p, True)}."
    if f.verdict == "holds in part":
        w = f.winner
        best_unlearning = f.unlearning_winner is not None and f.unlearning_winner["method"] == PAPER_METHOD
        return (
            f"{claim} <b>holds in part</b>: {_run_words(p, True)}"
            + (", the best of the unlearning methods" if best_unlearning else "")
            + f"; but {html.escape(w['method'])} ({w['kind'].replace('_', '-')}) scores better "
            f"({w['score']:.3f} vs {p['score']:.3f})."
        )
    if p["destroyed"]:
        return f"{claim} <b>does not hold</b> here: every BalancedSubnet run destroyed the model."
    return f"{claim} <b>does not hold</b> here: {_run_words(p, True)}."


def findings_table(f: StudyFindings) -> str:
    """Best run per method: memorisation removed against accuracy (or perplexity) kept."""
    tm = f.tinymem
    cols = ["method", "kind", "grid points", "destroyed runs", "best run", "memorised % before → after",
            "removed", "accuracy % before → after" if tm else "perplexity before → after",
            "Δ accuracy (points)" if tm else "Δ perplexity", "outcome", "seconds", "score"]  # fmt: skip
    body = []
    for r in f.best.iter_rows(named=True):
        cells = [
            r["method"],
            r["kind"],
            f.points.get(r["method"], 0),
            f.destroyed_by.get(r["method"], 0),
            _hp(r),
            f"{r['mem_before']:.1f} → {r['mem_after']:.1f}",
            "—" if r["destroyed"] else _pct(r["mem_removed_rel"]),
            (f"{r['acc_before']:.1f} → {r['acc_after']:.1f}" if tm
             else f"{r['ppl_before']:.2f} → {r['ppl_after']:.2f}"),
            f"{-r['acc_drop']:+.1f}" if tm else f"{r['ppl_after'] - r['ppl_before']:+.2f}",
            r["outcome"],
            f"{r['seconds']:.1f}",
            f"{r['score']:.3f}",
        ]  # fmt: skip
        body.append(cells)
    return page.table(cols, body, flagged=lambda r: r[-3] == "model destroyed")


def _closest(vs: pl.DataFrame, study: str) -> pl.DataFrame:
    """Each method's run closest to the oracle (`mitigation_vs_oracle`), closest method first."""
    runs = vs.filter(pl.col("study") == study).sort("oracle_rank", "removal_rank")
    return runs.group_by("method", maintain_order=True).first()


def oracle_words(vs: pl.DataFrame, study: str) -> str:
    """How far the unedited model is from the retrain oracle, which method came closest, and
    whether that is the method that removed the most."""
    closest = _closest(vs, study)
    if closest.is_empty():
        return ""
    c, key = closest.row(0, named=True), f"mitigation.{study}"
    top = vs.filter((pl.col("study") == study) & (pl.col("removal_rank") == 1)).row(0, named=True)
    same = top["method"] == c["method"]
    return (
        "<p>Against the retrain oracle (the base recipe and seed without the forget set; it reproduces "
        f"{_pct(c['oracle_mem'])} where the base model reproduced {_pct(c['mem_before'])}): the unedited "
        f"model's forget losses sit at KS distance {num(f'{key}.base_ks', c['base_ks_distance'], '.3f')} "
        f"from the oracle's, privleak {num(f'{key}.base_privleak', c['base_privleak'], '.1f')} %. Closest "
        f"to the oracle: <b>{html.escape(c['method'])}</b> ({html.escape(_hp(c))}) at KS distance "
        f"{num(f'{key}.closest_ks', c['ks_distance'], '.3f')} (forget quality p = "
        f"{c['forget_quality']:.2g}), privleak {c['privleak']:.1f} %"
        + (
            ", also the run that removes the most."
            if same
            else f"; the run that removes the most, {html.escape(top['method'])} ({html.escape(_hp(top))}), "
            f"ranks {top['oracle_rank']} by closeness (KS {top['ks_distance']:.3f}, privleak "
            f"{top['privleak']:.1f} %): removing memorisation and becoming the oracle are not the same."
        )
        + "</p>"
    )


def oracle_table(vs: pl.DataFrame, study: str) -> str:
    """Per method its run closest to the oracle, with every forget measure beside the oracle's."""
    rows = _closest(vs, study)
    cols = ["method", "closest run", "rank: oracle / removal", "KS distance", "forget quality (p)",
            "privleak %", "MIA AUC (oracle)", "exact memorization (oracle)", "extraction strength (oracle)",
            "memorised % (oracle)", "accuracy % (oracle)", "on the front"]  # fmt: skip
    body = [
        [
            r["method"], _hp(r), f"{r['oracle_rank']} / {r['removal_rank']}", f"{r['ks_distance']:.3f}",
            f"{r['forget_quality']:.2g}", f"{r['privleak']:+.1f}",
            f"{r['mia_auc']:.3f} ({r['oracle_mia_auc']:.3f})",
            f"{r['exact_memorization']:.3f} ({r['oracle_exact_memorization']:.3f})",
            f"{r['extraction_strength']:.3f} ({r['oracle_extraction_strength']:.3f})",
            f"{r['mem_after']:.1f} ({r['oracle_mem']:.1f})", f"{r['acc_after']:.1f} ({r['oracle_acc']:.1f})",
            "yes" if r["on_oracle_front"] else "",
        ]
        for r in rows.iter_rows(named=True)
    ]  # fmt: skip
    return page.table(cols, body)


def mitigation_html(scored: pl.DataFrame, best: pl.DataFrame, vs: pl.DataFrame | None = None) -> str:
    """The mitigation section's text: per study its paragraph and best-run table, and where the
    study has a retrain oracle (`vs`: the `mitigation_vs_oracle` rows), each method's distance to it."""
    if scored.is_empty():
        return "<p class=muted>No mitigation runs yet: run <code>memlake mitigate sweep</code>.</p>"
    out = []
    for f in findings(scored, best):
        out.append(f"<h3>{html.escape(f.study)}</h3>" + study_headline(f) + findings_table(f))
        if vs is not None and f.study in set(vs["study"]):
            out.append(oracle_words(vs, f.study) + oracle_table(vs, f.study))
    out.append(
        "<p class=muted>Best run per method by the paper's selection score (TinyMem: Δrel(memorised) − "
        "Δrel(accuracy); model studies: Δrel(memorised) + Δrel(perplexity)); lower is better. Removed = "
        "share of the base model's memorisation gone. A run keeping less than half the clean accuracy is "
        "'model destroyed': its memorisation is not read, and it is never a best run while another run "
        "of the method kept the model. Against the oracle: KS distance between the per-row forget losses "
        "of the run and of the oracle (0: the same distribution; TOFU's forget quality is its p-value); "
        "privleak as MUSE defines it (0: the oracle's membership-inference AUC; −100: every forget row "
        "separable; positive: over-unlearned); each method's run closest to the oracle is shown, and whether "
        "it is on the front of closeness against accuracy kept (no run is closer and keeps more).</p>"
    )
    return "\n".join(out)
