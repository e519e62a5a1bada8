"""Templating detectors (Prashanth et al. 2024): `is_incrementing`, `is_repeating`, `is_templating`.

A memorised sample is a *reconstruction* when its text follows a template a model can extend
without having stored it: a counter ("128. 129. 130."), a numbered list ("A.1 , A.2 , A.3"), or a
chunk repeated over and over. Both detectors work on the decoded text of the 64-token sample.

Incrementing, re-implemented from the paper's definition, not from its code:

1. collapse whitespace: every run of whitespace (newlines included) becomes one space;
2. each space-separated word that is a Python integer literal with auto base (`int(word, 0)`:
   "42", "0x1F", "0o17", "0b101", "1_000") is replaced by its decimal value;
3. the escape artefacts of the `repr` form are stripped: `repr` escapes exactly the characters
   that are not printable, plus backslashes and quotes, so stripping complete escape sequences
   (`\\n`, `\\xNN`, `\\uNNNN`, `\\\\`, `\\'`) and quotes is the same as deleting non-printable
   characters, backslashes and quotes; that is what `_clean` does (to the whole text at once);
4. each word is split into maximal digit runs and non-digit pieces; empty pieces are dropped and
   digit runs become ints, so "12.8" gives [12, ".", 8] (no floats, no signs: "-3" is ["-", 3]);
5. the item list L is judged:
   - fewer than 3 items: no;
   - exactly 3: all numbers and L3 - 2*L2 + L1 < 1e-5 (signed, as in the definition: any concave
     triple passes, e.g. [3, 2, 0]);
   - more than 4: the first and last items are dropped (the 64-token window may cut them);
   - period search: for p = 1..n//2, every phase r < p walks r+p, r+2p, ...; each item must have
     the type of the item p earlier, strings must be equal, numbers must keep one difference
     within the phase (tolerance 1e-10). At the first period where every phase passes, the list
     is incrementing iff some difference is non-zero and some difference value occurred at
     least twice in a phase (it was "confirmed"); later periods are not tried.

Ambiguities, resolved so that the known positives below are positive (`strict=True`
gives the literal rules above, under which "123456789", "128.\\n129.\\n130." and three-item
lists such as "A.1 , A.2 , A.3" are negative):

- "128.\\n129.\\n130." is [128, ".", 129, ".", 130, "."]; trimmed it is [".", 129, ".", 130], whose
  number phase has a single difference and can never be confirmed. We read the trimming as a
  repair for a cut first/last item, tried *in addition to* the untrimmed list, never instead.
- "123456789" is one digit run, a list of one item. When the list of digit runs is too short to
  judge (< 3 items), we judge it again with every digit run split into single digits, so a lone
  number is judged like its digits written apart ("123456789" like "1 2 3 4 5 6 7 8 9"). A side
  effect through the signed 3-item rule: a lone concave 3-digit number ("120") is positive.
- "confirmed twice" is read as "the same difference seen twice" (128->129->130 has two equal
  differences), not three times.
- "A.1 , A.2 , ... C.1"-style lists: lists with a fixed label and a counting number ("A.1 , A.2 ,
  A.3") are positive. The letter does not count: the definition requires strings to be equal across
  a period, so a list that moves on from A.n to B.1 is not periodic and stays negative; we do not
  invent an order on letters.
- Numbers are exact Python ints (the tolerance only matters for floats, which never occur);
  a digit run longer than 4,000 digits (beyond CPython's int/str conversion limit) stays a string.

Repeating: the characters of the raw text, first and last dropped when there are more than 4;
repeating iff the rest has a period p <= len/2 (every character equals the one p earlier; p
need not divide the length). The original only tests repetition when the text is not
incrementing; `templating_flags` gives that pair of columns, `is_repeating` the detector alone.
"""

from __future__ import annotations

import re

_RUNS = re.compile(r"\d+|[^\d ]+")  # maximal digit runs and non-digit pieces of space-separated words
_SINGLE_DIGITS = re.compile(r"\d|[^\d ]+")
_STRIP = str.maketrans("", "", "\\'\"")
_MAX_DIGITS = 4000  # CPython refuses int() of longer decimal strings by default
_NUMBER = object()  # stands for "a number" in an item list's shape
_NUMERIC_WORD = re.compile(r"(?<![^ ])[+-]?\d[^ ]*")  # words that may be int literals


def _clean(text: str) -> str:
    """`text` less what stripping its repr's escape sequences and quotes removes (step 3)."""
    text = text.translate(_STRIP)
    return text if text.isprintable() else "".join(ch for ch in text if ch.isprintable())


def _as_decimal(word: str) -> str:
    """`str(int(word, 0))` if `word` is a Python integer literal, else `word` (step 2)."""
    head = word[1:2] if word[0] in "+-" else word[:1]
    if not head.isdecimal() or (word.isascii() and word.isdigit() and word[0] != "0"):
        return word  # not a literal, or a plain decimal literal that is already its own value
    try:
        return str(int(word, 0))
    except ValueError:
        return word


def _cleaned(text: str) -> str:
    """Steps 1-3: space-separated words, int literals in decimal, escape artefacts stripped."""
    return _clean(_NUMERIC_WORD.sub(lambda m: _as_decimal(m.group()), " ".join(text.split())))


def _items(cleaned: str, pieces: re.Pattern) -> list[int | str]:
    """Step 4: digit runs as ints (runs beyond int()'s limit stay text), other pieces as strings."""
    return [int(x) if x[0].isdecimal() and len(x) <= _MAX_DIGITS else x for x in pieces.findall(cleaned)]


def incrementing_items(text: str, *, digits: bool = False) -> list[int | str]:
    """The item list L of `text` (steps 1-4); `digits=True` splits digit runs into single digits."""
    return _items(_cleaned(text), _SINGLE_DIGITS if digits else _RUNS)


def _periodic_increment(items: list[int | str]) -> bool:
    """Step 5's period search on `items`, decided at the first period whose phases all pass.

    A period passes when the list's shape (strings as themselves, numbers as one marker) repeats
    with it, which one list comparison checks, and each number phase has a single difference.
    Numbers are ints, so differences are compared exactly (the 1e-10 tolerance is moot).
    """
    n = len(items)
    shape = [x if isinstance(x, str) else _NUMBER for x in items]
    for p in range(1, n // 2 + 1):
        if shape[p] != shape[0] or shape[p:] != shape[:-p]:
            continue
        nonzero = confirmed = False
        for r in range(p):
            if shape[r] is not _NUMBER:
                continue
            phase = items[r::p]
            diffs = {b - a for a, b in zip(phase, phase[1:])}
            if len(diffs) > 1:
                break  # a phase failed: try the next period
            if diffs:
                nonzero = nonzero or diffs != {0}
                confirmed = confirmed or len(phase) >= 3
        else:
            return nonzero and confirmed
    return False


def _judge(items: list[int | str], *, strict: bool) -> bool:
    n = len(items)
    if n < 3:
        return False
    if n == 3:
        a, b, c = items
        return all(isinstance(x, int) for x in items) and (c - 2 * b + a) < 1e-5
    if n > 4 and _periodic_increment(items[1:-1]):
        return True
    if n > 4 and strict:
        return False
    return _periodic_increment(items)


def is_incrementing(text: str, *, strict: bool = False) -> bool:
    """Whether `text` is a counting template (see the module docstring for the rules and readings).

    `strict=True` applies the definition's rules literally: trimmed list only, no digit-level retry.
    """
    cleaned = _cleaned(text)
    items = _items(cleaned, _RUNS)
    if _judge(items, strict=strict):
        return True
    if strict or len(items) >= 3:
        return False
    return _judge(_items(cleaned, _SINGLE_DIGITS), strict=strict)


def is_repeating(text: str) -> bool:
    """Whether `text`, less its first and last character when longer than 4, has a period <= half."""
    s = text[1:-1] if len(text) > 4 else text
    n = len(s)
    return any(s[p:] == s[:-p] for p in range(1, n // 2 + 1))


def templating_flags(text: str, *, strict: bool = False) -> tuple[bool, bool]:
    """(`is_incrementing`, `is_repeating`) as released: repetition only tested if not incrementing."""
    inc = is_incrementing(text, strict=strict)
    return inc, (not inc and is_repeating(text))


def is_templating(text: str, *, strict: bool = False) -> bool:
    """`is_incrementing OR is_repeating`, the reconstruction criterion of the taxonomy."""
    return is_incrementing(text, strict=strict) or is_repeating(text)
