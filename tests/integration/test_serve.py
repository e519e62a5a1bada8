"""`memlake serve` over HTTP, on the tiny demo's warehouse: the contract (healthz, instance pages,
the SQL API), what every page shows against the marts, the console's fences, 404s that name what
was not found, and a server that keeps answering through a concurrent `dbt build`."""

import csv
import io
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse

import duckdb
import pytest

from analysis.interactive import plain
from analysis.views import SQL_VIEWS
from memlake.core import query
from memlake.core.paths import Warehouse
from memlake.serve.store import Refused, checked_statement
from tests.helpers import Served


@pytest.fixture(scope="module")
def served(tiny_demo):
    wh, _ = tiny_demo
    server = Served(wh)
    yield wh, server
    server.close()


def sql(wh, q: str, params=None) -> list[tuple]:
    return query.read(wh, q, params, views=SQL_VIEWS).rows()


def api(server, q: str) -> tuple[int, dict]:
    status, body = server.get("/api/sql?q=" + urllib.parse.quote(q))
    return status, json.loads(body)


def test_starts_on_localhost_and_says_so(served):
    wh, server = served
    assert "http://127.0.0.1:" in server.banner and "this machine only" in server.banner
    status, body = server.get("/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok", "warehouse": str(wh.root)}


def test_another_host_is_said_when_it_starts(tiny_demo):
    wh, _ = tiny_demo
    server = Served(wh, host="0.0.0.0")
    try:
        assert "listening on 0.0.0.0 (every network interface" in server.banner
        assert server.get("/healthz")[0] == 200
    finally:
        server.close()


def test_a_port_in_use_is_one_line(served):
    wh, server = served
    cmd = [sys.executable, "-c", "from memlake.cli import main; main()", "serve", "-w", str(wh.root),
           "--port", str(server.port)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert f"error: cannot listen on 127.0.0.1:{server.port} (Address already in use)" in out.stderr
    assert "Traceback" not in out.stderr and "memlake serve: http" not in out.stderr
    assert server.get("/healthz")[0] == 200  # the running one is untouched


def test_sql_api_returns_what_the_query_layer_returns(served):
    wh, server = served
    q = "select model, step, count(*) as n, avg(sup_seq) as s from sequence_panel group by all order by all"
    status, body = api(server, q)
    assert status == 200 and body["columns"] == ["model", "step", "n", "s"]
    assert body["rows"] == [list(r) for r in sql(wh, q)]  # JSON floats round-trip exactly
    assert body["truncated"] is False
    status, text = server.get("/api/sql.csv?q=" + urllib.parse.quote(q))
    rows = list(csv.reader(io.StringIO(text)))
    assert status == 200 and rows[0] == ["model", "step", "n", "s"] and len(rows) == len(body["rows"]) + 1
    # a CSV larger than one streamed batch arrives whole and in order
    status, text = server.get("/api/sql.csv?q=" + urllib.parse.quote("select range as i from range(25000)"))
    assert status == 200 and text.splitlines() == ["i", *map(str, range(25000))]
    # a read of a warehouse file through a table function is a read inside the fence
    mart = wh.marts / "sequence_panel.parquet"
    status, body = api(server, f"select count(*) from read_parquet('{mart}')")
    assert status == 200 and body["rows"] == [[sql(wh, "select count(*) from sequence_panel")[0][0]]]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("select 1; select 2", "one statement at a time: 2 were given"),
        ("copy (select 1) to 'out.csv'", "COPY statements are not allowed"),
        ("attach 'other.duckdb'", "ATTACH statements are not allowed"),
        ("install httpfs", "statements are not allowed"),
        ("load httpfs", "statements are not allowed"),
        ("set enable_external_access = true", "SET statements are not allowed"),
        ("pragma version", "statements are not allowed"),
        ("create table t as select 1", "CREATE statements are not allowed"),
        ("select * from read_csv('/etc/passwd')", "reads outside the warehouse are refused"),
        ("select * from read_text('{root}/../../etc/hostname')", "reads outside the warehouse are refused"),
        ("select * from glob('/*')", "reads outside the warehouse are refused"),
        ("select * from nowhere", "Table with name nowhere does not exist"),
        ("selec 1", "SQL does not parse"),
        ("", "no SQL statement given"),
    ],
)
def test_console_refuses_everything_but_one_read_only_statement(served, statement, message):
    wh, server = served
    status, body = api(server, statement.format(root=wh.root))
    assert status == 400, body
    assert message in body["error"] and "\n" not in body["error"]


def test_statement_check_on_its_own():
    con = duckdb.connect()
    assert checked_statement(con, "  select 42  ").strip() == "select 42"
    assert checked_statement(con, "explain select 1").startswith("explain")
    with pytest.raises(Refused, match="DELETE statements are not allowed"):
        checked_statement(con, "delete from t")
    with pytest.raises(Refused, match="one statement at a time"):
        checked_statement(con, "select 1; attach 'x.db'")


def test_instance_page_shows_the_lake_rows(served):
    wh, server = served
    ((iid, cohort, split),) = sql(
        wh,
        "select instance_id, cohort, split from instances "
        "where instance_id in (select instance_id from sequence_panel) "
        "and split = 'train' order by instance_id limit 1",
    )
    status, page = server.get(f"/instance/{iid}")
    assert status == 200 and f"<h1>Instance {iid}</h1>" in page
    assert f'data-key="cohort">{cohort}<' in page and f'data-key="split">{split}<' in page
    view = json.loads(
        re.search(r'<script type="application/json" id=view>(.*?)</script>', page, re.S).group(1)
    )
    (tokens,) = sql(wh, "select tokens from instances where instance_id = $id", {"id": iid})[0]
    assert view["tokens"] == tokens and len(view["pieces"]) == len(tokens)
    model, step = view["model"], view["step"]
    (surprisal,) = sql(
        wh,
        "select surprisal from token_stats where model = $m and step = $s and instance_id = $i",
        {"m": model, "s": step, "i": iid},
    )[0]
    assert view["at"]["values"]["surprisal"] == pytest.approx(surprisal)
    # the trajectory drawn is the sequence panel's, and the controls' mean beside it
    spec = plain(json.loads(re.search(r'id="trajectory-spec">(.*?)</script>', page, re.S).group(1)))
    own = sql(
        wh,
        "select step, sup_seq from sequence_panel where instance_id = $i and model = $m order by step",
        {"i": iid, "m": model},
    )
    assert spec["data"][0]["x"] == [s for s, _ in own] and spec["data"][0]["y"] == pytest.approx(
        [v for _, v in own]
    )
    ctrl = sql(
        wh,
        "select step, avg(sup_seq) from sequence_panel where never_treated and model = $m "
        "group by step order by step",
        {"m": model},
    )
    assert spec["data"][1]["y"] == pytest.approx([v for _, v in ctrl])
    # another checkpoint, through the API the slider calls
    first = view["steps"][0]
    status, body = server.get(f"/api/instance/{iid}/at?model={model}&step={first}")
    at = json.loads(body)
    (rank, ext) = sql(
        wh,
        "select t.rank, e.generated from token_stats t join extraction e using (model, step, instance_id) "
        "where model = $m and step = $s and instance_id = $i",
        {"m": model, "s": first, "i": iid},
    )[0]
    assert status == 200 and at["values"]["rank"] == rank and at["extraction"][0]["generated"] == ext


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/instance/987654321", 404, "instance 987654321 is not in the warehouse"),
        ("/instance/abc", 404, "instance &#39;abc&#39; is not in the warehouse"),
        ("/instance/{iid}?model=pythia-12b", 404, "model &#39;pythia-12b&#39; has not scored instance"),
        ("/instance/{iid}?step=7", 404, "step 7 is not a checkpoint of"),
        ("/instance/{iid}?metric=loss", 404, "metric &#39;loss&#39; is not one of"),
        ("/api/instance/{iid}/at?model=suite-s&step=7", 404, "step 7 is not a checkpoint of suite-s"),
        (
            "/api/instance/{iid}/at?model=nope&step=0",
            404,
            "model &#39;nope&#39; is not in the sequence panel",
        ),
        ("/profiles?model=pythia-12b", 404, "no profile fit with model=pythia-12b"),
        ("/panel?checkpoint=suite-s@7", 404, "checkpoint &#39;suite-s@7&#39; is not in the sequence panel"),
        ("/panel?feature=tokens", 404, "feature &#39;tokens&#39; is not a numeric column"),
        ("/panel?cohort=soon", 400, "parameter &#39;cohort&#39; must be an integer, not &#39;soon&#39;"),
        ("/no/such/page", 404, "no page at /no/such/page"),
    ],
)
def test_unknown_names_are_404_pages_that_name_them(served, path, status, message):
    wh, server = served
    iid = sql(wh, "select min(instance_id) from sequence_panel")[0][0]
    got, body = server.get(path.format(iid=iid))
    if path.startswith("/api/"):
        body = json.loads(body)["error"].replace("'", "&#39;")
    assert got == status and message in body, body[:500]
    assert "Traceback" not in body


def _count(page: str, key: str) -> int:
    return int(re.search(rf'data-key="{re.escape(key)}" data-value="(\d+)"', page).group(1))


def test_panel_counts_and_filters_equal_sql(served):
    wh, server = served
    model, step = sql(wh, "select model, max(step) from sequence_panel group by model order by model")[0]
    point = f"{model}@{step}"
    scored = (
        f"instance_id in (select instance_id from sequence_panel where model = '{model}' and step = {step})"
    )
    status, page = server.get(f"/panel?checkpoint={point}")
    assert status == 200
    assert _count(page, "total") == sql(wh, f"select count(*) from instances where {scored}")[0][0]
    for split, n in sql(wh, f"select split, count(*) from instances where {scored} group by split"):
        assert _count(page, f"split:{split}") == n
    _, page = server.get(f"/panel?checkpoint={point}&scored=false")
    assert _count(page, "total") == sql(wh, "select count(*) from instances")[0][0]
    # every filter at once: category at the checkpoint, cohort, split and a feature range
    cohort, category = sql(
        wh,
        f"select i.cohort, t.category from instances i join taxonomy t using (instance_id) "
        f"where t.model = '{model}' and t.step = {step} and i.cohort is not null "
        "group by all order by count(*) desc limit 1",
    )[0]
    low = sql(wh, "select median(avg_frequency) from instance_features")[0][0]
    want = sql(
        wh,
        f"""select count(*) from instances i join taxonomy t using (instance_id)
                       join instance_features f using (instance_id)
                       where t.model = '{model}' and t.step = {step} and i.cohort = {cohort}
                       and t.category = '{category}' and i.split = 'train' and f.avg_frequency >= {low}
                       and i.{scored}""",
    )[0][0]
    q = urllib.parse.urlencode(
        {
            "checkpoint": point,
            "cohort": cohort,
            "category": category,
            "split": "train",
            "feature": "avg_frequency",
            "low": low,
        }
    )
    status, page = server.get(f"/panel?{q}")
    assert status == 200 and _count(page, "total") == want > 0
    # paging: 50 rows a page, in instance order, the last page holds the rest
    n = sql(wh, f"select count(*) from instances where {scored}")[0][0]
    _, last = server.get(f"/panel?checkpoint={point}&page={(n - 1) // 50}")
    ids = [int(i) for i in re.findall(r'<a href="/instance/(\d+)">', last)]
    assert (
        ids
        == [r[0] for r in sql(wh, f"select instance_id from instances where {scored} order by 1")][
            -len(ids) :
        ]
    )
    assert len(ids) == n - 50 * ((n - 1) // 50)


def test_profiles_and_mitigation_pages_draw_the_marts(served):
    wh, server = served
    status, page = server.get("/profiles?metric=sup_seq&units=single")
    assert status == 200
    spec = plain(json.loads(re.search(r'id="heatmap-spec">(.*?)</script>', page, re.S).group(1)))
    model = re.search(r'name="model"[^>]*>.*?<option selected>([^<]+)<', page, re.S).group(1)
    cells = sql(
        wh,
        "select cohort, step, memorisation, att, n_treated, n_control, coalesce(zero_not_in_cband, false) "
        "from profiles_attgt where model = $m and metric = 'sup_seq' and units = 'single' "
        "and design = 'none' and control_group = 'never_treated' and base_period = 'varying' and first_epoch",
        {"m": model},
    )
    assert _count(page, "cells") == len(cells)
    coloured, veil = spec["data"]
    ys, xs = coloured["y"], coloured["x"]
    for g, t, mem, att, nt, nc, sig in cells:
        i, j = ys.index(g), xs.index(t)
        assert coloured["z"][i][j] == pytest.approx(mem) and veil["z"][i][j] == (None if sig else 0.0)
        assert coloured["customdata"][i][j][0] == pytest.approx(att)
        assert coloured["customdata"][i][j][3:5] == [nt, nc]
    status, page = server.get("/mitigation")
    assert status == 200
    runs = sql(wh, "select study, run_id, mem_removed, acc_kept, destroyed from mitigation_pareto")
    drawn = {}
    for spec_text in re.findall(r'id="pareto-\d+-spec">(.*?)</script>', page, re.S):
        spec = plain(json.loads(spec_text))
        for trace in spec["data"]:
            for custom, x, y in zip(trace.get("customdata") or [], trace["x"], trace["y"]):
                drawn[(spec["layout"]["title"]["text"], custom[7])] = (x, y)
    assert len(drawn) == len(runs) > 0
    for study, run, mem, acc, _ in runs:
        x, y = drawn[(study, run)]
        assert (x is None and mem != mem) or x == pytest.approx(mem)
        assert y == pytest.approx(acc)


def test_survives_a_concurrent_dbt_build(tiny_demo, tmp_path):
    """`dbt build` rewrites every mart while the server answers: no request fails."""
    src, _ = tiny_demo
    wh = Warehouse.at(tmp_path / "wh")
    shutil.copytree(src.root, wh.root, ignore=shutil.ignore_patterns("report", "figures"))
    server = Served(wh)
    iid = sql(wh, "select min(instance_id) from sequence_panel")[0][0]
    paths = [
        "/panel",
        f"/instance/{iid}",
        "/profiles",
        "/mitigation",
        "/api/sql?q=" + urllib.parse.quote("select count(*) from sequence_panel"),
    ]
    failures, served_n = [], 0
    done = threading.Event()

    def hammer():
        nonlocal served_n
        while not done.is_set():
            for p in paths:
                status, body = server.get(p)
                served_n += 1
                if status != 200:
                    failures.append((p, status, body[:300]))

    worker = threading.Thread(target=hammer)
    try:
        worker.start()
        build = subprocess.run(
            [
                sys.executable,
                "-c",
                "from memlake.cli import main; main()",
                "build",
                "--warehouse",
                str(wh.root),
                "--quiet",
            ],
            capture_output=True,
            text=True,
        )
        time.sleep(1.0)  # and a moment after, on the rebuilt marts
    finally:
        done.set()
        worker.join()
        server.close()
    assert build.returncode == 0, build.stderr[-2000:]
    assert served_n > len(paths) and not failures, failures[:3]
