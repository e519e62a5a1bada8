"""`memlake serve` on a Pythia-shaped warehouse: server time per page, beside the same page's queries
on a fresh query-layer connection per request (what `memlake query` does).

The warehouse (built once into --out, reused after) has the shape of the profiles paper's panel on
one Pythia model:
  - instances: 16,300 rows of 2,049 tokens (14,300 trained, 100 per cohort over 143 cohorts, and
    2,000 never-trained), ids from Pythia's 50,277-entry vocabulary, with a tokenizer that size;
  - checkpoints: Pythia's 154 revisions (step0, 1, 2, 4, ..., 512, 1000, 2000, ..., 143000),
    registered from its published facts as `memlake suite register` does;
  - token_stats: 16,300 rows x 2,048 positions of surprisal/rank/entropy at every checkpoint, and
    extraction (32-token prompt, 32 generated) at every checkpoint, both written by the lake
    writer; one checkpoint's files are written and hard-linked into the other 153 partitions
    (the same bytes, sizes and read path; the disk holds one copy);
  - marts: sequence_panel and taxonomy (16,300 x 154 rows, by DuckDB as dbt writes them), and
    one profile fit's profiles_attgt: 143 cohorts x 143 steps = 20,449 ATT(g, t) cells.
Then `memlake serve` runs in its own process and each page is requested --repeats times (after a
first, warming request); the server's own time is its `Server-Timing` header. The reference is
the same queries through `memlake.core.query.read` (a fresh connection per query, the views
rebuilt each time). Peak RSS of the server process is read from the kernel at the end.

    python bench/serve.py [--out /tmp/memlake-serve-bench] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from ingest.hub_suites import family_suite, model_key, register_suite
from memlake.core import lake, marts
from memlake.core.paths import REPO_ROOT, Warehouse

HUB_ID = "EleutherAI/pythia-70m-deduped"
MODEL = model_key(HUB_ID)
VOCAB, ROW, PROMPT, GEN = 50_277, 2_049, 32, 32
PER_COHORT, VALIDATION = 100, 2_000
STEPS = list(family_suite(HUB_ID).steps)  # Pythia's 154 revisions
COHORTS = list(range(1000, 143_001, 1000))
CHUNK = 512  # rows per piece, as a scoring job writes them


def _tokenizer(wh: Warehouse) -> None:
    """A word-level tokenizer with Pythia's vocabulary size (decoding cost is a table lookup)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB)}
    tok = Tokenizer(WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0").save_pretrained(str(wh.tokenizer))


def _link_partitions(wh: Warehouse, table: str, first: Path, partition: dict) -> None:
    """`first`'s data file hard-linked into the partition for every other step, each with its own
    manifest."""
    manifest = json.loads((first / lake.MANIFEST).read_text())
    for step in STEPS[1:]:
        part = {**partition, "step": step}
        final = lake.partition_dir(wh, table, part)
        if (final / lake.MANIFEST).exists():
            continue
        final.mkdir(parents=True, exist_ok=True)
        os.link(first / lake.DATA_FILE, final / lake.DATA_FILE)
        (final / lake.MANIFEST).write_text(json.dumps({**manifest, "partition": part}, indent=2))


def build(wh: Warehouse) -> None:
    rng = np.random.default_rng(0)
    n_train = PER_COHORT * len(COHORTS)
    n = n_train + VALIDATION
    ids = np.arange(n)
    cohort = np.repeat(COHORTS, PER_COHORT)
    tokens = rng.integers(0, VOCAB, (n, ROW), dtype=np.int32)
    lake.write_partition(
        wh,
        "instances",
        {
            "instance_id": ids,
            "split": ["train"] * n_train + ["validation"] * VALIDATION,
            "tokens": lake.list_column(tokens),
            "batch_idx": pa.array(list(range(n_train)) + [None] * VALIDATION, pa.int64()),
            "cohort": pa.array(cohort.tolist() + [None] * VALIDATION, pa.int64()),
            "source": ["pile"] * n,
            "artifact": ["none"] * n,
            "copies": pa.nulls(n, pa.int32()),
            "clean_tokens": pa.nulls(n, lake.TOKENS),
        },
    )
    register_suite(wh, HUB_ID)  # Pythia's 154 checkpoint rows from its published facts
    _tokenizer(wh)

    def stats():
        for lo in range(0, n, CHUNK):
            sel = ids[lo : lo + CHUNK]
            k = len(sel)
            yield {
                "instance_id": sel,
                "surprisal": lake.list_column(rng.gamma(1.2, 2.5, (k, ROW - 1)).astype(np.float32)),
                "rank": lake.list_column(
                    np.where(rng.random((k, ROW - 1)) < 0.4, 0, rng.geometric(0.05, (k, ROW - 1))).astype(
                        np.int32
                    )
                ),  # noqa: E501
                "entropy": lake.list_column(rng.gamma(2.0, 1.2, (k, ROW - 1)).astype(np.float32)),
            }

    part = {"model": MODEL, "step": STEPS[0], "shard": 0}
    first = lake.write_partition_stream(wh, "token_stats", stats(), part)
    _link_partitions(wh, "token_stats", first, {"model": MODEL, "shard": 0})
    generated = tokens[:, PROMPT : PROMPT + GEN].copy()
    generated[rng.random((n, GEN)) < 0.5] = 0
    match = (generated == tokens[:, PROMPT : PROMPT + GEN]).mean(axis=1).astype(np.float32)
    part = {"model": MODEL, "step": STEPS[0], "prompt_len": PROMPT, "gen_len": GEN, "shard": 0}
    first = lake.write_partition(
        wh,
        "extraction",
        {
            "instance_id": ids,
            "generated": lake.list_column(generated),
            "match_fraction": match,
            "memorised": match == 1.0,
        },
        part,
    )
    _link_partitions(wh, "extraction", first, {k: v for k, v in part.items() if k != "step"})
    _marts(wh, rng, cohort, n_train, n)


def _marts(wh: Warehouse, rng, cohort, n_train: int, n: int) -> None:
    wh.marts.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"create table ids as select unnest(range({n})) as instance_id")
    con.execute(f"create table steps as select unnest({STEPS}) as step")
    con.register("cohorts", pa.table({"instance_id": np.arange(n_train), "cohort": cohort}))
    panel = f"""
        select '{MODEL}' as model, s.step, i.instance_id, c.cohort, c.cohort is null as never_treated,
            true as first_epoch, 3 + random() as sup_seq, random() as acc_seq, 50 * random() as avg_rank,
            2 + random() as entr_seq, -3 * 2048 * (1 + random()) as loglik, 2048::bigint as n_scored
        from steps s cross join ids i left join cohorts c using (instance_id)"""
    con.execute(f"copy ({panel}) to '{wh.marts / 'sequence_panel.parquet'}' (format parquet)")
    taxonomy = f"""
        select '{MODEL}' as model, s.step, i.instance_id, random() < 0.01 as memorised,
            ['recitation', 'reconstruction', 'recollection'][1 + (i.instance_id % 3)] as category,
            5::bigint as recitation_threshold, (i.instance_id % 7)::bigint as sequence_duplicates,
            false as is_incrementing, false as is_repeating, false as is_templating, 'none' as artifact,
            null::integer as copies
        from steps s cross join ids i"""
    con.execute(f"copy ({taxonomy}) to '{wh.marts / 'taxonomy.parquet'}' (format parquet)")
    g, t = np.meshgrid(COHORTS, COHORTS, indexing="ij")
    g, t = g.ravel(), t.ravel()
    att = np.where(t >= g, -0.3 * np.exp(-(t - g) / 20_000), 0.0) + rng.normal(0, 0.02, g.size)
    se = np.full(g.size, 0.02)
    import polars as pl

    import analysis.profiles.fitting  # noqa: F401 - declares the profile marts

    cells = pl.DataFrame(
        {
            "model": MODEL, "metric": "sup_seq", "units": "single", "control_group": "never_treated",
            "base_period": "varying", "first_epoch": True, "design": "none", "cohort": g, "step": t,
            "base_step": np.maximum(t - 1000, 0), "event_time": (t - g) // 1000, "post": t >= g, "att": att,
            "se": se, "se_analytic": se, "ci_lower": att - 3 * se, "ci_upper": att + 3 * se,
            "zero_not_in_cband": np.abs(att) > 3 * se, "n_treated": PER_COHORT, "n_control": VALIDATION,
            "memorisation": -att,
        }
    )  # fmt: skip
    marts.write(wh, "profiles_attgt", marts.file_key(MODEL, "sup_seq", "single"), cells)


class Server:
    def __init__(self, wh: Warehouse, port: int):
        cmd = [sys.executable, "-c", "from memlake.cli import main; main()", "serve", "-w", str(wh.root),
               "--port", str(port)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=2)
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("memlake serve did not start")

    def get(self, path: str) -> tuple[float, float, int]:
        """(server ms, client ms, body bytes)."""
        t0 = time.perf_counter()
        with urllib.request.urlopen(self.url + path, timeout=120) as r:
            body = r.read()
            timing = r.headers["Server-Timing"]
        client = (time.perf_counter() - t0) * 1000
        return float(timing.split("dur=")[1]), client, len(body)

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def _browser_heatmap_ms(url: str) -> float | None:
    """Navigation start to the heatmap drawn, in Debian's chromium (None without it)."""
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if chromium is None:
        return None
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=flags)
        page = browser.new_page()
        for _ in range(6):
            page.goto(url + "/profiles")
            page.wait_for_selector("#heatmap .main-svg")
            times.append(page.evaluate("() => performance.now()"))
        browser.close()
    return statistics.median(times[1:])


def reference(wh: Warehouse, iid: int, step: int) -> None:
    """The instance page's queries, each on a fresh query-layer connection."""
    from analysis.views import SQL_VIEWS
    from memlake.core.query import read

    p = {"i": iid, "m": MODEL, "s": step}
    at = "where model = $m and step = $s and instance_id = $i"
    for sql in (
        "select * from instances where instance_id = $i",
        "select distinct model, step from sequence_panel where instance_id = $i",
        "select step, sup_seq from sequence_panel where instance_id = $i and model = $m order by step",
        "select step, avg(sup_seq) from sequence_panel where never_treated and model = $m group by step",
        f"select surprisal, rank, entropy from token_stats {at}",
        f"select generated, match_fraction from extraction {at}",
        f"select category, memorised from taxonomy {at}",
    ):
        read(wh, sql, {k: v for k, v in p.items() if f"${k}" in sql}, views=SQL_VIEWS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/memlake-serve-bench"))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--port", type=int, default=8777)
    args = ap.parse_args()
    wh = Warehouse.at(args.out)
    done = wh.root / ".built"
    if not done.exists():
        shutil.rmtree(wh.root, ignore_errors=True)
        t0 = time.perf_counter()
        build(wh)
        done.write_text(f"{time.perf_counter() - t0:.0f} s\n")
        print(f"built {wh.root} in {done.read_text().strip()}", file=sys.stderr)
    size = sum(f.stat().st_size for f in wh.root.rglob("*.parquet"))
    print(
        f"warehouse: {size / 2**30:.1f} GiB of Parquet as read (hard links counted per path)", file=sys.stderr
    )
    rng = np.random.default_rng(1)
    n = PER_COHORT * len(COHORTS) + VALIDATION
    server = Server(wh, args.port)
    t0 = time.perf_counter()
    server.get("/instance/0")  # first request: the decode table, the first reads
    first_ms = (time.perf_counter() - t0) * 1000
    mid = STEPS[len(STEPS) // 2]
    pages = {
        "instance page": lambda: f"/instance/{rng.integers(n)}",
        "slider step (api/at)": lambda: (
            f"/api/instance/{rng.integers(n)}/at?model={MODEL}&step={rng.choice(STEPS)}"
        ),
        "profiles heatmap (20,449 cells)": lambda: "/profiles",
        "panel, filtered": lambda: (
            "/panel?"
            + urllib.parse.urlencode(
                {
                    "checkpoint": f"{MODEL}@{mid}",
                    "split": "train",
                    "category": "recitation",
                    "page": rng.integers(20),
                }
            )
        ),
        "SQL API (group by over 2.5 M rows)": lambda: (
            "/api/sql?q="
            + urllib.parse.quote("select step, avg(sup_seq) from sequence_panel group by step order by step")
        ),
    }
    rows = []
    for name, path in pages.items():
        server.get(path())  # warm
        got = [server.get(path()) for _ in range(args.repeats)]
        server_ms = [s for s, _, _ in got]
        rows.append(
            {
                "page": name,
                "server_ms_median": statistics.median(server_ms),
                "server_ms_max": max(server_ms),
                "client_ms_median": statistics.median(c for _, c, _ in got),
                "kib": statistics.median(b for _, _, b in got) / 1024,
            }
        )
    rss = server.peak_rss_mib()
    browser_ms = _browser_heatmap_ms(server.url)
    server.close()
    ref = []
    for _ in range(max(3, args.repeats // 4)):
        t0 = time.perf_counter()
        reference(wh, int(rng.integers(n)), STEPS[-1])
        ref.append((time.perf_counter() - t0) * 1000)
    ref_ms = statistics.median(ref)
    inst = rows[0]["server_ms_median"]
    result = {
        "warehouse": {
            "instances": n,
            "checkpoints": len(STEPS),
            "positions": ROW - 1,
            "cells": len(COHORTS) ** 2,
        },
        "first_request_ms": first_ms,
        "pages": rows,
        "server_peak_rss_mib": rss,
        "browser_heatmap_drawn_ms": browser_ms,
        "reference_instance_queries_ms": ref_ms,
        "speedup_instance_vs_reference": ref_ms / inst,
    }
    out = REPO_ROOT / "bench" / "results" / "serve.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("| page | server time, median | max | client time | response |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['page']} | {r['server_ms_median']:.0f} ms | {r['server_ms_max']:.0f} ms | "
              f"{r['client_ms_median']:.0f} ms | {r['kib']:.0f} KiB |")  # fmt: skip
    print(f"\nfirst request (decode table, cold reads): {first_ms:.0f} ms; server peak RSS {rss:.0f} MiB")
    if browser_ms is not None:
        print(f"heatmap drawn in headless chromium: {browser_ms:.0f} ms from navigation (median of 5)")
    print(f"instance page queries on a fresh connection each (reference): {ref_ms:.0f} ms, "
          f"{ref_ms / inst:.1f}x the served page")  # fmt: skip


if __name__ == "__main__":
    main()
