"""The code-vs-NL classifier behind `transforms.code_nl.nl_score`: fitted on the local corpus, kept on disk.

Training text is on every machine:

- code:  the CPython standard library's `.py` files, verbatim (comments and docstrings kept);
- prose: the reference documentation in `pydoc_data.topics` and long standard-library docstrings,

both taken from `ingest.corpus.sources.documents()`, which already splits modules in two halves so
that no docstring used as prose also appears inside a code file. Documents are cut into windows of
about 64 tokens (`transforms.code_nl.windows`), split into train / held-out *by source file* (so
near-identical windows of one file never straddle the split), balanced per class, and fitted with
character 1-4-gram hashing features + logistic regression (cheap on a CPU, no state in the
featuriser, same result for the same seed). Code windows that are mostly comments or strings are
left out of training and of the headline held-out accuracy; the report also gives the accuracy on
*all* held-out code windows.

A fit is saved per warehouse and in a per-user shared copy, keyed by recipe, seed, Python and
scikit-learn.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from functools import cache
from pathlib import Path

import numpy as np

from transforms.code_nl import MAX_COMMENT_SHARE, label, nl_score, windows

HELD_OUT_FRACTION = 0.2
RECIPE = "code_nl-v1"  # part of the cache key: change it whenever the training recipe changes


def _group(doc_id: str) -> str:
    """The source file a document came from (a pydoc topic is its own group)."""
    kind, rest = doc_id.split(":", 1)
    return doc_id if rest.startswith("pydoc:") else f"{kind}:{rest.split(':', 1)[0]}"


def labelled_windows(max_comment_share: float = MAX_COMMENT_SHARE) -> dict[str, np.ndarray]:
    """Every window of the local corpus: `text`, `is_nl` (1 prose, 0 code), `group`, `clean`.

    `clean` is False for code windows mostly made of comments/strings (`transforms.code_nl.windows`).
    """
    from ingest.corpus.sources import documents

    texts, is_nl, groups, clean = [], [], [], []
    for doc in documents():
        for text, ok in windows(doc.text, doc.source == "code", max_comment_share):
            texts.append(text)
            is_nl.append(doc.source == "prose")
            groups.append(_group(doc.doc_id))
            clean.append(ok)
    return {
        "text": np.array(texts, dtype=object),
        "is_nl": np.array(is_nl, dtype=np.int8),
        "group": np.array(groups, dtype=object),
        "clean": np.array(clean, dtype=bool),
    }


def _balanced(idx: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Equal numbers of each class (the paper used equal samples of code and prose)."""
    by_class = [idx[y[idx] == c] for c in (0, 1)]
    n = min(len(b) for b in by_class)
    return np.sort(np.concatenate([rng.choice(b, n, replace=False) for b in by_class]))


def make_model():
    """Unfitted pipeline: stateless char n-gram hashing -> L2-regularised logistic regression."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        HashingVectorizer(
            analyzer="char", ngram_range=(1, 4), n_features=2**20, alternate_sign=False, lowercase=False
        ),
        LogisticRegression(C=10.0, max_iter=3000),
    )


def train_classifier(
    seed: int = 0,
    held_out_fraction: float = HELD_OUT_FRACTION,
    max_comment_share: float = MAX_COMMENT_SHARE,
):
    """Fit on a by-file split of the local corpus; return `(model, report)`.

    `report["held_out_accuracy"]` is on balanced, clean held-out windows at a 0.5 cut;
    `held_out_accuracy_all_code_windows` also counts docstring/comment-heavy code windows as code.
    """
    from sklearn import __version__ as sklearn_version

    t0 = time.perf_counter()
    data = labelled_windows(max_comment_share)
    rng = np.random.default_rng(seed)
    groups = np.array(sorted(set(data["group"])), dtype=object)
    held_groups = set(rng.permutation(groups)[: round(held_out_fraction * len(groups))])
    held = np.array([g in held_groups for g in data["group"]])
    y = data["is_nl"]
    idx = np.arange(len(y))
    train = _balanced(idx[~held & data["clean"]], y, rng)
    test = _balanced(idx[held & data["clean"]], y, rng)
    test_all = _balanced(idx[held], y, rng)

    model = make_model().fit(list(data["text"][train]), y[train])
    fit_s = time.perf_counter() - t0

    def evaluate(rows: np.ndarray) -> dict[str, float]:
        scores = nl_score(list(data["text"][rows]), model)
        truth = y[rows] == 1
        labels = label(scores)
        decided = labels != "uncertain"
        return {
            "accuracy": float(((scores >= 0.5) == truth).mean()),
            "nl_recall": float((scores[truth] >= 0.5).mean()),
            "code_recall": float((scores[~truth] < 0.5).mean()),
            "uncertain_share": float((~decided).mean()),
            "accuracy_when_decided": float(((labels == "nl") == truth)[decided].mean()),
        }

    clean, every = evaluate(test), evaluate(test_all)
    report = {
        "recipe": RECIPE,
        "seed": seed,
        "held_out_fraction": held_out_fraction,
        "max_comment_share": max_comment_share,
        "held_out_accuracy": clean["accuracy"],
        "held_out_accuracy_all_code_windows": every["accuracy"],
        "held_out": clean,
        "held_out_all_code_windows": every,
        "windows": {
            "total": int(len(y)),
            "code_left_out_as_comment_heavy": int((~data["clean"]).sum()),
            "train_per_class": int(len(train) // 2),
            "held_out_per_class": int(len(test) // 2),
        },
        "files": {"total": int(len(groups)), "held_out": int(len(held_groups))},
        "fit_seconds": round(fit_s, 1),
        "python": platform.python_version(),
        "sklearn": sklearn_version,
    }
    return model, report


# --------------------------------------------------------------------------- persistence


def model_dir(warehouse) -> Path:
    """Where a warehouse keeps its fitted classifier (`<root>/models/code_nl`)."""
    return Path(warehouse.root) / "models" / "code_nl"


def _paths(directory: Path, seed: int) -> tuple[Path, Path]:
    stem = Path(directory) / f"{RECIPE}-seed{seed}"
    return stem.with_suffix(".joblib"), stem.with_suffix(".json")


def _atomic_write(path: Path, write) -> None:
    """Write via a temporary file + rename, so concurrent readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save(model, report: dict, directory: Path) -> Path:
    """Persist with joblib (a pickle: load only files this code wrote) plus a JSON report."""
    import joblib

    model_path, report_path = _paths(directory, report["seed"])
    _atomic_write(model_path, lambda p: joblib.dump(model, p))
    _atomic_write(report_path, lambda p: p.write_text(json.dumps(report, indent=2)))
    return model_path


def load(directory: Path, seed: int = 0):
    """`(model, report)` saved by `save`, or None when absent or fitted by another scikit-learn."""
    import joblib
    from sklearn import __version__ as sklearn_version

    model_path, report_path = _paths(directory, seed)
    if not (model_path.exists() and report_path.exists()):
        return None
    report = json.loads(report_path.read_text())
    if (report.get("sklearn"), report.get("recipe"), report.get("python")) != (
        sklearn_version,
        RECIPE,
        platform.python_version(),  # the training text is this Python's standard library
    ):
        return None
    return joblib.load(model_path), report


def shared_dir() -> Path:
    """The per-user copy every warehouse starts from: the fit is deterministic given the recipe,
    seed, Python and scikit-learn, so a machine fits it once instead of once per warehouse."""
    from memlake.core.paths import cache_root

    return cache_root() / "code_nl"


def load_or_train(directory: Path, seed: int = 0, shared: Path | None = None):
    """The classifier under `directory`; else the shared copy (`shared_dir()`, copied into
    `directory`); else trained and saved to both."""
    found = load(directory, seed)
    if found is not None:
        return found
    shared = shared_dir() if shared is None else shared
    found = load(shared, seed)
    if found is None:
        found = train_classifier(seed=seed)
        with contextlib.suppress(OSError):  # a read-only home only costs the next warehouse a fit
            save(*found, shared)
    save(*found, directory)
    return found


@cache
def default_model():
    """A seed-0 classifier, trained once per process (use `load_or_train` to keep it on disk)."""
    return train_classifier(seed=0)[0]
