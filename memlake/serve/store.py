"""The explorer's read-only view of the warehouse: one sandboxed DuckDB connection whose views are
the lake tables, marts and the analyses' derived views, a cursor per request, and a rebuild when
the warehouse changes under it.

Two fences keep the SQL console read-only, each enough alone for what it covers:
- statements: exactly one, and only SELECT (or EXPLAIN); COPY, ATTACH, INSTALL, SET, PRAGMA and
  every write are refused before DuckDB runs anything;
- files: DuckDB's own sandbox (`enable_external_access = false` with the warehouse as the one
  allowed directory, then `lock_configuration`), so a table function inside a SELECT
  (`read_csv('/etc/passwd')`, `glob`) cannot read outside the warehouse, and no statement can
  lift the fence again.

The connection never opens the DuckDB catalog file that `dbt build` holds; it reads Parquet. A
build rewrites mart files in place, so a read may meet a file half-written: such a read is
retried on a fresh connection for a short while before it is reported.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping

import duckdb
import polars as pl

from memlake.core import query
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

# a read that fails because a file changed under it is retried for this long (a dbt build
# rewrites one mart in well under a second)
RETRY_SECONDS = 5.0
# how often (at most) the warehouse's folders are checked for new partitions and marts
CHECK_EVERY = 1.0
_TRANSIENT = (duckdb.IOException, duckdb.InvalidInputException, duckdb.HTTPException)


class Refused(MemlakeError):
    """A console statement the explorer will not run (the message says why)."""


class Store:
    """A warehouse opened for reading by many request threads at once."""

    def __init__(self, wh: Warehouse, views: Mapping[str, str], threads: int | None = None):
        self.wh = wh
        self.views = dict(views)
        self.threads = threads
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._tables: set[str] = set()
        self._signature: tuple = ()
        self._checked = 0.0
        self._refresh(force=True)

    # -- connection -------------------------------------------------------------------------

    def _signature_now(self) -> tuple:
        """Modification times of the warehouse's folders (not files): a new partition, a new mart
        file or a replaced one changes a folder's time."""
        out = []
        for top in (self.wh.lake, self.wh.marts):
            if not top.exists():
                continue
            for dirpath, dirnames, _ in os.walk(top):
                if os.path.basename(dirpath).startswith("_tmp"):
                    dirnames[:] = []
                    continue
                out.append((dirpath, os.stat(dirpath).st_mtime_ns))
        return tuple(out)

    def _open(self) -> duckdb.DuckDBPyConnection:
        con = query.connect(self.wh, threads=self.threads, views=self.views)
        root = str(self.wh.root).replace("'", "''")
        # Parquet footers are read once, not per request: a lake view reads its files' schemas at
        # every bind (union_by_name), which for a Pythia-sized token_stats is most of a lookup.
        # The cache checks each file's modification time, so a rewritten mart is read afresh.
        con.execute("set global parquet_metadata_cache = true")
        con.execute("set autoinstall_known_extensions = false")
        con.execute("set autoload_known_extensions = false")
        con.execute(f"set allowed_directories = ['{root}/']")
        con.execute("set enable_external_access = false")
        con.execute("set lock_configuration = true")
        return con

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < CHECK_EVERY:
            return
        with self._lock:
            self._checked = now
            sig = self._signature_now()
            if force or sig != self._signature or self._con is None:
                try:
                    con = self._open()
                except (*_TRANSIENT, duckdb.CatalogException):
                    if self._con is None:
                        raise
                    return  # a file mid-rewrite: keep the current views; the next check retries
                # the old connection is not closed: requests still holding its cursors finish on it
                # the views a connection has are fixed until the next rebuild: listed once here
                self._con, self._signature, self._tables = con, sig, query.view_names(con)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        self._refresh()
        with self._lock:
            return self._con.cursor()

    def signature(self) -> tuple:
        """The warehouse state the current connection reads (a cache key for derived results)."""
        self._refresh()
        return self._signature

    def tables(self) -> set[str]:
        self._refresh()
        return self._tables

    # -- reads ------------------------------------------------------------------------------

    def _retrying(self, work):
        """`work(cursor)`, retried on a fresh connection while files are being rewritten."""
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                return work(self.cursor())
            except _TRANSIENT as e:
                # a file error (one being rewritten) is retried; a query's own invalid input is not
                if time.monotonic() > deadline or not _about_a_file(e):
                    raise
                time.sleep(0.1)
                self._refresh(force=True)
            except duckdb.CatalogException:
                # a view whose files vanished mid-build, or a mart that appeared since: rebuild once
                if time.monotonic() > deadline:
                    raise
                self._refresh(force=True)
                return work(self.cursor())

    def frame(self, sql: str, params: Mapping | None = None) -> pl.DataFrame:
        return self._retrying(lambda cur: query.frame(cur, sql, dict(params or {})))

    def rows(self, sql: str, params: Mapping | None = None) -> list[tuple]:
        return self._retrying(lambda cur: cur.execute(sql, dict(params or {}) or None).fetchall())

    def scalar(self, sql: str, params: Mapping | None = None):
        got = self.rows(sql, params)
        return got[0][0] if got else None

    # -- the console ------------------------------------------------------------------------

    def console(self, sql: str, limit: int) -> tuple[list[str], list[tuple], bool]:
        """One read-only statement: (columns, at most `limit` rows, whether more were cut)."""
        columns, rel = self.console_cursor(sql)
        got = rel.fetchmany(limit + 1)
        return columns, got[:limit], len(got) > limit

    def console_cursor(self, sql: str) -> tuple[list[str], duckdb.DuckDBPyConnection]:
        """One read-only statement, executed: its columns and the cursor to fetch its rows from
        (in batches, so a large result never sits in memory whole)."""
        statement = checked_statement(self.cursor(), sql)

        def work(cur):
            rel = cur.execute(statement)
            return [d[0] for d in rel.description], rel

        try:
            return self._retrying(work)
        except duckdb.PermissionException as e:
            raise Refused(
                f"reads outside the warehouse are refused ({_first_line(e).split(' - ')[0]})"
            ) from None
        except duckdb.Error as e:
            raise MemlakeError(_first_line(e)) from None


def checked_statement(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """The one read-only statement in `sql`, or `Refused` saying what was wrong."""
    return query.read_only_statements(con, sql, error=Refused, single=True)[0].query


def _about_a_file(e: Exception) -> bool:
    return isinstance(e, duckdb.IOException | duckdb.HTTPException) or ".parquet" in str(e)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
