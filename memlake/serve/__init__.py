"""`memlake serve`: a local, read-only web explorer over the warehouse (panel browser, instance view,
profile heatmaps, the mitigation Pareto view, a SQL console), tested in a real browser.

store   the sandboxed, self-refreshing DuckDB connection; the console's statement check
data    what each page shows, as queries pushed down to DuckDB
decode  token ids to text pieces with the warehouse's tokenizer
app     the Starlette app: pages, JSON API, Plotly's JavaScript from its Python package
"""

from __future__ import annotations

from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

HOST = "127.0.0.1"
PORT = 8765


def build(wh: Warehouse, threads: int | None = None):
    """The app over `wh` (for tests and `serve`)."""
    from analysis.views import SQL_VIEWS
    from memlake.serve.app import create_app
    from memlake.serve.data import Explorer
    from memlake.serve.decode import Decoder
    from memlake.serve.store import Store

    if not (wh.lake / "instances").exists():
        raise MemlakeError(f"no warehouse at {wh.root} (no lake/instances): run `memlake demo` first")
    return create_app(Explorer(Store(wh, SQL_VIEWS, threads=threads)), Decoder(wh))


def serve(wh: Warehouse, host: str = HOST, port: int = PORT, say=print) -> None:
    """Serve the explorer until interrupted."""
    import socket

    import uvicorn

    app = build(wh)
    # bound here, before the start line, so a port in use is one clear error, not a traceback
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise MemlakeError(f"cannot listen on {host}:{port} ({e.strerror}): pass another --port") from None
    if host in ("127.0.0.1", "localhost", "::1"):
        where = "this machine only"
    elif host in ("0.0.0.0", "::"):
        where = "every network interface: whoever reaches this machine can read the warehouse"
    else:
        where = "reachable at that address"
    say(f"memlake serve: http://{host}:{port}/ over {wh.root}, listening on {host} ({where}; "
        "--host to change)")  # fmt: skip
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])
