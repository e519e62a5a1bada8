"""`memlake demo`: every stage on the embedded default."""

from __future__ import annotations

from memlake.cli._options import ConfigOpt, SetOpt, WarehouseOpt, console, say
from memlake.pipeline import demo as stages
from memlake.pipeline import setup


def demo_command(config: ConfigOpt = "small", set_: SetOpt = None, warehouse: WarehouseOpt = None):
    """Run every stage on the embedded default and print where the outputs are."""
    cfg, wh = setup(config, set_, warehouse)
    console.rule(f"memlake demo ({cfg['scale']}) -> {wh.root}")
    done, *where = stages.run(cfg, wh, log=say)
    console.rule(done)
    for line in where:
        say(line)
