"""The warehouse as a whole: read-only SQL, the dbt build, the static report, Hub publishing."""

from __future__ import annotations

from pathlib import Path

from memlake.core.paths import Warehouse
from memlake.warehouse import dbt


def query(wh: Warehouse, sql: str) -> tuple[list[str], list[tuple]]:
    """Read-only SQL over lake tables, marts and the analyses' derived views."""
    from analysis.views import SQL_VIEWS
    from memlake.core.query import run

    return run(wh, sql, views=SQL_VIEWS)


def build(wh: Warehouse, args: list[str] | None = None) -> None:
    """`dbt build` over the warehouse: staging views, marts as Parquet, all data tests."""
    dbt.dbt_build(wh, list(args or []))


def build_for(cfg, wh: Warehouse) -> str:
    """The demo's build: quiet, with the dbt vars that follow the config."""
    import json

    dbt.dbt_build(wh, ["--quiet", "--vars", json.dumps(dbt.dbt_vars(cfg))])
    return "ok"


def report(wh: Warehouse, out: Path | None = None, dbt_docs: bool = True) -> Path:
    """Write the static HTML report (and the dbt docs site it links); the index path."""
    from analysis.report import write_report

    docs = (lambda target: dbt.dbt_docs(wh, target)) if dbt_docs else None
    return write_report(wh, out or wh.root / "report", docs=docs)


def publish(
    wh: Warehouse,
    name: str,
    repo: str,
    out: Path | None = None,
    license: str = "other",
    private: bool = False,
    dry_run: bool = False,
) -> list[str]:
    """Stage a Hub dataset folder (Parquet shards + card) and, unless `dry_run`, upload it."""
    from memlake.warehouse.publish import check_repo, stage, upload

    check_repo(repo)
    folder = out or wh.root / "publish" / name
    files = stage(wh, name, folder, repo=repo, license=license)
    lines = [
        f"  {f.path}  {f.bytes:,} B" + (f"  {f.rows:,} rows" if f.rows is not None else "") for f in files
    ]
    lines.append(f"staged {len(files)} files in {folder}")
    if dry_run:
        return lines + [f"dry run: nothing uploaded to datasets/{repo}"]
    return lines + [f"uploaded: {upload(folder, repo, private=private)}"]
