"""Typed run configuration; presets are plain TOML files that load into these dataclasses.

- ``sections``: the dataclasses (`RunConfig` and its sections), their defaults and validation;
- ``checks``: field types checked from the annotations, however a config was built;
- ``files``: presets, TOML/JSON files, ``--set`` overrides and older layouts.
"""

from __future__ import annotations

from .files import (
    MOVED_TO_TASK_OPTIONS,
    apply_override,
    build_table,
    from_dict,
    load_config,
    preset_names,
    upgrade_layout,
)
from .sections import (
    DEFAULT_TARGETS,
    GUESSERS,
    JUDGES,
    SECTIONS,
    TEMPLATE_STYLES,
    TEXTGEN_KINDS,
    DataConfig,
    DiffConfig,
    DitConfig,
    EvalConfig,
    RunConfig,
    TextGenConfig,
)

__all__ = [
    "DEFAULT_TARGETS",
    "GUESSERS",
    "JUDGES",
    "MOVED_TO_TASK_OPTIONS",
    "SECTIONS",
    "TEMPLATE_STYLES",
    "TEXTGEN_KINDS",
    "DataConfig",
    "DiffConfig",
    "DitConfig",
    "EvalConfig",
    "RunConfig",
    "TextGenConfig",
    "apply_override",
    "build_table",
    "from_dict",
    "load_config",
    "preset_names",
    "upgrade_layout",
]
