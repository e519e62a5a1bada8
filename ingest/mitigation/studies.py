"""The two kinds of study a sweep runs: a TinyMem model trained here with planted artifacts, and
any Hugging Face causal LM (the embedded suite today, Pythia on a GPU) whose memorised
sequences come from the `extraction` lake table."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from ingest.mitigation.methods import SequenceSet
from ingest.mitigation.sweep import N_DUP_CLASSES, Study
from ingest.mitigation.tinymem.data import TinyMemData, corpus_rows, language_data, math_data
from ingest.mitigation.tinymem.metrics import evaluate as tm_evaluate
from ingest.mitigation.tinymem.metrics import forget_retain
from ingest.mitigation.tinymem.model import tinymem_model
from ingest.mitigation.tinymem.train import checkpoints, load_checkpoint, train
from memlake import lake
from memlake.errors import MemlakeError
from memlake.paths import Warehouse

VARIANTS = ("math", "language")


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
        return math_data(
            c["task"], artifact=c["artifact"], num_7=c["num_7"], num_extra=c["num_extra"], n_test=c["n_test"],
            n_noise=c["n_noise"], dup_classes=c["dup_classes"], length=c["length"], max_ctx=c["max_ctx"],
            prompt_len=c["prompt_len"], k=c["k"], seed=c["seed"],
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


def tinymem_study(wh: Warehouse, c: dict[str, Any]) -> Study:
    """Build the data, train (or resume) the base model under warehouse/mitigation/<name>/."""
    name = tinymem_name(c)
    c = variant_config(c)
    data = tinymem_data(wh, c)
    out = wh.root / "mitigation" / name / "base"

    def fresh(seed: int):
        return tinymem_model(c["n_layer"], data.vocab_size, n_positions=data.train.shape[1], seed=seed)

    done = checkpoints(out)
    if not done or done[-1][0] < c["epochs"]:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a 2-layer model is overhead-bound: more threads only contend
        model = fresh(c["seed"])
        resume = done[-1][1] if done else None
        train(model, data, c["epochs"], seed=c["seed"], batch_size=c["batch_size"], out_dir=out,
                       ckpt_every=c["epochs"], resume_from=resume)  # fmt: skip
        torch.set_num_threads(threads)
    model, _ = load_checkpoint(checkpoints(out)[-1][1])
    forget, retain = forget_retain(model, data)

    def evaluate(m) -> dict[str, float]:
        r = tm_evaluate(m, data)
        out = {"mem": r["mem"], "clean": r["clean_continuation"], "acc": r["avg_acc"], "ppl": r["avg_ppl"]}
        out.update(
            {f"mem_dup{p}": r[f"mem_class_{p}"] for p in range(N_DUP_CLASSES) if f"mem_class_{p}" in r}
        )
        return out

    context = {"regulariser": {"data": data, "epochs": c["epochs"]},
               "fine_tuning": {"data": data, "epochs": c["ft_epochs"]}}  # fmt: skip
    return Study(name, name, c["epochs"], model, fresh, forget, retain, evaluate, context)


def suite_study(wh: Warehouse, model_name: str, c: dict[str, Any], *, step: int | None = None) -> Study:
    """Forget = the extraction table's memorised rows of (model, step); retain and the perplexity
    cost = two disjoint halves of never-trained validation rows."""
    from ingest.checkpoints import load_model, resolve

    ex = lake.read_table(wh, "extraction")
    ex = ex.filter(pc.equal(ex["model"], model_name))
    if ex.num_rows == 0:
        raise MemlakeError(
            f"extraction has no rows for model {model_name!r}: run `memlake ingest extraction`"
        )
    step = int(pc.max(ex["step"]).as_py()) if step is None else step
    ex = ex.filter(pc.and_(pc.equal(ex["step"], step), ex["memorised"]))
    prompt_len = int(ex["prompt_len"][0].as_py()) if ex.num_rows else 32
    gen_len = int(ex["gen_len"][0].as_py()) if ex.num_rows else 32
    inst = lake.read_table(wh, "instances", columns=["instance_id", "split", "tokens", "copies"])
    by_id = {i: k for k, i in enumerate(inst["instance_id"].to_pylist())}
    tokens = np.stack(inst["tokens"].to_numpy(zero_copy_only=False)).astype(np.int64)
    rows = [by_id[i] for i in ex["instance_id"].to_pylist()][: c["forget_max"]]
    forget = SequenceSet(torch.from_numpy(tokens[rows, : prompt_len + gen_len]), prompt_len)
    copies = np.asarray(inst["copies"].to_pylist())[rows]
    dup = np.floor(np.log10(np.maximum(copies, 1))).astype(int)  # class p: 10^p..10^(p+1)-1 copies
    val = np.flatnonzero(np.asarray(inst["split"].to_pylist()) == "validation")
    val = np.random.default_rng(c["seed"]).permutation(val)[: 2 * c["heldout"]]
    retain = SequenceSet(torch.from_numpy(tokens[val[: c["heldout"]]]), prompt_len)
    heldout = torch.from_numpy(tokens[val[c["heldout"] :]])
    ref = resolve(model_name, f"step{step}", wh)
    base = load_model(ref).eval()

    def fresh(seed: int):
        raise MemlakeError("train-time regularisers need a training set: they run on TinyMem studies only")

    @torch.no_grad()
    def evaluate(m) -> dict[str, float]:
        m.eval()
        out = {"mem": math.nan}
        if len(forget):
            # greedy reproduces the continuation <=> teacher-forced argmax equals it everywhere
            pred = m(input_ids=forget.tokens).logits[:, prompt_len - 1 : -1].argmax(-1)
            hit = (pred == forget.tokens[:, prompt_len:]).all(1).numpy()
            out["mem"] = 100.0 * hit.mean()
            for p in range(N_DUP_CLASSES):
                if (dup == p).any():
                    out[f"mem_dup{p}"] = 100.0 * hit[dup == p].mean()
        logits = m(input_ids=heldout).logits[:, :-1].float()
        ce = F.cross_entropy(logits.transpose(1, 2), heldout[:, 1:])
        out["acc"] = 100.0 * (logits.argmax(-1) == heldout[:, 1:]).float().mean().item()
        out["ppl"] = math.exp(ce.item())
        return out

    return Study(model_name, model_name, step, base, fresh, forget, retain, evaluate,
                 {"fine_tuning": {"epochs": c["ft_epochs"]}})  # fmt: skip
