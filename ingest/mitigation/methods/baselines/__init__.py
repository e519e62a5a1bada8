"""Baselines: plain gradient ascent on the forget set, with and without a retain KL term."""
