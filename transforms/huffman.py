"""`huffman_coding_length`: expected bits per character of a Shannon code for a text's own characters.

The taxonomy paper (Prashanth et al. 2024) calls it a Huffman coding length, but its definition is
the Shannon code: each character c with frequency p_c = count(c) / len(text) gets a codeword of
ceil(-log2 p_c) bits, and the feature is the expected length sum_c p_c * ceil(-log2 p_c). It is
low for texts made of few distinct characters (templates, repeated chunks) and high for varied
prose or code.

The codeword lengths are computed in integers, so the result does not depend on floating-point
log2 rounding near powers of two, nor on the order of the characters:
ceil(-log2(c/n)) is the smallest k with c * 2**k >= n, i.e. (ceil(n/c) - 1).bit_length().
The empty text has no characters to code: its length is 0.0 (as for a one-symbol text).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np


def coding_length(text: str) -> float:
    """sum_c p_c * ceil(-log2 p_c) over the characters c of `text` (bits per character); 0.0 if empty."""
    n = len(text)
    if n == 0:
        return 0.0
    bits = sum(c * (-(-n // c) - 1).bit_length() for c in Counter(text).values())
    return bits / n


def coding_lengths(texts: Iterable[str]) -> np.ndarray:
    """`coding_length` of each text, as float64 [N]."""
    return np.fromiter((coding_length(t) for t in texts), dtype=np.float64)
