"""The report's ground-truth section: the DiD against the twins' truth and the membership-inference
table with its blind baseline, from the marts a connection sees."""

from __future__ import annotations

from analysis.page import num, table
from memlake.core import query

DID_INTRO = (
    "<p>Each twin trained on the same data order with a seeded half of the panel's natural training "
    "rows replaced, so the effect of training on those rows is known: the mean over a cohort of the "
    "model's metric minus the twin's. The DiD estimates the same cells from the model's panel alone. "
    "Rows: post-treatment cells (<i>attgt</i>) and event-time keys e &ge; 0 (<i>event</i>); coverage "
    "of the pointwise 95 % intervals, and whether the uniform band covers every truth. <i>Control "
    "shift</i>: the never-trained rows' metric under the model minus under its twin, a shift that "
    "training on the held-out rows rather than the fillers caused in rows neither saw (interference); "
    "the twin truth contains it, the DiD differences it out.</p>"
)
MIA_INTRO = (
    "<p>Members: natural training rows trained by the checkpoint; non-members: never-trained rows "
    "(the twin attack: the twin's held-out rows against never-trained rows). AUC with its bootstrap "
    "95 % interval and TPR at low FPR, at each model's last checkpoint. The <i>blind</i> baseline "
    "sees only the text: an AUC above 0.5 there means members and non-members differ in distribution, "
    "and the attacks' AUCs measure that shift too.</p>"
)


def did_validation_html(con) -> str:
    if "did_validation" not in query.view_names(con):
        return (
            "<p class=muted>No twins validated yet: <code>memlake suite train --twins</code>, "
            "then <code>memlake profiles validate</code>.</p>"
        )
    rows = con.execute(
        "select model, metric, control_group, level, cells, bias, mean_abs_truth, control_shift, rmse, "
        "coverage_pointwise, coverage_uniform from did_validation order by all"
    ).fetchall()
    fmts = {"bias": "+.4f", "scale": ".4f", "shift": "+.4f", "rmse": ".4f", "coverage": ".0%"}
    body = [
        (*r[:5], *_numbers("did_validation/" + "/".join(r[:4]), dict(zip(fmts, r[5:10])), fmts),
         "n/a" if r[10] is None else ("covers all" if r[10] else "misses some"))
        for r in rows
    ]  # fmt: skip
    columns = [
        "model",
        "metric",
        "controls",
        "level",
        "cells",
        "bias",
        "mean |truth|",
        "control shift",
        "RMSE",
    ]
    columns.append("coverage")
    columns.append("band")
    out = ["<h3>Is the DiD right? Against the twins' truth</h3>", DID_INTRO, table(columns, body)]
    where = con.execute(
        "select model, event_time, count(*), avg(att_did - att_true), avg(abs(att_true)) "
        "from counterfactual_attgt where post and metric = 'sup_seq' and control_group = 'never_treated' "
        "group by all order by all"
    ).fetchall()
    if where:
        out.append("<p>Where the bias lies (sup_seq, never-treated controls), by steps since treatment:</p>")
        out.append(table(["model", "event time (steps)", "cells", "bias", "mean |truth|"], where))
    return "\n".join(out)


def mia_html(con) -> str:
    if "mia_metrics" not in query.view_names(con):
        return "<p class=muted>No membership inference yet: run <code>memlake mia</code>.</p>"
    rows = con.execute(
        "select model, step, attack, auc, auc_lower, auc_upper, tpr_at_1pct, tpr_at_01pct, n_members, "
        "n_nonmembers from mia_metrics where auc is not null "
        "qualify step = max(step) over (partition by model) order by model, attack"
    ).fetchall()
    fmts = dict.fromkeys(("auc", "auc_lower", "auc_upper", "tpr_1", "tpr_01"), ".3f")
    body = [
        (*r[:3], *_numbers(f"mia/{r[0]}/{r[1]}/{r[2]}", dict(zip(fmts, r[3:8])), fmts), *r[8:]) for r in rows
    ]
    columns = ["model", "step", "attack", "AUC", "95 % low", "95 % high", "TPR@1%FPR", "TPR@0.1%FPR"]
    columns += ["members", "non-members"]
    return "\n".join(["<h3>Membership inference</h3>", MIA_INTRO, table(columns, body)])


def _numbers(key: str, values: dict, fmts: dict) -> list:
    """Headline numbers with their keys (`analysis.page.num`), so a test can read them back."""
    return [num(f"{key}/{name}", value, fmts[name]) for name, value in values.items()]
