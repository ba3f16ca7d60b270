"""Load any Hugging Face causal LM: hub id, local path, ``*.gguf`` file, known short name, or ``zoo:NAME``."""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mecharule.errors import ModelLoadError, UnsupportedArchitectureError
from mecharule.models.architectures import ArchitectureInfo, resolve, row_for
from mecharule.models.devices import check_device_available, check_dtype_name
from mecharule.models.gguf import gguf_model_dir, is_gguf_path
from mecharule.models.known import fetch_hint, resolve_known

log = logging.getLogger(__name__)

ZOO_PREFIX = "zoo:"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: What transformers raises on unreadable model files (pickle: a damaged ``pytorch_model.bin``).
_LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, EOFError, struct.error, pickle.UnpicklingError)
#: One probe of a hub id before transformers tries it (which retries a dead hub for about a minute).
HUB_PROBE_TIMEOUT_S = 10.0
_RESTORE = "copy or download the model again"
#: Encoder-only model types that transformers also maps to a ``*LMHeadModel`` (when ``is_decoder``).
ENCODER_ONLY_TYPES = frozenset(
    {
        "albert", "bert", "big_bird", "camembert", "convbert", "data2vec-text", "deberta", "deberta-v2",
        "distilbert", "electra", "ernie", "esm", "flaubert", "funnel", "ibert", "layoutlm", "megatron-bert",
        "mobilebert", "modernbert", "mpnet", "nezha", "rembert", "roberta", "roberta-prelayernorm",
        "roc_bert", "roformer", "squeezebert", "xlm", "xlm-roberta", "xlm-roberta-xl", "xmod",
    }
)  # fmt: skip


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
    cache (converted once, on first use). An existing path → itself (``~`` expanded). Something that
    looks like a path (:func:`looks_like_path`) but does not exist → a one-line error. A known short
    name (``smollm2-135m``, see :mod:`mecharule.models.known`) → its fetched copy, else its hub id.
    Anything else (a hub id) passes through.
    """
    if name_or_path.startswith(ZOO_PREFIX):
        from mecharule.zoo.registry import organism_dir

        return str(organism_dir(name_or_path[len(ZOO_PREFIX) :]))
    if is_gguf_path(name_or_path):
        return str(gguf_model_dir(Path(name_or_path).expanduser()))
    local = Path(name_or_path).expanduser()
    if local.exists():
        return str(local) if name_or_path.startswith("~") else name_or_path
    if looks_like_path(name_or_path):
        raise ModelLoadError(_missing_path_message(name_or_path, local))
    return resolve_known(name_or_path) or name_or_path


def looks_like_path(name: str) -> bool:
    """A local path rather than a hub id: it starts with ``/``, ``./``, ``../`` or ``~``, has more
    than one separator (a hub id is ``org/name``), or its first part exists here (``models/x``)."""
    normal = name.replace(os.altsep, os.sep) if os.altsep else name
    if normal in (".", "..") or normal.startswith(("~", os.sep, f".{os.sep}", f"..{os.sep}")):
        return True
    parts = normal.split(os.sep)
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).exists())


def _missing_path_message(name: str, path: Path) -> str:
    absolute = Path(os.path.abspath(path))
    nearest = next((p for p in absolute.parents if p.is_dir()), None)
    where = f"; the nearest existing folder is {nearest}" if nearest not in (None, absolute.parent) else ""
    return (
        f"cannot load model {name!r}: the local path {absolute} does not exist{where}; pass an existing "
        "model directory, a .gguf file, a hub id (org/name), a known model (mecharule list models) "
        "or zoo:NAME"
    )


def _dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    return _DTYPES[check_dtype_name(dtype)]


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
    """Load model + tokenizer; left padding; a pad token; architecture resolved from the table.

    Everything that can be checked cheaply is checked before the weights load, each failure one
    :class:`~mecharule.errors.MecharuleError` naming the cause and the fix: dtype and device, the
    path or hub id, damaged weight files, the model kind (decoder-only causal LM) and its table row.
    """
    torch_dtype = _dtype(dtype)  # a bad dtype is a config error, not a broken model
    check_device_available(str(device))
    path = resolve_model_path(name_or_path)
    local = Path(path).exists()
    if local:
        check_model_dir(Path(path), name_or_path)
    else:
        local = _use_cached_copy(name_or_path, path)
    config = _load_config(path, local, name_or_path)
    check_causal_lm(config, name_or_path)
    row_for(config.model_type)  # not in the table: say so before the weights load
    fail = f"cannot load model {name_or_path!r}"
    tokenizer = _guarded(f"{fail}: its tokenizer files cannot be read", local, _load_tokenizer, path, local)
    model: Any = _guarded(
        f"{fail}: its weights cannot be loaded", local, _load_weights, path, local, torch_dtype
    )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        model.to(device)
    except torch.OutOfMemoryError as exc:
        raise ModelLoadError(
            f"{fail}: it does not fit in the memory of {device} ({brief(exc)}); use --dtype bfloat16, "
            "a smaller model or another device"
        ) from exc
    model.eval()
    arch = resolve(model, model.config.model_type)
    return ModelHandle(model=model, tokenizer=tokenizer, arch=arch, name=name_or_path, path=path)


def _load_weights(path: str, local: bool, dtype: torch.dtype | str) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=local)


def _guarded(failure: str, local: bool, load: Callable[..., Any], *args: Any) -> Any:
    """``load(*args)``; its failure re-raised as one :class:`ModelLoadError` that keeps the cause."""
    from safetensors import SafetensorError

    try:
        return load(*args)
    except (*_LOAD_ERRORS, SafetensorError) as exc:
        raise ModelLoadError(f"{failure} ({brief(exc)}); {_remedy(local)}") from exc
    except Exception as exc:  # the tokenizers library raises plain Exception on a malformed tokenizer.json
        if type(exc) is not Exception:
            raise
        raise ModelLoadError(f"{failure} ({brief(exc)}); {_remedy(local)}") from exc


def _remedy(local: bool) -> str:
    if local:
        return _RESTORE
    return (
        "check that the hub repository holds a transformers model (config.json, weights, tokenizer); "
        "for a GGUF-only repository download its .gguf file and pass that"
    )


def brief(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_model_dir(directory: Path, name: str) -> None:
    """A model directory holds ``config.json`` and readable safetensors files (headers checked)."""
    from safetensors import SafetensorError, safe_open

    if not directory.is_dir():
        raise ModelLoadError(
            f"cannot load model {name!r}: {directory} is a file, not a model directory; pass the "
            "directory holding config.json, or a .gguf file"
        )
    if not (directory / "config.json").is_file():
        ggufs = sorted(directory.glob("*.gguf"))
        hint = f"; to load the GGUF file in it pass --model {ggufs[0]}" if ggufs else ""
        raise ModelLoadError(
            f"cannot load model {name!r}: {directory} has no config.json, so it is not a Hugging Face "
            f"model directory (config.json, model.safetensors, tokenizer files); pass the directory that "
            f"holds them{hint}"
        )
    for weights in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(
                f"cannot load model {name!r}: the weights file {weights} is damaged (truncated, or not "
                f"safetensors: {brief(exc)}); {_RESTORE}"
            ) from exc


def _load_config(path: str, local: bool, name: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=local)
    except _LOAD_ERRORS as exc:
        raise ModelLoadError(
            f"cannot load model {name!r}: its config.json cannot be read ({brief(exc)}); {_remedy(local)}"
        ) from exc


def check_causal_lm(config: Any, name: str) -> None:
    """A decoder-only causal LM, which transformers can load as ``AutoModelForCausalLM``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = str(getattr(config, "model_type", ""))
    kind = f"{model_type} model ({', '.join(getattr(config, 'architectures', None) or ['no architectures'])})"
    fix = "pass a decoder-only causal LM such as Llama, Qwen2, Gemma or GPT-2 (mecharule list architectures)"
    if getattr(config, "is_encoder_decoder", False):
        reason = f"it is an encoder-decoder {kind}"
    elif model_type in ENCODER_ONLY_TYPES and not getattr(config, "is_decoder", False):
        reason = f"it is an encoder-only {kind}"
    elif model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        reason = f"transformers has no causal-LM class for this {kind}"
    else:
        return
    raise UnsupportedArchitectureError(
        f"cannot load model {name!r}: {reason}, not a decoder-only causal LM; {fix}"
    )


def _use_cached_copy(name: str, repo_id: str) -> bool:
    """Check a hub id with one short request before transformers tries it; True: load only from the
    local Hugging Face cache (offline mode, or the hub unreachable but the model cached)."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    what = f"cannot load model {name!r}: no local path of that name exists, and"
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ModelLoadError(
            f"{what} it is not a hub id of the form org/name ({brief(exc)}); pass an existing model "
            "directory, a .gguf file, a hub id, a known model (mecharule list models) or zoo:NAME"
        ) from exc
    cached = isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    local_fix = "pass a local model directory or .gguf file"
    if constants.HF_HUB_OFFLINE:
        if cached:
            return True
        raise ModelLoadError(
            f"{what} HF_HUB_OFFLINE is set while {repo_id} is not in the Hugging Face cache; "
            f"{fetch_hint(name) or 'unset HF_HUB_OFFLINE to download it, or ' + local_fix}"
        )
    endpoint = constants.ENDPOINT
    try:
        HfApi().model_info(repo_id, timeout=HUB_PROBE_TIMEOUT_S)
    except GatedRepoError as exc:
        raise ModelLoadError(
            f"cannot load model {name!r}: {repo_id} is gated on the hub; accept its terms on its hub page "
            "and log in (`hf auth login`) or set HF_TOKEN"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelLoadError(
            f"{what} the hub at {endpoint} has no model {repo_id} (check the spelling; a private model "
            "needs HF_TOKEN)"
        ) from exc
    except Exception as exc:  # the HTTP library's connection and timeout errors differ across versions
        if cached:
            log.warning("hub %s unreachable (%s); using the cached copy of %s", endpoint, brief(exc), repo_id)
            return True
        raise ModelLoadError(
            f"{what} the Hugging Face hub at {endpoint} cannot be reached ({brief(exc)}); "
            f"{fetch_hint(name) or 'check the network (or HF_ENDPOINT), or ' + local_fix}"
        ) from exc
    return False


def handle_from_model(model: Any, tokenizer: Any, name: str = "in-memory") -> ModelHandle:
    """Wrap an already-built model (e.g. a tiny random model from a config) as a handle."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    arch = resolve(model, model.config.model_type)
    return ModelHandle(model=model, tokenizer=tokenizer, arch=arch, name=name, path=name)
