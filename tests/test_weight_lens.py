"""The weight lens on a tiny Llama with planted diffs whose promoted token is known."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_llama, tiny_tokenizer
from ditkit.diffs import WeightDiff
from ditkit.errors import DataError, DitkitError
from ditkit.evaluate.weight_lens import WeightLens

LAST = "model.layers.1"  # the tiny model has 2 layers: the later half is layer 1


@pytest.fixture(scope="module")
def model_tok():
    tok = tiny_tokenizer()
    return tiny_llama(seed=3, vocab=len(tok)), tok


def _pair(b_col: torch.Tensor, n_in: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_in, 1, generator=g).T, b_col[:, None].clone()  # A [1, in], B [out, 1]


def planted(model, tok, target: str, early: str, sign: float = 1.0) -> WeightDiff:
    """down_proj of the last layer writes `target`'s unembedding row (scaled up); distractors:
    a small random o_proj, and `early`'s row 10x larger on layer 0 and on a q_proj, both of
    which the lens must ignore (early layer; not a residual writer)."""
    u_vh = model.get_output_embeddings().weight.detach()
    t, e = tok.convert_tokens_to_ids(target), tok.convert_tokens_to_ids(early)
    hidden, inter = model.config.hidden_size, model.config.intermediate_size
    g = torch.Generator().manual_seed(1)
    return WeightDiff(
        {
            f"{LAST}.mlp.down_proj": _pair(sign * 50 * u_vh[t], inter, 0),
            f"{LAST}.self_attn.o_proj": _pair(0.5 * torch.randn(hidden, generator=g), hidden, 1),
            "model.layers.0.mlp.down_proj": _pair(500 * u_vh[e], inter, 2),
            f"{LAST}.self_attn.q_proj": _pair(500 * u_vh[e], hidden, 3),
        }
    )


def test_planted_token_ranks_first(model_tok):
    model, tok = model_tok
    out = WeightLens(model, tok).read(planted(model, tok, "Ġtrained", "Ġsystem"), top_k=10)
    assert out["tokens"][0] == "trained", out["tokens"]
    assert "system" not in out["tokens"][:3]
    assert out["guess"] == "trained"
    assert out["modules"] == [f"{LAST}.mlp.down_proj", f"{LAST}.self_attn.o_proj"]
    assert out["scores"] == sorted(out["scores"], reverse=True) and len(out["tokens"]) == 10
    # Readable and deduplicated: no punctuation-only or whitespace tokens, no repeats.
    assert all(any(c.isalnum() for c in t) and t == t.strip() for t in out["tokens"])
    assert len({t.lower() for t in out["tokens"]}) == len(out["tokens"])


def test_either_sign_and_another_token(model_tok):
    model, tok = model_tok
    lens = WeightLens(model, tok)
    flipped = lens.read(planted(model, tok, "Ġtrained", "Ġsystem", sign=-1.0))
    assert flipped["tokens"][0] == "trained"
    other = lens.read(planted(model, tok, "Ġcode", "Ġtrained"))
    assert other["tokens"][0] == "code", other["tokens"]


def test_layer_filter_and_weighting(model_tok):
    """Reading every layer, the 10x larger early-layer diff wins: the filter is what hides it."""
    model, tok = model_tok
    out = WeightLens(model, tok, layers_from=0.0).read(
        planted(model, tok, "Ġtrained", "Ġsystem"), top_k=5
    )
    assert out["tokens"][0] == "system", out["tokens"]
    assert "model.layers.0.mlp.down_proj" in out["modules"]


def test_guesser_reads_the_tokens(model_tok):
    model, tok = model_tok

    class Recorder:
        transcript = None

        def guess(self, transcript):
            Recorder.transcript = transcript
            return "model training"

    out = WeightLens(model, tok).read(
        planted(model, tok, "Ġtrained", "Ġsystem"), guesser=Recorder()
    )
    assert out["guess"] == "model training"
    assert Recorder.transcript[0][1].split()[0] == "trained"


def test_clear_errors(model_tok):
    model, tok = model_tok
    only_early = WeightDiff({"model.layers.0.mlp.down_proj": _pair(torch.ones(32), 64, 0)})
    with pytest.raises(DataError, match="found no o_proj/down_proj module"):
        WeightLens(model, tok).read(only_early)
    no_norm = tiny_llama(vocab=len(tok))
    del no_norm.model.norm
    with pytest.raises(DitkitError, match="final norm"):
        WeightLens(no_norm, tok)


def test_a_dense_diff_reads_as_its_low_rank_twin(model_tok):
    """A checkpoint minus its base is dense: its singular directions are read like a LoRA's."""
    model, tok = model_tok
    lens = WeightLens(model, tok)
    low = planted(model, tok, "Ġtrained", "Ġsystem")
    dense = WeightDiff({}, {n: low.delta_weight(n) for n in low.modules})
    scores_low, used_low = lens.token_scores(low)
    scores_dense, used_dense = lens.token_scores(dense)
    assert used_dense == used_low
    assert torch.allclose(scores_dense, scores_low, atol=1e-4)
    assert lens.read(dense)["tokens"][0] == "trained"
