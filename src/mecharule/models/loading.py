"""Load any Hugging Face causal LM: hub id, local path, ``*.gguf`` file, known short name, or ``zoo:NAME``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mecharule.errors import ConfigError, ModelLoadError
from mecharule.models.architectures import ArchitectureInfo, resolve
from mecharule.models.gguf import gguf_model_dir, is_gguf_path
from mecharule.models.known import fetch_hint, resolve_known

log = logging.getLogger(__name__)

ZOO_PREFIX = "zoo:"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ModelHandle:
    """A loaded model with its tokenizer and resolved architecture facts."""

    model: Any  # a transformers PreTrainedModel (typed loosely: its attributes are dynamic)
    tokenizer: Any
    arch: ArchitectureInfo
    name: str
    path: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def resolve_model_path(name_or_path: str) -> str:
    """Map a model name to what transformers loads; cheap unless a GGUF file needs converting.

    ``zoo:NAME`` → the bundled organism directory. A ``*.gguf`` file → its converted directory in the
    cache (converted once, on first use). An existing path → itself. A known short name
    (``smollm2-135m``, see :mod:`mecharule.models.known`) → its fetched copy, else its hub id. Anything
    else (a hub id) passes through.
    """
    if name_or_path.startswith(ZOO_PREFIX):
        from mecharule.zoo.registry import organism_dir

        return str(organism_dir(name_or_path[len(ZOO_PREFIX) :]))
    if is_gguf_path(name_or_path):
        return str(gguf_model_dir(Path(name_or_path).expanduser()))
    if Path(name_or_path).exists():
        return name_or_path
    return resolve_known(name_or_path) or name_or_path


def _dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ConfigError(f"dtype {dtype!r} is not one of auto, {', '.join(_DTYPES)}") from None


GENERIC_TOKENIZER_CLASSES = {"PreTrainedTokenizerFast", "TokenizersBackend"}


def _load_tokenizer(path: str, local: bool) -> Any:
    """AutoTokenizer, except when a local directory declares the generic fast tokenizer class.

    transformers 5 maps ``model_type`` to a model-specific tokenizer class (a ``qwen2`` directory gets
    ``Qwen2Tokenizer``, which re-splits text and drops characters) even when ``tokenizer_config.json``
    declares the generic class; the bundled char-level organisms need their ``tokenizer.json`` as is.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config_file = Path(path) / "tokenizer_config.json"
    if local and config_file.exists():
        declared = json.loads(config_file.read_text()).get("tokenizer_class")
        if declared in GENERIC_TOKENIZER_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    return AutoTokenizer.from_pretrained(path, local_files_only=local)


def load_model(name_or_path: str, device: str = "cpu", dtype: str | torch.dtype = "float32") -> ModelHandle:
    """Load model + tokenizer; left padding; a pad token; architecture resolved from the table."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    local = Path(path).exists()
    torch_dtype = _dtype(dtype)  # a bad dtype is a config error, not a broken model
    try:
        tokenizer = _load_tokenizer(path, local)
        model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, local_files_only=local)
    except (OSError, ValueError) as exc:
        hint = (
            "the directory exists but does not hold a causal LM (config.json, weights, tokenizer files)"
            if local
            else fetch_hint(name_or_path)
            or "it is not a local directory and could not be fetched from the Hugging Face hub "
            "(no network? download it first or pass a local path)"
        )
        raise ModelLoadError(f"cannot load model {name_or_path!r}: {hint} ({type(exc).__name__})") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    arch = resolve(model, model.config.model_type)
    return ModelHandle(model=model, tokenizer=tokenizer, arch=arch, name=name_or_path, path=path)


def handle_from_model(model: Any, tokenizer: Any, name: str = "in-memory") -> ModelHandle:
    """Wrap an already-built model (e.g. a tiny random model from a config) as a handle."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    arch = resolve(model, model.config.model_type)
    return ModelHandle(model=model, tokenizer=tokenizer, arch=arch, name=name, path=name)
