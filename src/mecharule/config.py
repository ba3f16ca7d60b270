"""Frozen pydantic configs (extra fields forbidden), loadable from YAML or JSON.

One :class:`RunConfig` holds every option of every stage; each stage hashes only its own section
plus what it depends on, so changing a late stage's option never re-runs an early one.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeGuard

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mecharule.errors import ConfigError
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


class MeasureConfig(_Frozen):
    task: str = "arithmetic"
    task_options: dict[str, Any] = Field(default_factory=dict)
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="prompts per generation batch; auto follows the model and device (sizing.py)"
    )
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    max_prompts: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        "auto",
        description="seeded random subsample of the task's prompts; null = all; auto follows the model "
        "and device (all for organisms and GPUs, ~3,000 for a 135M model on a CPU; sizing.py)",
    )
    propose_features: FeatureProposalConfig = Field(default_factory=FeatureProposalConfig)


class RulesConfig(_Frozen):
    extractor: str = "ruleshap"
    target: Literal["fail", "success"] = "fail"
    options: dict[str, Any] = Field(default_factory=dict)
    max_rules: int = Field(3, ge=1, description="behaviour rules (disjuncts) carried to localization")
    min_coverage: float = Field(0.005, ge=0.0, le=1.0)


class AttributionConfig(_Frozen):
    methods: tuple[Literal["atp", "atp_gd", "eap_ig"], ...] = ("atp",)
    unit_kind: Literal["mlp", "mlp_out"] = "mlp"
    n_pairs: int = Field(128, ge=1)
    ig_steps: int = Field(8, ge=1)
    top_m: int | str = Field(
        "100%",
        description="candidates: a count of units (128) or a percentage of all units ('50%'); the "
        "default keeps every unit (benchmarks/localize.py: smaller AtP shortlists drop strong agonists)",
    )

    @field_validator("top_m", mode="before")
    @classmethod
    def _check_top_m(cls, value: int | str) -> int | str:
        candidate_count(value, 100)  # raises a ConfigError naming both accepted forms
        return int(value) if isinstance(value, float) else value


class LocalizeConfig(_Frozen):
    ablation: Literal["mean", "zero", "resample"] = "mean"
    positions: Literal["decode", "generated", "all"] = "decode"
    n_covered: int = Field(64, ge=1)
    n_unrelated: int = Field(64, ge=1)
    n_reference: int = Field(256, ge=1)
    sampling: Literal["spectral", "random"] = "spectral"
    sampling_pool: int = Field(4096, ge=16, description="TRAIN rows embedded and clustered for sampling")
    n_clusters: int = Field(16, ge=1)
    regimes: tuple[Literal["positive", "negative"], ...] = ("positive", "negative")
    predicate: Literal["ucb", "contrastive", "observed"] = Field(
        "observed",
        description="singletons accepted on the observed flip rate (default), its CP upper bound (ucb, "
        "the reference) or the selectivity bound (contrastive); groups are pruned on the upper bound",
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
    validate_exhaustive_max: int = Field(
        4096, ge=0, description="validate: brute-force every unit of the searched layers up to this many"
    )
    validate_outside_sample: int = Field(
        512, ge=0, description="validate, above that: non-candidate units sampled (seeded) per problem"
    )
    memory_budget_mb: Annotated[int, Field(ge=16)] | Literal["auto"] = Field(
        "auto",
        description="rows one engine forward may hold; auto: half the free GPU memory, or a "
        "quarter of the available RAM up to 4 GiB (sizing.py)",
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


class RunConfig(_Frozen):
    seed: int = Field(0, ge=0)
    model: ModelConfig = Field(default_factory=lambda: ModelConfig())
    measure: MeasureConfig = Field(default_factory=lambda: MeasureConfig())
    rules: RulesConfig = Field(default_factory=lambda: RulesConfig())
    attribution: AttributionConfig = Field(default_factory=lambda: AttributionConfig())
    localize: LocalizeConfig = Field(default_factory=lambda: LocalizeConfig())
    anchor: AnchorConfig = Field(default_factory=lambda: AnchorConfig())
    validate_brute_force: bool = False


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    base: Mapping[str, Any] | None = None,
    assignments: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Build a config: a YAML/JSON file, or else ``base`` (a run directory's saved config), or else
    the defaults; then the dotted-key ``overrides`` whose value is not None (``{"measure.task": None}``
    means "not given"); then ``assignments`` (``--set``), applied as given, so None sets null.

    Setting a section to a mapping (``localize={tau: 0.3}``) sets those keys of it and keeps the rest.
    An unknown key fails at once, naming the keys of its section and the closest one.
    """
    data = _read_config_file(path) if path is not None else copy.deepcopy(dict(base or {}))
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    for dotted, value in {**given, **(assignments or {})}.items():
        _assign(data, dotted, value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc)) from exc


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["localize.tau=0.3", "attribution.methods=[atp,eap_ig]"]`` → ``{dotted key: YAML value}``;
    every key is checked against the config's fields."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. --set localize.tau=0.3), got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            detail = " ".join(str(exc).split())
            raise ConfigError(f"--set {key}: {text!r} is not a YAML value ({detail})") from exc
        check_key(key)
        parsed[key] = value
    return parsed


def check_key(dotted: str) -> None:
    """ConfigError unless ``dotted`` names a config field or section (keys inside a mapping field such
    as ``measure.task_options.n_shots`` are the task's or extractor's to check)."""
    model: type[BaseModel] = RunConfig
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part not in model.model_fields:
            section = ".".join(parts[:i])
            raise ConfigError(f"unknown config key {dotted!r}{_unknown_key_hint(section, part)}")
        annotation = model.model_fields[part].annotation
        if _is_section(annotation):
            model = annotation
        elif typing.get_origin(annotation) is dict:
            return
        elif i < len(parts) - 1:
            raise ConfigError(
                f"cannot set {dotted}: {'.'.join(parts[: i + 1])} is a value, not a section; "
                f"set it as {'.'.join(parts[: i + 1])}=VALUE"
            )


def config_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every field of ``model`` as a dotted key, sections walked recursively (``localize.tau``)."""
    keys: list[str] = []
    for name, info in model.model_fields.items():
        if _is_section(info.annotation):
            keys += config_keys(info.annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _assign(data: dict[str, Any], dotted: str, value: Any) -> None:
    check_key(dotted)
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(
                f"cannot set {dotted}: the config's {part!r} is {node!r}, not a mapping; "
                f"write it as a mapping ({part}: {{...}})"
            )
    if isinstance(value, dict) and _is_section(_field_annotation(dotted)):
        for key, inner in value.items():
            _assign(data, f"{dotted}.{key}", inner)
        return
    node[leaf] = value


def _field_annotation(dotted: str) -> Any:
    model: Any = RunConfig
    for part in dotted.split("."):
        model = model.model_fields[part].annotation
    return model


def _is_section(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _unknown_key_hint(section: str, key: str) -> str:
    """`` (did you mean 'localize.tau'?); keys of localize: ...`` for an unknown ``key`` of ``section``."""
    fields = list(_section(tuple(section.split(".")) if section else ()).model_fields)
    prefix = f"{section}." if section else ""
    close = [prefix + c for c in difflib.get_close_matches(key, fields, n=1)]
    if not close:  # a key of another section (tau → localize.tau), or a near miss of one
        everywhere = config_keys()
        close = [k for k in everywhere if k.rsplit(".", 1)[-1] == key][:1]
        close = close or difflib.get_close_matches(prefix + key, everywhere, n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{guess}; keys of {section or 'the config'}: {', '.join(fields)}"


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))[:3]
        hint = f" such as {path / inside[0]}" if inside else ""
        raise ConfigError(f"config path {path} is a directory, not a file; pass a YAML or JSON file{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "pass a YAML or JSON config file"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:] or 'YAML'}: {detail}") from exc
    if not isinstance(loaded or {}, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping at the top level, not a {type(loaded).__name__}"
        )
    return dict(loaded or {})


def _describe_validation_error(exc: ValidationError) -> str:
    """The first error on one line: where, what, what was given (short); for a misspelt key the keys
    that section accepts, for a misspelt choice (``Literal``) the closest accepted value."""
    errors = exc.errors()
    first = errors[0]
    field = _field_loc(first["loc"])
    where = ".".join(str(p) for p in field)
    given = repr(first.get("input"))
    given = given if len(given) <= 80 else given[:77] + "..."
    if first["type"] == "extra_forbidden":
        section, key = ".".join(str(p) for p in field[:-1]), str(field[-1])
        return f"invalid config at {where}: unknown key (got {given}){_unknown_key_hint(section, key)}"
    if first["type"] == "value_error":  # our own validators name the value they reject
        return f"invalid config at {where}: {first['msg'].removeprefix('Value error, ')}"
    message = first["msg"]
    same = [e for e in errors if _field_loc(e["loc"]) == field]
    if field != first["loc"] and all(e["msg"].startswith("Input should be ") for e in same):
        # a union (``int | Literal['auto']``) fails once per member, each under the same field
        wanted = dict.fromkeys(e["msg"].split(",")[0].removeprefix("Input should be ") for e in same)
        message = "Input should be " + " or ".join(wanted)
    choices = [c for e in same if e["type"] == "literal_error" for c in _quoted(e.get("ctx") or {})]
    close = difflib.get_close_matches(str(first.get("input")), choices, n=1)
    guess = f"; did you mean {close[0]!r}?" if close else ""
    return f"invalid config at {where}: {message} (got {given}){guess}"


def _quoted(ctx: Mapping[str, Any]) -> list[str]:
    """The accepted values of a literal error: ``"'ucb', 'contrastive' or 'observed'"`` → a list."""
    return re.findall(r"'([^']*)'", str(ctx.get("expected", "")))


def _field_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """An error's location without pydantic's union-member tags (``('measure', 'batch_size',
    'constrained-int')`` → ``('measure', 'batch_size')``); list indices (``methods.1``) are kept."""
    model: Any = RunConfig
    for i, part in enumerate(loc):
        if not _is_section(model):  # inside a field: keep the indices, drop the tags after them
            rest = loc[i:]
            return loc[: i + next((j for j, p in enumerate(rest) if isinstance(p, str)), len(rest))]
        if str(part) not in model.model_fields:
            return loc
        model = model.model_fields[str(part)].annotation
    return loc


def _section(loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The config model at a location (``("measure",)`` → MeasureConfig)."""
    model: type[BaseModel] = RunConfig
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        if not _is_section(annotation):
            break
        model = annotation
    return model
