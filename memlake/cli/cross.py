"""`memlake cross`: the cross-analyses into their marts, and their figures."""

from __future__ import annotations

from memlake.cli._options import ConfigOpt, ModelsOpt, SetOpt, WarehouseOpt, say
from memlake.pipeline import cross, setup


def cross_command(
    models: ModelsOpt = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """Profiles split by taxonomy category (profiles_by_category), each attack's per-cohort AUC
    against the DiD (mia_vs_did), the categories each unlearning run removes (the dbt mart
    mitigation_by_category), and their figures. Needs the profiles, the MIA battery and the build."""
    cfg, wh = setup(config, set_, warehouse)
    say(cross.run(cfg, wh, models, log=say))
