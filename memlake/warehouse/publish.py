"""Stage lake tables and marts as Hugging Face dataset folders, then upload them.

A staged folder is exactly what lands on the Hub: Parquet shards
`data/<config>/train-0000k-of-0000n.parquet` under a size limit (no pandas index columns, no
timestamps in paths) and a README.md dataset card whose YAML declares `configs`/`data_files`,
the licence, and whose body documents the schema and provenance (models, checkpoints, code
version). `datasets.load_dataset(folder, name=config)` reads it back offline (tests do).
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from memlake.core import lake, query
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_SHARD_BYTES = 500 * 2**20  # datasets' push_to_hub default; the viewer wants ~100-300 MB row groups
ROW_GROUP_ROWS = 50_000

# Named sets: one Hub dataset, one config per table. Any single lake table or mart also works.
SETS: dict[str, dict[str, str]] = {
    "instances": {"default": "instances"},
    "token_stats": {"default": "token_stats"},
    "sequence_panel": {"default": "sequence_panel"},
    "profiles": {
        "attgt": "profiles_attgt",
        "aggregates": "profiles_aggregates",
        "pretrend": "profiles_pretrend",
        "regression": "profiles_regression",
    },
    "taxonomy": {"features": "sequence_features", "taxonomy": "taxonomy"},
    "mitigation_runs": {"default": "mitigation_runs"},
}


@dataclass(frozen=True)
class StagedFile:
    path: str  # relative to the folder = path in the repo
    rows: int | None
    bytes: int


def check_repo(repo: str) -> str:
    if not REPO_RE.match(repo or ""):
        raise MemlakeError(f"repo must be OWNER/NAME (letters, digits, '.', '_', '-'), got {repo!r}")
    return repo


def tables_of(name: str, wh: Warehouse) -> dict[str, str]:
    """config -> table for a named set or a single table/mart; a one-line error otherwise."""
    if name in SETS:
        return SETS[name]
    if name in _available(wh):
        return {"default": name}
    raise MemlakeError(
        f"nothing to publish named {name!r}: choose a set ({', '.join(SETS)}) or a table/mart "
        f"({', '.join(sorted(_available(wh))) or 'none yet: run `memlake demo`'})"
    )


def _available(wh: Warehouse) -> set[str]:
    con = query.connect(wh)
    try:
        return query.view_names(con)
    finally:
        con.close()


def stage(
    wh: Warehouse,
    name: str,
    out: Path,
    *,
    repo: str,
    license: str = "other",
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> list[StagedFile]:
    """Write the Hub folder for `name` into `out` (replaced); return the file plan."""
    check_repo(repo)
    configs = tables_of(name, wh)
    have = _available(wh)
    missing = [t for t in configs.values() if t not in have]
    if missing:
        raise MemlakeError(
            f"{name}: table/mart {missing[0]!r} does not exist yet (run the stage that builds it)"
        )
    tmp = out.with_name(out.name + ".staging")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    con = query.connect(wh)
    files: list[StagedFile] = []
    schemas: dict[str, pa.Schema] = {}
    try:
        for config, table in configs.items():
            data = con.sql(f"select * from {table}").to_arrow_table()
            if data.num_rows == 0:
                raise MemlakeError(f"{name}: table {table!r} is empty; nothing to publish")
            schemas[config] = data.schema.remove_metadata()  # drops any pandas index metadata
            files += _write_shards(data.replace_schema_metadata(None), tmp, config, max_shard_bytes)
        provenance = _provenance(con, wh)
    finally:
        con.close()
    card = dataset_card(name, repo, configs, schemas, files, provenance, license)
    (tmp / "README.md").write_text(card)
    files.insert(0, StagedFile("README.md", None, len(card.encode())))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # a failed staging never leaves a half-written folder at `out`
    return files


def _write_shards(data: pa.Table, folder: Path, config: str, max_bytes: int) -> list[StagedFile]:
    n = max(1, math.ceil(data.nbytes / max_bytes))
    per = math.ceil(data.num_rows / n)
    out = []
    for k in range(n):
        part = data.slice(k * per, per)
        rel = f"data/{config}/train-{k:05d}-of-{n:05d}.parquet"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, path, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        out.append(StagedFile(rel, part.num_rows, path.stat().st_size))
    return out


def _provenance(con, wh: Warehouse) -> dict:
    models = []
    if "checkpoints" in lake.TABLES and lake.data_files(wh, "checkpoints"):
        rows = con.execute(
            "select model, count(*), min(step), max(step) from checkpoints group by all order by all"
        ).fetchall()
        models = [{"model": m, "checkpoints": n, "first_step": a, "last_step": b} for m, n, a, b in rows]
    config = wh.suite / "config.yaml"
    return {
        "code_version": lake.code_version(),
        "models": models,
        "config": config.read_text() if config.exists() else None,
    }


def dataset_card(name, repo, configs, schemas, files, provenance, license) -> str:
    """README.md with the YAML `configs` the Hub and `load_dataset` read, schema and provenance."""
    yaml = ["---", f"license: {license}"]
    if license == "other":  # the embedded corpus is CPython source and docs
        yaml += ["license_name: psf-2.0", "license_link: https://docs.python.org/3/license.html"]
    yaml += [f"pretty_name: memlake {name}", "tags:", "- memorization", "- memlake", "configs:"]
    for i, config in enumerate(configs):
        yaml += [f"- config_name: {config}", "  data_files:", "  - split: train",
                 f"    path: data/{config}/train-*.parquet"]  # fmt: skip
        if i == 0:
            yaml.append("  default: true")
    yaml.append("---")
    rows = {c: sum(f.rows or 0 for f in files if f.path.startswith(f"data/{c}/")) for c in configs}
    body = [
        f"# memlake: {name}",
        "",
        f"Published with `memlake publish {name} --repo {repo}` from a memlake warehouse "
        f"(code version `{provenance['code_version']}`).",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("{repo}", "{next(iter(configs))}", split="train")',
        "```",
        "",
    ]
    for config, table in configs.items():
        body += [
            f"## Config `{config}` (table `{table}`, {rows[config]:,} rows)",
            "",
            "| column | type |",
            "|---|---|",
        ]
        body += [f"| `{f.name}` | `{f.type}` |" for f in schemas[config]]
        body.append("")
    body += ["## Provenance", ""]
    if provenance["models"]:
        body += ["| model | checkpoints | first step | last step |", "|---|---|---|---|"]
        body += [f"| {m['model']} | {m['checkpoints']} | {m['first_step']} | {m['last_step']} |"
                 for m in provenance["models"]]  # fmt: skip
        body.append("")
    if provenance["config"]:
        body += ["Resolved memlake config:", "", "```yaml", provenance["config"].rstrip(), "```", ""]
    return "\n".join(yaml + [""] + body)


def upload(folder: Path, repo: str, *, token: str | None = None, private: bool = False) -> str:
    """One commit of the staged folder to the dataset repo (created if needed); returns its URL."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    check_repo(repo)
    token = token or get_token()
    if not token:
        raise MemlakeError(
            "no Hugging Face token: run `hf auth login` or set HF_TOKEN (nothing was uploaded)"
        )
    api = HfApi(token=token)
    api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
    # One explicit commit of exactly the staged files (upload_folder may split large folders
    # into several commits); the Hub checks the card's YAML when the commit lands.
    files = sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts)
    if len(files) > 100:
        raise MemlakeError(
            f"{folder}: {len(files)} files exceed the Hub's 100 files per commit; raise the shard size"
        )
    operations = [
        CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
        for p in files
    ]
    info = api.create_commit(
        repo_id=repo,
        repo_type="dataset",
        operations=operations,
        commit_message=f"memlake publish {folder.name}",
    )
    return str(getattr(info, "commit_url", info))
