"""ditkit: Diff Interpretation Tuning, a model that explains what a fine-tune changed in it.

Read a diff (a PEFT adapter folder, a ditkit file, a reference ``.pt``, or a full checkpoint
minus its base)::

    import ditkit
    ditkit.describe("adapter_folder/")   # -> ["A hidden topic: volcanoes."], the shipped joint reader
    ditkit.audit(["handed/"], "audit_out/")            # one row per diff, with flags

Build diffs and a reader of your own, in resumable stages::

    ditkit.run("quickstart", "runs/mine", overrides=["dit.adapter=train"])

The API (each function's docstring has a runnable example):

- reading: ``describe``, ``audit``, ``load_reader`` (the shipped DIT adapter), ``find_trigger``
  (DIT names the behaviour, a search finds what opens it)
- runs: ``run`` (presets and configs), ``load_config``, ``RunConfig``
- diffs: ``WeightDiff``, ``load_diff``, ``load_diffs``, ``detect_format``, ``save_diff``,
  ``save_peft``, ``convert``, ``info``, ``diff_from_finetune``, ``register_format``
- models: ``load_model`` (embedded name, local folder, ``.gguf`` file or hub id)
- hiding and undoing it: ``attack`` (exact weight symmetries; ``ATTACKS`` lists them), ``align``

Names load on first use, so ``import ditkit`` stays quick until one is needed.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it
_API = {
    "describe": "api",
    "find_trigger": "api",
    "audit": "api",
    "run": "api",
    "load_reader": "api",
    "attack": "symmetry",
    "ATTACKS": "api",
    "align": "symmetry",
    "load_config": "config",
    "RunConfig": "config",
    "WeightDiff": "diffs",
    "load_diff": "diffs",
    "load_diffs": "diffs",
    "detect_format": "diffs",
    "save_diff": "diffs",
    "save_peft": "diffs",
    "convert": "diffs",
    "info": "diffs",
    "diff_from_finetune": "diffs",
    "register_format": "diffs",
    "load_model": "models",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'ditkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
