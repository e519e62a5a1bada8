"""The taxonomy study's headline, in numbers read from its marts (for the report).

One (model, step): the pair with the most memorised training rows (`data.main_pair`, the paper's
largest model at its last checkpoint). For it: how memorised rows split over recitation /
reconstruction / recollection, whether features predict memorisation differently by category
(the likelihood-ratio test of the taxonomic model against the baseline, the paper's finding),
the taxonomic model's strongest weights per category, and the best partition of the search.
A category or test with fewer than `MIN_POSITIVES` memorised rows is flagged: its numbers are
computed but carry no evidence.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import duckdb
import polars as pl

from analysis.page import num
from analysis.taxonomy import data
from memlake.core import query

MIN_POSITIVES = 10
ALPHA = 0.05
CATEGORIES = ("recitation", "reconstruction", "recollection")


@dataclass
class TaxonomyHeadline:
    model: str
    step: int
    counts: dict[str, int]  # memorised training rows per category
    lrt: dict | None  # statistic, df, p_value, protocol, n_positive; None when not computed
    lrt_note: str | None
    weights: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # top |weight| first
    search: dict | None = None  # best candidate of taxonomy_search at this pair

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def flags(self) -> list[str]:
        out = [
            f"{c}: {n} memorised rows (< {MIN_POSITIVES}), too few to mean anything"
            for c, n in self.counts.items()
            if n < MIN_POSITIVES
        ]
        if self.lrt is not None and self.lrt["n_positive"] < MIN_POSITIVES:
            out.append(f"the LRT rests on {self.lrt['n_positive']} memorised rows")
        if self.search is not None and sum(n >= MIN_POSITIVES for n in self.counts.values()) < 2:
            out.append("the partition search's F1 rests on fewer than two categories: it says nothing here")
        return out

    def sentence(self, markup: bool = False) -> str:
        """The headline in words; with `markup`, HTML whose numbers carry their keys (page.num)."""
        esc = html.escape if markup else str

        def n(key: str, v, fmt: str) -> str:
            return num(f"taxonomy.{key}", v, fmt) if markup else format(v, fmt)

        pair = esc(f"{self.model}@{self.step}")
        if not self.total:
            return f"{pair} memorises no training row: there is no taxonomy to read."
        shares = ", ".join(
            f"{c} {100 * k / self.total:.0f} % ({n(f'count.{c}', k, 'd')})" for c, k in self.counts.items()
        )
        text = f"At {pair}, {self.total} memorised training rows split into {shares}. "
        if self.lrt is None:
            text += (
                "Whether features predict memorisation differently by category is not tested: "
                f"{esc(self.lrt_note or '')}."
            )
        else:
            differ = self.lrt["p_value"] < ALPHA
            text += (
                f"Features {'do' if differ else 'do not detectably'} predict memorisation differently by "
                f"category (likelihood-ratio test of the per-category models against one model, "
                f"{esc(self.lrt['protocol'])} split"
                + (
                    ", Firth-penalised because a feature separates memorised rows"
                    if self.lrt.get("estimator") == "firth"
                    else ""
                )
                + f": chi2 = {self.lrt['statistic']:.1f}, "
                f"df = {self.lrt['df']}, p = {n('lrt_p', self.lrt['p_value'], '.2g')}"
                + ("; the paper's finding holds here)." if differ else "; the paper's finding is not seen).")
            )
        if self.search is not None:
            s = self.search
            text += (
                f" The best two-rule partition of the search is {esc(s['first_feature'])} >= its "
                f"q{s['first_quantile']:.2f}, then {esc(s['second_feature'])} >= its "
                f"q{s['second_quantile']:.2f} (test F1 {n('search_f1', s['f1'], '.3f')})."
            )
        return text

    def html(self) -> str:
        parts = [f"<p>{self.sentence(markup=True)}</p>"]
        parts += [f'<p class="flag">&#9888; {html.escape(f)}</p>' for f in self.flags()]
        if self.weights:
            rows = "".join(
                f"<tr><td>{html.escape(c)}</td><td>"
                + ", ".join(f"{html.escape(f)} {w:+.2f}" for f, w in ws)
                + "</td></tr>"
                for c, ws in self.weights.items()
            )
            parts.append(
                "<table><tr><th>category</th><th>strongest weights of the taxonomic model "
                "(standardised features)</th></tr>" + rows + "</table>"
            )
        return "\n".join(parts)


def taxonomy_headline(con: duckdb.DuckDBPyConnection, *, top: int = 3) -> TaxonomyHeadline:
    """The headline of the marts `con` sees (raises ValueError when the taxonomy marts are absent)."""
    model, step = data.main_pair(con)
    views = query.view_names(con)
    key = {"model": model, "step": step}
    counts = query.frame(
        con,
        f"""select category, count(*) filter (where memorised) as n
            from ({data.rows_sql(con)}) where model = $model and step = $step and split = 'train'
            group by category""",
        key,
    )
    by = dict(counts.iter_rows())
    counted = {c: int(by.get(c, 0)) for c in CATEGORIES}
    out = TaxonomyHeadline(model, step, counted, None, "the model tests were not run")
    if "taxonomy_model_tests" in views:
        tests = query.frame(
            con,
            """select * from taxonomy_model_tests
               where model = $model and step = $step and test = 'lrt' and perplexity = 'per_window'
               order by protocol = 'leakage_free' desc, protocol""",
            key,
        )
        usable = tests.filter(pl.col("p_value").is_not_null() & pl.col("p_value").is_not_nan())
        if len(usable):
            out.lrt, out.lrt_note = usable.row(0, named=True), None
        elif len(tests):
            out.lrt_note = tests["note"][0] or "the test could not be computed"
    if "taxonomy_model_weights" in views:
        weights = query.frame(
            con,
            """select protocol, category, feature, weight from taxonomy_model_weights
               where model = $model and step = $step and model_kind = 'taxonomic'
                 and perplexity = 'per_window'""",
            key,
        )
        protocols = weights["protocol"].unique().sort().to_list()
        chosen = out.lrt["protocol"] if out.lrt else ("leakage_free" if "leakage_free" in protocols else None)
        weights = weights.filter(pl.col("protocol") == (chosen or (protocols[0] if protocols else "")))
        for c in CATEGORIES:
            ws = weights.filter(pl.col("category") == c).sort(pl.col("weight").abs(), descending=True)
            ws = [(f, w) for f, w in ws.select("feature", "weight").iter_rows() if not math.isnan(w)]
            if ws:
                out.weights[c] = ws[:top]
    if "taxonomy_search" in views:
        best = query.frame(
            con,
            """select * from taxonomy_search where model = $model and step = $step and not skipped
               and f1 is not null and not isnan(f1) order by f1 desc, candidate limit 1""",
            key,
        )
        if len(best):
            out.search = best.row(0, named=True)
    return out
