"""Import public Hugging Face Hub datasets into the lake tables the embedded pipeline writes.

| kind | Hub dataset | lake tables |
|---|---|---|
| `pile-deduped-subset` | pietrolesci/pile-deduped-subset | instances (whole rows) |
| `pythia-deduped-stats-raw` | pietrolesci/pythia-deduped-stats-raw | token_stats |
| `pythia-memorized-evals` | EleutherAI/pythia-memorized-evals | extraction, instances (samples) |
| `pile-deduped-pythia-random-sampled` | EleutherAI/(same name) | representative_sample, _scores |
| `pile-duped-pythia-random-sampled` | EleutherAI/(same name) | representative_sample, _scores |
| `semantic-filters` | usvsnsp/semantic-filters | instance_features, extraction, |
| | | published_perplexities, instances (samples) |
| `semantic-filters-intermediate` | usvsnsp/semantic-filters-intermediate | as semantic-filters |

Every public column and its memlake name (model = `pythia-<size>` plus `-deduped` for the
deduped scheme, the Hub name without owner; step = 143000 unless a split names one):

| public column | lake table.column |
|---|---|
| **pile-deduped-subset** | |
| `seq_idx` | instances.instance_id (< 0: validation) |
| | instances.batch_idx = seq_idx // 1024, cohort = 1000 * (seq_idx // 1,024,000 + 1) |
| `input_ids` (2,049 tokens) | instances.tokens (sample_only false) |
| **pythia-deduped-stats-raw** | |
| folder `<size>/pythia-<scheme>-<size>-step<N>_*` | token_stats.model, step |
| `seq_idx`, `sup`, `rank`, `entropy` | token_stats.instance_id, surprisal, rank, entropy |
| (not released) | token_stats.second_moment null (it needs the logits: rescore to fill it) |
| **pythia-memorized-evals** | |
| split `<scheme>.<size>[.<step>]` | extraction.model, step |
| `index` | extraction.instance_id, instances.instance_id |
| `tokens` (64) | instances.tokens (sample_only); extraction.generated = tokens 32..63 |
| (every row) | extraction.match_fraction 1, memorised, prompt_len = gen_len = 32 |
| **pile-{deduped,duped}-pythia-random-sampled** | |
| (dataset name) | representative_sample.scheme |
| `Index` | representative_sample / representative_scores .instance_id |
| `Tokens` (64, uint16) | representative_sample.tokens |
| `70M` ... `12B` | representative_scores.memorization_score of that model |
| **semantic-filters, semantic-filters-intermediate** | |
| split `{pile,memories}_<scheme>_<size>[.<step>]` | model, step of every table below |
| `sequence_id` | instance_id of every table |
| `tokens` (64) | instances.tokens (sample_only, where the instance is absent) |
| `text` | instance_features.text (prompt_text: null) |
| `is_incrementing`, `is_repeating` | instance_features, same names; is_templating = either |
| `sequence_duplicates` | instance_features, same name (whole_sequence_duplicates: null) |
| `max/avg/min/median/p25/p75_frequency` | instance_features, same names |
| `frequencies` | instance_features.frequencies |
| `nl_scores` | instance_features.nl_score |
| `0_8_snowclones`, `0_9_snowclones` | instance_features.semantic_matches_0_8, _0_9 |
| `0_8_templates`, `0_9_templates` | instance_features.textual_matches_0_8, _0_9 |
| `huffman_coding_length` | instance_features, same name |
| (split origin) | instance_features.in_representative_sample = a pile split |
| `memorization_score` | extraction.match_fraction (memories: 1), memorised = score 1, |
| | extraction.generated = tokens 32..63 where memorised |
| `prompt_perplexity`, `generation_perplexity` | published_perplexities, same names |
| `sequence_perplexity`, `loss` | published_perplexities, same names |
| `repeating_offset`, `num_repeating` | - (unused by the taxonomy) |
| `smallest_repeating_chunk` | - (unused by the taxonomy) |

`swap_matches` reads `templates` as the semantic and `snowclones` as the textual counts, for a
release whose names are the other way round (textual matches never exceed semantic ones).

Every importer takes `source`: a Hub dataset id (only the files needed are fetched with
`huggingface_hub.snapshot_download`) or a local directory holding the same files. An import
checks every file first, then writes each lake partition as one unit of work
(`memlake.core.unit.run_unit`: atomic, with its provenance in the manifest), so a re-import
skips the partitions that are complete and an interrupted one resumes. Files are streamed in
record batches, so memory is bounded by a batch plus a few bytes per row (ids and token
digests); only a stats-raw file is held whole while it is written.

One warehouse holds one training stream (`instances` is keyed by the row's index in it): the
Pythia `deduped` stream unless `scheme="duped"`. `instances` is one partition, rewritten
atomically by every import that adds rows; its manifest lists the imported files. A sample row
(64 tokens, `sample_only`) is added only for an index that is not an instance yet, and a whole
row replaces the sample of its index, so the imports compose in any order; the first 64 tokens
of every row of an index must agree (else a one-line error, nothing written). Likewise the
rows of an (model, step, instance) already in `extraction` or `published_perplexities` are kept
(within one semantic-filters import the pile split's row wins over the memories split's, as
in the paper). Stats-raw runs must cover exactly the panel (the whole rows of `instances`): the
import that comes second, stats or panel, checks it.

One module per importer family (`panel_stats`, `memorized_evals`, `random_sampled`,
`semantic_filters`) over shared ones: `sources` (where files come from, what their names say),
`reading` (typed, checked columns), `rows` (lake rows of public rows), `splits` (the flow of the
split-named imports), `units` (the units of work), `instances` and `features` (the merged
single-partition tables) and `partitions` (one shard per file of the other tables).
`IMPORTERS` names them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ingest.hub_import.memorized_evals import import_pythia_memorized_evals
from ingest.hub_import.panel_stats import STATS_KIND, import_pile_deduped_subset, import_pythia_stats_raw
from ingest.hub_import.random_sampled import (
    import_pile_deduped_random_sampled,
    import_pile_duped_random_sampled,
)
from ingest.hub_import.semantic_filters import import_semantic_filters, import_semantic_filters_intermediate
from ingest.hub_import.sources import (
    GEN_LEN,
    PROMPT_LEN,
    PYTHIA_BATCH_SIZE,
    PYTHIA_CHECKPOINT_EVERY,
    PYTHIA_FINAL_STEP,
    PYTHIA_STREAM_ROWS,
    PYTHIA_TOKENIZER,
    SAMPLE_LEN,
    SCHEMES,
    ImportSummary,
    resolve_source,
)
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.registry import Registry

__all__ = [
    "GEN_LEN",
    "HUB_REPOS",
    "IMPORTERS",
    "PROMPT_LEN",
    "PYTHIA_BATCH_SIZE",
    "PYTHIA_CHECKPOINT_EVERY",
    "PYTHIA_FINAL_STEP",
    "PYTHIA_STREAM_ROWS",
    "PYTHIA_TOKENIZER",
    "SAMPLE_LEN",
    "SCHEMES",
    "STATS_KIND",
    "ImportSummary",
    "import_dataset",
    "import_pile_deduped_random_sampled",
    "import_pile_deduped_subset",
    "import_pile_duped_random_sampled",
    "import_pythia_memorized_evals",
    "import_pythia_stats_raw",
    "import_semantic_filters",
    "import_semantic_filters_intermediate",
    "resolve_source",
]

HUB_REPOS = {
    "pile-deduped-subset": "pietrolesci/pile-deduped-subset",
    "pythia-deduped-stats-raw": "pietrolesci/pythia-deduped-stats-raw",
    "pythia-memorized-evals": "EleutherAI/pythia-memorized-evals",
    "pile-deduped-pythia-random-sampled": "EleutherAI/pile-deduped-pythia-random-sampled",
    "pile-duped-pythia-random-sampled": "EleutherAI/pile-duped-pythia-random-sampled",
    "semantic-filters": "usvsnsp/semantic-filters",
    "semantic-filters-intermediate": "usvsnsp/semantic-filters-intermediate",
}

IMPORTERS: Registry[Callable[..., ImportSummary]] = Registry("import kind")
IMPORTERS.add("pile-deduped-subset", import_pile_deduped_subset)
IMPORTERS.add("pythia-deduped-stats-raw", import_pythia_stats_raw)
IMPORTERS.add("pythia-memorized-evals", import_pythia_memorized_evals)
IMPORTERS.add("pile-deduped-pythia-random-sampled", import_pile_deduped_random_sampled)
IMPORTERS.add("pile-duped-pythia-random-sampled", import_pile_duped_random_sampled)
IMPORTERS.add("semantic-filters", import_semantic_filters)
IMPORTERS.add("semantic-filters-intermediate", import_semantic_filters_intermediate)


def import_dataset(kind: str, source: str | None, wh: Warehouse, **opts: Any) -> ImportSummary:
    """Run the importer for `kind`; `source` None means the public Hub repo; None options are
    dropped so that a CLI can pass every option it has."""
    fn = IMPORTERS.get(kind)
    opts = {k: v for k, v in opts.items() if v is not None}
    takes = [
        p for p in inspect.signature(fn).parameters if p not in ("source", "wh") and not p.startswith("_")
    ]
    unknown = sorted(set(opts) - set(takes))
    if unknown:
        raise MemlakeError(f"import {kind}: unknown option(s) {unknown} (takes {takes})")
    summary = fn(source or HUB_REPOS[kind], wh, **opts)
    _register_models(wh)
    return summary


def _register_models(wh: Warehouse) -> None:
    """Imported rows of a known suite (Pythia) get that suite's `checkpoints`, so a warehouse of
    imports alone builds and fits; a model already registered is left as it is."""
    from ingest.hub_suites import ensure_registered, family_hub_id

    keys = {d.name.split("=", 1)[1] for d in wh.lake.glob("*/model=*") if d.parent.name != "checkpoints"}
    for key in sorted(keys):
        if family_hub_id(key):
            ensure_registered(wh, key)
