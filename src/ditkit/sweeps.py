"""Experiments that sweep one setting over sub-runs of a finished run, sharing what they can.

Data scaling: one test set read by DIT adapters trained on 2^k training diffs. `data_scaling` takes a finished run (its data and diffs stages done; preset ``data-scaling``)
and, for every size, makes ``RUN/scaling/n{size}/``: a run directory that shares RUN's data and
diffs (symbolic links), trains an adapter on the first ``size`` training diffs
(``dit.max_train_diffs``) and evaluates it. Each size resumes like any run. The summary goes to
``RUN/scaling/scaling.json`` and ``.csv``, a plot of score against training diffs to
``scaling.png``, and a report section to ``scaling.md``.

Rank generalisation: `rank_sweep` reads test diffs of other ranks with RUN's adapter (trained on
RUN's, usually rank-1, diffs). For every rank it makes ``RUN/ranks/r{rank}/`` sharing RUN's data
and training diffs, trains fresh test diffs (same topics, triggers and rows; all, or the first N)
at that rank, and evaluates them with RUN's adapter; the summary, which starts with RUN's own
score on the same diffs, goes to ``RUN/ranks/ranks.{json,csv,png,md}``.
A rank as large as a layer's narrower side reaches every full fine-tune of that layer (though
parameterised as B A, not as W itself).

Diff strength: `strength_curve` asks whether DIT follows how strongly a diff carries its topic.
It trains RUN's test diffs once, up to the largest budget of rows, keeping a snapshot at every
smaller budget (``RUN/strength/diffs/rows{N}/``), then reads each budget at each read-time
multiplier (``eval.diff_scale``) in ``RUN/strength/rows{N}-x{scale}/``: the run's default methods
(hidden topics: DIT, the base question with and without the trigger, and the gating rates of
held-out questions with the diff's own code, a wrong code and none), one fixed adapter for all.
The summary goes to ``RUN/strength/strength.{json,csv,png,md}``.

Reader study: `reader_study` trains one adapter per (setting, seed) on RUN's training diffs (a
setting is a list of ``dit.*`` / ``eval.*`` overrides, e.g. scale augmentation, phrasings, rank,
weight decay, a read-time vote) in ``RUN/readers/{setting}-s{seed}/``, reads RUN's held-out diffs
(paired across settings) and a sample of its training diffs, and counts the held-out misses that
name a training label. Summary: ``RUN/readers/readers.{json,csv,md}``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from pathlib import Path

from .config import RunConfig, apply_override, from_dict
from .diffs import load_diff
from .errors import DataError
from .evaluate.methods import method_info, methods_for
from .evaluate.metrics import alias_match
from .evaluate.runner import summarize_metric
from .evaluate.stats import paired_difference
from .files import read_jsonl, write_bytes, write_json, write_jsonl, write_text
from .pipeline import run_pipeline
from .reader import describe
from .report import png, pyplot
from .rundir import Run
from .tasks.base import get_task
from .train_diffs import train_diffs

log = logging.getLogger(__name__)


def default_sizes(n_train: int) -> list[int]:
    """Powers of two up to ``n_train``, plus ``n_train`` itself."""
    sizes, k = [], 1
    while k < n_train:
        sizes.append(k)
        k *= 2
    return [*[s for s in sizes if s >= 4], n_train]


def data_scaling(
    run_dir: Path, sizes: list[int] | None = None, metric: str = "alias_match"
) -> list[dict]:
    """Train and evaluate one adapter per size on ``run_dir``'s diffs; returns the summary rows."""
    run_dir = Path(run_dir)
    base = _finished(run_dir)
    if base.dit.adapter != "train":
        raise DataError(f"{run_dir} reads a given adapter (dit.adapter); scaling trains its own")
    n_train = len(list((run_dir / "diffs" / "train").glob("*.safetensors")))
    if n_train == 0:
        raise DataError(f"{run_dir}/diffs/train holds no diffs: run its diffs stage first")
    sizes = sorted(set(sizes or default_sizes(n_train)))
    if sizes[-1] > n_train or sizes[0] < 1:
        raise DataError(f"sizes must be between 1 and the {n_train} training diffs of {run_dir}")
    rows = []
    for size in sizes:
        cfg = _with(base, f"n{size}", dit={"max_train_diffs": size})
        out = _sub_run(run_dir, run_dir / "scaling" / f"n{size:05d}", ("data", "diffs"))
        log.info("data scaling: adapter on %d training diffs (%s)", size, out)
        run_pipeline(cfg, out, ["dit", "eval"])
        rows.append({"train_diffs": size, **_dit_score(out, metric)})
    _write_summary(run_dir / "scaling", "scaling", rows, base, metric, "train_diffs")
    return rows


def rank_sweep(
    run_dir: Path, ranks: list[int], metric: str = "alias_match", test_diffs: int | None = None
) -> list[dict]:
    """Read test diffs trained at each of ``ranks`` with ``run_dir``'s adapter; summary rows.

    ``test_diffs`` keeps the first N test diffs (each rank retrains them, which dominates the
    cost). The first row is the run's own rank read on the same diffs, when its evaluation has it.
    """
    run_dir = Path(run_dir)
    base = _finished(run_dir)
    if not (run_dir / "dit" / "adapter").is_dir():
        raise DataError(f"{run_dir}/dit/adapter is missing: run its dit stage first")
    if not ranks or min(ranks) < 1:
        raise DataError("ranks must be >= 1, e.g. --ranks 2,4,8")
    if test_diffs is not None and test_diffs < 1:
        raise DataError(f"test_diffs must be >= 1, got {test_diffs}")
    jobs = Run(base, run_dir).jobs()
    test_ids = {j["diff_id"] for j in [j for j in jobs if j["split"] == "test"][:test_diffs]}
    kept = [j for j in jobs if j["split"] != "test" or j["diff_id"] in test_ids]
    own = _own_score(run_dir, test_ids, metric)
    rows = [{"test_rank": base.diffs.rank, **own}] if own else []
    for rank in sorted(set(ranks)):
        # Fewer diffs per pass at high rank: a pass holds diffs_per_pass x rank x (in + out)
        # trainable numbers per layer.
        per_pass = max(1, base.diffs.diffs_per_pass * base.diffs.rank // rank)
        cfg = _with(
            base,
            f"r{rank}",
            diffs={"rank": rank, "diffs_per_pass": per_pass},
            dit={"adapter": str(run_dir.resolve())},
        )
        out = _sub_run(run_dir, run_dir / "ranks" / f"r{rank:04d}", ("diffs/train",))
        _data_with_jobs(run_dir, out, kept)
        log.info("rank generalisation: test diffs of rank %d (%s)", rank, out)
        run_pipeline(cfg, out, ["diffs", "dit", "eval"])
        rows.append({"test_rank": rank, **_dit_score(out, metric)})
    _write_summary(run_dir / "ranks", "ranks", rows, base, metric, "test_rank")
    return rows


def _finished(run_dir: Path) -> RunConfig:
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise DataError(f"{cfg_path} is missing: run the data and diffs stages of {run_dir} first")
    return from_dict(json.loads(cfg_path.read_text()), cfg_path)


def _data_with_jobs(run_dir: Path, out: Path, jobs: list[dict]) -> None:
    """``out/data``: links to ``run_dir``'s data files, and ``jobs`` as its jobs.jsonl."""
    data = out / "data"
    if (data / "jobs.jsonl").exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    for src in (run_dir / "data").iterdir():
        if src.name != "jobs.jsonl" and not (data / src.name).exists():
            (data / src.name).symlink_to(src.resolve(), target_is_directory=src.is_dir())
    write_jsonl(data / "jobs.jsonl", jobs)


def _own_score(run_dir: Path, test_ids: set[str], metric: str) -> dict | None:
    """DIT's ``metric`` on ``test_ids`` from ``run_dir``'s own evaluation, or None."""
    path = run_dir / "eval" / "predictions.jsonl"
    if not path.exists():
        return None
    values = [
        float(r["scores"][metric])
        for r in read_jsonl(path)
        if r["method"] == "dit" and r["diff_id"] in test_ids and metric in (r.get("scores") or {})
    ]
    if not values:
        return None
    return {"metric": metric, **summarize_metric(metric, values), "run": str(run_dir)}


def _sub_run(run_dir: Path, out: Path, shared: tuple[str, ...]) -> Path:
    """``out`` with symbolic links to ``run_dir``'s ``shared`` folders."""
    for name in shared:
        link = out / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to((run_dir / name).resolve(), target_is_directory=True)
    return out


def _with(base: RunConfig, tag: str, **sections: dict) -> RunConfig:
    """``base`` with some keys of some sections changed; only DIT is evaluated."""
    changed = {k: dataclasses.replace(getattr(base, k), **v) for k, v in sections.items()}
    ev = dataclasses.replace(base.eval, methods=["dit"])
    return dataclasses.replace(base, name=f"{base.name}-{tag}", eval=ev, **changed)


def _dit_score(out: Path, metric: str) -> dict:
    scores = json.loads((out / "eval" / "scores.json").read_text())
    dit = scores.get("dit", {}).get(metric)
    if dit is None:
        raise DataError(f"{out}/eval/scores.json has no dit {metric}; choose another metric")
    return {"metric": metric, **dit, "run": str(out)}


_AXES = {"train_diffs": "training diffs", "test_rank": "rank of the test diffs"}


def _write_summary(
    folder: Path, stem: str, rows: list[dict], base: RunConfig, metric: str, x: str
) -> None:
    write_json(folder / f"{stem}.json", {"metric": metric, "rows": rows})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([x, "metric", "mean", "ci95_low", "ci95_high", "n"])
    for r in rows:
        w.writerow([r[x], metric, r["mean"], *r["ci95"], r["n"]])
    write_text(folder / f"{stem}.csv", buf.getvalue())
    write_bytes(folder / f"{stem}.png", _plot(rows, metric, base, x))
    what = {
        "train_diffs": (
            "Data scaling",
            "adapters trained on the first N training diffs of one run (`ditkit scaling`)",
        ),
        "test_rank": (
            "Rank generalisation",
            f"test diffs trained at each rank, read by the adapter trained on rank-"
            f"{base.diffs.rank} diffs (`ditkit ranks`)",
        ),
    }[x]
    lines = [
        f"## {what[0]} ({base.name})",
        "",
        f"DIT {metric} on {rows[0]['n']} held-out diffs; {what[1]}.",
        "",
        f"| {_AXES[x]} | DIT {metric} | 95% interval |",
        "|---|---|---|",
        *[f"| {r[x]} | {r['mean']:.2f} | [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] |" for r in rows],
        "",
        f"![score against {_AXES[x]}]({stem}.png)",
        "",
    ]
    write_text(folder / f"{stem}.md", "\n".join(lines))


def _plot(rows: list[dict], metric: str, base: RunConfig, x: str) -> bytes:

    plt = pyplot()
    xs = [r[x] for r in rows]
    y = [r["mean"] for r in rows]
    err = [[m - r["ci95"][0] for m, r in zip(y, rows)], [r["ci95"][1] - m for m, r in zip(y, rows)]]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.errorbar(xs, y, yerr=err, marker="o", capsize=3)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(_AXES[x])
    ax.set_ylabel(f"DIT {metric}")
    ax.set_title(f"{base.model}, {base.task}")
    ax.grid(alpha=0.3)
    return png(fig)


# ---------------------------------------------------------------- diff strength


def strength_curve(
    run_dir: Path,
    budgets: list[int],
    scales: list[float],
    adapter: str | None = None,
    test_diffs: int | None = None,
    metric: str = "alias_match",
) -> list[dict]:
    """Train ``run_dir``'s test diffs at every budget (rows seen) and read each at every scale.

    ``adapter`` reads every point ("shipped", an adapter folder or a run directory; default: the
    run's own). Returns one summary row per (budget, scale).
    """
    run_dir = Path(run_dir)
    base = _finished(run_dir)
    run = Run(base, run_dir)
    per_step = base.diffs.rows_per_step
    budgets, scales = sorted(set(budgets)), sorted(set(scales))
    if not budgets or any(b < per_step or b % per_step for b in budgets):
        raise DataError(
            f"budgets {budgets} must be multiples of diffs.rows_per_step = {per_step} "
            f"(rows seen per diff per step), e.g. --budgets {4 * per_step},{8 * per_step}"
        )
    if not scales or min(scales) <= 0:
        raise DataError(f"scales must be > 0 (1 = the diffs as trained), got {scales}")
    adapter = adapter or _own_adapter(run_dir, base)
    jobs = run.jobs("test")[:test_diffs]
    if not jobs:
        raise DataError(f"{run_dir}/data/jobs.jsonl has no test jobs: run its data stage first")
    folder = run_dir / "strength"
    steps = {b: b // per_step for b in budgets}
    folders = {b: folder / "diffs" / f"rows{b:05d}" for b in budgets}
    log.info("diff strength: %d test diffs trained up to %d rows", len(jobs), budgets[-1])
    model, tok = run.model_and_tok
    task = run.task
    train_diffs(
        model,
        tok,
        [task.job(r) for r in jobs],
        task.training_data(run),
        dataclasses.replace(base.diffs, steps=steps[budgets[-1]]),
        folders[budgets[-1]],
        base.system_prompt,
        task=task,
        snapshots={steps[b]: folders[b] for b in budgets[:-1]},
    )
    methods = list(dict.fromkeys(["dit", *task.default_methods]))
    rows = []
    for b in budgets:
        norm = _mean_norm(folders[b], jobs)
        for scale in scales:
            out = folder / f"rows{b:05d}-x{scale:g}"
            _data_with_jobs(run_dir, out, jobs)
            link = out / "diffs" / "test"
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(folders[b].resolve(), target_is_directory=True)
            cfg = dataclasses.replace(
                base,
                name=f"{base.name}-rows{b}-x{scale:g}",
                diffs=dataclasses.replace(base.diffs, steps=steps[b]),
                dit=dataclasses.replace(base.dit, adapter=adapter),
                eval=dataclasses.replace(base.eval, methods=methods, diff_scale=scale),
            )
            log.info("diff strength: %d rows, scale %g (%s)", b, scale, out)
            run_pipeline(cfg, out, ["dit", "eval"])
            scores = json.loads((out / "eval" / "scores.json").read_text())
            rates = {m: v[metric] for m, v in scores.items() if metric in v}
            rows.append(
                {
                    "rows": b,
                    "scale": scale,
                    "norm": norm * scale,
                    "metric": metric,
                    "by_method": rates,
                }
            )
    _write_strength(folder, rows, base, metric, len(jobs), adapter)
    return rows


def _own_adapter(run_dir: Path, base: RunConfig) -> str:
    if base.dit.adapter != "train":
        return base.dit.adapter
    if not (run_dir / "dit" / "adapter").is_dir():
        raise DataError(f"{run_dir}/dit/adapter is missing: run its dit stage, or pass --adapter")
    return str(run_dir.resolve())


def _mean_norm(folder: Path, jobs: list[dict]) -> float:
    """Mean over the diffs of each one's total Frobenius norm (all modules)."""
    totals = []
    for j in jobs:
        norms = load_diff(folder / f"{j['diff_id']}.safetensors").norms().values()
        totals.append(sum(v * v for v in norms) ** 0.5)
    return sum(totals) / len(totals)


def _write_strength(
    folder: Path, rows: list[dict], base: RunConfig, metric: str, n: int, adapter: str
) -> None:
    methods = list(dict.fromkeys(m for r in rows for m in r["by_method"]))
    info = method_info(methods_for(get_task(base.task)))
    write_json(
        folder / "strength.json",
        {"metric": metric, "n_diffs": n, "adapter": adapter, "methods": methods, "rows": rows},
    )
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["rows", "scale", "norm", "method", "metric", "mean", "ci95_low", "ci95_high", "n"])
    for r in rows:
        for m, v in r["by_method"].items():
            w.writerow([r["rows"], r["scale"], r["norm"], m, metric, v["mean"], *v["ci95"], v["n"]])
    write_text(folder / "strength.csv", buf.getvalue())
    write_bytes(folder / "strength.png", _strength_plot(rows, methods, metric, base))

    def cell(r: dict, m: str) -> str:
        v = r["by_method"].get(m)
        return f"{v['mean']:.2f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]" if v else "-"

    lines = [
        f"## Diff strength ({base.name})",
        "",
        f"{metric} on {n} held-out diffs, each trained once up to {rows[-1]['rows']} rows with "
        "snapshots at the smaller budgets, and read with every diff multiplied by a constant "
        f"(scale). One adapter reads every point: `{adapter}`. Norm: mean total Frobenius norm "
        "of the diffs times the scale. The columns:",
        "",
        *[
            f"- `{m}`: {info[m].label} ({info[m].role}): {info[m].about}"
            for m in methods
            if m in info
        ],
        "",
        f"| rows | scale | norm | {' | '.join(methods)} |",
        "|---|---|---|" + "---|" * len(methods),
        *[
            f"| {r['rows']} | {r['scale']:g} | {r['norm']:.3g} | "
            + " | ".join(cell(r, m) for m in methods)
            + " |"
            for r in rows
        ],
        "",
        "![rates against training rows and scale](strength.png)",
        "",
    ]
    write_text(folder / "strength.md", "\n".join(lines))


def _strength_plot(rows: list[dict], methods: list[str], metric: str, base: RunConfig) -> bytes:
    """Left: each method against rows seen, at scale 1 (or the scale nearest 1). Right: DIT
    against how often the diffed model names its topic behind its own trigger, every point."""

    plt = pyplot()
    one = min({r["scale"] for r in rows}, key=lambda s: abs(s - 1.0))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for m in methods:
        pts = [r for r in rows if r["scale"] == one and m in r["by_method"]]
        if pts:
            left.plot(
                [r["rows"] for r in pts], [r["by_method"][m]["mean"] for r in pts], "o-", label=m
            )
    left.set_xscale("log", base=2)
    left.set_xlabel(f"rows seen per diff (scale {one:g})")
    left.set_ylabel(metric)
    left.set_ylim(-0.02, 1.02)
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    info = method_info(methods_for(get_task(base.task)))
    # The first diff check (hidden topics: the own trigger) against DIT.
    gate = next((m for m in info if m in methods and info[m].role == "diff_check"), None)
    if gate and "dit" in methods:
        pts = [r for r in rows if gate in r["by_method"] and "dit" in r["by_method"]]
        xs = [r["by_method"][gate]["mean"] for r in pts]
        ys = [r["by_method"]["dit"]["mean"] for r in pts]
        right.scatter(xs, ys)
        for r, x, y in zip(pts, xs, ys):
            right.annotate(f"{r['rows']}x{r['scale']:g}", (x, y), fontsize=7)
        right.plot([0, 1], [0, 1], ":", color="grey")
        right.set_xlabel(f"{info[gate].label} ({metric})")
        right.set_ylabel(f"dit {metric}")
        right.set_xlim(-0.02, 1.02)
        right.set_ylim(-0.02, 1.02)
        right.grid(alpha=0.3)
    fig.suptitle(f"{base.model}, {base.task}: diff strength")
    return png(fig)


# ---------------------------------------------------------------- reader study


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
    means over each one's seeds), and the share of held-out misses that name a training label.
    """
    run_dir = Path(run_dir)
    base = _finished(run_dir)
    for split in ("train", "test"):
        if not list((run_dir / "diffs" / split).glob("*.safetensors")):
            raise DataError(f"{run_dir}/diffs/{split} holds no diffs: run its diffs stage first")
    by_setting = seeds if isinstance(seeds, dict) else dict.fromkeys(settings, seeds)
    if not settings or not all(by_setting.get(name) for name in settings):
        raise DataError("a reader study needs at least one setting and one seed for each")
    runs = {}
    for name, items in settings.items():
        for seed in by_setting[name]:
            out = _sub_run(run_dir, run_dir / "readers" / f"{name}-s{seed}", ("data", "diffs"))
            cfg = _reader_config(base, name, items, seed)
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
    rows = read_jsonl(out / "eval" / "predictions.jsonl")
    readers = [m for m in ("dit", "dit_vote") if any(r["method"] == m for r in rows)]
    held = {
        m: {r["diff_id"]: float(r["scores"][metric]) for r in rows if r["method"] == m}
        for m in readers
    }
    train_names = {n.lower() for j in run.jobs("train") for n in run.task.names(j)}
    misses = [r for r in rows if r["method"] == "dit" and not r["scores"][metric]]
    collapsed = [r for r in misses if any(n in r["answer"].lower() for n in train_names)]
    return {
        "held_out": held,
        "train": _train_reading(run, train_sample),
        "misses": len(misses),
        "misses_naming_a_training_label": len(collapsed),
    }


def _train_reading(run: Run, n: int) -> float:
    """DIT's alias match on the first ``n`` training diffs (kept in train_reading.json)."""
    path = run.out / "train_reading.json"
    if path.exists():
        return json.loads(path.read_text())["alias_match"]
    jobs = run.jobs("train")[:n]
    diffs = [load_diff(p) for p in run.diff_paths("train")[:n]]
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
            ref = [runs[first, s]["held_out"].get("dit", {}) for s in by_setting[first]]
            ids = sorted(set.intersection(*(set(h) for h in held + ref)))
            mine = [sum(h[d] for h in held) / len(held) for d in ids]
            theirs = [sum(h[d] for h in ref) / len(ref) for d in ids]
            misses = sum(runs[name, s]["misses"] for s in seeds)
            collapsed = sum(runs[name, s]["misses_naming_a_training_label"] for s in seeds)
            rows.append(
                {
                    "setting": name,
                    "reader": method,
                    "held_out": sum(means) / len(means),
                    "held_out_range": [min(means), max(means)],
                    "train": sum(train) / len(train),
                    "gap": sum(train) / len(train) - sum(means) / len(means),
                    "paired_vs_first": paired_difference(mine, theirs),
                    "misses_naming_a_training_label": collapsed / misses if misses else 0.0,
                    "n": len(ids),
                    "seeds": len(seeds),
                }
            )
    return rows


def _write_readers(
    folder: Path, rows: list[dict], base: RunConfig, metric: str, settings: dict
) -> None:
    write_json(folder / "readers.json", {"metric": metric, "settings": settings, "rows": rows})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["setting", "reader", "held_out", "low", "high", "train", "gap", "collapse", "n"])
    for r in rows:
        w.writerow(
            [
                r["setting"],
                r["reader"],
                r["held_out"],
                *r["held_out_range"],
                r["train"],
                r["gap"],
                r["misses_naming_a_training_label"],
                r["n"],
            ]
        )
    write_text(folder / "readers.csv", buf.getvalue())
    first = next(iter(settings))
    lines = [
        f"## Reader study ({base.name})",
        "",
        f"DIT {metric} on {rows[0]['n']} held-out diffs and on training diffs, mean over "
        "each setting's adapter seeds (range over seeds; `seeds` column); paired: the held-out difference against "
        f"`{first}` (per-diff means over seeds, 95% interval); collapse: held-out misses whose "
        "answer names a training label.",
        "",
        "| setting | overrides | seeds | reader | held-out | train | gap | paired vs first | collapse |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["held_out_range"]
        pd = r["paired_vs_first"]
        lines.append(
            f"| {r['setting']} | {'; '.join(settings[r['setting']]) or '-'} | {r['seeds']} | "
            f"{r['reader']} | "
            f"{r['held_out']:.2f} [{lo:.2f}-{hi:.2f}] | {r['train']:.2f} | {r['gap']:+.2f} | "
            f"{pd['mean_diff']:+.2f} [{pd['ci95'][0]:+.2f}, {pd['ci95'][1]:+.2f}] | "
            f"{r['misses_naming_a_training_label']:.2f} |"
        )
    write_text(folder / "readers.md", "\n".join([*lines, ""]))
