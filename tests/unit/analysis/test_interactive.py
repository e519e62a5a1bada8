"""The interactive figures the report and `memlake serve` share: what they draw is the data given,
cell by cell and run by run, and it reads back from the page as plain numbers."""

import json
import re

import duckdb
import numpy as np
import polars as pl
import pytest

from analysis.interactive import clean, fragment, plain
from analysis.mitigation.interactive import pareto
from analysis.profiles.interactive import attgt_heatmap, fit_heatmaps, trajectory


def cells(seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(g, t) for g in (10, 20, 30) for t in (10, 20, 30, 40)]
    att = rng.normal(size=len(rows))
    return pl.DataFrame(
        {
            "cohort": [g for g, _ in rows],
            "step": [t for _, t in rows],
            "event_time": [(t - g) // 10 for g, t in rows],
            "att": att,
            "ci_lower": att - 0.5,
            "ci_upper": att + 0.5,
            "n_treated": [5 + g // 10 for g, _ in rows],
            "n_control": [7] * len(rows),
            "memorisation": -att,
            "zero_not_in_cband": np.abs(att) > 0.5,
        }
    ).filter(~((pl.col("cohort") == 30) & (pl.col("step") == 10)))  # a cell the fit lacks


def read_back(html: str, div: str) -> dict:
    return plain(json.loads(re.search(rf'id="{div}-spec">(.*?)</script>', html, re.S).group(1)))


def test_heatmap_draws_every_cell_where_it_belongs():
    c = cells()
    html = fragment(attgt_heatmap(c, "sup_seq"), "h")
    assert '"bdata"' in html  # arrays travel packed (typed arrays in the browser)
    spec = read_back(html, "h")
    coloured, veil = spec["data"]
    assert coloured["y"] == [10, 20, 30] and coloured["x"] == [10, 20, 30, 40]
    for r in c.iter_rows(named=True):
        i, j = coloured["y"].index(r["cohort"]), coloured["x"].index(r["step"])
        assert coloured["z"][i][j] == pytest.approx(r["memorisation"])
        assert veil["z"][i][j] == (None if r["zero_not_in_cband"] else 0.0)  # grey over the rest
        assert coloured["customdata"][i][j] == pytest.approx(
            [r["att"], r["ci_lower"], r["ci_upper"], r["n_treated"], r["n_control"], r["event_time"]]
        )
    assert coloured["z"][2][0] is None and veil["z"][2][0] is None  # the missing cell stays empty
    sig = c.filter("zero_not_in_cband")["memorisation"].abs().max()
    assert coloured["zmax"] == pytest.approx(sig) and coloured["zmin"] == pytest.approx(-sig)
    assert "n treated %{customdata[3]}" in coloured["hovertemplate"] and veil["hoverinfo"] == "skip"


def test_fit_heatmaps_reads_one_fit_per_model():
    a = cells(0).with_columns(model=pl.lit("a"), metric=pl.lit("sup_seq"), units=pl.lit("single"))
    b = cells(1).with_columns(model=pl.lit("b"), metric=pl.lit("sup_seq"), units=pl.lit("single"))
    other = cells(2).with_columns(model=pl.lit("a"), metric=pl.lit("sup_seq"), units=pl.lit("noise"))
    con = duckdb.connect()
    con.register("attgt", pl.concat([a, b, other]).to_arrow())
    con.execute("create view profiles_attgt as select * from attgt")
    figs = fit_heatmaps(con, "sup_seq", {"units": "single"})
    assert list(figs) == ["a", "b"]
    z = plain(figs["b"].to_plotly_json())["data"][0]["customdata"]
    assert z[0][0][0] == pytest.approx(b["att"][0])
    assert fit_heatmaps(duckdb.connect(), "sup_seq", {"units": "single"}) == {}


def runs() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "study": ["s"] * 5 + ["t"],
            "run_id": ["r1", "r2", "r3", "r4", "r5", "r6"],
            "method": ["ga", "ga", "bs", "ft", "ft", "ga"],
            "kind": ["baseline", "baseline", "weight", "fine_tuning", "fine_tuning", "baseline"],
            "hparams": ['{"lr": 1}', '{"lr": 2}', '{"ratio": 0.3}', '{"epochs": 3}', '{"epochs": 4}', "{}"],
            "mem_removed": [90.0, 50.0, 80.0, 20.0, 60.0, float("nan")],
            "acc_kept": [10.0, 90.0, 95.0, 99.0, 70.0, 100.0],
            "ppl_after": [9.0, 3.0, 3.1, 2.9, 3.3, 3.0],
            "seconds": [1.0, 1.0, 2.0, 0.5, 0.6, 1.0],
            "destroyed": [True, False, False, False, False, False],
            "on_front": [False, False, True, True, False, False],
        }
    )


def test_pareto_draws_each_run_once_with_its_numbers():
    spec = plain(pareto(runs(), "s").to_plotly_json())
    points = {}
    for trace in spec["data"]:
        for custom, x, y in zip(trace.get("customdata") or [], trace["x"], trace["y"]):
            points[custom[7]] = (trace["name"], custom[0], custom[2], x, y)
    assert points == {
        "r1": ("model destroyed (acc < 50 % kept)", "ga", '{"lr": 1}', 90.0, 10.0),
        "r2": ("ga", "ga", '{"lr": 2}', 50.0, 90.0),
        "r3": ("bs", "bs", '{"ratio": 0.3}', 80.0, 95.0),
        "r4": ("ft", "ft", '{"epochs": 3}', 20.0, 99.0),
        "r5": ("ft", "ft", '{"epochs": 4}', 60.0, 70.0),
    }
    front = next(t for t in spec["data"] if t["name"] == "Pareto front")
    assert front["x"] == [20.0, 80.0] and front["y"] == [99.0, 95.0]
    assert not spec["layout"].get("annotations")
    empty = plain(pareto(runs(), "t").to_plotly_json())
    assert "nothing memorised" in empty["layout"]["annotations"][0]["text"]


def test_trajectory_marks_the_cohort():
    own = pl.DataFrame({"step": [0, 10, 20], "value": [5.0, 4.0, 3.0]})
    ctrl = pl.DataFrame({"step": [0, 10, 20], "value": [5.0, 4.8, 4.7]})
    spec = plain(trajectory(own, ctrl, "sup_seq", 10).to_plotly_json())
    assert spec["data"][0]["y"] == [5.0, 4.0, 3.0] and spec["data"][1]["y"] == [5.0, 4.8, 4.7]
    assert spec["layout"]["shapes"][0]["x0"] == 10
    assert not plain(trajectory(own, ctrl, "sup_seq", None).to_plotly_json())["layout"].get("shapes")


def test_fragment_is_json_safe_and_never_closes_its_script_early():
    fig = attgt_heatmap(cells().with_columns(att=pl.lit(float("nan"))), "sup_seq", "a </script> title")
    html = fragment(fig, "x")
    assert "NaN" not in html and html.count("</script>") == 2
    assert clean({"a": [float("nan"), 1.0, float("inf")]}) == {"a": [None, 1.0, None]}
    assert read_back(html, "x")["layout"]["title"]["text"] == "a </script> title"
