"""The `memlake` command: query formats, read-only enforcement, one-line errors, dbt build."""

import csv
import io
import os

import pytest

from tests.helpers import memlake


def run(args, wh):
    return memlake(args, env={**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)})


def test_query_table_and_csv(tiny_suite):
    out = run(["query", "select count(*) as n from instances"], tiny_suite)
    assert out.returncode == 0, out.stderr
    assert "1408" in out.stdout
    out = run(
        [
            "query",
            "--format",
            "csv",
            "select model, count(*) as n from checkpoints group by model order by model",
        ],
        tiny_suite,
    )
    rows = list(csv.reader(io.StringIO(out.stdout)))
    assert rows == [["model", "n"], ["suite-s", "6"], ["suite-xs", "6"]]


def test_query_sees_partition_keys_with_types(tiny_suite):
    out = run(
        ["query", "-f", "csv", "select typeof(step), typeof(model) from checkpoints limit 1"], tiny_suite
    )
    assert out.stdout.splitlines()[1] == "BIGINT,VARCHAR"


@pytest.mark.parametrize(
    "sql, message",
    [
        ("create table x as select 1", "read-only: CREATE"),
        ("copy instances to '/tmp/x.csv'", "read-only: COPY"),
        ("select * from nope", "Table with name nope does not exist"),
        ("selec 1", "SQL does not parse"),
    ],
)
def test_query_errors_are_one_line(tiny_suite, sql, message):
    out = run(["query", sql], tiny_suite)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_config_override_errors(tmp_path):
    from memlake.core.paths import Warehouse

    wh = Warehouse.at(tmp_path)
    out = run(["suite", "corpus", "--config", "tiny", "--set", "corpus.nope=3"], wh)
    assert out.returncode == 2 and "no config key 'nope'" in out.stderr
    out = run(["suite", "corpus", "--config", "huge"], wh)
    assert out.returncode == 2 and "unknown config preset 'huge'" in out.stderr
    assert not (tmp_path / "lake").exists()


def test_help_everywhere(tiny_suite):
    for args in (
        ["--help"],
        ["suite", "--help"],
        ["suite", "train", "--help"],
        ["query", "--help"],
        ["build", "--help"],
        ["demo", "--help"],
    ):
        out = run(args, tiny_suite)
        assert out.returncode == 0 and "Usage" in out.stdout, args


def test_dbt_build_over_the_lake(tiny_suite):
    out = run(["build"], tiny_suite)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "ERROR=0" in out.stdout
    import duckdb

    con = duckdb.connect(str(tiny_suite.catalog), read_only=True)
    n = con.execute("select count(*) from stg_lake__instances where never_treated").fetchone()[0]
    con.close()
    assert n == 128
