"""The LoRA wrapper against peft, gradients, and inject/remove."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from conftest import tiny_llama
from ditkit import lora
from ditkit.diffs import WeightDiff, install_diffs


def random_diff(model, rank: int, seed: int, scale: float = 0.3) -> WeightDiff:
    g = torch.Generator().manual_seed(seed)
    pairs = {}
    for name in lora.find_targets(model):
        m = model.get_submodule(name)
        b_ro = torch.randn(rank, m.out_features, generator=g) * scale  # drawn as B^T, A^T
        a_ir = torch.randn(m.in_features, rank, generator=g) * scale
        pairs[name] = (a_ir.T.contiguous(), b_ro.T.contiguous())  # (A [r, in], B [out, r])
    return WeightDiff(pairs, {}, alpha=1.0)


def reference_pairs(diff: WeightDiff) -> dict:
    """``diff`` as the reference code's ``.pt`` stores it: ``{module: (B^T [r, out], A^T [in, r])}``."""
    return {n: (b.T.contiguous(), a.T.contiguous()) for n, (a, b) in diff.lowrank.items()}


def peft_logits(model, diff: WeightDiff, ids: torch.Tensor) -> torch.Tensor:
    r = diff.rank
    cfg = LoraConfig(r=r, lora_alpha=diff.alpha, target_modules=list(lora.DEFAULT_TARGETS))
    pm = get_peft_model(copy.deepcopy(model), cfg)
    with torch.no_grad():
        for name, (a_ri, b_or) in diff.lowrank.items():  # ditkit's A and B are peft's
            mod = pm.base_model.model.get_submodule(name)
            mod.lora_A["default"].weight.copy_(a_ri)
            mod.lora_B["default"].weight.copy_(b_or)
        return pm(ids).logits


@pytest.mark.parametrize("rank", [1, 8])
def test_frozen_rows_match_peft(model, rank):
    ids = torch.randint(3, 64, (3, 7))
    diffs = [random_diff(model, rank, seed=s) for s in range(3)]
    want = torch.stack([peft_logits(model, d, ids[i : i + 1])[0] for i, d in enumerate(diffs)])
    lora.inject(model)
    install_diffs(model, diffs, torch.tensor([0, 1, 2]))
    with torch.no_grad():
        got = model(ids).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_row_without_diff_is_base(model):
    ids = torch.randint(3, 64, (2, 5))
    with torch.no_grad():
        base = model(ids).logits
    lora.inject(model)
    install_diffs(model, [random_diff(model, 2, 0)], torch.tensor([-1, 0]))
    with torch.no_grad():
        out = model(ids).logits
    assert torch.equal(out[0], base[0])
    assert not torch.allclose(out[1], base[1])


def test_dense_row_matches_merged_weights(model):
    ids = torch.randint(3, 64, (1, 6))
    diff = random_diff(model, 4, 1)
    dense = WeightDiff({}, {n: diff.delta_weight(n) for n in diff.modules})
    merged = copy.deepcopy(model)
    with torch.no_grad():
        for n in diff.modules:
            merged.get_submodule(n).weight += diff.delta_weight(n)
        want = merged(ids).logits
    lora.inject(model)
    install_diffs(model, [dense], torch.tensor([0]))
    with torch.no_grad():
        got = model(ids).logits
    assert torch.allclose(got, want, atol=1e-5)


def test_inject_remove_restores_bit_for_bit(model):
    ids = torch.randint(3, 64, (2, 9))
    with torch.no_grad():
        before = model(ids).logits
    layers = lora.inject(model)
    for layer in layers.values():
        layer.add_adapter(4)
        torch.nn.init.normal_(layer.adapter_a_ir)
    install_diffs(model, [random_diff(model, 1, 3)], torch.tensor([0, 0]))
    with torch.no_grad():
        assert not torch.equal(model(ids).logits, before)
    lora.remove(model)
    assert not lora.diff_layers(model)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)


def test_disabled_context_gives_base(model):
    ids = torch.randint(3, 64, (1, 5))
    with torch.no_grad():
        base = model(ids).logits
    lora.inject(model)
    install_diffs(model, [random_diff(model, 1, 3)], torch.tensor([0]))
    with torch.no_grad(), lora.disabled(model):
        assert torch.equal(model(ids).logits, base)


def test_stacked_trainable_rows_do_not_mix(model):
    """Diff t gets gradient only from row t; the base model gets none."""
    layers = lora.inject(model)
    for p in model.parameters():
        p.requires_grad_(False)
    t = 3
    params = []
    for layer in layers.values():
        a_kir = torch.nn.Parameter(torch.zeros(t, layer.in_features, 1))
        b_kro = torch.nn.Parameter(torch.empty(t, 1, layer.out_features))
        lora.init_lora_(a_kir.data, b_kro.data)
        a_kir.data.normal_()  # non-zero so both factors receive gradient
        layer.set_lowrank(a_kir, b_kro, torch.ones(t), torch.arange(t))
        params += [a_kir, b_kro]
    ids = torch.randint(3, 64, (t, 6))
    logits = model(ids).logits
    logits[1].sum().backward()  # loss from row 1 only
    for p in params:
        assert p.grad is not None
        assert p.grad[1].abs().sum() > 0
        assert p.grad[0].abs().sum() == 0 and p.grad[2].abs().sum() == 0
    assert all(p.grad is None for n, p in model.named_parameters() if ".base." in n)


def test_adapter_only_trainable_gets_gradient(model):
    layers = lora.inject(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in layers.values():
        layer.add_adapter(2)
    install_diffs(model, [random_diff(model, 1, 0)], torch.tensor([0]))
    model(torch.randint(3, 64, (1, 5))).logits.sum().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("adapter_" in n for n in trainable)
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    assert all(
        layer.low_b_kro.grad is None and not layer.low_b_kro.requires_grad
        for layer in layers.values()
    )


def test_targets_discovered_for_families():
    model = tiny_llama()
    names = lora.find_targets(model)
    assert len(names) == 2 * 7
    assert all(".layers." in n for n in names)
    assert lora.find_targets(model, ["q_proj"]) == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.self_attn.q_proj",
    ]
