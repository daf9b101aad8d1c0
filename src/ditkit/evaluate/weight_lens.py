"""The weight lens: read which tokens a weight diff promotes, without training or generation.

A low-rank diff adds ``s B A`` to a projection's weight (``A [r, in]``, ``B [out, r]``, as peft).
For the projections that write into the residual stream (``o_proj``, ``down_proj``) the columns of
``B`` are directions in that stream, and the model's own final norm and unembedding say which tokens such a
direction pushes up (the logit lens applied to weights). For each such module in the later layers:

1. Output directions and their weights: the exact SVD of the module's change
   ``s B A = U S V^T`` (done in ``r`` dimensions), giving unit directions ``v_j [out]`` weighted by
   singular values ``sigma_j``; for a rank-1 diff, ``v`` is ``B``'s column and ``sigma`` the module's
   delta norm.
2. Two readings per direction, each for both signs (the sign of ``A x`` depends on the input, so a
   direction and its negation are equally plausible):
   - direct: ``logits(±v) = W_U norm(±v)``;
   - the model's response: ``W_U norm(h ± |h| v) - W_U norm(h)``, where ``h [hidden]`` is the
     residual (before the final norm) at the last position of a neutral chat prompt, i.e. where
     the model is about to answer. This is the direction added to the final residual, not
     propagated through later layers: cheap, and it shows the norm's interaction with a real state.
   Each reading is z-scored over the vocabulary; a token's score for a direction is its best z over
   the two signs, averaged over the two readings.
3. Token scores are the ``sigma``-weighted mean over all directions; the top tokens (decoded,
   stripped, deduplicated, without special, punctuation-only or whitespace-only tokens) are reported
   with a guess: the top token, or a guesser's reading of the joined top tokens (e.g. the nearest
   topic from a list with ``RetrievalGuesser``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch
from torch import nn

from ditkit.diffs import WeightDiff
from ditkit.errors import DataError, DitkitError

log = logging.getLogger(__name__)

RESIDUAL_WRITERS = ("o_proj", "down_proj")  # Llama, Qwen2/3, Gemma2/3, Mistral
NEUTRAL_PROMPT = "Tell me something."
LENS_QUESTION = "Which words does this weight diff promote most?"
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
# Where the final norm sits in common causal LMs: model.{decoder}.{norm}.
_DECODER_ATTRS = ("model", "transformer", "gpt_neox")
_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f")


def find_final_norm(model: nn.Module) -> nn.Module:
    """The norm applied to the last residual before the unembedding; DitkitError if not found."""
    roots = [
        getattr(model, n) for n in _DECODER_ATTRS if isinstance(getattr(model, n, None), nn.Module)
    ]
    for root in [*roots, model]:
        for name in _NORM_NAMES:
            mod = getattr(root, name, None)
            if isinstance(mod, nn.Module) and not isinstance(mod, nn.Linear):
                return mod
    raise DitkitError(
        f"the weight lens cannot find the final norm of {type(model).__name__}: it looks for "
        f"{'/'.join(_NORM_NAMES)} on model.{'/'.join(_DECODER_ATTRS)} (model.model.norm in "
        "Llama-like models). Use a Llama/Qwen/Gemma/Mistral-style model or leave weight_lens "
        "out of eval.methods."
    )


def _num_layers(model: nn.Module) -> int:
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if isinstance(n, int) and n > 0:
        return n
    found = [int(m.group(1)) for name, _ in model.named_modules() if (m := _LAYER.search(name))]
    if not found:
        raise DitkitError(f"{type(model).__name__} has no decoder layers named 'layers.N'")
    return max(found) + 1


def _chat_ids(tok: Any, text: str) -> torch.Tensor:
    if getattr(tok, "chat_template", None):
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": text}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=False,
        )
        return tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    return tok(text, return_tensors="pt")["input_ids"]


DENSE_CUT = 0.1  # a dense change's directions: singular values above this share of the largest
DENSE_MAX = 16


class WeightLens:
    """Reads diffs against one base model; the neutral residual and vocabulary are computed once.

    `layers_from` is the fraction of depth where the lens starts reading (0.5 = the later half).
    """

    def __init__(
        self,
        model: nn.Module,
        tok: Any,
        layers_from: float = 0.5,
        modules: tuple[str, ...] = RESIDUAL_WRITERS,
        neutral_prompt: str = NEUTRAL_PROMPT,
    ) -> None:
        if not 0 <= layers_from < 1:
            raise ValueError(f"layers_from must be in [0, 1), got {layers_from}")
        self.model, self.tok, self.modules = model, tok, tuple(modules)
        self.unembed = model.get_output_embeddings()
        if self.unembed is None:
            raise DitkitError(f"{type(model).__name__} has no output embeddings (lm_head)")
        self.norm = find_final_norm(model)
        self.first_layer = int(_num_layers(model) * layers_from)
        self.h = self._neutral_residual(neutral_prompt)  # [hidden], float32
        self._vocab: list[tuple[int, str]] | None = None

    def _neutral_residual(self, text: str) -> torch.Tensor:
        """The final norm's input at the last position of `text` asked as a chat turn."""
        captured: list[torch.Tensor] = []
        handle = self.norm.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            device = next(self.model.parameters()).device
            with torch.inference_mode():
                self.model(input_ids=_chat_ids(self.tok, text).to(device))
        finally:
            handle.remove()
        if not captured:
            raise DitkitError(f"the final norm of {type(self.model).__name__} was never called")
        return captured[-1][0, -1].detach().float()

    def _readable_vocab(self) -> list[tuple[int, str]]:
        """(id, stripped text) of every token worth showing, in id order."""
        if self._vocab is None:
            n = min(len(self.tok), self.unembed.weight.shape[0])
            special = set(self.tok.all_special_ids)
            texts = self.tok.batch_decode([[i] for i in range(n)])
            self._vocab = [
                (i, t.strip())
                for i, t in enumerate(texts)
                if i not in special and any(c.isalnum() for c in t)
            ]
        return self._vocab

    def directions(self, diff: WeightDiff) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(unit directions [n, hidden], weights [n], module names read) of the diff: the left
        singular vectors of each residual writer's change, low-rank or dense (a checkpoint
        minus its base; its directions above `DENSE_CUT` of the largest, at most `DENSE_MAX`)."""
        dirs, weights, used = [], [], []
        for name in diff.modules:
            m = _LAYER.search(name)
            if name.rsplit(".", 1)[-1] not in self.modules or not m:
                continue
            if int(m.group(1)) < self.first_layer:
                continue
            if name in diff.lowrank and name not in diff.dense:
                a_ri, b_or = diff.lowrank[name]
                # The change transposed, s A^T B^T = (Q R) B^T with A^T = Q R: its singular
                # values and right vectors (output directions) are R B^T's.
                _, r_rr = torch.linalg.qr(a_ri.T.float())
                _, s_r, vt_ro = torch.linalg.svd(
                    diff.scale(name) * r_rr @ b_or.T.float(), full_matrices=False
                )
            else:
                u_or, s_r, _ = torch.linalg.svd(diff.delta_weight(name), full_matrices=False)
                k = min(int((s_r > DENSE_CUT * s_r[0]).sum()), DENSE_MAX) if s_r[0] > 0 else 0
                vt_ro, s_r = u_or[:, :k].T, s_r[:k]
            dirs.append(vt_ro)
            weights.append(s_r)
            used.append(name)
        if not used:
            raise DataError(
                f"the weight lens found no {'/'.join(self.modules)} module in layers "
                f">= {self.first_layer} of the diff (it has {diff.modules[:4]}...); it reads "
                "diffs on the projections that write into the residual stream"
            )
        return torch.cat(dirs), torch.cat(weights), used

    @torch.inference_mode()
    def token_scores(self, diff: WeightDiff, chunk: int = 64) -> tuple[torch.Tensor, list[str]]:
        """(score per vocabulary id [vocab], modules read): how strongly the diff promotes each."""
        v_nh, w_n, used = self.directions(diff)
        w = self.unembed.weight
        h = self.h.to(w.device)

        def logits(x_mh: torch.Tensor) -> torch.Tensor:  # [m, vocab], float32
            return self.unembed(self.norm(x_mh.to(w.dtype))).float()

        base = logits(h[None])  # [1, vocab]
        total = torch.zeros(w.shape[0], device=w.device)
        for start in range(0, v_nh.shape[0], chunk):  # bounds memory for big vocabularies
            v = v_nh[start : start + chunk].to(w.device)
            signs = torch.cat([v, -v])  # [2m, hidden]
            per_dir = 0
            for x in (logits(signs), logits(h + h.norm() * signs) - base):
                z = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(1e-6)
                per_dir = per_dir + torch.maximum(z[: len(v)], z[len(v) :]) / 2  # best sign
            total += (w_n[start : start + chunk].to(total)[:, None] * per_dir).sum(0)
        return total / w_n.sum().clamp_min(1e-12).to(total), used

    def read(self, diff: WeightDiff, top_k: int = 20, guesser: Any = None) -> dict:
        """{"tokens", "scores", "guess", "modules"}: the top readable tokens, best first."""
        scores, used = self.token_scores(diff)
        vocab = self._readable_vocab()
        ids = torch.tensor([i for i, _ in vocab], dtype=torch.long)
        tokens: list[str] = []
        values: list[float] = []
        seen: set[str] = set()
        for j in torch.argsort(scores.cpu()[ids], descending=True).tolist():
            text = vocab[j][1]
            if text.lower() in seen:
                continue
            seen.add(text.lower())
            tokens.append(text)
            values.append(round(float(scores[vocab[j][0]]), 4))
            if len(tokens) == top_k:
                break
        if not tokens:
            raise DataError("the tokenizer has no readable (alphanumeric) tokens to report")
        guess = tokens[0] if guesser is None else guesser.guess([(LENS_QUESTION, " ".join(tokens))])
        return {"tokens": tokens, "scores": values, "guess": guess, "modules": used}
