"""The panel and its token statistics: `pile-deduped-subset` (whole rows -> `instances`) and
`pythia-deduped-stats-raw` (-> `token_stats`). Whichever comes second checks that every stats
run scores exactly the panel.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.hub_import.instances import Candidates, existing_instances, instances_config, plan_instances
from ingest.hub_import.partitions import partition_dirs
from ingest.hub_import.reading import (
    FLOAT_LIST,
    INT,
    INT_LIST,
    cast_column,
    concat,
    id_column,
    read_columns,
    token_digests,
    train_id_column,
    validated,
)
from ingest.hub_import.rows import instance_table
from ingest.hub_import.sources import (
    PYTHIA_STREAM_ROWS,
    PYTHIA_TOKENIZER,
    SIZE_RE,
    ImportSummary,
    Origin,
    SourceFile,
    as_list,
    model_name,
    parquet_files,
    resolve_source,
    split_of,
)
from ingest.hub_import.units import FileUnit, imports_of, run_all
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

# hydra run_name of the stats-raw runs: pythia-deduped-<size>-step<N>_<timestamp>
_RUN_DIR = re.compile(rf"^pythia-(?P<scheme>deduped|duped)-(?P<size>{SIZE_RE})-step(?P<step>\d+)(?:_.*)?$")


# --------------------------------------------------------------------------- stats vs panel


def _panel_ids(wh: Warehouse) -> np.ndarray | None:
    """Instance ids of the whole rows (the panel), or None when there are none."""
    if not lake.is_complete(wh, "instances", {}):
        return None
    ids, _, sample = existing_instances(wh, digests=False)
    ids = ids[~sample]
    return np.sort(ids) if len(ids) else None


def _check_run_covers_panel(where: str, files: dict[str, np.ndarray], panel: np.ndarray) -> None:
    """A stats run (all its files, by name) must score exactly the panel's rows."""
    for name, ids in files.items():
        extra = ids[~np.isin(ids, panel)]
        if len(extra):
            raise MemlakeError(
                f"{name}: seq_idx {int(extra[0])} is not a panel row of instances "
                f"({len(panel)} whole rows); its seq_idx set differs from the panel's"
            )
    got = concat(list(files.values()), np.int64)
    missing = panel[~np.isin(panel, got)]
    if len(missing):
        raise MemlakeError(
            f"{where}: panel row seq_idx {int(missing[0])} is missing ({len(np.unique(got))} of "
            f"{len(panel)} panel rows scored); its seq_idx set differs from the panel's"
        )


STATS_KIND = "pythia-deduped-stats-raw"


def _check_stats_cover(wh: Warehouse, panel: np.ndarray) -> None:
    """Every imported stats run in the lake scores exactly `panel` (the panel after an import)."""
    runs: dict[tuple[str, str], dict[str, np.ndarray]] = defaultdict(dict)
    for d, values in partition_dirs(wh, "token_stats", {}):
        if not (d / lake.MANIFEST).exists():
            continue
        config = lake.manifest(d).get("config", {})
        if config.get("import") != STATS_KIND:
            continue
        name = f"token_stats {values['model']} step {values['step']} (imported from {config.get('file')})"
        ids = pq.read_table(d / lake.DATA_FILE, columns=["instance_id"])["instance_id"].to_numpy()
        runs[values["model"], values["step"]][name] = ids
    for (model, step), files in sorted(runs.items()):
        where = next(iter(files)) if len(files) == 1 else f"token_stats {model} step {step}"
        _check_run_covers_panel(where, files, panel)


# --------------------------------------------------------------------------- pile-deduped-subset


@dataclass(frozen=True)
class _PanelRows:
    """A pile-deduped-subset file's `instances` rows (whole rows), checked as they stream."""

    stream_rows: int

    def __call__(self, src: SourceFile) -> Iterator[pa.Table]:
        train = src.split == "train"
        for batch in read_columns(src.path, {"seq_idx": INT, "input_ids": INT_LIST}):
            seq = id_column(src.path, batch, "seq_idx")
            bad = seq[seq < 0] if train else seq[seq >= 0]
            if bad.size:  # the sign is what tells the two splits apart in the public data
                rule = ">= 0" if train else "< 0"
                raise MemlakeError(f"{src.path}: {src.split} row has seq_idx {int(bad[0])} (expected {rule})")
            if train:
                train_id_column(src.path, batch, "seq_idx", self.stream_rows)
            tokens = cast_column(src.path, "input_ids", batch.column("input_ids"), lake.TOKENS)
            yield instance_table(seq, tokens, src.split, sample=False)


def import_pile_deduped_subset(
    source: str,
    wh: Warehouse,
    *,
    revision: str | None = None,
    tokenizer: str = PYTHIA_TOKENIZER,
    stream_rows: int = PYTHIA_STREAM_ROWS,
) -> ImportSummary:
    """`pietrolesci/pile-deduped-subset` -> `instances` (one partition, merged).

    Train rows are rows of Pythia's preshuffled training stream: batch = seq_idx // 1024 and
    cohort (DiD treatment time) = the first checkpoint after that batch, 1000 * (seq_idx //
    1_024_000 + 1). Validation rows (seq_idx = -100 - i) were never trained on: no cohort.
    `tokenizer` (a Hub id or local folder; Pythia's by default) is recorded in the manifest as the
    tokenizer of the token ids, and `memlake taxonomy features` decodes with it. Whole rows
    replace 64-token samples of the same index (their first 64 tokens must agree); stats-raw
    runs already in the lake must score exactly the resulting panel.
    """
    origin = Origin("pile-deduped-subset", source, revision)
    out = ImportSummary(origin.kind, ["instances"])
    corpus = "pile-deduped"
    # the panel is imported whole or not at all: once merged, nothing is downloaded again
    if any(r.get("import") == origin.kind for r in imports_of(instances_config(wh, corpus))):
        out.skipped = 1
        return out
    root = resolve_source(source, ["*.parquet"], revision)
    srcs = []
    for path in parquet_files(root):
        split = split_of(path)
        if split not in ("train", "validation"):
            raise MemlakeError(f"{path}: unknown split {split!r} (expected train or validation)")
        srcs.append(SourceFile(path, str(path.relative_to(root)), split))

    rows = _PanelRows(stream_rows)
    cands = Candidates()
    for src in srcs:  # every check before anything is written
        ids, digests = [], []
        for t in rows(src):
            validated(src.path, "instances", t)
            ids.append(t["instance_id"].to_numpy())
            digests.append(token_digests(t["tokens"]))
        cands.add(src, concat(ids, np.int64), concat(digests, np.uint64))
    records = [origin.record(file=s.rel) for s in srcs]
    unit = plan_instances(
        wh,
        cands,
        rows,
        corpus=corpus,
        whole=True,
        id_col="seq_idx",
        records=records,
        tokenizer=str(tokenizer),
    )
    if unit.pending():
        before = _panel_ids(wh)
        _check_stats_cover(
            wh, np.unique(np.concatenate([*cands.ids, *([before] if before is not None else [])]))
        )
    return run_all(out, [unit])


# --------------------------------------------------------------------------- stats-raw


def _stats_run(path: Path) -> tuple[str, int]:
    """(model, step) from the run folder `<size>/pythia-deduped-<size>-step<N>_<timestamp>/`."""
    run = path.parent
    m = _RUN_DIR.match(run.name.lower())
    if not m:
        raise MemlakeError(
            f"{path}: cannot parse model and step from folder {run.name!r} "
            "(expected pythia-deduped-<size>-step<N>_<timestamp>)"
        )
    size_dir = run.parent.name.lower()
    if re.fullmatch(SIZE_RE, size_dir) and size_dir != m.group("size"):
        raise MemlakeError(
            f"{path}: run folder {run.name!r} is for size {m.group('size')} but sits in {size_dir}/"
        )
    return model_name(m.group("scheme"), m.group("size")), int(m.group("step"))


def _stats_patterns(sizes: Sequence[str] | None, steps: Sequence[int] | None) -> list[str]:
    runs = [p for n in steps for p in (f"*-step{n}_*", f"*-step{n}")] if steps else ["*"]
    return [f"{s}/{r}/*.parquet" for s in (sizes or ["*"]) for r in runs]


def import_pythia_stats_raw(
    source: str,
    wh: Warehouse,
    *,
    sizes: str | Sequence[str] | None = None,
    steps: int | Sequence[int] | None = None,
    revision: str | None = None,
) -> ImportSummary:
    """`pietrolesci/pythia-deduped-stats-raw` -> `token_stats`, one partition per (model, step,
    shard = file index within the run folder). `sizes` (e.g. ["70m"]) and `steps` restrict what
    is downloaded and imported. When `instances` holds whole rows (the panel), every run's files
    together must score exactly them (checked before anything is written); stats imported before
    the panel are checked by the panel's import."""
    kind = STATS_KIND
    out = ImportSummary(kind, ["token_stats"])
    sizes = [str(s).lower() for s in as_list(sizes) or []] or None
    steps = [int(n) for n in as_list(steps) or []] or None
    root = resolve_source(source, _stats_patterns(sizes, steps), revision)
    runs: dict[tuple[str, int], Path] = {}
    files: dict[Path, list[Path]] = defaultdict(list)
    for path in parquet_files(root):
        model, step = _stats_run(path)
        if (sizes and model.split("-")[1] not in sizes) or (steps and step not in steps):
            continue
        first = runs.setdefault((model, step), path.parent)
        if first != path.parent:  # two runs of one checkpoint would share shard numbers
            raise MemlakeError(f"{first} and {path.parent} both hold {model} step {step}; keep one of them")
        files[path.parent].append(path)
    if not files:
        raise MemlakeError(f"{root}: no runs match sizes={sizes} steps={steps}")
    origin = Origin(kind, source, revision)
    paths = {key: sorted(files[run]) for key, run in runs.items()}
    units = {
        (model, step): [
            FileUnit(
                "token_stats",
                {"model": model, "step": step, "shard": shard},
                str(wh.root),
                partial(_stats_rows, path),
                origin.record(file=str(path.relative_to(root))),
            )
            for shard, path in enumerate(paths[model, step])
        ]
        for model, step in sorted(paths)
    }
    panel = _panel_ids(wh)
    if panel is not None:  # every run with a shard to write, before anything is written
        for key, run in sorted(paths.items()):
            if any(u.pending() for u in units[key]):
                seq = {str(p): _read_ids(p, "seq_idx") for p in run}
                _check_run_covers_panel(str(run[0] if len(run) == 1 else runs[key]), seq, panel)
    return run_all(out, [u for run in units.values() for u in run])


def _stats_rows(path: Path) -> pa.Table:
    """A stats-raw file's `token_stats` rows, checked whole (a duplicated seq_idx names the file)."""
    want = {"seq_idx": INT, "sup": FLOAT_LIST, "rank": INT_LIST, "entropy": FLOAT_LIST}
    pieces = [
        pa.table(
            {
                "instance_id": id_column(path, b, "seq_idx"),
                "surprisal": cast_column(path, "sup", b.column("sup"), pa.list_(pa.float32())),
                "rank": cast_column(path, "rank", b.column("rank"), pa.list_(pa.int32())),
                "entropy": cast_column(path, "entropy", b.column("entropy"), pa.list_(pa.float32())),
            }
        )
        for b in read_columns(path, want)
    ]
    data = pa.concat_tables(pieces) if pieces else lake.spec("token_stats").file_schema.empty_table()
    return validated(path, "token_stats", data)


def _read_ids(path: Path, name: str) -> np.ndarray:
    return concat([id_column(path, b, name) for b in read_columns(path, {name: INT}, 1 << 20)], np.int64)
