"""The taxonomy search as units: a shard's file and key, its skipped re-run, the command on an
executor."""

import shutil
from dataclasses import replace

import polars as pl

from analysis.taxonomy import data, plan_search, search
from analysis.taxonomy.keys import keyed
from memlake.core import query
from memlake.core.paths import Warehouse
from memlake.core.unit import run_unit
from tests.helpers import memlake

SEARCH_SUBSET = ("huffman_coding_length", "sequence_duplicates", "avg_frequency")


def _copy_marts(src: Warehouse, root) -> Warehouse:
    """A warehouse with the fixture's marts and no search shards yet."""
    wh = Warehouse.at(root)
    shutil.copytree(src.marts, wh.marts, ignore=shutil.ignore_patterns("taxonomy_search"))
    return wh


def test_a_search_shard_is_a_unit_whose_rerun_is_skipped(warehouse, tmp_path):
    wh = _copy_marts(warehouse[0], tmp_path / "wh")
    (shard,) = plan_search(wh, [("suite-s", 2000)], 2, 6, None, n_subsets=0, features=SEARCH_SUBSET)
    # the file key run_search has always written: the pair's options, then the range
    assert shard.path.name == "suite-s__2000__train__per_window__published__0002-0006.parquet"
    first = run_unit(shard)
    assert not first["skipped"] and first["rows"] == 4
    con = query.connect(wh)
    try:
        rows = data.rows(con, model="suite-s", step=2000)
    finally:
        con.close()
    keys = {
        "model": "suite-s",
        "step": 2000,
        "split": "train",
        "perplexity": "per_window",
        "protocol": "published",
    }
    want = keyed(search(rows, 2, 6, n_subsets=0, features=SEARCH_SUBSET), **keys)
    written = pl.read_parquet(shard.path)
    assert written.schema == want.schema and written.equals(want)
    stamp = shard.path.stat().st_mtime_ns
    assert run_unit(shard)["skipped"] and shard.path.stat().st_mtime_ns == stamp
    assert not replace(shard, force=True).run()["skipped"] and shard.path.stat().st_mtime_ns != stamp


def test_search_command_runs_its_shards_on_an_executor(warehouse, tmp_path):
    wh = _copy_marts(warehouse[0], tmp_path / "workers")
    args = [
        "taxonomy",
        "search",
        "--end",
        "6",
        "--shard-size",
        "4",
        "-c",
        "tiny",
        "-s",
        "taxonomy.n_subsets=0",
    ]
    out = memlake([*args, "--executor", "local", "--exec-opt", "workers=2", "-w", wh.root])
    assert out.returncode == 0, out.stderr
    files = sorted(p.name for p in (wh.marts / "taxonomy_search").glob("*.parquet"))
    assert len(files) == 4 * 2 and {f[-17:] for f in files} == {"0000-0004.parquet", "0004-0006.parquet"}
    here = _copy_marts(warehouse[0], tmp_path / "here")
    assert memlake([*args, "-w", here.root]).returncode == 0
    for f in files:
        assert pl.read_parquet(wh.marts / "taxonomy_search" / f).equals(
            pl.read_parquet(here.marts / "taxonomy_search" / f)
        )
    bad = memlake([*args, "--exec-opt", "bogus=1", "-w", wh.root])
    assert bad.returncode == 2 and "executor 'local' takes no option 'bogus'" in bad.stderr
