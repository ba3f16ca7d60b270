"""The config's sections, one per concept: model, task, units, ablation, rules, attribution, search,
validation, anchor, executor. Each field says what it means; ``executor`` holds only speed settings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mecharule.models.devices import check_device_name, check_dtype_name
from mecharule.shortlist import candidate_count


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelConfig(_Frozen):
    name: str = Field("zoo:arithmetic", description="hub id, local path, or zoo:NAME")
    device: str = Field("cpu", description="cpu, cuda, cuda:N, mps, xpu (checked before any model loads)")
    dtype: str = Field("float32", description="float32 | bfloat16 | float16 | auto")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        return check_device_name(value)

    @field_validator("dtype")
    @classmethod
    def _check_dtype(cls, value: str) -> str:
        return check_dtype_name(value)


class FeatureProposalConfig(_Frozen):
    enabled: bool = Field(
        False, description="ask an OpenAI-compatible LLM for extra features (MECHARULE_LLM_*)"
    )
    rounds: int = Field(10, ge=1)
    n_features: int = Field(16, ge=1)
    n_examples: int = Field(32, ge=1)
    round_seconds: float | None = Field(
        120.0, gt=0, description="wall time of all proposals of one round together; null = no budget"
    )
    feature_seconds: float = Field(20.0, gt=0, description="wall time of one proposed feature over all rows")


class TaskConfig(_Frozen):
    name: str = Field("arithmetic", description="a registered task (mecharule list tasks) or module:factory")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the task")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    max_prompts: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        "auto",
        description="seeded random subsample of the task's prompts; null = all; auto follows the model "
        "and device (all for organisms and GPUs, ~3,000 for a 135M model on a CPU; sizing.py)",
    )
    propose_features: FeatureProposalConfig = Field(default_factory=FeatureProposalConfig)


class UnitsConfig(_Frozen):
    kind: Literal["mlp", "mlp_out"] = Field(
        "mlp", description="mlp: hidden MLP neurons (d_mlp); mlp_out: MLP output coordinates (d_model)"
    )


class AblationConfig(_Frozen):
    """What "ablating a unit" means, shared by attribution (AtP's target), localization and anchoring."""

    value: Literal["mean", "zero", "resample"] = Field(
        "mean", description="mean (position-aligned over the reference rows) | zero | resample"
    )
    positions: Literal["decode", "generated", "all"] = Field(
        "decode", description="decode (last prompt token + answer) | generated | all"
    )
    n_reference: int = Field(256, ge=1, description="TRAIN rows the mean (or resample) values come from")


class RulesConfig(_Frozen):
    extractor: str = "ruleshap"
    target: Literal["fail", "success"] = "fail"
    options: dict[str, Any] = Field(default_factory=dict)
    max_rules: int = Field(3, ge=1, description="behaviour rules (disjuncts) carried to localization")
    min_coverage: float = Field(0.005, ge=0.0, le=1.0)


class AttributionConfig(_Frozen):
    methods: tuple[str, ...] = Field(
        ("atp",), min_length=1, description="registered methods (atp, atp_gd, eap_ig); the first ranks"
    )
    n_pairs: int = Field(128, ge=1)
    ig_steps: int = Field(8, ge=1)
    top_m: int | str = Field(
        "100%",
        description="candidates: a count of units (128) or a percentage of all units ('50%'); the "
        "default keeps every unit (benchmarks/localize.py: smaller AtP shortlists drop strong agonists)",
    )

    @field_validator("methods")
    @classmethod
    def _check_methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from mecharule.attribution.method import ATTRIBUTORS  # imports the methods (torch): only when set

        for name in value:
            if name not in ATTRIBUTORS:
                raise ValueError(ATTRIBUTORS.unknown_message(name))
        return value

    @field_validator("top_m", mode="before")
    @classmethod
    def _check_top_m(cls, value: int | str) -> int | str:
        candidate_count(value, 100)  # raises a ConfigError naming both accepted forms
        return int(value) if isinstance(value, float) else value


class SearchSettings(_Frozen):
    """Contrastive Hierarchical Ablation: the prompts of each problem and how groups are judged."""

    n_covered: int = Field(64, ge=1)
    n_unrelated: int = Field(64, ge=1)
    sampling: Literal["spectral", "random"] = "spectral"
    sampling_pool: int = Field(4096, ge=16, description="TRAIN rows embedded and clustered for sampling")
    n_clusters: int = Field(16, ge=1)
    regimes: tuple[Literal["positive", "negative"], ...] = ("positive", "negative")
    predicate: str = Field(
        "observed",
        description="a registered predicate: singletons accepted on the observed flip rate (observed), "
        "its CP upper bound (ucb, the reference) or the selectivity bound (contrastive)",
    )
    tau: float = Field(0.2, gt=0.0, lt=1.0)
    alpha_slice: float = Field(0.025, gt=0.0, lt=0.5)
    sign_split_first: bool = True
    order_by_score: bool = Field(True, description="halves ordered by |attribution| (False: seeded shuffle)")
    contrast_margin: float = Field(0.0, ge=0.0, description="contrastive predicate: required contrast bound")
    group_across_layers: bool = False
    prune_on: Literal["changes", "flips"] = Field(
        "changes", description="groups are pruned on answer changes (monotone) or on label flips (reference)"
    )
    audit: int = Field(16, ge=0, description="singletons tested per root to estimate density; 0 = none")
    expand_dense: bool = Field(True, description="test a strong group unit by unit when halving costs more")
    n_suppression: int = Field(
        512,
        ge=1,
        description="covered and unrelated prompts (each) on which all agonists are ablated jointly",
    )
    budget: int | None = Field(None, ge=1)

    @field_validator("predicate")
    @classmethod
    def _check_predicate(cls, value: str) -> str:
        from mecharule.search.types import PREDICATES

        if value not in PREDICATES:
            raise ValueError(PREDICATES.unknown_message(value))  # the registered ones, the closest
        return value


class ValidationConfig(_Frozen):
    brute_force: bool = Field(False, description="also run the validate stage (same as --validate)")
    exhaustive_max: int = Field(
        4096, ge=0, description="brute-force every unit of the searched layers up to this many"
    )
    outside_sample: int = Field(
        512, ge=0, description="above that: non-candidate units sampled (seeded) per problem"
    )


class AnchorConfig(_Frozen):
    max_eval_prompts: int = Field(10000, ge=1)
    max_agonists: int = Field(16, ge=1, description="strongest agonists (by max effect) anchored")
    rule_options: dict[str, Any] = Field(
        default_factory=lambda: {"n_estimators": 40, "shap_n_estimators": 20},
        description="extractor options for anchored rules (smaller ensembles: one fit per agonist x target)",
    )
    hq_threshold: float = 0.70
    min_coverage: float = 0.005
    n_random_controls: int = Field(1, ge=0)


class RecomposeConfig(_Frozen):
    """How each rule's agonists work together: alone vs jointly, pairs, the greedy smallest set."""

    enabled: bool = Field(True, description="run the recompose stage in `mecharule run`")
    pair_units: int = Field(
        8, ge=0, description="the strongest agonists (alone) whose pairs are measured (0 or 1: no pairs)"
    )
    max_units: int = Field(16, ge=1, description="greedy's candidates: the strongest agonists alone")
    shares: tuple[float, ...] = Field(
        (0.5, 0.8, 0.9), min_length=1, description="shares of the joint effect the smallest sets reach"
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="sign-test level (Holm over a rule's pairs)")

    @field_validator("shares")
    @classmethod
    def _shares_in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < v <= 1 for v in value):
            raise ValueError(f"every share must be in (0, 1]; got {list(value)}")
        return tuple(sorted(set(value)))


class ExecutorConfig(_Frozen):
    """Where and how fast, never what: no stage's key holds these (every executor gives the same
    labels for the same seed)."""

    kind: Literal["local", "ray"] = Field(
        "local",
        description="local: this process; ray: model replicas on Ray actors (pip install mecharule[ray])",
    )
    ray_address: str | None = Field(
        None,
        description="ray: the cluster to join (ray://HOST:10001 or auto); null = start one on this machine",
    )
    workers: int | None = Field(
        None, ge=1, description="ray: model replicas; null = one per GPU (model on cuda) or per CPU worker"
    )
    cpus_per_worker: int = Field(1, ge=1, description="ray: CPUs (and torch threads) per replica")
    gpus_per_worker: float | None = Field(
        None, ge=0, description="ray: GPUs per replica; null = 1 when the model is on cuda, else 0"
    )

    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="prompts per generation batch; auto follows the model and device (sizing.py)"
    )
    memory_budget_mb: Annotated[int, Field(ge=16)] | Literal["auto"] = Field(
        "auto",
        description="rows one engine forward may hold; auto: half the free GPU memory, or a "
        "quarter of the available RAM up to 4 GiB (sizing.py)",
    )


class RunConfig(_Frozen):
    seed: int = Field(0, ge=0)
    model: ModelConfig = Field(default_factory=lambda: ModelConfig())
    task: TaskConfig = Field(default_factory=lambda: TaskConfig())
    units: UnitsConfig = Field(default_factory=lambda: UnitsConfig())
    ablation: AblationConfig = Field(default_factory=lambda: AblationConfig())
    rules: RulesConfig = Field(default_factory=lambda: RulesConfig())
    attribution: AttributionConfig = Field(default_factory=lambda: AttributionConfig())
    search: SearchSettings = Field(default_factory=lambda: SearchSettings())
    validation: ValidationConfig = Field(default_factory=lambda: ValidationConfig())
    anchor: AnchorConfig = Field(default_factory=lambda: AnchorConfig())
    recompose: RecomposeConfig = Field(default_factory=lambda: RecomposeConfig())
    executor: ExecutorConfig = Field(default_factory=lambda: ExecutorConfig())


def is_section(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
