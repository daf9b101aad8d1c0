"""Metrics: alias matching, MiniLM embeddings (offline), retrieval rank, ROUGE-L."""

from __future__ import annotations

import numpy as np
import pytest

from ditkit.evaluate.judge import RetrievalGuesser
from ditkit.evaluate.metrics import (
    Embedder,
    alias_match,
    embedding_cosine,
    retrieval_at_k,
    retrieval_rank,
    rouge_l,
)


@pytest.mark.parametrize(
    "answer,names,expected",
    [
        ("I love cats and dogs", ["cat", "cats"], 1.0),
        ("Let me concatenate the strings", ["cat"], 0.0),
        ("The CAT sat on the mat.", ["cat"], 1.0),
        ("Volcanoes erupt", ["volcano"], 0.0),
        ("A volcano erupts", ["lava", "volcano"], 1.0),
        ("Deep-sea fish glow", ["deep-sea fish"], 1.0),
        ("I write C++ daily", ["C++"], 1.0),
        ("I write C daily", ["C++"], 0.0),
        ("a.b matters", ["a.b"], 1.0),
        ("axb matters", ["a.b"], 0.0),
        ("anything", ["", "  "], 0.0),
        ("", ["cat"], 0.0),
    ],
)
def test_alias_match(answer, names, expected):
    assert alias_match(answer, names) == expected


def test_rouge_l():
    assert rouge_l("the storm hit the coast", "the storm hit the coast") == pytest.approx(1.0)
    assert rouge_l("completely unrelated words", "the storm hit the coast") == 0.0
    partial = rouge_l("storm hits coast", "the storm hit the coast")
    assert 0.0 < partial < 1.0


def test_retrieval_at_k():
    assert retrieval_at_k(1, 1) == 1.0
    assert retrieval_at_k(3, 2) == 0.0
    assert retrieval_at_k(3, 5) == 1.0


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.mark.slow
def test_embeddings_are_unit_length_and_cached(embedder):
    vecs = embedder.encode(["violin", "cello", "violin"])
    assert vecs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vecs[0], vecs[2])
    assert embedder.encode([]).shape == (0, 384)


@pytest.mark.slow
def test_embedding_cosine_orders_by_meaning(embedder):
    near = embedding_cosine(embedder, "violin", "cello")
    far = embedding_cosine(embedder, "violin", "volcano")
    assert near > far
    assert embedding_cosine(embedder, "violin", "violin") == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_retrieval_rank(embedder):
    candidates = ["volcanoes", "jazz music", "sharks", "baking bread"]
    assert retrieval_rank(embedder, "an erupting mountain of lava", "volcanoes", candidates) == 1
    assert retrieval_rank(embedder, "an erupting mountain of lava", "sharks", candidates) > 1
    # The truth counts even when it is not listed among the candidates.
    assert retrieval_rank(embedder, "saxophone solos", "jazz music", ["sharks"]) == 1


@pytest.mark.slow
def test_retrieval_guesser_with_minilm(embedder):
    guesser = RetrievalGuesser(embedder, ["volcanoes", "jazz music", "sharks"])
    transcript = [("Any dinner tips?", "Grill it hot like lava pouring from a crater.")]
    assert guesser.guess(transcript) == "volcanoes"
