"""Names the taxonomy analyses share: categories, the model's 14 features, the search's 10.

Kept in one place because the published protocol is defined by these exact lists
(Prashanth et al. 2024): changing one silently changes every model, search and correlation table.
"""

from __future__ import annotations

import numpy as np

from transforms.frequencies import STAT_COLUMNS

CATEGORIES = ("recitation", "reconstruction", "recollection")
AGGREGATE = "aggregate"  # the union of the three categories (taxonomic model) / all rows (baseline)
BASELINE = "baseline"  # one group holding every row (correlations, weights)

CODE_NL = ("code", "nl")  # confidently classified rows; 'uncertain' is the rest

# 13 continuous features, z-scored; textual/semantic = the paper's 0_8_templates/0_8_snowclones
CONTINUOUS = (
    "sequence_duplicates",
    *STAT_COLUMNS,
    "generation_perplexity",
    "prompt_perplexity",
    "sequence_perplexity",
    "textual_matches_0_8",
    "semantic_matches_0_8",
    "huffman_coding_length",
)
CATEGORICAL = ("is_templating",)  # entered as 0/1, never scaled
MODEL_FEATURES = CONTINUOUS + CATEGORICAL

# the greedy taxonomic search's candidate features (raw units) and quantiles (on memorised rows)
SEARCH_FEATURES = (
    "max_frequency",
    "avg_frequency",
    "min_frequency",
    "median_frequency",
    "textual_matches_0_8",
    "semantic_matches_0_8",
    "sequence_duplicates",
    "huffman_coding_length",
    "is_templating",
    "generation_perplexity",
)
SEARCH_QUANTILES = (0.25, 0.5, 0.75)

# every feature correlated with the label: the model's plus the other descriptive columns
CORRELATION_FEATURES = MODEL_FEATURES + (
    "whole_sequence_duplicates",
    "semantic_matches_0_9",
    "textual_matches_0_9",
    "nl_score",
    "is_incrementing",
    "is_repeating",
)

# the histogram figure's panels
HISTOGRAM_FEATURES = CORRELATION_FEATURES

SEED = 1024  # the paper's GLOBAL_SEED: split, KFold and the LRs' random_state


def category_of(duplicates, templating, threshold: int = 5) -> np.ndarray:
    """The paper's rule on arrays: recitation if duplicates > threshold, else reconstruction if
    templating, else recollection. The `taxonomy` mart carries `category` already; this is for
    synthetic data and tests."""
    duplicates, templating = np.asarray(duplicates), np.asarray(templating, dtype=bool)
    return np.where(duplicates > threshold, CATEGORIES[0], np.where(templating, CATEGORIES[1], CATEGORIES[2]))
