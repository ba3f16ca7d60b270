"""The architecture TABLE: where the MLP units live, per Hugging Face ``model_type``.

Adding an architecture = adding a row. A row names, relative to the loaded ``*ForCausalLM`` model:

* ``layers``: the attribute path of the list of decoder blocks;
* ``mlp``: the MLP submodule of a block (its *output* is the ``mlp_out`` site, d_model wide);
* ``down_proj``: the MLP down-projection inside ``mlp`` (its *input* is the ``mlp`` site: one hidden
  neuron per coordinate, d_mlp wide; for gated MLPs that is act(gate) * up).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from mecharule.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchitectureRow:
    layers: str
    mlp: str = "mlp"
    down_proj: str = "down_proj"


_DECODER = ArchitectureRow(layers="model.layers")

ARCHITECTURES: dict[str, ArchitectureRow] = {
    "qwen2": _DECODER,
    "qwen3": _DECODER,
    "llama": _DECODER,
    "mistral": _DECODER,
    "gemma": _DECODER,
    "gemma2": _DECODER,
    "gemma3_text": _DECODER,
    "phi3": _DECODER,
    "olmo": _DECODER,
    "olmo2": _DECODER,
    "granite": _DECODER,
    "phi": ArchitectureRow(layers="model.layers", down_proj="fc2"),
    "gpt2": ArchitectureRow(layers="transformer.h", down_proj="c_proj"),
    "gptj": ArchitectureRow(layers="transformer.h", down_proj="fc_out"),
    "gpt_neox": ArchitectureRow(layers="gpt_neox.layers", down_proj="dense_4h_to_h"),
}


@dataclass(frozen=True)
class ArchitectureInfo:
    """Resolved shape facts of one loaded model."""

    model_type: str
    row: ArchitectureRow
    n_layers: int
    d_model: int
    d_mlp: int

    def width(self, kind: str) -> int:
        return self.d_mlp if kind == "mlp" else self.d_model


def _get_path(root: nn.Module, path: str) -> nn.Module:
    module: object = root
    for part in path.split("."):
        module = getattr(module, part)
    if not isinstance(module, nn.Module):
        raise AttributeError(path)
    return module


def row_for(model_type: str) -> ArchitectureRow:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} is not in mecharule.models.architectures.ARCHITECTURES "
            f"(known: {known}); add a row ArchitectureRow(layers=..., mlp=..., down_proj=...) naming "
            "the decoder-block list, the MLP module and its down-projection "
            "(see docs/adding-an-architecture.md)"
        ) from None


def decoder_layers(model: nn.Module, row: ArchitectureRow) -> nn.ModuleList:
    layers = _get_path(model, row.layers)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedArchitectureError(f"{row.layers} is a {type(layers).__name__}, not a ModuleList")
    return layers


def mlp_module(model: nn.Module, row: ArchitectureRow, layer: int) -> nn.Module:
    return _get_path(decoder_layers(model, row)[layer], row.mlp)


def down_proj_module(model: nn.Module, row: ArchitectureRow, layer: int) -> nn.Module:
    return _get_path(mlp_module(model, row, layer), row.down_proj)


def _in_out(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if hasattr(module, "nx") and hasattr(module, "nf"):  # GPT-2 style Conv1D
        return int(module.nx), int(module.nf)  # type: ignore[arg-type]
    raise UnsupportedArchitectureError(
        f"down-projection {type(module).__name__} is neither nn.Linear nor a Conv1D; cannot tell its widths"
    )


def resolve(model: nn.Module, model_type: str) -> ArchitectureInfo:
    """Resolve a model's table row and widths; errors say what to add to the table."""
    row = row_for(model_type)
    try:
        layers = decoder_layers(model, row)
        d_mlp, d_model = _in_out(down_proj_module(model, row, 0))
    except (AttributeError, IndexError) as exc:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r}: the table row {row} does not match the model ({exc}); "
            "fix the row in mecharule.models.architectures.ARCHITECTURES"
        ) from None
    return ArchitectureInfo(model_type, row, len(layers), d_model, d_mlp)
