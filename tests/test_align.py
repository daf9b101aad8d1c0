"""Alignment undoes the symmetry transforms: a known low-rank diff comes back exactly."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from ditkit.diffs.checkpoint import diff_from_finetune
from ditkit.errors import DiffMismatchError
from ditkit.symmetry import KINDS, align, attack
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


def _atol(family: str) -> float:
    """Gemma's norms compute in float32 even in a float64 model."""
    return 1e-6 if family == "gemma3" else 1e-9


def _kinds_for(family: str, kinds: tuple[str, ...]) -> tuple[str, ...]:
    """Gemma normalises what each block writes, so the residual rotation is not a symmetry."""
    return tuple(k for k in kinds if family != "gemma3" or k != "rotate_residual")


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma3"])
@pytest.mark.parametrize("kinds", [(k,) for k in KINDS] + [KINDS])
def test_alignment_recovers_a_known_diff_through_every_transform(family, kinds):
    kinds = _kinds_for(family, kinds)
    if not kinds:
        pytest.skip("rotate_residual is refused on Gemma (tests/test_attack.py)")
    base = _tiny(family).double()
    ft = _finetune(base)
    attacked = copy.deepcopy(ft)
    attack(attacked, kinds, seed=5)
    report = align(attacked, base, rank=1)
    errors = _errors(base, ft, attacked)
    assert max(errors.values()) < 1e-5, (report["iterations"], errors)
    assert torch.allclose(_logits(attacked), _logits(ft), atol=_atol(family))
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
            assert "model.embed_tokens.weight" in report["outside"]  # rotated: reported
        else:
            assert max(errors) < 1e-3 and report["energy_kept"] > 0.999
            assert report["outside"] == {}  # aligned: nothing left outside the diff
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


def _change_norms(model, seed: int = 3):
    """Every residual-path norm of ``model``, and the query/key norms where it has them, times a
    random factor in [0.8, 1.2], in place (a fine-tune that trained its norms as well)."""
    from ditkit.symmetry.shapes import norm_readers, shape_of

    gen = torch.Generator().manual_seed(seed)
    heads = [n for layer in model.model.layers for n in (layer.self_attn.q_norm, layer.self_attn.k_norm)
             if n is not None] if hasattr(model.model.layers[0].self_attn, "q_norm") else []  # fmt: skip
    with torch.no_grad():
        for norm in [n for n, _ in norm_readers(model, shape_of(model))] + heads:
            norm.weight.mul_(0.8 + 0.4 * torch.rand(norm.weight.shape, generator=gen).double())


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma3"])
@pytest.mark.parametrize("kinds", [(), ("fold_norms",), KINDS])
@pytest.mark.parametrize("rank", [2, "auto"])
def test_a_finetune_that_changed_its_norms_comes_back_norms_and_all(family, kinds, rank):
    kinds = _kinds_for(family, kinds)
    base = _tiny(family).double()
    ft = _finetune(base, rank=2)
    _change_norms(ft)
    attacked = copy.deepcopy(ft)
    if kinds:
        attack(attacked, kinds, seed=4)
    report = align(attacked, base, rank=rank)
    assert {r for layer in report["layers"] for r in layer["ranks"].values()} == {2}
    assert max(_errors(base, ft, attacked).values()) < 1e-5, report["iterations"]
    from ditkit.symmetry.shapes import norm_readers, shape_of

    for (got, _), (want, _) in zip(
        norm_readers(attacked, shape_of(attacked)), norm_readers(ft, shape_of(ft))
    ):
        assert torch.allclose(got.weight, want.weight, atol=1e-6)
    assert 0.1 < report["norm_change"] < 0.25
    assert torch.allclose(_logits(attacked), _logits(ft), atol=_atol(family))
    _, found = diff_from_finetune(base, attacked)
    assert any("norm" in name for name in found["outside"])  # the change is named, not hidden


def test_a_finetune_of_some_embedding_rows_does_not_tilt_the_rotation():
    base = _tiny("llama").double()
    ft = _finetune(base)
    with torch.no_grad():  # 6 of 64 token rows trained (the head is tied to them)
        ft.get_input_embeddings().weight[10:16] += 0.5 * torch.randn(6, 32, dtype=torch.float64)
    attacked = copy.deepcopy(ft)
    attack(attacked, KINDS, seed=6)
    report = align(attacked, base, rank=1)
    assert report["rotated"]
    assert max(_errors(base, ft, attacked).values()) < 1e-5
    emb = attacked.get_input_embeddings().weight
    assert torch.allclose(emb, ft.get_input_embeddings().weight, atol=1e-8)
    assert torch.allclose(_logits(attacked), _logits(ft), atol=1e-9)
    _, found = diff_from_finetune(base, attacked)
    assert "model.embed_tokens.weight" in found["outside"]
    _, plain = diff_from_finetune(base, _finetune(base))
    assert plain["outside"] == {}


def test_the_low_rank_step_matches_an_exact_svd_cold_and_warm():
    from ditkit.symmetry.fit import lowrank

    gen = torch.Generator().manual_seed(0)
    d = torch.randn(300, 2, generator=gen, dtype=torch.float64) @ torch.randn(
        2, 200, generator=gen, dtype=torch.float64
    )
    d += 1e-3 * torch.randn(300, 200, generator=gen, dtype=torch.float64)
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    exact = (u[:, :2] * s[:2]) @ vh[:2]
    cold, basis = lowrank(d, 2)
    assert basis is not None and basis.shape == (200, 10)  # the subspace path, not the exact one
    assert (cold - exact).norm() / exact.norm() < 1e-8
    moved = d + 1e-4 * torch.randn(300, 200, generator=gen, dtype=torch.float64)
    warm, _ = lowrank(moved, 2, basis)
    u, s, vh = torch.linalg.svd(moved, full_matrices=False)
    assert (warm - (u[:, :2] * s[:2]) @ vh[:2]).norm() / exact.norm() < 1e-6
