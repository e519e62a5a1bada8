"""`memlake serve` in a real browser: Playwright drives Debian's chromium through every page of the
tiny demo's warehouse, checks that what is drawn equals the marts, and saves a screenshot of each
page under test-artifacts/serve/ (the README's screenshots)."""

import shutil
from pathlib import Path

import pytest

from analysis.views import SQL_VIEWS
from memlake.core import query
from tests.helpers import Served

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "serve"
# this machine's closed network: no background connections; no sandbox as root
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser_page(tiny_demo):
    wh, _ = tiny_demo
    server = Served(wh)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # JavaScript errors, and failed loads but the console's refusals (a 400 is its answer)
        page.on(
            "console",
            lambda m: errors.append(m.text) if m.type == "error" and "status of 400" not in m.text else None,
        )
        yield wh, server, page, errors
        browser.close()
    server.close()


def sql(wh, q: str, params=None) -> list[tuple]:
    return query.read(wh, q, params, views=SQL_VIEWS).rows()


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert (SHOTS / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def number(page, key: str) -> float:
    return float(page.get_attribute(f'[data-key="{key}"]', "data-value"))


def test_panel_filters_and_pages(browser_page):
    wh, server, page, errors = browser_page
    page.goto(server.url + "/")
    assert page.url.endswith("/panel")
    point = page.input_value("select[name=checkpoint]")
    model, step = point.rsplit("@", 1)
    scored = (
        f"instance_id in (select instance_id from sequence_panel where model = '{model}' and step = {step})"
    )
    assert number(page, "total") == sql(wh, f"select count(*) from instances where {scored}")[0][0]
    shoot(page, "panel")
    # a filter set through the form
    page.select_option("select[name=split]", "validation")
    page.click("#apply")
    page.wait_for_load_state()
    n_val = sql(wh, f"select count(*) from instances where split = 'validation' and {scored}")[0][0]
    assert number(page, "total") == n_val and "split=validation" in page.url
    first = page.locator("#rows a").first
    iid = int(first.text_content())
    assert (
        iid
        == sql(wh, f"select min(instance_id) from instances where split = 'validation' and {scored}")[0][0]
    )
    first.click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/instance/{iid}")
    assert not errors, errors


def test_instance_view_follows_the_slider(browser_page):
    wh, server, page, errors = browser_page
    (iid,) = sql(
        wh,
        "select instance_id from instances join sequence_panel using (instance_id) "
        "where artifact = 'duplicate' order by instance_id limit 1",
    )[0]
    page.goto(f"{server.url}/instance/{iid}")
    page.wait_for_selector("#tokens span")
    (tokens,) = sql(wh, "select tokens from instances where instance_id = $i", {"i": iid})[0]
    spans = page.locator("#tokens span")
    assert spans.count() == len(tokens)
    model = page.input_value("select[name=model]")
    steps = [
        s
        for (s,) in sql(
            wh,
            "select step from sequence_panel where instance_id = $i and model = $m order by 1",
            {"i": iid, "m": model},
        )
    ]

    def values(attr: str = "data-value") -> list[float]:
        return [
            float(v)
            for v in page.eval_on_selector_all("#tokens span", f"s => s.map(x => x.getAttribute('{attr}'))")[
                1:
            ]
        ]

    def stats(step: int, column: str) -> list[float]:
        return sql(
            wh,
            f"select {column} from token_stats where model = $m and step = $s and instance_id = $i",
            {"m": model, "s": step, "i": iid},
        )[0][0]

    assert int(page.get_attribute("body", "data-step")) == steps[-1]
    assert values() == pytest.approx(stats(steps[-1], "surprisal"))
    shoot(page, "instance")
    # the slider to the first checkpoint: the page fetches that step and recolours
    page.eval_on_selector("#step", "s => { s.value = 0; s.dispatchEvent(new Event('input')); }")
    page.wait_for_selector(f"body[data-step='{steps[0]}']")
    assert values() == pytest.approx(stats(steps[0], "surprisal"))
    page.select_option("#colour", "rank")
    assert values() == stats(steps[0], "rank")
    (match,) = sql(
        wh,
        "select match_fraction from extraction where model = $m and step = $s and instance_id = $i",
        {"m": model, "s": steps[0], "i": iid},
    )[0]
    assert number(page, "match_fraction") == pytest.approx(match)
    n_cont = page.locator("table.cont td").count()
    assert n_cont == 2 * sql(wh, "select any_value(gen_len) from extraction")[0][0]
    # the trajectory: drawn from the sequence panel, the cohort marked
    drawn = page.evaluate("() => Array.from(document.getElementById('trajectory')._fullData[0].y)")
    own = sql(
        wh,
        "select sup_seq from sequence_panel where instance_id = $i and model = $m order by step",
        {"i": iid, "m": model},
    )
    assert drawn == pytest.approx([v for (v,) in own])
    assert not errors, errors


def test_profiles_heatmap_hover_and_click(browser_page):
    wh, server, page, errors = browser_page
    page.goto(server.url + "/profiles?metric=sup_seq&units=single")
    page.wait_for_selector("#heatmap .hm, #heatmap .heatmaplayer")
    model = page.input_value("select[name=model]")
    ((g, t, att, nt, nc),) = sql(
        wh,
        "select cohort, step, att, n_treated, n_control from profiles_attgt "
        "where model = $m and metric = 'sup_seq' and units = 'single' and design = 'none' "
        "and control_group = 'never_treated' and base_period = 'varying' and first_epoch "
        "and post order by coalesce(zero_not_in_cband, false) desc, abs(att) desc limit 1",
        {"m": model},
    )
    x, y = page.evaluate(
        """([t, g]) => { const gd = document.getElementById('heatmap'), r = gd.getBoundingClientRect();
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            return [r.left + xa._offset + xa.d2p(t), r.top + ya._offset + ya.d2p(g)]; }""",
        [t, g],
    )
    page.mouse.move(x, y)
    hover = page.wait_for_selector(".hoverlayer .hovertext")
    text = hover.text_content()
    assert f"cohort g = {g}, step t = {t}" in text and f"n treated {nt}, n control {nc}" in text
    assert f"ATT {att:.4g}".replace("-", "−") in text or f"ATT {att:.4g}" in text
    shoot(page, "profiles")
    page.mouse.click(x, y)
    page.wait_for_url(f"**/panel?cohort={g}*")
    scored = f"instance_id in (select instance_id from sequence_panel where model = '{model}' and step = (select max(step) from sequence_panel where model = '{model}'))"  # noqa: E501
    assert (
        number(page, "total")
        == sql(wh, f"select count(*) from instances where cohort = {g} and {scored}")[0][0]
    )
    assert not errors, errors


def test_mitigation_pareto_hover(browser_page):
    wh, server, page, errors = browser_page
    page.goto(server.url + "/mitigation")
    page.wait_for_selector(".plot .scatterlayer", state="attached")
    studies = [s for (s,) in sql(wh, "select distinct study from mitigation_pareto order by 1")]
    assert page.locator("section.study").count() == len(studies)
    study, method, hparams, mem, acc = sql(
        wh,
        "select study, method, hparams, mem_removed, acc_kept from mitigation_pareto "
        "where not destroyed and isfinite(mem_removed) order by study, run_id limit 1",
    )[0]
    div = f"pareto-{studies.index(study)}"
    page.locator(f"#{div}").scroll_into_view_if_needed()
    x, y = page.evaluate(
        """([div, mem, acc]) => { const gd = document.getElementById(div), r = gd.getBoundingClientRect();
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            return [r.left + xa._offset + xa.d2p(mem), r.top + ya._offset + ya.d2p(acc)]; }""",
        [div, mem, acc],
    )
    page.mouse.move(x, y)
    text = page.wait_for_selector(".hoverlayer .hovertext").text_content()
    assert method in text and "accuracy kept" in text
    page.evaluate("() => window.scrollTo(0, 0)")
    shoot(page, "mitigation")
    assert not errors, errors


def test_sql_console(browser_page):
    wh, server, page, errors = browser_page
    page.goto(server.url + "/sql")
    q = "select model, count(*) as n from sequence_panel group by model order by model"
    page.fill("#q", q)
    page.click("#run")
    page.wait_for_selector("body[data-result='ok']")
    cells = page.eval_on_selector_all("#grid td", "tds => tds.map(t => t.textContent)")
    assert cells == [str(v) for row in sql(wh, q) for v in row]
    with page.expect_download() as download:
        page.click("#csv")
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0] == "model,n" and len(lines) == 1 + len(sql(wh, q))
    shoot(page, "sql")
    page.fill("#q", "select * from read_csv('/etc/passwd')")
    page.click("#run")
    page.wait_for_selector("body[data-result='error']")
    assert "reads outside the warehouse are refused" in page.text_content("#error")
    page.fill("#q", "select 1; drop view sequence_panel")
    page.click("#run")
    page.wait_for_function("document.getElementById('error').textContent.includes('one statement')")
    # a table name fills and runs its query
    page.click("a.table-name >> text=sequence_panel")
    page.wait_for_function("document.getElementById('q').value.includes('sequence_panel limit 20')")
    assert not errors, errors
