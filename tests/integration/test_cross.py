"""The cross-analyses on the tiny demo's warehouse, each against a direct computation: a category's
event-time DiD from its 2x2 comparisons, a cell's attack AUC from the scores, and the figures and
report section. `mitigation_by_category` has a dbt unit test (models/marts/_marts__models.yml)."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from analysis.views import SQL_VIEWS
from memlake.core import query


def sql(wh, text: str, params: dict | None = None) -> pl.DataFrame:
    return query.read(wh, text, params, views=SQL_VIEWS)


def test_the_demo_runs_the_cross_analyses(tiny_demo):
    wh, log = tiny_demo
    assert re.search(r"\[(\d+)/\1\] cross-analyses: profiles_by_category \d+ rows, mia_vs_did \d+ rows", log)
    assert {p.name for p in (wh.figures / "cross").glob("*.png")} >= {
        "profiles_by_category.png",
        "mia_vs_did.png",
    }
    text = (wh.root / "report" / "index.html").read_text()
    assert "<h2>Cross-analyses</h2>" in text and "Do the attacks see what the DiD sees?" in text


def test_a_categorys_event_time_att_is_its_cohorts_two_by_two_comparisons(tiny_demo):
    """At event time 0 with never-treated controls, the aggregation is the cohort-size weighted
    mean over cohorts g of [mean(Y_g - Y_{g-1}) of g's rows of the category] - [the same mean
    over the never-trained rows], over first-epoch cohorts with a period before them."""
    wh, _ = tiny_demo
    rows = sql(wh, "select * from profiles_by_category where model = 'suite-s' and metric = 'sup_seq'")
    assert set(rows["category"]) == {"recitation", "reconstruction", "recollection"}  # not one class
    cat = "reconstruction"
    want = rows.filter((pl.col("category") == cat) & (pl.col("event_time") == 0))["att"].item()
    last = sql(wh, "select max(step) as s from taxonomy where model = 'suite-s'")["s"].item()
    ids = sql(wh, "select instance_id from taxonomy where model = 'suite-s' and step = $s and category = $c",
              {"s": last, "c": cat})["instance_id"]  # fmt: skip
    columns = "instance_id, step, cohort, never_treated, sup_seq, first_epoch"
    panel = sql(wh, f"select {columns} from sequence_panel where model = 'suite-s'")
    epoch = panel.filter(pl.col("first_epoch"))["step"].max()
    steps = sorted(panel.filter(pl.col("step") <= epoch)["step"].unique())
    wide = panel.pivot(on="step", index=["instance_id", "cohort", "never_treated"], values="sup_seq")
    controls = wide.filter(pl.col("never_treated"))
    treated = wide.filter(~pl.col("never_treated") & pl.col("instance_id").is_in(ids.implode()))
    effects, sizes = [], []
    for before, g in zip(steps, steps[1:], strict=False):
        group = treated.filter(pl.col("cohort") == g)
        if len(group):
            diff = (group[str(g)] - group[str(before)]).mean() - (
                controls[str(g)] - controls[str(before)]
            ).mean()
            effects.append(diff)
            sizes.append(len(group))
    assert len(effects) >= 2
    assert want == pytest.approx(np.average(effects, weights=sizes), rel=1e-9, abs=1e-12)


def test_a_cells_attack_auc_and_did_come_from_the_scores_and_the_profile(tiny_demo):
    wh, _ = tiny_demo
    cells = sql(
        wh, "select * from mia_vs_did where model = 'suite-s' and attack = 'loss' order by step desc, cohort"
    )
    cell = cells.row(0, named=True)
    scores = sql(
        wh,
        "select s.score, s.member, i.cohort from mia_scores s join instances i using (instance_id) "
        "where s.model = 'suite-s' and s.attack = 'loss' and s.step = $t and s.member is not null",
        {"t": cell["step"]},
    )
    pick = scores.filter(~pl.col("member") | (pl.col("cohort") == cell["cohort"]))
    assert cell["n_members"] == pick["member"].sum() and cell["n_nonmembers"] == (~pick["member"]).sum()
    assert cell["auc"] == pytest.approx(roc_auc_score(pick["member"], pick["score"]))
    did = sql(
        wh,
        "select memorisation from profiles_attgt where model = 'suite-s' and metric = 'sup_seq' and "
        "units = 'single' and control_group = 'never_treated' and base_period = 'varying' and first_epoch "
        "and cohort = $g and step = $t",
        {"g": cell["cohort"], "t": cell["step"]},
    )
    assert cell["memorisation"] == pytest.approx(did["memorisation"].item())
    attacks = set(cells["attack"]) | set(sql(wh, "select distinct attack from mia_vs_did")["attack"])
    assert {"loss", "min_k", "reference", "blind"} <= attacks
