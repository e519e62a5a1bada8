"""Read-only SQL over the warehouse: every lake table and every mart is a view by name.

Lake tables are read from their *complete* partitions only (explicit file lists, so a stray
directory without a manifest is an error, never silently included). Marts are the Parquet
files dbt writes with `materialized='external'`; reading them never takes the DuckDB lock that
`dbt build` holds on the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import duckdb
import polars as pl

from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_DUCK_TYPES = {
    "string": "VARCHAR",
    "int64": "BIGINT",
    "int32": "INTEGER",
    "float": "FLOAT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
}


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def lake_view_sql(wh: Warehouse, table: str) -> str | None:
    s = lake.spec(table)
    files = lake.data_files(wh, table)
    if not files:
        return None
    if not s.partition_by:
        return f"select * from read_parquet({_sql_list(files)}, union_by_name=true)"
    types = ", ".join(f"'{k}': '{_DUCK_TYPES[str(s.schema.field(k).type)]}'" for k in s.partition_by)
    return (
        f"select * from read_parquet({_sql_list(files)}, hive_partitioning=true, "
        f"union_by_name=true, hive_types={{{types}}})"
    )


def mart_paths(wh: Warehouse) -> dict[str, str]:
    """Mart name -> glob, for single-file and partitioned external marts."""
    out: dict[str, str] = {}
    if not wh.marts.exists():
        return out
    for p in sorted(wh.marts.iterdir()):
        if p.suffix == ".parquet" and p.is_file():
            out[p.stem] = str(p)
        elif p.is_dir() and any(p.rglob("*.parquet")):
            out[p.name.removesuffix(".parquet")] = str(p / "**" / "*.parquet")
    return out


def connect(
    wh: Warehouse, threads: int | None = None, views: Mapping[str, str] | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with a view per lake table and mart, plus the caller's derived
    `views` (name -> SELECT) whose inputs exist."""
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"set threads = {int(threads)}")
    for table in lake.TABLES:
        sql = lake_view_sql(wh, table)
        if sql:
            con.execute(f"create view {table} as {_with_optional(con, table, sql)}")
    for name, glob in mart_paths(wh).items():
        if name in lake.TABLES:
            continue
        sql = f"select * from read_parquet('{glob}', union_by_name=true)"
        con.execute(f"create view {name} as {_with_defaults(con, name, sql)}")
    _create_derived_views(con, views or {})
    return con


def _with_optional(con: duckdb.DuckDBPyConnection, table: str, sql: str) -> str:
    """`sql` plus the table's optional contract columns that no file has yet, as typed nulls (as
    dbt's `lake_source()` reads them), so queries and views may name them on older partitions."""
    s = lake.spec(table)
    if not s.optional:
        return sql
    present = {name for (name, *_) in con.execute(f"describe {sql}").fetchall()}
    absent = [c for c in s.optional if c not in present]
    if not absent:
        return sql
    nulls = ", ".join(f"cast(null as {_duck_type(s.schema.field(c).type)}) as {c}" for c in absent)
    return f"select *, {nulls} from ({sql})"


def _with_defaults(con: duckdb.DuckDBPyConnection, mart: str, sql: str) -> str:
    """`sql` with the mart's later-added columns (`marts.COLUMN_DEFAULTS`) filled in older files."""
    from memlake.core.marts import COLUMN_DEFAULTS

    defaults = COLUMN_DEFAULTS.get(mart)
    if not defaults:
        return sql
    present = {name for (name, *_) in con.execute(f"describe {sql}").fetchall()}
    replace = [f"coalesce({c}, {v}) as {c}" for c, v in defaults.items() if c in present]
    added = [f"{v} as {c}" for c, v in defaults.items() if c not in present]
    star = f"* replace ({', '.join(replace)})" if replace else "*"
    return f"select {', '.join([star, *added])} from ({sql})"


def _duck_type(t) -> str:
    import pyarrow as pa

    if pa.types.is_list(t):
        return _duck_type(t.value_type) + "[]"
    return _DUCK_TYPES.get(str(t), "VARCHAR")


def frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> pl.DataFrame:
    """Run one query and return a polars frame (through Arrow, no pandas)."""
    return pl.from_arrow(con.sql(sql, params=params or None).to_arrow_table())


def view_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The tables, marts and derived views a connection sees (by name)."""
    return {v for (v,) in con.execute("select view_name from duckdb_views() where not internal").fetchall()}


def read(
    wh: Warehouse, sql: str, params: dict | None = None, views: Mapping[str, str] | None = None
) -> pl.DataFrame:
    """One query over a fresh read-only connection, as a polars frame."""
    con = connect(wh, views=views)
    try:
        return frame(con, sql, params)
    finally:
        con.close()


def _create_derived_views(con: duckdb.DuckDBPyConnection, views: Mapping[str, str]) -> None:
    """The derived views whose inputs exist; passes until no view can be added."""
    pending = dict(views)
    while pending:
        added = []
        for name, sql in pending.items():
            try:
                con.execute(f"create view {name} as {sql}")
                added.append(name)
            except duckdb.CatalogException:  # an input mart/view is not there (yet)
                pass
        if not added:
            return
        for name in added:
            del pending[name]


def read_only_statements(
    con: duckdb.DuckDBPyConnection, sql: str, error=MemlakeError, single: bool = False
) -> list:
    """The statements of `sql`, each SELECT or EXPLAIN (and only one if `single`), or `error`
    saying what is wrong."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise error(f"SQL does not parse: {str(e).splitlines()[0]}") from None
    if not statements:
        raise error("no SQL statement given")
    if single and len(statements) > 1:
        raise error(f"one statement at a time: {len(statements)} were given")
    for st in statements:
        if st.type not in _ALLOWED:
            raise error(f"query is read-only: {st.type.name} statements are not allowed")
    return statements


def run(wh: Warehouse, sql: str, views: Mapping[str, str] | None = None) -> tuple[list[str], list[tuple]]:
    """Run one or more read-only statements; return the last one's columns and rows."""
    con = connect(wh, views=views)
    statements = read_only_statements(con, sql)
    try:
        for st in statements[:-1]:
            con.execute(st.query)
        rel = con.execute(statements[-1].query)
        columns = [d[0] for d in rel.description]
        return columns, rel.fetchall()
    except duckdb.Error as e:
        known = sorted(view_names(con))
        hint = (
            f" (tables: {', '.join(known) or 'none yet: run `memlake demo`'})"
            if "does not exist" in str(e)
            else ""
        )
        raise MemlakeError(f"{str(e).splitlines()[0]}{hint}") from None
    finally:
        con.close()
