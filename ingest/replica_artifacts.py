"""The public artifacts of the Pythia replica (`ingest.replica`), in their released layouts and
column names, computed from the replica's checkpoints by reference code independent of ingest/:
a plain log-softmax for stats-raw, a greedy loop for the memorised evals and the random sample's
scores, and the taxonomy paper's feature definitions computed plainly over the stream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

SIZE = "70m"
PYTHIA_VOCAB = 50_277  # tokenizer entries; the embedding is padded to 50,304


def _parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def write_panel(root: Path, ids, rows, val_ids, val) -> None:
    """`pietrolesci/pile-deduped-subset`: `input_ids` (2,049 ids) and `seq_idx`, per split."""
    schema = pa.schema([("input_ids", pa.list_(pa.int64())), ("seq_idx", pa.int64())])
    order = np.argsort(ids)
    for split, s_ids, s_rows in (
        ("train", [ids[i] for i in order], [rows[i] for i in order]),
        ("validation", val_ids, list(val)),
    ):
        cols = {"input_ids": [r.tolist() for r in s_rows], "seq_idx": s_ids}
        _parquet(root / "data" / f"{split}-00000-of-00001.parquet", pa.table(cols, schema=schema))


@torch.no_grad()
def reference_token_stats(model, rows: np.ndarray, span: int = 256) -> dict[str, np.ndarray]:
    """The profiles paper's statistics by their definition, independently of ingest/: a float32
    log-softmax over the whole vocabulary; rank = logits strictly above the true token's. One
    row at a time, `span` positions at once (a row's logits are 2,048 x 50,304 floats)."""
    out: dict[str, list[np.ndarray]] = {"sup": [], "rank": [], "entropy": []}
    head = model.get_output_embeddings()
    for row in rows:
        ids = torch.from_numpy(row)[None]
        hidden = model.base_model(input_ids=ids[:, :-1]).last_hidden_state[0]
        parts: dict[str, list[np.ndarray]] = {"sup": [], "rank": [], "entropy": []}
        for a in range(0, hidden.size(0), span):
            logits = head(hidden[a : a + span]).float()
            logp = logits.log_softmax(-1)
            true = ids[0, 1 + a : 1 + a + span, None]
            parts["sup"].append((-logp.gather(-1, true)[:, 0]).numpy())
            parts["rank"].append((logits > logits.gather(-1, true)).sum(-1).numpy().astype(np.int32))
            parts["entropy"].append((-(logp.exp() * logp).sum(-1)).numpy())
        for k, v in parts.items():
            out[k].append(np.concatenate(v))
    return {k: np.stack(v) for k, v in out.items()}


def write_stats_raw(root: Path, model, step: int, ids, rows: np.ndarray) -> None:
    """`pietrolesci/pythia-deduped-stats-raw`: one run folder per checkpoint, `seq_idx` and the
    three per-position lists (2,048 each)."""
    s = reference_token_stats(model, rows)
    table = pa.table(
        {
            "seq_idx": pa.array(ids, pa.int64()),
            "sup": pa.array(list(s["sup"]), pa.list_(pa.float32())),
            "rank": pa.array(list(s["rank"]), pa.list_(pa.int64())),
            "entropy": pa.array(list(s["entropy"]), pa.list_(pa.float32())),
        }
    )
    run = root / SIZE / f"pythia-deduped-{SIZE}-step{step}_2024-05-01_12-00-00"
    _parquet(run / f"data-pythia-deduped-{SIZE}-step{step}.parquet", table)


@torch.no_grad()
def match_fractions(model, stream: np.ndarray) -> np.ndarray:
    """Share of each row's 32-token continuation that greedy decoding of its 32-token prompt
    reproduces: the random sample's memorisation score, by plain greedy decoding without a
    cache (the reference, not ingest's fast path)."""
    out = []
    head = model.get_output_embeddings()
    for start in range(0, len(stream), 64):
        ids = torch.from_numpy(stream[start : start + 64, :64])
        seq = ids[:, :32]
        for _ in range(32):  # only the last position is projected onto the vocabulary
            last = model.base_model(input_ids=seq).last_hidden_state[:, -1]
            seq = torch.cat([seq, head(last).argmax(-1, keepdim=True)], 1)
        out.append((seq[:, 32:] == ids[:, 32:]).float().mean(1).numpy())
    return np.concatenate(out)


def write_memorized_evals(root: Path, stream: np.ndarray, scores: np.ndarray) -> int:
    """`EleutherAI/pythia-memorized-evals` split `deduped.70m`: every stream row whose 32-token
    greedy continuation of its 32-token prompt is exact at the final step (`index`, `tokens`)."""
    keep = np.flatnonzero(scores == 1.0).tolist()
    schema = pa.schema([("index", pa.int64()), ("tokens", pa.list_(pa.int64()))])
    cols = {"index": keep, "tokens": [stream[i, :64].tolist() for i in keep]}
    _parquet(root / "data" / f"deduped.{SIZE}-00000-of-00001.parquet", pa.table(cols, schema=schema))
    return len(keep)


def write_stream(prefix: Path, stream: np.ndarray) -> None:
    from ingest.stream import write_mmap_stream

    prefix.parent.mkdir(parents=True, exist_ok=True)
    write_mmap_stream(prefix, stream.astype(np.uint16))


SCORE_COLUMNS = ("70M", "160M", "410M", "1B", "1.4B", "2.8B", "6.9B", "12B")


def write_random_sampled(root: Path, stream: np.ndarray, scores: np.ndarray) -> None:
    """`EleutherAI/pile-deduped-pythia-random-sampled`: `Index`, one memorisation score per
    model size, `Tokens` (the first 64, uint16). Every stream row is in this replica's sample;
    the replica has one model, so every size's column carries its scores."""
    cols = {"Index": np.arange(len(stream), dtype=np.int64)}
    cols.update({c: scores.astype(np.float64) for c in SCORE_COLUMNS})
    cols["Tokens"] = pa.array([r[:64].tolist() for r in stream], pa.list_(pa.uint16()))
    _parquet(root / "data" / "train-00000-of-00001.parquet", pa.table(cols))


def write_semantic_filters(
    root: Path, tokenizer, stream: np.ndarray, scores: np.ndarray, sup: np.ndarray
) -> None:
    """`usvsnsp/semantic-filters` splits `pile_deduped_70m` (the random sample with its scores)
    and `memories_deduped_70m` (the memorised rows), with the released column names. The values
    follow the taxonomy paper's definitions, computed plainly over the replica's stream; `sup`
    is the final checkpoint's surprisal over each 64-token sample, whose perplexities are
    released with the shared denominator (both windows' sums over all 63 positions)."""
    from transforms.huffman import coding_lengths
    from transforms.templating import templating_flags

    sample = stream[:, :64]
    counts = np.bincount(stream.reshape(-1), minlength=PYTHIA_VOCAB)
    windows = {}
    for row in stream:  # every 32-token window of every row, never crossing rows
        for a in range(0, stream.shape[1] - 31):
            key = row[a : a + 32].tobytes()
            windows[key] = windows.get(key, 0) + 1
    texts = tokenizer.batch_decode(sample.tolist())
    huffman = coding_lengths(texts)

    def rows(pick: np.ndarray, score: np.ndarray) -> pa.Table:
        out: dict[str, list] = {}
        for i, sc in zip(pick, score):
            toks = sample[i]
            freq = counts[toks]
            inc, rep = templating_flags(texts[i])
            row = {
                "sequence_id": int(i),
                "text": texts[i],
                "tokens": toks.tolist(),
                "is_incrementing": bool(inc),
                "is_repeating": bool(rep),
                "sequence_duplicates": windows[toks[32:64].tobytes()],
                "max_frequency": int(freq.max()),
                "avg_frequency": float(freq.mean()),
                "min_frequency": int(freq.min()),
                "median_frequency": float(np.median(freq)),
                "p25_frequency": int(np.percentile(freq, 25)),
                "p75_frequency": int(np.percentile(freq, 75)),
                "frequencies": freq.tolist(),
                "repeating_offset": 0,
                "num_repeating": 0,
                "smallest_repeating_chunk": [],
                "nl_scores": float(np.mean([c.isalpha() or c.isspace() for c in texts[i]])),
                "0_8_snowclones": 0,
                "0_9_snowclones": 0,
                "0_8_templates": 0,
                "0_9_templates": 0,
                "huffman_coding_length": float(huffman[i]),
                "memorization_score": float(sc),
                "loss": float(sup[i].mean()),
                "prompt_perplexity": float(np.exp(sup[i, :31].sum() / 63)),
                "generation_perplexity": float(np.exp(sup[i, 31:].sum() / 63)),
                "sequence_perplexity": float(np.exp(sup[i].mean())),
            }
            for k, v in row.items():
                out.setdefault(k, []).append(v)
        types = {"smallest_repeating_chunk": pa.list_(pa.int64()), "loss": pa.float64()}
        types.update({f"{w}_perplexity": pa.float64() for w in ("prompt", "generation", "sequence")})
        types.update({k: pa.int32() for k in ("repeating_offset", "num_repeating")})
        types["nl_scores"] = pa.float32()
        return pa.table({k: pa.array(v, types.get(k)) for k, v in out.items()})

    everything = np.arange(len(stream))
    _parquet(root / "data" / f"pile_deduped_{SIZE}-00000-of-00001.parquet", rows(everything, scores))
    memorised = np.flatnonzero(scores == 1.0)
    _parquet(
        root / "data" / f"memories_deduped_{SIZE}-00000-of-00001.parquet",
        rows(memorised, np.ones(len(memorised))),
    )
