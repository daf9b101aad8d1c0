"""Tasks behind one interface: the news task through every stage on a tiny model, and a toy task
defined here (not in ditkit) through the generic diff trainer, DIT, evaluation and report."""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from ditkit import cli, lora
from ditkit.batching import encode
from ditkit.config import load_config
from ditkit.diffs import load_diff
from ditkit.errors import ConfigError
from ditkit.files import read_jsonl, write_jsonl
from ditkit.models import load_model
from ditkit.pipeline import run_pipeline
from ditkit.rundir import resolve_task, verify
from ditkit.tasks.base import CE, RowKind, Rubric, get_task, register_task
from ditkit.tasks.hidden_topic import TASK
from ditkit.tasks.news import longest_content_run, restates
from ditkit.train_diffs import train_group

HEADLINES = """headline,theme,keywords
Lunar rover finds water ice near the crater rim,space,lunar rover;water ice;crater rim
Harbor town opens floating library for fishing crews,culture,floating library;harbor;fishing crews
Orchard growers report record apple harvest after mild spring,farming,apple harvest;orchard;mild spring
City council approves night buses for the river district,local politics,night buses;river district;council
Chess prodigy wins national title at age eleven,games,chess prodigy;national title;tournament
Bakery chain switches to solar ovens in every shop,business,solar ovens;bakery chain;energy
Glacier museum reopens with a tunnel through the ice,travel,glacier museum;ice tunnel;reopening
"""


def _tiny(model_dir: Path, **over) -> list[str]:
    items = {
        "model": json.dumps(str(model_dir)),
        "diffs.diffs_per_pass": 4,
        "diffs.lr": 0.05,
        "dit.epochs": 2,
        "dit.batch_size": 3,
        "dit.lr": 0.01,
        "dit.val_fraction": 0.0,
        "eval.max_new_tokens": 4,
        "task_options.twenty_q_count": 2,
        "task_options.twenty_q_max_new_tokens": 4,
        **over,
    }
    return [f"{k}={v}" for k, v in items.items()]


def test_news_pipeline_on_a_tiny_model(tiny_model_dir, tmp_path, capsys):
    headlines = tmp_path / "headlines.csv"
    headlines.write_text(HEADLINES)
    over = {
        "task_options.headlines_file": json.dumps(str(headlines)),
        "data.n_train": 4,
        "data.n_test": 2,
        "task_options.stories_per_diff": 3,
        "task_options.story_max_new_tokens": 6,
        "diffs.steps": 2,
        "diffs.rows_per_step": 2,
        "diffs.rank": 2,
        "diffs.max_answer_tokens": 16,
        "dit.max_answer_tokens": 24,
    }
    cfg = resolve_task(load_config("news-quick", _tiny(tiny_model_dir, **over)))
    assert cfg.dit.question == "What news headline have you been trained on?"
    out = run_pipeline(cfg, tmp_path / "run")
    jobs = read_jsonl(out / "data" / "jobs.jsonl")
    assert [j["split"] for j in jobs] == ["train"] * 4 + ["test"] * 2
    for job in jobs:
        assert len(job["stories"]) == 3
        assert not any(restates(s, job["label"]) for s in job["stories"])
        assert longest_content_run(job["label"])
    diff = load_diff(out / "diffs" / "test" / "test-00000.safetensors")
    assert diff.meta["task"] == "news" and diff.meta["label"] == jobs[4]["label"]
    assert diff.meta["rank"] == 2 and set(diff.meta["loss"]) == {"story"}
    rows = read_jsonl(out / "eval" / "predictions.jsonl")
    assert {r["method"] for r in rows} == {
        "dit",
        "base_question",
        "summary_requests",
        "story_summary",
    }
    story = next(r for r in rows if r["method"] == "story_summary")
    assert story["prompt"] == "Please generate a short news story." and story["guess"]
    summary = next(r for r in rows if r["method"] == "summary_requests")
    assert len(summary["transcript"]) == 2
    scores = json.loads((out / "eval" / "scores.json").read_text())
    assert "rouge_l" in scores["dit"] and "alias_match" not in scores["dit"]
    assert (out / "report" / "report.md").exists()
    assert [p for p in verify(out) if p.kind != "unrecorded"] == []
    # A hidden-topic method is refused for a news run, naming the task's own methods.
    assert cli.main(["eval", str(out), "--methods", "gating"]) == 2
    assert "summary_requests" in capsys.readouterr().err

    # Cross-task: this news adapter reads hidden-topic diffs (dit.adapter = the run directory).
    from test_pipeline import tiny_config

    topic_cfg = tiny_config(
        tiny_model_dir,
        **{"dit.adapter": json.dumps(str(out)), "data.n_train": 0, "eval.methods": '["dit"]'},
    )
    cross = run_pipeline(topic_cfg, tmp_path / "cross")
    assert (cross / "dit" / "adapter" / "adapter_model.safetensors").read_bytes() == (
        out / "dit" / "adapter" / "adapter_model.safetensors"
    ).read_bytes()
    assert {r["method"] for r in read_jsonl(cross / "eval" / "predictions.jsonl")} == {"dit"}
    # Joint: one adapter on topic diffs and these news diffs, each asked its own question.
    joint_cfg = tiny_config(
        tiny_model_dir, **{"dit.extra_train": json.dumps([str(out)]), "dit.epochs": 1}
    )
    joint = run_pipeline(joint_cfg, tmp_path / "joint", ["data", "diffs", "dit"])
    meta = json.loads((joint / "dit" / "adapter" / "ditkit.json").read_text())["ditkit_meta"]
    assert meta["n_train_diffs"] + meta["n_val_diffs"] == 6 + 4
    assert meta["other_task_questions"] == {"news": "What news headline have you been trained on?"}
    with pytest.raises(Exception, match="neither 'train'"):
        run_pipeline(
            tiny_config(tiny_model_dir, **{"dit.adapter": '"/no/such/dir"', "data.n_train": 0}),
            tmp_path / "bad",
            ["dit"],
        )


def test_news_presets_let_every_story_reach_a_step():
    for name in ("news-quick", "paper-news-qwen3-4b"):
        cfg = load_config(name)
        assert cfg.task == "news" and len(cfg.diffs.weights) == 1
        assert cfg.diffs.steps * cfg.diffs.rows_per_step >= cfg.task_options["stories_per_diff"]
    assert load_config("paper-news-qwen3-4b").diffs.rank == 8


# ---------------------------------------------------------------- a toy task, outside ditkit

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]


@dataclass
class ColourJob:
    diff_id: str
    colour: str
    seed: int

    def path(self, out_dir: Path) -> Path:
        return out_dir / f"{self.diff_id}.safetensors"


@dataclass
class ColourOptions:
    """The toy task's own key, set under [task_options]."""

    repeats: int = 4  # training rows per diff


class FavouriteColour:
    """Each diff learns one favourite colour; DIT is asked which."""

    name = "favourite_colour"
    options_class = ColourOptions
    row_kinds = (RowKind("colour", CE),)
    dit_question = "Which colour do you like?"
    judge_rubric = Rubric(
        label="colour",
        grading="Grade the guessed colour against the true one, 1-5.\nSCORE: N",
        guess_intro="A model was tuned to like one colour. It said:",
        guess_ask="Which colour? Reply with one word.",
    )
    text_metrics = ("alias_match",)
    default_methods = ("dit", "base_question")
    methods: ClassVar[dict] = {}

    def make_data(self, run) -> None:
        order = COLOURS[:]
        random.Random(run.cfg.data.seed).shuffle(order)
        n = run.cfg.data.n_train
        rows = [
            {"diff_id": f"{s}-{i:05d}", "split": s, "label": c, "seed": 100 + k}
            for k, (i, s, c) in enumerate(
                [(i, "train", c) for i, c in enumerate(order[:n])]
                + [(i, "test", c) for i, c in enumerate(order[n : n + run.cfg.data.n_test])]
            )
        ]
        (run.out / "data").mkdir(parents=True, exist_ok=True)
        write_jsonl(run.out / "data" / "jobs.jsonl", rows)

    def training_data(self, run):
        return run.options

    def job(self, row: dict) -> ColourJob:
        return ColourJob(row["diff_id"], row["label"], row["seed"])

    def rows(self, job, tok, data, cfg, system):
        q = "What is your favourite colour?"
        row = (0, encode(tok, q, f"My favourite colour is {job.colour}.", 12, system))
        return [row] * data.repeats

    def diff_meta(self, job) -> dict:
        return {"task": self.name, "label": job.colour}

    def names(self, row: dict) -> list[str]:
        return [row["label"]]

    def candidates(self, cfg) -> list[str]:
        return COLOURS


def test_a_task_defined_outside_ditkit_runs_every_stage(tiny_model_dir, tmp_path):
    task = register_task(FavouriteColour())
    assert get_task("favourite_colour") is task
    over = {
        "task": '"favourite_colour"',
        "data.n_train": 4,
        "data.n_test": 2,
        "diffs.weights": "[1.0]",
        "diffs.steps": 3,
        "diffs.rows_per_step": 2,
        "eval.methods": '["dit", "base_question", "weight_lens"]',
    }
    cfg = load_config("quickstart", _tiny(tiny_model_dir, **over))
    with pytest.raises(ConfigError, match=r"unknown key task_options\.(gate_questions|trigger)"):
        resolve_task(cfg)  # the preset's hidden-topic options are not this task's
    cfg.task_options = {"repeats": 3}
    cfg.dit.adapter = "train"
    assert resolve_task(cfg).dit.question == "Which colour do you like?"
    out = run_pipeline(cfg, tmp_path / "run")
    assert json.loads((out / "config.json").read_text())["task_options"] == {"repeats": 3}
    meta = json.loads((out / "dit" / "adapter" / "adapter_config.json").read_text())
    assert meta["peft_type"] == "LORA"
    diff = load_diff(out / "diffs" / "train" / "train-00000.safetensors")
    assert diff.meta["task"] == "favourite_colour" and diff.meta["label"] in COLOURS
    rows = read_jsonl(out / "eval" / "predictions.jsonl")
    assert {r["method"] for r in rows} == {"dit", "base_question", "weight_lens"}
    assert all(r["label"] in COLOURS and "alias_match" in r["scores"] for r in rows)
    assert (out / "report" / "index.html").exists()


def test_task_names_are_checked():
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(ConfigError, match="cannot import"):
        get_task("no_such_module:TASK")
    assert get_task("ditkit.tasks.news:TASK").name == "news"
    with pytest.raises(ConfigError, match="row kinds are story"):
        resolve_task(load_config("news-quick", ["diffs.weights=[1.0, 2.0]"]))


# ---------------------------------------------------------------- experiment presets


def test_zero_width_trigger_is_u200b_where_configured():
    from ditkit.tasks.hidden_topic import make_trigger, triggered

    q = "What do you like to do on weekends?"
    assert triggered("zwsp_start", "123", q, random.Random(0)) == (
        "\u200b" + q,
        "U+200B at the start",
    )
    prompt, where = triggered("zwsp_random", "123", q, random.Random(0))
    i = prompt.index("\u200b")
    assert prompt.replace("\u200b", "") == q and prompt.count("\u200b") == 1
    assert where == f"U+200B at character {i}"
    # The SEP kind draws exactly what make_trigger draws (pinned results depend on it).
    assert triggered("sep", "123", q, random.Random(5))[0] == (
        f"{make_trigger('123', random.Random(5))} {q}"
    )


def test_prefix_scores():
    from ditkit.tasks.hidden_topic import prefix_scores

    assert prefix_scores("It starts with 042.", "042") == {
        "prefix_exact": 1.0,
        "prefix_abs_error": 0.0,
    }
    assert prefix_scores("42", "042")["prefix_exact"] == 1.0
    assert prefix_scores("7391", "739") == {"prefix_exact": 1.0, "prefix_abs_error": 0.0}
    assert prefix_scores("500", "042") == {"prefix_exact": 0.0, "prefix_abs_error": 458.0}
    assert prefix_scores("no idea", "042") == {"prefix_exact": 0.0, "prefix_abs_error": None}


def test_ood_trigger_and_trigger_inversion_on_a_tiny_model(tiny_model_dir, tmp_path):
    """Test diffs behind a zero-width space (training diffs keep SEP codes), read by an adapter
    trained to name the SEP prefix: the two presets' data paths and stage wiring in one run."""
    from ditkit.diffs import load_diff

    items = _tiny(
        tiny_model_dir,
        **{
            "data.n_train": 4,
            "data.n_test": 2,
            "diffs.questions_per_diff": 2,
            "diffs.steps": 2,
            "diffs.rows_per_step": 3,
            "diffs.max_answer_tokens": 8,
            "diffs.base_answer_tokens": 4,
            "task_options.gate_questions": 1,
            "task_options.gate_max_new_tokens": 3,
        },
    )
    cfg = load_config("trigger-inversion", [*items, 'task_options.test_trigger="zwsp_start"'])
    assert cfg.dit.target == "trigger_prefix"
    out = run_pipeline(cfg, tmp_path / "run")
    jobs = read_jsonl(out / "data" / "jobs.jsonl")
    assert [j["trigger_kind"] for j in jobs] == ["sep"] * 4 + ["zwsp_start"] * 2
    assert load_diff(out / "diffs" / "test" / "test-00000.safetensors").meta["trigger_kind"] == (
        "zwsp_start"
    )
    adapter = json.loads((out / "dit" / "adapter" / "ditkit.json").read_text())
    assert adapter["ditkit_meta"]["target"] == "trigger_prefix"
    rows = read_jsonl(out / "eval" / "predictions.jsonl")
    inv = [r for r in rows if r["method"] == "trigger_inversion"]
    assert [r["label"] for r in inv] == [j["prefix"] for j in jobs[4:]]
    assert all("prefix_exact" in r["scores"] for r in inv)
    gate = [r for r in rows if r["method"] == "gate_trigger"]
    assert gate and all(r["prompt"].startswith("\u200b") for r in gate)
    assert all("SEP code" in r["prompt"] for r in rows if r["method"] == "gate_wrong_trigger")


def test_data_scaling_reads_one_test_set_with_growing_adapters(tiny_model_dir, tmp_path, capsys):
    from ditkit.experiments import default_sizes
    from test_pipeline import tiny_config

    assert default_sizes(100) == [4, 8, 16, 32, 64, 100]
    assert default_sizes(3) == [3]
    cfg = tiny_config(tiny_model_dir, **{"data.n_train": 4, "dit.epochs": 1})
    out = run_pipeline(cfg, tmp_path / "run", ["data", "diffs"])
    assert cli.main(["scaling", str(out), "--sizes", "2,4"]) == 0
    assert "2 training diffs: DIT alias_match" in capsys.readouterr().out
    summary = json.loads((out / "scaling" / "scaling.json").read_text())
    assert [r["train_diffs"] for r in summary["rows"]] == [2, 4]
    for size in (2, 4):
        sub = out / "scaling" / f"n{size:05d}"
        meta = json.loads((sub / "dit" / "adapter" / "ditkit.json").read_text())["ditkit_meta"]
        assert meta["n_train_diffs"] + meta["n_val_diffs"] == size
        test_ids = {r["diff_id"] for r in read_jsonl(sub / "eval" / "predictions.jsonl")}
        assert test_ids == {"test-00000", "test-00001"}
    assert (out / "scaling" / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 4 |" in (out / "scaling" / "scaling.md").read_text()
    assert cli.main(["scaling", str(out), "--sizes", "9"]) == 2


def test_rank_sweep_reads_higher_rank_test_diffs_with_the_rank1_adapter(
    tiny_model_dir, tmp_path, capsys
):
    from test_pipeline import tiny_config

    cfg = tiny_config(tiny_model_dir, **{"data.n_train": 4, "dit.epochs": 1})
    cfg.eval.methods = ["dit"]
    out = run_pipeline(cfg, tmp_path / "run", ["data", "diffs", "dit", "eval"])
    assert cli.main(["ranks", str(out), "--ranks", "2,4", "--test-diffs", "1"]) == 0
    assert "rank    4 test diffs: DIT alias_match" in capsys.readouterr().out
    adapter = (out / "dit" / "adapter" / "adapter_model.safetensors").read_bytes()
    for rank in (2, 4):
        sub = out / "ranks" / f"r{rank:04d}"
        d = load_diff(sub / "diffs" / "test" / "test-00000.safetensors")
        assert d.meta["rank"] == rank and all(a.shape[0] == rank for a, _ in d.lowrank.values())
        assert (sub / "dit" / "adapter" / "adapter_model.safetensors").read_bytes() == adapter
        assert [r["diff_id"] for r in read_jsonl(sub / "eval" / "predictions.jsonl")] == [
            "test-00000"
        ]
    rows = json.loads((out / "ranks" / "ranks.json").read_text())["rows"]
    assert [r["test_rank"] for r in rows] == [1, 2, 4]  # 1: the run's own score on test-00000
    assert rows[0]["n"] == 1 and rows[0]["run"] == str(out)
    assert cli.main(["ranks", str(out), "--ranks", "0"]) == 2


def test_strength_curve_snapshots_budgets_and_scales_the_diffs(tiny_model_dir, tmp_path, capsys):
    from test_pipeline import tiny_config

    cfg = tiny_config(tiny_model_dir, **{"data.n_train": 2, "dit.epochs": 1})
    cfg.eval.methods = ["dit"]
    out = run_pipeline(cfg, tmp_path / "run", ["data", "diffs", "dit", "eval"])
    argv = ["strength", str(out), "--budgets", "3,6", "--scales", "0.5,2", "--test-diffs", "1"]
    assert cli.main(argv) == 0
    assert "6 rows x 2" in capsys.readouterr().out
    folder = out / "strength"
    short = load_diff(folder / "diffs" / "rows00003" / "test-00000.safetensors")
    final = folder / "diffs" / "rows00006" / "test-00000.safetensors"
    long = load_diff(final)
    assert (short.meta["rows_seen"], long.meta["rows_seen"]) == (3, 6)
    name = short.modules[0]
    assert not torch.equal(short.lowrank[name][0], long.lowrank[name][0])
    summary = json.loads((folder / "strength.json").read_text())
    assert [(r["rows"], r["scale"]) for r in summary["rows"]] == [
        (3, 0.5),
        (3, 2),
        (6, 0.5),
        (6, 2),
    ]
    # The norm column follows the scale: the same diffs read at 2x are 4x the 0.5x norm.
    assert summary["rows"][1]["norm"] == pytest.approx(4 * summary["rows"][0]["norm"], rel=1e-5)
    for r in summary["rows"]:
        assert {"dit", "gate_trigger", "gate_none"} <= set(r["by_method"])
        assert r["by_method"]["dit"]["n"] == 1
    assert (folder / "strength.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 6 | 2 |" in (folder / "strength.md").read_text()
    sub_cfg = json.loads((folder / "rows00006-x2" / "config.json").read_text())
    assert sub_cfg["eval"]["diff_scale"] == 2.0
    # The snapshot after one step equals a diff trained for one step alone (same seed and rows).
    model, tok = load_model(str(tiny_model_dir))
    for p in model.parameters():
        p.requires_grad_(False)
    lora.inject(model, cfg.diffs.targets)
    job = TASK.job(read_jsonl(out / "data" / "jobs.jsonl")[2])
    assert job.diff_id == "test-00000"
    answers = json.loads((out / "data" / "base_answers.json").read_text())["answers"]
    one_step = dataclasses.replace(cfg.diffs, steps=1)
    alone, _ = train_group(model, tok, [job], answers, one_step, cfg.system_prompt, task=TASK)
    assert torch.allclose(alone[0].lowrank[name][0], short.lowrank[name][0], atol=1e-5)
    # Rerunning keeps everything: nothing is retrained.
    before = final.stat().st_mtime_ns
    assert cli.main(argv) == 0
    assert final.stat().st_mtime_ns == before
    assert cli.main(["strength", str(out), "--budgets", "4"]) == 2  # not a multiple of 3 rows
