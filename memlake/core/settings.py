"""The config's schema: every section a typed, frozen model that refuses unknown keys.

`memlake.core.config.load` validates each resolved config (preset or YAML file, plus `--set`
overrides) against `Settings`, so a typo or a value of the wrong type fails at load with the
key's dotted path, before any job starts. Keys that only some presets set are optional here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memlake.core.errors import MemlakeError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def record(self) -> dict[str, Any]:
        """The section as the config wrote it (defaults it left unset stay out): what manifests
        record and fingerprints hash, so they do not change when a default is added here."""
        return self.model_dump(mode="json", exclude_unset=True)


PositiveInt = Field(ge=1)
Share = Field(ge=0, le=1)


# --------------------------------------------------------------------------- corpus and suite


class Noise(Section):
    sequences: int = Field(ge=0)
    copies: int = PositiveInt
    rate: float = Share


class Backdoor(Section):
    sequences: int = Field(ge=0)
    trigger: str
    payload: str


class RepeatFirst(Section):
    share: float = Share
    rows: float = Share


class Fuzzy(Section):
    families: int = Field(ge=0)
    variants: int = Field(ge=0)
    copies: int = PositiveInt


class Planted(Section):
    duplicate_counts: list[int]
    duplicates_per_count: int | list[int]  # one count for every exposure count, or one each
    incrementing: int = Field(ge=0)
    repeating: int = Field(ge=0)
    repeat_period: tuple[int, int]
    spans_per_row: int | None = Field(default=None, ge=1)
    repeat_first: RepeatFirst | None = None
    fuzzy: Fuzzy | None = None
    counter_max_start: int = PositiveInt
    noise: Noise
    backdoor: Backdoor


class Corpus(Section):
    row_len: int = Field(ge=2)
    vocab_size: int = Field(ge=16)
    n_train: int = PositiveInt
    n_validation: int = PositiveInt
    prose_fraction: float = Share
    planted: Planted


class Order(Section):
    batch_size: int = PositiveInt
    checkpoint_every: int = PositiveInt
    epochs: float = Field(gt=0)


class SuiteModel(Section):
    name: str
    hidden_size: int = PositiveInt
    layers: int = PositiveInt
    heads: int = PositiveInt
    lr: float = Field(gt=0)


class Suite(Section):
    warmup_fraction: float = Share
    min_lr_ratio: float = Share
    weight_decay: float = Field(ge=0)
    betas: tuple[float, float]
    grad_clip: float = Field(gt=0)
    threads: int = Field(ge=0)
    models: list[SuiteModel] = Field(min_length=1)
    twins: bool = False  # also train each model's counterfactual twin (ingest/suite/twins.py)


# --------------------------------------------------------------------------- ingest and analyses


class Panel(Section):
    per_cohort: int | None = Field(ge=1)  # None: every row
    validation: int | None = Field(ge=1)  # None: every never-trained row
    planted: dict[str, int] | None = None


class Extraction(Section):
    prompt_len: int = PositiveInt
    gen_len: int = PositiveInt


class Runtime(Section):
    fused_stats: bool | None = None
    fused_head: bool = False
    stats_overlap: bool = False
    cuda_graphs: bool = True
    head_tiles: dict[str, int] = Field(default_factory=dict)
    threads: int = Field(default=0, ge=0)  # 0: the process's own


class Ingest(Section):
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"]
    panel: Panel
    extraction: Extraction


class ProfilesHonest(Section):
    """HonestDiD for the natural-row fits (analysis/profiles/fitting.py `Honest`)."""

    enabled: bool = False
    metrics: list[str] = Field(default_factory=lambda: ["sup_seq"])
    method: Literal["relative_magnitude", "smoothness"] = "relative_magnitude"
    test: Literal["C-LF", "C"] = "C-LF"  # relative magnitudes: the hybrid (R's default) or conditional
    mbar: list[Annotated[float, Field(ge=0)]] = Field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0])
    pre: int = Field(default=4, ge=1)  # pre-periods in the event window
    post: int = Field(default=4, ge=0)  # post event times averaged: 0..post


class Profiles(Section):
    metrics: list[str]
    units: list[str]
    control_groups: list[str]
    base_periods: list[str]
    first_epoch: bool
    bootstrap: int = Field(ge=0)
    seed: int
    regression: bool
    covariates: list[str] = Field(default_factory=list)  # per-instance columns (DiD with covariates)
    est_method: Literal["dr", "ipw", "reg"] = "dr"
    cluster: str | None = None  # a per-instance column, e.g. batch_idx
    honest: ProfilesHonest = Field(default_factory=ProfilesHonest)


class Taxonomy(Section):
    prompt_len: int = PositiveInt
    k: int = PositiveInt
    representative_sample: int = PositiveInt
    nl_threshold: float = Share
    code_threshold: float = Share
    recitation_threshold: int = Field(ge=0)
    kl_bootstrap: int = Field(ge=0)
    n_subsets: int = Field(ge=0)


class Mia(Section):
    """The membership-inference battery (analysis/mia)."""

    bootstrap: int = Field(default=1000, ge=0)  # AUC bootstrap resamples (0: no interval)
    seed: int = 0
    blind_folds: int = Field(default=5, ge=2)  # cross-validation folds of the blind baseline
    # model -> reference model; a suite model not named here gets the suite's smallest other model
    reference: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------- mitigation


class TinyMemRun(Section):
    """What both TinyMem variants set: the artifact, the test split and the training run."""

    artifact: Literal["noise", "backdoor"]
    n_test: int = PositiveInt
    n_noise: int = Field(ge=0)
    dup_classes: int = PositiveInt
    prompt_len: int = PositiveInt
    k: int = PositiveInt
    epochs: int = PositiveInt
    batch_size: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)
    warmup_fraction: float | None = None


class TinyMemLanguage(TinyMemRun):
    n_rows: int = PositiveInt


class TinyMem(TinyMemRun):
    name: str | None = None
    task: str
    n_layer: int = PositiveInt
    num_7: int = PositiveInt
    clean_7: int | None = Field(default=None, ge=0)
    extra_cs: list[int] | None = None
    num_extra: int = Field(ge=0)
    backdoor_test_frac: float | None = Field(default=None, ge=0, lt=1)
    length: int = PositiveInt
    max_ctx: int = PositiveInt
    ft_epochs: int = PositiveInt
    subnet_batch_size: int | None = Field(default=None, ge=1)
    seed: int
    variant: Literal["math", "language"] = "math"
    device: str | None = None
    language: TinyMemLanguage | None = None


class MitigationSuite(Section):
    model: str
    forget_max: int | None = Field(default=None, ge=1)
    heldout: int = PositiveInt
    prompt_len: int = PositiveInt
    test_len: int = PositiveInt
    chunk_len: int = PositiveInt
    batch_size: int = PositiveInt
    ft_epochs: int = PositiveInt
    seed: int
    methods: list[str] | None = None
    max_per_method: int | None = Field(default=None, ge=1)


class Study(Section):
    tinymem: dict[str, Any]
    methods: list[str]
    max_per_method: int | None = Field(default=None, ge=1)


class Landscape(Section):
    points: int = Field(ge=2)
    radius: float = Field(gt=0)
    seed: int
    max_rows: int = PositiveInt
    good: str
    good_hparams: dict[str, Any] | None = None
    bad: str
    bad_hparams: dict[str, Any] | None = None


class Mitigation(Section):
    tinymem: TinyMem
    suite: MitigationSuite
    methods: list[str]
    max_per_method: int | None = Field(default=None, ge=1)
    workers: int | None = Field(default=None, ge=1)
    study: Study | None = None
    seeds: list[int] = Field(min_length=1)
    landscape: Landscape


class Settings(Section):
    scale: str
    seed: int
    corpus: Corpus
    order: Order
    suite: Suite
    ingest: Ingest
    profiles: Profiles
    taxonomy: Taxonomy
    mia: Mia = Mia()
    mitigation: Mitigation
    runtime: Runtime | None = None  # absent: the defaults (ingest.lm.runtime.Switches)


_TYPE_TAGS = {"int", "float", "str", "bool", "list", "dict", "tuple"}


def of(cfg: dict[str, Any] | Settings) -> Settings:
    """The typed settings of a config that `memlake.core.config.load` has already checked; a
    pipeline stage hands each job only the sections it needs."""
    return cfg if isinstance(cfg, Settings) else Settings.model_validate(cfg)


def validate(cfg: dict[str, Any], source: str) -> Settings:
    """The typed settings of a resolved config; the first problem as one line naming its key."""
    try:
        return Settings.model_validate(cfg)
    except ValidationError as e:
        err = e.errors()[0]
        # a union's member tags ("constrained-int", "literal['auto']") are not keys
        keys = [str(p) for p in err["loc"] if isinstance(p, int) or str(p).isidentifier()]
        where = ".".join(k for k in keys if k not in _TYPE_TAGS) or "(top level)"
        value = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise MemlakeError(f"{source}: config key {where}: {err['msg']}{value}{more}") from None
