"""Resolve "a model + revision" to something `from_pretrained` loads, locally or on the Hub.

The same call serves every source, so ingest jobs never branch on where a model lives:

    resolve("suite-s", "step16")                      # a suite model in the warehouse
    resolve("suite-s@step16")                         # the same, Pythia-style shorthand
    resolve("/data/suite/suite-s", "step16")          # a folder of step<N>/ checkpoints
    resolve("/data/suite/suite-s/step16")             # one checkpoint folder
    resolve("EleutherAI/pythia-70m-deduped", "step1000")   # Hub id + revision (branch)

A local folder of `step<N>` sub-folders plays the role of a Hub repository whose branches are
`step<N>`, which is exactly how Pythia publishes its checkpoints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

_STEP = re.compile(r"^step(\d+)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelRef:
    name: str  # short name used as the lake's `model` key
    step: int | None
    location: str  # local folder or Hub repo id
    revision: str | None  # Hub branch/tag, None for local folders

    @property
    def is_local(self) -> bool:
        return self.revision is None


def parse_step(revision: str | int) -> int:
    if isinstance(revision, int):
        return revision
    m = _STEP.match(str(revision))
    if not m:
        raise MemlakeError(f"revision {revision!r} is not of the form step<N>")
    return int(m.group(1))


def local_steps(folder: Path) -> list[int]:
    return sorted(
        int(m.group(1))
        for p in folder.iterdir()
        if p.is_dir() and (m := _STEP.match(p.name)) and (p / "config.json").exists()
    )


def resolve(model: str, revision: str | int | None = None, wh: Warehouse | None = None) -> ModelRef:
    if "@" in model and revision is None:
        model, revision = model.split("@", 1)
    wh = wh or Warehouse.at()
    suite_dir = wh.suite / model
    path = Path(model).expanduser()
    for folder in (suite_dir, path):
        if folder.is_dir() and not (folder / "config.json").exists():
            steps = local_steps(folder)
            if not steps:
                continue
            if revision is None:
                raise MemlakeError(f"model {model!r}: give a revision (available: {_span(steps)})")
            step = parse_step(revision)
            if step not in steps:
                raise MemlakeError(
                    f"model {model!r}: revision step{step} not found (available: {_span(steps)})"
                )
            return ModelRef(folder.name, step, str(folder / f"step{step}"), None)
    if path.is_dir() and (path / "config.json").exists():
        m = _STEP.match(path.name)
        name = path.parent.name if m else path.name
        return ModelRef(name, int(m.group(1)) if m else None, str(path), None)
    from ingest.hub_suites import family_hub_id, registered

    # A Hub model by its lake key (registered, or a known family member) or by its Hub id.
    reg = registered(wh, model)
    hub_id = reg["hub_id"] if reg else family_hub_id(model) or model
    if _HUB_ID.match(hub_id) and not Path(hub_id).expanduser().exists():
        rev = str(revision) if revision is not None else "main"
        step = parse_step(rev) if _STEP.match(rev) else None
        if reg and step is not None and step not in reg["steps"]:
            raise MemlakeError(f"model {hub_id}: revision {rev} not found (has {_span(reg['steps'])})")
        return ModelRef(hub_id.split("/")[-1], step, hub_id, rev)
    raise MemlakeError(f"model {model!r}: not a suite model, a local checkpoint folder or a Hub id")


def _span(steps: list[int]) -> str:
    if len(steps) <= 6:
        return ", ".join(f"step{s}" for s in steps)
    return f"step{steps[0]}, step{steps[1]}, ..., step{steps[-1]} ({len(steps)} checkpoints)"


def expand_revisions(spec: str, available: list[int] | None = None) -> list[int]:
    """`step0,step16,step32`, ranges `step0-step64:16`, or `all` (every local checkpoint)."""
    out: list[int] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if part == "all":
            if available is None:
                raise MemlakeError("revision 'all' needs local checkpoints to enumerate")
            out += available
        elif "-" in part:
            rng, _, stride = part.partition(":")
            lo, hi = (parse_step(x) for x in rng.split("-", 1))
            if hi < lo:
                raise MemlakeError(f"revision range {part!r} runs backwards")
            grid = [s for s in (available or []) if lo <= s <= hi]
            out += list(range(lo, hi + 1, int(stride))) if stride else grid
        else:
            out.append(parse_step(part))
    return sorted(set(out))


def load_model(ref: ModelRef, dtype=None, device: str = "cpu"):
    """Load a causal LM for `ref`; Hub refs go through the Hugging Face cache/network."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(ref.location, revision=ref.revision, dtype=dtype)
    except OSError as e:
        where = f"{ref.location}@{ref.revision}" if ref.revision else ref.location
        raise MemlakeError(f"model {where}: cannot load ({str(e).splitlines()[0]})") from None
    return model.to(device).eval()


def load_tokenizer(ref: ModelRef):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(ref.location, revision=ref.revision)
    except OSError as e:
        raise MemlakeError(f"tokenizer {ref.location}: cannot load ({str(e).splitlines()[0]})") from None
