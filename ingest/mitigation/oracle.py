"""Unlearning measured against the retrain oracle: the base model trained again without the forget
set (same seed, same recipe, the clean rows or fresh fillers in its place), the model every
unlearning method tries to become.

Every measure reads one forward pass over the rows' judged windows (`window_scores`):

- Exact Memorization (Tirumala et al. 2022; OpenUnlearning): the teacher-forced argmax accuracy
  over the window. Ties cannot occur in practice with float logits; argmax takes the first.
- Extraction Strength (Carlini et al. 2021, as OpenUnlearning defines it): 1 - k*/L, with k* the
  shortest prefix of the L-token window after which greedy decoding reproduces the rest. Greedy
  from window prefix j reproduces the rest iff the argmax is right at every later position, so
  k* is one past the last wrong position (0 when none is wrong).
- MIA AUC of the forget rows against never-trained rows of the same construction, scored by
  Min-K% (k = 0.2, as `analysis/mia`): higher means more likely a member.
- privleak (Shi et al. 2024, MUSE, as OpenUnlearning computes it): the relative difference of the
  AUC against the oracle's, in MUSE's orientation (1 - AUC): 0 is the oracle, -100 a model whose
  forget rows are perfectly separable, positive values over-unlearning.
- forget quality (Maini et al. 2024, TOFU): the two-sample Kolmogorov-Smirnov test between the
  edited model's and the oracle's per-row forget losses (mean NLL over the window): the p-value
  (high: indistinguishable from the oracle) and the statistic (the distance that ranks methods).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score
from torch import nn

from ingest.lm.runtime import eval_mode, model_device

MIN_K = 0.2


@dataclass(frozen=True)
class Rows:
    """Token rows [M, T] and where each row's judged window starts; the window is the next `k`
    tokens (cut at the row's end)."""

    tokens: torch.Tensor
    starts: torch.Tensor  # [M] long
    k: int

    def __post_init__(self):
        if self.tokens.dim() != 2 or self.starts.shape != (self.tokens.shape[0],):
            raise ValueError(f"rows must be [M, T] with [M] starts, got {tuple(self.tokens.shape)}")
        t = self.tokens.shape[1]
        if len(self.starts) and (int(self.starts.min()) < 1 or int(self.starts.max()) >= t):
            raise ValueError(f"window starts must lie in (0, {t})")

    def __len__(self) -> int:
        return self.tokens.shape[0]


@dataclass(frozen=True)
class Probe:
    """What the forget measures look at: the forget rows, never-trained rows of the same
    construction (the MIA's non-members), the forget rows' lake instance ids where they are lake
    instances (suite studies), and the batch size of the forward passes."""

    forget: Rows
    nonmembers: Rows
    forget_ids: np.ndarray | None = None
    batch_size: int = 256


@dataclass(frozen=True)
class WindowScores:
    """Per row: mean NLL over the window, Exact Memorization, Extraction Strength, Min-K% score."""

    nll: np.ndarray
    em: np.ndarray
    es: np.ndarray
    min_k: np.ndarray

    @property
    def extracted(self) -> np.ndarray:
        """Greedy decoding from the prompt reproduces the whole window."""
        return self.es == 1.0


@torch.no_grad()
def window_scores(model: nn.Module, rows: Rows, batch_size: int = 256) -> WindowScores:
    """Every per-row measure of `rows` under `model`, one forward pass per batch."""
    dev = model_device(model)
    out: dict[str, list[np.ndarray]] = {"nll": [], "em": [], "es": [], "min_k": []}
    t = rows.tokens.shape[1]
    with eval_mode(model):
        for lo in range(0, len(rows), batch_size):
            starts = rows.starts[lo : lo + batch_size]
            end = (starts + rows.k).clamp(max=t)
            width = int(end.max())
            x = rows.tokens[lo : lo + batch_size, :width].to(dev)
            logits = model(input_ids=x[:, :-1]).logits.float()
            logp = F.log_softmax(logits, -1).gather(-1, x[:, 1:, None])[..., 0].cpu().double()
            right = (logits.argmax(-1) == x[:, 1:]).cpu()
            pos = torch.arange(1, width)  # the position each target sits at
            window = (pos >= starts[:, None]) & (pos < end[:, None])
            n = window.sum(1)
            out["nll"].append((-(logp * window).sum(1) / n).numpy())
            out["em"].append(((right & window).sum(1) / n).double().numpy())
            # one past the last wrong window position, counted from the window's start
            last_wrong = torch.where(window & ~right, pos - starts[:, None] + 1, 0).amax(1)
            out["es"].append((1.0 - last_wrong / n).double().numpy())
            keep = torch.clamp((MIN_K * n).floor().long(), min=1)
            lowest = torch.where(window, logp, math.inf).sort(1).values
            taken = torch.arange(width - 1) < keep[:, None]
            out["min_k"].append((torch.where(taken, lowest, 0.0).sum(1) / keep).numpy())
    return WindowScores(**{k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()})


def mia_auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """ROC-AUC of telling members from non-members by a score that is higher for members."""
    if not len(members) or not len(nonmembers):
        return math.nan
    labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    return float(roc_auc_score(labels, np.r_[members, nonmembers]))


def privleak(auc: float, oracle_auc: float) -> float:
    """MUSE's PrivLeak in percent, from AUCs oriented members-high: ((1 - auc) - (1 - auc_o)) /
    (1 - auc_o) * 100. Zero at the oracle; the unedited model of a memorised set is near -100."""
    return ((1.0 - auc) - (1.0 - oracle_auc)) / (1.0 - oracle_auc) * 100.0


def forget_quality(nll: np.ndarray, oracle_nll: np.ndarray) -> tuple[float, float]:
    """(KS statistic, p-value) between two samples of per-row forget losses."""
    r = ks_2samp(nll, oracle_nll)
    return float(r.statistic), float(r.pvalue)


@dataclass
class Reference:
    """The oracle's scores on a probe, computed once and compared against by every run."""

    forget: WindowScores
    nonmembers: WindowScores
    auc: float = field(init=False)

    def __post_init__(self):
        self.auc = mia_auc(self.forget.min_k, self.nonmembers.min_k)


def probe_scores(model: nn.Module, probe: Probe) -> Reference:
    """The model's scores on the probe's forget and non-member rows."""
    return Reference(
        window_scores(model, probe.forget, probe.batch_size),
        window_scores(model, probe.nonmembers, probe.batch_size),
    )


def forget_measures(model: nn.Module, probe: Probe, oracle: Reference | None) -> dict:
    """The columns a mitigation run gains: EM, ES and the MIA AUC on the forget set, and against
    the oracle (None where the study has none) privleak, the KS distance and forget quality."""
    s = probe_scores(model, probe)
    out = {
        "exact_memorization": float(s.forget.em.mean()) if len(probe.forget) else math.nan,
        "extraction_strength": float(s.forget.es.mean()) if len(probe.forget) else math.nan,
        "mia_auc": s.auc,
        "privleak": None,
        "ks_distance": None,
        "forget_quality": None,
        "forget_ids": None if probe.forget_ids is None else probe.forget_ids.tolist(),
        "forget_extracted": None if probe.forget_ids is None else s.forget.extracted.tolist(),
    }
    if oracle is not None and len(probe.forget):
        out["privleak"] = privleak(s.auc, oracle.auc)
        out["ks_distance"], out["forget_quality"] = forget_quality(s.forget.nll, oracle.forget.nll)
    return out
