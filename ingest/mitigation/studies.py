"""The two kinds of study a sweep runs: a TinyMem model trained here with planted artifacts, and
any Hugging Face causal LM (the embedded suite, Pythia on a GPU) under the mitigation paper's
Pythia protocol, its memorised sequences taken from the `extraction` lake table."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch import nn

from ingest.checkpoints import parse_step
from ingest.lm.runtime import eval_mode, model_device
from ingest.mitigation.methods import EditTask, Recipe, SequenceSet
from ingest.mitigation.oracle import Probe, Rows
from ingest.mitigation.sweep import N_DUP_CLASSES, Study
from ingest.mitigation.tinymem.arithmetic import math_data
from ingest.mitigation.tinymem.data import TinyMemData
from ingest.mitigation.tinymem.language import corpus_rows, language_data
from ingest.mitigation.tinymem.metrics import evaluate as tm_evaluate
from ingest.mitigation.tinymem.metrics import forget_mask, forget_retain
from ingest.mitigation.tinymem.model import tinymem_model
from ingest.mitigation.tinymem.train import MIN_LR_RATIO, checkpoints, load_checkpoint, train
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

VARIANTS = ("math", "language")
# The mitigation paper's Pythia protocol (Sakarvadia et al. 2024): a 32-token prompt, memorised iff
# the next 40 tokens come out greedily; perplexity over 80-token held-out chunks; batches of 32.
PROTOCOL = {"prompt_len": 32, "test_len": 40, "chunk_len": 80, "batch_size": 32, "heldout": 1632,
            "forget_max": None, "ft_epochs": 5, "seed": 0}  # fmt: skip


@dataclass(frozen=True)
class StudySpec:
    """What builds a study, small enough to travel with every unit of its sweep: the kind
    (`tinymem` or `suite`), the warehouse root, the config section as canonical JSON and, for a
    model study, the model as given and its resolved step. `build` makes the same study again
    (the TinyMem base model is loaded, not retrained: its checkpoint is in the warehouse)."""

    kind: str
    root: str
    settings: str
    model: str | None = None
    step: int | None = None

    def build(self) -> Study:
        wh, c = Warehouse.at(self.root), json.loads(self.settings)
        if self.kind == "tinymem":
            return tinymem_study(wh, c)
        return suite_study(wh, str(self.model), c, step=self.step)


def _spec(kind: str, wh: Warehouse, c: dict[str, Any], **model) -> StudySpec:
    return StudySpec(kind, str(wh.root), json.dumps(c, sort_keys=True), **model)


def variant_config(c: dict[str, Any]) -> dict[str, Any]:
    """The settings of the configured variant: `math` (default) uses the tinymem section as is;
    `language` overrides it with the `language:` subsection (corpus rows, prompt/window, epochs)."""
    variant = c.get("variant") or "math"
    if variant not in VARIANTS:
        raise ValueError(f"tinymem variant must be one of {VARIANTS}, got {variant!r}")
    return {**c, **(c.get("language") or {}), "variant": variant} if variant == "language" else c


def tinymem_name(c: dict[str, Any]) -> str:
    if c.get("name"):  # a named study (`mitigate study`): its own base model and lake partition
        return str(c["name"])
    c = variant_config(c)
    if c.get("variant") == "language":  # its own lake partition: runs of the two variants never mix
        return f"tinymem-language-{c['artifact']}-{c['n_layer']}l"
    return f"tinymem-{c['task']}-{c['artifact']}-{c['n_layer']}l"


def tinymem_data(wh: Warehouse, c: dict[str, Any]) -> TinyMemData:
    """Math sequences, or (variant language) the warehouse corpus's clean `instances` rows: a seeded
    `n_rows` subset of the training split, with `n_test` never-trained validation rows as the test set."""
    c = variant_config(c)
    if c.get("variant") != "language":
        optional = {k: c[k] for k in ("extra_cs", "clean_7", "backdoor_test_frac") if c.get(k) is not None}
        if "extra_cs" in optional:
            optional["extra_cs"] = tuple(optional["extra_cs"])
        return math_data(
            c["task"], artifact=c["artifact"], num_7=c["num_7"], num_extra=c["num_extra"], n_test=c["n_test"],
            n_noise=c["n_noise"], dup_classes=c["dup_classes"], length=c["length"], max_ctx=c["max_ctx"],
            prompt_len=c["prompt_len"], k=c["k"], seed=c["seed"], **optional,
        )  # fmt: skip
    try:
        rows, vocab_size = corpus_rows(wh, "train")
        test, _ = corpus_rows(wh, "validation")
    except MemlakeError as e:
        raise MemlakeError(
            f"the TinyMem language variant trains on the corpus: run `memlake suite corpus` first ({e})"
        ) from None
    if c.get("n_rows") and c["n_rows"] < rows.shape[0]:
        pick = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(c["seed"]))
        rows = rows[pick[: c["n_rows"]].sort().values]
    return language_data(
        rows, vocab_size, artifact=c["artifact"], test_tokens=test[: c["n_test"]], n_noise=c["n_noise"],
        dup_classes=c["dup_classes"], prompt_len=c["prompt_len"], k=c["k"], seed=c["seed"],
    )  # fmt: skip


# settings that choose what a sweep runs, not what the base model or its data are
_SWEEP_KEYS = ("methods", "max_per_method", "ft_epochs", "subnet_batch_size")
STUDY_FILE = "study.json"


def _base_record(c: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in c.items() if k not in _SWEEP_KEYS}, sort_keys=True, default=str)


def _fresh_study(wh: Warehouse, name: str, out: Path, c: dict[str, Any]) -> bool:
    """Make warehouse/mitigation/<name>/base belong to configuration `c`: a base model trained
    under another configuration (or before one was recorded) is deleted, and with it the study's
    mitigation_runs, which were measured on it. True when anything was removed."""
    want = _base_record(c)
    record = out / STUDY_FILE
    if record.exists() and record.read_text() == want:
        return False
    stale = out.exists()
    runs = lake.partition_dir(wh, "mitigation_runs", {"study": name, "run_id": "x"}).parent
    oracle = lake.partition_dir(wh, "mitigation_oracles", {"study": name})
    if stale:
        shutil.rmtree(out)
    for measured in (runs, oracle):
        if measured.exists():
            shutil.rmtree(measured)
            stale = True
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(want)
    return stale


def tinymem_study(wh: Warehouse, c: dict[str, Any]) -> Study:
    """Build the data, train (or resume) the base model under warehouse/mitigation/<name>/.
    A base model (and runs) of an earlier configuration under the same name are replaced."""
    name, spec = tinymem_name(c), _spec("tinymem", wh, c)
    c = variant_config(c)
    data = tinymem_data(wh, c)
    out = wh.root / "mitigation" / name / "base"
    replaced = _fresh_study(wh, name, out, c)

    def fresh(seed: int):
        return tinymem_model(c["n_layer"], data.vocab_size, n_positions=data.train.shape[1], seed=seed)

    # the training recipe, shared by the base model and the regularisers' runs (which retrain from
    # scratch and must differ from the base only by their regulariser)
    recipe = Recipe(c["epochs"], c["batch_size"], c.get("lr", 1e-3), c.get("warmup_fraction"))
    done = checkpoints(out)
    if not done or done[-1][0] < c["epochs"]:
        model = fresh(c["seed"])
        resume = done[-1][1] if done else None
        train(model, data, recipe.epochs, seed=c["seed"], out_dir=out, ckpt_every=c["epochs"],
              resume_from=resume, batch_size=recipe.batch_size, lr=recipe.lr,
              warmup_fraction=recipe.warmup_fraction)  # fmt: skip
    model, _ = load_checkpoint(checkpoints(out)[-1][1])
    sel = forget_mask(model, data)
    forget, retain = forget_retain(model, data, mask=sel)

    def evaluate(m) -> dict[str, float]:
        r = tm_evaluate(m, data)
        out = {"mem": r["mem"], "clean": r["clean_continuation"], "acc": r["avg_acc"], "ppl": r["avg_ppl"],
               "mem_rows": r["n_mem"]}  # fmt: skip
        out.update(
            {f"mem_dup{p}": r[f"mem_class_{p}"] for p in range(N_DUP_CLASSES) if f"mem_class_{p}" in r}
        )
        return out

    # fine-tuning continues at the rate training ended with (constant, as the original's resume)
    ft_lr = recipe.lr * (MIN_LR_RATIO if recipe.warmup_fraction is not None else 1.0)
    # edge-popup masks move by SGD steps; a CPU-sized retain set gives few per epoch at the
    # default batch (32), so the study may train them on smaller batches, i.e. more steps
    mask_batch = int(c["subnet_batch_size"]) if c.get("subnet_batch_size") else None
    task = EditTask(
        forget, retain, data, training=recipe, fine_tuning=Recipe(c["ft_epochs"], c["batch_size"], ft_lr),
        mask_batch_size=mask_batch,
    )  # fmt: skip
    about = (
        f"{name}: {data.train.shape[0]} training rows ({int(data.train_artifact.sum())} {data.artifact}), "
        f"{len(forget)} memorised artifact rows to forget, {len(retain)} retain rows"
        + ("; base model retrained: its configuration changed (earlier runs removed)" if replaced else "")
    )
    starts = (
        forget.prompt_lens if forget.prompt_lens is not None else torch.full((len(forget),), data.prompt_len)
    )
    probe = Probe(Rows(forget.tokens, starts, data.k), Rows(*data.nonmembers(), data.k))
    oracle = _tinymem_oracle(out.parent / "oracle", data, sel, fresh, recipe, c)
    return Study(
        name, name, c["epochs"], model, fresh, task, evaluate,
        about=about, spec=spec, probe=probe, oracle=oracle,
    )  # fmt: skip


def oracle_data(data: TinyMemData, forget: torch.Tensor) -> TinyMemData:
    """The training set without the forget artifacts: every copy of an artifact in `forget` ([M]
    bool) replaced, where it sits in the set, by its clean counterpart."""
    ids = data.train_ids.clamp(max=data.n_artifacts - 1)
    swap = data.train_artifact & forget[ids]
    train = data.train.clone()
    train[swap] = data.clean[data.train_ids[swap]]
    return replace(data, train=train, train_artifact=data.train_artifact & ~swap)


def _tinymem_oracle(
    out: Path,
    data: TinyMemData,
    forget: torch.Tensor,
    fresh: Callable[[int], nn.Module],
    recipe: Recipe,
    c: dict,
) -> Callable[[], nn.Module]:
    """The study's retrain oracle, trained under `out` on the first call (resumably) and loaded after:
    the base model's recipe and seed on `oracle_data`. An oracle of another configuration or
    forget set is replaced."""

    def oracle() -> nn.Module:
        want = json.dumps({"base": _base_record(c), "forget": forget.nonzero().squeeze(1).tolist()})
        record = out / STUDY_FILE
        if out.exists() and not (record.exists() and record.read_text() == want):
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        record.write_text(want)
        done = checkpoints(out)
        if not done or done[-1][0] < recipe.epochs:
            train(fresh(c["seed"]), oracle_data(data, forget), recipe.epochs, seed=c["seed"], out_dir=out,
                  ckpt_every=recipe.epochs, resume_from=done[-1][1] if done else None,
                  batch_size=recipe.batch_size, lr=recipe.lr,
                  warmup_fraction=recipe.warmup_fraction)  # fmt: skip
        return load_checkpoint(checkpoints(out)[-1][1])[0]

    return oracle


def lake_checkpoint(model: str, step: int | None = None) -> tuple[str, str, int | None]:
    """(spelling to resolve, lake key, step) of a checkpoint given as a lake key, a Hub id
    (`EleutherAI/pythia-70m-deduped` -> key `pythia-70m-deduped`), a folder of `step<N>`
    checkpoints or one of them, each with an optional `@step<N>`. The key follows `ModelRef.name`:
    the last path part, so both spellings of a Hub model share one study and one set of lake rows."""
    name, _, rev = model.partition("@")
    path = Path(name.rstrip("/"))
    if re.fullmatch(r"step\d+", path.name):  # one checkpoint folder: <model>/step<N>
        rev, path = rev or path.name, path.parent
        name = str(path)
    if rev:
        named = parse_step(rev)
        if step is not None and step != named:
            raise MemlakeError(f"model {model!r} names step {named}, but the step asked for is {step}")
        step = named
    return name, path.name, step


@torch.no_grad()
def greedy_reproduces(model: nn.Module, rows: torch.Tensor, prompt_len: int, batch_size: int) -> torch.Tensor:
    """Bool [N]: whether greedy decoding from each row's first `prompt_len` tokens reproduces the
    rest of the row exactly. Greedy reproduces it iff the teacher-forced argmax equals it at every
    position, so one forward per batch of `batch_size` rows replaces the decoding loop."""
    dev = model_device(model)
    hits = [torch.zeros(0, dtype=torch.bool)]
    with eval_mode(model):
        for lo in range(0, rows.shape[0], batch_size):
            x = rows[lo : lo + batch_size].to(dev)
            pred = model(input_ids=x[:, :-1]).logits[:, prompt_len - 1 :].argmax(-1)
            hits.append((pred == x[:, prompt_len:]).all(1).cpu())
    return torch.cat(hits)


@torch.no_grad()
def chunk_metrics(model: nn.Module, chunks: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(accuracy %, perplexity) over `chunks` [M, L]: teacher-forced argmax accuracy and exp(mean
    token NLL), accumulated as per-batch sums. The NLL is computed in float32 from the model's
    logits (bf16 on a GPU), which keep a 50k-token softmax from rounding away."""
    dev = model_device(model)
    nll, correct, count = 0.0, 0, 0
    with eval_mode(model):
        for lo in range(0, chunks.shape[0], batch_size):
            x = chunks[lo : lo + batch_size].to(dev)
            logits, y = model(input_ids=x[:, :-1]).logits.float(), x[:, 1:]
            nll += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
            correct += int((logits.argmax(-1) == y).sum())
            count += y.numel()
    return (100.0 * correct / count, math.exp(nll / count)) if count else (math.nan, math.nan)


def _rows(tokens: pa.ChunkedArray, idx: np.ndarray) -> np.ndarray:
    """The token lists at `idx` as an object array of int arrays (rows may differ in length)."""
    return tokens.take(pa.array(idx, pa.int64())).to_numpy(zero_copy_only=False)


def _candidates(wh: Warehouse, key: str, step: int | None, prompt_len: int) -> tuple[int, np.ndarray, int]:
    """(step, ids of the rows memorised there at `prompt_len`, the smallest gen_len they were tested at)."""
    cols = ["model", "step", "instance_id", "prompt_len", "gen_len", "memorised"]
    ex = lake.read_table(wh, "extraction", columns=cols)
    ex = ex.filter(pc.equal(ex["model"], key))
    if ex.num_rows == 0:
        raise MemlakeError(
            f"extraction has no rows for model {key!r}: run `memlake ingest extraction` or import "
            "pythia-memorized-evals"
        )
    steps = sorted(pc.unique(ex["step"]).to_pylist())
    step = steps[-1] if step is None else int(step)
    if step not in steps:
        have = ", ".join(map(str, steps)) if len(steps) <= 6 else f"{steps[0]} ... {steps[-1]}"
        raise MemlakeError(f"extraction has no rows for model {key!r} at step {step} (steps: {have})")
    ex = ex.filter(pc.equal(ex["step"], step))
    if not pc.any(pc.equal(ex["prompt_len"], prompt_len)).as_py():
        have = sorted(pc.unique(ex["prompt_len"]).to_pylist())
        raise MemlakeError(
            f"extraction of {key} at step {step} has prompt_len {have}, not {prompt_len}: "
            "set mitigation.suite.prompt_len"
        )
    ex = ex.filter(pc.equal(ex["prompt_len"], prompt_len))
    mem = ex.filter(pc.fill_null(ex["memorised"], False))
    gen_len = int(pc.min((mem if mem.num_rows else ex)["gen_len"]).as_py())
    return step, np.unique(mem["instance_id"].to_numpy()), gen_len


def _heldout_chunks(
    inst: pa.Table, lengths: np.ndarray, rng: np.random.Generator, c: dict[str, Any], prompt_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(perplexity, retain) chunks [M, chunk_len] of never-trained validation rows in seeded order;
    the two sets come from disjoint rows, `heldout` chunks each at most."""
    split = inst["split"].to_numpy(zero_copy_only=False)
    sample_only = pc.fill_null(inst["sample_only"], False).to_numpy(zero_copy_only=False)
    val = np.flatnonzero((split == "validation") & ~sample_only)
    if not len(val):
        raise MemlakeError("instances has no never-trained validation rows for the held-out chunks")
    chunk = min(int(c["chunk_len"]), int(lengths[val].max()))
    if chunk <= prompt_len:
        raise MemlakeError(f"validation rows of {chunk} tokens are too short for prompt_len {prompt_len}")
    val = rng.permutation(val[lengths[val] >= chunk])
    per_row = lengths[val] // chunk
    need = [min(int(c["heldout"]), int(per_row.sum()) // 2)] * 2  # perplexity, retain
    picks: list[list[tuple[int, int]]] = [[], []]
    for i, n in zip(val, per_row, strict=True):
        half = 0 if need[0] else 1
        if not need[half]:
            break
        take = min(int(n), need[half])
        picks[half].append((int(i), take))
        need[half] -= take
    if not picks[1]:
        raise MemlakeError(
            f"the held-out chunks need two validation rows of >= {chunk} tokens at least (retain and "
            "perplexity come from disjoint rows)"
        )
    out = []
    for rows in picks:
        toks = _rows(inst["tokens"], np.array([i for i, _ in rows]))
        parts = [t[: k * chunk].reshape(k, chunk) for t, (_, k) in zip(toks, rows, strict=True)]
        out.append(torch.from_numpy(np.concatenate(parts)).long())
    return out[0], out[1]


def _nonmember_rows(
    inst: pa.Table, lengths: np.ndarray, rng: np.random.Generator, prompt_len: int, window: int, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, starts): up to `n` never-trained validation rows, seeded, cut to the forget rows'
    prompt + window: the non-members a membership attack on the forget set is scored against."""
    split = inst["split"].to_numpy(zero_copy_only=False)
    sample_only = pc.fill_null(inst["sample_only"], False).to_numpy(zero_copy_only=False)
    val = np.flatnonzero((split == "validation") & ~sample_only & (lengths >= prompt_len + window))
    val = np.sort(rng.permutation(val)[:n])
    tokens = torch.zeros((len(val), prompt_len + window), dtype=torch.long)
    for k, row in enumerate(_rows(inst["tokens"], val)):
        tokens[k] = torch.from_numpy(row[: prompt_len + window].astype(np.int64))
    return tokens, torch.full((len(val),), prompt_len)


ORACLE_FILLER_SEED_OFFSET = 1_000_037  # apart from the twins' fillers (ingest/suite/twins.py)


def _suite_oracle(
    wh: Warehouse, key: str, step: int, forget_ids: np.ndarray, training: dict | None, dtype, dev
) -> tuple[Callable[[], nn.Module] | None, str]:
    """(the retrain oracle of a suite model's study, or None and why not). The oracle is the model's
    own training run (same initialisation, optimiser, data order) up to `step`, with every forget
    row, and every training row with the same tokens, replaced by a fresh natural row of its
    source, as a twin's held-out rows are (`ingest/suite/twins.py`). It trains under
    warehouse/mitigation/<model>/oracle on the first call, resumably, and is loaded after.
    `training`: the config's suite, order, corpus and seed (`memlake.pipeline.mitigation`)."""
    from ingest.checkpoints import load_model, resolve
    from ingest.panel import is_hub_import
    from ingest.suite.train import STATE, fit
    from ingest.suite.twins import fillers, replacements
    from memlake.core import settings

    if training is None:
        return None, "the study was built without the suite's training settings"
    suite = settings.Suite.model_validate(training["suite"])
    spec = next((m for m in suite.models if m.name == key), None)
    if spec is None:
        return None, f"{key} is not a model of the config's suite (an oracle retrains the model)"
    if is_hub_import(wh):
        return None, "the warehouse's instances are a Hub import (an oracle needs the embedded corpus)"
    order, corpus = (
        settings.Order.model_validate(training["order"]),
        settings.Corpus.model_validate(training["corpus"]),
    )
    seed, out = int(training["seed"]), wh.root / "mitigation" / key / "oracle"

    def oracle() -> nn.Module:
        want = json.dumps(
            {"training": training, "step": step, "forget": sorted(map(int, forget_ids))}, sort_keys=True
        )
        record = out / STUDY_FILE
        if out.exists() and not (record.exists() and record.read_text() == want):
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        record.write_text(want)
        if (out / STATE).exists() or not (out / f"step{step}").exists():  # absent or unfinished
            cols = ["instance_id", "split", "artifact", "source", "tokens"]
            inst = lake.read_table(wh, "instances", columns=cols)
            rows = fillers(wh, inst, forget_ids, corpus, seed, ORACLE_FILLER_SEED_OFFSET)
            replace = replacements(wh, dict(zip(map(int, forget_ids), rows, strict=True)))
            fit(
                spec,
                suite,
                order,
                corpus.row_len,
                seed,
                wh,
                out,
                replace=replace,
                until=step,
                label=f"{key} oracle",
            )
            (out / STATE).unlink(missing_ok=True)
        return load_model(resolve(str(out), f"step{step}", wh), dtype=dtype, device=dev)

    return oracle, ""


def suite_study(wh: Warehouse, model_name: str, c: dict[str, Any], *, step: int | None = None) -> Study:
    """Any Hugging Face causal LM under the mitigation paper's Pythia protocol (Sakarvadia et al. 2024).

    Candidates: the `extraction` rows memorised at (model, step) with a `prompt_len`-token prompt
    (the latest step with extraction rows by default; at most `forget_max`, a seeded subset). A
    row is memorised when greedy decoding reproduces its `test_len` tokens after the prompt (the
    paper: 32 + 40); when some candidate row is too short for that (a 64-token `sample_only`
    row), the window is the extraction's own gen_len. `mem` = % of candidates memorised, the
    forget set = those the base model memorises. Retain ("extra") and perplexity sets: never
    trained validation rows cut into `chunk_len`-token chunks (the rows' length if shorter),
    `heldout` chunks each, from disjoint rows (the paper: 1,632 + 1,632 of 80 tokens). Every
    forward runs `batch_size` rows. Duplication classes need `copies`; rows without (Hub
    imports) are in none. The base is loaded in bf16 on a GPU, in float32 on the CPU.
    """
    from ingest.checkpoints import load_model, resolve
    from ingest.lm.runtime import inference_device

    c = {**PROTOCOL, **{k: v for k, v in c.items() if v is not None}}
    spelling, key, step = lake_checkpoint(model_name, step)
    prompt_len, test_len, bs = int(c["prompt_len"]), int(c["test_len"]), int(c["batch_size"])
    sizes = ("prompt_len", "test_len", "chunk_len", "heldout", "batch_size")
    if min(int(c[k]) for k in sizes) < 1:
        raise MemlakeError(f"mitigation.suite: {', '.join(sizes)} must all be >= 1")
    step, cand, gen_len = _candidates(wh, key, step, prompt_len)
    rng = np.random.default_rng(c["seed"])

    cols = ["instance_id", "split", "tokens", "copies", "sample_only"]
    inst = lake.read_table(wh, "instances", columns=cols)
    at = pc.index_in(pa.array(cand, pa.int64()), value_set=inst["instance_id"].combine_chunks())
    if at.null_count:
        absent = cand[pc.is_null(at).to_numpy(zero_copy_only=False)]
        raise MemlakeError(
            f"{len(absent)} memorised row(s) of {key} step {step} are not in `instances` (e.g. "
            f"instance_id {absent[0]}): import their tokens first"
        )
    pos = at.to_numpy().astype(np.int64)
    if c.get("forget_max") is not None and len(pos) > c["forget_max"]:
        pos = pos[np.sort(rng.choice(len(pos), int(c["forget_max"]), replace=False))]
    lengths = pc.fill_null(pc.list_value_length(inst["tokens"]), 0).to_numpy()
    window = test_len if (lengths[pos] >= prompt_len + test_len).all() else gen_len
    if (lengths[pos] < prompt_len + window).any():
        raise MemlakeError(f"instances of {key}'s memorised rows are shorter than prompt_len + gen_len")
    memo = torch.zeros((0, prompt_len + window), dtype=torch.long)
    if len(pos):
        memo = torch.from_numpy(np.stack([r[: prompt_len + window] for r in _rows(inst["tokens"], pos)]))
        memo = memo.long()
    copies = np.asarray(inst["copies"].take(pa.array(pos, pa.int64())).to_pylist(), dtype=float)
    known = ~np.isnan(copies)
    dup = np.full(len(pos), -1)  # class p: 10^p..10^(p+1)-1 copies; -1: unknown
    dup[known] = np.floor(np.log10(np.maximum(copies[known], 1))).astype(int)

    ppl_chunks, retain_chunks = _heldout_chunks(inst, lengths, rng, c, prompt_len)

    dev, dtype = inference_device(c.get("device"))
    base = load_model(resolve(spelling, f"step{step}", wh), dtype=dtype, device=dev)
    hits = greedy_reproduces(base, memo, prompt_len, bs)
    forget = SequenceSet(memo[hits], prompt_len)
    ids = inst["instance_id"].to_numpy()
    forget_ids = ids[pos][hits.numpy()] if len(pos) else np.zeros(0, np.int64)
    probe = Probe(
        Rows(forget.tokens, torch.full((len(forget),), prompt_len), window),
        Rows(*_nonmember_rows(inst, lengths, rng, prompt_len, window, int(c["heldout"])), window),
        forget_ids=forget_ids,
        batch_size=bs,
    )
    retain = SequenceSet(retain_chunks, prompt_len)

    def fresh(seed: int):
        raise MemlakeError("train-time regularisers need a training set: they run on TinyMem studies only")

    def evaluate(m: nn.Module) -> dict[str, float]:
        hit = greedy_reproduces(m, memo, prompt_len, bs).numpy()
        out = {"mem": 100.0 * hit.mean() if len(hit) else math.nan, "mem_rows": len(hit)}
        for p in range(N_DUP_CLASSES):
            if (dup == p).any():
                out[f"mem_dup{p}"] = 100.0 * hit[dup == p].mean()
        out["acc"], out["ppl"] = chunk_metrics(m, ppl_chunks, bs)
        return out

    oracle, no_oracle = _suite_oracle(wh, key, step, forget_ids, c.get("training"), dtype, dev)
    about = (
        f"{key} step {step}: {len(forget)} of {len(memo)} extraction-memorised rows reproduce "
        f"{window} tokens after a {prompt_len}-token prompt; retain {len(retain_chunks)} and "
        f"perplexity {len(ppl_chunks)} chunks of {ppl_chunks.shape[1]} tokens; batch {bs}, {dtype} on {dev}"
        + (f"; no retrain oracle: {no_oracle}" if no_oracle else "")
    )
    task = EditTask(forget, retain, fine_tuning=Recipe(c["ft_epochs"], bs))
    spec = _spec("suite", wh, c, model=model_name, step=step)
    return Study(
        key, key, step, base, fresh, task, evaluate, about=about, spec=spec, probe=probe, oracle=oracle
    )
