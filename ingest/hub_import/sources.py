"""What an import reads: Pythia's stream constants, where the files come from (a Hub dataset
or a local folder) and what their split and folder names say.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memlake.core.errors import MemlakeError

# Pythia's training stream: 1024 rows per optimiser step, a checkpoint every 1000 steps, and
# the memorisation evaluations at the final checkpoint with 32-token prompts/continuations.
PYTHIA_BATCH_SIZE = 1024
PYTHIA_CHECKPOINT_EVERY = 1000
PYTHIA_FINAL_STEP = 143_000
PYTHIA_STREAM_ROWS = PYTHIA_FINAL_STEP * PYTHIA_BATCH_SIZE  # 146,432,000 rows
PROMPT_LEN = 32
GEN_LEN = 32
SAMPLE_LEN = PROMPT_LEN + GEN_LEN
READ_BATCH_ROWS = 1024  # a stats-raw row holds 3 x 2048 values: ~25 MB per batch
SAMPLE_BATCH_ROWS = 16_384  # a row of a 64-token sample with its features: ~1.5 KB, ~25 MB per batch
# The tokenizer of every Pythia model (GPT-NeoX-20B's); the pile subset's token ids are its ids.
# Recorded in the instances manifest (`config.tokenizer`) so later jobs decode with it.
PYTHIA_TOKENIZER = "EleutherAI/pythia-70m-deduped"
SCHEMES = ("deduped", "duped")

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_SPLIT_FILE = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}")  # push_to_hub: <split>-00000-of-00001
SIZE_RE = r"\d+(?:\.\d+)?[mb]"  # a model size in split and folder names: 70m, 1.4b


@dataclass
class ImportSummary:
    kind: str
    tables: list[str] = field(default_factory=list)  # lake tables this import writes
    written: int = 0  # partitions written by this call
    skipped: int = 0  # partitions already complete (or imports already merged)
    rows: int = 0  # rows written by this call

    @property
    def table(self) -> str:
        return ", ".join(self.tables)


def resolve_source(source: str, allow_patterns: list[str] | None = None, revision: str | None = None) -> Path:
    """A local directory as is, or a Hub dataset id downloaded (only `allow_patterns`) to the cache."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or not _REPO_ID.match(source):
        raise MemlakeError(f"{source!r} is neither a local directory nor a Hub dataset id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(
            repo_id=source, repo_type="dataset", allow_patterns=allow_patterns, revision=revision
        )
    except Exception as e:  # offline, unknown repo, HTTP errors: many exception types, one message
        first = str(e).splitlines()[0] if str(e) else ""
        raise MemlakeError(f"cannot download Hub dataset {source!r} ({type(e).__name__}: {first})") from None
    return Path(local)


def parquet_files(root: Path) -> list[Path]:
    # Hidden folders hold download caches (.cache/huggingface), never data.
    files = sorted(
        p for p in root.rglob("*.parquet") if not any(s.startswith(".") for s in p.relative_to(root).parts)
    )
    if not files:
        raise MemlakeError(f"{root}: no Parquet files found")
    return files


def split_of(path: Path) -> str:
    """`data/<split>-00000-of-00001*.parquet` (push_to_hub), else the parent folder's name."""
    m = _SPLIT_FILE.match(path.name)
    return m.group("split") if m else path.parent.name


def split_patterns(splits: Sequence[str]) -> list[str]:
    return [p for s in splits for p in (f"data/{s}-*.parquet", f"*/{s}/*.parquet")]


@dataclass(frozen=True)
class SourceFile:
    """A source file and what its split name says."""

    path: Path
    rel: str  # path inside the dataset: what manifests record
    split: str
    scheme: str | None = None
    model: str | None = None
    step: int | None = None
    origin: str | None = None  # semantic-filters: pile (representative rows) or memories


def select_files(
    root: Path,
    parse: Callable[[Path, Path, str], SourceFile],
    *,
    scheme: str,
    splits: list[str] | None,
    sizes: list[str] | None,
) -> list[SourceFile]:
    """The files of `root` whose split parses, is of `scheme` and passes the split/size filters."""
    srcs, seen = [], set()
    for path in parquet_files(root):
        split = split_of(path)
        if splits and split not in splits:
            continue
        src = parse(path, root, split)
        seen.add(split)
        if src.scheme != scheme:
            if splits:
                raise MemlakeError(
                    f"{path}: split {split!r} indexes the {src.scheme} training stream, this import the "
                    f"{scheme} one (scheme={scheme!r}); one stream per warehouse"
                )
            continue
        if sizes and src.model.split("-")[1] not in sizes:
            continue
        srcs.append(src)
    absent = sorted(set(splits or []) - seen)
    if absent:
        raise MemlakeError(f"{root}: split(s) {absent} not found (have {sorted(seen) or 'none'})")
    if not srcs:
        raise MemlakeError(f"{root}: no {scheme} splits match sizes={sizes} splits={splits}")
    return srcs


@dataclass(frozen=True)
class Origin:
    """What an import reads: its kind, dataset (a Hub id or a folder) and revision."""

    kind: str
    source: str
    revision: str | None = None

    def record(self, **where: Any) -> dict[str, Any]:
        """The manifest config of an imported partition: which dataset, revision and file(s)."""
        return {"import": self.kind, "source": self.source, "revision": self.revision, **where}


@dataclass(frozen=True)
class SplitNames:
    """An importer's split names: `pattern` matches a lowercased name with groups scheme, size and
    step (none: the final checkpoint), and optionally origin; `expected` describes the names in
    errors; `downloads(scheme, sizes)` are the files of those sizes' splits."""

    pattern: re.Pattern
    expected: str
    downloads: Callable[[str, list[str]], list[str]]

    def parse(self, path: Path, root: Path, split: str) -> SourceFile:
        m = self.pattern.match(split.lower())
        if not m:
            raise MemlakeError(f"{path}: split {split!r} is not {self.expected}")
        scheme, step = m.group("scheme"), int(m.group("step") or PYTHIA_FINAL_STEP)
        model = model_name(scheme, m.group("size"))
        rel = str(path.relative_to(root))
        return SourceFile(path, rel, split, scheme, model, step, m.groupdict().get("origin"))


def find_splits(
    origin: Origin,
    names: SplitNames,
    *,
    scheme: str,
    splits: str | Sequence[str] | None,
    sizes: str | Sequence[str] | None,
) -> list[SourceFile]:
    """The files of `scheme`'s splits that `splits` (else `sizes`, else every size) select; only
    those are downloaded."""
    splits, sizes = as_list(splits), [str(s).lower() for s in as_list(sizes) or []] or None
    patterns = split_patterns(splits) if splits else names.downloads(scheme, sizes or ["*"])
    root = resolve_source(origin.source, patterns, origin.revision)
    return select_files(root, names.parse, scheme=scheme, splits=splits, sizes=sizes)


def as_list(value: Any) -> list | None:
    # A lone string (or number) from a CLI means one item, not a sequence of characters.
    if value is None or isinstance(value, str | int):
        return None if value is None else [value]
    return list(value) or None


def model_name(scheme: str, size: str) -> str:
    # Pythia's naming: the deduped suite carries a suffix, the standard ("duped") one does not.
    return f"pythia-{size.lower()}" + ("-deduped" if scheme.lower() == "deduped" else "")


def check_scheme(scheme: str) -> str:
    s = str(scheme).lower()
    if s not in SCHEMES:
        raise MemlakeError(f"scheme {scheme!r}: expected one of {list(SCHEMES)}")
    return s
