"""LLM judging and guessing.

- `LLMJudge` grades a predicted description against the truth on the paper's 1-5 scale, through any
  OpenAI-compatible server at temperature 0. A reply without a valid score counts as 1. The
  scale's wording is the task's (`tasks.base.Rubric`).
- Guessers turn a baseline's transcript, a list of (question, answer) pairs from the fine-tuned
  model, into a one-phrase guess that the judge can grade. All expose `guess(transcript) -> str`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ditkit.errors import ConfigError, DataError
from ditkit.openai_compat import ChatClient
from ditkit.tasks.base import Rubric

log = logging.getLogger(__name__)

_SCORE_RE = re.compile(r"score\W{0,4}(\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_score(text: str) -> int:
    """The judge's score: the last `SCORE: N` in the reply (or a reply that is just N).

    Anything unparseable, fractional or outside 1-5 counts as 1, the conservative default.
    """
    matches = _SCORE_RE.findall(text or "")
    raw = matches[-1] if matches else (text or "").strip().strip("*.").strip()
    if not re.fullmatch(r"\d+", raw):
        log.debug("no score in judge reply %r; counting it as 1", text)
        return 1
    value = int(raw)
    return value if 1 <= value <= 5 else 1


class LLMJudge:
    """Grades a prediction against the truth with an LLM at temperature 0 (1-5, 1 = unrelated)."""

    max_tokens = 512

    def __init__(self, client: ChatClient, rubric: Rubric) -> None:
        self.client = client
        self.rubric = rubric

    def messages(self, prediction: str, truth: str) -> list[dict[str, str]]:
        """The chat messages sent for one grading."""
        label = self.rubric.label
        user = (
            f"True {label}: {truth.strip()}\n"
            f"Guessed {label}: {prediction.strip()}\n\n"
            "How well does the guess match the truth?"
        )
        return [
            {"role": "system", "content": self.rubric.grading},
            {"role": "user", "content": user},
        ]

    def score(self, prediction: str, truth: str) -> int:
        """1-5; an empty prediction scores 1 without asking the server."""
        if not (prediction or "").strip():
            return 1
        reply = self.client.complete(
            self.messages(prediction, truth), temperature=0.0, max_tokens=self.max_tokens
        )
        return parse_score(reply)

    def info(self) -> dict[str, str | None]:
        """Which judge graded the results, to store next to them."""
        return {
            "judge_model": self.client.config.model,
            "judge_base_url": self.client.config.base_url,
        }


# ---------------------------------------------------------------- guessers

Transcript = Sequence[tuple[str, str]]


def guess_prompt(transcript: Transcript, rubric: Rubric) -> str:
    """The instruction a guesser model reads: the transcript, then a request for one phrase."""
    if not transcript:
        raise DataError("cannot guess from an empty transcript")
    lines = [
        f"Question {i}: {q.strip()}\nAnswer {i}: {a.strip()}"
        for i, (q, a) in enumerate(transcript, 1)
    ]
    return rubric.guess_intro + "\n\n" + "\n\n".join(lines) + "\n\n" + rubric.guess_ask


_LABEL_PREFIX = re.compile(
    r"^(?:the\s+)?(?:hidden\s+)?(?:topic|headline|answer|guess)\s*:\s*", re.I
)


def clean_guess(text: str) -> str:
    """First non-empty line, without a 'Topic:' style label, quotes or a trailing full stop."""
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    line = _LABEL_PREFIX.sub("", line).strip()
    previous = None
    while line != previous:  # e.g. '"Volcanoes".' needs the stop, then the quotes removed
        previous = line
        line = line.strip("*\"'`“”‘’ ").removesuffix(".").strip()
    return line


class OpenAIGuesser:
    """Asks a model on an OpenAI-compatible server for the guess (temperature 0)."""

    def __init__(self, client: ChatClient, rubric: Rubric, max_tokens: int = 64) -> None:
        self.client = client
        self.rubric = rubric
        self.max_tokens = max_tokens

    def guess(self, transcript: Transcript) -> str:
        messages = [{"role": "user", "content": guess_prompt(transcript, self.rubric)}]
        reply = self.client.complete(messages, temperature=0.0, max_tokens=self.max_tokens)
        return clean_guess(reply)


class HFGuesser:
    """Asks a local transformers causal LM (with a chat template) for the guess, greedily."""

    def __init__(
        self, model: Any, tokenizer: Any, rubric: Rubric, max_new_tokens: int = 16
    ) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError(
                "HFGuesser needs a tokenizer with a chat template (an instruct/chat model); "
                f"{type(tokenizer).__name__} has none"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.rubric = rubric

    def guess(self, transcript: Transcript) -> str:
        from ..generate import generate_chat  # torch: only when a local model guesses

        prompt = guess_prompt(transcript, self.rubric)
        (reply,) = generate_chat(
            self.model,
            self.tokenizer,
            [prompt],
            max_new_tokens=self.max_new_tokens,
            # enable_thinking is read by Qwen3 templates and ignored by the others.
            template_kwargs={"enable_thinking": False},
        )
        return clean_guess(reply)


class RetrievalGuesser:
    """Guesses the candidate topic whose embedding is nearest to the concatenated answers.

    No generative model involved: a cheap, deterministic baseline over a closed list of topics.
    """

    def __init__(self, embedder: Any, topics: Sequence[str]) -> None:
        self.topics = list(dict.fromkeys(t for t in topics if t.strip()))
        if not self.topics:
            raise DataError("RetrievalGuesser needs at least one candidate topic")
        self.embedder = embedder
        self._topic_vecs = embedder.encode(self.topics)  # [topics, dim], unit length

    def guess(self, transcript: Transcript) -> str:
        if not transcript:
            raise DataError("cannot guess from an empty transcript")
        text = " ".join(a.strip() for _, a in transcript)
        vec = self.embedder.encode([text])[0]  # [dim]
        return self.topics[int(np.argmax(self._topic_vecs @ vec))]
