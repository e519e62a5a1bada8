"""Code-vs-natural-language scores (the taxonomy paper's `nl_scores`) and their labels.

The paper scores each decoded 64-token window with `usvsnsp/code-vs-nl`, a DistilBERT fine-tuned
at lr 1e-7 for 1000 steps, whose scores sit squeezed around 0.5; that checkpoint needs the Hub.
memlake instead fits a small classifier on text every machine has (`ingest.code_nl_classifier`
reads the corpus and fits it); this module holds what needs no corpus: cutting text into windows
of about 64 tokens, marking the comments and strings of Python source, scoring texts with a
fitted model and labelling the scores.

Labelling windows: a window of a `.py` file that is mostly a docstring or comment is English, not
code, and labelling it "code" caps any classifier's accuracy well below 1. So `windows` marks code
windows whose share of characters inside comments/string literals exceeds `max_comment_share`
(default 0.5) as not clean; the classifier leaves them out of training and of the headline
held-out accuracy.

Thresholds follow the paper: NL if score >= 0.525, code if <= 0.4, otherwise "uncertain" (some of its
notebooks use `is_code = score <= 0.45`). They were tuned for the squeezed DistilBERT scores; with
memlake's classifier few windows land in between, so "uncertain" is rare. Both are parameters of
`label`.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Sequence

import numpy as np

NL_THRESHOLD = 0.525
CODE_THRESHOLD = 0.4
IS_CODE_THRESHOLD_NOTEBOOKS = 0.45  # the paper's notebooks' single cut: code iff score <= 0.45
WINDOW_TOKENS = 64
MIN_WINDOW_TOKENS = 32  # a document's last, short window is kept if at least this long
MAX_COMMENT_SHARE = 0.5

# GPT-2/NeoX-style pre-tokenisation (letters, digits, punctuation runs, whitespace runs, each with an
# optional leading space). A BPE token count is at least this count, so 64 of these is "about 64
# tokens" without needing the Pythia tokenizer (which lives on the Hub).
_PRETOKEN = re.compile(r" ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


def pretokens(text: str) -> list[str]:
    """Split text into pre-tokens whose concatenation is `text` exactly."""
    return _PRETOKEN.findall(text)


def window_spans(
    text: str, size: int = WINDOW_TOKENS, min_size: int = MIN_WINDOW_TOKENS
) -> list[tuple[int, int]]:
    """Character spans of consecutive, non-overlapping windows of `size` pre-tokens."""
    offsets = [0]
    for tok in pretokens(text):
        offsets.append(offsets[-1] + len(tok))
    n = len(offsets) - 1
    return [
        (offsets[i], offsets[min(i + size, n)]) for i in range(0, n, size) if min(size, n - i) >= min_size
    ]


def non_code_mask(source: str) -> np.ndarray:
    """Boolean per character of Python source: True inside a comment or a string literal.

    Best effort: a file the tokenizer rejects part-way keeps the marks made up to that point.
    """
    mask = np.zeros(len(source), dtype=bool)
    starts = [0]
    for line in io.StringIO(source).readlines():  # the same line split as tokenize's readline
        starts.append(starts[-1] + len(line))
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.COMMENT, tokenize.STRING):
                a = starts[tok.start[0] - 1] + tok.start[1]
                b = starts[tok.end[0] - 1] + tok.end[1]
                mask[a:b] = True
    except (tokenize.TokenError, SyntaxError):
        pass
    return mask


def windows(text: str, is_code: bool, max_comment_share: float = MAX_COMMENT_SHARE) -> list[tuple[str, bool]]:
    """The document's windows (`window_spans`), each with whether it is clean: False for a code
    window mostly made of comments/strings (see the module docstring)."""
    mask = non_code_mask(text) if is_code else None
    return [
        (text[a:b], mask is None or float(mask[a:b].mean()) <= max_comment_share)
        for a, b in window_spans(text)
    ]


def nl_score(texts: Sequence[str] | str, model) -> np.ndarray:
    """P(natural language) per text, float64 in [0, 1], from a fitted classifier (class 1: NL)."""
    if isinstance(texts, str):
        texts = [texts]
    if len(texts) == 0:
        return np.zeros(0)
    proba = model.predict_proba(list(texts))
    return proba[:, list(model.classes_).index(1)]


def label(scores, nl_threshold: float = NL_THRESHOLD, code_threshold: float = CODE_THRESHOLD):
    """Return "nl" if score >= nl_threshold, "code" if score <= code_threshold, else "uncertain".

    A scalar gives a str, an array gives an array of str of the same shape.
    """
    if not 0.0 <= code_threshold < nl_threshold <= 1.0:
        raise ValueError(
            f"need 0 <= code_threshold < nl_threshold <= 1, got {code_threshold}, {nl_threshold}"
        )
    s = np.asarray(scores, dtype=float)
    out = np.where(s >= nl_threshold, "nl", np.where(s <= code_threshold, "code", "uncertain"))
    return str(out) if out.ndim == 0 else out
