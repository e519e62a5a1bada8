"""Mitigation comparison (issue 7) from SQL views over the `mitigation_runs` lake table.

Views (analysis/views/): mitigation_scored (relative changes + the original selection scores),
mitigation_best_runs (best run per study x method), mitigation_pareto (memorisation removed vs
accuracy kept, with the Pareto front). `figures.draw(wh)` plots them.
"""

from analysis.mitigation.figures import draw

__all__ = ["draw"]
