"""Fine-tunes built to hide from weight readers, and undoing that.

- ``shapes``: what a Llama-family decoder looks like to the transforms (layers, heads, norms and
  their readers) and the float64 edits of a projection; shared by the two below.
- ``attack``: exact weight symmetries that keep every output but scramble ``W_ft - W_base``.
- ``align``: bring such a checkpoint back into its base model's basis before subtracting;
- ``fit``: the low-rank, rank and column-scale fits inside the alignment's refinement.
"""

from __future__ import annotations

from .align import align, describe_alignment
from .attack import KINDS, attack, attack_checkpoint
from .shapes import Shape, shape_of

__all__ = [
    "KINDS",
    "Shape",
    "align",
    "attack",
    "attack_checkpoint",
    "describe_alignment",
    "shape_of",
]
