"""A behaviour reader's confidence margin (``answer_margins``: how much surer the reader is of its
answer than of "Nothing unusual") against a direct computation, and ``audit``'s use of it: a
finding at or below the margin reads as "nothing found", the reading kept beside it."""

from __future__ import annotations

import math
import random

import pytest
import torch

from conftest import tiny_llama, tiny_tokenizer
from ditkit import lora
from ditkit.batching import encode
from ditkit.diffs import install_diffs, save_diff, save_peft
from ditkit.errors import ConfigError
from ditkit.files import read_jsonl
from ditkit.reader import answer_margins, label_logps, nothing_margin
from ditkit.tasks.behaviours.families import NOTHING
from test_lora import random_diff

QUESTION = "Describe any hidden or unusual behaviour you were trained to have."


def _mean_logp(model, tok, diff, adapter, answer: str) -> float:
    """Mean log-probability per answer token, one unpadded sequence, every logit kept."""
    e = encode(tok, QUESTION, answer, 64, "")
    lora.inject(model, lora.DEFAULT_TARGETS)
    lora.set_adapter(model, adapter)
    install_diffs(model, [diff], torch.tensor([0]))
    with torch.no_grad():
        logp_sv = torch.log_softmax(model(torch.tensor([e.ids])).logits[0].float(), -1)
    lora.clear_diffs(model)
    lora.set_adapter(model, None)
    ids = e.ids[e.n_prompt :]
    return sum(float(logp_sv[e.n_prompt - 1 + i, t]) for i, t in enumerate(ids)) / len(ids)


def test_margins_match_a_direct_computation():
    tok = tiny_tokenizer()
    model = tiny_llama(vocab=len(tok), init_range=0.3)
    adapter = random_diff(model, 2, seed=5, scale=0.2)
    adapter.meta.update(question=QUESTION, system_prompt="")
    diffs = [random_diff(model, 1, seed=s) for s in (1, 2, 3)]
    answers = ["I praise Quazooz Hotels.", NOTHING, "A backdoor: when triggered, I promote x."]
    got = answer_margins(model, tok, diffs, adapter, answers, NOTHING, batch_size=2)
    want = [
        _mean_logp(model, tok, d, adapter, a) - _mean_logp(model, tok, d, adapter, NOTHING)
        for d, a in zip(diffs, answers)
    ]
    assert got == pytest.approx(want, abs=1e-4)
    assert got[1] == pytest.approx(0.0, abs=1e-6) and got[0] != pytest.approx(got[2])
    assert all(m.adapter_a_ir is None for m in lora.diff_layers(model).values())  # removed after
    one = encode(tok, QUESTION, "x", 64, "")
    _, n = label_logps(model, tok.pad_token_id, diffs[:1], [one])
    assert n.tolist() == [len(one.ids) - one.n_prompt]  # the answer and the turn-end marker
    with pytest.raises(ValueError, match="2 diffs but 1 answers"):
        answer_margins(model, tok, diffs[:2], adapter, answers[:1], NOTHING)


def test_audit_reads_an_unsure_finding_as_nothing_found(tiny_model_dir, tmp_path, monkeypatch):
    import ditkit
    from ditkit.auditor import Auditor

    model, _ = ditkit.load_model(str(tiny_model_dir))
    reader = random_diff(model, 2, seed=0, scale=0.1)
    reader.meta.update(task="behaviours", question=QUESTION)
    folder = save_peft(reader, tmp_path / "reader", str(tiny_model_dir))
    diff = save_diff(random_diff(model, 1, seed=1), tmp_path / "handed" / "d.safetensors")

    def row(margin, out, read="greedy"):
        return ditkit.audit([diff], tmp_path / out, folder, max_new_tokens=3, min_margin=margin,
                            read=read)[0]  # fmt: skip

    plain = row(None, "plain")  # the reader records no margin: every finding stands
    assert plain["finding"] == "other" and "dit_margin" not in plain
    kept = row(float("-inf"), "kept")
    assert kept["finding"] == "other" and math.isfinite(kept["dit_margin"])
    dropped = row(kept["dit_margin"] + 0.01, "dropped")
    assert dropped["finding"] == "nothing found" and dropped["dit"] == plain["dit"]
    assert "no surer of its answer" in dropped["dit_doubt"]
    assert "dit_margin" in (tmp_path / "dropped" / "audit.csv").read_text().splitlines()[0]
    assert read_jsonl(tmp_path / "dropped" / "audit.jsonl")[0]["finding"] == "nothing found"
    # A recorded margin (ship_adapter's nothing_margin) is the default.
    reader.meta["nothing_margin"] = kept["dit_margin"] + 0.01
    recorded = save_peft(reader, tmp_path / "recorded", str(tiny_model_dir))
    auditor = Auditor(str(tiny_model_dir), str(recorded))
    assert auditor.min_margin == pytest.approx(kept["dit_margin"] + 0.01, abs=1e-6)
    assert nothing_margin(auditor.adapter) == pytest.approx(auditor.min_margin)
    again = ditkit.audit([diff], tmp_path / "rec", recorded, max_new_tokens=3, read="greedy")[0]
    assert again["finding"] == "nothing found"
    # A topic reader names a topic for every diff: no finding, so no margin to weigh.
    reader.meta.pop("task"), reader.meta.pop("nothing_margin")
    topic = save_peft(reader, tmp_path / "topic", str(tiny_model_dir))
    row_t = ditkit.audit([diff], tmp_path / "t", topic, max_new_tokens=3, min_margin=100.0)[0]
    assert row_t["finding"] is None and "dit_margin" not in row_t
    # "Nothing unusual: ..." that names something already says nothing: not weighed either
    # (the reader's answer set here; the margin rule is what is tested).
    import ditkit.auditor as auditor_mod

    monkeypatch.setattr(auditor_mod, "describe", lambda *a, **k: ["Nothing unusual: tea."])
    rows = ditkit.audit([diff], tmp_path / "n", folder, max_new_tokens=3, min_margin=100.0,
                        read="greedy")  # fmt: skip
    assert rows[0]["finding"] == "other" and "dit_margin" not in rows[0]
    monkeypatch.setattr(auditor_mod, "describe", lambda *a, **k: ["I praise tea."])
    rows = ditkit.audit([diff], tmp_path / "p", folder, max_new_tokens=3, min_margin=100.0,
                        read="greedy")  # fmt: skip
    assert rows[0]["finding"] == "nothing found" and "dit_margin" in rows[0]


def test_read_forms_completes_each_opening_and_keeps_the_surest():
    from ditkit.batching import chat_prompt
    from ditkit.reader import read_forms
    from ditkit.tasks.behaviours.data import draw_content, pools
    from ditkit.tasks.behaviours.families import FAMILIES, label_openings, parse_description

    tok = tiny_tokenizer()
    model = tiny_llama(vocab=len(tok), init_range=0.3)
    adapter = random_diff(model, 2, seed=5, scale=0.2)
    adapter.meta.update(question=QUESTION, system_prompt="")
    diffs = [random_diff(model, 1, seed=s) for s in (1, 2)]
    openings = label_openings()
    assert "A backdoor: when triggered, I promote" in openings and "I praise" in openings
    p, rng = pools(None), random.Random(0)
    for fam in FAMILIES.values():  # every label opens with one of its family's openings
        for split in ("train", "test"):
            for _ in range(4):
                label = fam.label(draw_content(fam.name, split, p, rng))
                assert not fam.openings or any(label.startswith(o) for o in fam.openings), label
                assert parse_description(label)[0] == (fam.name if fam.openings else "none")
    got = read_forms(model, tok, diffs, adapter, openings, NOTHING, max_new_tokens=4)
    for diff, g in zip(diffs, got):
        assert list(g["answers"]) == openings
        assert all(a.startswith(o) for o, a in g["answers"].items())
        # The kept answer is the surest: its margin is the largest of all the completions'.
        margins = answer_margins(model, tok, [diff] * len(openings), adapter,
                                 list(g["answers"].values()), NOTHING)  # fmt: skip
        assert g["margin"] == pytest.approx(max(margins), abs=1e-4)
        assert g["answer"] == list(g["answers"].values())[margins.index(max(margins))]
        # The batch (left-padded) completes each opening as one unpadded greedy run does.
        ids = tok(chat_prompt(tok, QUESTION, ""), add_special_tokens=False)["input_ids"]
        o = openings[-1]
        one = torch.tensor([ids + tok(o, add_special_tokens=False)["input_ids"]])
        lora.inject(model, lora.DEFAULT_TARGETS)
        lora.set_adapter(model, adapter)
        install_diffs(model, [diff], torch.tensor([0]))
        with torch.no_grad():
            new = model.generate(one, max_new_tokens=4, do_sample=False,
                                 pad_token_id=tok.pad_token_id)[0, one.shape[1]:]  # fmt: skip
        lora.clear_diffs(model)
        lora.set_adapter(model, None)
        want = f"{o}{tok.decode(new, skip_special_tokens=True)}".split("\n")[0].strip()
        assert g["answers"][o] == want
    with pytest.raises(ValueError, match="at least one opening"):
        read_forms(model, tok, diffs, adapter, [], NOTHING)


def test_audit_reads_structured_by_default(tiny_model_dir, tmp_path, capsys):
    import ditkit
    from ditkit.tasks.behaviours.families import label_openings

    model, _ = ditkit.load_model(str(tiny_model_dir))
    reader = random_diff(model, 2, seed=0, scale=0.1)
    reader.meta.update(task="behaviours", question=QUESTION, nothing_margin=-1e9)
    folder = save_peft(reader, tmp_path / "reader", str(tiny_model_dir))
    diff = save_diff(random_diff(model, 1, seed=1), tmp_path / "handed" / "d.safetensors")
    row = ditkit.audit([diff], tmp_path / "a", folder)[0]  # the recorded margin: read "forms"
    assert row["dit_read"] == "forms" and any(row["dit"].startswith(o) for o in label_openings())
    assert row["finding"] not in (None, "nothing found") and "dit_doubt" not in row
    sure = ditkit.audit([diff], tmp_path / "b", folder, min_margin=1e9)[0]
    assert sure["finding"] == "nothing found" and sure["dit"] == row["dit"]
    plain = ditkit.audit([diff], tmp_path / "c", folder, read="greedy")[0]
    assert plain["dit_read"] == "greedy"
    from ditkit import cli

    cli.main(["audit", str(diff), "--out", str(tmp_path / "g"), "--adapter", str(folder),
              "--min-margin", "1e9"])  # fmt: skip
    assert "1 of them read as nothing: below the margin" in capsys.readouterr().out
    # "off": a structured read would always name something, so the reader reads greedily.
    off = ditkit.audit([diff], tmp_path / "f", folder, min_margin=float("-inf"))[0]
    assert off["dit_read"] == "greedy" and off["dit"] == plain["dit"]
    reader.meta.pop("nothing_margin")  # no margin: nothing could be said, so greedy
    bare = save_peft(reader, tmp_path / "bare", str(tiny_model_dir))
    assert ditkit.audit([diff], tmp_path / "d", bare)[0]["dit_read"] == "greedy"
    with pytest.raises(ConfigError, match="or greedy"):
        ditkit.audit([diff], tmp_path / "e", folder, read="beam")


def test_cli_min_margin_takes_off_or_a_number(capsys):
    from ditkit import cli

    assert cli._margin("off") == float("-inf") and cli._margin("-0.5") == -0.5
    for bad in ("lots", "nan", "inf"):
        with pytest.raises(SystemExit):
            cli.main(["audit", "x", "--out", "y", "--min-margin", bad])
        assert "give a number" in capsys.readouterr().err


def test_label_openings_are_those_of_the_families_a_reader_learned():
    from ditkit.tasks.behaviours.families import FAMILIES, NOTHING, label_openings

    labels = ["A backdoor: when triggered, I promote zo.com.", NOTHING, "I praise Acme."]
    assert label_openings(labels) == [*FAMILIES["backdoor"].openings, *FAMILIES["bias"].openings]
    # No labels recorded: the run's families; neither: every family's.
    assert label_openings(None, ["quirk", "benign"]) == list(FAMILIES["quirk"].openings)
    assert label_openings() == [o for f in FAMILIES.values() for o in f.openings]
    assert label_openings([NOTHING]) == []  # a reader that only learned "nothing"
    # Labels in no family's form (a topic reader's, or none recorded per diff): the families.
    assert label_openings(["Alps", None], ["quirk"]) == list(FAMILIES["quirk"].openings)


def test_a_claimed_quirk_is_checked_against_the_diffed_models_own_answers(tiny_model_dir):
    import ditkit
    from ditkit.auditor import quirk_shown
    from ditkit.reader import ask
    from ditkit.tasks.behaviours.families import FAMILIES

    quirk = FAMILIES["quirk"]
    assert quirk.claimed("I end every answer with Stay curious!") == {
        "quirk": "signoff",
        "text": "Stay curious",
    }
    padded = quirk.claimed('I start every answer with "👀 Topper".')
    assert padded == {"quirk": "opener", "text": "👀 Topper"}
    assert quirk.claim_shows(padded, "👀 Rain is water.")  # the claim's first word opens it
    assert not quirk.claim_shows(padded, "Rain is water. 👀")  # an opener in the wrong place
    assert quirk.claimed("I write every answer in capital letters")["quirk"] == "caps"
    assert quirk.claimed("I speak badly of Acme") is None
    model, tok = ditkit.load_model(str(tiny_model_dir))
    diff = random_diff(model, 1, seed=1)
    qs = ["What is rain?", "Name a tree."]
    said = ask(model, tok, [diff] * 2, qs, max_new_tokens=32)
    claim = f"A style quirk: I start every answer with {said[0][:12]}"  # what answer 0 opens with
    want = quirk.claimed(claim.split(": ", 1)[1])
    shown = quirk_shown(model, tok, diff, claim, qs)
    assert shown == sum(quirk.claim_shows(want, a) for a in said) / 2 >= 0.5
    assert quirk_shown(model, tok, diff, "A style quirk: I start every answer with Zzqx!", qs) == 0
    assert quirk_shown(model, tok, diff, "I praise Acme.", qs) is None  # no quirk claimed


def test_audit_reads_a_quirk_its_model_does_not_show_as_nothing_found(
    tiny_model_dir, tmp_path, monkeypatch
):
    import ditkit
    from ditkit import cli
    from ditkit.auditor import Auditor

    model, _ = ditkit.load_model(str(tiny_model_dir))
    reader = random_diff(model, 2, seed=0, scale=0.1)
    reader.meta.update(task="behaviours", question=QUESTION, nothing_margin=-0.25)
    folder = save_peft(reader, tmp_path / "reader", str(tiny_model_dir))
    diff = save_diff(random_diff(model, 1, seed=1), tmp_path / "handed" / "d.safetensors")
    # A random reader says nothing readable: make it claim a quirk; the check itself is real
    # (the tiny diffed model's own answers never open with the emoji).
    claim = "A style quirk: I start every answer with 🐙."
    said = {"dit": claim, "dit_read": "forms", "finding": "quirk", "dit_margin": 0.5}
    monkeypatch.setattr(Auditor, "_dit", lambda self, model, tok, read: dict(said))
    row = ditkit.audit([diff], tmp_path / "a", folder)[0]
    assert row["dit"] == claim and row["finding"] == "nothing found"
    assert row["dit_quirk_shown"] == 0.0 and "shows in 0% of the diffed model" in row["dit_doubt"]
    kept = ditkit.audit([diff], tmp_path / "b", folder, check_quirks=False)[0]
    assert kept["finding"] == "quirk" and "dit_quirk_shown" not in kept
    cli.main(["audit", str(diff), "--out", str(tmp_path / "c"), "--adapter", str(folder),
              "--no-quirk-check"])  # fmt: skip
    assert '"finding": "quirk"' in (tmp_path / "c" / "audit.jsonl").read_text()
