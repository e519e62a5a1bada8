"""Mitigation: method sweeps on TinyMem and on suite/Hub models, the TinyMem study, loss
landscapes and figures."""

from __future__ import annotations

from pathlib import Path

from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.pipeline._stage import Log, quiet, relabel

VARIANTS = ("math", "language")


def set_variant(cfg, variant: str | None) -> None:
    """Set mitigation.tinymem.variant (checked before torch is imported)."""
    if variant is not None:
        if variant not in VARIANTS:
            raise MemlakeError(f"tinymem variant must be one of {VARIANTS}, got {variant!r}")
        cfg["mitigation"]["tinymem"]["variant"] = variant


@relabel("mitigate")
def _study(cfg, wh: Warehouse, study: str, step: int | None = None):
    """The study object: TinyMem, or a suite/Hub model whose extraction rows are in the lake."""
    from ingest.mitigation.studies import suite_study, tinymem_study

    m = cfg["mitigation"]
    if study == "tinymem":
        return tinymem_study(wh, m["tinymem"])
    # what a suite model's retrain oracle trains with (a Hub model has none)
    training = {k: cfg[k] for k in ("suite", "order", "corpus", "seed")}
    c = {**m["suite"], "training": training}
    return suite_study(wh, m["suite"]["model"] if study == "suite" else study, c, step=step)


def sweep(
    cfg,
    wh: Warehouse,
    study: str,
    methods: list[str] | None = None,
    max_per_method: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    step: int | None = None,
    log: Log = quiet,
    executor: str = "local",
    executor_options: dict | None = None,
) -> list[dict]:
    """Run the methods over their grids on `executor` (local by default: the config's
    mitigation.workers processes for a small model); every run is a row of the mitigation_runs
    lake table."""
    from ingest.executors import configure
    from ingest.mitigation.methods import REGISTRY
    from ingest.mitigation.sweep import plan_runs, run_sweep

    opts = executor_options or {}
    configure(executor, **opts)  # bad options fail before the study is built
    m = cfg["mitigation"]
    # a study section may name its own methods / grid points (the demo: every method on TinyMem,
    # the affordable ones on the suite model); else the shared mitigation.methods
    section = m["tinymem"] if study == "tinymem" else m["suite"]
    names = list(methods or section.get("methods") or m["methods"])
    if max_per_method is None:
        max_per_method = section.get("max_per_method", m["max_per_method"])
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise MemlakeError(
            f"unknown mitigation method {unknown[0]!r}: choose from {', '.join(sorted(REGISTRY))}"
        )
    if study == "tinymem" and step is not None:
        raise MemlakeError("mitigate: --step picks a checkpoint of a model study, not of tinymem")
    if study != "tinymem":
        # regularisers need a training set, ft_clean/ft_both clean counterparts: TinyMem only
        needs_data = [n for n in names if REGISTRY[n].kind == "regulariser" or n in ("ft_clean", "ft_both")]
        if methods and needs_data:  # asked for by name: say why rather than skip it
            raise MemlakeError(
                f"mitigate: {needs_data[0]} needs training data or clean rows, which only TinyMem has"
            )
        names = [n for n in names if n not in needs_data]
    s = _study(cfg, wh, study, step)
    if study != "tinymem":
        log(f"mitigate: {s.about}")
    runs = plan_runs(s.name, names, m["seeds"], max_per_method)

    def report(row):
        log(
            f"mitigate: {row['study']} {row['method']} {row['hparams']}: mem {row['mem_before']:.1f} -> "
            f"{row['mem_after']:.1f} %, acc {row['acc_before']:.1f} -> {row['acc_after']:.1f} %, "
            f"ppl {row['ppl_before']:.2f} -> {row['ppl_after']:.2f}, {row['seconds']:.1f}s"
        )

    rows = run_sweep(
        wh, s, runs, rank=rank, world_size=world_size, config=cfg, on_run=report, executor=executor, **opts
    )
    log(f"mitigate: {s.name}: {len(rows)} runs written, {len(runs) // world_size - len(rows)} already done")
    return rows


def oracle(cfg, wh: Warehouse, study: str, step: int | None = None, log: Log = quiet) -> str:
    """Train (or load) a study's retrain oracle and write its `mitigation_oracles` row; a one-line
    summary. Sweeps do this themselves before their first run."""
    from ingest.mitigation.sweep import train_oracle

    s = _study(cfg, wh, study, step)
    row = train_oracle(wh, s)
    if row is None:
        return f"oracle of {s.name}: already in mitigation_oracles"
    return (
        f"oracle of {s.name} ({row['seconds']:.1f}s): mem {row['mem']:.1f} % (base "
        f"{s.baseline()['mem']:.1f}), acc {row['acc']:.1f} %; forget set ({row['n_forget']} rows): exact "
        f"memorization {row['exact_memorization']:.3f} (base {row['base_exact_memorization']:.3f}), MIA AUC "
        f"{row['mia_auc']:.3f} (base {row['base_mia_auc']:.3f}); base privleak {row['base_privleak']:.1f}, "
        f"KS {row['base_ks_distance']:.3f}"
    )


def study(cfg, wh: Warehouse, max_per_method: int | None = None, log: Log = quiet) -> list[str]:
    """The TinyMem backdoor comparison of the mitigation paper (config `mitigation.study`): a
    better trained base model under its own name, the study's methods over their grids; the best
    run per method as table rows, then the figures."""
    from analysis.views import SQL_VIEWS
    from memlake.core.query import read

    m = cfg["mitigation"]
    spec = m.get("study")
    if not spec:
        raise MemlakeError("mitigate study: the config has no mitigation.study section")
    m["tinymem"] = {**m["tinymem"], **spec["tinymem"]}
    limit = spec.get("max_per_method") if max_per_method is None else max_per_method
    sweep(cfg, wh, "tinymem", list(spec["methods"]), limit, log=log)
    best = read(
        wh,
        "select method, hparams, mem_before, mem_after, acc_before, acc_after, seconds "
        "from mitigation_best_runs where study = $study order by mem_after, acc_after desc",
        {"study": m["tinymem"]["name"]},
        views=SQL_VIEWS,
    )
    lines = ["| method | hparams | mem before → after % | acc before → after % | seconds |"]
    lines += [
        f"| {r['method']} | {r['hparams']} | {r['mem_before']:.1f} → {r['mem_after']:.1f} | "
        f"{r['acc_before']:.2f} → {r['acc_after']:.2f} | {r['seconds']:.1f} |"
        for r in best.iter_rows(named=True)
    ]
    return lines + [f"figure: {p}" for p in figures(wh, landscapes=False)]


@relabel()
def figures(wh: Warehouse, landscapes: bool = True) -> list[Path]:
    """Pareto plot per study, time cost, per-duplication-class effects of the best runs and, with
    `landscapes`, the loss-landscape figures."""
    from analysis.mitigation import draw_mitigation
    from analysis.mitigation.landscape import draw_landscapes

    return draw_mitigation(wh) + (draw_landscapes(wh) if landscapes else [])


def landscape(
    cfg, wh: Warehouse, study: str, points: int | None = None, radius: float | None = None, log: Log = quiet
) -> str:
    """Loss landscapes of a study's unedited model, good and bad edit into the
    mitigation_landscape mart and a figure; a one-line summary."""
    m = cfg["mitigation"]
    n = m["landscape"]["points"] if points is None else points
    r = m["landscape"]["radius"] if radius is None else radius
    if n < 2 or not r > 0:  # before torch is even imported
        raise MemlakeError(f"mitigate landscape: need points >= 2 and radius > 0, got points={n}, radius={r}")
    s = _study(cfg, wh, study)

    def report(r):
        log(
            f"landscape: {r['study']} {r['edit']} ({r['method'] or 'base model'} {r['hparams']}, from "
            f"{r['source']}): forget loss {r['forget_loss_centre']:.3f} at the centre, "
            f"{r['forget_loss_rim']:.3f} on the rim; retain loss {r['retain_loss_centre']:.3f}, "
            f"{r['retain_loss_rim']:.3f}; {r['surface_seconds']:.1f}s"
        )

    rows, path = _landscape(wh, s, m["landscape"], points, radius, m["seeds"][0], report)
    n = rows["points"][0]
    return f"landscape of {s.name} (3 models x {n}x{n} points) -> {path}"


@relabel("mitigate landscape")
def _landscape(wh, s, section, points, radius, seed, on_edit):
    """Compute the surfaces into their mart (an ingest job: it runs the edits), then draw them."""
    from analysis.mitigation.landscape import save_figure
    from analysis.views import SQL_VIEWS
    from ingest.mitigation.landscape import compute_landscape

    rows, _ = compute_landscape(
        wh, s, section, views=SQL_VIEWS, points=points, radius=radius, seed=seed, on_edit=on_edit
    )
    return rows, save_figure(wh, rows)
