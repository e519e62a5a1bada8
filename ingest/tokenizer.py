"""A byte-level BPE tokenizer trained locally and saved in Hugging Face format, and which
tokenizer decodes a warehouse's instances.

Special tokens follow Pythia's convention: id 0 is `<|endoftext|>` (document separator),
id 1 is `<|padding|>`. The saved folder loads with `AutoTokenizer.from_pretrained`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

EOS = "<|endoftext|>"
PAD = "<|padding|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=PAD
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))


def tokenizer_of(wh: Warehouse, explicit: str | None = None) -> str:
    """The tokenizer to decode the instances with: `explicit`, else the one the `instances`
    manifest records (`config.tokenizer`, written by Hub imports), else the warehouse tokenizer."""
    if explicit:
        return str(explicit)
    recorded = lake.manifest(wh.table("instances")).get("config", {}).get("tokenizer")
    return str(recorded) if recorded else str(wh.tokenizer)


def tokenizer_key(wh: Warehouse, source: str) -> dict[str, str | None]:
    """What identifies a tokenizer for the skip check: its name ('warehouse' for the warehouse's
    own, wherever the warehouse lives), and for a local folder the hash of its `tokenizer.json`
    (a Hub id is taken as it is)."""
    path = Path(source) / "tokenizer.json"
    name = "warehouse" if source == str(wh.tokenizer) else source
    return {"source": name, "sha256": lake.sha256(path) if path.is_file() else None}


def load_tokenizer(wh: Warehouse, source: str | None = None):
    """`AutoTokenizer.from_pretrained(source)`: a local folder or a Hub id (the real loading path)."""
    source = str(wh.tokenizer) if source is None else source
    if source == str(wh.tokenizer) and not (wh.tokenizer / "tokenizer_config.json").exists():
        raise MemlakeError(f"no tokenizer at {wh.tokenizer}: run `memlake suite corpus` first")
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as e:  # OSError, ValueError, HTTP and offline errors: one line whatever the type
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MemlakeError(f"tokenizer {source}: cannot load ({first})") from None
