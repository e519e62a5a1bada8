"""Which instances a scoring job runs over: the panel.

Like the profiles paper's sample of the Pile (100 rows per macro-batch + 2,000 validation
rows), the panel holds a fixed number of natural training rows per cohort and a sample of the
never-trained validation split. Planted sequences are always included (their first
occurrence), so the taxonomy and mitigation stages can see every planted artifact. The panel
is a pure function of the instances table and a seed: every job and every executor rank
computes the same one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse


def panel_ids(
    instances: pa.Table,
    per_cohort: int | None,
    validation: int | None,
    seed: int,
    planted: dict[str, int] | None = None,
) -> np.ndarray:
    """Sorted instance ids of the panel; `None` means every row of that kind. `planted` caps the
    planted sequences of an artifact kind at a seeded sample of that many (the rest: all)."""
    rng = np.random.default_rng(seed)
    ids = instances["instance_id"].to_numpy()
    split = np.asarray(instances["split"].to_pylist())
    cohort = instances["cohort"].fill_null(-1).to_numpy()
    # Only a sequence's first occurrence in training order (instance ids follow it) is a unit:
    # a later copy was already "treated" by the earlier one, so sampling it into a later cohort
    # would put exposed rows in that cohort's pre-period (a spurious pre-trend), and two copies
    # are one unit observed twice.
    keys = [np.asarray(t, dtype=np.int32).tobytes() for t in instances["tokens"].to_pylist()]
    order = np.argsort(ids, kind="stable")
    first = np.zeros(len(ids), dtype=bool)
    seen: set[bytes] = set()
    for i in order:
        if keys[i] not in seen:
            seen.add(keys[i])
            first[i] = True
    artifact = np.asarray(instances["artifact"].to_pylist())
    chosen: list[np.ndarray] = []
    for g in np.unique(cohort[split == "train"]):
        # natural rows only: planted ones are all added below, so `per_cohort` is the size of each
        # cohort of the profiles' default unit set (natural rows, the paper's 100 per macro-batch)
        # whatever share of the corpus the planted artifacts take
        members = ids[(split == "train") & (cohort == g) & first & (artifact == "none")]
        take = len(members) if per_cohort is None else min(per_cohort, len(members))
        chosen.append(np.sort(rng.choice(members, size=take, replace=False)))
    val = ids[split == "validation"]
    take = len(val) if validation is None else min(validation, len(val))
    chosen.append(np.sort(rng.choice(val, size=take, replace=False)))
    # The first occurrence of every planted sequence, so later stages see every artifact; a kind
    # planted by the thousand (a curriculum, not a sample) is sampled down to its cap.
    kept = (artifact != "none") & (split == "train") & first
    for kind, cap in sorted((planted or {}).items()):
        members = ids[kept & (artifact == kind)]
        if cap is not None and len(members) > int(cap):
            kept &= artifact != kind
            chosen.append(np.sort(rng.choice(members, size=int(cap), replace=False)))
    chosen.append(ids[kept])
    return np.unique(np.concatenate(chosen))


def is_hub_import(wh: Warehouse) -> bool:
    """Whether the instances come from a Hub import (a published panel), not the embedded corpus."""
    made_by = lake.manifest(wh.table("instances")).get("config", {})
    return bool(made_by.get("imports") or made_by.get("import"))


def _whole_rows(wh: Warehouse) -> pa.Table:
    columns = ["instance_id", "split", "cohort", "artifact", "tokens", "sample_only"]
    inst = lake.read_table(wh, "instances", columns=columns)
    return inst.filter(pc.invert(pc.fill_null(inst["sample_only"], False)))


def panel_instance_ids(wh: Warehouse, panel_cfg: dict[str, Any], seed: int) -> np.ndarray:
    """The panel's instance ids, sorted: whole rows only (a `sample_only` row holds 64 tokens of
    its row, from a Hub import of memorised samples)."""
    return _panel_of(wh, _whole_rows(wh), panel_cfg, seed)


def _panel_of(wh: Warehouse, inst: pa.Table, panel_cfg: dict[str, Any], seed: int) -> np.ndarray:
    if is_hub_import(wh):
        # a Hub import's instances are already a published panel (e.g. Pythia's 16.3k rows):
        # every row is a unit, so its statistics line up with the public ones row for row
        panel_cfg = {"per_cohort": None, "validation": None}
    return panel_ids(
        inst, panel_cfg.get("per_cohort"), panel_cfg.get("validation"), seed, panel_cfg.get("planted")
    )


def described_rows(
    wh: Warehouse, ids: np.ndarray, whole: np.ndarray, panel_cfg: dict[str, Any], seed: int
) -> np.ndarray:
    """Which instance rows (`ids`; `whole`: not sample-only) a per-instance description such as
    the taxonomy features covers: every row of a Hub import (a published panel, whose later
    copies are described though not scored), else the panel's rows and the sample-only rows."""
    if is_hub_import(wh):
        return np.ones(len(ids), dtype=bool)
    return np.isin(ids, panel_instance_ids(wh, panel_cfg, seed)) | ~whole


def load_panel(wh: Warehouse, panel_cfg: dict[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(instance_ids, tokens[N, T]) of the panel (`panel_instance_ids`), sorted by instance_id."""
    inst = _whole_rows(wh)
    ids = _panel_of(wh, inst, panel_cfg, seed)  # from the rows just read, not a second read
    sel = inst.filter(pc.is_in(inst["instance_id"], pa.array(ids)))
    sel = sel.sort_by("instance_id")
    lengths = pc.list_value_length(sel["tokens"]).to_numpy()
    if len(set(lengths.tolist())) > 1:
        raise MemlakeError(f"instances: rows have different lengths {sorted(set(lengths.tolist()))[:5]}")
    tokens = np.stack(sel["tokens"].to_numpy(zero_copy_only=False)).astype(np.int64)
    return sel["instance_id"].to_numpy(), tokens


def shard_slice(n: int, shard: int, num_shards: int) -> slice:
    """Contiguous, balanced shard `shard` of `num_shards` over n rows (datatrove-style ranks)."""
    if not 0 <= shard < num_shards:
        raise MemlakeError(f"shard {shard} out of range for {num_shards} shards")
    return slice(shard * n // num_shards, (shard + 1) * n // num_shards)
