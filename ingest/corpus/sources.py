"""Real text that is on every machine without network: the Python standard library.

- code:  the standard library's own `.py` sources (Python Software Foundation License);
- prose: the Python reference documentation shipped as `pydoc_data.topics`, and the long
         docstrings of standard-library modules (same licence).

Modules are split in two halves by a hash of their path, one half giving code and the other
giving docstrings, so the prose is not also present verbatim inside the code.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "lib2to3",
    "__pycache__",
    "ensurepip",
    "turtledemo",
    "encodings",
    "config-3.11-x86_64-linux-gnu",
}
MIN_DOCSTRING_CHARS = 200


@dataclass(frozen=True)
class Document:
    doc_id: str
    source: str  # "code" or "prose"
    text: str


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [
        f
        for f in root.rglob("*.py")
        if not (_SKIP_DIRS & set(f.relative_to(root).parts)) and not f.name.startswith("_sysconfig")
    ]
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


def _half(path: str) -> int:
    return hashlib.sha256(path.encode()).digest()[0] % 2


@cache
def _all_documents() -> tuple[Document, ...]:
    return tuple(_read_documents())


def documents() -> list[Document]:
    """Every document, in a fixed order (callers shuffle with their own seed)."""
    return list(_all_documents())


def _read_documents() -> list[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[Document] = []
    for f in stdlib_files():
        rel = f.relative_to(root).as_posix()
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if _half(rel) == 0:
            if len(text) > 500:
                docs.append(Document(f"code:{rel}", "code", text))
            continue
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_DOCSTRING_CHARS:
                    name = getattr(node, "name", "<module>")
                    docs.append(
                        Document(
                            f"prose:{rel}:{name}:{node.lineno if name != '<module>' else 0}", "prose", doc
                        )
                    )
    import pydoc_data.topics

    for name in sorted(pydoc_data.topics.topics):
        docs.append(Document(f"prose:pydoc:{name}", "prose", pydoc_data.topics.topics[name]))
    return docs
