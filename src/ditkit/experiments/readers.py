"""Reader study: `reader_study` trains one adapter per (setting, seed) on RUN's training diffs (a
setting is a list of ``dit.*`` / ``eval.*`` overrides, e.g. scale augmentation, phrasings, rank,
weight decay, a read-time vote) in ``RUN/readers/{setting}-s{seed}/``, reads RUN's held-out diffs
(paired across settings) and a sample of its training diffs, and counts the held-out misses that
name a training label. Summary: ``RUN/readers/readers.{json,csv,md}``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..config import RunConfig, apply_override, from_dict
from ..diffs import load_diff
from ..errors import DataError
from ..evaluate.metrics import alias_match
from ..evaluate.stats import paired_difference
from ..files import read_jsonl, write_json, write_text
from ..pipeline import run_pipeline
from ..reader import describe
from ..reporting import Document, Section, Table, markdown
from ..rundir import Run
from .common import (
    finished_run,
    sub_run,
)

log = logging.getLogger(__name__)


def reader_study(
    run_dir: Path,
    settings: dict[str, list[str]],
    seeds: list[int] | dict[str, list[int]],
    train_sample: int = 30,
    metric: str = "alias_match",
) -> list[dict]:
    """One adapter per (setting, seed) on ``run_dir``'s training diffs; summary rows per setting.

    ``seeds``: one list for every setting, or a list per setting (a size sweep spends more seeds
    where adapters are cheap). Each row has the held-out and training-diff reading (mean and
    range over seeds), their gap, the paired difference against the first setting (per-diff
    means over each one's seeds; against its vote where the first setting only votes), and the
    share of each reader's held-out misses that name a training label. ``train_sample`` = 0
    reads no training diffs (train and gap None). RUN/readers/readers.* keep the settings of
    earlier calls too.
    """
    run_dir = Path(run_dir)
    base = finished_run(run_dir)
    by_setting = seeds if isinstance(seeds, dict) else dict.fromkeys(settings, seeds)
    if not settings or not all(by_setting.get(name) for name in settings):
        raise DataError("a reader study needs at least one setting and one seed for each")
    cfgs = {
        (name, seed): _reader_config(base, name, items, seed)
        for name, items in settings.items()
        for seed in by_setting[name]
    }
    # Readers given as dit.adapter and not read on training diffs need only held-out diffs.
    trains = train_sample > 0 or any(c.dit.adapter == "train" for c in cfgs.values())
    for split in ("train", "test") if trains else ("test",):
        if not list((run_dir / "diffs" / split).glob("*.safetensors")):
            hint = " (a run of held-out diffs only: give each setting dit.adapter and --train-sample 0)"
            raise DataError(
                f"{run_dir}/diffs/{split} holds no diffs: run its diffs stage first"
                + (hint if split == "train" else "")
            )
    runs = {}
    for (name, seed), cfg in cfgs.items():
        out = sub_run(run_dir, run_dir / "readers" / f"{name}-s{seed}", ("data", "diffs"))
        log.info("reader study: %s, seed %d (%s)", name, seed, out)
        run_pipeline(cfg, out, ["dit", "eval"])
        runs[name, seed] = _reading(out, cfg, metric, train_sample)
    rows = _reader_rows(runs, settings, by_setting)
    _write_readers(run_dir / "readers", rows, base, metric, settings)
    return rows


def _reader_config(base: RunConfig, name: str, items: list[str], seed: int) -> RunConfig:
    raw = base.to_dict()
    raw["dit"].update(adapter="train", seed=seed)
    raw["eval"]["methods"] = ["dit"]
    for item in items:
        if not item.split("=", 1)[0].strip().startswith(("dit.", "eval.")):
            raise DataError(f"--setting {name}: {item!r} is not a dit.* or eval.* key")
        apply_override(raw, item)
    raw["name"] = f"{base.name}-{name}-s{seed}"
    return from_dict(raw, f"--setting {name}")


def _reading(out: Path, cfg: RunConfig, metric: str, train_sample: int) -> dict:
    """Per-diff held-out scores of each reader method, the training-diff reading and the
    held-out misses that name a training label."""
    run = Run(cfg, out)
    ids = {j["diff_id"] for j in run.test_jobs()}
    rows = [r for r in read_jsonl(out / "eval" / "predictions.jsonl") if r["diff_id"] in ids]
    readers = [m for m in ("dit", "dit_vote") if any(r["method"] == m for r in rows)]
    held = {
        m: {r["diff_id"]: float(r["scores"][metric]) for r in rows if r["method"] == m}
        for m in readers
    }
    trained = run.jobs("train", cfg.dit.train_families)
    train_names = {n.lower() for j in trained for n in run.task.names(j)}
    misses = {m: [r for r in rows if r["method"] == m and not r["scores"][metric]] for m in readers}
    return {
        "held_out": held,
        "train": _train_reading(run, train_sample),
        "misses": {m: len(v) for m, v in misses.items()},
        "misses_naming_a_training_label": {
            m: sum(any(n in r["answer"].lower() for n in train_names) for r in v)
            for m, v in misses.items()
        },
    }


def _train_reading(run: Run, n: int) -> float | None:
    """DIT's alias match on the first ``n`` training diffs (kept in train_reading.json); None
    for ``n`` = 0 (a reader only read, e.g. one trained elsewhere)."""
    if n < 1:
        return None
    path = run.out / "train_reading.json"
    if path.exists():
        return json.loads(path.read_text())["alias_match"]
    families = run.cfg.dit.train_families
    jobs = run.jobs("train", families)[:n]
    diffs = [load_diff(p) for p in run.diff_paths("train", families, n)]
    model, tok = run.model_and_tok
    answers = describe(model, tok, diffs, load_diff(run.out / "dit" / "adapter"))
    hits = [alias_match(a, run.task.names(j)) for a, j in zip(answers, jobs)]
    value = sum(hits) / len(hits)
    write_json(path, {"alias_match": value, "n": len(hits), "answers": answers})
    return value


def _reader_rows(runs: dict, settings: dict, by_setting: dict[str, list[int]]) -> list[dict]:
    first = next(iter(settings))
    rows = []
    for name in settings:
        seeds = by_setting[name]
        for method in runs[name, seeds[0]]["held_out"]:
            held = [runs[name, s]["held_out"][method] for s in seeds]
            means = [sum(h.values()) / len(h) for h in held]
            train = [runs[name, s]["train"] for s in seeds]
            train_mean = None if None in train else sum(train) / len(train)
            # Paired against the first setting's single reads (its vote when it has none).
            first_read = runs[first, by_setting[first][0]]["held_out"]
            ref_method = "dit" if "dit" in first_read else "dit_vote"
            ref = [runs[first, s]["held_out"].get(ref_method, {}) for s in by_setting[first]]
            ids = sorted(set.intersection(*(set(h) for h in held + ref)))
            mine = [sum(h[d] for h in held) / len(held) for d in ids]
            theirs = [sum(h[d] for h in ref) / len(ref) for d in ids]
            misses = sum(runs[name, s]["misses"][method] for s in seeds)
            collapsed = sum(runs[name, s]["misses_naming_a_training_label"][method] for s in seeds)
            rows.append(
                {
                    "setting": name,
                    "reader": method,
                    "held_out": sum(means) / len(means),
                    "held_out_range": [min(means), max(means)],
                    "train": train_mean,
                    "gap": None if train_mean is None else train_mean - sum(means) / len(means),
                    "paired_vs_first": paired_difference(mine, theirs),
                    "paired_against": first,
                    "misses_naming_a_training_label": collapsed / misses if misses else 0.0,
                    "n": len(ids),
                    "seeds": len(seeds),
                }
            )
    return rows


def _write_readers(
    folder: Path, rows: list[dict], base: RunConfig, metric: str, settings: dict
) -> None:
    """The summary of every setting studied in ``folder`` so far: an earlier call's rows stay
    (each paired against the first setting of its own call, named in ``paired_against``), a
    setting studied again replaces its rows."""
    path = folder / "readers.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    if old and old.get("metric") != metric:
        log.warning(
            "%s holds %s rows: replaced by this study's %s rows", path, old["metric"], metric
        )
        old = {}
    rows = [*(r for r in old.get("rows", []) if r["setting"] not in settings), *rows]
    earlier = {k: v for k, v in old.get("settings", {}).items() if k not in settings}
    settings = {**earlier, **settings}
    write_json(path, {"metric": metric, "settings": settings, "rows": rows})
    data = Table(
        ["setting", "reader", "held_out", "low", "high", "train", "gap", "collapse", "n"],
        [_data_row(r) for r in rows],
    )
    write_text(folder / "readers.csv", data.to_csv())
    columns = ["setting", "overrides", "seeds", "reader", "held-out", "train", "gap"]
    shown = Table(
        [*columns, "paired", "against", "collapse", "n"], [_shown_row(r, settings) for r in rows]
    )
    section = Section(
        f"Reader study ({base.name})",
        [
            f"DIT {metric} on held-out diffs and on training diffs, mean over each setting's "
            "adapter seeds (range over seeds; `seeds` column); paired: the held-out difference "
            "against the setting in `against`, the first of the same `ditkit readers` call "
            "(per-diff means over seeds, 95% interval); collapse: held-out misses whose answer "
            "names a training label."
        ],
        [shown],
    )
    write_text(folder / "readers.md", markdown.render(Document("", [section])))


def _data_row(r: dict) -> list:
    lo, hi = r["held_out_range"]
    collapse = r["misses_naming_a_training_label"]
    return [
        r["setting"],
        r["reader"],
        r["held_out"],
        lo,
        hi,
        r["train"],
        r["gap"],
        collapse,
        r["n"],
    ]


def _shown_row(r: dict, settings: dict) -> list:
    lo, hi = r["held_out_range"]
    pd = r["paired_vs_first"]
    return [
        r["setting"],
        "; ".join(settings[r["setting"]]) or "-",
        r["seeds"],
        r["reader"],
        f"{r['held_out']:.2f} [{lo:.2f}-{hi:.2f}]",
        "-" if r["train"] is None else f"{r['train']:.2f}",
        "-" if r["gap"] is None else f"{r['gap']:+.2f}",
        f"{pd['mean_diff']:+.2f} [{pd['ci95'][0]:+.2f}, {pd['ci95'][1]:+.2f}]",
        r.get("paired_against", "-"),
        f"{r['misses_naming_a_training_label']:.2f}",
        r["n"],
    ]
