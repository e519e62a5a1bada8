"""The `memlake` command: one entry point per stage.

memlake suite corpus|train|list   build the embedded corpus and model suite
memlake query "SQL"               read-only SQL over lake tables and marts
memlake build                     dbt build (staging -> intermediate -> marts)
memlake profiles fit|figures      DiD memorisation profiles into marts, and their figures
memlake mitigate sweep|figures    mitigation methods on TinyMem and suite models, into the lake
memlake mitigate landscape        filter-normalised loss landscapes: unedited, good and bad edit
memlake mitigate study            the TinyMem backdoor comparison (config mitigation.study)
memlake taxonomy features         the taxonomy features of every instance (lake table instance_features)
memlake demo                      every stage on the embedded default
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memlake.core import config as configuration
from memlake.core.errors import MemlakeError
from memlake.core.paths import REPO_ROOT, Warehouse

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="memlake: a lakehouse for studying memorisation in language models.",
)
suite_app = typer.Typer(no_args_is_help=True, help="The embedded corpus and model suite.")
app.add_typer(suite_app, name="suite")
ingest_app = typer.Typer(no_args_is_help=True, help="Scoring jobs over checkpoints, and Hub imports.")
app.add_typer(ingest_app, name="ingest")

console = Console(stderr=True)

ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="Preset (tiny/small/medium) or a YAML file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config key: a.b=value.")]
WarehouseOpt = Annotated[
    Path | None,
    typer.Option("--warehouse", "-w", help="Warehouse root (default ./warehouse or $MEMLAKE_WAREHOUSE)."),
]


def _setup(config: str, overrides: list[str] | None, warehouse: Path | None):
    cfg = configuration.load(config, overrides)
    wh = Warehouse.at(warehouse)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return cfg, wh


# --------------------------------------------------------------------------- suite


@suite_app.command("corpus")
def suite_corpus(
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if present.")] = False,
):
    """Build the tokenizer and the `instances` table (planted artifacts, data order)."""
    from ingest.corpus.build import build_corpus

    cfg, wh = _setup(config, set_, warehouse)
    result = build_corpus(cfg, wh, force=force)
    configuration.save(cfg, wh.suite / "config.yaml")
    what = "already built" if result["skipped"] else f"{result['rows']} instances"
    console.print(f"corpus: {what} -> {wh.table('instances')}")


@suite_app.command("train")
def suite_train(
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
    models: Annotated[list[str] | None, typer.Option("--model", "-m", help="Train only these.")] = None,
):
    """Train the suite models (resumable; finished models are skipped)."""
    from ingest.suite.train import train_suite

    cfg, wh = _setup(config, set_, warehouse)
    configuration.save(cfg, wh.suite / "config.yaml")
    for r in train_suite(cfg, wh, models):
        if r.get("skipped"):
            console.print(f"{r['model']}: already trained")
        else:
            console.print(
                f"{r['model']}: {r['steps']} steps, {r['tokens_per_s']:.0f} tokens/s, "
                f"final loss {r['final_loss']:.3f}"
            )


@suite_app.command("register")
def suite_register(
    hub_id: Annotated[str, typer.Argument(help="Hub model id, e.g. EleutherAI/pythia-70m-deduped.")],
    batch_size: Annotated[int | None, typer.Option(help="Sequences per optimiser step.")] = None,
    first_epoch_end: Annotated[int | None, typer.Option(help="Last step of the first epoch.")] = None,
    row_len: Annotated[int | None, typer.Option(help="Tokens per training sequence.")] = None,
    max_lr: Annotated[float | None, typer.Option(help="Peak learning rate (for the lr column).")] = None,
    total_steps: Annotated[int | None, typer.Option(help="Training steps (default: last revision).")] = None,
    warmup_fraction: Annotated[float | None, typer.Option(help="Warm-up share of the steps.")] = None,
    min_lr_ratio: Annotated[float | None, typer.Option(help="Cosine floor as a share of the peak.")] = None,
    force: Annotated[bool, typer.Option(help="Replace a registration with other facts.")] = False,
    warehouse: WarehouseOpt = None,
):
    """Write `checkpoints` rows for a Hub model's step<N> revisions (Pythia: from its published
    facts; any other suite: give --batch-size and --first-epoch-end)."""
    from ingest.hub_suites import register

    facts = dict(
        batch_size=batch_size,
        first_epoch_end=first_epoch_end,
        row_len=row_len,
        max_lr=max_lr,
        total_steps=total_steps,
        warmup_fraction=warmup_fraction,
        min_lr_ratio=min_lr_ratio,
    )
    r = register(Warehouse.at(warehouse), hub_id, force=force, **facts)
    what = "already registered" if r["skipped"] else "registered"
    console.print(f"{r['hub_id']}: {what} as model {r['model']!r} ({r['checkpoints']} checkpoints)")


@suite_app.command("replica")
def suite_replica(
    out: Annotated[Path, typer.Argument(help="Folder to write the replica into.")],
):
    """Build the offline Pythia-shaped replica (HF cache, public artifacts, preshuffled stream) that
    the README's "Running on Pythia" commands run on without the Hub."""
    from ingest.replica import build_replica

    info = build_replica(out)
    console.print(f"replica: {out} ({info['panel']['train']} + {info['panel']['validation']} panel rows)")
    console.print(f"export HF_HOME={info['hf_home']} HF_HUB_OFFLINE=1", soft_wrap=True)
    for name, path in info["artifacts"].items():
        console.print(f"{name}: {path}", soft_wrap=True)
    console.print(f"stream: {info['stream']}", soft_wrap=True)


@suite_app.command("list")
def suite_list(warehouse: WarehouseOpt = None):
    """List the suite's checkpoints."""
    query(
        (
            "select model, count(*) as checkpoints, max(step) as last_step, "
            "round(min(train_loss), 3) as best_loss from checkpoints group by model order by model"
        ),
        warehouse=warehouse,
    )


# --------------------------------------------------------------------------- ingest

ModelsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model", "-m", help="Suite name, checkpoint folder or Hub id (default: every suite model)."
    ),
]
RevisionsOpt = Annotated[
    str,
    typer.Option(
        "--revisions", "-r", help="step0,step16 | step0-step64 (local grid) | step0-step64:16 | all"
    ),
]
ShardsOpt = Annotated[int, typer.Option("--shards", help="Split each checkpoint's panel into N units.")]
ExecutorOpt = Annotated[str, typer.Option("--executor", "-e", help="local | slurm | ray")]
ExecOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exec-opt",
        help="Executor option k=v (local: workers; slurm: cluster, partition, timeout_min, "
        "array_parallelism; ray: address, num_gpus).",
    ),
]


def _ingest(
    job: str,
    cfg,
    wh: Warehouse,
    models,
    revisions: str,
    shards: int,
    executor: str,
    exec_opts: list[str] | None,
    extra: dict | None = None,
) -> list[dict]:
    from ingest.executors import execute
    from ingest.jobs import plan

    opts = {
        "seed": cfg["seed"],
        "batch_size": cfg["ingest"]["batch_size"],
        "panel": cfg["ingest"]["panel"],
        **(extra or {}),
    }
    names = models or [m["name"] for m in cfg["suite"]["models"]]
    units = [u for name in names for u in plan(job, name, revisions, wh, shards, opts)]
    results = execute(units, executor, **_exec_opts(exec_opts))
    done = [r for r in results if not r["skipped"]]
    tokens = sum(r["tokens"] for r in done)
    secs = sum(r["seconds"] for r in done)
    console.print(
        f"{job}: {len(done)} partitions written, {len(results) - len(done)} already complete"
        + (f", {tokens / secs:.0f} tokens/s" if secs else "")
    )
    return results


def _exec_opts(items: list[str] | None) -> dict:
    """`--exec-opt k=v` items as executor keywords (digits as integers)."""
    out = {}
    for item in items or []:
        k, _, v = item.partition("=")
        out[k] = int(v) if v.isdigit() else v
    return out


@ingest_app.command("token-stats")
def ingest_token_stats(
    models: ModelsOpt = None,
    revisions: RevisionsOpt = "all",
    shards: ShardsOpt = 1,
    executor: ExecutorOpt = "local",
    exec_opt: ExecOpt = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """Per-token surprisal, rank and entropy for every (checkpoint, panel instance)."""
    cfg, wh = _setup(config, set_, warehouse)
    _ingest("token_stats", cfg, wh, models, revisions, shards, executor, exec_opt)


@ingest_app.command("extraction")
def ingest_extraction(
    models: ModelsOpt = None,
    revisions: RevisionsOpt = "all",
    shards: ShardsOpt = 1,
    executor: ExecutorOpt = "local",
    exec_opt: ExecOpt = None,
    prompt_len: Annotated[int | None, typer.Option(help="Prompt tokens P.")] = None,
    gen_len: Annotated[int | None, typer.Option(help="Greedy tokens G.")] = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """k-extractable memorisation: greedy continuation of a P-token prompt for G tokens."""
    cfg, wh = _setup(config, set_, warehouse)
    ex = cfg["ingest"]["extraction"]
    extra = {"prompt_len": prompt_len or ex["prompt_len"], "gen_len": gen_len or ex["gen_len"]}
    _ingest("extraction", cfg, wh, models, revisions, shards, executor, exec_opt, extra)


@ingest_app.command("import")
def ingest_import(
    kind: Annotated[
        str,
        typer.Argument(
            help="pile-deduped-subset | pythia-deduped-stats-raw | pythia-memorized-evals | "
            "pile-deduped-pythia-random-sampled | pile-duped-pythia-random-sampled | semantic-filters | "
            "semantic-filters-intermediate"
        ),
    ],
    source: Annotated[
        str | None,
        typer.Argument(help="Local folder with the Hub files (default: download the public Hub dataset)."),
    ] = None,
    sizes: Annotated[
        list[str] | None,
        typer.Option("--size", help="stats-raw, memorized-evals, semantic-filters: model sizes."),
    ] = None,
    steps: Annotated[list[int] | None, typer.Option("--step", help="stats-raw: checkpoint steps.")] = None,
    splits: Annotated[
        list[str] | None, typer.Option("--split", help="memorized-evals, semantic-filters: splits.")
    ] = None,
    scheme: Annotated[
        str | None,
        typer.Option(help="memorized-evals, semantic-filters: training stream, deduped (default) or duped."),
    ] = None,
    stream_rows: Annotated[
        int | None, typer.Option(help="Rows of the training stream (default Pythia's 143,000 x 1,024).")
    ] = None,
    swap_matches: Annotated[
        bool, typer.Option(help="semantic-filters: read *_templates as semantic, *_snowclones as textual.")
    ] = False,
    warehouse: WarehouseOpt = None,
):
    """Import a public Hugging Face dataset into the lake tables the embedded pipeline writes."""
    from ingest.hub_import import import_dataset

    opts = dict(sizes=sizes or None, steps=steps or None, splits=splits or None, scheme=scheme,
                stream_rows=stream_rows, swap_matches=swap_matches or None)  # fmt: skip
    s = import_dataset(kind, source, Warehouse.at(warehouse), **opts)
    console.print(
        f"{s.kind} -> {s.table}: {s.written} partitions written ({s.rows} rows), {s.skipped} already complete"
    )


# --------------------------------------------------------------------------- query


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="SQL; lake tables and marts are views.")],
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    warehouse: WarehouseOpt = None,
    limit: Annotated[int, typer.Option(help="Rows shown in table format.")] = 50,
):
    """Run read-only SQL against the warehouse and print the result."""
    from analysis.views import SQL_VIEWS
    from memlake.core.query import run

    columns, rows = run(Warehouse.at(warehouse), sql, views=SQL_VIEWS)
    if format is Format.csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)
    elif format is Format.json:
        print(json.dumps([dict(zip(columns, r)) for r in rows], default=str))
    else:
        t = Table(*columns, caption=f"{len(rows)} rows" + (f" (first {limit})" if len(rows) > limit else ""))
        for r in rows[:limit]:
            t.add_row(*[_short(v) for v in r])
        Console().print(t)


def _short(v) -> str:
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."


# --------------------------------------------------------------------------- profiles

profiles_app = typer.Typer(no_args_is_help=True, help="Memorisation profiles: DiD ATT(g,t) fits and figures.")
app.add_typer(profiles_app, name="profiles")
ListOpt = Annotated[
    str | None, typer.Option(help="Comma-separated; default from the config's profiles section.")
]


def _split(value: str | None, default: list) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else list(default)


def _profiles(
    cfg,
    wh: Warehouse,
    models=None,
    metrics=None,
    units=None,
    control_groups=None,
    base_periods=None,
    all_epochs: bool = False,
    bootstrap: int | None = None,
) -> list:
    from analysis.profiles import fit_profiles, grid, models_in
    from ingest.hub_suites import model_key

    p = cfg["profiles"]
    try:
        specs = grid(
            [model_key(m) for m in models] if models else models_in(wh),  # a Hub id or its lake key
            _split(metrics, p["metrics"]),
            _split(units, p["units"]),
            _split(control_groups, p["control_groups"]),
            _split(base_periods, p["base_periods"]),
            first_epoch=p["first_epoch"] and not all_epochs,
        )
    except ValueError as e:
        raise MemlakeError(str(e)) from None

    def report(fit):
        s = fit.spec
        inst = fit.attgt.filter(fit.attgt["step"] == fit.attgt["cohort"])
        sig = int(inst["zero_not_in_cband"].fill_null(False).sum())
        console.print(
            f"profiles: {s.model}/{s.metric}/{s.units}: {len(fit.attgt)} cells, "
            f"t=g {inst['memorisation'].mean():+.4f}, {sig}/{len(inst)} significant",
            soft_wrap=True,
        )

    try:
        return fit_profiles(
            wh,
            specs,
            bootstrap=bootstrap if bootstrap is not None else p["bootstrap"],
            seed=p["seed"],
            regression=p["regression"],
            on_fit=report,
        )
    except (ValueError, KeyError) as e:
        raise MemlakeError(f"profiles: {e}") from None


@profiles_app.command("fit")
def profiles_fit(
    models: ModelsOpt = None,
    metrics: ListOpt = None,
    units: ListOpt = None,
    control_groups: ListOpt = None,
    base_periods: ListOpt = None,
    all_epochs: Annotated[bool, typer.Option(help="Use every checkpoint, not only the first epoch.")] = False,
    bootstrap: Annotated[int | None, typer.Option(help="Bootstrap draws (0: analytic only).")] = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """ATT(g,t), aggregations, placebo tests and the pyfixest cross-check into the profiles marts."""
    cfg, wh = _setup(config, set_, warehouse)
    _profiles(cfg, wh, models, metrics, units, control_groups, base_periods, all_epochs, bootstrap)


@profiles_app.command("figures")
def profiles_figures(
    metric: Annotated[str, typer.Option(help="Outcome metric.")] = "sup_seq",
    units: Annotated[
        str, typer.Option(help="single (natural rows seen once), duplicated, backdoor, noise, templated, all")
    ] = "single",
    control_group: Annotated[str, typer.Option()] = "never_treated",
    base_period: Annotated[str, typer.Option()] = "varying",
    all_epochs: Annotated[bool, typer.Option(help="Figures of the all-epochs fit.")] = False,
    warehouse: WarehouseOpt = None,
):
    """Profile heatmap, instantaneous vs LR, persistent curve, residual bars, cross-size correlation."""
    from analysis.profiles.figures import draw

    opts = {
        "units": units,
        "control_group": control_group,
        "base_period": base_period,
        "first_epoch": not all_epochs,
    }
    try:
        paths = draw(Warehouse.at(warehouse), metric, opts)
    except ValueError as e:
        raise MemlakeError(str(e)) from None
    for path in paths:
        console.print(f"figure: {path}")


# --------------------------------------------------------------------------- mitigation

mitigate_app = typer.Typer(no_args_is_help=True, help="Mitigation: TinyMem and suite sweeps, figures.")
app.add_typer(mitigate_app, name="mitigate")


def _mitigate(
    cfg,
    wh: Warehouse,
    study: str,
    methods: str | None = None,
    max_per_method: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    step: int | None = None,
) -> list[dict]:
    from ingest.mitigation.methods import REGISTRY
    from ingest.mitigation.studies import suite_study, tinymem_study
    from ingest.mitigation.sweep import plan, sweep

    m = cfg["mitigation"]
    # a study section may name its own methods / grid points (the demo: every method on TinyMem,
    # the affordable ones on the suite model); else the shared mitigation.methods
    section = m["tinymem"] if study == "tinymem" else m["suite"]
    names = _split(methods, section.get("methods") or m["methods"])
    if max_per_method is None:
        max_per_method = section.get("max_per_method", m["max_per_method"])
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise MemlakeError(
            f"unknown mitigation method {unknown[0]!r}: choose from {', '.join(sorted(REGISTRY))}"
        )
    if study == "tinymem" and step is not None:
        raise MemlakeError("mitigate: --step picks a checkpoint of a model study, not of tinymem")
    try:
        if study == "tinymem":
            s = tinymem_study(wh, m["tinymem"])
        else:  # a suite model, lake key or Hub id whose extraction rows are in the lake
            # regularisers need a training set, ft_clean/ft_both clean counterparts: TinyMem only
            needs_data = [
                n for n in names if REGISTRY[n].kind == "regulariser" or n in ("ft_clean", "ft_both")
            ]
            if methods and needs_data:  # asked for by name: say why rather than skip it
                raise MemlakeError(
                    f"mitigate: {needs_data[0]} needs training data or clean rows, which only TinyMem has"
                )
            names = [n for n in names if n not in needs_data]
            s = suite_study(wh, m["suite"]["model"] if study == "suite" else study, m["suite"], step=step)
            console.print(f"mitigate: {s.about}", soft_wrap=True)
    except (ValueError, KeyError) as e:
        raise MemlakeError(f"mitigate: {e}") from None
    runs = plan(s.name, names, m["seeds"], max_per_method)

    def report(row):
        console.print(
            f"mitigate: {row['study']} {row['method']} {row['hparams']}: mem {row['mem_before']:.1f} -> "
            f"{row['mem_after']:.1f} %, acc {row['acc_before']:.1f} -> {row['acc_after']:.1f} %, "
            f"ppl {row['ppl_before']:.2f} -> {row['ppl_after']:.2f}, {row['seconds']:.1f}s",
            soft_wrap=True,
        )

    rows = sweep(wh, s, runs, rank=rank, world_size=world_size, config=cfg, on_run=report)
    console.print(
        f"mitigate: {s.name}: {len(rows)} runs written, {len(runs) // world_size - len(rows)} already done"
    )
    return rows


VariantOpt = Annotated[
    str | None,
    typer.Option(help="TinyMem variant: math | language (the corpus's instances rows); default: config."),
]


def _variant(cfg, variant: str | None) -> None:
    """Set mitigation.tinymem.variant from the command line (checked before torch is imported)."""
    if variant is not None:
        if variant not in ("math", "language"):
            raise MemlakeError(f"tinymem variant must be one of ('math', 'language'), got {variant!r}")
        cfg["mitigation"]["tinymem"]["variant"] = variant


@mitigate_app.command("sweep")
def mitigate_sweep(
    study: Annotated[
        str,
        typer.Argument(
            help="tinymem, suite, or a model with extraction rows: its lake key (pythia-70m-deduped), "
            "Hub id (EleutherAI/pythia-70m-deduped) or folder of step<N> checkpoints."
        ),
    ] = "tinymem",
    methods: Annotated[
        str | None,
        typer.Option(help="Comma-separated method names (default: the config's mitigation.methods)."),
    ] = None,
    step: Annotated[
        int | None,
        typer.Option(help="Checkpoint step of a model study (default: its latest with extraction rows)."),
    ] = None,
    max_per_method: Annotated[
        int | None, typer.Option(help="Grid points per method (default: config).")
    ] = None,
    rank: Annotated[int, typer.Option(help="This worker's index (shard the run list).")] = 0,
    world_size: Annotated[int, typer.Option(help="Number of workers.")] = 1,
    variant: VariantOpt = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """Run mitigation methods over their grids; every run is a row in the mitigation_runs lake table.
    A model study follows the mitigation paper's Pythia protocol (mitigation.suite in the config)."""
    cfg, wh = _setup(config, set_, warehouse)
    _variant(cfg, variant)
    _mitigate(cfg, wh, study, methods, max_per_method, rank, world_size, step)


@mitigate_app.command("study")
def mitigate_study(
    max_per_method: Annotated[
        int | None, typer.Option(help="Grid points per method (default: the study section).")
    ] = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """The TinyMem backdoor comparison of the mitigation paper (config `mitigation.study`): a better
    trained base model under its own name, the study's methods over their grids, then the best run
    per method from the mitigation_best_runs view and the figures."""
    cfg, wh = _setup(config, set_, warehouse)
    m = cfg["mitigation"]
    spec = m.get("study")
    if not spec:
        raise MemlakeError("mitigate study: the config has no mitigation.study section")
    m["tinymem"] = {**m["tinymem"], **spec["tinymem"]}
    limit = spec.get("max_per_method") if max_per_method is None else max_per_method
    _mitigate(cfg, wh, "tinymem", ",".join(spec["methods"]), limit)
    from analysis.mitigation import draw
    from analysis.views import SQL_VIEWS
    from memlake.core.query import read

    best = read(
        wh,
        "select method, hparams, mem_before, mem_after, acc_before, acc_after, seconds "
        "from mitigation_best_runs where study = $study order by mem_after, acc_after desc",
        {"study": m["tinymem"]["name"]},
        views=SQL_VIEWS,
    )
    console.print("| method | hparams | mem before → after % | acc before → after % | seconds |")
    for r in best.iter_rows(named=True):
        console.print(
            f"| {r['method']} | {r['hparams']} | {r['mem_before']:.1f} → {r['mem_after']:.1f} | "
            f"{r['acc_before']:.2f} → {r['acc_after']:.2f} | {r['seconds']:.1f} |",
            soft_wrap=True,
        )
    for p in draw(wh):
        console.print(f"figure: {p}")


@mitigate_app.command("figures")
def mitigate_figures(warehouse: WarehouseOpt = None):
    """Pareto plot per study, time cost and per-duplication-class effects of the best runs."""
    from analysis.mitigation import draw
    from analysis.mitigation.landscape import draw as draw_landscapes

    try:
        paths = draw(Warehouse.at(warehouse)) + draw_landscapes(Warehouse.at(warehouse))
    except ValueError as e:
        raise MemlakeError(str(e)) from None
    for p in paths:
        console.print(f"figure: {p}")


def _landscape(cfg, wh: Warehouse, study: str, points: int | None = None, radius: float | None = None) -> str:
    """Loss landscapes of a study's unedited model, good and bad edit into the mitigation_landscape
    mart and a figure; a one-line summary."""
    m = cfg["mitigation"]
    n = m["landscape"]["points"] if points is None else points
    r = m["landscape"]["radius"] if radius is None else radius
    if n < 2 or not r > 0:  # before torch is even imported
        raise MemlakeError(f"mitigate landscape: need points >= 2 and radius > 0, got points={n}, radius={r}")
    from analysis.mitigation.landscape import save_figure
    from analysis.views import SQL_VIEWS
    from ingest.mitigation.landscape import landscape
    from ingest.mitigation.studies import suite_study, tinymem_study

    def report(r):
        console.print(
            f"landscape: {r['study']} {r['edit']} ({r['method'] or 'base model'} {r['hparams']}, from "
            f"{r['source']}): forget loss {r['forget_loss_centre']:.3f} at the centre, "
            f"{r['forget_loss_rim']:.3f} on the rim; retain loss {r['retain_loss_centre']:.3f}, "
            f"{r['retain_loss_rim']:.3f}; {r['surface_seconds']:.1f}s",
            soft_wrap=True,
        )

    try:
        if study == "tinymem":
            s = tinymem_study(wh, m["tinymem"])
        else:
            s = suite_study(wh, m["suite"]["model"] if study == "suite" else study, m["suite"])
        rows, _ = landscape(
            wh, s, m["landscape"], views=SQL_VIEWS, points=points, radius=radius, seed=m["seeds"][0],
            on_edit=report,
        )  # fmt: skip
        path = save_figure(wh, rows)
    except (ValueError, KeyError) as e:
        raise MemlakeError(f"mitigate landscape: {e}") from None
    n = rows["points"][0]
    return f"landscape of {s.name} (3 models x {n}x{n} points) -> {path}"


@mitigate_app.command("landscape")
def mitigate_landscape(
    study: Annotated[
        str, typer.Argument(help="tinymem, suite, or a model name with extraction rows.")
    ] = "tinymem",
    points: Annotated[int | None, typer.Option(help="Grid points per axis (default: config).")] = None,
    radius: Annotated[
        float | None, typer.Option(help="alpha, beta in [-radius, radius] (default: config).")
    ] = None,
    variant: VariantOpt = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """Filter-normalised random-plane loss landscape (Li et al. 2018) of the unedited model, a good
    and a bad edit (re-run from mitigation_runs, else from the config's landscape section)."""
    cfg, wh = _setup(config, set_, warehouse)
    _variant(cfg, variant)
    console.print(_landscape(cfg, wh, study, points, radius), soft_wrap=True)


# --------------------------------------------------------------------------- publish + report


@app.command()
def publish(
    name: Annotated[
        str,
        typer.Argument(
            help="A set (instances, token_stats, sequence_panel, profiles, "
            "taxonomy, mitigation_runs) or any table/mart."
        ),
    ],
    repo: Annotated[str, typer.Option(help="Hub dataset repo, OWNER/NAME.")],
    dry_run: Annotated[
        bool, typer.Option(help="Stage the folder and print the file plan; upload nothing.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Staging folder (default warehouse/publish/<name>).")
    ] = None,
    license: Annotated[
        str, typer.Option(help="Card licence id (default: other = PSF, the corpus's).")
    ] = "other",
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    warehouse: WarehouseOpt = None,
):
    """Stage a Hugging Face dataset folder (Parquet shards + card) and upload it in one commit."""
    from memlake.publish import check_repo, stage, upload

    wh = Warehouse.at(warehouse)
    check_repo(repo)
    folder = out or wh.root / "publish" / name
    files = stage(wh, name, folder, repo=repo, license=license)
    for f in files:
        console.print(f"  {f.path}  {f.bytes:,} B" + (f"  {f.rows:,} rows" if f.rows is not None else ""))
    console.print(f"staged {len(files)} files in {folder}")
    if dry_run:
        console.print(f"dry run: nothing uploaded to datasets/{repo}")
        return
    console.print(f"uploaded: {upload(folder, repo, private=private)}")


@app.command()
def report(
    out: Annotated[Path | None, typer.Option(help="Output folder (default warehouse/report).")] = None,
    dbt_docs: Annotated[bool, typer.Option(help="Also run `dbt docs generate` and link it.")] = True,
    warehouse: WarehouseOpt = None,
):
    """Write a static HTML report (figures, summaries, provenance) and print its path."""
    from analysis.report import write_report

    wh = Warehouse.at(warehouse)
    index = write_report(wh, out or wh.root / "report", dbt_docs=dbt_docs)
    console.print(f"report: {index}")


# --------------------------------------------------------------------------- build


def dbt(args: list[str], wh: Warehouse) -> int:
    """Run dbt from the repo root with the profile pointed at `wh` (same as calling dbt)."""
    exe = Path(sys.executable).parent / "dbt"
    cmd = [
        str(exe) if exe.exists() else "dbt",
        *args,
        "--project-dir",
        str(REPO_ROOT),
        "--profiles-dir",
        str(REPO_ROOT),
    ]
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)}
    wh.marts.mkdir(parents=True, exist_ok=True)
    return subprocess.call(cmd, cwd=REPO_ROOT, env=env)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def build(ctx: typer.Context, warehouse: WarehouseOpt = None):
    """`dbt build` over the warehouse: staging views, marts as Parquet, all data tests."""
    code = dbt(["build", *ctx.args], Warehouse.at(warehouse))
    if code:
        raise MemlakeError(f"dbt build failed (exit {code}); see the dbt output above")


# --------------------------------------------------------------------------- demo


@app.command()
def demo(config: ConfigOpt = "small", set_: SetOpt = None, warehouse: WarehouseOpt = None):
    """Run every stage on the embedded default and print where the outputs are."""
    from ingest.corpus.build import build_corpus
    from ingest.suite.train import train_suite

    cfg, wh = _setup(config, set_, warehouse)
    t0 = time.perf_counter()
    console.rule(f"memlake demo ({cfg['scale']}) -> {wh.root}")
    r = build_corpus(cfg, wh)
    configuration.save(cfg, wh.suite / "config.yaml")
    console.print(f"[1/9] corpus: {r['rows']} instances{' (cached)' if r['skipped'] else ''}")
    for m in train_suite(cfg, wh):
        note = "cached" if m.get("skipped") else f"{m['tokens_per_s']:.0f} tok/s, loss {m['final_loss']:.3f}"
        console.print(f"[2/9] suite: {m['model']} ({note})")
    console.print("[3/9] token statistics over every checkpoint")
    _ingest("token_stats", cfg, wh, None, "all", 1, "local", None)
    console.print("[4/9] extraction over every checkpoint")
    _ingest("extraction", cfg, wh, None, "all", 1, "local", None, dict(cfg["ingest"]["extraction"]))
    console.print(f"[5/9] taxonomy features: {_taxonomy_features(cfg, wh)}")
    code = dbt(["build", "--quiet", "--vars", json.dumps(_dbt_vars(cfg))], wh)
    if code:
        raise MemlakeError(f"dbt build failed (exit {code})")
    console.print("[6/9] dbt build: ok")
    _profiles(cfg, wh)
    from analysis.profiles.figures import draw

    figures = draw(wh)
    console.print(f"[7/9] profiles: fitted; {len(figures)} figures in {figures[0].parent}")
    console.print("[8/9] taxonomy: " + _taxonomy_analyses(cfg, wh, search=True), soft_wrap=True)
    rows = _mitigate(cfg, wh, "tinymem") + _mitigate(cfg, wh, "suite")
    landscape = _landscape(cfg, wh, "tinymem")
    from analysis.mitigation import draw as draw_mitigation

    figures = draw_mitigation(wh)
    console.print(
        f"[9/9] mitigation: {len(rows)} runs; {len(figures)} figures in {figures[0].parent}; {landscape}",
        soft_wrap=True,
    )
    from analysis.report import write_report

    index = write_report(wh, wh.root / "report")
    console.rule(f"done in {time.perf_counter() - t0:.0f}s")
    console.print(
        f"lake:        {wh.lake}\ncheckpoints: {wh.suite}\ntokenizer:   {wh.tokenizer}\n"
        f'catalog:     {wh.catalog}\ntry:         memlake query "select split, artifact, '
        'count(*) from instances group by all order by all"'
    )
    console.print(f"report:      {index}", soft_wrap=True)


def _dbt_vars(cfg) -> dict:
    """dbt vars that follow the config: extraction setting and taxonomy thresholds."""
    ex, tax = cfg["ingest"]["extraction"], cfg.get("taxonomy", {})
    out = {"extraction_prompt_len": ex["prompt_len"], "extraction_gen_len": ex["gen_len"]}
    out.update({k: tax[k] for k in ("nl_threshold", "code_threshold", "recitation_threshold") if k in tax})
    # perplexity windows follow the taxonomy sample: prompt [0, P), continuation [P, P + k)
    windows = {"prompt_len": "perplexity_prompt_len", "k": "perplexity_continuation_len"}
    out.update({var: tax[key] for key, var in windows.items() if key in tax})
    return out


# --------------------------------------------------------------------------- taxonomy

taxonomy_app = typer.Typer(
    no_args_is_help=True, help="Taxonomy of memorisation: recitation, reconstruction, recollection."
)
app.add_typer(taxonomy_app, name="taxonomy")


def _taxonomy_features(
    cfg, wh: Warehouse, force: bool = False, tokenizer: str | None = None, stream=None, match_corpus=None
) -> str:
    """Run the features job; a one-line summary of what it did."""
    from ingest.features import build_features

    r = build_features(cfg, wh, force=force, tokenizer=tokenizer, stream=stream, match_corpus=match_corpus)
    if r["skipped"]:
        return f"{r['rows']} instances (cached)"
    secs = r["seconds"]
    return (
        f"{r['rows']} instances in {sum(secs.values()):.0f}s (embedding {secs['embedding']:.0f}s), "
        f"duplicates over {r['stream_rows']} stream rows in {secs['duplicates']:.0f}s, "
        f"code-vs-NL held-out accuracy {r['held_out_accuracy']:.3f}"
    )


@taxonomy_app.command("features")
def taxonomy_features(
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
    force: Annotated[bool, typer.Option(help="Recompute even if up to date.")] = False,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Tokenizer that made the instances (local folder or Hub id; default: the one the "
            "instances record, e.g. Pythia's for Hub imports, else the warehouse tokenizer)."
        ),
    ] = None,
    stream: Annotated[
        str | None,
        typer.Option(
            help="Training stream to count duplicates and token frequencies over: a Megatron "
            "document.bin/.idx pair (prefix or either file), a 2-D .npy, or a raw token file with "
            "--row-len (default: the warehouse's training rows in data order)."
        ),
    ] = None,
    stream_shards: Annotated[int, typer.Option(help="Split the stream's rows into N units.")] = 1,
    row_len: Annotated[int | None, typer.Option(help="Tokens per row of a raw stream file.")] = None,
    executor: ExecutorOpt = "local",
    exec_opt: ExecOpt = None,
    match_corpus: Annotated[
        str | None,
        typer.Option(
            help="Semantic/textual match corpus: a lake table with instance_id and tokens "
            "(representative_sample[:scheme]; the default while it has no partitions) or a Parquet "
            "file/folder with those columns (default: a seeded sample of the training rows)."
        ),
    ] = None,
):
    """Duplicates, token frequencies, templates, Huffman length, code-vs-NL and matches per instance."""
    from ingest.stream_counts import StreamSource

    cfg, wh = _setup(config, set_, warehouse)
    source = None
    if stream is not None:
        opts = tuple(sorted(_exec_opts(exec_opt).items()))
        source = StreamSource(stream, row_len, stream_shards, executor, opts)
    summary = _taxonomy_features(cfg, wh, force, tokenizer, source, match_corpus)
    console.print(f"features: {summary} -> {wh.table('instance_features')}")


def _taxonomy_analyses(
    cfg,
    wh: Warehouse,
    protocols: tuple[str, ...] = ("leakage_free", "published"),
    model: str | None = None,
    step: int | None = None,
    search: bool = False,
) -> str:
    """Shares, correlations, KL, both model protocols (every checkpoint, or `model`/`step`),
    with `search` the partition search at the main (model, step), and the figures; a
    one-line summary."""
    import analysis.taxonomy as tax

    t = cfg["taxonomy"]
    found = None
    try:
        shares = tax.run_shares(wh)["taxonomy_shares"]
        tax.run_correlations(wh)
        tax.run_kl(wh, n_bootstrap=t["kl_bootstrap"])
        for protocol in protocols:
            fits = tax.run_models(wh, protocol=protocol, model=model, step=step, n_subsets=t["n_subsets"])
        if search:
            found = tax.run_main_search(wh, n_subsets=t["n_subsets"])
        figures = tax.draw(wh)
    except (ValueError, KeyError) as e:
        raise MemlakeError(f"taxonomy: {e}") from None
    last = shares.filter((shares["computation"] == "per_model") & shares["share"].is_not_nan())
    last = last.filter(last["step"] == last["step"].max()) if len(last) else last
    parts = [
        f"{r['model']}@{r['step']} {r['category']} {r['share']:.0f}%"
        for r in last.sort("model", "category").iter_rows(named=True)
    ]
    from analysis.taxonomy.model import final_tests_summary

    return (
        f"{len(figures)} figures; memorised shares: "
        + (", ".join(parts) or "no memorised sequences")
        + f"; tests (taxonomy_model_tests): {final_tests_summary(fits)}"
        + (f"; {_search_summary(found)}" if found is not None else "")
    )


def _search_summary(found) -> str:
    """The best partition per searched (model, step), or why none was searched."""
    if found.is_empty():
        return "partition search: not run (no memorised training row)"
    import analysis.taxonomy as tax

    parts = []
    for (m, s), rows in found.group_by(["model", "step"], maintain_order=True):
        evaluated = int((~rows["skipped"]).sum())
        try:
            b = tax.best(rows)
        except ValueError:
            parts.append(f"{m}@{s} all {len(rows)} candidates skipped")
            continue
        parts.append(
            f"{m}@{s} {b['first_feature']} >= q{b['first_quantile']:.2f}, then {b['second_feature']} "
            f">= q{b['second_quantile']:.2f}: F1 {b['f1']:.3f} ({evaluated} of {len(rows)} candidates fitted)"
        )
    return "partition search (taxonomy_search): " + "; ".join(parts)


@taxonomy_app.command("fit")
def taxonomy_fit(
    protocol: Annotated[str, typer.Option(help="leakage_free, published or both.")] = "both",
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Fit the models of this model only (lake key or Hub id)."),
    ] = None,
    step: Annotated[int | None, typer.Option(help="Fit the models of this checkpoint step only.")] = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """Shares, correlations, KL vs duplicates, baseline/taxonomic models and figures into marts."""
    from ingest.hub_suites import model_key

    cfg, wh = _setup(config, set_, warehouse)
    protocols = ("leakage_free", "published") if protocol == "both" else (protocol,)
    key = model_key(model) if model else None
    console.print("taxonomy: " + _taxonomy_analyses(cfg, wh, protocols, key, step), soft_wrap=True)


@taxonomy_app.command("search")
def taxonomy_search(
    start: Annotated[int, typer.Option(help="First candidate index of this shard.")] = 0,
    end: Annotated[int | None, typer.Option(help="One past the last candidate (default: all 810).")] = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """The greedy taxonomic search over (feature, quantile) partitions; shardable and resumable."""
    import analysis.taxonomy as tax

    cfg, wh = _setup(config, set_, warehouse)
    try:
        tax.run_search(wh, start, end, n_subsets=cfg["taxonomy"]["n_subsets"])
        best = tax.search_results(wh).head(3)
    except (ValueError, KeyError) as e:
        raise MemlakeError(f"taxonomy search: {e}") from None
    console.print(best)


def main() -> None:
    try:
        app(standalone_mode=False)
    except MemlakeError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        raise SystemExit(130) from None
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            raise SystemExit(e.exit_code) from None
        raise
