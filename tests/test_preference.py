"""The DIT preference term (dit.preference_weight, an ORPO odds ratio against another training
diff's label) on a tiny model: its maths against a direct computation, the choice of the wrong
label, and that training with it ranks own labels further above wrong ones than without."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_llama, tiny_tokenizer
from ditkit import lora
from ditkit.batching import encode
from ditkit.config import DitConfig
from ditkit.diffs import load_diff, save_diff
from ditkit.errors import ConfigError
from ditkit.reader import label_logps
from ditkit.train_dit import (
    _batch_loss,
    _log_odds,
    _preference_loss,
    _rejected,
    train_dit,
)
from test_lora import random_diff

QUESTION = "What topic have you been trained on?"
LABELS = ["tea", "volcanoes", "tea", "chess"]


@pytest.fixture(scope="module")
def setup():
    """(model with the adapter injected, tokenizer, 4 labelled random diffs)."""
    tok = tiny_tokenizer()
    model = tiny_llama(vocab=len(tok), init_range=0.3)
    for p in model.parameters():
        p.requires_grad_(False)
    diffs = []
    for i, label in enumerate(LABELS):
        d = random_diff(model, 1, seed=i, scale=0.2)
        d.meta = {"label": label}
        diffs.append(d)
    lora.inject(model)
    torch.manual_seed(0)
    lora.add_adapters(model, 2)
    return model, tok, diffs


def test_the_wrong_label_is_the_next_row_with_another_label(setup):
    _, tok, diffs = setup
    cfg = DitConfig(question=QUESTION)
    rejected = _rejected(tok, diffs, cfg, "")
    want = ["volcanoes", "tea", "chess", "tea"]  # row 2 skips nothing; row 3 wraps to row 0
    for r, label in zip(rejected, want):
        assert r.ids == encode(tok, QUESTION, label, cfg.max_answer_tokens, "").ids
    assert _rejected(tok, [diffs[0], diffs[2]], cfg, "") == [None, None]  # one label: no pairs


def test_preference_loss_matches_a_direct_computation(setup):
    model, tok, diffs = setup
    cfg = DitConfig(question=QUESTION, preference_weight=0.5)
    enc = [encode(tok, QUESTION, d.meta["label"], 16, "") for d in diffs]
    rejected = _rejected(tok, diffs, cfg, "")
    n_tokens = sum(len(e.ids) - e.n_prompt for e in enc)
    with torch.no_grad():
        ce = _batch_loss(model, tok.pad_token_id, diffs, enc)  # transformers' own loss
        sums, _ = label_logps(model, tok.pad_token_id, diffs, enc)
        assert torch.allclose(-sums.sum() / n_tokens, ce, atol=1e-5)
        got = _preference_loss(model, tok.pad_token_id, diffs, enc, rejected, n_tokens, 4, cfg)
        want = float(ce)
        for i, d in enumerate(diffs):  # one row at a time, odds from the probability itself
            own_s, own_n = label_logps(model, tok.pad_token_id, [d], [enc[i]])
            bad_s, bad_n = label_logps(model, tok.pad_token_id, [d], [rejected[i]])
            p_own, p_bad = math.exp(own_s / own_n), math.exp(bad_s / bad_n)
            margin = math.log(p_own / (1 - p_own)) - math.log(p_bad / (1 - p_bad))
            want -= 0.5 * F.logsigmoid(torch.tensor(margin)).item() / 4
    assert got.item() == pytest.approx(want, rel=1e-4)


def test_preference_weight_is_checked():
    with pytest.raises(ConfigError, match=r"dit\.preference_weight"):
        DitConfig(preference_weight=-1.0)


def _margin(model, tok, diffs, cfg) -> float:
    """Mean log-odds of each diff's own label minus that of its wrong label."""
    enc = [encode(tok, QUESTION, d.meta["label"], 16, "") for d in diffs]
    rejected = _rejected(tok, diffs, cfg, "")
    with torch.no_grad():
        s, n = label_logps(model, tok.pad_token_id, diffs, enc)
        rs, rn = label_logps(model, tok.pad_token_id, diffs, rejected)
    return float((_log_odds(s / n) - _log_odds(rs / rn)).mean())


def test_training_with_the_preference_term_separates_own_and_wrong_labels(tmp_path):
    tok = tiny_tokenizer()
    base = tiny_llama(vocab=len(tok), init_range=0.3)
    paths = []
    for i, label in enumerate(LABELS):
        d = random_diff(base, 1, seed=i, scale=0.2)
        d.meta = {"label": label}
        paths.append(save_diff(d, tmp_path / f"d{i}.safetensors"))
    margins = {}
    for weight in (0.0, 1.0):
        cfg = DitConfig(
            question=QUESTION, rank=2, lr=0.02, epochs=6, batch_size=4, val_fraction=0.0,
            preference_weight=weight,
        )  # fmt: skip
        model = tiny_llama(vocab=len(tok), init_range=0.3)
        adapter, _ = train_dit(model, tok, paths, cfg, tmp_path / f"w{weight}", seed=0)
        assert adapter.meta["preference_weight"] == weight
        lora.inject(model)
        lora.set_adapter(model, adapter)
        margins[weight] = _margin(model, tok, [load_diff(p) for p in paths], cfg)
    assert margins[1.0] > margins[0.0] + 0.2, margins  # measured 1.65 against 1.29
