"""The demo's findings, checked on the demo's own outputs: `make demo` runs these after it.

Each test is one headline of the README's demo section, read from the marts of the `small`
warehouse that `memlake demo` writes ($MEMLAKE_DEMO_WAREHOUSE, else memlake's default). They are
marked `demo` and left out of `make test`, whose suite runs the same code on the tiny preset,
where the suite is too small to memorise in every category.
"""

from __future__ import annotations

import math
import os

import polars as pl
import pytest
import yaml

from analysis.mitigation import summary
from analysis.profiles import headline as profiles_headline
from analysis.taxonomy import data as taxonomy_data
from analysis.taxonomy import headline as taxonomy_headline
from analysis.views import SQL_VIEWS
from memlake.core import query
from memlake.core.paths import Warehouse

pytestmark = pytest.mark.demo

MIN_CELLS = 20  # memorised panel cells per taxonomy category
ALPHA = 0.05
STUDY_METHODS = 19
GRID_POINTS = 3


@pytest.fixture(scope="module")
def wh() -> Warehouse:
    w = Warehouse.at(os.environ.get("MEMLAKE_DEMO_WAREHOUSE"))  # else memlake's default warehouse
    root = w.root
    if not (w.root / "report" / "index.html").exists():
        pytest.fail(f"{root}: no finished demo (report/index.html missing); run `make demo` first")
    scale = yaml.safe_load((w.suite / "config.yaml").read_text()).get("scale")
    if scale != "small":
        pytest.fail(
            f"{root}: the demo's findings are stated for the small preset, this warehouse is {scale!r}"
        )
    return w


@pytest.fixture(scope="module")
def con(wh):
    return query.connect(wh, views=SQL_VIEWS)


@pytest.fixture(scope="module")
def profiles(con, wh):
    h = profiles_headline.profiles_headline(con, wh.suite / "config.yaml")
    assert h is not None, "no profile fit of natural single-exposure rows"
    return h


# --------------------------------------------------------------------------- profiles


def test_natural_rows_show_no_pre_trend(profiles):
    """The event-study placebo test of natural single-exposure rows, the one the report leads
    with, does not reject at 5 % for any model (its size at this panel's shape:
    bench/pretrend_size.py)."""
    tested = {m: p for u, m, t, _, p in profiles.pretrend if u == "single" and t == "wald_event"}
    assert len(tested) == len(profiles.models)
    assert all(p is not None and p >= ALPHA for p in tested.values()), tested


def test_profiles_correlate_across_sizes(profiles):
    assert profiles.correlation_holds(), profiles.correlation


def test_duplicated_rows_are_memorised_more(profiles):
    assert profiles.duplicated_holds(), profiles.duplicated


def test_persistent_memorisation_survives_violations_of_parallel_trends(profiles, wh):
    """HonestDiD on the average persistent memorisation (event times 0..4): it stays significant
    under post-training changes in the trend gap larger than the largest pre-training one
    (breakdown Mbar > 1) for every model, more so for the larger model, and the report says so."""
    assert set(profiles.honest) == set(profiles.models)
    for model, (method, breakdown, lo, hi, bound) in profiles.honest.items():
        assert method == "relative_magnitude"
        assert breakdown > 1, (model, breakdown)
        assert (hi < 0 or lo > 0) == (bound < breakdown), (model, lo, hi, bound)  # the set at Mbar = 2
    sizes = [profiles.honest[m][1] for m in profiles.models]  # smallest model first
    assert sizes == sorted(sizes), sizes
    page = (wh.root / "report" / "index.html").read_text()
    assert "Sensitivity to parallel trends (HonestDiD)" in page and "&lt;span" not in page


@pytest.mark.parametrize(
    "finding, verdict",
    [
        ("Instantaneous memorisation (t = g) tracks the learning rate", "lr_holds"),
        ("The larger model memorises more and longer", "size_holds"),
    ],
)
def test_the_report_says_whether_a_finding_reproduces(profiles, wh, finding, verdict):
    """Findings that may not reproduce at this scale: the report's words follow the numbers."""
    page = (wh.root / "report" / "index.html").read_text()
    sentence = page[page.index(finding) :]
    sentence = sentence[: sentence.index("</li>")]
    holds = getattr(profiles, verdict)()
    assert holds is not None
    assert ("does not reproduce" in sentence) is (not holds), sentence


# --------------------------------------------------------------------------- taxonomy


def test_every_category_is_memorised(con):
    """All three routes to memorisation occur: at least MIN_CELLS memorised (checkpoint, row)
    cells of the main model's training panel in each category."""
    model, _ = taxonomy_data.main_pair(con)
    cells = dict(
        query.frame(
            con,
            f"""select category, count(*) filter (where memorised) from ({taxonomy_data.rows_sql(con)})
                where model = $model and split = 'train' group by category""",
            {"model": model},
        ).iter_rows()
    )
    assert all(cells.get(c, 0) >= MIN_CELLS for c in taxonomy_headline.CATEGORIES), cells


def test_the_taxonomy_tests_compute(con):
    h = taxonomy_headline.taxonomy_headline(con)
    assert h.lrt is not None, h.lrt_note
    assert math.isfinite(h.lrt["p_value"]) and h.lrt["df"] > 0
    wald = query.frame(
        con,
        """select p_value from taxonomy_model_tests
           where model = $model and step = $step and test like 'wald%' and p_value is not null""",
        {"model": h.model, "step": h.step},
    )
    assert len(wald) and wald["p_value"].is_not_nan().all()
    assert sum(n >= taxonomy_headline.MIN_POSITIVES for n in h.counts.values()) >= 2, h.counts


def test_the_partition_search_ran(con):
    model, step = taxonomy_data.main_pair(con)
    n = query.frame(
        con,
        """select count(distinct candidate) as n, count(*) filter (where not skipped) as fitted
           from taxonomy_search where model = $model and step = $step""",
        {"model": model, "step": step},
    )
    assert n["n"][0] == 810 and n["fitted"][0] > 0


# --------------------------------------------------------------------------- mitigation


# --------------------------------------------------------------------------- ground truth


def _last_step_metrics(con):
    return query.frame(
        con,
        "select * from mia_metrics where auc is not null qualify step = max(step) over (partition by model)",
    )


def test_the_twin_oracle_separates_members_that_real_attacks_barely_see(con):
    """At each model's last checkpoint the twin-calibrated score nearly separates held-out rows
    from never-trained ones, far above the best attack a user can run (which sees only the model,
    or a reference trained on the same data)."""
    metrics = _last_step_metrics(con)
    for model in metrics["model"].unique():
        rows = {r["attack"]: r for r in metrics.filter(metrics["model"] == model).iter_rows(named=True)}
        real = max(r["auc"] for a, r in rows.items() if a not in ("twin", "blind"))
        assert rows["twin"]["auc"] > 0.9 and rows["twin"]["auc"] > real + 0.2, (model, rows["twin"], real)
        assert 0.5 < real < 0.8, (model, real)


def test_the_blind_baseline_is_at_chance(con):
    """Members and never-trained rows come from one distribution: text alone does not separate them,
    so the attacks' AUCs measure memory, not a distribution shift."""
    blind = _last_step_metrics(con).filter(pl.col("attack") == "blind")
    assert len(blind) == 2
    assert (blind["auc_lower"] < 0.5).all() and (blind["auc_upper"] > 0.5).all(), blind


def test_the_did_recovers_the_true_profile(con):
    """Against the twins' truth, the DiD's post-treatment cells of mean surprisal are unbiased to
    within a tenth of the effect and their 95 % intervals cover the truth at about the nominal rate."""
    rows = query.frame(
        con,
        "select * from did_validation where metric = 'sup_seq' and level = 'attgt' "
        "and control_group = 'never_treated'",
    )
    assert len(rows) == 2
    for r in rows.iter_rows(named=True):
        assert abs(r["bias"]) < 0.1 * r["mean_abs_truth"], r
        assert r["coverage_pointwise"] >= 0.9, r


@pytest.fixture(scope="module")
def tinymem(con):
    found = summary.findings(
        query.frame(con, "select * from mitigation_scored"),
        query.frame(con, "select * from mitigation_best_runs"),
    )
    studies = [f for f in found if f.tinymem]
    assert studies, "no TinyMem study"
    return studies[0]


def test_the_tinymem_base_learns_task_and_backdoor(tinymem):
    assert tinymem.base["mem"] >= 95.0 and tinymem.base["acc"] >= 95.0, tinymem.base


def test_every_method_runs_over_a_grid(tinymem):
    assert len(tinymem.points) == STUDY_METHODS
    assert min(tinymem.points.values()) >= GRID_POINTS, tinymem.points


def test_balanced_subnet_removes_the_backdoor_and_keeps_the_model(tinymem):
    """The mitigation paper's finding: BalancedSubnet removes >= 90 % of the backdoor while
    losing at most one point of clean accuracy."""
    assert tinymem.paper is not None
    assert summary._keeps_model(tinymem.paper), tinymem.paper
    assert tinymem.verdict in ("holds", "holds in part")


def test_destroyed_models_are_labelled_not_counted(tinymem, con):
    runs = query.frame(con, "select * from mitigation_scored where study = $s", {"s": tinymem.study})
    destroyed = runs.filter(runs["destroyed"])
    assert (destroyed["acc_after"] < destroyed["acc_before"] / 2).all()
    assert tinymem.winner is not None and not tinymem.winner["destroyed"]


# --------------------------------------------------------------------------- the retrain oracle


def _oracle(con, study: str) -> dict:
    rows = query.frame(con, "select * from mitigation_oracles where study = $s", {"s": study})
    assert len(rows) == 1, f"no retrain oracle of {study}"
    return rows.row(0, named=True)


def test_the_oracle_never_learns_the_backdoor(tinymem, con):
    """Trained without the memorised triggered rows, the oracle fires the backdoor on no held-out
    triggered row, and the unedited model's forget losses are wholly apart from the oracle's."""
    o = _oracle(con, tinymem.study)
    assert o["mem"] <= 5.0 and tinymem.base["mem"] >= 95.0, o
    assert o["base_ks_distance"] >= 0.95 and o["acc"] >= 95.0, o


def test_removing_the_backdoor_is_not_becoming_the_oracle(tinymem, con):
    """BalancedSubnet's runs that remove the whole backdoor leave forget losses as far from the
    oracle's as the unedited model's (they unlearn past it: the oracle still predicts a "2" where
    a digit 2 is plausible); fine-tuning on clean rows comes closest."""
    vs = query.frame(con, "select * from mitigation_vs_oracle where study = $s and not destroyed",
                     {"s": tinymem.study})  # fmt: skip
    subnet = vs.filter((pl.col("method") == "balanced_subnet") & (pl.col("mem_after") == 0))
    assert len(subnet) and (subnet["ks_distance"] >= 0.99).all(), subnet
    closest = vs.sort("oracle_rank").row(0, named=True)
    assert closest["method"] in ("ft_clean", "ft_both") and closest["ks_distance"] < 0.9, closest


def test_the_oracle_reproduces_near_duplicates_but_no_exact_duplicate(con):
    """suite-s's forget rows by planted artifact: a model that never trained on them reproduces
    none of the exact duplicates (memorised), but most fuzzy near-duplicates (learned from their
    near-copies): memorisation measured by extraction alone overstates what training on a row did."""
    rows = query.frame(
        con,
        """
        with f as (
            select unnest(forget_ids) as instance_id, unnest(forget_extracted) as reproduced
            from mitigation_oracles where study = 'suite-s'
        )
        select artifact, count(*) as n, avg(reproduced::int) as share
        from f join instances using (instance_id) group by artifact
        """,
    )
    by = {r["artifact"]: r for r in rows.iter_rows(named=True)}
    assert by["duplicate"]["n"] >= 5 and by["duplicate"]["share"] == 0.0, by
    assert by["fuzzy"]["n"] >= 10 and by["fuzzy"]["share"] >= 0.75, by


# --------------------------------------------------------------------------- cross-analyses


def test_every_category_has_a_profile_and_recitation_peaks_highest(con):
    from analysis.cross.headline import category_timing

    timing = category_timing(query.frame(con, "select * from profiles_by_category"), "sup_seq")
    for model in ("suite-s", "suite-xs"):
        rows = {r["category"]: r for r in timing.filter(pl.col("model") == model).iter_rows(named=True)}
        assert set(rows) == {"recitation", "reconstruction", "recollection"}, rows
        assert all(r["from"] == 0 for r in rows.values()), rows  # memorised from the first checkpoint on
        assert rows["recitation"]["peak"] > max(rows[c]["peak"] for c in ("reconstruction", "recollection"))


def test_likelihood_attacks_follow_the_did_and_the_blind_baseline_does_not(con):
    from analysis.cross.mia_vs_did import agreement

    agree = agreement(query.frame(con, "select * from mia_vs_did"))
    rho = {(r["model"], r["attack"]): r["spearman"] for r in agree.iter_rows(named=True)}
    for model in ("suite-s", "suite-xs"):
        assert rho[model, "min_k"] >= 0.8 and rho[model, "loss"] >= 0.6, rho
        assert abs(rho[model, "blind"]) < 0.5, rho
