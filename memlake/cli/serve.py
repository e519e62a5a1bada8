"""`memlake serve`: the local web explorer over the warehouse (read-only)."""

from __future__ import annotations

from typing import Annotated

import typer

from memlake.cli._options import WarehouseOpt, say
from memlake.core.paths import Warehouse
from memlake.serve import HOST, PORT, serve


def serve_command(
    warehouse: WarehouseOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on; the default is this machine only.")] = HOST,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = PORT,
):
    """Explore the warehouse in a browser: panel, instances, profiles, mitigation, SQL."""
    serve(Warehouse.at(warehouse), host=host, port=port, say=say)
