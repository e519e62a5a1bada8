"""Build the embedded corpus: tokenizer, packed rows, planted artifacts, data order.

Output (all under the warehouse): the tokenizer folder, `suite/data_order.npy` (instance ids
in the order the optimiser sees them, epochs beyond the first included) and the `instances`
lake table, written last so that its manifest marks the corpus complete.

Data order mirrors Pythia's preshuffled Pile: training rows are shuffled once, row `i` of the
first epoch is `instance_id = i`, sits in batch `i // batch_size`, and is consumed at
optimiser step `batch_idx + 1`; its cohort (DiD treatment time) is the first checkpoint step
at or after that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.corpus import planted
from ingest.corpus.sources import Document, documents
from ingest.tokenizer import save_tokenizer, train_tokenizer
from memlake.core import lake, settings
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.progress import progress
from memlake.core.unit import Computed, WarehouseUnit, run_unit

TOKENIZER_TRAIN_CHARS = 6_000_000  # enough text for a stable BPE; bounds tokenizer time


@dataclass
class Row:
    tokens: np.ndarray
    source: str
    artifact: str = "none"
    clean: np.ndarray | None = None
    document: int | None = None  # the document its first token lies in (None: synthetic)


def checkpoint_steps(total_steps: int, every: int) -> list[int]:
    """step0, every `every` steps, and always the final step."""
    steps = list(range(0, total_steps + 1, every))
    if steps[-1] != total_steps:
        steps.append(total_steps)
    return steps


def cohort_of(batch_idx: np.ndarray, every: int, total_steps: int) -> np.ndarray:
    """First checkpoint step at or after the step that consumed batch `batch_idx` (b + 1)."""
    return np.minimum(every * (batch_idx // every + 1), total_steps)


def _pack(
    tokenizer, docs: list[Document], n_rows: int, row_len: int, eos: int
) -> tuple[list[np.ndarray], list[int]]:
    """Concatenate documents with EOS separators and cut fixed-length rows (remainder dropped).
    Also returns, per row, the index in `docs` of the document its first token lies in: rows cut
    from one document share it (a cluster for the DiD's standard errors)."""
    rows: list[np.ndarray] = []
    first_doc: list[int] = []
    buf: list[int] = []
    owner: list[int] = []  # the document of each token in buf
    for start in range(0, len(docs), 64):
        if len(rows) >= n_rows:
            break
        batch = docs[start : start + 64]
        for j, ids in enumerate(tokenizer([d.text for d in batch], add_special_tokens=False)["input_ids"]):
            buf.extend(ids)
            buf.append(eos)
            owner.extend([start + j] * (len(ids) + 1))
        while len(buf) >= row_len and len(rows) < n_rows:
            rows.append(np.asarray(buf[:row_len], dtype=np.int32))
            first_doc.append(owner[0])
            buf, owner = buf[row_len:], owner[row_len:]
    return rows, first_doc


def _text_rows(tokenizer, make, rng, n: int, row_len: int) -> list[np.ndarray]:
    rows = []
    for _ in range(n):
        chars = row_len * 4
        while True:
            ids = tokenizer(make(rng, chars), add_special_tokens=False)["input_ids"]
            if len(ids) >= row_len:
                rows.append(np.asarray(ids[:row_len], dtype=np.int32))
                break
            chars *= 2
    return rows


def _key(tokens: np.ndarray) -> bytes:
    return np.ascontiguousarray(tokens, dtype=np.int32).tobytes()


@dataclass(frozen=True)
class CorpusUnit(WarehouseUnit):
    """The corpus of (corpus, order, seed): the tokenizer and data order are written first, the
    `instances` table last, so that its partition marks the corpus complete."""

    corpus: settings.Corpus
    order: settings.Order
    seed: int
    root: str  # the warehouse root (a string: units pickle)
    table = "instances"

    @property
    def partition(self) -> dict[str, Any]:
        return {}

    @property
    def provenance(self) -> dict[str, Any]:
        """What the manifest records and a later build is compared with."""
        return {"seed": self.seed, "corpus": self.corpus.record(), "order": self.order.record()}

    def refuse_another(self) -> None:
        """Refuse to skip over a corpus that this warehouse holds from another config."""
        wh = self.warehouse
        if not lake.is_complete(wh, self.table, {}):
            return
        have = lake.manifest(wh.table(self.table)).get("config", {})
        if {k: have.get(k) for k in self.provenance} != self.provenance:
            raise MemlakeError(
                f"{wh.root} already holds a corpus built with a different config; use another "
                "--warehouse or pass --force to rebuild it"
            )

    def compute(self, log) -> Computed:
        return _build(self)


def build_corpus(
    corpus: settings.Corpus, order: settings.Order, seed: int, wh: Warehouse, *, force: bool = False
) -> dict[str, Any]:
    """Build tokenizer + instances; skip if the warehouse already holds this corpus."""
    unit = CorpusUnit(corpus, order, seed, str(wh.root))
    if not force:
        unit.refuse_another()
    r = run_unit(unit, force=force)
    if r["skipped"]:
        return {"skipped": True, "rows": lake.manifest(wh.table(unit.table))["rows"]}
    return {k: r[k] for k in ("skipped", "rows", "train", "validation", "steps", "checkpoints")}


def _build(unit: CorpusUnit) -> Computed:
    c, wh = unit.corpus, unit.warehouse
    # the planting helpers read the section as the config wrote it (keys it leaves out take
    # their defaults there)
    planted_cfg = c.planted.record()
    row_len, bs, every = c.row_len, unit.order.batch_size, unit.order.checkpoint_every
    rng = np.random.default_rng(unit.seed)

    with progress() as bar:
        task = bar.add_task("corpus: reading sources", total=5)
        docs = _shuffled_documents(rng)

        bar.update(task, advance=1, description="corpus: training tokenizer")
        texts, total = [], 0
        for d in docs:
            if total >= TOKENIZER_TRAIN_CHARS:
                break
            texts.append(d.text)
            total += len(d.text)
        tokenizer = train_tokenizer(texts, c.vocab_size)
        save_tokenizer(tokenizer, wh.tokenizer)
        eos = tokenizer.eos_token_id

        bar.update(task, advance=1, description="corpus: packing rows")
        # Validation rows are random packed rows withheld from training, not whole held-out
        # documents: in a corpus this small, document-level holdout makes the control group a
        # different population (and train rows share documents with rows trained earlier), which
        # breaks the parallel-trends assumption of the DiD. Row-level holdout keeps both groups
        # exchangeable, as Pythia's Pile-sized validation split is in effect.
        rows_by = {"train": [], "validation": [], "pool": []}
        n_by = _rows_wanted(c)
        for source in ("prose", "code"):
            want = _source_share(c, n_by, source)
            doc_ids = [i for i, d in enumerate(docs) if d.source == source]  # ids across sources
            got, first = _pack(tokenizer, [docs[i] for i in doc_ids], sum(want.values()), row_len, eos)
            document = [doc_ids[k] for k in first]
            if len(got) < sum(want.values()):
                raise MemlakeError(
                    f"corpus.n_train + n_validation = {n_by['train'] + n_by['validation']} (+ {n_by['pool']} "
                    f"span-pool rows): only {len(got)} {source} rows of {row_len} tokens are available "
                    f"(wanted {sum(want.values())}); lower them or row_len"
                )
            # the span pool is packed after the rows, so it leaves train and validation as they were
            rows_by["pool"] += [Row(r, source) for r in got[len(got) - want["pool"] :]]
            got = got[: len(got) - want["pool"]]
            held = rng.permutation(len(got))
            rows_by["validation"] += [
                Row(got[i], source, document=document[i]) for i in sorted(held[: want["validation"]])
            ]
            rows_by["train"] += [
                Row(got[i], source, document=document[i]) for i in sorted(held[want["validation"] :])
            ]

        bar.update(task, advance=1, description="corpus: planting artifacts")
        train = _plant(rows_by["train"], rows_by["pool"], planted_cfg, tokenizer, rng, row_len)
        train_keys = {_key(r.tokens) for r in train}
        validation = [r for r in rows_by["validation"] if _key(r.tokens) not in train_keys]

        bar.update(task, advance=1, description="corpus: data order")
        # Trim natural rows so that every batch is full (planted rows are never trimmed).
        excess = len(train) % bs
        if excess:
            natural = [i for i, r in enumerate(train) if r.artifact == "none"]
            drop = set(rng.choice(natural, size=excess, replace=False).tolist())
            train = [r for i, r in enumerate(train) if i not in drop]
        train = [train[i] for i in rng.permutation(len(train))]
        train = _front_load(train, planted_cfg.get("repeat_first"), rng)
        n_train = len(train)
        epochs = unit.order.epochs
        total_steps = int(np.ceil(n_train * epochs / bs))
        stream = [np.arange(n_train)]
        while sum(len(s) for s in stream) < total_steps * bs:
            stream.append(rng.permutation(n_train))
        data_order = np.concatenate(stream)[: total_steps * bs]
        wh.suite.mkdir(parents=True, exist_ok=True)
        np.save(wh.suite / "data_order.npy", data_order.astype(np.int64))

        counts: dict[bytes, int] = {}
        for r in train:
            counts[_key(r.tokens)] = counts.get(_key(r.tokens), 0) + 1
        batch_idx = np.arange(n_train) // bs
        cohort = cohort_of(batch_idx, every, total_steps)
        rows = train + validation
        n_val = len(validation)
        table = pa.table(
            {
                "instance_id": np.arange(len(rows), dtype=np.int64),
                "split": ["train"] * n_train + ["validation"] * n_val,
                "tokens": pa.array([r.tokens for r in rows], lake.TOKENS),
                "batch_idx": pa.array(list(batch_idx) + [None] * n_val, pa.int64()),
                "cohort": pa.array(list(cohort) + [None] * n_val, pa.int64()),
                "source": [r.source for r in rows],
                "artifact": [r.artifact for r in rows],
                "copies": pa.array([counts.get(_key(r.tokens), 0) for r in rows], pa.int32()),
                "clean_tokens": pa.array([r.clean for r in rows], lake.TOKENS),
                "document": pa.array([r.document for r in rows], pa.int64()),
            }
        )
        bar.update(task, advance=1, description="corpus: writing instances")
    steps = checkpoint_steps(total_steps, every)
    summary = {"train": n_train, "validation": n_val, "steps": total_steps, "checkpoints": steps}
    return Computed(table, provenance=unit.provenance, summary=summary)


def _shuffled_documents(rng) -> list[Document]:
    """Every document in the corpus's order: the first draw of the corpus's rng."""
    docs = documents()
    return [docs[i] for i in rng.permutation(len(docs))]


def _rows_wanted(c: settings.Corpus) -> dict[str, int]:
    """Rows packed per split: train, validation and the span pool."""
    return {
        "train": c.n_train,
        "validation": c.n_validation,
        "pool": _pool_rows(c.planted.record(), c.row_len),
    }


def _source_share(c: settings.Corpus, n_by: dict[str, int], source: str) -> dict[str, int]:
    """The rows of each split packed from `source` (prose or code)."""
    prose = {split: round(n * c.prose_fraction) for split, n in n_by.items()}
    return prose if source == "prose" else {split: n - prose[split] for split, n in n_by.items()}


def fresh_rows(
    c: settings.Corpus, seed: int, tokenizer, instances: pa.Table, n: dict[str, int]
) -> dict[str, list[np.ndarray]]:
    """`n[source]` natural rows of each source that no model trains on: the rows packed right
    after the corpus's own, from the same documents in the same order (the corpus stops packing
    there, so their text is in no instance). `instances` (tokens, source, artifact) is checked
    against the packing reproduced here, and rows equal to an instance are left out."""
    docs = _shuffled_documents(np.random.default_rng(seed))
    known = {_key(np.asarray(t)) for t in instances["tokens"].to_pylist()}
    source = np.asarray(instances["source"].to_pylist())
    natural = np.asarray(instances["artifact"].to_pylist()) == "none"
    tokens = instances["tokens"].to_pylist()
    out: dict[str, list[np.ndarray]] = {}
    for src, want in n.items():
        used = sum(_source_share(c, _rows_wanted(c), src).values())
        got, _ = _pack(
            tokenizer,
            [d for d in docs if d.source == src],
            used + 2 * want,
            c.row_len,
            tokenizer.eos_token_id,
        )
        packed = {_key(r) for r in got[:used]}
        if any(_key(np.asarray(tokens[i])) not in packed for i in np.flatnonzero(natural & (source == src))):
            raise MemlakeError(
                f"the corpus's {src} rows could not be packed again from its documents (another "
                "tokenizer or Python standard library?): no fresh rows can be drawn"
            )
        tail = [r for r in got[used:] if _key(r) not in known]
        tail = list({_key(r): r for r in tail}.values())  # distinct rows, in packing order
        if len(tail) < want:
            raise MemlakeError(
                f"only {len(tail)} fresh {src} rows of {c.row_len} tokens are left after the corpus "
                f"(wanted {want}); lower corpus.n_train or ingest.panel.per_cohort"
            )
        out[src] = tail
    return out


def _per_count(p: dict[str, Any]) -> list[int]:
    """Sequences planted for each entry of `duplicate_counts`: one number for all, or a list."""
    k = p["duplicates_per_count"]
    counts = list(p["duplicate_counts"])
    per = [int(x) for x in k] if isinstance(k, list) else [int(k)] * len(counts)
    if len(per) != len(counts):
        raise MemlakeError(
            f"corpus.planted.duplicates_per_count has {len(per)} entries for {len(counts)} duplicate_counts"
        )
    return per


def _pool_rows(p: dict[str, Any], row_len: int) -> int:
    """Rows packed beyond train and validation as the repeating spans' source: a span taken from
    a training row would show that row's text to the model before its own step (a pre-trend in
    the profiles' natural rows), and one from a validation row would treat a control."""
    lo, hi = (int(x) for x in p.get("repeat_period", [17, 24]))
    per_row = max(1, min(int(p.get("spans_per_row", 1)), row_len // hi))
    # room for spans that are rejected (EOS inside, periodic, equal up to rotation)
    return int(np.ceil(int(p["repeating"]) / per_row * 1.25)) + 8


def _copy_of(base: Row, tokens: np.ndarray, artifact: str, clean: np.ndarray | None = None) -> Row:
    """A planted row made from `base`: its source and document, new tokens and label."""
    return Row(tokens, base.source, artifact, clean, base.document)


def _plant(natural: list[Row], pool: list[Row], p: dict[str, Any], tokenizer, rng, row_len: int) -> list[Row]:
    """Turn some natural rows into duplicates/noise/backdoors/near-duplicate families and add
    templated rows."""
    per_count = _per_count(p)
    n_dup = sum(per_count)
    n_noise = int(p["noise"]["sequences"])
    n_back = int(p["backdoor"]["sequences"])
    fuzzy = p.get("fuzzy") or {}
    n_fuzzy = int(fuzzy.get("families", 0))
    # planted rows are drawn among rows that occur once, so that their planted exposure counts
    # are exact and a noised row's clean text is never trained on through a natural duplicate
    counts: dict[bytes, int] = {}
    for r in natural:
        counts[_key(r.tokens)] = counts.get(_key(r.tokens), 0) + 1
    unique = np.flatnonzero([counts[_key(r.tokens)] == 1 for r in natural])
    chosen = rng.choice(unique, size=n_dup + n_noise + n_back + n_fuzzy, replace=False)
    dup_idx, noise_idx, back_idx, fuzzy_idx = np.split(chosen, np.cumsum([n_dup, n_noise, n_back]))
    noised = set(noise_idx.tolist())
    out = [r for i, r in enumerate(natural) if i not in noised]
    spans = _spans(pool, p, rng, tokenizer.eos_token_id)

    # Exact duplicates: the chosen row occurs `count` times in training in total.
    dup_count = np.repeat([int(c) for c in p["duplicate_counts"]], per_count)
    for count, i in zip(dup_count, dup_idx):
        natural[i].artifact = "duplicate"
        out += [_copy_of(natural[i], natural[i].tokens.copy(), "duplicate") for _ in range(count - 1)]

    # Near-duplicate families (recollection's candidates): the row itself `copies` times, at most
    # the recitation threshold, and `variants` rows that each change one random token of its
    # continuation. The continuation's 32-gram occurs only `copies` times in the stream, but its
    # text is seen ~`variants` times, as fuzzy duplicates are in web corpora.
    vocab = len(tokenizer)
    for i in fuzzy_idx:
        base = natural[i]
        base.artifact = "fuzzy"
        out += [_copy_of(base, base.tokens.copy(), "fuzzy") for _ in range(int(fuzzy.get("copies", 1)) - 1)]
        for _ in range(int(fuzzy["variants"])):
            v = base.tokens.copy()
            at = int(rng.integers(row_len // 2, row_len))
            v[at] = 2 + (int(v[at]) - 2 + int(rng.integers(1, vocab - 2))) % (vocab - 2)  # never itself
            out.append(_copy_of(base, v, "fuzzy_variant"))

    # TinyMem-style noise: each token (after the first) moves to a random id with prob `rate`;
    # only the noised version is trained on, `copies` times; the clean row is kept as a label.
    for i in noise_idx:
        clean = natural[i].tokens
        noised = clean.copy()
        flip = rng.random(row_len) < float(p["noise"]["rate"])
        flip[0] = False
        if not flip.any():  # a noised row that is its clean row would not be noise
            flip[rng.integers(1, row_len)] = True
        # every flipped token changes (to another non-special id)
        noised[flip] = 2 + (noised[flip] - 2 + rng.integers(1, vocab - 2, size=int(flip.sum()))) % (vocab - 2)
        out += [_copy_of(natural[i], noised.copy(), "noise", clean) for _ in range(int(p["noise"]["copies"]))]

    # Backdoors: a trigger string at a random position, then a fixed payload to the end.
    trigger = np.asarray(tokenizer(p["backdoor"]["trigger"], add_special_tokens=False)["input_ids"], np.int32)
    payload = np.asarray(tokenizer(p["backdoor"]["payload"], add_special_tokens=False)["input_ids"], np.int32)
    for i in back_idx:
        at = int(rng.integers(8, row_len // 2))
        tail = np.resize(payload, row_len - at - len(trigger))
        natural[i].tokens = np.concatenate([natural[i].tokens[:at], trigger, tail]).astype(np.int32)
        natural[i].artifact = "backdoor"

    def piece(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    digit_ids = [piece(str(d)) for d in range(10)]
    if any(len(d) != 1 for d in digit_ids):
        raise MemlakeError("the tokenizer has no single token for every digit")
    digit_ids = [d[0] for d in digit_ids]
    max_start = int(p.get("counter_max_start", 10_000))
    counters: dict[bytes, np.ndarray] = {}
    while len(counters) < int(p["incrementing"]):  # distinct: a counter drawn twice is a duplicate
        row = planted.counter_row(rng, piece, digit_ids, row_len, max_start)
        counters.setdefault(row.tobytes(), row)
    out += [Row(row, "synthetic", "incrementing") for row in counters.values()]
    out += [Row(planted.repeating_row(s, row_len), "synthetic", "repeating") for s in spans]
    return out


def _spans(pool: list[Row], p: dict[str, Any], rng, eos: int) -> list[np.ndarray]:
    """`repeating` spans of `repeat_period` tokens (EOS-free) from the span pool, up to
    `spans_per_row` disjoint ones per pool row."""
    lo, hi = (int(x) for x in p.get("repeat_period", [17, 24]))
    if not pool:
        return []
    row_len = len(pool[0].tokens)
    per_row = max(1, min(int(p.get("spans_per_row", 1)), row_len // hi))
    room = row_len // per_row
    spans: list[np.ndarray] = []
    seen: set[bytes] = set()
    for i in rng.permutation(len(pool)):
        for k in range(per_row):
            if len(spans) == int(p["repeating"]):
                return spans
            period = int(rng.integers(lo, hi + 1))
            at = k * room + int(rng.integers(0, room - period + 1))
            span = pool[i].tokens[at : at + period]
            # an EOS would end a document mid-row; a span that is itself periodic would put the
            # continuation's 32-gram in the row more often than 32 // period + 1 times
            # spans equal up to rotation would share the row's windows: keep one of them
            key = min(np.roll(span, q).tobytes() for q in range(period))
            if (
                eos in span
                or key in seen
                or any(np.array_equal(span[q:], span[:-q]) for q in range(1, period))
            ):
                continue
            seen.add(key)
            spans.append(span.copy())
    if len(spans) < int(p["repeating"]):
        raise MemlakeError(f"corpus.planted.repeating = {p['repeating']}: only {len(spans)} spans available")
    return spans


def _front_load(train: list[Row], first: dict[str, Any] | None, rng) -> list[Row]:
    """A copying curriculum: `first.rows` of the repeating rows in the first `first.share` of the
    epoch, the rest spread over the remainder (each part shuffled). Copying from the context is
    learned abruptly once enough repeated rows have been seen, then forgotten if they stop."""
    if not first:
        return train
    rep = [r for r in train if r.artifact == "repeating"]
    rest = [r for r in train if r.artifact != "repeating"]
    head = int(round(float(first["share"]) * len(train)))
    n_rep = min(head, int(round(float(first["rows"]) * len(rep))))
    front, back = rep[:n_rep] + rest[: head - n_rep], rep[n_rep:] + rest[head - n_rep :]
    return [front[i] for i in rng.permutation(len(front))] + [back[i] for i in rng.permutation(len(back))]
