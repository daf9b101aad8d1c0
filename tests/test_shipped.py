"""The shipped DIT adapter: written from a run, checked on load, and read by dit.adapter = shipped."""

from __future__ import annotations

import json
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
    monkeypatch.setitem(shipped.SHIPPED, str(tiny_model_dir), "tiny")
    shipped.ship_adapter(run, tmp_path / "adapters" / "tiny", base=str(tiny_model_dir))
    return run, tmp_path / "adapters" / "tiny"


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


@pytest.mark.slow
def test_real_shipped_adapter_matches_embedded_model():
    folder = shipped.shipped_dir("smollm2-135m")
    if folder is None:
        pytest.fail("no adapter shipped for smollm2-135m")
    model, tok = load_model("smollm2-135m")
    adapter, manifest, _ = shipped.load_shipped("smollm2-135m", model)
    assert manifest["base_model"] == "smollm2-135m" and len(manifest["training_topics"]) >= 100
    assert (folder / "adapter_model.safetensors").stat().st_size <= 10_500_000
    assert adapter.meta["question"] == "What topic have you been trained on?"
    # It reads real diffs (two held-out quickstart diffs, made on 2026-12-05), each as its own
    # topic: the answer comes from the weights, not from the adapter alone.
    data = Path(__file__).parent / "data"
    diffs = [load_diff(data / f"quickstart-{t}.safetensors") for t in ("bluegrass", "ricotta")]
    assert [d.meta["label"] for d in diffs] == ["bluegrass", "ricotta"]
    answers = ditkit.describe(diffs, model=(model, tok))
    assert "bluegrass" in answers[0].lower() and "ricotta" in answers[1].lower(), answers


def test_quickstart_trains_diffs_the_shipped_adapter_can_read():
    """The quickstart's diff recipe and prompt format are the shipped adapter's own."""
    from ditkit.config import load_config

    folder = shipped.shipped_dir("smollm2-135m")
    if folder is None:
        pytest.fail("no adapter shipped for smollm2-135m")
    manifest = json.loads((folder / "ditkit.json").read_text())
    cfg = load_config("quickstart")
    assert cfg.dit.adapter == "shipped" and cfg.system_prompt == manifest["system_prompt"]
    recipe = manifest["diff_recipe"]
    for key in ("rank", "alpha", "init", "steps", "rows_per_step", "lr", "weights", "targets"):
        assert getattr(cfg.diffs, key) == recipe[key], key
    for key in ("questions_per_diff", "max_answer_tokens", "base_answer_tokens"):
        assert getattr(cfg.diffs, key) == recipe[key], key
    assert cfg.task_options.get("wrong_pool", 8) == recipe["wrong_pool"]
