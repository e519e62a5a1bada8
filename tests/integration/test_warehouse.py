"""The dbt warehouse over a synthetic lake: mart values, docs, and bad input failing loudly.

One module-scoped run walks a warehouse through its scenarios (each `memlake build` costs
seconds, and reusing one warehouse path lets dbt parse partially): a lake with only instances
and checkpoints, a full lake, then the bad inputs. The tests assert on what each run left.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from memlake.core import lake
from memlake.core import marts as python_marts
from memlake.core.errors import MemlakeError
from memlake.core.paths import REPO_ROOT, Warehouse
from tests.helpers import dbt, rewrite_file

MEMLAKE = [sys.executable, "-c", "from memlake.cli import main; main()"]
MODELS = {"suite-a": [0.0, 0.6, 1.2], "suite-b": [0.0, 0.4, 0.8]}  # epoch of each checkpoint
STEPS = [0, 10, 20]
N_TRAIN, N_VALIDATION, POSITIONS = 14, 6, 15
LENGTHS = [(4, 8), (8, 8)]  # (prompt_len, gen_len) of the extraction


# --------------------------------------------------------------------------- synthetic lake


def write_base(wh: Warehouse) -> None:
    """instances + checkpoints: what a warehouse holds before any scoring job ran."""
    n = N_TRAIN + N_VALIDATION
    ids = np.arange(n)
    train = ids < N_TRAIN
    cohort = [int(STEPS[1 + i % 2]) if t else None for i, t in zip(ids, train)]
    lake.write_partition(
        wh,
        "instances",
        {
            "instance_id": ids,
            "split": ["train" if t else "validation" for t in train],
            "tokens": [list(range(i, i + POSITIONS + 1)) for i in ids],
            "batch_idx": [int(i) if t else None for i, t in zip(ids, train)],
            "cohort": cohort,
            "source": ["code"] * n,
            "artifact": ["none"] * n,
            "copies": [1] * n,
            "clean_tokens": pa.nulls(n, lake.TOKENS),
        },
    )
    for model, epochs in MODELS.items():
        lake.write_partition(
            wh,
            "checkpoints",
            {
                "step": STEPS,
                "path": [f"/ckpt/{model}/step{s}" for s in STEPS],
                "lr": [1e-3] * 3,
                "tokens_seen": [s * 100 for s in STEPS],
                "epoch": epochs,
                "train_loss": [5.0, 4.0, 3.0],
            },
            {"model": model},
        )


def write_scores(wh: Warehouse, seed: int = 0) -> dict:
    """token_stats (two shards per checkpoint) and extraction; returns the values written."""
    rng = np.random.default_rng(seed)
    ids = np.arange(N_TRAIN + N_VALIDATION)
    written = {}
    for model in MODELS:
        for step in STEPS:
            sup = rng.gamma(2.0, 1.5, (len(ids), POSITIONS)).astype(np.float32)
            rank = np.where(
                rng.random((len(ids), POSITIONS)) < 0.3, 0, rng.integers(1, 500, (len(ids), POSITIONS))
            )
            ent = rng.gamma(2.0, 1.0, (len(ids), POSITIONS)).astype(np.float32)
            for i in ids:
                written[(model, step, int(i))] = (sup[i], rank[i], ent[i])
            for shard in (0, 1):
                sel = ids[ids % 2 == shard]
                lake.write_partition(
                    wh,
                    "token_stats",
                    {
                        "instance_id": sel,
                        "surprisal": list(sup[sel]),
                        "rank": list(rank[sel].astype(np.int32)),
                        "entropy": list(ent[sel]),
                    },
                    {"model": model, "step": step, "shard": shard},
                )
            for prompt_len, gen_len in LENGTHS:
                match = rng.integers(0, gen_len + 1, len(ids)) / gen_len
                lake.write_partition(
                    wh,
                    "extraction",
                    {
                        "instance_id": ids,
                        "generated": [list(range(gen_len))] * len(ids),
                        "match_fraction": match.astype(np.float32),
                        "memorised": match == 1.0,
                    },
                    {"model": model, "step": step, "prompt_len": prompt_len, "gen_len": gen_len, "shard": 0},
                )
    return written


def build(wh: Warehouse, target: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)}
    cmd = [*MEMLAKE, "build", "--target-path", str(target), "--log-path", str(target / "logs"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT)


def marts(wh: Warehouse) -> dict[str, pa.Table]:
    return {p.stem: pq.read_table(p) for p in sorted(wh.marts.glob("*.parquet"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every scenario's dbt output and marts, run in order over one warehouse path."""
    wh = Warehouse.at(tmp_path_factory.mktemp("wh-dbt"))
    target = tmp_path_factory.mktemp("dbt-target")
    out = {}

    write_base(wh)
    out["empty"] = build(wh, target), marts(wh)

    written = write_scores(wh)
    # additive drift: one partition carries an extra column (absorbed by union_by_name)
    extra = lake.partition_dir(wh, "token_stats", {"model": "suite-a", "step": 10, "shard": 1})
    rewrite_file(extra, lambda t: t.append_column("logit_lens", pa.array([[0.5]] * t.num_rows)))
    out["full"] = build(wh, target), marts(wh)
    out["written"] = written
    out["wh"] = wh

    # bad input 1: a partition without its manifest, and a file without a contract column
    orphan = lake.partition_dir(wh, "token_stats", {"model": "suite-b", "step": 20, "shard": 0})
    (orphan / lake.MANIFEST).rename(orphan.parent / "kept-manifest.json")
    drifted = lake.partition_dir(
        wh, "extraction", {"model": "suite-a", "step": 0, "prompt_len": 4, "gen_len": 8, "shard": 0}
    )
    backup = pq.read_table(drifted / lake.DATA_FILE)
    rewrite_file(drifted, lambda t: t.drop_columns(["match_fraction"]))
    out["bad_lake"] = build(wh, target), marts(wh)
    # docs generate compiles every model without running tests: the catalog comes from the full
    # build, and the staging model must read only the complete partitions (as `dbt run` would)
    out["docs"] = (
        dbt(wh, target, "docs", "generate"),
        {
            name: (target / name).read_text() if (target / name).exists() else ""
            for name in ("manifest.json", "catalog.json", "index.html")
        },
    )
    (orphan.parent / "kept-manifest.json").rename(orphan / lake.MANIFEST)
    pq.write_table(backup, drifted / lake.DATA_FILE)

    # bad input 2: an unbalanced panel (one shard of one checkpoint never scored)
    shutil.rmtree(lake.partition_dir(wh, "token_stats", {"model": "suite-a", "step": 20, "shard": 1}))
    out["unbalanced"] = build(wh, target), marts(wh)
    return out


def _log(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


# --------------------------------------------------------------------------- good input


def test_build_without_scores_gives_empty_marts_with_the_contract_schema(runs):
    proc, built = runs["empty"]
    assert proc.returncode == 0, _log(proc)[-3000:]
    assert "ERROR=0" in proc.stdout
    assert built["sequence_panel"].num_rows == 0  # no all-null placeholder row
    assert built["sequence_panel"].column_names[:11] == [
        "model",
        "step",
        "instance_id",
        "cohort",
        "never_treated",
        "first_epoch",
        "sup_seq",
        "acc_seq",
        "avg_rank",
        "entr_seq",
        "loglik",
    ]
    assert built["memorised_sequences"].num_rows == 0
    assert built["memorised_sequences"].column_names == [
        "model",
        "step",
        "instance_id",
        "prompt_len",
        "gen_len",
        "match_fraction",
        "memorised",
    ]


def test_sequence_panel_matches_numpy(runs):
    proc, built = runs["full"]
    assert proc.returncode == 0, _log(proc)[-3000:]
    assert "ERROR=0" in proc.stdout and "unit_test" in proc.stdout
    panel = built["sequence_panel"].to_pylist()
    written = runs["written"]
    assert len(panel) == len(written) == 2 * 3 * (N_TRAIN + N_VALIDATION)
    for row in panel:
        sup, rank, ent = written[(row["model"], row["step"], row["instance_id"])]
        assert row["sup_seq"] == pytest.approx(sup.astype(np.float64).mean(), rel=1e-9)
        assert row["loglik"] == pytest.approx(-sup.astype(np.float64).sum(), rel=1e-9)
        assert row["acc_seq"] == pytest.approx((rank == 0).mean(), abs=1e-12)
        assert row["avg_rank"] == pytest.approx(rank.mean(), rel=1e-12)
        assert row["entr_seq"] == pytest.approx(ent.astype(np.float64).mean(), rel=1e-9)
        assert row["n_scored"] == POSITIONS


def test_sequence_panel_treatment_and_first_epoch(runs):
    panel = runs["full"][1]["sequence_panel"].to_pylist()
    epoch = {(m, s): e for m, es in MODELS.items() for s, e in zip(STEPS, es)}
    for row in panel:
        i = row["instance_id"]
        train = i < N_TRAIN
        assert row["never_treated"] is (not train)
        assert row["cohort"] == (STEPS[1 + i % 2] if train else None)
        treated_early = not train or epoch[(row["model"], row["cohort"])] <= 1
        assert row["first_epoch"] is (epoch[(row["model"], row["step"])] <= 1 and treated_early)
    # suite-a's step 20 is in its second epoch, and so is every cohort-20 treatment
    assert {r["first_epoch"] for r in panel if r["model"] == "suite-a" and r["step"] == 20} == {False}
    assert {r["first_epoch"] for r in panel if r["model"] == "suite-b"} == {True}


def test_memorised_sequences_and_query_by_name(runs):
    from memlake.core.query import run

    built = runs["full"][1]["memorised_sequences"]
    assert built.num_rows == 2 * 3 * (N_TRAIN + N_VALIDATION) * len(LENGTHS)
    rows = built.to_pylist()
    assert all(r["memorised"] == (r["match_fraction"] == 1.0) for r in rows)
    assert {(r["prompt_len"], r["gen_len"]) for r in rows} == set(LENGTHS)
    wh = runs["wh"]
    # `memlake query` sees both marts by name
    cols, got = run(wh, "select count(*), count(distinct model) from memorised_sequences")
    assert got == [(built.num_rows, 2)]
    cols, got = run(wh, "select * from sequence_panel limit 1")
    assert cols[:3] == ["model", "step", "instance_id"]
    # the catalog opens read-only once dbt is done, its mart views reading the same files
    with duckdb.connect(str(wh.catalog), read_only=True) as con:
        n = con.execute("select count(*) from sequence_panel").fetchone()[0]
    assert n == runs["full"][1]["sequence_panel"].num_rows


def test_docs_generate_documents_every_mart_column(runs):
    proc, docs = runs["docs"]
    assert proc.returncode == 0, _log(proc)[-3000:]
    manifest, catalog = json.loads(docs["manifest.json"]), json.loads(docs["catalog.json"])
    assert docs["index.html"]
    for name in ("sequence_panel", "memorised_sequences"):
        node = manifest["nodes"][f"model.memlake.{name}"]
        assert "one row per" in node["description"].lower()
        documented = {c for c, v in node["columns"].items() if v["description"]}
        built = {c.lower() for c in catalog["nodes"][f"model.memlake.{name}"]["columns"]}
        assert built and built <= documented, built - documented


def test_sources_match_the_lake_contract():
    """The dbt sources state the contract of memlake/core/lake/contract.py: same tables, columns in
    order, types (`lake.duckdb_type`), partition keys and glob depth."""
    sources = yaml.safe_load((REPO_ROOT / "models/staging/__sources.yml").read_text())
    tables = {t["name"]: t for t in sources["sources"][0]["tables"]}
    assert set(tables) == set(lake.TABLES)
    for name, spec in lake.TABLES.items():
        declared = [(c["name"], c["data_type"]) for c in tables[name]["columns"]]
        assert declared == [(f.name, lake.duckdb_type(f.type)) for f in spec.schema], name
        assert tables[name]["meta"]["partition_by"] == list(spec.partition_by), name
        assert tables[name]["meta"].get("optional", []) == list(spec.optional), name
        depth = len(spec.partition_by)
        assert tables[name]["meta"]["lake_glob"].endswith(f"lake/{name}/" + "*/" * depth + "*.parquet")
    with pytest.raises(MemlakeError, match="no DuckDB type for Arrow type"):
        lake.duckdb_type(pa.timestamp("s"))


def _python_mart_writers() -> list[str]:
    """The modules that write Python marts: every module of the packages that calls `marts.write`
    or `marts.declare`, or imports from `memlake.core.marts` directly."""
    calls = re.compile(r"\bmarts\.(write|declare)\(|from memlake\.core\.marts import")
    out = []
    for package in ("analysis", "ingest", "memlake", "transforms"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if path == REPO_ROOT / "memlake/core/marts.py" or not calls.search(path.read_text()):
                continue
            module = path.relative_to(REPO_ROOT).with_suffix("").parts
            out.append(".".join(module[:-1] if module[-1] == "__init__" else module))
    return out


def test_python_marts_are_dbt_sources(tmp_path):
    """Every mart that Python code writes is declared where it is written (`marts.declare`, which
    `marts.write` requires) and as a `python_marts` dbt source stating its grain and key, and the
    source reads the folder `marts.write` fills."""
    writers = _python_mart_writers()
    assert {"analysis.profiles.fitting", "analysis.taxonomy", "analysis.mitigation.landscape"} <= set(writers)
    for module in writers:
        importlib.import_module(module)
    doc = yaml.safe_load((REPO_ROOT / "models/marts/__python_marts.yml").read_text())
    (source,) = [s for s in doc["sources"] if s["name"] == "python_marts"]
    tables = {t["name"]: t for t in source["tables"]}
    assert set(tables) == set(python_marts.PYTHON_MARTS)
    for name, table in tables.items():
        description = " ".join(table["description"].split())
        assert description.startswith("One row per"), name
        assert re.search(r"Key: \w+(, \w+)*\.", description), name
    dbt_models = {p.stem for p in (REPO_ROOT / "models").rglob("*.sql")}
    assert not set(tables) & dbt_models  # a dbt mart of the same name would share the path
    location = source["config"]["meta"]["external_location"]
    assert "/marts/{name}/*.parquet'" in location
    with pytest.raises(ValueError, match="mart 'undeclared' is not declared"):
        python_marts.write(Warehouse.at(tmp_path), "undeclared", "k", pl.DataFrame({"a": [1]}))
    assert not (tmp_path / "marts" / "undeclared").exists()


# --------------------------------------------------------------------------- bad input


def test_missing_manifest_and_missing_column_fail_the_build(runs):
    proc, built = runs["bad_lake"]
    log = _log(proc)
    assert proc.returncode != 0
    assert "FAIL" in log and "lake_partitions_have_manifests_lake_token_stats" in log
    assert "model=suite-b/step=20/shard=0: partition has data but no _manifest.json" in log
    assert "lake_files_have_contract_columns_lake_extraction" in log
    assert "missing column 'match_fraction' of the lake contract for extraction" in log
    # nothing downstream of a failing source was rebuilt: the marts are the last good ones
    assert "SKIP" in log
    assert built["sequence_panel"].equals(runs["full"][1]["sequence_panel"])


def test_without_tests_only_complete_partitions_are_read(runs):
    proc, docs = runs["docs"]
    assert proc.returncode == 0, _log(proc)[-3000:]
    assert "leaving out 1 without a _manifest.json" in _log(proc)
    compiled = json.loads(docs["manifest.json"])["nodes"]["model.memlake.stg_lake__token_stats"][
        "compiled_code"
    ]
    orphan = "token_stats/model=suite-b/step=20/shard=0/part-0.parquet"
    assert "token_stats/model=suite-b/step=20/shard=1/part-0.parquet" in compiled
    assert orphan not in compiled


def test_unbalanced_panel_fails_before_the_mart_is_written(runs):
    proc, built = runs["unbalanced"]
    log = _log(proc)
    assert proc.returncode != 0
    assert "balanced_panel_stg_lake__token_stats" in log
    assert "model suite-a: instance_id 1 has 2 of the 3 steps" in log
    assert built["sequence_panel"].equals(runs["full"][1]["sequence_panel"])


def test_sequence_perplexities_match_the_python_definition(runs):
    from ingest.perplexity import window_perplexities

    wh = runs["wh"]
    target = wh.root / "ppl-target"
    # a sample of 4 + 5 tokens inside rows of 16: the windows must stop at the sample's end
    ppl_vars = "{perplexity_prompt_len: 4, perplexity_continuation_len: 5}"
    proc = dbt(wh, target, "run", "--select", "sequence_perplexities", "--vars", ppl_vars)
    assert proc.returncode == 0, _log(proc)[-3000:]
    rows = pq.read_table(wh.marts / "sequence_perplexities.parquet").to_pylist()
    assert rows and {(r["prompt_len"], r["continuation_len"]) for r in rows} == {(4, 5)}
    written = runs["written"]
    for row in rows:
        sup = written[(row["model"], row["step"], row["instance_id"])][0][None, :]
        assert sup.shape[1] > 4 - 1 + 5
        own = window_perplexities(sup, 4, 5)
        shared = window_perplexities(sup, 4, 5, shared_denominator=True)
        assert row["prompt_perplexity"] == pytest.approx(own.prompt[0], rel=1e-6)
        assert row["continuation_perplexity"] == pytest.approx(own.continuation[0], rel=1e-6)
        assert row["sequence_perplexity"] == pytest.approx(own.sequence[0], rel=1e-6)
        assert row["row_perplexity"] == pytest.approx(own.row[0], rel=1e-6)
        assert row["sequence_perplexity"] != pytest.approx(row["row_perplexity"], rel=1e-6)
        assert row["prompt_perplexity_shared"] == pytest.approx(shared.prompt[0], rel=1e-6)
        assert row["continuation_perplexity_shared"] == pytest.approx(shared.continuation[0], rel=1e-6)
