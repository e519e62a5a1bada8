"""A static HTML report over the warehouse: per study its headline from the marts, then its
figures; summary tables and provenance.

`write_report(wh, out)` writes `out/index.html` with the figures copied beside it (PNG) and,
optionally, `dbt docs generate` output in `out/dbt-docs/` linked from the page. The page marks
itself once every image has loaded (`<body data-images="loaded/total">`), which the headless
browser test reads.
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Callable
from pathlib import Path

from analysis.interactive import PLOTLY_JS, fragment
from analysis.page import table
from analysis.views import SQL_VIEWS
from memlake.core import lake, query
from memlake.core.paths import Warehouse

SECTIONS = {  # figures folder -> (title, the command that draws its figures; None: tables only)
    "profiles": ("Memorisation profiles", "memlake profiles fit && memlake profiles figures"),
    "taxonomy": ("Taxonomy of memorisation", "memlake taxonomy ..."),
    "groundtruth": ("Ground truth: the twins", None),
    "mitigation": ("Mitigation", "memlake mitigate ..."),
    "cross": ("Cross-analyses", "memlake cross"),
}


def _profiles_headline(con, wh: Warehouse) -> str:
    from analysis.profiles.headline import profiles_html

    return profiles_html(con, wh.suite / "config.yaml")


def _taxonomy_headline(con, wh: Warehouse) -> str:
    from analysis.taxonomy.headline import taxonomy_headline

    try:
        return taxonomy_headline(con).html()
    except ValueError as e:  # marts not built yet
        return f"<p class=muted>{html.escape(str(e))}</p>"


def _mitigation_headline(con, wh: Warehouse) -> str:
    from analysis.mitigation.summary import mitigation_html

    if "mitigation_best_runs" not in query.view_names(con):
        return "<p class=muted>No mitigation runs yet: run <code>memlake mitigate sweep</code>.</p>"
    vs = (
        query.frame(con, "select * from mitigation_vs_oracle")
        if "mitigation_vs_oracle" in query.view_names(con)
        else None
    )
    return mitigation_html(query.frame(con, "select * from mitigation_scored"),
                           query.frame(con, "select * from mitigation_best_runs"), vs)  # fmt: skip


def _ground_truth_headline(con, wh: Warehouse) -> str:
    from analysis.mia.headline import did_validation_html, mia_html

    return did_validation_html(con) + "\n" + mia_html(con)


def _cross_headline(con, wh: Warehouse) -> str:
    from analysis.cross.headline import cross_html

    return cross_html(con)


def _profiles_plots(con) -> list[str]:
    from analysis.profiles.figures import DEFAULT
    from analysis.profiles.interactive import fit_heatmaps

    figs = fit_heatmaps(con, "sup_seq", DEFAULT)
    return [fragment(fig, f"heatmap-{i}") for i, fig in enumerate(figs.values())]


def _mitigation_plots(con) -> list[str]:
    from analysis.mitigation.interactive import pareto

    if "mitigation_pareto" not in query.view_names(con):
        return []
    runs = query.frame(con, "select * exclude (forget_ids, forget_extracted) from mitigation_pareto")
    return [fragment(pareto(runs, s), f"pareto-{i}") for i, s in enumerate(sorted(runs["study"].unique()))]


# figures folder -> its interactive figures (HTML fragments; the same functions `memlake serve` draws)
PLOTS = {"profiles": _profiles_plots, "mitigation": _mitigation_plots}

# figures folder -> the study's headline (HTML) from the marts a connection sees
HEADLINES = {
    "profiles": _profiles_headline,
    "taxonomy": _taxonomy_headline,
    "groundtruth": _ground_truth_headline,
    "mitigation": _mitigation_headline,
    "cross": _cross_headline,
}


def _headline(folder: str, wh: Warehouse) -> str:
    con = query.connect(wh, views=SQL_VIEWS)
    try:
        plots = PLOTS[folder](con) if folder in PLOTS else []
        return HEADLINES[folder](con, wh) + "\n".join(plots)
    finally:
        con.close()


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
figure{display:inline-block;margin:.5em;vertical-align:top}figure img{max-width:520px;border:1px solid #eee}
figure.wide{display:block}figure.wide img{max-width:100%}
figcaption{font-size:.85em;color:#555}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;font-size:.9em}.muted{color:#777}
.flag{color:#a15c00}
"""

SCRIPT = """
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = ok + '/' + imgs.length;
  const plots = [...document.querySelectorAll('.plot')];
  document.body.dataset.plots = plots.filter(p => p.querySelector('.main-svg')).length + '/' + plots.length;
});
"""


def _summaries(wh: Warehouse) -> list[str]:
    """Row counts of every table, checkpoints per model, and headline numbers where marts exist."""
    con = query.connect(wh, views=SQL_VIEWS)
    out = []
    try:
        views = sorted(query.view_names(con))
        counts = [(v, con.execute(f"select count(*) from {v}").fetchall()[0][0]) for v in views]
        out.append("<h2>Tables</h2>" + table(["table or view", "rows"], counts))
        if "checkpoints" in views:
            cols, rows = (
                ["model", "checkpoints", "first step", "last step", "final train loss"],
                con.execute(
                    "select model, count(*), min(step), max(step), arg_max(train_loss, step) "
                    "from checkpoints group by all order by all"
                ).fetchall(),
            )
            out.append("<h2>Models</h2>" + table(cols, rows))
    finally:
        con.close()
    return out


def write_report(wh: Warehouse, out: Path, *, docs: Callable[[Path], bool] | None = None) -> Path:
    """Write `out/index.html` (and figures/); return the index path. `docs(folder)`, when given,
    writes the dbt docs site into `out/dbt-docs` and says whether it did; the page links it."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(PLOTLY_JS, out / PLOTLY_JS.name)  # beside the page: it draws with no network
    parts = [f"<h1>memlake report</h1><p class=muted>warehouse <code>{html.escape(str(wh.root))}</code>, "
             f"code version <code>{html.escape(lake.code_version())}</code></p>"]  # fmt: skip
    if docs is not None and docs(out / "dbt-docs"):
        parts.append('<p><a href="dbt-docs/index.html">dbt docs: every model, column and test</a></p>')
    for folder, (title, command) in SECTIONS.items():
        src = wh.figures / folder
        pngs = sorted(src.glob("*.png")) if src.exists() else []
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if folder in HEADLINES:
            parts.append(_headline(folder, wh))
        if not pngs:
            if command:
                parts.append(f"<p class=muted>No figures yet: run <code>{html.escape(command)}</code>.</p>")
            continue
        dst = out / "figures" / folder
        dst.mkdir(parents=True, exist_ok=True)
        for png in pngs:
            shutil.copy2(png, dst / png.name)
            rel = f"figures/{folder}/{png.name}"
            wide = " class=wide" if _aspect(png) > WIDE else ""
            parts.append(
                f'<figure{wide}><img src="{rel}" alt="{html.escape(png.stem)}">'
                f"<figcaption>{html.escape(png.stem)}</figcaption></figure>"
            )
    parts += _summaries(wh)
    config = wh.suite / "config.yaml"
    if config.exists():
        parts.append(f"<h2>Provenance</h2><pre>{html.escape(config.read_text())}</pre>")
    page = (
        "<!doctype html><html><head><meta charset=utf-8><title>memlake report</title>"
        f"<style>{STYLE}</style><script src={PLOTLY_JS.name}></script><script>{SCRIPT}</script></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    index = out / "index.html"
    index.write_text(page)
    return index


WIDE = 1.6  # width / height above which a figure (multi-panel) takes the page's width, not half


def _aspect(png: Path) -> float:
    """Width / height of a PNG, from its IHDR chunk (bytes 16-24)."""
    head = png.read_bytes()[:24]
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return width / height if height else 1.0
