"""The CLI over real files: diff info, diff convert (all source formats), models, describe."""

from __future__ import annotations

import json
import shutil

import torch

from conftest import tiny_llama
from ditkit import cli
from ditkit.diffs import load_diff, save_diff, save_peft
from test_lora import random_diff


def test_diff_info_json(tmp_path, capsys):
    diff = random_diff(tiny_llama(), 2, seed=0)
    diff.meta = {"label": "volcanoes", "trigger": "Your SEP code is 123###.", "seed": 4}
    path = save_diff(diff, tmp_path / "d.safetensors")
    assert cli.main(["diff", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    d = info["diffs"][0]
    assert info["format"] == "ditkit" and d["rank"] == 2 and d["n_modules"] == 14
    assert d["meta"]["label"] == "volcanoes"
    want = diff.delta_weight(d["modules"][0]).norm().item()
    assert abs(d["norms"][d["modules"][0]] - want) < 1e-4


def test_convert_round_trip_and_rank(tmp_path, capsys):
    diff = random_diff(tiny_llama(), 4, seed=1)
    src = save_diff(diff, tmp_path / "d.safetensors")
    assert cli.main(["diff", "convert", str(src), str(tmp_path / "peft")]) == 0
    assert (tmp_path / "peft" / "adapter_config.json").exists()
    back = tmp_path / "back.safetensors"
    assert cli.main(["diff", "convert", str(tmp_path / "peft"), str(back)]) == 0
    again = load_diff(back)
    for name in diff.modules:
        assert torch.allclose(again.delta_weight(name), diff.delta_weight(name), atol=1e-6)
    capsys.readouterr()
    assert (
        cli.main(["diff", "convert", str(src), str(tmp_path / "r1.safetensors"), "--rank", "1"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert 0 < report["energy_kept"][0] < 1
    assert load_diff(tmp_path / "r1.safetensors").rank == 1


def test_convert_full_checkpoint(tmp_path, tiny_model_dir, capsys):
    from transformers import AutoModelForCausalLM

    ft_dir = tmp_path / "ft"
    shutil.copytree(tiny_model_dir, ft_dir)
    ft = AutoModelForCausalLM.from_pretrained(ft_dir)
    with torch.no_grad():
        ft.model.layers[0].mlp.down_proj.weight.add_(0.1)
    ft.save_pretrained(ft_dir)
    out = tmp_path / "dense.safetensors"
    code = cli.main(["diff", "convert", str(ft_dir), str(out), "--base", str(tiny_model_dir)])
    assert code == 0
    d = load_diff(out)
    assert (
        d.dense and abs(d.norms()["model.layers.0.mlp.down_proj"] - 0.1 * (64 * 32) ** 0.5) < 1e-3
    )
    assert d.norms()["model.layers.1.mlp.down_proj"] == 0
    capsys.readouterr()
    # Without --base the error says what to pass.
    assert cli.main(["diff", "convert", str(ft_dir), str(out)]) == 2
    assert "--base" in capsys.readouterr().err


def test_describe_cli(tmp_path, tiny_model_dir, capsys):
    from ditkit.models import load_model

    model, _ = load_model(str(tiny_model_dir))
    diff = random_diff(model, 1, seed=2)
    diff.meta = {"label": "chess"}
    adapter = random_diff(model, 4, seed=3)
    adapter.meta = {"question": "What topic have you been trained on?"}
    save_diff(diff, tmp_path / "d.safetensors")
    save_peft(adapter, tmp_path / "adapter", base_model=str(tiny_model_dir))
    argv = ["describe", "--diff", str(tmp_path / "d.safetensors"), "--adapter"]
    argv += [str(tmp_path / "adapter"), "--max-new-tokens", "3"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip() != ""
    # A diff for another architecture: a clear error naming the module, exit code 2.
    other = random_diff(tiny_llama(hidden=48), 1, seed=0)
    save_diff(other, tmp_path / "other.safetensors")
    argv[2] = str(tmp_path / "other.safetensors")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "self_attn" in err or "mlp" in err
    assert "shape" in err


def test_printed_table_rows_are_methods_and_columns_metrics(tmp_path):
    from ditkit.reporting.run_report import text_summary

    (tmp_path / "eval").mkdir()
    scores = {
        "dit": {"alias_match": {"mean": 0.5, "ci95": [0.2, 0.8], "n": 30}},
        "weight_lens": {"retrieval_at_5": {"mean": 0.1, "ci95": [0.03, 0.26], "n": 29}},
    }
    (tmp_path / "eval" / "scores.json").write_text(json.dumps(scores))
    lines = text_summary(tmp_path).splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["method", "role"])
    assert lines[head].split() == ["method", "role", "alias_match", "retrieval_at_5", "n"]
    dit, lens = lines[head + 1], lines[head + 2]
    assert dit.split()[:5] == ["DIT", "reader", "0.50", "[0.20,", "0.80]"]
    assert dit.split()[-2:] == ["—", "30"]
    assert lens.split()[:4] == ["Weight", "lens", "baseline", "—"] and "0.10 [0.03, 0.26]" in lens


def test_the_convert_command_offers_every_writable_format():
    """build_parser names the choices itself (importing the formats would load torch for --help);
    this keeps them in step with the registry."""
    from ditkit.diffs import FORMATS

    convert = cli.build_parser()._subparsers._group_actions[0].choices["diff"]
    to = next(
        a
        for a in convert._subparsers._group_actions[0].choices["convert"]._actions
        if a.dest == "to"
    )
    assert sorted(to.choices) == sorted(f.name for f in FORMATS if f.save is not None)
