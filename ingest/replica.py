"""An offline replica of the Pythia real path, built here: models, artifacts and stream.

memlake's users run it on Pythia checkpoints and the public artifacts, which these machines
cannot download. The replica has their shapes and names, so the real loading code runs on it
unchanged (`HF_HUB_OFFLINE=1`, `from_pretrained(HUB_ID, revision="step<N>")`):

    <out>/hf/hub/models--EleutherAI--pythia-70m-deduped/   a tiny GPTNeoX (vocabulary padded
        refs/step<N>, snapshots/<commit>/                 to 50,304, 2,048 positions) whose
                                                          revisions are named like Pythia's
    <out>/hf/hub/datasets--pietrolesci--pile-deduped-subset/     the panel, in the cache too
    <out>/artifacts/pile-deduped-subset/data/{train,validation}-00000-of-00001.parquet
    <out>/artifacts/pythia-deduped-stats-raw/70m/pythia-deduped-70m-step<N>_<time>/*.parquet
    <out>/artifacts/pythia-memorized-evals/data/deduped.70m-00000-of-00001.parquet
    <out>/stream/document.{bin,idx}   the preshuffled stream's first rows (Megatron format)

Rows are 2,049 tokens of real text (the Python standard library's sources, tokenised with a
byte-level BPE trained here), laid out as Pythia's data order: stream row i is `seq_idx` i, in
batch i // 1024 and macro-batch (cohort) 1000 * (i // 1,024,000 + 1). The stream holds only the
first rows; panel rows of later macro-batches are rows beyond it. Validation rows are never
trained, `seq_idx = -100 - i`. A few stream rows are planted: duplicated whole rows and repeated
32-token windows, so duplicate counts are known.

The model is trained here on each macro-batch's panel rows in order, checkpointing at the
revisions, and on a few planted rows throughout, which it memorises. Training sees only each
row's first `train_len` tokens: what extraction and the taxonomy sample test, at a cost a CPU
affords (the pipeline, not the replica model, is what is under test). The published artifacts
are then computed from those checkpoints by independent reference code (`ingest.replica_artifacts`:
a plain log-softmax for stats-raw, a greedy loop for memorised evals), as their authors computed them.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ingest.replica_artifacts import (
    PYTHIA_VOCAB,
    match_fractions,
    reference_token_stats,
    write_memorized_evals,
    write_panel,
    write_random_sampled,
    write_semantic_filters,
    write_stats_raw,
    write_stream,
)
from ingest.suite.model import build_model
from ingest.tokenizer import EOS, train_tokenizer

HUB_MODEL = "EleutherAI/pythia-70m-deduped"
ROW_LEN = 2049
MACRO_ROWS = 1_024_000  # rows per macro-batch: 1,000 steps x 1,024 rows


@dataclass(frozen=True)
class ReplicaSpec:
    stream_rows: int = 128
    cohorts: int = 2  # macro-batches with panel rows (cohorts 1000 .. 1000 * cohorts)
    per_cohort: int = 2
    validation: int = 3
    # planted stream rows trained throughout: enough memorised rows of one duplicate count in the
    # published sample for the taxonomy's KL-vs-duplicates (at least 5 memorised and 5 not)
    memorised: int = 6
    memorised_in_panel: int = 2  # of those, panel rows too (every panel row costs a full pass)
    train_len: int = 72  # tokens of each row the replica model trains on: prompt + 40-token test
    steps_per_revision: int = 25
    lr: float = 1e-2
    final_step: int = 143_000
    hidden: int = 32
    layers: int = 2
    heads: int = 4
    seed: int = 0

    @property
    def revisions(self) -> tuple[int, ...]:
        return (0, *(1000 * (m + 1) for m in range(self.cohorts)), self.final_step)


def build_replica(out: Path, spec: ReplicaSpec = ReplicaSpec()) -> dict[str, Any]:
    """Write the replica under `out` (idempotent: a complete replica is left as it is)."""
    out = Path(out)
    done = out / "replica.json"
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        seconds[name] = round(time.perf_counter() - t0 - sum(seconds.values()), 1)

    rng = np.random.default_rng(spec.seed)
    tokenizer = train_tokenizer(_texts(), PYTHIA_VOCAB)
    rows = _rows(tokenizer, spec.stream_rows + spec.cohorts * spec.per_cohort + spec.validation)
    stream = rows[: spec.stream_rows].copy()
    later = rows[spec.stream_rows : spec.stream_rows + (spec.cohorts - 1) * spec.per_cohort]
    val = rows[len(rows) - spec.validation :]
    memorised_idx, dup_pairs, window = _plant(stream, rng, spec)
    lap("text")

    # the panel: per_cohort stream rows of macro-batch 0, then rows of later macro-batches
    first = np.sort(
        rng.choice(np.setdiff1d(np.arange(spec.stream_rows), memorised_idx), spec.per_cohort, False)
    )
    panel_ids = [*first.tolist()]
    panel_rows = [stream[i] for i in first]
    for m in range(1, spec.cohorts):
        for j in range(spec.per_cohort):
            panel_ids.append(m * MACRO_ROWS + 17 * j + m)
            panel_rows.append(later[(m - 1) * spec.per_cohort + j])
    in_panel = memorised_idx[: spec.memorised_in_panel]  # panel rows of cohort 1000 too
    panel_ids += in_panel.tolist()
    panel_rows += [stream[i] for i in in_panel]
    val_ids = [-100 - i for i in range(spec.validation)]

    models = _train(out, tokenizer, spec, panel_ids, panel_rows, stream[memorised_idx])
    lap("train")
    artifacts = out / "artifacts"
    write_panel(artifacts / "pile-deduped-subset", panel_ids, panel_rows, val_ids, val)
    stats_steps = spec.revisions[1:2]
    ids_all = panel_ids + val_ids
    rows_all = np.stack(panel_rows + list(val))
    for step in stats_steps:
        write_stats_raw(artifacts / "pythia-deduped-stats-raw", models[step], step, ids_all, rows_all)
    lap("stats_raw")
    scores = match_fractions(models[spec.final_step], stream)
    lap("greedy")
    evals = write_memorized_evals(artifacts / "pythia-memorized-evals", stream, scores)
    write_random_sampled(artifacts / "pile-deduped-pythia-random-sampled", stream, scores)
    sample_sup = reference_token_stats(models[spec.final_step], stream[:, :64])["sup"].astype(np.float64)
    write_semantic_filters(artifacts / "semantic-filters", tokenizer, stream, scores, sample_sup)
    write_stream(out / "stream" / "document", stream)
    lap("features_and_stream")
    _cache_dataset(out / "hf" / "hub", "pietrolesci/pile-deduped-subset", artifacts / "pile-deduped-subset")
    info = {
        "hub_model": HUB_MODEL,
        "hf_home": str(out / "hf"),
        "revisions": [f"step{s}" for s in spec.revisions],
        "stats_raw_steps": list(stats_steps),
        "stream": str(out / "stream" / "document"),
        "stream_rows": spec.stream_rows,
        "panel": {"train": len(panel_ids), "validation": len(val_ids)},
        "memorised_at_final_step": evals,
        "planted": {
            "memorised_rows": memorised_idx.tolist(),
            "duplicate_rows": dup_pairs,
            "repeated_window": window,
        },
        "artifacts": {p.name: str(p) for p in sorted(artifacts.iterdir())},
        "seconds": seconds,
    }
    done.write_text(json.dumps(info, indent=2))
    return info


# --------------------------------------------------------------------------- text and rows


def _texts() -> list[str]:
    """Every standard-library source file: real text, the same on every Python 3.11."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for f in sorted(root.rglob("*.py")):
        if "test" in f.relative_to(root).parts[0] or "site-packages" in f.parts:
            continue
        try:
            out.append(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    return out


def _rows(tokenizer, n: int) -> np.ndarray:
    """The first n 2,049-token rows of the documents joined with EOS (Pythia packs this way)."""
    eos = tokenizer.convert_tokens_to_ids(EOS)
    need = n * ROW_LEN
    ids: list[int] = []
    for text in _texts():
        ids += tokenizer(text)["input_ids"] + [eos]
        if len(ids) >= need:
            break
    if len(ids) < need:
        raise ValueError(f"the standard library holds {len(ids)} tokens, fewer than {need}")
    return np.asarray(ids[:need], dtype=np.int64).reshape(n, ROW_LEN)


def _plant(stream: np.ndarray, rng, spec: ReplicaSpec):
    """Memorised rows (trained throughout), duplicated whole rows, and a 32-token window repeated
    at several places: known duplicate counts for the stream counters."""
    idx = rng.permutation(len(stream))
    memorised = np.sort(idx[: spec.memorised])
    src, dst = idx[spec.memorised : spec.memorised + 3], idx[spec.memorised + 3 : spec.memorised + 6]
    stream[dst] = stream[src]  # three rows occur twice
    holder = int(idx[spec.memorised + 6])
    window = stream[holder, 32:64].copy()
    places = idx[spec.memorised + 7 : spec.memorised + 12]
    for k, r in enumerate(places):  # the holder's continuation window, 5 more times
        stream[r, 100 + 7 * k : 132 + 7 * k] = window
    pairs = [[int(a), int(b)] for a, b in zip(src, dst)]
    return memorised, pairs, {"row": holder, "copies": 1 + len(places)}


# --------------------------------------------------------------------------- the model


def _train(out: Path, tokenizer, spec: ReplicaSpec, panel_ids, panel_rows, memorised: np.ndarray):
    """Train through the revisions: macro-batch m's panel rows before checkpoint 1000 * (m + 1),
    the memorised rows every step; each checkpoint saved as a Hub revision in the cache."""
    torch.manual_seed(spec.seed)
    model = build_model(
        {"hidden_size": spec.hidden, "layers": spec.layers, "heads": spec.heads}, PYTHIA_VOCAB, 2048
    )
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    by_cohort: dict[int, list[np.ndarray]] = {}
    for i, row in zip(panel_ids, panel_rows):
        by_cohort.setdefault(1000 * (i // MACRO_ROWS + 1), []).append(row)
    mem = torch.from_numpy(memorised[:, : spec.train_len])
    models = {}
    repo = out / "hf" / "hub" / f"models--{HUB_MODEL.replace('/', '--')}"
    for step in spec.revisions:
        if step:
            fresh = by_cohort.get(step)
            new = torch.from_numpy(np.stack(fresh)[:, : spec.train_len]) if fresh else mem[:0]
            model.train()
            for _ in range(spec.steps_per_revision):
                batch = torch.cat([mem, new])
                logits = model(input_ids=batch).logits[:, :-1]
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        _save_revision(repo, f"step{step}", model, tokenizer)
        models[step] = _frozen(model)
    (repo / "refs" / "main").write_text((repo / "refs" / f"step{spec.final_step}").read_text())
    return models


def _frozen(model):
    import copy

    return copy.deepcopy(model).eval()


def _commit(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def _save_revision(repo: Path, revision: str, model, tokenizer) -> None:
    """A revision as the Hugging Face cache holds it: refs/<branch> -> snapshots/<commit>/."""
    commit = _commit(f"{repo.name}:{revision}")
    snap = repo / "snapshots" / commit
    model.save_pretrained(str(snap))
    tokenizer.save_pretrained(str(snap))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)


def _cache_dataset(hub: Path, repo_id: str, folder: Path) -> None:
    """A dataset snapshot in the cache, so `snapshot_download(repo_id)` finds it offline."""
    import shutil

    repo = hub / f"datasets--{repo_id.replace('/', '--')}"
    commit = _commit(repo_id)
    shutil.copytree(folder, repo / "snapshots" / commit, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
