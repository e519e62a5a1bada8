"""Mitigation methods, one folder per kind, registered by name (see `_base` for the interface).

    from ingest.mitigation.methods import EditTask, get
    task = EditTask(forget, retain)
    result = get("balanced_subnet").fn(model, task, seed=0, ratio=0.3, alpha=0.7, epochs=10)

Every module of a kind's folder (regularisers/, fine_tuning/, neurons/, weights/, baselines/) is
imported here, so adding a method is adding a module. A method module imports only the
underscore modules (shared code), never another method module.
"""

import importlib
import pkgutil

from ingest.mitigation.methods._base import (
    KINDS,
    REGISTRY,
    EditResult,
    EditTask,
    Method,
    Recipe,
    get,
    hyper_parameters,
    register,
)
from ingest.mitigation.methods._cache import AttributionCache
from ingest.mitigation.methods._sequences import SequenceSet, sequence_loss

for _info in pkgutil.walk_packages(__path__, f"{__name__}."):
    if not any(part.startswith("_") for part in _info.name.split(".")):
        importlib.import_module(_info.name)

__all__ = [
    "KINDS",
    "REGISTRY",
    "AttributionCache",
    "EditResult",
    "EditTask",
    "Method",
    "Recipe",
    "SequenceSet",
    "get",
    "hyper_parameters",
    "register",
    "sequence_loss",
]
