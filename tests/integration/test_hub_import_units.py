"""Hub imports run as units: a re-import skips every finished partition without rewriting it, an
interrupted import leaves nothing half-written and resumes to what an uninterrupted one writes,
and every unit pickles."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.hub_import import import_dataset, units
from ingest.hub_import.units import FileUnit, MergeUnit
from memlake.core import lake
from memlake.core.paths import Warehouse
from memlake.core.unit import run_unit
from tests.integration.test_hub_import import (
    EVALS_SCHEMA,
    PILE_SCHEMA,
    SAMPLED_SCHEMA,
    STATS_SCHEMA,
    TRAIN_IDS,
    VAL_IDS,
    _evals,
    _filters,
    _filters_dir,
    _row,
    _run_file,
    _sampled,
    _stats,
    _write,
)


def _pile(root: Path) -> Path:
    for split, ids in (("train", TRAIN_IDS), ("validation", VAL_IDS)):
        cols = {"input_ids": [_row(s) for s in ids], "seq_idx": ids}
        _write(root / "data" / f"{split}-00000-of-00001.parquet", cols, PILE_SCHEMA)
    return root


def _stats_runs(root: Path) -> Path:
    ids = TRAIN_IDS + VAL_IDS
    _write(_run_file(root, "70m", 0), _stats(ids, 0), STATS_SCHEMA)
    _write(_run_file(root, "70m", 1000, "a.parquet"), _stats(ids[:4], 1000), STATS_SCHEMA)
    _write(_run_file(root, "70m", 1000, "b.parquet"), _stats(ids[4:], 1000), STATS_SCHEMA)
    return root


def _memorized(root: Path) -> Path:
    data = root / "data"
    _write(data / "deduped.70m-00000-of-00002.parquet", _evals([5, 1024]), EVALS_SCHEMA)
    _write(data / "deduped.70m-00001-of-00002.parquet", _evals([1024, 7]), EVALS_SCHEMA)
    _write(data / "deduped.12b.23000-00000-of-00001.parquet", _evals([9, 5]), EVALS_SCHEMA)
    return root


def _random_sampled(root: Path) -> Path:
    for shard, ids in enumerate(([0, 7], [1024, 3000])):
        _write(root / "data" / f"train-0000{shard}-of-00002.parquet", _sampled(ids), SAMPLED_SCHEMA)
    return root


def _semantic(root: Path) -> Path:
    return _filters_dir(
        root,
        {
            "pile_deduped_70m": _filters([0, 5, 1024], [0.25, 1.0, 0.0]),
            "pile_deduped_12b": _filters([0, 5], [1.0, 0.5]),
            "memories_deduped_70m": _filters([5, 77]),
        },
    )


# kind -> (its source, the partitions it writes)
IMPORTS: dict[str, tuple[Callable[[Path], Path], int]] = {
    "pile-deduped-subset": (_pile, 1),
    "pythia-deduped-stats-raw": (_stats_runs, 3),
    "pythia-memorized-evals": (_memorized, 4),  # instances, extraction x 3
    "pile-deduped-pythia-random-sampled": (_random_sampled, 2 * 9),
    # instances, instance_features, extraction x 3, published_perplexities x 3
    "semantic-filters": (_semantic, 8),
}


def _partitions(wh: Warehouse) -> dict[str, tuple[str, int]]:
    """Every partition directory the imports wrote: its manifest (None if incomplete) and data
    file inode. (`checkpoints`: the models' registration, which follows every import.)"""
    out = {}
    for data in sorted(wh.lake.rglob(lake.DATA_FILE)):
        d = data.parent
        if wh.staging in d.parents or wh.table("checkpoints") in d.parents:
            continue
        manifest = d / lake.MANIFEST
        out[str(d.relative_to(wh.lake))] = (
            manifest.read_text() if manifest.exists() else None,
            data.stat().st_ino,
        )
    return out


def _contents(wh: Warehouse) -> dict[str, pa.Table]:
    return {p: pq.read_table(wh.lake / p / lake.DATA_FILE) for p in _partitions(wh)}


def _nothing_half_written(wh: Warehouse) -> None:
    assert all(manifest is not None for manifest, _ in _partitions(wh).values())
    assert not wh.staging.exists() or not any(wh.staging.iterdir())


@pytest.mark.parametrize("kind", list(IMPORTS))
def test_a_reimport_skips_every_finished_partition_without_rewriting_it(kind, tmp_path):
    make, partitions = IMPORTS[kind]
    src, wh = make(tmp_path / "src"), Warehouse.at(tmp_path / "wh")
    first = import_dataset(kind, str(src), wh)
    assert (first.written, first.skipped) == (partitions, 0)
    before = _partitions(wh)
    assert len(before) == partitions
    again = import_dataset(kind, str(src), wh)
    assert (again.written, again.skipped, again.rows) == (
        0,
        1 if kind == "pile-deduped-subset" else partitions,
        0,
    )
    assert _partitions(wh) == before  # the same manifests and the same files


def _crash_in(monkeypatch, nth: int) -> list[str]:
    """Make the `nth` unit an import computes raise after its first rows reach the writer; the
    labels of the units computed, in order."""
    computed: list[str] = []

    def crashing(data) -> Iterator[pa.Table]:
        yield next(iter([data] if isinstance(data, pa.Table) else data))
        raise RuntimeError("killed mid-write")

    for cls in (FileUnit, MergeUnit):

        def compute(self, log, real=cls.compute):
            out = real(self, log)
            computed.append(self.label)
            if len(computed) == nth:
                out.data = crashing(out.data)
            return out

        monkeypatch.setattr(cls, "compute", compute)
    return computed


@pytest.mark.parametrize(
    ("kind", "nth"),
    [
        ("pythia-deduped-stats-raw", 2),
        ("pythia-memorized-evals", 1),  # the instances merge
        ("pythia-memorized-evals", 3),
        ("pile-deduped-pythia-random-sampled", 11),
        *[("semantic-filters", n) for n in range(1, 9)],
    ],
)
def test_an_interrupted_import_resumes_and_leaves_nothing_half_written(kind, nth, tmp_path, monkeypatch):
    make, partitions = IMPORTS[kind]
    src = make(tmp_path / "src")
    clean, wh = Warehouse.at(tmp_path / "clean"), Warehouse.at(tmp_path / "wh")
    for w in (clean, wh):  # a panel already there: a merge must keep it whole when it fails
        import_dataset("pile-deduped-subset", str(_pile(tmp_path / "pile")), w)
    import_dataset(kind, str(src), clean)
    panel = _partitions(wh)

    with monkeypatch.context() as m:
        computed = _crash_in(m, nth)
        with pytest.raises(RuntimeError, match="killed mid-write"):
            import_dataset(kind, str(src), wh)
    _nothing_half_written(wh)
    finished, crashed = _partitions(wh), computed[nth - 1]
    # the units before the crash are written (a merge rewrites the panel's partition in place)
    assert len(finished) == len(panel) + nth - 1 - ("instances" in computed[: nth - 1])
    if crashed == "instances":
        assert finished["instances"] == panel["instances"]  # the old version, untouched

    resumed = import_dataset(kind, str(src), wh)
    assert (resumed.written, resumed.skipped) == (partitions - nth + 1, nth - 1)
    now = _partitions(wh)
    assert all(now[p] == finished[p] for p in finished if p != crashed)  # none written again
    got, want = _contents(wh), _contents(clean)
    assert sorted(got) == sorted(want)
    for p in want:
        assert got[p].equals(want[p]), p


@pytest.mark.parametrize("kind", list(IMPORTS))
def test_every_unit_pickles_and_runs_as_shipped(kind, tmp_path, monkeypatch):
    make, _ = IMPORTS[kind]
    src = make(tmp_path / "src")
    here, shipped = Warehouse.at(tmp_path / "here"), Warehouse.at(tmp_path / "shipped")
    import_dataset(kind, str(src), here)
    labels = []

    def run_shipped(unit, log=print, **kw):
        labels.append(unit.label)
        return run_unit(pickle.loads(pickle.dumps(unit)), log, **kw)

    monkeypatch.setattr(units, "run_unit", run_shipped)
    import_dataset(kind, str(src), shipped)
    assert labels
    got, want = _contents(shipped), _contents(here)
    assert sorted(got) == sorted(want) and all(got[p].equals(want[p]) for p in want)
