"""Size of the three pre-trend tests when parallel trends hold exactly: how often each rejects at 5 %.

Two kinds of placebo panel, each fitted like the profiles (never-treated controls, varying base
period, first epoch):
  - synthetic: random-walk outcomes (normal or t(3) steps) with unit effects, cohorts of the
    demo's shape (10 cohorts on a 48-step grid, --per units each, --controls never-treated);
  - placebo (--warehouse): a fitted warehouse's never-trained validation rows only, half of them
    given pseudo-cohorts; none was trained on, so every rejection is a false one.
Results go to bench/results/pretrend_size.json.

    python bench/pretrend_size.py [--reps 100] [--per 48] [--controls 400] [--warehouse DIR --model M]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import polars as pl

from analysis.did import att_gt

METHODS = ("wald", "wald_event", "sup_t")
STEPS = list(range(0, 481, 48))


def synthetic(rng, per: int, controls: int, heavy: bool) -> pl.DataFrame:
    cohorts = STEPS[1:]
    n = per * len(cohorts) + controls
    g = np.r_[np.repeat(cohorts, per), np.full(controls, -1)]
    steps = rng.standard_t(3, size=(n, len(STEPS))) if heavy else rng.normal(size=(n, len(STEPS)))
    y = rng.normal(size=(n, 1)) + 0.1 * np.cumsum(steps, axis=1)
    return pl.DataFrame(
        {
            "instance_id": np.repeat(np.arange(n), len(STEPS)),
            "step": np.tile(STEPS, n),
            "cohort": np.repeat(g, len(STEPS)),
            "y": y.reshape(-1),
        }
    ).with_columns(cohort=pl.when(pl.col("cohort") >= 0).then(pl.col("cohort")))


def placebo_source(warehouse: Path, model: str):
    from analysis.profiles.fitting import first_epoch_end, panel_frame
    from memlake.core.paths import Warehouse
    from memlake.core.query import connect

    con = connect(Warehouse(warehouse.resolve()))
    panel = panel_frame(con, model, "single")
    end = first_epoch_end(con, model)
    cohorts = sorted(panel.filter(~pl.col("never_treated") & (pl.col("cohort") <= end))["cohort"].unique())
    val = panel.filter(pl.col("never_treated")).select("instance_id", "step", y="sup_seq")
    return val, cohorts, end


def placebo(rng, val: pl.DataFrame, cohorts: list[int]) -> pl.DataFrame:
    ids = rng.permutation(val["instance_id"].unique().sort().to_numpy())
    per = len(ids) // 2 // len(cohorts)
    fake = {int(i): int(cohorts[k // per]) for k, i in enumerate(ids[: per * len(cohorts)])}
    cohort = pl.col("instance_id").replace_strict(fake, default=None, return_dtype=pl.Int64)
    return val.with_columns(cohort=cohort)


def size(panels, reps: int, bootstrap: int, first_epoch: int | None) -> dict[str, float]:
    rejected = dict.fromkeys(METHODS, 0)
    for r in range(reps):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = att_gt(
                panels(r),
                unit="instance_id",
                time="step",
                cohort="cohort",
                outcome="y",
                control_group="never_treated",
                base_period="varying",
                bootstrap=bootstrap,
                seed=r,
                first_epoch=first_epoch,
            )
            for m in METHODS:
                rejected[m] += res.pretrend_test(m).p_value < 0.05
    return {m: round(v / reps, 3) for m, v in rejected.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--per", type=int, default=48, help="units per cohort (synthetic)")
    ap.add_argument("--controls", type=int, default=400, help="never-treated units (synthetic)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--warehouse", type=Path, help="also a placebo on this warehouse's validation rows")
    ap.add_argument("--model", default="suite-s")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for heavy in (False, True):
        panels = lambda r, h=heavy: synthetic(rng, args.per, args.controls, h)  # noqa: E731
        rates = size(panels, args.reps, args.bootstrap, None)
        shape = f"{args.per} x 10 cohorts, {args.controls} controls"
        rows.append({"panel": f"synthetic, {'t(3)' if heavy else 'normal'} steps", "shape": shape, **rates})
    if args.warehouse:
        val, cohorts, end = placebo_source(args.warehouse, args.model)
        n = val["instance_id"].n_unique()
        per = n // 2 // len(cohorts)
        rates = size(lambda r: placebo(rng, val, cohorts), args.reps, args.bootstrap, end)
        shape = f"{per} x {len(cohorts)} cohorts, {n - per * len(cohorts)} controls"
        rows.append({"panel": f"placebo: {args.model} validation rows", "shape": shape, **rates})
    print(f"| panel | shape | {' | '.join(METHODS)} |\n|---|---|{'---|' * len(METHODS)}")
    for r in rows:
        print(f"| {r['panel']} | {r['shape']} | " + " | ".join(f"{r[m]:.3f}" for m in METHODS) + " |")
    out = Path(__file__).parent / "results" / "pretrend_size.json"
    record = {"reps": args.reps, "bootstrap": args.bootstrap, "rows": rows}
    out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
