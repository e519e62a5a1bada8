"""What differs between the transformers releases memlake supports (>= 4.45), in one place.

transformers 5.2x renamed the key/value cache argument and output field of every model's
forward from `past_key_values` to `cache`; the old name still works there with a warning and is
removed in 5.40. These helpers use whichever name the installed release has.
"""

from __future__ import annotations

import functools
import inspect

import torch


@functools.cache
def _cache_name(forward_owner: type) -> str:
    params = inspect.signature(forward_owner.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def with_cache(model: torch.nn.Module, cache) -> dict:
    """The keyword arguments that hand `cache` to `model`'s forward: {name: cache}."""
    return {_cache_name(type(model)): cache}


def output_cache(output):
    """The key/value cache a forward returned (`output.cache`, or `past_key_values` before 5.2x)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
