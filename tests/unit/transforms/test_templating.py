"""The templating detectors (transforms.templating) on the digest's examples, readings and properties."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.templating import (
    _as_decimal,
    _clean,
    _periodic_increment,
    incrementing_items,
    is_incrementing,
    is_repeating,
    is_templating,
    templating_flags,
)

DOCUMENTED_POSITIVES = [
    "123456789",
    "128.\n129.\n130.",
    "A.1 , A.2 , A.3",
    "A.1 , A.2 , A.3 , A.4 , A.5 , A.6 , A.7 , A.8 , A.9 , A.10 , A.11",
]


@pytest.mark.parametrize("text", DOCUMENTED_POSITIVES)
def test_documented_positives(text):
    assert is_incrementing(text)
    assert is_templating(text)


@pytest.mark.parametrize("text", ["123456789", "128.\n129.\n130.", "A.1 , A.2 , A.3"])
def test_strict_rules_miss_documented_positives(text):
    """Why the readings exist: the literal rules (trim only, digit runs only) reject these."""
    assert not is_incrementing(text, strict=True)


@pytest.mark.parametrize(
    "text",
    [
        "1, 2, 3, 4, 5, 6, 7",
        "10 20 30 40 50",
        "0x1 0x2 0x3 0x4",  # int literals with auto base
        "Section 1. Section 2. Section 3. Section 4.",
        "A.1 , A.2 , A.3 , A.4",
        "99 98 97 96 95",
    ],
)
def test_positives_under_both_readings(text):
    assert is_incrementing(text) and is_incrementing(text, strict=True)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello world",
        "The quick brown fox jumps over the lazy dog 12 times.",
        "2024-01-01",
        "1 2 4 8 16 32",  # geometric, not arithmetic
        "1 1 1 1 1",  # no non-zero difference
        "1 2 1 2 1 2",  # periodic but constant within each phase
        "1 2 10",
        "1 a 3",
        "def f(x):\n    return x + 1\n",
        # the letter changes: strings must be equal across a period (no order on letters)
        "A.1 , A.2 , A.3 , B.1 , B.2 , B.3 , C.1",
    ],
)
def test_negatives(text):
    assert not is_incrementing(text)


def test_three_items_rule_is_signed():
    assert is_incrementing("1 2 3")
    assert is_incrementing("3 2 0")  # 0 - 4 + 3 = -1 < 1e-5: the signed test accepts any concave triple
    assert is_incrementing("0 2 3")
    assert not is_incrementing("1 2 10")  # 10 - 4 + 1 = 7
    assert not is_incrementing("1 2 x")


def test_items():
    assert incrementing_items("12.8") == [12, ".", 8]
    assert incrementing_items("0x1F 0o17 0b101 1_000") == [31, 15, 5, 1000]
    assert incrementing_items("-3 +4") == ["-", 3, 4]  # "+4" is an int literal, "-3" keeps its sign piece
    assert incrementing_items("1\t\t2\n\n 3") == [1, 2, 3]
    assert incrementing_items("'12' \"13\"") == [12, 13]
    assert incrementing_items("a\x00b C:\\new") == ["ab", "C:new"]
    assert incrementing_items("007") == [7]  # not a literal (leading zeros), still a digit run
    assert incrementing_items("123", digits=True) == [1, 2, 3]
    assert incrementing_items("9" * 5000) == ["9" * 5000]  # beyond int()'s digit limit: kept as text


_ESCAPE = re.compile(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")


@given(st.text(max_size=30))
def test_clean_equals_stripping_the_repr(word):
    """Step 3 as the digest states it (repr, strip escapes and quotes) is what `_clean` does directly."""
    via_repr = _ESCAPE.sub("", repr(word)[1:-1]).replace("'", "").replace('"', "")
    assert _clean(word) == via_repr


@given(st.text(alphabet="0123456789+-_xobXOBaf٣٠ ", min_size=1, max_size=8).filter(lambda w: " " not in w))
def test_as_decimal_is_int_with_auto_base(word):
    try:
        expected = str(int(word, 0))
    except ValueError:
        expected = word
    assert _as_decimal(word) == expected


def walk(items) -> bool:
    """Step 5 read word for word: phases walked item by item against the item p earlier."""
    n = len(items)
    for p in range(1, n // 2 + 1):
        nonzero = confirmed = passed = False
        for r in range(p):
            diff, passed = None, True
            for i in range(r + p, n, p):
                a, b = items[i - p], items[i]
                if type(a) is not type(b) or (isinstance(a, str) and a != b):
                    passed = False
                elif isinstance(a, int):
                    if diff is None:
                        diff, nonzero = b - a, nonzero or b != a
                    elif abs((b - a) - diff) > 1e-10:
                        passed = False
                    else:
                        confirmed = True
                if not passed:
                    break
            if not passed:
                break
        if passed:
            return nonzero and confirmed
    return False


@settings(max_examples=500)
@given(st.lists(st.one_of(st.integers(0, 4), st.sampled_from(["a", ".", ","])), max_size=14))
def test_period_search_equals_the_walk(items):
    assert _periodic_increment(items) == walk(items)


SEPARATORS = [" ", ", ", "\n", " | ", ". ", "; ", ")\n(", " , "]
LABELS = ["", "A.", "Item ", "#", "v", "x = "]


PROGRESSION = dict(
    start=st.integers(0, 10**6),
    step=st.integers(1, 1000),
    n=st.integers(3, 30),
    descending=st.booleans(),
    sep=st.sampled_from(SEPARATORS),
)


def progression(start, step, n, descending):
    values = [start + i * step for i in range(n)]
    return values[::-1] if descending else values


@settings(max_examples=200)
@given(**PROGRESSION)
def test_arithmetic_progressions_are_incrementing(start, step, n, descending, sep):
    assert is_incrementing(sep.join(str(v) for v in progression(start, step, n, descending)))


@settings(max_examples=200)
@given(**PROGRESSION, label=st.sampled_from(LABELS))
def test_labelled_progressions_are_incrementing(start, step, n, descending, sep, label):
    """Numbered-list items "A.1, A.2, A.3, ": each item is label + number + separator."""
    assert is_incrementing("".join(f"{label}{v}{sep}" for v in progression(start, step, n, descending)))


@given(chunk=st.text(min_size=1, max_size=8), reps=st.integers(4, 12))
def test_repeated_chunks_are_repeating(chunk, reps):
    assert is_repeating(chunk * reps)


@given(chunk=st.text(min_size=1, max_size=8), reps=st.integers(2, 12), ends=st.text(min_size=2, max_size=2))
def test_repeated_chunks_with_any_first_and_last_character_are_repeating(chunk, reps, ends):
    if len(chunk) * reps >= 3:
        assert is_repeating(ends[0] + chunk * reps + ends[1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", False),
        ("a", False),
        ("aa", True),
        ("abcd", False),
        ("xabababy", True),  # first and last dropped
        ("abcab", False),  # "bca" has no period <= 1
        ("hello world", False),
        ("=" * 40, True),
    ],
)
def test_repeating_examples(text, expected):
    assert is_repeating(text) is expected


def test_flags_test_repetition_only_when_not_incrementing():
    both = "11 11 11"  # [11, 11, 11] passes the 3-item rule; its characters have period 3
    assert is_incrementing(both) and is_repeating(both)
    assert templating_flags(both) == (True, False)
    assert templating_flags("abababab") == (False, True)
    assert templating_flags("hello world") == (False, False)
    assert is_templating("abababab") and not is_templating("hello world")
