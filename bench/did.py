"""ATT(g, t) on synthetic Pythia-shaped first-epoch panels: analysis.did vs `differences` ATTgt.

For each panel size, time
  - ours:        analysis.did.att_gt analytic (bootstrap=0), and with a B-draw multiplier bootstrap;
  - differences: ATTgt(...).fit(est_method="reg", never-treated controls) on the same cells,
                 analytic and with boot_iterations=B (the seed's estimator; if installed);
check that both give the same ATT and analytic SE for every cell, and print a markdown table
with the speed ratio. `differences` needs minutes per thousand cells, so by default it only runs
on panels up to --differences-max-cells cells (the Pythia-sized grid has 9,025). Results go to
bench/results/did.json (rows of sizes not run are kept).

    python bench/did.py [--sizes tiny,small,pythia] [--boot 1000] [--differences-max-cells 500]
                        [--differences-no-boot] [--differences-jobs 1]

Against moderndid (the R `did` port), on the Pythia first-epoch panel (11,500 units x 96 steps,
9,025 cells), each case side by side in one run, results in bench/results/did_moderndid.json:

    python bench/did.py --moderndid plain,dr,boot [--moderndid-size pythia]

  plain  no covariates, analytic SEs
  dr     two covariates, doubly robust, analytic SEs
  boot   two covariates, doubly robust, 1,000 multiplier-bootstrap draws clustered by document

Panels larger than memory (bench/results/did_sql.json): write a units x 96 panel to Parquet with
DuckDB, then fit it from SQL sufficient statistics (analysis.did.sql) in a child process whose
peak RSS is read from the kernel:

    python bench/did.py --sql-units 1000000 [--sql-chunks 4] [--memory-limit 2GB]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl

from analysis.did import att_gt
from analysis.did.synthetic import staggered_panel

SIZES = {  # name: (cohorts, units per cohort, never-treated units, checkpoints)
    "tiny": (8, 100, 2000, 9),
    "small": (20, 100, 2000, 21),
    "pythia": (95, 100, 2000, 96),  # first epoch: cohorts 1k..95k, steps 0..95k, 11,500 units
    "pythia_full": (143, 100, 2000, 144),  # every checkpoint: 16,300 units, 20,449 cells
}
KW = dict(unit="unit", time="time", cohort="cohort", outcome="y")


def time_ours(panel: pl.DataFrame, boot: int) -> tuple[float, float, pl.DataFrame]:
    t0 = time.perf_counter()
    res = att_gt(panel, **KW, bootstrap=0)
    analytic = time.perf_counter() - t0
    t0 = time.perf_counter()
    att_gt(panel, **KW, bootstrap=boot, seed=0)
    boot_s = time.perf_counter() - t0
    return analytic, boot_s, res.to_polars()


def time_differences(panel: pl.DataFrame, boot: int, n_jobs: int) -> tuple[float, float | None, pl.DataFrame]:
    from differences import ATTgt

    pdf = panel.to_pandas().set_index(["unit", "time"])
    timings, frame = [], None
    for b in (0, boot) if boot else (0,):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            res = ATTgt(pdf, cohort_column="cohort").fit(
                "y", est_method="reg", control_group="never_treated", boot_iterations=b,
                random_state=0, n_jobs=n_jobs, progress_bar=False,
            )  # fmt: skip
            timings.append(time.perf_counter() - t0)
        if b == 0:
            df = res.to_pandas()
            df.columns = [c[-1] for c in df.columns]
            frame = pl.from_pandas(df.reset_index()).select("cohort", "time", "ATT", "std_error")
    return timings[0], timings[1] if boot else None, frame


COVARIATES = ["x1", "x2"]


def _moderndid_case(case: str, size: str, boot: int) -> dict:
    import moderndid as md

    cohorts, per, never, n_t = SIZES[size]
    panel = staggered_panel(
        n_cohorts=cohorts, units_per_cohort=per, n_never=never, n_times=n_t, step=1000, effect=0.05, seed=0,
        covariates=2, confounding=0.5, documents=(cohorts * per + never) // 4, document_shock=0.3,
    )  # fmt: skip
    warm = panel.filter(pl.col("unit") % 40 == 0)  # every 40th unit: all cohorts and controls
    att_gt(warm, **KW, bootstrap=10)  # warm-up: imports and first calls of both engines
    att_gt(warm, **KW, bootstrap=10, covariates=COVARIATES, cluster="document")
    ours_opts: dict = dict(bootstrap=0)
    theirs_opts: dict = dict(boot=False)
    if case in ("dr", "boot"):
        ours_opts |= dict(covariates=COVARIATES, est_method="dr")
        theirs_opts |= dict(xformla="~x1+x2", est_method="dr")
    if case == "boot":
        ours_opts |= dict(bootstrap=boot, cluster="document", seed=0)
        theirs_opts |= dict(boot=True, biters=boot, clustervars=["document"], random_state=0)
    runs = []
    for _ in range(3):  # ours is quick: the median of three runs
        t0 = time.perf_counter()
        ours = att_gt(panel, **KW, **ours_opts)
        runs.append(time.perf_counter() - t0)
    ours_s = float(np.median(runs))
    raw = panel.with_columns(pl.col("cohort").fill_null(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        theirs = md.att_gt(data=raw, yname="y", tname="time", idname="unit", gname="cohort", **theirs_opts)
        theirs_s = time.perf_counter() - t0
    return {
        "case": case,
        "size": size,
        "cells": len(ours.att),
        "ours_s": ours_s,
        "moderndid_s": theirs_s,
        "speedup": theirs_s / ours_s,
        "max_abs_diff_att": float(np.max(np.abs(ours.att - theirs.att_gt))),
        "max_abs_diff_se": float(np.nanmax(np.abs(ours.se - theirs.se_gt))),
    }


def _write_rows(name: str, rows: list[dict], key: str) -> list[dict]:
    path = Path(__file__).parent / "results" / name
    path.parent.mkdir(exist_ok=True)
    ran = {r[key] for r in rows}
    kept = [r for r in json.loads(path.read_text()) if r[key] not in ran] if path.exists() else []
    rows = kept + rows
    path.write_text(json.dumps(rows, indent=2))
    return rows


def moderndid_bench(cases: list[str], size: str, boot: int) -> None:
    rows = []
    for case in cases:
        row = _moderndid_case(case, size, boot)
        rows.append(row)
        print(json.dumps(row), flush=True)
    rows = _write_rows("did_moderndid.json", rows, "case")
    print("\n| case | cells | memlake s | moderndid s | speed-up | max abs diff ATT / SE |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['cells']:,} | {r['ours_s']:.2f} | {r['moderndid_s']:.1f} | "
            f"{r['speedup']:.0f}x | {r['max_abs_diff_att']:.1e} / {r['max_abs_diff_se']:.1e} |"
        )


SQL_CHILD = """
import json, sys, time, resource, duckdb
from analysis.did.sql import att_gt_sql
path, chunks, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3]
con = duckdb.connect(config={"memory_limit": limit, "threads": 2})
t0 = time.perf_counter()
res = att_gt_sql(con, f"select * from read_parquet('{path}')", unit="unit", time="time", cohort="cohort",
                 outcome="y", chunks=chunks)
fit_s = time.perf_counter() - t0
dyn = res.aggregate("dynamic")
print(json.dumps({"fit_s": fit_s, "cells": len(res.att), "units": int(res.n),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "att_e0": float(dyn.att[list(dyn.keys).index(0)])}))
"""


def sql_bench(units: int, chunks: int, memory_limit: str) -> None:
    """A units x 96 Pythia-shaped panel (95 cohorts, 1 in 20 units never treated, effect 0.05 from
    the cohort on), written by DuckDB, then fitted from SQL in a fresh process."""
    import subprocess
    import sys
    import tempfile

    import duckdb

    with tempfile.TemporaryDirectory(dir=Path(__file__).parent / "results") as tmp:
        path = Path(tmp) / "panel.parquet"
        t0 = time.perf_counter()
        duckdb.sql(
            f"""copy (
              select u as unit, t * 1000 as time,
                     case when u % 20 = 19 then null else 1000 * (1 + u % 95) end as cohort,
                     (hash(u) % 1000) / 1000.0 + sin(t / 3.0) + (hash(u * 131 + t) % 10000) / 10000.0
                       + case when u % 20 != 19 and t * 1000 >= 1000 * (1 + u % 95) then 0.05 else 0 end as y
              from range({units}) as a(u), range(96) as b(t)
            ) to '{path}' (format parquet, row_group_size 1000000)"""
        )
        write_s = time.perf_counter() - t0
        out = subprocess.run(
            [sys.executable, "-c", SQL_CHILD, str(path), str(chunks), memory_limit],
            capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1],
        )  # fmt: skip
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row |= {"units_requested": units, "rows": units * 96, "write_s": write_s, "chunks": chunks,
                "memory_limit": memory_limit, "parquet_gb": path.stat().st_size / 2**30}  # fmt: skip
    print(json.dumps(row), flush=True)
    _write_rows("did_sql.json", [row], "units_requested")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="small,pythia")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--differences-max-cells", type=int, default=500)
    ap.add_argument("--differences-jobs", type=int, default=1)
    ap.add_argument("--differences-no-boot", action="store_true", help="time differences analytic only")
    ap.add_argument("--moderndid", default=None, help="comma list of cases: plain, dr, boot")
    ap.add_argument("--moderndid-size", default="pythia")
    ap.add_argument("--sql-units", type=int, default=None)
    ap.add_argument("--sql-chunks", type=int, default=4)
    ap.add_argument("--memory-limit", default="2GB")
    args = ap.parse_args()
    if args.moderndid:
        moderndid_bench(args.moderndid.split(","), args.moderndid_size, args.boot)
        return
    if args.sql_units:
        sql_bench(args.sql_units, args.sql_chunks, args.memory_limit)
        return
    try:
        import differences  # noqa: F401

        have_differences = True
    except ImportError:
        have_differences = False
        print("note: `differences` not installed; its columns are skipped (pip install differences==0.3.0)")

    # warm-up: imports and first-call costs are not what we measure
    att_gt(staggered_panel(n_cohorts=2, units_per_cohort=5, n_never=5, n_times=3), **KW, bootstrap=10)
    results = []
    for name in args.sizes.split(","):
        cohorts, per, never, n_t = SIZES[name]
        panel = staggered_panel(
            n_cohorts=cohorts,
            units_per_cohort=per,
            n_never=never,
            n_times=n_t,
            step=1000,
            effect=0.05,
            seed=0,
        )
        ours_a, ours_b, ours = time_ours(panel, args.boot)
        row = {
            "size": name,
            "units": cohorts * per + never,
            "times": n_t,
            "cells": len(ours),
            "boot": args.boot,
            "ours_analytic_s": ours_a,
            "ours_boot_s": ours_b,
        }
        if have_differences and len(ours) <= args.differences_max_cells:
            diff_b_draws = 0 if args.differences_no_boot else args.boot
            diff_a, diff_b, ref = time_differences(panel, diff_b_draws, args.differences_jobs)
            j = ours.join(ref, on=["cohort", "time"])
            assert len(j) == len(ours) == len(ref), "cell sets differ"
            row |= {
                "differences_analytic_s": diff_a,
                "speedup_analytic": diff_a / ours_a,
                "max_abs_diff_att": float((j["att"] - j["ATT"]).abs().max()),
                "max_abs_diff_se": float((j["se"] - j["std_error"]).abs().max()),
            }
            if diff_b is not None:
                row |= {"differences_boot_s": diff_b, "speedup_boot": diff_b / ours_b}
        results.append(row)
        print(json.dumps(row), flush=True)

    # keep rows of sizes not run this time (the Pythia-sized `differences` run takes ~half an hour)
    results = sorted(_write_rows("did.json", results, "size"), key=lambda r: list(SIZES).index(r["size"]))

    def fmt(r: dict, key: str, spec: str) -> str:
        return format(r[key], spec) if key in r else "—"

    b = args.boot
    print(
        f"\n| panel | units × times | cells | ours analytic s | ours B={b} s | differences analytic s "
        f"| differences B={b} s | speed-up analytic | speed-up boot | max abs diff ATT / SE |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        diffs = (
            f"{r['max_abs_diff_att']:.1e} / {r['max_abs_diff_se']:.1e}" if "max_abs_diff_att" in r else "—"
        )
        print(
            f"| {r['size']} | {r['units']:,} × {r['times']} | {r['cells']:,} | {r['ours_analytic_s']:.2f} | "
            f"{r['ours_boot_s']:.2f} | {fmt(r, 'differences_analytic_s', '.1f')} | "
            f"{fmt(r, 'differences_boot_s', '.1f')} | {fmt(r, 'speedup_analytic', '.0f')} | "
            f"{fmt(r, 'speedup_boot', '.0f')} | {diffs} |"
        )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
