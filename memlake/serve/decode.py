"""Token ids to the text pieces the instance view shows, through the warehouse's tokenizer (the one
its `instances` were made with: `ingest.tokenizer.tokenizer_of`).

Every id is decoded once, on first use, into a table; a row is then one lookup per token. Without a
loadable tokenizer (a Hub id while offline) the ids themselves are shown, as `<id>`.
"""

from __future__ import annotations

import sys
import threading

from ingest.tokenizer import load_tokenizer, tokenizer_of
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse


class Decoder:
    def __init__(self, wh: Warehouse):
        self.wh = wh
        self._table: list[str] | None = None
        self._lock = threading.Lock()

    def _load(self) -> list[str]:
        with self._lock:
            if self._table is None:
                try:
                    tok = load_tokenizer(self.wh, tokenizer_of(self.wh))
                    self._table = tok.batch_decode([[i] for i in range(len(tok))])
                except MemlakeError as e:
                    print(f"memlake serve: tokens are shown as ids ({e})", file=sys.stderr)
                    self._table = []
            return self._table

    def pieces(self, ids: list[int] | None) -> list[str]:
        table = self._load()
        n = len(table)
        return [table[i] if 0 <= i < n else f"<{i}>" for i in (ids or [])]
