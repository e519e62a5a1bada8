"""Pythia's learning-rate schedule: linear warm-up, then cosine decay to a floor."""

from __future__ import annotations

import math


def lr_at(step: int, total_steps: int, max_lr: float, warmup_fraction: float, min_lr_ratio: float) -> float:
    """Learning rate used by the optimiser update that produces checkpoint `step`."""
    warmup = max(1, round(warmup_fraction * total_steps))
    if step <= warmup:
        return max_lr * step / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = min_lr_ratio * max_lr
    return floor + 0.5 * (max_lr - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))
