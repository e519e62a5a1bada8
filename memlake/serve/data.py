"""What each page of the explorer shows, as plain data: every query runs in DuckDB with bound
parameters and returns only what the page draws (one page of the panel, one instance's rows, one
fit's cells), never a whole table.

Column and table names that come from a request are checked against the warehouse's own
(`Unknown` otherwise) before they reach SQL; values always travel as parameters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import polars as pl

from analysis.profiles.fitting import KEY_COLUMNS
from analysis.profiles.metrics import METRICS
from memlake.core.errors import MemlakeError
from memlake.serve.store import Store

PAGE_SIZE = 50
# token_stats list column -> the sequence_panel column that averages it
TOKEN_METRICS = {"surprisal": "sup_seq", "rank": "avg_rank", "entropy": "entr_seq"}
PANEL_COLUMNS = ("instance_id", "split", "source", "artifact", "copies", "cohort", "batch_idx")


class Unknown(MemlakeError):
    """A name in the request (instance, model, step, column) the warehouse does not have."""


@dataclass(frozen=True)
class PanelQuery:
    """The panel browser's filters; None (or '') means no filter."""

    split: str | None = None
    artifact: str | None = None
    source: str | None = None
    cohort: int | None = None
    checkpoint: str | None = None  # "model@step": the category and memorised columns are at it
    scored: bool = True  # only instances the checkpoint scored (those in the sequence panel)
    category: str | None = None
    memorised: bool | None = None
    feature: str | None = None
    low: float | None = None
    high: float | None = None
    page: int = 0


@dataclass
class Panel:
    columns: list[str]
    rows: list[tuple]
    total: int
    by_split: dict[str, int]
    page: int
    pages: int
    checkpoint: str | None
    options: dict[str, list] = field(default_factory=dict)


class Explorer:
    """The queries behind the pages, over one `Store`."""

    def __init__(self, store: Store):
        self.store = store

    # -- names the warehouse has --------------------------------------------------------------

    def has(self, *views: str) -> bool:
        tables = self.store.tables()
        return all(v in tables for v in views)

    def checkpoints(self) -> list[tuple[str, int]]:
        """(model, step) of every checkpoint the sequence panel covers."""
        return self._checkpoints(self.store.signature())

    @functools.lru_cache(maxsize=4)  # noqa: B019 - one Explorer per server; keyed by the warehouse's state
    def _checkpoints(self, signature) -> list[tuple[str, int]]:
        if not self.has("sequence_panel"):
            return []
        return self.store.rows("select distinct model, step from sequence_panel order by all")

    def _checkpoint(self, value: str | None) -> tuple[str, int] | None:
        points = self.checkpoints()
        if not value:
            return points[-1] if points else None
        model, _, step = value.rpartition("@")
        if not step.lstrip("-").isdigit() or (model, int(step)) not in points:
            raise Unknown(f"checkpoint {value!r} is not in the sequence panel (model@step)")
        return model, int(step)

    def features(self) -> list[str]:
        """The numeric columns of `instance_features` a range filter may use."""
        if not self.has("instance_features"):
            return []
        rows = self.store.rows("select column_name, column_type from (describe instance_features)")
        numeric = ("BIGINT", "INTEGER", "DOUBLE", "FLOAT", "BOOLEAN")
        return [c for c, t in rows if t in numeric and c != "instance_id"]

    # -- panel browser --------------------------------------------------------------------------

    def panel(self, q: PanelQuery) -> Panel:
        point = self._checkpoint(q.checkpoint) if q.checkpoint or self.has("sequence_panel") else None
        params: dict = {}
        select = [f"i.{c}" for c in PANEL_COLUMNS]
        joins = []
        where = []
        if point:
            params |= {"model": point[0], "step": point[1]}
        if point and q.scored:
            where.append(
                "i.instance_id in (select instance_id from sequence_panel "
                "where model = $model and step = $step)"
            )
        if point and self.has("taxonomy"):
            joins.append(
                "left join taxonomy as t on t.instance_id = i.instance_id "
                "and t.model = $model and t.step = $step"
            )
            select += ["t.category", "t.memorised"]
        if q.feature:
            if q.feature not in self.features():
                raise Unknown(f"feature {q.feature!r} is not a numeric column of instance_features")
            joins.append("left join instance_features as f on f.instance_id = i.instance_id")
            select.append(f'f."{q.feature}"')
            for name, op, bound in (("low", ">=", q.low), ("high", "<=", q.high)):
                if bound is not None:
                    where.append(f'f."{q.feature}" {op} ${name}')
                    params[name] = bound
        for column, value in (("split", q.split), ("artifact", q.artifact), ("source", q.source)):
            if value:
                where.append(f"i.{column} = ${column}")
                params[column] = value
        if q.cohort is not None:
            where.append("i.cohort = $cohort")
            params["cohort"] = q.cohort
        if point and q.category and self.has("taxonomy"):
            where.append("t.category = $category")
            params["category"] = q.category
        if point and q.memorised is not None and self.has("taxonomy"):
            where.append("coalesce(t.memorised, false) = $memorised")
            params["memorised"] = q.memorised
        base = (
            f"select {', '.join(select)} from instances as i {' '.join(joins)} "
            f"where {' and '.join(where) or 'true'}"
        )
        counts = dict(self.store.rows(f"select split, count(*) from ({base}) group by split", params))
        total = sum(counts.values())
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(max(q.page, 0), pages - 1)
        frame = self.store.frame(
            f"{base} order by i.instance_id limit {PAGE_SIZE} offset {page * PAGE_SIZE}", params
        )
        return Panel(
            columns=frame.columns,
            rows=frame.rows(),
            total=total,
            by_split=counts,
            page=page,
            pages=pages,
            checkpoint=f"{point[0]}@{point[1]}" if point else None,
            options=self._panel_options(),
        )

    def _panel_options(self) -> dict[str, list]:
        opts = {c: self._values("instances", c) for c in ("split", "artifact", "source")}
        opts["checkpoint"] = [f"{m}@{s}" for m, s in self.checkpoints()]
        opts["category"] = self._values("taxonomy", "category") if self.has("taxonomy") else []
        opts["feature"] = self.features()
        return opts

    def _values(self, table: str, column: str) -> list:
        return [
            v
            for (v,) in self.store.rows(
                f"select distinct {column} from {table} where {column} is not null order by 1"
            )
        ]

    # -- instance view --------------------------------------------------------------------------

    def require(self, instance_id: int) -> None:
        """`Unknown` unless the instance exists (reads the id column only)."""
        if not self.store.rows(
            "select 1 from instances where instance_id = $id limit 1", {"id": instance_id}
        ):
            raise Unknown(f"instance {instance_id} is not in the warehouse")

    def instance(self, instance_id: int) -> dict:
        rows = self.store.frame("select * from instances where instance_id = $id", {"id": instance_id})
        if rows.height == 0:
            raise Unknown(f"instance {instance_id} is not in the warehouse")
        row = rows.row(0, named=True)
        out = {"instance": {k: v for k, v in row.items() if k not in ("tokens", "clean_tokens")}}
        out["tokens"] = row["tokens"]
        points = (
            self.store.rows(
                "select distinct model, step from sequence_panel where instance_id = $id order by all",
                {"id": instance_id},
            )
            if self.has("sequence_panel")
            else []
        )
        out["checkpoints"] = {}
        for model, step in points:
            out["checkpoints"].setdefault(model, []).append(step)
        if self.has("instance_features"):
            feats = self.store.frame(
                "select * from instance_features where instance_id = $id", {"id": instance_id}
            )
            if feats.height:
                keep = [c for c, t in feats.schema.items() if not isinstance(t, pl.List)]
                keep.remove("instance_id")
                out["features"] = feats.select(keep).row(0, named=True)
        return out

    def trajectory(self, instance_id: int, model: str, metric: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(this instance's, the never-treated mean's) (step, value) rows for one model."""
        if metric not in METRICS:
            raise Unknown(f"metric {metric!r} is not one of {', '.join(METRICS)}")
        own = self.store.frame(
            f"select step, {metric} as value from sequence_panel "
            "where instance_id = $id and model = $model order by step",
            {"id": instance_id, "model": model},
        )
        return own, self._controls(self.store.signature(), model, metric)

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one Explorer per server; keyed by the warehouse's state
    def _controls(self, signature, model: str, metric: str) -> pl.DataFrame:
        return self.store.frame(
            f"select step, avg({metric}) as value from sequence_panel "
            "where never_treated and model = $model group by step order by step",
            {"model": model},
        )

    def at(self, instance_id: int, model: str, step: int) -> dict:
        """What the instance view shows at one checkpoint: per-token values, the greedy
        continuation, the taxonomy row and the MIA scores."""
        if model not in {m for m, _ in self.checkpoints()}:
            raise Unknown(f"model {model!r} is not in the sequence panel")
        if (model, step) not in set(self.checkpoints()):
            raise Unknown(f"step {step} is not a checkpoint of {model} in the sequence panel")
        p = {"id": instance_id, "model": model, "step": step}
        out: dict = {"model": model, "step": step}
        stats = self.store.frame(
            "select surprisal, rank, entropy from token_stats "
            "where model = $model and step = $step and instance_id = $id",
            p,
        )
        out["values"] = stats.row(0, named=True) if stats.height else None
        if self.has("extraction"):
            ext = self.store.frame(
                "select prompt_len, gen_len, generated, match_fraction, memorised from extraction "
                "where model = $model and step = $step and instance_id = $id "
                "order by prompt_len, gen_len",
                p,
            )
            out["extraction"] = ext.rows(named=True)
        if self.has("taxonomy"):
            tax = self.store.frame(
                "select category, memorised, sequence_duplicates from taxonomy "
                "where model = $model and step = $step and instance_id = $id",
                p,
            )
            out["taxonomy"] = tax.row(0, named=True) if tax.height else None
        if self.has("mia_scores"):
            out["mia"] = self.store.frame(
                "select attack, score from mia_scores where model = $model and step = $step "
                "and instance_id = $id order by attack",
                p,
            ).rows(named=True)
        return out

    # -- profiles -------------------------------------------------------------------------------

    def fits(self) -> list[dict]:
        """Every fit in `profiles_attgt` (its key columns), the paper's setting first."""
        return self._fits(self.store.signature())

    @functools.lru_cache(maxsize=4)  # noqa: B019 - one Explorer per server; keyed by the warehouse's state
    def _fits(self, signature) -> list[dict]:
        if not self.has("profiles_attgt"):
            return []
        cols = ", ".join(KEY_COLUMNS)
        rows = self.store.frame(
            f"select distinct {cols} from profiles_attgt order by units != 'single', design != 'none', {cols}"
        )
        return rows.rows(named=True)

    def cells(self, fit: dict) -> pl.DataFrame:
        """Every ATT(g, t) cell of one fit."""
        known = self.fits()
        key = {k: fit[k] for k in KEY_COLUMNS}
        if key not in known:
            named = ", ".join(f"{k}={v}" for k, v in key.items())
            raise Unknown(f"no profile fit with {named}")
        where = " and ".join(f"{k} = ${k}" for k in KEY_COLUMNS)
        return self.store.frame(
            "select cohort, step, event_time, post, att, se, ci_lower, ci_upper, zero_not_in_cband, "
            f"n_treated, n_control, memorisation from profiles_attgt where {where} order by cohort, step",
            key,
        )

    # -- mitigation -----------------------------------------------------------------------------

    def pareto_runs(self) -> pl.DataFrame:
        if not self.has("mitigation_pareto"):
            return pl.DataFrame()
        return self.store.frame("select * exclude (forget_ids, forget_extracted) from mitigation_pareto")

    def best_runs(self) -> pl.DataFrame:
        if not self.has("mitigation_best_runs"):
            return pl.DataFrame()
        return self.store.frame(
            "select study, method, kind, hparams, mem_removed, acc_kept, ppl_after, seconds, outcome "
            "from mitigation_best_runs order by study, method"
        )
