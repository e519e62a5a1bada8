"""Membership inference against ground truth: the field's attacks (LOSS, zlib, Min-K%, Min-K%++,
reference model), the twin-calibrated oracle and a text-only blind baseline, scored per row and
evaluated per checkpoint (ROC-AUC with a bootstrap interval, TPR at 1 % and 0.1 % FPR)."""

from analysis.mia.battery import ATTACKS, MARTS, MiaSpec, models_with_scores, run_mia, scored_models
from analysis.mia.metrics import auc, auc_interval, tpr_at_fpr

__all__ = [
    "ATTACKS",
    "MARTS",
    "MiaSpec",
    "auc",
    "auc_interval",
    "models_with_scores",
    "run_mia",
    "scored_models",
    "tpr_at_fpr",
]
