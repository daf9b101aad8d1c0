"""Alignment undoes the symmetry transforms: a known low-rank diff comes back exactly."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from ditkit.align import align
from ditkit.attack import KINDS, attack
from ditkit.diffs.checkpoint import diff_from_finetune
from ditkit.errors import DiffMismatchError
from test_attack import _logits, _tiny

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _finetune(base, rank: int = 1, seed: int = 7):
    """``base`` plus a random rank-``rank`` change of every target projection (10% of its norm)."""
    ft = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, lin in ft.named_modules():
            if name.split(".")[-1] in TARGETS:
                out, inp = lin.weight.shape
                b = torch.randn(out, rank, generator=gen, dtype=torch.float64)
                a = torch.randn(rank, inp, generator=gen, dtype=torch.float64)
                delta = b @ a
                lin.weight += 0.1 * delta * lin.weight.norm() / delta.norm()
    return ft


def _errors(base, ft, aligned) -> dict[str, float]:
    """Per module: |recovered diff - true diff| / |true diff|."""
    true, _ = diff_from_finetune(base, ft)
    got, _ = diff_from_finetune(base, aligned)
    return {
        n: float((got.delta_weight(n) - true.delta_weight(n)).norm() / true.delta_weight(n).norm())
        for n in true.modules
    }


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("kinds", [(k,) for k in KINDS] + [KINDS])
def test_alignment_recovers_a_known_diff_through_every_transform(family, kinds):
    base = _tiny(family).double()
    ft = _finetune(base)
    attacked = copy.deepcopy(ft)
    attack(attacked, kinds, seed=5)
    report = align(attacked, base, rank=1)
    errors = _errors(base, ft, attacked)
    assert max(errors.values()) < 1e-5, (report["iterations"], errors)
    assert torch.allclose(_logits(attacked), _logits(ft), atol=1e-9)
    if "rotate_residual" in kinds:
        assert report["rotated"]


def test_without_the_rank_a_fit_keeps_most_of_the_diff_and_auto_finds_the_rank():
    base = _tiny("llama").double()
    ft = _finetune(base, rank=2)
    one_shot = copy.deepcopy(ft)
    attack(one_shot, KINDS, seed=1)
    auto = copy.deepcopy(one_shot)
    align(one_shot, base, rank=None)
    loose = max(_errors(base, ft, one_shot).values())
    assert 1e-5 < loose < 0.5  # least squares alone absorbs part of the diff
    report = align(auto, base, rank="auto")
    assert max(_errors(base, ft, auto).values()) < 1e-5
    assert {r for layer in report["layers"] for r in layer["ranks"].values()} == {2}


def test_an_unattacked_checkpoint_is_left_as_it_is():
    base = _tiny("llama").double()
    ft = _finetune(base)
    same = copy.deepcopy(ft)
    report = align(same, base)
    assert not report["rotated"] and report["unfolded"] == 0
    assert report["permuted_heads"] == report["permuted_units"] == 0
    assert max(_errors(base, ft, same).values()) < 1e-6


def test_a_checkpoint_of_another_shape_is_refused():
    import transformers as tf

    other = tf.LlamaForCausalLM(
        tf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2)
    )  # fmt: skip
    with pytest.raises(DiffMismatchError, match="not fine-tuned from this base model"):
        align(other, _tiny("llama"))


def test_convert_aligns_an_attacked_checkpoint_on_the_command_line(
    tiny_model_dir, tmp_path, capsys
):
    from ditkit import cli
    from ditkit.diffs import load_diff
    from ditkit.models import load_model

    base, tok = load_model(str(tiny_model_dir))
    ft = _finetune(base)
    attacked = copy.deepcopy(ft)
    attack(attacked, KINDS, seed=2)
    folder = tmp_path / "attacked"
    attacked.save_pretrained(folder)
    tok.save_pretrained(folder)
    true, _ = diff_from_finetune(base, ft)
    args = ["diff", "convert", str(folder), "--base", str(tiny_model_dir), "--rank", "1"]
    for name, extra in (("plain", []), ("aligned", ["--align"])):
        assert cli.main([*args[:3], str(tmp_path / f"{name}.safetensors"), *args[3:], *extra]) == 0
        report = json.loads(capsys.readouterr().out)
        got = load_diff(tmp_path / f"{name}.safetensors")
        errors = [
            float((got.delta_weight(n) - true.delta_weight(n)).norm() / true.delta_weight(n).norm())
            for n in true.modules
        ]
        if name == "plain":
            assert min(errors) > 0.5 and report["energy_kept"] < 0.5  # noise, not the fine-tune
        else:
            assert max(errors) < 1e-3 and report["energy_kept"] > 0.999
            assert report["alignment"]["rotated"] and report["alignment"]["permuted_units"] > 0
    # --align needs a full checkpoint.
    assert (
        cli.main(
            [
                *args[:2],
                str(tmp_path / "aligned.safetensors"),
                str(tmp_path / "x.safetensors"),
                "--align",
            ]
        )
        == 2
    )
    assert "not a full checkpoint" in capsys.readouterr().err
    assert cli.main(["describe", "--diff", str(tmp_path / "plain.safetensors"), "--align"]) == 2
    assert "is a diff already" in capsys.readouterr().err
