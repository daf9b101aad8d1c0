"""Experiments that sweep one setting over sub-runs of a finished run, sharing what they can
(symbolic links to the run's data and diffs): one module per sweep, each with its own summary.

- ``scaling``: one test set read by adapters trained on 2^k training diffs (`ditkit scaling`);
- ``ranks``: test diffs of other ranks read by the run's adapter (`ditkit ranks`);
- ``strength``: diffs trained to several row budgets, read at several scales (`ditkit strength`);
- ``readers``: adapters per setting and seed, paired on one test set (`ditkit readers`).

A new sweep is one module here, built on ``common``, plus its command in ``cli.py``.
"""

from __future__ import annotations

from .ranks import rank_sweep
from .readers import reader_study
from .scaling import data_scaling, default_sizes
from .strength import strength_curve

__all__ = ["data_scaling", "default_sizes", "rank_sweep", "reader_study", "strength_curve"]
