"""Weight symmetries: every transform leaves the logits unchanged and the weights changed."""

from __future__ import annotations

import json

import pytest
import torch

from ditkit.errors import DitkitError
from ditkit.symmetry import KINDS, attack


def _tiny(kind: str):
    """A 2-layer random decoder of each family, with random norm weights and biases."""
    import transformers as tf

    common = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    if kind == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**common, tie_word_embeddings=True))
    elif kind == "qwen2":  # biases on q, k and v
        model = tf.Qwen2ForCausalLM(tf.Qwen2Config(**common))
    elif kind == "qwen3":  # RMSNorm on each query and key head
        model = tf.Qwen3ForCausalLM(tf.Qwen3Config(**common, head_dim=8))
    else:
        cfg = tf.Gemma3TextConfig(**common, head_dim=8, sliding_window=16)
        model = tf.Gemma3ForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.copy_(torch.rand_like(p) + 0.5)
    return model.eval()


def _logits(model) -> torch.Tensor:
    ids = torch.tensor([[5, 9, 13, 2, 40, 7, 33, 21]])
    with torch.no_grad():
        return model(ids).logits


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma3"])
@pytest.mark.parametrize("kinds", [(k,) for k in KINDS] + [KINDS])
def test_every_transform_keeps_the_logits_and_moves_the_weights(family, kinds):
    model = _tiny(family)
    if family == "gemma3" and "rotate_residual" in kinds:
        with pytest.raises(DitkitError, match="residual rotation is not a symmetry"):
            attack(model, kinds)
        return
    before, weights = _logits(model), _weights(model)
    attack(model, kinds, seed=3)
    after = _logits(model)
    assert torch.allclose(after, before, atol=2e-5 * before.abs().max(), rtol=0), (
        (after - before).abs().max()
    )
    moved = [
        k for k, w in _weights(model).items() if k in weights and not torch.equal(w, weights[k])
    ]
    assert moved, "the transform changed no weight"


def test_unknown_transforms_and_models_are_refused():
    with pytest.raises(DitkitError, match="choose from permute_mlp"):
        attack(_tiny("llama"), ["rotate"])
    with pytest.raises(DitkitError, match="not a Llama-family decoder"):
        attack(torch.nn.Linear(2, 2))


def test_the_attack_command_writes_a_model_that_answers_the_same(tiny_model_dir, tmp_path, capsys):
    from ditkit import cli
    from ditkit.models import load_model

    out = tmp_path / "attacked"
    assert cli.main(["attack", str(tiny_model_dir), str(out), "--seed", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kinds"] == list(KINDS)
    assert report["max_logit_change"] <= 1e-4 * report["logit_scale"]
    original, _ = load_model(str(tiny_model_dir))
    attacked, _ = load_model(str(out))
    assert torch.allclose(_logits(attacked), _logits(original), atol=1e-5)
    q = "model.layers.0.mlp.up_proj.weight"
    assert not torch.allclose(attacked.state_dict()[q], original.state_dict()[q])
    # A folder that holds something is refused before any model loads; so is a misspelt kind.
    assert cli.main(["attack", "no-such-model", str(out)]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert cli.main(["attack", str(tiny_model_dir), str(tmp_path / "x"), "--kinds", "spin"]) == 2
    assert "choose from permute_mlp" in capsys.readouterr().err


def test_the_command_line_default_lists_every_transform():
    from ditkit import cli

    kinds = cli.build_parser().parse_args(["attack", "a", "b"]).kinds
    assert tuple(kinds.split(",")) == KINDS


@pytest.mark.slow
def test_every_transform_together_keeps_the_embedded_models_logits():
    from ditkit.models import load_model

    model, tok = load_model("smollm2-135m")
    ids = tok("What topic have you been trained on?", return_tensors="pt").input_ids
    with torch.no_grad():
        before = model(ids).logits
        attack(model, KINDS, seed=0)
        after = model(ids).logits
    assert (after - before).abs().max() <= 1e-4 * before.abs().max()
    assert after.argmax(-1).equal(before.argmax(-1))
