"""Reader generalisation: scale augmentation and extra phrasings in DIT training, and the
majority-vote reading (dit_vote), on a tiny model."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from ditkit.evaluate.methods import majority_vote
from ditkit.files import read_jsonl
from ditkit.pipeline import run_pipeline
from test_pipeline import tiny_config


def test_majority_vote_keeps_the_most_common_answer_and_breaks_ties_by_order():
    assert majority_vote(["Volcanoes.", "tea", "volcanoes", "Tea!", "volcanoes "]) == "Volcanoes."
    assert majority_vote(["tea", "volcanoes"]) == "tea"
    assert majority_vote(["a b", "A  B?", "c"]) == "a b"


def _tensor_shapes(folder) -> dict:
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


def test_scale_augmentation_and_phrasings_change_training_not_the_adapter_format(
    tiny_model_dir, tmp_path
):
    plain = run_pipeline(tiny_config(tiny_model_dir), tmp_path / "plain", ["data", "diffs", "dit"])
    cfg = tiny_config(
        tiny_model_dir,
        **{
            "dit.scale_augment": "[0.5, 2.0]",
            "dit.extra_questions": '["Which subject were you fine-tuned on?"]',
        },
    )
    aug = tmp_path / "aug"
    aug.mkdir()
    for stage in ("data", "diffs"):  # the same diffs: only the reader's training differs
        (aug / stage).symlink_to(plain / stage, target_is_directory=True)
    run_pipeline(cfg, aug, ["dit"])
    a, b = plain / "dit" / "adapter", aug / "dit" / "adapter"
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    assert _tensor_shapes(a) == _tensor_shapes(b)
    assert json.loads((a / "adapter_config.json").read_text()) == json.loads(
        (b / "adapter_config.json").read_text()
    )
    meta = json.loads((b / "ditkit.json").read_text())["ditkit_meta"]
    assert meta["scale_augment"] == [0.5, 2.0]
    assert meta["extra_questions"] == ["Which subject were you fine-tuned on?"]
    assert meta["question"] == "What topic have you been trained on?"

    def history(run):
        return json.loads((run / "dit" / "checkpoint" / "state.json").read_text())["history"]

    assert history(plain)[0]["train_loss"] != history(aug)[0]["train_loss"]


def test_dit_vote_reads_each_diff_at_every_scale_and_phrasing(tiny_model_dir, tmp_path):
    questions = '["What topic have you been trained on?", "Which subject were you tuned on?"]'
    cfg = tiny_config(
        tiny_model_dir,
        **{
            "eval.methods": '["dit", "dit_vote"]',
            "eval.vote_scales": "[0.5, 1.0, 2.0]",
            "eval.vote_questions": questions,
        },
    )
    out = run_pipeline(cfg, tmp_path / "run", ["data", "diffs", "dit", "eval"])
    rows = read_jsonl(out / "eval" / "predictions.jsonl")
    votes = [r for r in rows if r["method"] == "dit_vote"]
    assert len(votes) == 2  # one row per test diff
    dit = {r["diff_id"]: r["answer"] for r in rows if r["method"] == "dit"}
    for r in votes:
        assert [(s, q) for s, q, _ in r["votes"]] == [
            (s, q) for s in (0.5, 1.0, 2.0) for q in json.loads(questions)
        ]
        assert r["answer"] == majority_vote([v[2] for v in r["votes"]])
        # The (1.0, DIT question) vote is the plain dit method's own answer.
        assert r["votes"][2][2] == dit[r["diff_id"]]
        assert "alias_match" in r["scores"]
    scores = json.loads((out / "eval" / "scores.json").read_text())
    assert scores["dit_vote"]["alias_match"]["n"] == 2


def test_dit_reads_at_eval_dit_scale_else_the_readers_recorded_read_scale(tiny_model_dir, tmp_path):
    over = {"eval.methods": '["dit", "dit_vote"]', "eval.vote_scales": "[1.0, 3.0]"}
    cfg = tiny_config(tiny_model_dir, **over, **{"eval.dit_scale": "3.0"})
    out = run_pipeline(cfg, tmp_path / "run", ["data", "diffs", "dit", "eval", "report"])
    preds = out / "eval" / "predictions.jsonl"

    def answers(method):
        return {r["diff_id"]: r for r in read_jsonl(preds) if r["method"] == method}

    votes = {d: [v[2] for v in r["votes"]] for d, r in answers("dit_vote").items()}
    assert any(v[0] != v[1] for v in votes.values())  # 3x reads differently on this model
    for d, row in answers("dit").items():
        assert row["answer"] == votes[d][1] and row["read_scale"] == 3.0
    assert "DIT (x3)" in (out / "report" / "report.md").read_text()
    # Unset, DIT reads at the multiplier the adapter records (a shipped reader's read_scale).
    meta_file = out / "dit" / "adapter" / "ditkit.json"
    meta = json.loads(meta_file.read_text())
    meta["ditkit_meta"]["read_scale"] = 3.0
    meta_file.write_text(json.dumps(meta))
    preds.unlink()
    run_pipeline(tiny_config(tiny_model_dir, **over), out, ["eval"])
    assert {d: r["answer"] for d, r in answers("dit").items()} == {
        d: v[1] for d, v in votes.items()
    }
    meta["ditkit_meta"]["read_scale"] = 1.0
    meta_file.write_text(json.dumps(meta))
    preds.unlink()
    run_pipeline(tiny_config(tiny_model_dir, **over), out, ["eval"])
    rows = answers("dit")
    assert {d: r["answer"] for d, r in rows.items()} == {d: v[0] for d, v in votes.items()}
    assert all("read_scale" not in r for r in rows.values())


def test_reader_study_pairs_settings_and_seeds_on_one_runs_diffs(tiny_model_dir, tmp_path, capsys):
    from ditkit import cli

    cfg = tiny_config(tiny_model_dir, **{"data.n_train": 4, "dit.epochs": 1})
    out = run_pipeline(cfg, tmp_path / "run", ["data", "diffs"])
    argv = [
        "readers",
        str(out),
        "--setting",
        "base:",
        "--setting",
        'vote:dit.scale_augment=[0.5, 2.0];eval.methods=["dit", "dit_vote"];eval.vote_scales=[0.5, 1.0]',
        "--seeds",
        "0,1",
        "--train-sample",
        "2",
    ]
    assert cli.main(argv) == 0
    assert "held-out" in capsys.readouterr().out
    rows = json.loads((out / "readers" / "readers.json").read_text())["rows"]
    assert [(r["setting"], r["reader"]) for r in rows] == [
        ("base", "dit"),
        ("vote", "dit"),
        ("vote", "dit_vote"),
    ]
    assert all(r["n"] == 2 and r["seeds"] == 2 for r in rows)
    assert rows[0]["paired_vs_first"]["mean_diff"] == 0.0  # the first setting against itself
    assert rows[0]["gap"] == pytest.approx(rows[0]["train"] - rows[0]["held_out"])
    seeds = [
        out / "readers" / f"base-s{s}" / "dit" / "adapter" / "adapter_model.safetensors"
        for s in (0, 1)
    ]
    assert seeds[0].read_bytes() != seeds[1].read_bytes()  # the seed reaches the adapter
    meta = json.loads((out / "readers" / "vote-s0" / "dit" / "adapter" / "ditkit.json").read_text())
    assert meta["ditkit_meta"]["scale_augment"] == [0.5, 2.0]
    assert json.loads((out / "readers" / "base-s1" / "train_reading.json").read_text())["n"] == 2
    state = out / "readers" / "base-s0" / "dit" / "checkpoint" / "state.json"
    before = (seeds[0].read_bytes(), state.read_text())
    assert cli.main(argv) == 0  # a rerun resumes every adapter from its finished checkpoint
    assert (seeds[0].read_bytes(), state.read_text()) == before
    assert cli.main(["readers", str(out), "--setting", "bad:diffs.lr=1.0", "--seeds", "0"]) == 2


@pytest.mark.parametrize("min_epochs, trained", [(None, 3), (1, 2), (5, 5)])
def test_early_stopping_waits_for_min_epochs(tiny_model_dir, tmp_path, min_epochs, trained):
    # A learning rate too small to move any weight: validation loss never improves after epoch 1,
    # so with patience 1 training would stop after epoch 2 but for the minimum.
    over = {"dit.epochs": 6, "dit.patience": 1, "dit.val_fraction": 0.34, "dit.lr": 1e-30}
    if min_epochs is not None:
        over["dit.min_epochs"] = min_epochs
    out = run_pipeline(tiny_config(tiny_model_dir, **over), tmp_path / "run", ["data", "diffs"])
    run_pipeline(tiny_config(tiny_model_dir, **over), out, ["dit"])
    hist = json.loads((out / "dit" / "checkpoint" / "state.json").read_text())["history"]
    assert len(hist) == trained
    assert len({h["val_loss"] for h in hist}) == 1  # nothing improved: the rule alone decided


def test_readers_of_a_size_sweep_train_on_nested_subsets(tiny_model_dir, tmp_path, capsys):
    from ditkit import cli
    from ditkit.diffs import load_diff

    out = run_pipeline(tiny_config(tiny_model_dir), tmp_path / "run", ["data", "diffs"])
    # More seeds where adapters are cheap: n2 gets two, n5 one (NAME@SEEDS).
    argv = ["readers", str(out), "--setting", "n2@0,1:dit.max_train_diffs=2"]
    argv += ["--setting", "n5@0:dit.max_train_diffs=5", "--train-sample", "2"]
    assert cli.main(argv) == 0
    labels = [j["label"] for j in read_jsonl(out / "data" / "jobs.jsonl") if j["split"] == "train"]
    for name, n, seeds in (("n2", 2, (0, 1)), ("n5", 5, (0,))):
        for seed in seeds:
            adapter = load_diff(out / "readers" / f"{name}-s{seed}" / "dit" / "adapter")
            assert adapter.meta["training_labels"] == labels[:n]
    assert not (out / "readers" / "n5-s1").exists()
    rows = json.loads((out / "readers" / "readers.json").read_text())["rows"]
    assert {r["setting"]: r["seeds"] for r in rows} == {"n2": 2, "n5": 1}
    # A reader trained elsewhere, only read (by vote alone) and no training diffs read: rows
    # without a training score, paired against its own vote.
    argv = ["readers", str(out), "--train-sample", "0", "--setting",
            f"given@0:dit.adapter={out / 'readers' / 'n5-s0' / 'dit' / 'adapter'};"
            'eval.methods=["dit_vote"];eval.vote_scales=[1.0,2.0]']  # fmt: skip
    assert cli.main(argv) == 0
    rows = json.loads((out / "readers" / "readers.json").read_text())["rows"]
    assert [r["setting"] for r in rows] == ["n2", "n5", "given"]  # earlier calls' rows stay
    row = rows[-1]
    assert row["paired_against"] == "given" and rows[0]["paired_against"] == "n2"
    assert row["reader"] == "dit_vote" and row["train"] is None and row["gap"] is None
    assert row["paired_vs_first"]["mean_diff"] == 0.0
    assert not (out / "readers" / "given-s0" / "train_reading.json").exists()
    # A vote-only first setting, then a single read: the single read pairs against the vote.
    adapter = out / "readers" / "n5-s0" / "dit" / "adapter"
    argv = ["readers", str(out), "--train-sample", "0",
            "--setting", f'v@0:dit.adapter={adapter};eval.methods=["dit_vote"]',
            "--setting", f'd@0:dit.adapter={adapter};eval.methods=["dit"]']  # fmt: skip
    assert cli.main(argv) == 0
    rows = {
        r["setting"]: r for r in json.loads((out / "readers" / "readers.json").read_text())["rows"]
    }
    assert rows["d"]["paired_against"] == "v" and rows["d"]["paired_vs_first"]["n"] == 2
    # A run of held-out diffs only (an audit set) can be read by a given reader, not train one.
    held = run_pipeline(
        tiny_config(tiny_model_dir, **{"data.n_train": 0, "dit.adapter": json.dumps(str(adapter))}),
        tmp_path / "held",
        ["data", "diffs"],
    )
    argv = ["readers", str(held), "--train-sample", "0", "--setting", f"g@0:dit.adapter={adapter}"]
    assert cli.main(argv) == 0
    assert (held / "readers" / "g-s0" / "eval" / "predictions.jsonl").exists()
    assert cli.main(["readers", str(held), "--setting", "t@0:dit.epochs=1"]) == 2
    assert "data.n_train: must be >= 1" in capsys.readouterr().err
    assert cli.main(["readers", str(held), "--setting", f"g@0:dit.adapter={adapter}"]) == 2
    assert "give each setting dit.adapter and --train-sample 0" in capsys.readouterr().err
