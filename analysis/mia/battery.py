"""The membership-inference battery over a warehouse: every attack's score for every scored row
of a model at a checkpoint, and each attack's AUC and low-FPR true-positive rates there.

Members at step t are the natural training rows of the panel trained by t (cohort <= t);
non-members the never-trained rows. Planted rows and rows not trained yet are scored but
unlabelled. The twin attack's members are the twin's held-out rows only: every other training
row is trained by the twin as well, so only those differ in membership between the two.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import numpy as np
import polars as pl

from analysis.mia.blind import blind_scores, ngram_features
from analysis.mia.metrics import auc, auc_interval, tpr_at_fpr
from analysis.views import SQL_VIEWS
from memlake.core import lake, marts, query
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.twins import twin_models, twins_of

ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "reference", "twin", "blind")
MARTS = marts.declare("mia_scores", "mia_metrics")


@dataclass(frozen=True)
class MiaSpec:
    bootstrap: int = 1000
    seed: int = 0
    blind_folds: int = 5
    # model -> reference model (the reference attack is left out for a model without one)
    reference: dict[str, str] = field(default_factory=dict)


def scored_models(wh: Warehouse) -> set[str]:
    """Every model with token statistics (twins included)."""
    if not lake.data_files(wh, "token_stats"):
        raise MemlakeError(f"mia: no token_stats in {wh.root} (run `memlake ingest token-stats`)")
    return set(query.read(wh, "select distinct model from token_stats")["model"].to_list())


def models_with_scores(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Models with token statistics, twins left out (they are references, not subjects)."""
    twins = twin_models(con)
    scored = con.execute("select distinct model from token_stats order by 1").fetchall()
    return [m for (m,) in scored if m not in twins]


def run_mia(
    wh: Warehouse,
    spec: MiaSpec,
    models: list[str] | None = None,
    steps: list[int] | None = None,
    on_model: Callable[[str, pl.DataFrame], None] | None = None,
) -> dict[str, pl.DataFrame]:
    """Score and evaluate every attack for each model at each step (default: every step with
    members and non-members); write the `mia_scores` and `mia_metrics` marts (one file per
    model). Returns model -> its metrics."""
    con = query.connect(wh, views=SQL_VIEWS)
    try:
        if "token_stats" not in query.view_names(con):
            scored_models(wh)  # the error that says so
        out = {}
        for model in models or models_with_scores(con):
            scores, metrics = _battery(con, wh, model, spec, steps)
            marts.write(wh, "mia_scores", marts.file_key(model), scores)
            marts.write(wh, "mia_metrics", marts.file_key(model), metrics)
            if on_model:
                on_model(model, metrics)
            out[model] = metrics
        return out
    finally:
        con.close()


def _battery(con, wh: Warehouse, model: str, spec: MiaSpec, steps: list[int] | None):
    rows = query.frame(
        con,
        "select t.instance_id, i.cohort, i.artifact, i.tokens from (select distinct instance_id from "
        "token_stats where model = $model) t join instances i using (instance_id) order by 1",
        {"model": model},
    )
    if rows.is_empty():
        raise MemlakeError(f"mia: model {model!r} has no token statistics")
    available = _steps(con, model)
    never = rows["cohort"].is_null().to_numpy()
    natural = (rows["artifact"] == "none").fill_null(False).to_numpy()
    cohort = rows["cohort"].fill_null(np.iinfo(np.int64).max).to_numpy()
    if steps:
        missing = sorted(set(steps) - set(available))
        if missing:
            raise MemlakeError(f"mia: {model} has no token statistics at step(s) {missing}")
        for s in steps:
            _check_labels(model, s, int(never.sum()), int((natural & ~never & (cohort <= s)).sum()))
        chosen = list(steps)
    else:
        chosen = [s for s in available if never.any() and (natural & ~never & (cohort <= s)).any()]
        if not chosen:
            _check_labels(model, available[-1], int(never.sum()), 0)
    ids = rows["instance_id"].to_numpy()
    zbytes = _zlib_sizes(con, wh, model, rows["tokens"].to_list())
    features = ngram_features(rows["tokens"].to_list())
    twin = {of: t for t, of in twins_of(wh).items()}.get(model)
    heldout = _heldout(con, twin) if twin else None
    reference = spec.reference.get(model)
    reference_steps = _steps(con, reference) if reference else []
    blind_cache: dict[bytes, np.ndarray | None] = {}

    frames, metrics = [], []
    for step in chosen:
        member = np.where(never, False, np.where(natural & (cohort <= step), True, None))
        base = _step_scores(con, model, step, ids)
        scores = {
            "loss": base["loss"],
            "zlib": base["loss"] / zbytes,
            "min_k": base["min_k"],
            "min_k_plus_plus": base["min_k_plus_plus"],
        }
        labels = {a: member for a in scores}
        if reference:
            ref = _step_scores(con, reference, _nearest_step(reference, reference_steps, step), ids)
            scores["reference"] = base["loss"] - ref["loss"]  # log p(x) - log p_ref(x)
            labels["reference"] = member
        if twin:
            scores["twin"] = base["loss"] - _step_scores(con, twin, step, ids)["loss"]
            trained = np.isin(ids, heldout) & (cohort <= step)
            labels["twin"] = np.where(never, False, np.where(trained, True, None))
        known = np.array([m is not None for m in member])
        key = np.packbits(member[known].astype(bool)).tobytes() + np.packbits(known).tobytes()
        if key not in blind_cache:
            oof = blind_scores(features[known], member[known].astype(bool), spec.blind_folds, spec.seed)
            blind_cache[key] = None if oof is None else _scatter(oof, known)
        if blind_cache[key] is not None:
            scores["blind"] = blind_cache[key]
            labels["blind"] = member
        for attack, values in scores.items():
            if np.isnan(values).all():  # min_k_plus_plus without the second moment (Hub imports)
                continue
            frames.append(_long(model, step, ids, attack, values, labels[attack]))
            metrics.append(_metrics(model, step, attack, values, labels[attack], spec))
    return pl.concat(frames), pl.DataFrame(metrics, schema=METRICS_SCHEMA)


def _check_labels(model: str, step: int, nonmembers: int, members: int) -> None:
    if not nonmembers:
        raise MemlakeError(f"mia: {model}@{step} has no never-trained rows (non-members)")
    if not members:
        raise MemlakeError(f"mia: {model}@{step} has no natural training rows trained by then (members)")


def _step_scores(con, model: str, step: int, ids: np.ndarray) -> dict[str, np.ndarray]:
    f = query.frame(
        con,
        "select instance_id, loss, min_k, min_k_plus_plus from mia_token_scores "
        "where model = $model and step = $step order by instance_id",
        {"model": model, "step": step},
    )
    if not np.array_equal(f["instance_id"].to_numpy(), ids):
        raise MemlakeError(f"mia: {model}@{step} does not score the same rows as the model under attack")
    return {c: f[c].cast(pl.Float64).to_numpy() for c in ("loss", "min_k", "min_k_plus_plus")}


def _nearest_step(model: str, steps: list[int], step: int) -> int:
    """The reference's checkpoint at `step`, else its last one before it, else its first."""
    if not steps:
        raise MemlakeError(f"mia: reference model {model!r} has no token statistics")
    before = [s for s in steps if s <= step]
    return before[-1] if before else steps[0]


def _steps(con, model: str) -> list[int]:
    got = con.execute("select distinct step from token_stats where model = $m order by 1", {"m": model})
    return [s for (s,) in got.fetchall()]


def _heldout(con, twin: str) -> np.ndarray:
    got = con.execute("select instance_id from twin_heldout where model = $m", {"m": twin})
    return got.fetchnumpy()["instance_id"]


def _zlib_sizes(con, wh: Warehouse, model: str, rows: list[list[int]]) -> np.ndarray:
    """zlib-compressed size in bytes of each row's decoded text (Carlini et al. 2021's zlib entropy)."""
    from transformers import AutoTokenizer

    from ingest.checkpoints import resolve

    # every revision shares the tokenizer, but an offline Hub cache holds only some revisions:
    # the scored ones first (their weights were loaded), latest first
    steps = con.execute(
        "select step from (select distinct step, 0 as scored from token_stats where model = $m "
        "union all select distinct step, 1 from checkpoints where model = $m) order by scored, step desc",
        {"m": model},
    ).fetchall()
    tokenizer, tried = None, []
    for (step,) in steps:
        ref = resolve(model, f"step{step}", wh)
        try:
            tokenizer = AutoTokenizer.from_pretrained(ref.location, revision=ref.revision)
            break
        except OSError as e:
            tried.append(str(e).splitlines()[0])
    if tokenizer is None:
        raise ValueError(
            f"no tokenizer of {model!r} loads ({len(tried)} revisions tried, e.g.: {tried[0]}): "
            "zlib needs one"
        )
    texts = tokenizer.batch_decode(rows)
    return np.array([len(zlib.compress(t.encode("utf-8"))) for t in texts], dtype=np.float64)


def _scatter(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    out = np.full(len(where), np.nan)
    out[where] = values
    return out


def _long(model, step, ids, attack, values, member) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "model": model,
            "step": step,
            "instance_id": ids,
            "attack": attack,
            "score": np.asarray(values, dtype=np.float64),
            "member": pl.Series(list(member), dtype=pl.Boolean),
        },
        schema=SCORES_SCHEMA,
    ).filter(pl.col("score").is_not_nan() & pl.col("score").is_not_null())


def _metrics(model, step, attack, values, member, spec: MiaSpec) -> dict:
    values = np.asarray(values, dtype=np.float64)
    known = np.array([m is not None for m in member]) & ~np.isnan(values)
    s, m = values[known], np.asarray(member[known], dtype=bool)
    row = {"model": model, "step": step, "attack": attack, "n_members": int(m.sum())}
    row["n_nonmembers"] = int((~m).sum())
    if not m.any() or m.all():
        return {**row, **dict.fromkeys(("auc", "auc_lower", "auc_upper", "tpr_at_1pct", "tpr_at_01pct"))}
    low, high = auc_interval(s, m, spec.bootstrap, spec.seed)
    return {
        **row,
        "auc": auc(s, m),
        "auc_lower": None if np.isnan(low) else low,
        "auc_upper": None if np.isnan(high) else high,
        "tpr_at_1pct": tpr_at_fpr(s, m, 0.01),
        "tpr_at_01pct": tpr_at_fpr(s, m, 0.001),
    }


SCORES_SCHEMA = {
    "model": pl.String,
    "step": pl.Int64,
    "instance_id": pl.Int64,
    "attack": pl.String,
    "score": pl.Float64,
    "member": pl.Boolean,
}
METRICS_SCHEMA = {
    "model": pl.String,
    "step": pl.Int64,
    "attack": pl.String,
    "auc": pl.Float64,
    "auc_lower": pl.Float64,
    "auc_upper": pl.Float64,
    "tpr_at_1pct": pl.Float64,
    "tpr_at_01pct": pl.Float64,
    "n_members": pl.Int64,
    "n_nonmembers": pl.Int64,
}
