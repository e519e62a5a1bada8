"""The explorer's web app (Starlette): pages rendered from `data.Explorer`, a JSON API for what the
pages fetch, and Plotly's JavaScript served from its Python package (no network needed).

GET /healthz                          200 once serving
GET /panel?split=&cohort=&...         the panel browser (paged)
GET /instance/{id}?model=&step=       one instance (404: unknown id, model or step)
GET /api/instance/{id}/at?model=&step=  its per-token values, continuation, taxonomy, MIA at a step
GET /profiles?model=&metric=&...      an ATT(g, t) heatmap
GET /mitigation                       the Pareto view per study
GET /sql, /api/sql?q=, /api/sql.csv?q=  the read-only console
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from analysis.interactive import PLOTLY_JS, clean, fragment
from analysis.mitigation.interactive import pareto
from analysis.profiles.fitting import KEY_COLUMNS
from analysis.profiles.interactive import attgt_heatmap, trajectory
from analysis.profiles.metrics import LABEL, METRICS
from memlake.core.errors import MemlakeError
from memlake.serve.data import TOKEN_METRICS, Explorer, PanelQuery, Unknown
from memlake.serve.decode import Decoder
from memlake.serve.store import Refused

HERE = Path(__file__).resolve().parent
SQL_ROWS = 1000  # rows the console returns as JSON (the CSV download has them all)
CSV_BATCH = 10_000  # rows per chunk of a CSV download


class BadRequest(MemlakeError):
    """A query parameter that does not parse (the message names it)."""


def _jsonable(v):
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def json_response(payload, status: int = 200) -> Response:
    body = json.dumps(clean(payload), default=_jsonable, separators=(",", ":"))
    return Response(body, status_code=status, media_type="application/json")


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "n/a" if v != v else f"{v:.4g}"
    if isinstance(v, list):
        return f"[{len(v)} values]"
    return str(v)


def _param(request: Request, name: str, parse, what: str):
    """Query parameter `name` parsed by `parse`; None when absent or empty."""
    raw = request.query_params.get(name, "")
    if raw == "":
        return None
    try:
        return parse(raw)
    except ValueError:
        raise BadRequest(f"parameter {name!r} must be {what}, not {raw!r}") from None


def _int(request: Request, name: str, default: int | None = None) -> int | None:
    got = _param(request, name, int, "an integer")
    return default if got is None else got


def _float(request: Request, name: str) -> float | None:
    return _param(request, name, float, "a number")


def _true(raw: str) -> bool:
    if raw.lower() not in ("true", "false"):
        raise ValueError(raw)
    return raw.lower() == "true"


def _bool(request: Request, name: str) -> bool | None:
    return _param(request, name, _true, "true or false")


class ServerTiming:
    """ASGI middleware: every response carries `Server-Timing: app;dur=<ms>`, the time from the
    request to the response's first byte (what the benchmark reads, and browsers' dev tools show)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()

        async def timed(message):
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000
                message["headers"] = [
                    *message.get("headers", []),
                    (b"server-timing", f"app;dur={ms:.2f}".encode()),
                ]
            await send(message)

        await self.app(scope, receive, timed)


def create_app(explorer: Explorer, decoder: Decoder) -> Starlette:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["fmt"] = _fmt
    warehouse = str(explorer.store.wh.root)

    def render(request: Request, name: str, http_status: int = 200, **context) -> Response:
        context = {"title": name.split(".")[0], "page": name.split(".")[0], "warehouse": warehouse, **context}
        return templates.TemplateResponse(request, name, context, status_code=http_status)

    def error_page(request: Request, status: int, heading: str, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return json_response({"error": message}, status)
        return render(request, "error.html", status, title=heading, page="error", status=status,
                      heading=heading, message=message)  # fmt: skip

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok", "warehouse": warehouse})

    def panel(request: Request) -> Response:
        q = PanelQuery(
            split=request.query_params.get("split") or None,
            artifact=request.query_params.get("artifact") or None,
            source=request.query_params.get("source") or None,
            cohort=_int(request, "cohort"),
            checkpoint=request.query_params.get("checkpoint") or None,
            scored=_bool(request, "scored") is not False,
            category=request.query_params.get("category") or None,
            memorised=_bool(request, "memorised"),
            feature=request.query_params.get("feature") or None,
            low=_float(request, "low"),
            high=_float(request, "high"),
            page=_int(request, "page", 0),
        )
        result = explorer.panel(q)

        def page_url(n: int) -> str:
            params = dict(request.query_params)
            params["page"] = str(n)
            return "/panel?" + "&".join(f"{k}={v}" for k, v in params.items() if v != "")

        return render(request, "panel.html", panel=result, q=q.__dict__, page_url=page_url)

    def instance(request: Request) -> Response:
        raw = request.path_params["instance_id"]
        if not raw.lstrip("-").isdigit():
            raise Unknown(f"instance {raw!r} is not in the warehouse (ids are integers)")
        iid = int(raw)
        got = explorer.instance(iid)
        inst = got["instance"]
        models = sorted(got["checkpoints"])
        model = request.query_params.get("model") or (models[0] if models else None)
        metric = request.query_params.get("metric") or "sup_seq"
        colour = request.query_params.get("colour") or "surprisal"
        if metric not in METRICS:
            raise Unknown(f"metric {metric!r} is not one of {', '.join(METRICS)}")
        if colour not in TOKEN_METRICS:
            raise Unknown(f"token statistic {colour!r} is not one of {', '.join(TOKEN_METRICS)}")
        pieces = decoder.pieces(got["tokens"])
        view = {"id": iid, "tokens": got["tokens"], "pieces": pieces, "steps": [], "colour": colour}
        plot = ""
        if models:
            if model not in got["checkpoints"]:
                raise Unknown(f"model {model!r} has not scored instance {iid} (models: {', '.join(models)})")
            steps = got["checkpoints"][model]
            step = _int(request, "step", steps[-1])
            if step not in steps:
                raise Unknown(f"step {step} is not a checkpoint of {model} that scored instance {iid}")
            view |= {"model": model, "steps": steps, "step": step, "at": _at(iid, model, step)}
            own, controls = explorer.trajectory(iid, model, metric)
            plot = fragment(trajectory(own, controls, metric, inst.get("cohort")), "trajectory")
        return render(
            request,
            "instance.html",
            title=f"instance {iid}",
            inst=inst,
            models=models,
            view=view,
            view_json=json.dumps(clean(view), default=_jsonable).replace("</", "<\\/"),
            metric=metric,
            metric_label=LABEL[metric],
            metrics=METRICS,
            token_metrics=list(TOKEN_METRICS),
            trajectory=plot,
            features=got.get("features"),
        )

    def _at(iid: int, model: str, step: int) -> dict:
        at = explorer.at(iid, model, step)
        for e in at.get("extraction", []):
            e["generated_pieces"] = decoder.pieces(e["generated"])
        return at

    def instance_at(request: Request) -> Response:
        raw = request.path_params["instance_id"]
        if not raw.lstrip("-").isdigit():
            raise Unknown(f"instance {raw!r} is not in the warehouse (ids are integers)")
        model = request.query_params.get("model", "")
        step = _int(request, "step")
        if step is None:
            raise BadRequest("parameter 'step' is required")
        explorer.require(int(raw))
        return json_response(_at(int(raw), model, step))

    def profiles(request: Request) -> Response:
        fits = explorer.fits()
        if not fits:
            return render(request, "profiles.html", fits=[])
        wanted = {k: request.query_params.get(k) for k in KEY_COLUMNS if request.query_params.get(k)}
        preferred = [f for f in fits if all(str(f[k]) == v for k, v in wanted.items())]
        if not preferred:
            named = ", ".join(f"{k}={v}" for k, v in wanted.items())
            raise Unknown(f"no profile fit with {named}")
        if "metric" not in wanted:
            preferred = [f for f in preferred if f["metric"] == "sup_seq"] or preferred
        fit = preferred[0]
        cells = explorer.cells(fit)
        title = f"{fit['model']}: ATT(g, t) of {LABEL[fit['metric']]} ({fit['units']} units)"
        choices = {k: sorted({str(f[k]) for f in fits}) for k in KEY_COLUMNS}
        steps = [s for m, s in explorer.checkpoints() if m == fit["model"]]
        return render(
            request,
            "profiles.html",
            fits=fits,
            fit=fit,
            choices=choices,
            heatmap=fragment(attgt_heatmap(cells, fit["metric"], title), "heatmap"),
            n_cells=cells.height,
            n_significant=int(cells["zero_not_in_cband"].fill_null(False).sum()),
            checkpoint=f"{fit['model']}@{steps[-1]}" if steps else None,
        )

    def mitigation(request: Request) -> Response:
        runs = explorer.pareto_runs()
        studies = sorted(runs["study"].unique()) if runs.height else []
        plots = [(s, fragment(pareto(runs, s), f"pareto-{i}")) for i, s in enumerate(studies)]
        best = explorer.best_runs()
        table = {"columns": best.columns, "rows": best.rows()} if best.height else None
        return render(request, "mitigation.html", studies=plots, best=table)

    def sql_page(request: Request) -> Response:
        q = request.query_params.get("q") or "select * from sequence_panel limit 20"
        return render(request, "sql.html", q=q, tables=sorted(explorer.store.tables()), limit=SQL_ROWS)

    def api_sql(request: Request) -> Response:
        q = request.query_params.get("q", "")
        try:
            columns, rows, more = explorer.store.console(q, SQL_ROWS)
        except MemlakeError as e:
            return json_response({"error": str(e)}, 400)
        return json_response({"columns": columns, "rows": [list(r) for r in rows], "truncated": more})

    def api_sql_csv(request: Request) -> Response:
        q = request.query_params.get("q", "")
        try:
            columns, cursor = explorer.store.console_cursor(q)
        except MemlakeError as e:
            return json_response({"error": str(e)}, 400)

        def lines():  # batch by batch: a large result is never held whole
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(columns)
            while True:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
                rows = cursor.fetchmany(CSV_BATCH)
                if not rows:
                    return
                w.writerows(rows)

        headers = {"Content-Disposition": 'attachment; filename="query.csv"'}
        return StreamingResponse(lines(), media_type="text/csv", headers=headers)

    async def plotly_js(request: Request) -> Response:
        return FileResponse(PLOTLY_JS, media_type="text/javascript")

    async def not_found(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return error_page(request, 404, "Not found", f"no page at {request.url.path}")
        return error_page(request, exc.status_code, "Error", str(exc.detail))

    async def unknown(request: Request, exc: Unknown) -> Response:
        return error_page(request, 404, "Not found", str(exc))

    async def bad_request(request: Request, exc: BadRequest) -> Response:
        return error_page(request, 400, "Bad request", str(exc))

    async def failed(request: Request, exc: Exception) -> Response:
        # one line for the user; the trace goes to the server's log (uvicorn), never into the page
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return error_page(request, 500, "Server error", f"{type(exc).__name__}: {first}")

    routes = [
        Route("/", lambda r: RedirectResponse("/panel")),
        Route("/healthz", healthz),
        Route("/panel", panel),
        Route("/instance/{instance_id}", instance),
        Route("/api/instance/{instance_id}/at", instance_at),
        Route("/profiles", profiles),
        Route("/mitigation", mitigation),
        Route("/sql", sql_page),
        Route("/api/sql", api_sql),
        Route("/api/sql.csv", api_sql_csv),
        Route("/static/plotly.min.js", plotly_js),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    handlers = {
        HTTPException: not_found,
        Unknown: unknown,
        BadRequest: bad_request,
        Refused: bad_request,
        Exception: failed,
    }
    return Starlette(routes=routes, exception_handlers=handlers, middleware=[Middleware(ServerTiming)])
