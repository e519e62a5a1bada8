"""Run dbt over a warehouse: the project is this repository, the profile points at the warehouse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from memlake.core.errors import MemlakeError
from memlake.core.paths import REPO_ROOT, Warehouse


def run_dbt(args: list[str], wh: Warehouse) -> int:
    """Run dbt from the repo root with the profile pointed at `wh` (same as calling dbt)."""
    exe = Path(sys.executable).parent / "dbt"
    cmd = [
        str(exe) if exe.exists() else "dbt",
        *args,
        "--project-dir",
        str(REPO_ROOT),
        "--profiles-dir",
        str(REPO_ROOT),
    ]
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)}
    wh.marts.mkdir(parents=True, exist_ok=True)
    # dbt's output goes through sys.stdout line by line, so whoever captures ours sees it too
    with subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
    return proc.returncode


def dbt_build(wh: Warehouse, args: list[str]) -> None:
    """`dbt build` with extra arguments; a failure is one line (dbt printed the details)."""
    code = run_dbt(["build", *args], wh)
    if code:
        raise MemlakeError(f"dbt build failed (exit {code}); see the dbt output above")


def dbt_docs(wh: Warehouse, target: Path) -> bool:
    """`dbt docs generate` into `target`; False when there is no catalog to document yet."""
    if not wh.catalog.exists():
        return False
    code = run_dbt(["docs", "generate", "--quiet", "--target-path", str(target)], wh)
    return code == 0 and (target / "index.html").exists()


def dbt_vars(cfg) -> dict:
    """dbt vars that follow the config: extraction setting and taxonomy thresholds."""
    ex, tax = cfg["ingest"]["extraction"], cfg.get("taxonomy", {})
    out = {"extraction_prompt_len": ex["prompt_len"], "extraction_gen_len": ex["gen_len"]}
    out.update({k: tax[k] for k in ("nl_threshold", "code_threshold", "recitation_threshold") if k in tax})
    # perplexity windows follow the taxonomy sample: prompt [0, P), continuation [P, P + k)
    windows = {"prompt_len": "perplexity_prompt_len", "k": "perplexity_continuation_len"}
    out.update({var: tax[key] for key, var in windows.items() if key in tax})
    return out
