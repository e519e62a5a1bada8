"""Counterfactual twins: the held-out set H and the fillers that replace it in a twin's training.

A twin `<model>-twin` is trained exactly as its model is (same initialisation, optimiser, data
order and checkpoint steps) except that every row of H is replaced, at each of its positions in
the data order, by its filler. So a held-out row's outcome under the model minus its outcome
under the twin is the true effect of training on it.

- H is a seeded random half of the panel's natural training rows (the rows the profiles fit by
  default), drawn with the config seed plus `HELDOUT_SEED_OFFSET`: the same for every model.
- A filler is a fresh natural row of the held-out row's source (prose or code): packed from the
  corpus's documents right after the corpus's own rows (`fresh_rows`), so no model sees its
  text otherwise, and drawn with the config seed plus `FILLER_SEED_OFFSET`.

`HeldOutUnit` writes H and the fillers as the twin's `twin_heldout` partition; the twin's
training reads them from there (`substitutions`), so the lake holds what the twin trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from transformers import AutoTokenizer

from ingest.corpus.build import fresh_rows
from ingest.panel import is_hub_import, panel_instance_ids
from memlake.core import lake, settings
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.twins import twin_name
from memlake.core.unit import Computed, WarehouseUnit

# Fixed offsets from the config seed: the corpus and the panel draw from the seed itself.
HELDOUT_SEED_OFFSET = 1_000_003
FILLER_SEED_OFFSET = 1_000_033
FILLER_SOURCES = ("prose", "code")  # the natural sources the corpus packs fresh rows of


@dataclass(frozen=True)
class Draw:
    """The config sections H and its fillers are drawn from (with the config seed)."""

    corpus: settings.Corpus
    panel: settings.Panel


def heldout_ids(instances: pa.Table, panel: settings.Panel, seed: int, wh: Warehouse) -> np.ndarray:
    """H, sorted: a seeded random half (rounded down) of the panel's natural training rows."""
    ids = panel_instance_ids(wh, panel.record(), seed)
    inst = instances.filter(pc.is_in(instances["instance_id"], pa.array(ids)))
    natural = (np.asarray(inst["split"].to_pylist()) == "train") & (
        np.asarray(inst["artifact"].to_pylist()) == "none"
    )
    pool = np.sort(inst["instance_id"].to_numpy()[natural])
    rng = np.random.default_rng(seed + HELDOUT_SEED_OFFSET)
    return np.sort(rng.choice(pool, size=len(pool) // 2, replace=False))


def fillers(
    wh: Warehouse, inst: pa.Table, held: np.ndarray, corpus: settings.Corpus, seed: int, offset: int
) -> list[np.ndarray]:
    """A fresh natural row of the same source (prose or code) for each row of `held`, text no
    instance holds, drawn with `seed + offset`; a planted row of another source (a template) gets
    a prose row. `inst`: instances (instance_id, artifact, source, tokens)."""
    source = {
        i: s if s in FILLER_SOURCES else "prose"
        for i, s in zip(inst["instance_id"].to_pylist(), inst["source"].to_pylist(), strict=True)
    }
    wanted = {src: sum(source[int(i)] == src for i in held) for src in FILLER_SOURCES}
    tokenizer = AutoTokenizer.from_pretrained(str(wh.tokenizer))
    fresh = fresh_rows(corpus, seed, tokenizer, inst, {s: n for s, n in wanted.items() if n})
    rng = np.random.default_rng(seed + offset)
    drawn = {s: iter(rng.choice(len(fresh[s]), size=n, replace=False)) for s, n in wanted.items() if n}
    return [fresh[source[int(i)]][next(drawn[source[int(i)]])] for i in held]


def heldout_table(
    wh: Warehouse, twin: str, corpus: settings.Corpus, panel: settings.Panel, seed: int
) -> pa.Table:
    """The twin's `twin_heldout` rows: H and a filler of the same source for each row."""
    if is_hub_import(wh):
        raise MemlakeError("twins need the embedded corpus: this warehouse's instances are a Hub import")
    inst = lake.read_table(wh, "instances", columns=["instance_id", "split", "artifact", "source", "tokens"])
    held = heldout_ids(inst, panel, seed, wh)
    return pa.table(
        {
            "model": [twin] * len(held),
            "instance_id": pa.array(held, pa.int64()),
            "filler_tokens": pa.array(fillers(wh, inst, held, corpus, seed, FILLER_SEED_OFFSET), lake.TOKENS),
        }
    )


@dataclass(frozen=True)
class HeldOutUnit(WarehouseUnit):
    """The `twin_heldout` partition of one twin: its held-out rows and their fillers."""

    model: str  # the model the twin is the twin of
    corpus: settings.Corpus
    panel: settings.Panel
    seed: int
    root: str  # the warehouse root (a string: units pickle)
    table = "twin_heldout"

    @property
    def partition(self) -> dict[str, Any]:
        return {"model": twin_name(self.model)}

    def compute(self, log) -> Computed:
        table = heldout_table(self.warehouse, twin_name(self.model), self.corpus, self.panel, self.seed)
        provenance = {
            "twin_of": self.model,
            "panel": self.panel.record(),
            "seed": self.seed,
            "heldout_seed": self.seed + HELDOUT_SEED_OFFSET,
            "filler_seed": self.seed + FILLER_SEED_OFFSET,
        }
        return Computed(table, provenance=provenance, summary={"heldout": table.num_rows})


def substitutions(wh: Warehouse, twin: str) -> dict[int, np.ndarray]:
    """Training instance id -> the filler trained in its place, from the twin's `twin_heldout`
    partition (`replacements`)."""
    part = {"model": twin}
    if not lake.is_complete(wh, "twin_heldout", part):
        raise MemlakeError(f"twin_heldout has no partition for {twin!r}: run `memlake suite train --twins`")
    held = lake.read_table(wh, "twin_heldout")
    held = held.filter(pc.equal(held["model"], twin))
    by_id = zip(held["instance_id"].to_pylist(), held["filler_tokens"].to_pylist(), strict=True)
    return replacements(wh, {i: np.asarray(f, np.int64) for i, f in by_id})


def replacements(wh: Warehouse, held: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Training instance id -> the row trained in its place: each held-out row's filler for the
    row and for every training row with the same tokens (a natural duplicate or a planted copy
    would otherwise show the model the held-out text)."""
    inst = lake.read_table(wh, "instances", columns=["instance_id", "split", "tokens"])
    train = inst.filter(pc.equal(inst["split"], "train"))
    by_key: dict[bytes, list[int]] = {}
    for i, t in zip(train["instance_id"].to_pylist(), train["tokens"].to_pylist()):
        by_key.setdefault(np.asarray(t, np.int32).tobytes(), []).append(i)
    tokens = dict(zip(inst["instance_id"].to_pylist(), inst["tokens"].to_pylist()))
    out: dict[int, np.ndarray] = {}
    for i, filler in held.items():
        for j in by_key[np.asarray(tokens[i], np.int32).tobytes()]:
            out[j] = np.asarray(filler, np.int64)
    return out
