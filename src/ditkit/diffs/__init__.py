"""Weight-diff files: a ``WeightDiff`` is ``{module: (A, B)}`` (and/or dense deltas) plus metadata.

Conventions (see ``lora.py``): ``A [r, in]``, ``B [out, r]`` as peft's ``lora_A`` and ``lora_B``;
the diff adds ``(alpha / r) B A`` to a projection's ``[out, in]`` weight, a dense diff ``D [out, in]``
adds ``D``. One module per format, each
exposing a ``Format`` {detect, load, save} that ``registry.FORMATS`` lists in detection order
(a format of your own: ``register_format``):

- ``ditkit_file``: ditkit's own ``.safetensors`` file (read and written);
- ``peft``: PEFT LoRA adapter folders (read and written);
- ``reference_pt``: the reference code's ``.pt`` diff lists and DIT adapters (read only,
  ``weights_only``);
- ``checkpoint``: a full fine-tuned checkpoint minus its base, dense or SVD-truncated (read by
  ``convert`` only).

``core`` holds what they share (``WeightDiff``, the checks, installing diffs into a model);
``operations`` holds ``info`` and ``convert``, what ``ditkit diff info|convert`` print.
"""

from __future__ import annotations

from .checkpoint import diff_from_finetune, svd_truncate
from .core import Format, WeightDiff, install_diffs, model_layout, read_header
from .ditkit_file import FORMAT_TAG, FORMAT_VERSION, save_diff
from .operations import convert, info
from .peft import save_peft
from .reference_pt import load_reference_pt
from .registry import (
    FORMATS,
    detect_format,
    find_format,
    formats,
    load_diff,
    load_diffs,
    register_format,
)

__all__ = [
    "FORMATS",
    "FORMAT_TAG",
    "FORMAT_VERSION",
    "Format",
    "WeightDiff",
    "convert",
    "detect_format",
    "diff_from_finetune",
    "find_format",
    "formats",
    "info",
    "install_diffs",
    "load_diff",
    "load_diffs",
    "load_reference_pt",
    "model_layout",
    "read_header",
    "register_format",
    "save_diff",
    "save_peft",
    "svd_truncate",
]
