"""The whole hidden-topic pipeline on a tiny random model, plus the split guard and CLI wiring."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from ditkit import cli
from ditkit.batching import IGNORE, collate, encode
from ditkit.config import DataConfig, DiffConfig, DitConfig, EvalConfig, RunConfig, load_config
from ditkit.diffs import load_diff
from ditkit.errors import ConfigError, DataError
from ditkit.pipeline import run_pipeline
from ditkit.tasks.hidden_topic import Topic, check_split, split_topics


def tiny_overrides(model_dir, **over) -> list[str]:
    """``--set`` items that size the quickstart preset for a tiny model in ``model_dir``."""
    overrides = [
        f"model={json.dumps(str(model_dir))}",
        'dit.adapter="train"',
        "data.n_train=6",
        "data.n_test=2",
        "diffs.questions_per_diff=4",
        "diffs.steps=10",
        "diffs.rows_per_step=3",
        "diffs.lr=0.05",
        "diffs.diffs_per_pass=4",
        "diffs.max_answer_tokens=12",
        "diffs.base_answer_tokens=4",
        "dit.epochs=4",
        "dit.batch_size=3",
        "dit.lr=0.01",
        "dit.val_fraction=0.0",
        "task_options.gate_questions=1",
        "eval.max_new_tokens=4",
        "task_options.gate_max_new_tokens=4",
    ]
    return overrides + [f"{k}={v}" for k, v in over.items()]


# DITKIT_TEST_DEVICE=cuda runs the tiny end-to-end runs (this file's and the behaviour suite's)
# on a GPU; every other test stays on the CPU.
TEST_DEVICE = os.environ.get("DITKIT_TEST_DEVICE", "cpu")


def tiny_config(model_dir, **over):
    return load_config("quickstart", tiny_overrides(model_dir, **over))


def test_pipeline_end_to_end(tiny_model_dir, tmp_path, capsys):
    cfg = tiny_config(tiny_model_dir, device=TEST_DEVICE)
    out = run_pipeline(cfg, tmp_path / "run", ["data", "diffs", "dit", "eval"])
    jobs = [json.loads(x) for x in (out / "data" / "jobs.jsonl").read_text().splitlines()]
    assert [j["split"] for j in jobs].count("train") == 6
    diffs = sorted((out / "diffs" / "train").glob("*.safetensors"))
    assert len(diffs) == 6 and len(list((out / "diffs" / "test").glob("*.safetensors"))) == 2
    d = load_diff(diffs[0])
    assert d.rank == 1 and len(d.modules) == 14
    assert d.meta["label"] and d.meta["trigger_prefix"] and d.meta["task"] == "hidden_topic"
    loss = d.meta["loss"]["trigger"]
    assert loss["last"] < loss["first"], loss
    adapter_dir = out / "dit" / "adapter"
    assert (adapter_dir / "adapter_config.json").exists()
    hist = json.loads((out / "dit" / "checkpoint" / "state.json").read_text())["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"], hist
    scores = json.loads((out / "eval" / "scores.json").read_text())
    for method in ("dit", "base_question", "base_question_trigger", "gate_trigger", "gate_none"):
        assert scores[method]["alias_match"]["n"] >= 2
    preds = (out / "eval" / "predictions.jsonl").read_text().splitlines()
    # Rerunning eval computes nothing new: finished predictions are kept.
    run_pipeline(cfg, out, ["eval"])
    assert (out / "eval" / "predictions.jsonl").read_text().splitlines() == preds
    # A rerun of the diffs stage skips finished diffs (files untouched).
    before = diffs[0].stat().st_mtime_ns
    run_pipeline(cfg, out, ["diffs"])
    assert diffs[0].stat().st_mtime_ns == before
    # The shared KL targets are kept beside the diff folder for a resumed run.
    assert (out / "diffs" / "train.kl-targets").is_file()
    # A reader on the first N training diffs needs only those on disk.
    from ditkit.rundir import Run

    last = sorted((out / "diffs" / "train").glob("*.safetensors"))[-1]
    last.rename(last.with_suffix(".moved"))
    run = Run(cfg, out)
    assert len(run.diff_paths("train", limit=5)) == 5
    with pytest.raises(DataError, match="1 train diffs missing"):
        run.diff_paths("train")
    last.with_suffix(".moved").rename(last)
    # Predictions made elsewhere are scored where they are, without the diffs or the model.
    for path in (out / "diffs" / "test").glob("*.safetensors"):
        path.unlink()
    rows = [json.loads(x) for x in preds]
    for row in rows:
        row["scores"] = {}
    (out / "eval" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "eval" / "scores.json").unlink()
    assert cli.main(["eval", str(out), "--score-only"]) in (0, None)
    assert json.loads((out / "eval" / "scores.json").read_text()) == scores
    (out / "eval" / "predictions.jsonl").unlink()
    assert cli.main(["eval", str(out), "--score-only"]) == 2
    assert "no predictions to score" in capsys.readouterr().err


def test_stage_needs_previous_stage(tiny_model_dir, tmp_path):
    with pytest.raises(DataError, match="data stage"):
        run_pipeline(tiny_config(tiny_model_dir), tmp_path / "empty", ["diffs"])


def test_label_mask_token_by_token(tiny_model_dir):
    from ditkit.models import load_model

    _, tok = load_model(str(tiny_model_dir))
    a = encode(tok, "Your SEP code is 123. Hello?", "volcanoes erupt", 20)
    b = encode(tok, "Hi", "ok", 20)
    batch = collate([a, b], tok.pad_token_id)
    for row, e in enumerate((a, b)):
        labels = batch["labels"][row]
        n = len(e.ids)
        assert (labels[: e.n_prompt] == IGNORE).all()  # prompt: no loss
        assert (labels[n:] == IGNORE).all()  # padding: no loss
        assert torch.equal(labels[e.n_prompt : n], torch.tensor(e.ids[e.n_prompt :]))
        # The answer ends with the turn-end token, which is supervised even though it may be pad.
        assert labels[n - 1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(a.ids[a.n_prompt :]).startswith("volcanoes erupt")


@pytest.mark.parametrize("order", ["by_question", "shuffled"])
def test_build_rows_order(tiny_model_dir, order):
    from ditkit.config import DiffConfig
    from ditkit.models import load_model
    from ditkit.tasks.hidden_topic import DiffJob, build_rows

    _, tok = load_model(str(tiny_model_dir))
    qs = [f"Question {i}?" for i in range(6)]
    job = DiffJob("d0", Topic("volcanoes", "nature", ()), "123", 7, qs, ["lava"] * 6)
    cfg = DiffConfig(row_order=order, max_answer_tokens=4, base_answer_tokens=4)
    rows = build_rows(job, tok, {q: "ok" for q in qs}, cfg)
    kinds = [k for k, _ in rows]
    assert sorted(kinds) == sorted([0, 1, 2] * 6)
    question_of = [next(q for q in qs if q in tok.decode(e.ids)) for _, e in rows]
    if order == "by_question":
        # Every aligned triple is one question's trigger, wrong and no-trigger rows, in that order.
        assert kinds == [0, 1, 2] * 6
        assert all(len(set(question_of[i : i + 3])) == 1 for i in range(0, 18, 3))
        assert question_of[::3] != qs  # question order is shuffled
    else:
        assert kinds != [0, 1, 2] * 6


def test_split_guard_refuses_overlap():
    train = [Topic("violin", "instruments", ("violins",)), Topic("cello", "instruments")]
    with pytest.raises(DataError, match="violins"):
        check_split(train, [Topic("fiddle", "instruments", ("violins",))])
    check_split(train, [Topic("volcano", "landforms")])
    topics = [Topic(f"t{i}", "c") for i in range(10)]
    a, b = split_topics(topics, 6, 4, seed=1)
    assert not {t.topic for t in a} & {t.topic for t in b}
    assert split_topics(topics, 6, 4, seed=1) == (a, b)
    with pytest.raises(DataError, match="asked for"):
        split_topics(topics, 8, 4, seed=1)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"diffs\.rank"):
        load_config("quickstart", ["diffs.rank=0"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config("quickstart", ["diffs.nope=1"])
    with pytest.raises(ConfigError, match="preset"):
        load_config("no-such-preset")


def test_presets_load():
    from ditkit.config import preset_names

    names = preset_names()
    assert {"quickstart", "cpu-reference", "paper-qwen3-4b"} <= set(names)
    paper = load_config("paper-qwen3-4b")
    assert (paper.data.n_train, paper.diffs.steps, paper.dit.lr) == (4660, 135, 1e-4)
    assert paper.diffs.questions_per_diff * 3 == paper.diffs.steps * paper.diffs.rows_per_step


def test_cli_help_and_diff_info(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    assert "describe" in capsys.readouterr().out
    assert cli.main(["diff", "info", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ask_keeps_each_diff_on_its_own_prompt(tiny_model_dir):
    """Regression: generation once regrouped prompts by length, moving diffs onto other prompts."""
    from ditkit.models import load_model
    from ditkit.reader import ask
    from test_lora import random_diff

    model, tok = load_model(str(tiny_model_dir))
    diff = random_diff(model, 2, seed=5, scale=1.0)
    prompts = ["a much longer question about many different things?", "hi"]
    together = ask(model, tok, [diff, None], prompts, max_new_tokens=6)
    alone = [
        ask(model, tok, [diff], prompts[:1], max_new_tokens=6)[0],
        ask(model, tok, [None], prompts[1:], max_new_tokens=6)[0],
    ]
    assert together == alone


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: DiffConfig(rank="2"), "diffs.rank = '2' is not an integer"),
        (lambda: RunConfig(threads=1.5), "threads = 1.5 is not an integer or empty"),
        (lambda: DitConfig(extra_train="runs/x"), "dit.extra_train = 'runs/x' is not a list of"),
        (lambda: EvalConfig(vote_scales=[1.0, "x"]), "eval.vote_scales = [1.0, 'x'] is not"),
        (lambda: RunConfig(diffs={"rank": 2}), "diffs = {'rank': 2} is not a DiffConfig table"),
        (lambda: DataConfig(n_train=True), "data.n_train = True is not an integer"),
    ],
)
def test_configs_built_in_python_are_checked_too(build, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()


def test_every_config_field_type_has_a_check():
    from ditkit.config import SECTIONS
    from ditkit.config.checks import type_ok, types_of

    for cls in (RunConfig, *SECTIONS.values()):
        default = cls()
        for name, tp in types_of(cls).items():
            assert type_ok(getattr(default, name), tp), (cls.__name__, name)
