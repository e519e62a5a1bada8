"""`memlake taxonomy`: features, the taxonomy marts and models, the partition search."""

from __future__ import annotations

from typing import Annotated

import typer

from memlake.cli._options import ConfigOpt, ExecOpt, ExecutorOpt, SetOpt, WarehouseOpt, key_values, say
from memlake.pipeline import setup, taxonomy

app = typer.Typer(
    no_args_is_help=True, help="Taxonomy of memorisation: recitation, reconstruction, recollection."
)


@app.command("features")
def features_command(
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
    cfg, wh = setup(config, set_, warehouse)
    source = taxonomy.stream_source(stream, row_len, stream_shards, executor, key_values(exec_opt))
    summary = taxonomy.features(cfg, wh, force, tokenizer, source, match_corpus)
    say(f"features: {summary} -> {wh.table('instance_features')}")


@app.command("fit")
def fit_command(
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
    cfg, wh = setup(config, set_, warehouse)
    protocols = ("leakage_free", "published") if protocol == "both" else (protocol,)
    say("taxonomy: " + taxonomy.analyses(cfg, wh, protocols, model, step))


@app.command("search")
def search_command(
    start: Annotated[int, typer.Option(help="First candidate index of this shard.")] = 0,
    end: Annotated[int | None, typer.Option(help="One past the last candidate (default: all 810).")] = None,
    executor: ExecutorOpt = "local",
    exec_opt: ExecOpt = None,
    shard_size: Annotated[int | None, typer.Option(help="Candidates per unit (default: the range).")] = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """The greedy taxonomic search over (feature, quantile) partitions; shardable and resumable."""
    cfg, wh = setup(config, set_, warehouse)
    say(str(taxonomy.search(cfg, wh, start, end, shard_size, executor, key_values(exec_opt))))
