"""Mitigation comparison from SQL views over the `mitigation_runs` lake table.

Views (analysis/mitigation/views/): mitigation_scored (relative changes + the original selection scores),
mitigation_best_runs (best run per study x method), mitigation_pareto (memorisation removed vs
accuracy kept, with the Pareto front). `draw_mitigation(wh)` plots them; `summary` turns them into
the report's words (best trade-off, whether the paper's BalancedSubnet finding holds, destroyed
models).
"""

from analysis.mitigation.figures import draw_mitigation

__all__ = ["draw_mitigation"]
