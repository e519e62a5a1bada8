"""Hub model suites as first-class checkpoints: `checkpoints` rows for a Hub model's revisions.

The embedded trainer writes `checkpoints` for its own suite; a suite published on the Hub
(Pythia first) gets the same rows from its published training facts, so `dbt build`, DiD
profiles and reports work on a warehouse that holds only Hub data:

    register_suite(wh, "EleutherAI/pythia-70m-deduped")          # facts from configs/suites/pythia.yaml
    register_suite(wh, "org/model", batch_size=512, first_epoch_end=20_000)   # any step<N> suite

Each row holds the revision (`step<N>`), the path `from_pretrained` resolves (`HUB_ID@step<N>`),
the step, the learning rate of the update that produced it (warm-up + cosine, when the peak is
known), tokens seen, and the first-epoch end. The lake key is the Hub name without its owner;
`hub_id_of` maps it back, which is how `resolve("pythia-70m-deduped", ...)` finds the Hub id.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from ingest.suite.schedule import lr_at
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.unit import Computed, WarehouseUnit, run_unit

SUITES_DIR = Path(__file__).resolve().parent.parent / "memlake" / "configs" / "suites"
_STEP_REF = re.compile(r"^step(\d+)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class HubSuite:
    hub_id: str
    steps: tuple[int, ...]
    batch_size: int
    first_epoch_end: int
    row_len: int | None = None
    max_lr: float | None = None
    total_steps: int | None = None
    warmup_fraction: float | None = None
    min_lr_ratio: float | None = None
    family: str | None = None

    @property
    def key(self) -> str:
        return model_key(self.hub_id)

    def lr(self, step: int) -> float | None:
        if None in (self.max_lr, self.total_steps, self.warmup_fraction, self.min_lr_ratio):
            return None
        if step == 0:
            return 0.0
        return lr_at(step, self.total_steps, self.max_lr, self.warmup_fraction, self.min_lr_ratio)


def model_key(model: str) -> str:
    """The lake's model key: a Hub id without its owner (`pythia-70m-deduped`)."""
    return model.rsplit("/", 1)[-1]


def is_hub_id(model: str) -> bool:
    return bool(_HUB_ID.match(model)) and not Path(model).expanduser().exists()


# --------------------------------------------------------------------------- families


@cache
def _family(name: str) -> dict[str, Any]:
    return yaml.safe_load((SUITES_DIR / f"{name}.yaml").read_text())


def family_steps(f: dict[str, Any]) -> tuple[int, ...]:
    r = f["revisions"]
    return tuple(sorted({*r["log_spaced"], *range(r["every"], r["last"] + 1, r["every"])}))


def family_suite(hub_id: str) -> HubSuite | None:
    """The published facts of a known family member (Pythia: any size, duped or deduped)."""
    f = _family("pythia")
    sizes = "|".join(re.escape(s) for s in f["max_lr"])
    m = re.fullmatch(rf"pythia-(?P<size>{sizes})(?P<deduped>-deduped)?", model_key(hub_id).lower())
    if not m:
        return None
    scheme = f["schemes"]["deduped" if m.group("deduped") else "duped"]
    return HubSuite(
        hub_id=hub_id,
        steps=family_steps(f),
        batch_size=int(f["batch_size"]),
        first_epoch_end=int(scheme["first_epoch_end"]),
        row_len=int(f["row_len"]),
        max_lr=float(f["max_lr"][m.group("size")]),
        total_steps=int(f["total_steps"]),
        warmup_fraction=float(f["warmup_fraction"]),
        min_lr_ratio=float(f["min_lr_ratio"]),
        family=f["family"],
    )


def hub_revisions(hub_id: str) -> tuple[int, ...]:
    """The `step<N>` branches of a Hub model: asked of the Hub, or (offline, or when the Hub
    cannot be reached) read from the Hugging Face cache's refs."""
    from huggingface_hub import constants

    names: list[str] | None = None
    if not constants.HF_HUB_OFFLINE:
        try:
            from huggingface_hub import list_repo_refs

            names = [b.name for b in list_repo_refs(hub_id).branches]
        except Exception:  # unreachable Hub, unknown repo: fall back to what the cache knows
            names = None
    if names is None:
        refs = Path(constants.HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}" / "refs"
        names = [p.name for p in refs.iterdir()] if refs.is_dir() else []
    return tuple(sorted(int(m.group(1)) for n in names if (m := _STEP_REF.match(n))))


def suite_for(
    hub_id: str,
    *,
    batch_size: int | None = None,
    first_epoch_end: int | None = None,
    row_len: int | None = None,
    max_lr: float | None = None,
    total_steps: int | None = None,
    warmup_fraction: float | None = None,
    min_lr_ratio: float | None = None,
) -> HubSuite:
    """A family member's facts (overridable), or a `step<N>` model described by the caller."""
    if not is_hub_id(hub_id):
        raise MemlakeError(f"{hub_id!r} is not a Hub model id (OWNER/NAME)")
    given = {
        "batch_size": batch_size,
        "first_epoch_end": first_epoch_end,
        "row_len": row_len,
        "max_lr": max_lr,
        "total_steps": total_steps,
        "warmup_fraction": warmup_fraction,
        "min_lr_ratio": min_lr_ratio,
    }
    given = {k: v for k, v in given.items() if v is not None}
    known = family_suite(hub_id)
    if known is not None:
        return HubSuite(**{**asdict(known), **given})
    missing = [k for k in ("batch_size", "first_epoch_end") if k not in given]
    if missing:
        flags = " ".join(f"--{k.replace('_', '-')} N" for k in missing)
        raise MemlakeError(
            f"{hub_id}: not a known suite family; give its training facts ({flags}) to register it"
        )
    steps = hub_revisions(hub_id)
    if not steps:
        raise MemlakeError(f"{hub_id}: no step<N> revisions on the Hub or in the local Hugging Face cache")
    if "total_steps" not in given:
        given["total_steps"] = steps[-1]
    if "max_lr" in given:  # a schedule needs its shape: Pythia's unless the caller says otherwise
        given.setdefault("warmup_fraction", 0.01)
        given.setdefault("min_lr_ratio", 0.1)
    return HubSuite(hub_id=hub_id, steps=steps, **given)


# --------------------------------------------------------------------------- the lake


def checkpoint_rows(suite: HubSuite) -> pa.Table:
    rows = [
        {
            "step": step,
            "path": f"{suite.hub_id}@step{step}",
            "lr": suite.lr(step),
            "tokens_seen": step * suite.batch_size * suite.row_len if suite.row_len else None,
            "epoch": step / suite.first_epoch_end if suite.first_epoch_end else None,
            "train_loss": None,
            "revision": f"step{step}",
            "first_epoch_end": suite.first_epoch_end,
        }
        for step in suite.steps
    ]
    return pa.Table.from_pylist(rows, schema=lake.spec("checkpoints").file_schema)


@dataclass(frozen=True)
class RegisterUnit(WarehouseUnit):
    """The `checkpoints` partition of a Hub model, from its training facts."""

    suite: HubSuite
    root: str  # the warehouse root (a string: units pickle)
    table = "checkpoints"

    @property
    def partition(self) -> dict[str, Any]:
        return {"model": self.suite.key}

    @property
    def provenance(self) -> dict[str, Any]:
        facts = {k: v for k, v in asdict(self.suite).items() if k != "steps"}
        return {"hub_id": self.suite.hub_id, "suite": facts}

    def refuse_other(self) -> None:
        """Refuse to skip over a registration of this lake key from another model or other facts."""
        wh, key = self.warehouse, self.suite.key
        if not lake.is_complete(wh, self.table, self.partition):
            return
        have = lake.manifest(lake.partition_dir(wh, self.table, self.partition)).get("config", {})
        if have.get("hub_id") != self.suite.hub_id:
            where = have.get("hub_id") or "the embedded suite"
            raise MemlakeError(f"checkpoints already holds model {key!r} from {where}")
        if have.get("suite") != lake_jsonable(self.provenance["suite"]):
            raise MemlakeError(
                f"checkpoints: {key!r} is registered with other facts ({have.get('suite')}); "
                "pass --force to replace them"
            )

    def compute(self, log) -> Computed:
        return Computed(checkpoint_rows(self.suite), provenance=self.provenance)


def register_suite(wh: Warehouse, hub_id: str, *, force: bool = False, **facts: Any) -> dict[str, Any]:
    """Write the `checkpoints` partition of a Hub model; a re-run with the same facts skips."""
    suite = suite_for(hub_id, **facts)
    unit = RegisterUnit(suite, str(wh.root))
    if not force:
        unit.refuse_other()
    skipped = run_unit(unit, force=force)["skipped"]
    return {"model": suite.key, "hub_id": suite.hub_id, "checkpoints": len(suite.steps), "skipped": skipped}


def lake_jsonable(x: Any) -> Any:
    import json

    return json.loads(json.dumps(x, default=str))


def registered(wh: Warehouse, model: str) -> dict[str, Any] | None:
    """The registration of a Hub model by lake key or Hub id: {hub_id, steps}, or None."""
    part = {"model": model_key(model)}
    try:
        if not lake.is_complete(wh, "checkpoints", part):
            return None
    except MemlakeError:  # a name that is not path-safe is not a lake key
        return None
    d = lake.partition_dir(wh, "checkpoints", part)
    hub_id = lake.manifest(d).get("config", {}).get("hub_id")
    if not hub_id or (is_hub_id(model) and hub_id != model):
        return None
    import pyarrow.parquet as pq

    steps = pq.read_table(d / lake.DATA_FILE, columns=["step"])["step"].to_pylist()
    return {"hub_id": hub_id, "steps": sorted(steps)}


def family_hub_id(model: str) -> str | None:
    """`pythia-70m-deduped` -> `EleutherAI/pythia-70m-deduped`: a family member's lake key."""
    if "/" in model or family_suite(model) is None:
        return None
    return f"{_family('pythia')['owner']}/{model}"


def ensure_registered(wh: Warehouse, model: str) -> dict[str, Any] | None:
    """A Hub id or lake key of a registered Hub model -> its registration; an unregistered
    family member (Pythia, by Hub id or lake key) is registered on the way. None for anything
    that is not a Hub model."""
    reg = registered(wh, model)
    if reg is not None:
        return reg
    model = family_hub_id(model) or model
    if is_hub_id(model) and family_suite(model) is not None:
        register_suite(wh, model)
        return registered(wh, model)
    if is_hub_id(model):
        raise MemlakeError(
            f"{model}: register it first with `memlake suite register {model} --batch-size N "
            "--first-epoch-end N` (its training facts are not known to memlake)"
        )
    return None
