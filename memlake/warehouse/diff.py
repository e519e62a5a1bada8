"""Do two warehouses hold the same data? Every lake table and every mart as a multiset of rows.

The comparison behind `bench/warehouse_diff.py` (its docstring says what is compared and why):
`diff(a, b, rtol, atol, patterns)` gives one `Result` per table or mart.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.query import mart_paths

# Columns whose values legitimately differ between two runs of the same code on the same seed.
DEFAULT_EXCLUDE: dict[str, str] = {
    # wall-clock timings: mitigation_runs.seconds, mitigation_landscape.edit_seconds and
    # surface_seconds, and the `seconds` / `attribution_seconds` keys of mitigation_runs.stats
    "seconds": "wall-clock time",
    "*_seconds": "wall-clock time",
    "tokens_per_s": "throughput",
    "*_per_s": "throughput",
    # whether a neuron or second-order method reused attribution scores computed earlier in the same
    # process (mitigation_runs.stats): depends on which worker ran which run, not on the data
    "*_reused": "cache reuse within a process",
    # provenance: the lake keeps it in manifests, never as columns today; a column copying it differs
    # by design
    "written_at": "timestamp",
    "code_version": "git hash",
}

ROOT_TOKEN = "<warehouse>"
_FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}
_SHOW = 40  # characters of one value in an example row


class BadInput(Exception):
    """A path that is not a warehouse, or a table that cannot be read: exit 2."""


# --------------------------------------------------------------------------- reading


def warehouse(path: str) -> Warehouse:
    root = Path(path)
    if not root.is_dir() or not ((root / "lake").is_dir() or (root / "marts").is_dir()):
        raise BadInput(f"not a warehouse: {path} (no lake/ or marts/ folder)")
    return Warehouse.at(root)


def roots(path: str) -> list[str]:
    """The root as the data may spell it: as given (made absolute) and resolved; longest first."""
    return sorted({str(Path(path).absolute()), str(Path(path).resolve())}, key=len, reverse=True)


def sources(wh: Warehouse) -> dict[str, Callable[[duckdb.DuckDBPyConnection], pa.Table]]:
    """`lake/<table>` and `marts/<name>` -> a reader of its rows, for what this warehouse holds."""
    out: dict[str, Callable[[duckdb.DuckDBPyConnection], pa.Table]] = {}
    for table in lake.TABLES:
        if lake.partitions(wh, table):
            out[f"lake/{table}"] = lambda con, t=table: lake.read_table(wh, t)
    for name, glob in mart_paths(wh).items():
        quoted = glob.replace("'", "''")
        out[f"marts/{name}"] = lambda con, g=quoted: con.sql(
            f"select * from read_parquet('{g}', union_by_name=true)"
        ).to_arrow_table()
    return out


# --------------------------------------------------------------------------- normalising


def excluded(patterns: Iterable[str], source: str, column: str) -> bool:
    qualified = f"{source.split('/', 1)[1]}.{column}"
    return any(fnmatch.fnmatchcase(qualified if "." in p else column, p) for p in patterns)


def _strip_keys(value, drop: Callable[[str], bool], dropped: set[str]):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if drop(k):
                dropped.add(k)
            else:
                out[k] = _strip_keys(v, drop, dropped)
        return out
    if isinstance(value, list):
        return [_strip_keys(v, drop, dropped) for v in value]
    return value


def _json_objects(col: pa.ChunkedArray) -> list | None:
    """The parsed values of a string column whose every non-null value is a JSON object, else None."""
    values = col.drop_null()
    if not len(values) or not pc.all(pc.starts_with(values, "{")).as_py():
        return None
    try:
        parsed = [None if v is None else json.loads(v) for v in col.to_pylist()]
    except ValueError:
        return None
    return parsed if all(v is None or isinstance(v, dict) for v in parsed) else None


def normalise(t: pa.Table, source: str, roots: list[str], patterns: list[str]) -> tuple[pa.Table, list[str]]:
    """Drop excluded columns and JSON keys, write paths under the warehouse root relative to it.
    Returns the table and what was left out (for the report line)."""
    left_out = [c for c in t.column_names if excluded(patterns, source, c)]
    t = t.drop_columns(left_out)
    for i, name in enumerate(t.column_names):
        col = t.column(i)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        parsed = _json_objects(col)
        if parsed is not None:
            dropped: set[str] = set()
            stripped = [_strip_keys(v, lambda k: excluded(patterns, source, k), dropped) for v in parsed]
            if dropped:
                texts = [None if v is None else json.dumps(v, sort_keys=True) for v in stripped]
                col = pa.chunked_array([pa.array(texts, col.type)])
                left_out += [f"{name}.{k}" for k in sorted(dropped)]
        for root in roots:
            if pc.any(pc.match_substring(col, root + "/")).as_py():
                col = pc.replace_substring(col, root + "/", ROOT_TOKEN + "/")
        t = t.set_column(i, name, col)
    return t, left_out


# --------------------------------------------------------------------------- comparing


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def is_float(duck_type: str) -> bool:
    """FLOAT / DOUBLE, or a list or array of them (DOUBLE[], FLOAT[3], DOUBLE[][])."""
    return duck_type.split("[", 1)[0] in _FLOAT_TYPES


def close(a: pa.Array, b: pa.Array, rtol: float, atol: float) -> np.ndarray:
    """Per row: a and b match (floats within tolerance, lists element-wise, null = null, NaN = NaN)."""
    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    b = b.combine_chunks() if isinstance(b, pa.ChunkedArray) else b
    na = a.is_null().to_numpy(zero_copy_only=False)
    nb = b.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_list(a.type) or pa.types.is_large_list(a.type) or pa.types.is_fixed_size_list(a.type):
        la = pc.list_value_length(a).fill_null(-1).to_numpy(zero_copy_only=False)
        lb = pc.list_value_length(b).fill_null(-1).to_numpy(zero_copy_only=False)
        ok = (na & nb) | (~na & ~nb & (la == lb))
        rows = np.flatnonzero(ok & ~na)
        if rows.size:
            sa, sb = a.take(pa.array(rows)), b.take(pa.array(rows))
            fine = close(pc.list_flatten(sa), pc.list_flatten(sb), rtol, atol)
            parents = pc.list_parent_indices(sa).to_numpy(zero_copy_only=False)
            ok[rows[np.unique(parents[~fine])]] = False
        return ok
    x = a.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
    y = b.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(invalid="ignore"):
        ok = (x == y) | (np.isnan(x) & np.isnan(y))
        ok |= np.abs(x - y) <= atol + rtol * np.maximum(np.abs(x), np.abs(y))
    return np.where(na | nb, na & nb, ok)


def _show(value) -> str:
    if isinstance(value, list) and len(value) > 6:
        text = "[" + ", ".join(map(repr, value[:6])) + f", ... ({len(value)} items)]"
    else:
        text = repr(value)
    return text if len(text) <= _SHOW else text[: _SHOW - 3] + "..."


@dataclass
class Result:
    name: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.problems

    def line(self) -> str:
        text = "same" if self.same else "; ".join(self.problems)
        return f"{self.name}: {text}" + (f" ({'; '.join(self.notes)})" if self.notes else "")


def compare(
    con: duckdb.DuckDBPyConnection, name: str, a: pa.Table, b: pa.Table, rtol: float, atol: float, keys=()
) -> Result:
    res = Result(name)
    con.register("side_a", a)
    con.register("side_b", b)
    try:
        ta, tb = (_types(con.sql(f"select * from {side}")) for side in ("side_a", "side_b"))
        only_a, only_b = sorted(set(ta) - set(tb)), sorted(set(tb) - set(ta))
        retyped = sorted(c for c in set(ta) & set(tb) if ta[c] != tb[c])
        if only_a:
            res.problems.append(f"column(s) only in A: {', '.join(only_a)}")
        if only_b:
            res.problems.append(f"column(s) only in B: {', '.join(only_b)}")
        if retyped:
            res.problems.append("type differs: " + ", ".join(f"{c} (A {ta[c]}, B {tb[c]})" for c in retyped))
        if a.num_rows != b.num_rows:
            res.problems.append(f"row count A {a.num_rows}, B {b.num_rows}")
        cols = [c for c in ta if c in tb and ta[c] == tb[c]]  # in A's order: keys usually come first
        if not cols:
            return res
        _compare_rows(con, res, cols, ta, rtol, atol, keys)
        return res
    finally:
        for view in ("side_a", "side_b", "only_a", "only_b"):
            con.unregister(view)
        for table in ("da", "db"):
            con.execute(f"drop table if exists {table}")


def _types(rel: duckdb.DuckDBPyRelation) -> dict[str, str]:
    return dict(zip(rel.columns, map(str, rel.types)))


def _compare_rows(con, res: Result, cols: list[str], types: dict[str, str], rtol, atol, keys) -> None:
    """Rows of A not in B and of B not in A (EXCEPT ALL), paired to name the columns that differ."""
    floats = [c for c in cols if is_float(types[c])]
    groups = [c for c in cols if c not in floats]
    sel = ", ".join(map(_q, cols))
    window = "row_number() over ("
    window += f"partition by {', '.join(map(_q, groups))} " if groups else ""
    window += f"order by {', '.join(map(_q, floats))}" if floats else ""
    window += ") as __wd_rn"
    for side, first, second in (("da", "side_a", "side_b"), ("db", "side_b", "side_a")):
        con.execute(
            f"create temp table {side} as select {sel}, {window} from "
            f"(select {sel} from {first} except all select {sel} from {second})"
        )
    n_a, n_b = (con.execute(f"select count(*) from {s}").fetchall()[0][0] for s in ("da", "db"))
    if not n_a and not n_b:
        return
    on = " and ".join(f"da.{_q(c)} is not distinct from db.{_q(c)}" for c in [*groups, "__wd_rn"])
    joined = con.sql(
        "select da.__wd_rn is not null as in_a, db.__wd_rn is not null as in_b, da as ra, db as rb "
        f"from da full outer join db on {on} order by ra, rb"
    ).to_arrow_table()
    in_a = joined["in_a"].to_numpy()
    in_b = joined["in_b"].to_numpy()
    ra, rb = joined["ra"].combine_chunks(), joined["rb"].combine_chunks()
    paired = in_a & in_b
    bad = {c: ~close(pc.struct_field(ra, c), pc.struct_field(rb, c), rtol, atol) & paired for c in floats}
    off = np.logical_or.reduce(list(bad.values())) if floats else np.zeros(len(in_a), bool)
    diff_a = int((in_a & ~in_b).sum() + off.sum())
    diff_b = int((in_b & ~in_a).sum() + off.sum())
    if not diff_a and not diff_b:
        if rtol or atol:
            res.notes.append(f"{int(paired.sum())} row(s) equal within rtol={rtol:g}, atol={atol:g}")
        return
    columns = {c: int(m.sum()) for c, m in bad.items() if m.any()}
    unpaired_a = pa.Table.from_struct_array(ra.filter(pa.array(in_a & ~in_b))).select(cols)
    unpaired_b = pa.Table.from_struct_array(rb.filter(pa.array(in_b & ~in_a))).select(cols)
    if unpaired_a.num_rows and unpaired_b.num_rows:
        exact = groups if (rtol or atol) else cols
        for c in _columns_differing(con, unpaired_a, unpaired_b, exact):
            columns.setdefault(c, None)
    res.problems.append(f"{diff_a} row(s) of A not in B, {diff_b} of B not in A")
    if columns:
        res.problems.append(
            "differing column(s): "
            + ", ".join(c if n is None else f"{c} ({n} row(s) off)" for c, n in sorted(columns.items()))
        )
    if off.any():
        i = int(np.flatnonzero(off)[0])
        row_a, row_b = ra[i].as_py(), rb[i].as_py()
        res.problems.append("e.g. " + _example(row_a, row_b, [c for c in floats if bad[c][i]], keys))
    elif unpaired_a.num_rows:
        row_a = unpaired_a.slice(0, 1).to_pylist()[0]
        row_b = _nearest(row_a, unpaired_b)
        if row_b is None:
            res.problems.append(f"e.g. only in A: {_context(row_a, [], keys)}")
        else:
            differing = [c for c in cols if row_a[c] != row_b[c]]
            res.problems.append("e.g. " + _example(row_a, row_b, differing, keys))
    else:
        res.problems.append(f"e.g. only in B: {_context(unpaired_b.slice(0, 1).to_pylist()[0], [], keys)}")


def _columns_differing(con, ua: pa.Table, ub: pa.Table, cols: list[str]) -> list[str]:
    """Columns whose values (as multisets) differ between the unpaired rows of A and of B."""
    con.register("only_a", ua)
    con.register("only_b", ub)
    out = []
    for c in cols:
        q = _q(c)
        sql = f"select exists (select {q} from only_a except all select {q} from only_b) or exists "
        sql += f"(select {q} from only_b except all select {q} from only_a)"
        if con.execute(sql).fetchall()[0][0]:
            out.append(c)
    return out


def _nearest(row: dict, table: pa.Table, limit: int = 10_000) -> dict | None:
    """The row of `table` (its first `limit` rows) equal to `row` in the most columns."""
    best, score = None, -1
    for other in table.slice(0, limit).to_pylist():
        n = sum(other[c] == v for c, v in row.items())
        if n > score:
            best, score = other, n
    return best


def _context(row: dict, differing: list[str], keys) -> str:
    """A few identifying values of a row: the lake keys, else its first short scalar columns."""
    named = [c for c in keys if c in row and c not in differing] or [
        c
        for c, v in row.items()
        if c not in differing and c != "__wd_rn" and not isinstance(v, list | dict) and len(_show(v)) < 24
    ][:6]
    return "{" + ", ".join(f"{c}={_show(row[c])}" for c in named) + "}"


def _example(row_a: dict, row_b: dict, differing: list[str], keys) -> str:
    values = ", ".join(f"{c}: A {_show(row_a[c])} B {_show(row_b[c])}" for c in differing[:4])
    return f"{_context(row_a, differing, keys)} {values}"


# --------------------------------------------------------------------------- main


def diff(a: str, b: str, rtol: float, atol: float, patterns: list[str]) -> list[Result]:
    """Compare warehouse roots `a` and `b` (paths as given), one result per table or mart."""
    wa, wb = warehouse(a), warehouse(b)
    try:
        src_a, src_b = sources(wa), sources(wb)
    except MemlakeError as e:
        raise BadInput(str(e).splitlines()[0]) from None
    con = duckdb.connect()
    results = []
    for name in sorted(set(src_a) | set(src_b), key=lambda n: (not n.startswith("lake/"), n)):
        if name not in src_b:
            results.append(Result(name, ["missing in B"]))
            continue
        if name not in src_a:
            results.append(Result(name, ["missing in A"]))
            continue
        try:
            ta, left_out = normalise(src_a[name](con), name, roots(a), patterns)
            tb, _ = normalise(src_b[name](con), name, roots(b), patterns)
        except (MemlakeError, duckdb.Error, pa.ArrowException, OSError) as e:
            raise BadInput(f"{name}: {str(e).splitlines()[0]}") from None
        keys = lake.spec(name[5:]).keys if name.startswith("lake/") else ()
        res = compare(con, name, ta, tb, rtol, atol, keys)
        if left_out:
            res.notes.insert(0, "left out: " + ", ".join(left_out))
        results.append(res)
    con.close()
    return results


def describe(patterns: list[str]) -> str:
    """The patterns, the default ones grouped by their reason."""
    reasons: dict[str, list[str]] = {}
    for p in patterns:
        reasons.setdefault(DEFAULT_EXCLUDE.get(p, "asked for"), []).append(p)
    return "; ".join(f"{', '.join(ps)} ({why})" for why, ps in reasons.items()) or "nothing"
