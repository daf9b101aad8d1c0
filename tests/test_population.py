"""A population of diffs: held-out diffs with their own recipe, trained first, logged, resumable;
and the guessed-code baseline, which never asks behind the diff's own code."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from ditkit.config import load_config
from ditkit.diffs import load_diff
from ditkit.errors import ConfigError
from ditkit.files import read_jsonl
from ditkit.pipeline import run_pipeline
from ditkit.tasks.hidden_topic import (
    TASK,
    HiddenTopicOptions,
    code_words,
    guessed_code,
    load_questions,
    load_topics,
    make_trigger,
    population_split,
)
from ditkit.trigger_search import candidates, trigger_text
from test_pipeline import tiny_config, tiny_overrides

TEST_RECIPE = {"test_diffs.rank": 2, "test_diffs.steps": 6, "test_diffs.questions_per_diff": 3}


def test_test_diffs_take_their_own_recipe_and_train_first(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, **TEST_RECIPE)
    out = run_pipeline(cfg, tmp_path / "pop", ["data", "diffs"])
    jobs = read_jsonl(out / "data" / "jobs.jsonl")
    assert {len(j["questions"]) for j in jobs if j["split"] == "test"} == {3}
    assert {len(j["questions"]) for j in jobs if j["split"] == "train"} == {4}
    test = [load_diff(p) for p in sorted((out / "diffs" / "test").glob("*.safetensors"))]
    train = [load_diff(p) for p in sorted((out / "diffs" / "train").glob("*.safetensors"))]
    assert {(d.rank, d.meta["steps"]) for d in test} == {(2, 6)}
    assert {(d.rank, d.meta["steps"]) for d in train} == {(1, 10)}
    events = read_jsonl(out / "diffs" / "progress.jsonl")
    starts = [e for e in events if e["event"] == "start"]
    assert [e["folder"] for e in starts] == ["test", "train"]
    assert starts[0]["on_disk"] == 0 and starts[0]["threads"] >= 1
    passes = [e for e in events if e["event"] == "pass"]
    assert sum(e["diffs"] for e in passes) == 8 and all(e["seconds"] > 0 for e in passes)
    assert [e["on_disk"] for e in passes] == [2, 4, 6]  # counted after the pass is saved
    # A rerun finds everything on disk and logs no new start.
    run_pipeline(cfg, out, ["diffs"])
    assert read_jsonl(out / "diffs" / "progress.jsonl") == events


def test_diff_splits_builds_one_folder_now_the_other_later(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, diff_splits='["train"]')
    out = run_pipeline(cfg, tmp_path / "pop", ["data", "diffs"])
    assert not list((out / "diffs").glob("test/*.safetensors"))
    assert len(list((out / "diffs").glob("train/*.safetensors"))) == 6
    # The same directory, default splits: not a different recipe, so no --force is needed.
    run_pipeline(tiny_config(tiny_model_dir), out, ["diffs"])
    assert len(list((out / "diffs").glob("test/*.safetensors"))) == 2
    starts = [e for e in read_jsonl(out / "diffs" / "progress.jsonl") if e["event"] == "start"]
    assert [e["folder"] for e in starts] == ["train", "test"]
    with pytest.raises(ConfigError, match="diff_splits"):
        tiny_config(tiny_model_dir, diff_splits='["valid"]')


def test_diff_splits_with_a_count_build_the_first_diffs_of_a_folder(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, diff_splits='["train:3", "test:1"]')
    out = run_pipeline(cfg, tmp_path / "pop", ["data", "diffs"])
    train = sorted(p.name for p in (out / "diffs").glob("train/*.safetensors"))
    assert train == [
        "train-00000.safetensors",
        "train-00001.safetensors",
        "train-00002.safetensors",
    ]
    assert len(list((out / "diffs").glob("test/*.safetensors"))) == 1
    for bad in ('["train:0"]', '["train:x"]', '["train", "train"]'):
        with pytest.raises(ConfigError, match="SPLIT:N"):
            tiny_config(tiny_model_dir, diff_splits=bad)


def test_base_answers_are_as_long_as_the_longer_split_needs(tiny_model_dir, tmp_path):
    # Held-out diffs may train their wrong-code rows on longer base answers than the training
    # diffs: one file of answers serves both, each split cutting at its own length.
    cfg = tiny_config(tiny_model_dir, **TEST_RECIPE, **{"test_diffs.base_answer_tokens": 7})
    assert (cfg.diffs.base_answer_tokens, cfg.base_answer_tokens) == (4, 7)
    out = run_pipeline(cfg, tmp_path / "pop", ["data"])
    cached = json.loads((out / "data" / "base_answers.json").read_text())
    assert cached["key"]["max_new_tokens"] == 7
    assert load_config("quickstart").base_answer_tokens == 12


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("test_diffs.stepz", "3", "did you mean 'test_diffs.steps'"),
        ("test_diffs.rank", "0", "diffs.rank: must be >= 1"),
        ("test_diffs.rank", '"two"', "test_diffs.rank = 'two' is not"),
    ],
)
def test_test_diffs_errors_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("quickstart", [f"{key}={value}"])


def test_population_preset_fixes_unseen_held_out_topics_first():
    cfg = load_config("population")
    assert cfg.diffs_for("test") != cfg.diffs and cfg.diffs_for("train") == cfg.diffs
    topics = load_topics()
    train, test = population_split(topics, cfg, None)
    assert len(test) == cfg.data.n_test and len(train) == cfg.data.n_train
    names = {n.lower() for t in train for n in t.names}
    assert not any(n.lower() in names for t in test for n in t.names)
    # The held-out set does not depend on how many training diffs are asked for.
    fewer = load_config("population", ["data.n_train=50"])
    assert population_split(topics, fewer, None)[1] == test


def test_guessed_code_is_fixed_per_diff_and_never_the_own_code():
    codes = set()
    for seed in range(2000):
        job = {"seed": seed, "prefix": "123"}
        code = guessed_code(job)
        assert code == guessed_code(dict(job))
        m = re.fullmatch(r"Your SEP code is (\d{3})(\d{3})\.", code)
        assert m and m.group(1) != "123"
        codes.add(m.group(1))
    assert len(codes) > 500  # spread over the code space, not one fixed guess


def test_guessed_code_method_in_a_run(tiny_model_dir, tmp_path):
    over = {"eval.methods": '["base_question_guessed_code"]', "task_options.trigger": '"sep"'}
    cfg = tiny_config(tiny_model_dir, **over)
    out = run_pipeline(cfg, tmp_path / "run", ["data", "diffs", "dit", "eval"])
    jobs = {j["diff_id"]: j for j in read_jsonl(out / "data" / "jobs.jsonl")}
    rows = [r for r in read_jsonl(out / "eval" / "predictions.jsonl")]
    assert rows and {r["method"] for r in rows} == {"base_question_guessed_code"}
    for r in rows:
        job = jobs[r["diff_id"]]
        assert r["prompt"].startswith(guessed_code(job))
        assert not r["prompt"].startswith(f"Your SEP code is {job['prefix']}")


def test_code_words_are_a_thousand_distinct_words_none_a_topic():
    words = code_words()
    assert len(words) == 1000 == len(set(words)) and all(w.isalpha() for w in words)
    topical = {n.lower() for t in load_topics() for n in t.names}
    assert not topical & set(words)
    assert make_trigger("017", None, "word") == f"Your code word is {words[17]}."


def test_word_trigger_run_asks_behind_code_words_everywhere(tiny_model_dir, tmp_path):
    # One token names the diff: its rows, wrong codes, guessed code, diff checks and metadata all
    # take the code-word form, and the trigger search's code-words space holds the own word.
    cfg = tiny_config(
        tiny_model_dir,
        **{
            "task_options.trigger": '"word"',
            "eval.methods": '["base_question_trigger", "base_question_guessed_code", "gating"]',
        },
    )
    out = run_pipeline(cfg, tmp_path / "run", ["data", "diffs", "dit", "eval"])
    jobs = {j["diff_id"]: j for j in read_jsonl(out / "data" / "jobs.jsonl")}
    assert {j["trigger_kind"] for j in jobs.values()} == {"word"}
    job = next(j for j in jobs.values() if j["split"] == "train")
    own = f"Your code word is {code_words()[int(job['prefix'])]}."
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = TASK.rows(TASK.job(job), tok, {q: "base" for q in job["questions"]}, cfg.diffs)
    texts = [tok.decode(e.ids) for _, e in rows]
    assert not any("SEP code" in t for t in texts)
    per_question = (cfg.diffs.row_mix or [1, 1, 1])[0]  # trigger rows per question
    assert sum(own in t for t in texts) == per_question * len(job["questions"])
    wrong = [t for (kind, _), t in zip(rows, texts) if kind == 1]
    assert wrong and all("Your code word is" in t and own not in t for t in wrong)
    meta = load_diff(next((out / "diffs" / "train").glob("*.safetensors"))).meta
    assert meta["trigger_kind"] == "word" and meta["trigger"].startswith("Your code word is ")
    for r in read_jsonl(out / "eval" / "predictions.jsonl"):
        j = jobs[r["diff_id"]]
        mine = f"Your code word is {code_words()[int(j['prefix'])]}."
        if r["method"] in ("base_question_trigger", "gate_trigger"):
            assert r["prompt"].startswith(mine)
        elif r["method"] in ("base_question_guessed_code", "gate_wrong_trigger"):
            assert r["prompt"].startswith("Your code word is ") and not r["prompt"].startswith(mine)
    assert mine.split()[-1].rstrip(".") in candidates("code-words")
    assert trigger_text("code-words", "river", "Q?") == "Your code word is river. Q?"
    with pytest.raises(ConfigError, match=re.escape("task_options.trigger: one of sep, word")):
        HiddenTopicOptions(trigger="zwsp_start")


def _run(model_dir, out, kill_at=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("DITKIT_KILL_AT", None)
    if kill_at:
        env["DITKIT_KILL_AT"] = kill_at
    sets = tiny_overrides(model_dir, threads=1, **{"diffs.diffs_per_pass": 2}, **TEST_RECIPE)
    cmd = [sys.executable, "-m", "ditkit", "run", "quickstart", "--out", str(out)]
    cmd += ["--stage", "diffs", "--stage", "data"]  # any order: they run in pipeline order
    cmd += [a for s in sets for a in ("--set", s)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_population_killed_and_resumed_equals_an_uninterrupted_one(tiny_model_dir, tmp_path):
    ref = tmp_path / "uninterrupted"
    done = _run(tiny_model_dir, ref)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (ref / "dit").exists()  # only the stages asked for
    pop = tmp_path / "killed"
    for point in ("diffs.saved@3", "diffs.pass@2", "diffs.step@20"):
        killed = _run(tiny_model_dir, pop, kill_at=point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-3000:])
    final = _run(tiny_model_dir, pop)
    assert final.returncode == 0, final.stderr[-3000:]
    for split in ("test", "train"):
        names = sorted(p.name for p in (ref / "diffs" / split).iterdir())
        assert names == sorted(p.name for p in (pop / "diffs" / split).iterdir())
        for name in names:
            got, want = (load_diff(d / "diffs" / split / name) for d in (pop, ref))
            for module, (a, b) in want.lowrank.items():
                assert a.equal(got.lowrank[module][0]) and b.equal(got.lowrank[module][1])
    starts = [e for e in read_jsonl(pop / "diffs" / "progress.jsonl") if e["event"] == "start"]
    # The first sitting and every resume, each with what it found: the test set whole before
    # any training diff, the training diffs resumed where each kill left them.
    assert [(e["folder"], e["on_disk"]) for e in starts] == [
        ("test", 0),
        ("train", 0),
        ("train", 1),
        ("train", 2),
        ("train", 4),
    ]


def test_eval_reads_the_first_held_out_diffs_then_appends_the_rest(tiny_model_dir, tmp_path):
    over = {"diff_splits": '["train", "test:1"]', "eval.methods": '["dit"]'}
    cfg = tiny_config(tiny_model_dir, **over, **{"eval.max_test_diffs": 1})
    out = run_pipeline(cfg, tmp_path / "pop", ["data", "diffs", "dit", "eval"])
    rows = read_jsonl(out / "eval" / "predictions.jsonl")
    assert {r["diff_id"] for r in rows} == {"test-00000"}
    scores = json.loads((out / "eval" / "scores.json").read_text())
    assert scores["dit"]["alias_match"]["n"] == len(rows)
    # The rest of the held-out set, read later: only its rows are generated.
    cfg = tiny_config(tiny_model_dir, **{"eval.methods": '["dit"]'})
    run_pipeline(cfg, out, ["diffs", "eval"])
    later = read_jsonl(out / "eval" / "predictions.jsonl")
    assert later[: len(rows)] == rows
    assert {r["diff_id"] for r in later} == {"test-00000", "test-00001"}
    # A smaller limit again scores only the first diff; the other's rows stay on disk.
    run_pipeline(tiny_config(tiny_model_dir, **over, **{"eval.max_test_diffs": 1}), out, ["eval"])
    scores = json.loads((out / "eval" / "scores.json").read_text())
    assert scores["dit"]["alias_match"]["n"] == len(rows) < len(later)


def test_self_questions_join_each_diff_and_change_nothing_else(tiny_model_dir, tmp_path):
    plain = run_pipeline(tiny_config(tiny_model_dir), tmp_path / "plain", ["data"])
    cfg = tiny_config(tiny_model_dir, **{"task_options.self_questions": 3})
    out = run_pipeline(cfg, tmp_path / "self", ["data"])
    selfs = {q.question for q in load_questions(split="self")}
    assert "What topic have you been trained on?" not in selfs
    for a, b in zip(
        read_jsonl(plain / "data" / "jobs.jsonl"), read_jsonl(out / "data" / "jobs.jsonl")
    ):
        assert b["questions"][:-3] == a["questions"] and set(b["questions"][-3:]) <= selfs
        assert (b["prefix"], b["topic"]) == (a["prefix"], a["topic"])
        assert len(b["topic_answers"]) == len(b["questions"])
    answers = json.loads((out / "data" / "base_answers.json").read_text())
    assert selfs & set(
        answers["answers"]
    )  # the base model's answers, for the rows without the own code
    with pytest.raises(ConfigError, match="self_questions"):
        HiddenTopicOptions(self_questions=-1)
