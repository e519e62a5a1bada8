"""TinyMem (Sakarvadia et al. 2024): small GPT-2 models trained on arithmetic sequences (or corpus
rows) with planted noise / backdoor artifacts, so memorisation is known by construction and measurable.

    from ingest.mitigation.tinymem import math_data, tinymem_model, train, evaluate, forget_retain
    data = math_data("increment")                     # CPU-scale sizes; math_data(**PAPER) for the paper's
    model = tinymem_model(2, data.vocab_size, seed=0)
    train(model, data, epochs=50, out_dir="ckpt", ckpt_every=10)
    evaluate(model, data)                             # mem %, per-class mem %, acc / ppl per test set
    forget, retain = forget_retain(model, data)       # inputs of every unlearning method
"""

from ingest.mitigation.tinymem.arithmetic import math_data
from ingest.mitigation.tinymem.data import PAD, PAPER, VOCAB_SIZE, TinyMemData
from ingest.mitigation.tinymem.language import corpus_rows, language_data
from ingest.mitigation.tinymem.metrics import (
    accuracy,
    backdoor_success,
    evaluate,
    forget_retain,
    greedy_generate,
    memorised,
    perplexity,
)
from ingest.mitigation.tinymem.model import tinymem_model
from ingest.mitigation.tinymem.train import checkpoints, lm_loss, load_checkpoint, train

__all__ = [
    "PAD",
    "PAPER",
    "VOCAB_SIZE",
    "TinyMemData",
    "accuracy",
    "backdoor_success",
    "checkpoints",
    "corpus_rows",
    "evaluate",
    "forget_retain",
    "greedy_generate",
    "language_data",
    "lm_loss",
    "load_checkpoint",
    "math_data",
    "memorised",
    "perplexity",
    "tinymem_model",
    "train",
]
