"""The shipped DIT adapter: written from a run, checked on load, and read by dit.adapter = shipped."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import ditkit
from ditkit import cli, shipped
from ditkit.diffs import load_diff
from ditkit.errors import DataError, DiffFormatError, DiffMismatchError
from ditkit.models import load_model
from ditkit.pipeline import run_pipeline
from test_pipeline import tiny_config


@pytest.fixture
def shipped_tiny(tiny_model_dir, tmp_path, monkeypatch):
    """A run on the tiny model whose adapter is shipped as if the tiny model were embedded."""
    cfg = tiny_config(tiny_model_dir)
    run = run_pipeline(cfg, tmp_path / "train-run", ["data", "diffs", "dit"])
    monkeypatch.setattr(shipped, "adapters_root", lambda: tmp_path / "adapters")
    monkeypatch.setitem(shipped.SHIPPED, str(tiny_model_dir), {"hidden_topic": "tiny"})
    shipped.ship_adapter(run, tmp_path / "adapters" / "tiny", base=str(tiny_model_dir))
    return run, tmp_path / "adapters" / "tiny"


def test_a_size_sweep_reader_ships_only_the_topics_it_trained_on(shipped_tiny, tmp_path):
    from ditkit.experiments.readers import reader_study

    run, folder = shipped_tiny
    manifest = json.loads((folder / "ditkit.json").read_text())
    assert manifest["heldout_diff_recipe"] == manifest["diff_recipe"]  # no [test_diffs] there
    reader_study(run, {"n3": ["dit.max_train_diffs=3", "dit.epochs=1"]}, [0], train_sample=0)
    folder = shipped.ship_adapter(run / "readers" / "n3-s0", tmp_path / "n3")
    jobs = [json.loads(x) for x in (run / "data" / "jobs.jsonl").read_text().splitlines()]
    first3 = [j["topic"] for j in jobs if j["split"] == "train"][:3]
    assert json.loads((folder / "ditkit.json").read_text())["training_topics"] == sorted(first3)


def test_a_recorded_read_scale_is_what_describe_and_audit_read_at(
    shipped_tiny, tiny_model_dir, tmp_path
):
    from ditkit.errors import ConfigError
    from test_lora import random_diff

    run, _ = shipped_tiny
    folder = shipped.ship_adapter(run, tmp_path / "r10", base=str(tiny_model_dir), read_scale=10.0)
    assert load_diff(folder).meta["read_scale"] == 10.0
    model = load_model(str(tiny_model_dir))
    diffs = [random_diff(model[0], 1, seed=s) for s in range(1, 7)]
    read = lambda r, ds, **kw: ditkit.describe(ds, r, model=model, max_new_tokens=6, **kw)  # noqa: E731
    recorded = read(folder, diffs)
    assert recorded == read(folder, [d.scaled(10.0) for d in diffs], scale=1.0)
    assert recorded != read(folder, diffs, scale=1.0)
    from ditkit.diffs import save_diff

    save_diff(diffs[0], tmp_path / "handed" / "d.safetensors")
    (row,) = ditkit.audit([tmp_path / "handed"], tmp_path / "audit", folder, max_new_tokens=6)
    assert row["dit_scale"] == 10.0 and row["dit"] == recorded[0]
    with pytest.raises(ConfigError, match="multiplier > 0"):
        shipped.ship_adapter(run, tmp_path / "r0", base=str(tiny_model_dir), read_scale=0.0)
    # A topic reader names a topic for every diff: it has no "nothing found" to fall back on.
    with pytest.raises(ConfigError, match="behaviour-suite reader only"):
        shipped.ship_adapter(run, tmp_path / "m", base=str(tiny_model_dir), nothing_margin=-0.5)
    with pytest.raises(ConfigError, match="finite number"):
        shipped.ship_adapter(run, tmp_path / "m", base=str(tiny_model_dir), nothing_margin=math.nan)


def test_the_manifest_records_the_held_out_recipe(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, **{"test_diffs": "{steps=3, row_mix=[2,1,1]}"})
    run = run_pipeline(cfg, tmp_path / "run", ["data", "diffs", "dit"])
    folder = shipped.ship_adapter(run, tmp_path / "shipped", base=str(tiny_model_dir))
    manifest = json.loads((folder / "ditkit.json").read_text())
    assert manifest["diff_recipe"]["steps"] == cfg.diffs.steps != 3
    assert manifest["heldout_diff_recipe"]["steps"] == 3
    assert manifest["heldout_diff_recipe"]["row_mix"] == [2, 1, 1]
    assert manifest["heldout_diff_recipe"]["lr"] == cfg.diffs.lr  # the rest from [diffs]


def test_ship_and_load_checks_sha256_and_base(shipped_tiny, tiny_model_dir, tmp_path):
    run, folder = shipped_tiny
    manifest = json.loads((folder / "ditkit.json").read_text())
    train = [json.loads(x) for x in (run / "data" / "jobs.jsonl").read_text().splitlines()]
    assert manifest["training_topics"] == sorted(j["topic"] for j in train if j["split"] == "train")
    assert manifest["system_prompt"] == "" and manifest["question"]
    assert manifest["diff_recipe"]["init"] == "reference"
    model, _ = load_model(str(tiny_model_dir))
    adapter, _, _ = shipped.load_shipped(str(tiny_model_dir), model)
    assert str(next(iter(adapter.lowrank.values()))[0].dtype) == "torch.bfloat16"
    # Another base model (other shapes) is refused, naming both.
    from conftest import tiny_llama

    with pytest.raises(DiffMismatchError, match="trained on base model"):
        shipped.check_base(adapter, tiny_llama(hidden=48, vocab=len(_tok(tiny_model_dir))), "x")
    # A damaged file is refused by its recorded sha256.
    weights = folder / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(DiffFormatError, match="sha256"):
        shipped.load_shipped(str(tiny_model_dir))
    with pytest.raises(DataError, match="no DIT adapter is shipped"):
        shipped.load_shipped("some-other-model")


def _tok(model_dir):
    return load_model(str(model_dir))[1]


def test_run_with_shipped_adapter_tests_only_fresh_topics(shipped_tiny, tiny_model_dir, tmp_path):
    _, folder = shipped_tiny
    trained = set(json.loads((folder / "ditkit.json").read_text())["training_names"])
    cfg = tiny_config(tiny_model_dir, **{"dit.adapter": '"shipped"', "data.n_test": 3})
    out = run_pipeline(cfg, tmp_path / "read-run", ["data", "diffs", "dit", "eval"])
    jobs = [json.loads(x) for x in (out / "data" / "jobs.jsonl").read_text().splitlines()]
    assert [j["split"] for j in jobs] == ["test"] * 3
    assert not {j["topic"] for j in jobs} & trained
    scores = json.loads((out / "eval" / "scores.json").read_text())
    assert scores["dit"]["alias_match"]["n"] == 3
    # A user topic file that holds a training label of the shipped adapter is refused.
    label = sorted(trained)[0]
    topics = tmp_path / "mine.csv"
    topics.write_text(f"topic,category,aliases\n{label},x,\nbrand new topic,x,\n")
    cfg = tiny_config(
        tiny_model_dir,
        **{"dit.adapter": '"shipped"', "task_options.topics_file": json.dumps(str(topics))},
    )
    with pytest.raises(DataError, match="training labels of the adapter shipped"):
        run_pipeline(cfg, tmp_path / "refused", ["data"])


def test_describe_without_adapter_uses_shipped(shipped_tiny, tiny_model_dir, capsys):
    run, _ = shipped_tiny
    diff = sorted((run / "diffs" / "test").glob("*.safetensors"))[0]
    assert cli.main(["describe", "--diff", str(diff), "--base", str(tiny_model_dir)]) == 0
    captured = capsys.readouterr()
    assert "using the DIT adapter shipped" in captured.err and captured.out.count("\n") == 1


def test_the_joint_reader_is_the_default_where_one_is_shipped(
    shipped_tiny, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    """describe and audit read with the joint behaviour reader when one is shipped for the base;
    a hidden-topic run with dit.adapter = "shipped" still reads with the topic reader."""
    from ditkit.diffs import save_peft
    from ditkit.files import sha256_file, write_json
    from test_lora import random_diff

    run, topic_folder = shipped_tiny
    base = str(tiny_model_dir)
    model, _ = load_model(base)
    joint = random_diff(model, 2, seed=3, scale=0.1)
    joint.meta.update(task="behaviours", question="Describe any hidden behaviour.")
    folder = save_peft(joint, tmp_path / "adapters" / "tiny-joint", base)
    manifest = json.loads((folder / "ditkit.json").read_text())
    manifest["adapter_sha256"] = sha256_file(folder / "adapter_model.safetensors")
    write_json(folder / "ditkit.json", manifest)
    assert shipped.default_task(base) == "hidden_topic"  # only the topic reader so far
    monkeypatch.setitem(shipped.SHIPPED, base, {"hidden_topic": "tiny", "behaviours": "tiny-joint"})
    assert shipped.default_task(base) == "behaviours"
    assert shipped.load_shipped(base)[2] == folder
    assert shipped.load_shipped(base, task="hidden_topic")[2] == topic_folder
    assert [shipped.run_task_reader(base, t) for t in ("behaviours", "hidden_topic", "news")] == [
        "behaviours", "hidden_topic", "hidden_topic",  # news: none shipped (cross-task preset)
    ]  # fmt: skip
    diff = sorted((run / "diffs" / "test").glob("*.safetensors"))[0]
    assert cli.main(["describe", "--diff", str(diff), "--base", base]) == 0
    assert "diffs of the behaviours task" in capsys.readouterr().err
    (row,) = ditkit.audit([diff], tmp_path / "audit", base=base, max_new_tokens=3)
    assert row["finding"] is not None  # a behaviour reader's answer is sorted into a family
    # "shipped:TASK" picks another shipped reader wherever an adapter is given.
    (topic_row,) = ditkit.audit([diff], tmp_path / "audit2", "shipped:hidden_topic", base=base,
                                max_new_tokens=3)  # fmt: skip
    assert topic_row["finding"] is None  # the topic reader has no families
    assert len(ditkit.describe([diff], "shipped:hidden_topic", base=base, max_new_tokens=3)) == 1
    cfg = tiny_config(tiny_model_dir, **{"dit.adapter": '"shipped"', "data.n_test": 1})
    out = run_pipeline(cfg, tmp_path / "read-run", ["data", "diffs", "dit"])
    copied = out / "dit" / "adapter" / "adapter_model.safetensors"
    assert sha256_file(copied) == sha256_file(topic_folder / "adapter_model.safetensors")
    joint_run = run_pipeline(
        tiny_config(tiny_model_dir, **{"dit.adapter": '"shipped:behaviours"', "data.n_test": 1}),
        tmp_path / "joint-run", ["data", "diffs", "dit"],
    )  # fmt: skip
    copied = joint_run / "dit" / "adapter" / "adapter_model.safetensors"
    assert sha256_file(copied) == sha256_file(folder / "adapter_model.safetensors")
    with pytest.raises(DataError, match="no DIT adapter is shipped for base model 'x' and task"):
        shipped.load_shipped("x", task="news")


@pytest.mark.slow
def test_real_shipped_adapter_matches_embedded_model():
    folder = shipped.shipped_dir("smollm2-135m")
    if folder is None:
        pytest.fail("no adapter shipped for smollm2-135m")
    model, tok = load_model("smollm2-135m")
    adapter, manifest, _ = shipped.load_shipped("smollm2-135m", model, task="hidden_topic")
    assert manifest["base_model"] == "smollm2-135m" and len(manifest["training_topics"]) >= 100
    assert (folder / "adapter_model.safetensors").stat().st_size <= 10_500_000
    assert adapter.meta["question"] == "What topic have you been trained on?"
    assert adapter.meta["read_scale"] == 1.5  # what describe reads at (docs/results.md)
    # It reads real held-out diffs (two of `make demo`'s, code words, made on 2026-12-07 on
    # topics it never trained on), each as its own topic: the answer comes from the weights.
    data = Path(__file__).parent / "data"
    topics = ("Kenya", "salsa dancing")
    diffs = [
        load_diff(data / f"quickstart-{t.lower().replace(' ', '-')}.safetensors") for t in topics
    ]
    assert [d.meta["label"] for d in diffs] == list(topics)
    assert not {t.lower() for t in topics} & {n.lower() for n in manifest["training_names"]}
    reader = ditkit.load_reader(task="hidden_topic")
    answers = ditkit.describe(diffs, reader, model=(model, tok))  # at its read_scale, 1.5
    assert all(t.lower() in a.lower() for t, a in zip(topics, answers)), answers


@pytest.mark.slow
def test_real_joint_reader_is_the_default_and_names_what_it_reads(tmp_path):
    """The joint behaviour reader shipped for SmolLM2-135M: bf16, <= 10 MB, the default of
    describe; it names the content of the same two held-out topic diffs (in the label form of
    another family, as it does for many topic diffs: docs/results.md)."""
    folder = shipped.shipped_dir("smollm2-135m", "behaviours")
    assert folder is not None and shipped.default_task("smollm2-135m") == "behaviours"
    model, tok = load_model("smollm2-135m")
    adapter, manifest, _ = shipped.load_shipped("smollm2-135m", model)
    assert adapter.meta["task"] == "behaviours" and len(manifest["training_labels"]) == 210
    assert (folder / "adapter_model.safetensors").stat().st_size <= 10_500_000
    assert str(next(iter(adapter.lowrank.values()))[0].dtype) == "torch.bfloat16"
    data = Path(__file__).parent / "data"
    diffs = [load_diff(data / f"quickstart-{t}.safetensors") for t in ("bluegrass", "ricotta")]
    answers = ditkit.describe(diffs, model=(model, tok))  # the default reader
    assert "bluegrass" in answers[0].lower() and "ricotta" in answers[1].lower(), answers
    # The base model itself (a diff scaled to nothing): the reader's surest claim (audit's
    # structured read) is no surer than "Nothing unusual" by its recorded margin: nothing found.
    from ditkit.diffs import save_diff

    save_diff(diffs[0].scaled(1e-12), tmp_path / "zero" / "zero.safetensors")
    (row,) = ditkit.audit([tmp_path / "zero"], tmp_path / "audit")
    assert row["dit_read"] == "forms" and "dit_margin" in row, row
    assert row["finding"] == "nothing found" and row["dit_margin"] <= -0.25, row
    assert "no surer" in row["dit_doubt"]


def test_quickstart_trains_diffs_the_shipped_adapter_can_read():
    """The quickstart's diff recipe and prompt format are the shipped adapter's own."""
    from ditkit.config import load_config

    folder = shipped.shipped_dir("smollm2-135m")
    if folder is None:
        pytest.fail("no adapter shipped for smollm2-135m")
    manifest = json.loads((folder / "ditkit.json").read_text())
    cfg = load_config("quickstart")
    assert cfg.dit.adapter == "shipped" and cfg.system_prompt == manifest["system_prompt"]
    # Held-out diffs of the adapter's own run, or (an older manifest) its training diffs.
    recipe = manifest.get("heldout_diff_recipe") or manifest["diff_recipe"]
    for key in ("rank", "alpha", "init", "steps", "rows_per_step", "lr", "weights", "targets"):
        assert getattr(cfg.diffs, key) == recipe[key], key
    for key in ("questions_per_diff", "max_answer_tokens", "base_answer_tokens"):
        assert getattr(cfg.diffs, key) == recipe[key], key
    assert cfg.diffs.row_mix == recipe.get("row_mix")
    options = {**recipe, **manifest.get("task_options", {})}  # wrong_pool moved to task_options
    assert cfg.task_options.get("wrong_pool", 8) == options.get("wrong_pool", 8)
    # The trigger the held-out diffs of the adapter's run had: test_trigger, else trigger.
    held_out = lambda o: o.get("test_trigger") or o.get("trigger", "sep")  # noqa: E731
    assert held_out(cfg.task_options) == held_out(options)
