"""Commands over the warehouse as a whole: query, build, report, publish."""

from __future__ import annotations

import csv
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memlake.cli._options import WarehouseOpt, say
from memlake.core.paths import Warehouse
from memlake.pipeline import warehouse as stages


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def query_command(
    sql: Annotated[str, typer.Argument(help="SQL; lake tables and marts are views.")],
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    warehouse: WarehouseOpt = None,
    limit: Annotated[int, typer.Option(help="Rows shown in table format.")] = 50,
):
    """Run read-only SQL against the warehouse and print the result."""
    columns, rows = stages.query(Warehouse.at(warehouse), sql)
    if format is Format.csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)
    elif format is Format.json:
        print(json.dumps([dict(zip(columns, r)) for r in rows], default=str))
    else:
        t = Table(*columns, caption=f"{len(rows)} rows" + (f" (first {limit})" if len(rows) > limit else ""))
        for r in rows[:limit]:
            t.add_row(*[_short(v) for v in r])
        Console().print(t)


def _short(v) -> str:
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def build_command(ctx: typer.Context, warehouse: WarehouseOpt = None):
    """`dbt build` over the warehouse: staging views, marts as Parquet, all data tests."""
    stages.build(Warehouse.at(warehouse), ctx.args)


def report_command(
    out: Annotated[Path | None, typer.Option(help="Output folder (default warehouse/report).")] = None,
    dbt_docs: Annotated[bool, typer.Option(help="Also run `dbt docs generate` and link it.")] = True,
    warehouse: WarehouseOpt = None,
):
    """Write a static HTML report (figures, summaries, provenance) and print its path."""
    say(f"report: {stages.report(Warehouse.at(warehouse), out, dbt_docs)}")


def publish_command(
    name: Annotated[
        str,
        typer.Argument(
            help="A set (instances, token_stats, sequence_panel, profiles, "
            "taxonomy, mitigation_runs) or any table/mart."
        ),
    ],
    repo: Annotated[str, typer.Option(help="Hub dataset repo, OWNER/NAME.")],
    dry_run: Annotated[
        bool, typer.Option(help="Stage the folder and print the file plan; upload nothing.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Staging folder (default warehouse/publish/<name>).")
    ] = None,
    license: Annotated[
        str, typer.Option(help="Card licence id (default: other = PSF, the corpus's).")
    ] = "other",
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    warehouse: WarehouseOpt = None,
):
    """Stage a Hugging Face dataset folder (Parquet shards + card) and upload it in one commit."""
    wh = Warehouse.at(warehouse)
    for line in stages.publish(wh, name, repo, out, license, private, dry_run):
        say(line)
