"""Mitigation methods, one module each, registered by name (see `base` for the interface).

    from ingest.mitigation.methods import REGISTRY, get
    result = get("balanced_subnet").fn(model, forget, retain, seed=0, ratio=0.3, alpha=0.7, epochs=10)

Every module in this package is imported here, so adding a method is adding a module.
"""

import importlib
import pkgutil

from ingest.mitigation.methods.base import REGISTRY, EditResult, Method, SequenceSet, get, register

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["REGISTRY", "EditResult", "Method", "SequenceSet", "get", "register"]
