"""Configs from presets, TOML or JSON files and ``--set`` overrides, with nearest-key suggestions;
configs written by older versions load too (`upgrade_layout`)."""

from __future__ import annotations

import difflib
import json
import logging
import tomllib
from importlib import resources
from pathlib import Path

from ..errors import ConfigError
from .checks import check_value, fields_of
from .sections import SECTIONS, RunConfig

log = logging.getLogger(__name__)

MOVED_TO_TASK_OPTIONS = {
    "data": {
        "topics_file": None,
        "questions_file": None,
        "headlines_file": None,
        "narrators_file": None,
        "stories_per_diff": 100,
        "test_trigger": "sep",
    },
    "diffs": {"wrong_pool": 8, "wrong_codes": "pool"},
    "eval": {
        "gate_questions": 3,
        "gate_max_new_tokens": 32,
        "twenty_q_count": 20,
        "twenty_q_max_new_tokens": 48,
        "story_max_new_tokens": 120,
    },
}


def all_keys() -> list[str]:
    """Every settable key, dotted: ``model``, ``diffs.lr``, ..."""
    keys = [k for k in fields_of(RunConfig) if k not in SECTIONS]
    return keys + [f"{s}.{k}" for s, cls in SECTIONS.items() for k in fields_of(cls)]


def suggest(key: str) -> str:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _build(cls, kwargs: dict, where: str):
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def build_table(cls, section: str, value, where: str):
    """``cls`` (a config dataclass) from the table ``[section]``, naming ``where`` and any
    unknown or mistyped key."""
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: {section} = {value!r} must be a table of keys ([{section}] in TOML, "
            f"an object in JSON), e.g. {section}.{next(iter(fields_of(cls)), 'key')}"
        )
    known = fields_of(cls)
    for sub in value:
        if sub not in known:
            if section in SECTIONS:
                hint = suggest(f"{section}.{sub}")
            else:  # a task's table: suggest among its own keys
                close = difflib.get_close_matches(str(sub), list(known), n=1, cutoff=0.6)
                hint = f"; did you mean '{section}.{close[0]}'?" if close else ""
            raise ConfigError(
                f"{where}: unknown key {section}.{sub}{hint} "
                f"(known in [{section}]: {', '.join(known) or 'none'})"
            )
        check_value(cls, section, sub, value[sub], where)
    return _build(cls, value, where)


def upgrade_layout(d: dict, where: str) -> dict:
    """``d`` with the keys of ``MOVED_TO_TASK_OPTIONS`` moved into ``task_options`` (a copy)."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    moved = []
    for section, keys in MOVED_TO_TASK_OPTIONS.items():
        table = d.get(section)
        if not isinstance(table, dict):
            continue
        for key, old_default in keys.items():
            if key not in table:
                continue
            value = table.pop(key)
            if value != old_default:
                opts = d.setdefault("task_options", {})
                if isinstance(opts, dict):
                    opts.setdefault(key, value)
                moved.append(f"{section}.{key}")
    if moved:
        log.warning(
            "%s: %s now %s to [task_options] (e.g. task_options.%s = ...); the old place "
            "still loads in this version",
            where,
            ", ".join(moved),
            "belongs" if len(moved) == 1 else "belong",
            moved[0].split(".", 1)[1],
        )
    return d


def from_dict(d: dict, source: str | Path | None = None) -> RunConfig:
    """Build a RunConfig, naming ``source`` (a file) and any unknown or mistyped key."""
    where = str(source) if source else "config"
    if not isinstance(d, dict):
        raise ConfigError(
            f"{where}: a config is a table of keys (TOML) or a JSON object, not "
            f"{type(d).__name__}; start from a preset (src/ditkit/presets/)"
        )
    d = upgrade_layout(d, where)
    top = fields_of(RunConfig)
    kwargs = {}
    for key, value in d.items():
        if key not in top:
            raise ConfigError(
                f"{where}: unknown config key {key!r}{suggest(str(key))} "
                f"(known: {', '.join(all_keys()[:8])}, and the tables {', '.join(SECTIONS)})"
            )
        if key in SECTIONS:
            kwargs[key] = build_table(SECTIONS[key], key, value, where)
        else:
            check_value(RunConfig, None, key, value, where)
            kwargs[key] = value
    return _build(RunConfig, kwargs, where)


def preset_names() -> list[str]:
    return sorted(p.stem for p in Path(str(resources.files("ditkit") / "presets")).glob("*.toml"))


def load_config(name_or_path: str, overrides: list[str] | None = None) -> RunConfig:
    """Load a preset by name or a TOML/JSON file, then apply ``key=value`` overrides.

    >>> cfg = load_config("quickstart", ["diffs.steps=10", "test_diffs.steps=30"])
    >>> cfg.diffs.steps, cfg.diffs_for("test").steps
    (10, 30)
    >>> load_config("quickstart", ["diffs.stepz=10"])
    Traceback (most recent call last):
    ...
    ditkit.errors.ConfigError: --set diffs.stepz=10: unknown key 'diffs.stepz'; did you mean 'diffs.steps'?
    """
    path = Path(name_or_path)
    if not path.exists() and (path.suffix in (".toml", ".json") or len(path.parts) > 1):
        raise ConfigError(
            f"config file {path} does not exist; check the path, or name a preset "
            f"({', '.join(preset_names())})"
        )
    if not path.exists():
        path = Path(str(resources.files("ditkit") / "presets" / f"{name_or_path}.toml"))
        if not path.exists():
            close = difflib.get_close_matches(name_or_path, preset_names(), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{name_or_path!r} is neither a config file nor a preset; {hint}"
                f"presets: {', '.join(preset_names())} (or pass the path of a TOML file)"
            )
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; pass a preset name or a .toml/.json config file")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8"
        ) from None
    kind = "JSON" if path.suffix == ".json" else "TOML"
    try:
        d = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (ValueError, RecursionError) as e:  # TOMLDecodeError and JSONDecodeError included
        raise ConfigError(
            f"{path} is not valid {kind}: {e}; fix that line (the presets in "
            "src/ditkit/presets/ show the layout)"
        ) from None
    if not isinstance(d, dict):
        return from_dict(d, path)
    for item in overrides or []:
        apply_override(d, item)
    where = f"{path} with --set {' '.join(overrides)}" if overrides else path
    return from_dict(d, where)


def apply_override(d: dict, item: str) -> None:
    """Apply ``section.key=value`` (value parsed as TOML, else kept as a string).

    The key must name a config field and the value must have its type; the ``ConfigError``
    otherwise names the ``--set`` item and suggests the nearest key.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. diffs.steps=32")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, KeyError, RecursionError):
        value = raw
    *parents, leaf = key.split(".")
    if len(parents) == 1 and leaf in MOVED_TO_TASK_OPTIONS.get(parents[0], {}):
        log.warning("--set %s: %s is now task_options.%s", item, key, leaf)
        parents = ["task_options"]
    if parents in (["task_options"], ["test_diffs"]):  # checked where the config is built
        if not isinstance(d.setdefault(parents[0], {}), dict):
            raise ConfigError(f"--set {item}: {parents[0]} in the config file is not a table")
        d[parents[0]][leaf] = value
        return
    if not parents and leaf in SECTIONS:
        example = next(iter(fields_of(SECTIONS[leaf])))
        raise ConfigError(
            f"--set {item}: {leaf} is a table; set one of its keys, e.g. {leaf}.{example}"
        )
    if len(parents) > 1 or (parents and parents[0] not in SECTIONS):
        raise ConfigError(f"--set {item}: unknown key {key!r}{suggest(key)}")
    cls = SECTIONS[parents[0]] if parents else RunConfig
    if leaf not in fields_of(cls):
        raise ConfigError(f"--set {item}: unknown key {key!r}{suggest(key)}")
    check_value(cls, parents[0] if parents else None, leaf, value, f"--set {item}")
    node = d
    for p in parents:
        if not isinstance(node.setdefault(p, {}), dict):
            raise ConfigError(f"--set {item}: {p} in the config file is not a table")
        node = node[p]
    node[leaf] = value
