"""transforms.code_nl and ingest.code_nl_classifier: a locally trained code-vs-NL classifier, its
thresholds and its cache."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest import code_nl_classifier as classifier
from transforms import code_nl


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Fitted once per session into a throwaway warehouse folder and the session's shared cache
    (tests/conftest.py points it at a temporary folder), which later warehouses start from."""
    directory = tmp_path_factory.mktemp("code_nl")
    model, report = classifier.load_or_train(directory, seed=0)
    return directory, model, report


def test_held_out_accuracy(trained):
    _, _, report = trained
    assert report["held_out_accuracy"] >= 0.9
    assert report["held_out"]["nl_recall"] >= 0.85 and report["held_out"]["code_recall"] >= 0.85
    assert report["windows"]["held_out_per_class"] >= 200  # the accuracy is not from a handful
    assert report["files"]["held_out"] > 0


CODE = [
    "def add(a, b):\n    return a + b\n\n\nclass Stack:\n    def __init__(self):\n        self.items = []\n",
    "import os\nfor root, dirs, files in os.walk('.'):\n"
    "    for f in files:\n        print(os.path.join(root, f))\n",
    "if __name__ == '__main__':\n    parser = argparse.ArgumentParser()\n    args = parser.parse_args()\n",
]
PROSE = [
    "The committee met on Tuesday to discuss the budget for next year. Most members agreed that the "
    "library needed more funding, although several raised concerns about the cost of new buildings.",
    "She walked along the river in the early morning, watching the mist lift from the water while the "
    "town slowly woke up behind her.",
]


def test_obvious_examples(trained):
    _, model, _ = trained
    scores = code_nl.nl_score(CODE + PROSE, model)
    assert scores.shape == (len(CODE) + len(PROSE),) and ((scores >= 0) & (scores <= 1)).all()
    assert list(code_nl.label(scores)) == ["code"] * len(CODE) + ["nl"] * len(PROSE)
    assert code_nl.nl_score("x = [i ** 2 for i in range(10)]", model).shape == (1,)
    assert code_nl.nl_score([], model).shape == (0,)


def test_label_thresholds():
    s = np.array([0.0, 0.4, 0.40001, 0.45, 0.5249, 0.525, 1.0])
    assert list(code_nl.label(s)) == ["code", "code", "uncertain", "uncertain", "uncertain", "nl", "nl"]
    assert code_nl.label(0.45) == "uncertain"  # scalar in, str out
    # the notebooks' single cut at 0.45 as a two-way split
    assert list(code_nl.label(s, nl_threshold=0.45 + 1e-12, code_threshold=0.45)) == [
        "code", "code", "code", "code", "nl", "nl", "nl",
    ]  # fmt: skip
    assert code_nl.label(s.reshape(7, 1)).shape == (7, 1)
    with pytest.raises(ValueError):
        code_nl.label(s, nl_threshold=0.4, code_threshold=0.5)


def test_cache_is_reused(trained, monkeypatch):
    directory, model, report = trained

    def boom(**_):
        raise AssertionError("retrained although a cached model exists")

    monkeypatch.setattr(classifier, "train_classifier", boom)
    cached, cached_report = classifier.load_or_train(directory, seed=0)
    assert cached_report == report
    np.testing.assert_array_equal(
        code_nl.nl_score(CODE + PROSE, cached), code_nl.nl_score(CODE + PROSE, model)
    )
    assert classifier.load(directory, seed=1) is None  # another seed is another model


def test_a_new_warehouse_starts_from_the_shared_copy(trained, tmp_path, monkeypatch):
    directory, model, report = trained
    shared = classifier.shared_dir()  # where the fixture's fit was saved
    assert classifier.load(shared, seed=0)[1] == report
    monkeypatch.setattr(classifier, "train_classifier", lambda **_: pytest.fail("retrained"))
    _, got = classifier.load_or_train(tmp_path / "wh2", seed=0, shared=shared)
    assert got == report and classifier.load(tmp_path / "wh2", seed=0)[1] == report
    stale = json.loads((shared / f"{classifier.RECIPE}-seed0.json").read_text())
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / f"{classifier.RECIPE}-seed0.json").write_text(json.dumps({**stale, "python": "2.7"}))
    (tmp_path / "old" / f"{classifier.RECIPE}-seed0.joblib").write_bytes(b"")
    assert classifier.load(tmp_path / "old", seed=0) is None  # fitted on another standard library


def test_balanced_sampling_is_seeded():
    y = np.array([0] * 30 + [1] * 10)
    idx = np.arange(40)
    a = classifier._balanced(idx, y, np.random.default_rng(3))
    b = classifier._balanced(idx, y, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert (y[a] == 0).sum() == (y[a] == 1).sum() == 10


@given(st.text(max_size=300))
def test_pretokens_cover_text(text):
    assert "".join(code_nl.pretokens(text)) == text


@given(st.text(max_size=600), st.integers(1, 70))
def test_window_spans_are_consecutive(text, size):
    spans = code_nl.window_spans(text, size=size, min_size=1)
    assert all(a < b for a, b in spans)
    assert all(b == a2 for (_, b), (a2, _) in zip(spans, spans[1:]))
    if text:
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert len(spans) == -(-len(code_nl.pretokens(text)) // size)


def test_non_code_mask():
    src = '"""Doc."""\nx = 1  # note\ny = "s"\n'
    mask = code_nl.non_code_mask(src)
    marked = "".join(ch for ch, m in zip(src, mask) if m)
    assert marked == '"""Doc."""# note"s"'
    assert code_nl.non_code_mask("def f(:\n  'unterminated").shape == (23,)  # no exception
