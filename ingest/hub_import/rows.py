"""The lake rows an import makes of public rows: `instances` rows (whole rows or 64-token
samples, with the batch and cohort of their stream index) and `extraction` rows at 32 -> 32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.hub_import.sources import (
    GEN_LEN,
    PROMPT_LEN,
    PYTHIA_BATCH_SIZE,
    PYTHIA_CHECKPOINT_EVERY,
    SAMPLE_LEN,
    SourceFile,
)
from memlake.core import lake


def cohorts(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(batch_idx, cohort) of training rows: the batch that consumed the row, and the first
    checkpoint after it (floor form; the DiD treatment time)."""
    batch_idx = ids // PYTHIA_BATCH_SIZE
    return batch_idx, PYTHIA_CHECKPOINT_EVERY * (batch_idx // PYTHIA_CHECKPOINT_EVERY + 1)


def instance_table(ids: np.ndarray, tokens: pa.Array, split: str, *, sample: bool) -> pa.Table:
    n = len(ids)
    train = split == "train"
    batch_idx, cohort = cohorts(ids)
    return pa.table(
        {
            "instance_id": pa.array(ids, pa.int64()),
            "split": pa.array([split] * n, pa.string()),
            "tokens": tokens,
            "batch_idx": pa.array(batch_idx, pa.int64()) if train else pa.nulls(n, pa.int64()),
            "cohort": pa.array(cohort, pa.int64()) if train else pa.nulls(n, pa.int64()),
            "source": pa.array(["pile"] * n, pa.string()),
            "artifact": pa.array(["none"] * n, pa.string()),
            "copies": pa.nulls(n, pa.int32()),  # unknown for the Pile
            "clean_tokens": pa.nulls(n, lake.TOKENS),
            "sample_only": pa.array(np.full(n, sample), pa.bool_()),
        }
    )


def extraction_partition(src: SourceFile) -> dict[str, Any]:
    # prompt/gen lengths are partition keys in newer contracts: take the keys from the spec
    full = {"model": src.model, "step": src.step, "prompt_len": PROMPT_LEN, "gen_len": GEN_LEN}
    return {k: full[k] for k in lake.spec("extraction").partition_by if k != "shard"}


def checkpoint_partition(src: SourceFile) -> dict[str, Any]:
    return {"model": src.model, "step": src.step}


def extraction_table(ids: np.ndarray, tokens: pa.Array, score: np.ndarray) -> pa.Table:
    """Extraction rows at 32 -> 32; the generated continuation is known only where it matched."""
    n = len(ids)
    memorised = score == 1.0
    cont = pc.list_slice(tokens, PROMPT_LEN, SAMPLE_LEN)
    generated = cont if memorised.all() else pc.if_else(pa.array(memorised), cont, pa.nulls(n, cont.type))
    return pa.table(
        {
            "instance_id": pa.array(ids, pa.int64()),
            "prompt_len": pa.array(np.full(n, PROMPT_LEN), pa.int32()),
            "gen_len": pa.array(np.full(n, GEN_LEN), pa.int32()),
            "generated": generated.cast(lake.TOKENS),
            "match_fraction": pa.array(score, pa.float32()),
            "memorised": pa.array(memorised, pa.bool_()),
        }
    )
