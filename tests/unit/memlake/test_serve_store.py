"""The explorer's store on a warehouse of a few marts: it sees new marts without a restart, rides
out a mart rewritten in place, and its file fence holds however a statement is phrased."""

import threading
import time

import polars as pl
import pytest

from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.serve.store import RETRY_SECONDS, Refused, Store


@pytest.fixture
def wh(tmp_path):
    wh = Warehouse.at(tmp_path / "wh")
    wh.marts.mkdir(parents=True)
    pl.DataFrame({"x": range(100)}).write_parquet(wh.marts / "numbers.parquet")
    (tmp_path / "secret.csv").write_text("a\n1\n")
    return wh


def test_sees_a_new_mart_without_a_restart(wh, monkeypatch):
    monkeypatch.setattr("memlake.serve.store.CHECK_EVERY", 0.0)
    store = Store(wh, {})
    assert store.tables() == {"numbers"}
    pl.DataFrame({"y": [1, 2]}).write_parquet(wh.marts / "later.parquet")
    assert store.scalar("select sum(y) from later") == 3


def test_rides_out_a_mart_rewritten_in_place(wh):
    store = Store(wh, {})
    path = wh.marts / "numbers.parquet"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # a writer half-way through the file

    def finish():
        time.sleep(0.5)
        path.write_bytes(good)

    writer = threading.Thread(target=finish)
    writer.start()
    assert store.scalar("select count(*) from numbers") == 100
    writer.join()


def test_a_mart_that_stays_broken_is_reported(wh, monkeypatch):
    monkeypatch.setattr("memlake.serve.store.RETRY_SECONDS", 0.3)
    store = Store(wh, {})
    (wh.marts / "numbers.parquet").write_bytes(b"not parquet")
    with pytest.raises(Exception, match="numbers.parquet"):
        store.scalar("select count(*) from numbers")


def test_console_fence(wh):
    store = Store(wh, {})
    assert store.console("select count(*) from numbers", 10) == (["count_star()"], [(100,)], False)
    cols, rows, more = store.console("select x from numbers order by x", 10)
    assert rows == [(i,) for i in range(10)] and more
    inside = wh.marts / "numbers.parquet"
    assert store.console(f"select count(*) from '{inside}'", 10)[1] == [(100,)]
    secret = wh.root.parent / "secret.csv"
    for q in (
        f"select * from read_csv('{secret}')",
        f"select * from '{secret}'",
        f"select * from read_csv('{wh.root}/../secret.csv')",
        "select * from glob('/etc/*')",
    ):
        with pytest.raises(Refused, match="reads outside the warehouse are refused"):
            store.console(q, 10)
    with pytest.raises(MemlakeError, match="Conversion Error"):
        store.console("select 'a'::int", 10)
    # a query's own invalid input fails at once (only file errors are waited out)
    started = time.monotonic()
    with pytest.raises(MemlakeError, match="Invalid Input Error"):
        store.console("select error('boom')", 10)
    assert time.monotonic() - started < RETRY_SECONDS
