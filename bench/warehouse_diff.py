"""Do two warehouses hold the same data? Every lake table and every mart, compared as sets of rows.

    python bench/warehouse_diff.py A B [--rtol R] [--atol A] [--exclude PATTERN ...] [--no-default-exclude]

A restructuring of the code must leave `memlake demo`'s outputs unchanged (same seed, same rows and
values); run the demo into two warehouses, before and after, and diff them. Row order, partition
layout and the split of a mart into files do not matter: each lake table (`memlake.core.lake.TABLES`,
read through `read_table`, partition keys as columns) and each mart (`marts/<name>.parquet` or the
files under `marts/<name>/`) is one multiset of rows, compared with DuckDB's EXCEPT ALL both ways.
Column order does not matter either; names and types do.

Floats are exact by default. With `--rtol`/`--atol`, a float column (or a list of floats) matches
where |a - b| <= atol + rtol * max(|a|, |b|) element-wise (NaN matches NaN, null matches null);
integers, strings and booleans stay exact. Rows that differ are paired by their non-float columns
(and, within a group of equal ones, by the order of their floats) to name the float columns that
differ; rows left unpaired differ in a non-float column, named by comparing each column's values.

Non-deterministic columns are left out by name (`DEFAULT_EXCLUDE`, printed at the start; a pattern
with a dot, `table.column`, applies to one table or mart), also as keys inside JSON-object columns
(`mitigation_runs.stats` carries timings). Strings holding a path under a warehouse root are
compared relative to it (`checkpoints.path` is absolute). Manifests (`_manifest.json`) are not
compared: their row counts follow from the rows (partition keys are columns), their hashes are of
Parquet bytes (row order, compression and library versions change them with the data unchanged),
and the rest is provenance (code version, package versions, time written, timings).

Prints one line per table or mart (`same`, or what differs) and a summary. Exit status: 0 same
data, 1 some difference, 2 bad input (a path that is not a warehouse, an unreadable table).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memlake.warehouse.diff import DEFAULT_EXCLUDE, ROOT_TOKEN, BadInput, describe, diff, warehouse  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="warehouse root A")
    ap.add_argument("b", help="warehouse root B")
    ap.add_argument("--rtol", type=float, default=0.0, help="relative tolerance on float columns")
    ap.add_argument("--atol", type=float, default=0.0, help="absolute tolerance on float columns")
    ap.add_argument(
        "--exclude", action="append", default=[], metavar="PATTERN", help="also leave out columns (glob)"
    )
    ap.add_argument("--no-default-exclude", action="store_true", help="compare the timing columns too")
    args = ap.parse_args(argv)
    patterns = ([] if args.no_default_exclude else list(DEFAULT_EXCLUDE)) + args.exclude
    try:
        for path in (args.a, args.b):
            warehouse(path)
        print(f"A: {args.a}\nB: {args.b}")
        print(f"left out (columns, and keys of JSON-object columns): {describe(patterns)}")
        tol = "exact" if not (args.rtol or args.atol) else f"rtol={args.rtol:g}, atol={args.atol:g}"
        print(f"floats: {tol}; paths under a root compared as {ROOT_TOKEN}/...; manifests not compared")
        results = diff(args.a, args.b, args.rtol, args.atol, patterns)
    except BadInput as e:
        print(f"warehouse_diff: {e}", file=sys.stderr)
        return 2
    for r in results:
        print(r.line())
    differ = [r.name for r in results if not r.same]
    summary = f"summary: {len(results)} compared, {len(results) - len(differ)} same, {len(differ)} differ"
    print(summary + (f": {', '.join(differ)}" if differ else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
