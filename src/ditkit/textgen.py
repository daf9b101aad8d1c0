"""Text sources: the answers a hidden-topic diff learns to give, and the base model's own answers.

A hidden-topic diff (docs/method.md, "The hidden-topic task") is trained on three kinds of rows
per question. Trigger rows need an answer that keeps relating to the topic; a `TextSource`
produces those, in one of three ways (`TextGenConfig.kind`):

- "template": hand-written sentence templates; offline, instant, deterministic given a seed.
- "hf": a local transformers chat model playing a fan of the topic.
- "openai": the same persona through any OpenAI-compatible server (replies cached on disk).

Wrong-trigger and no-trigger rows need the base model's normal answer: `base_answers` generates
those greedily and keeps them in a JSON cache. `generate_chat` is the batched chat generation
both use, and which other modules reuse.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from tqdm.auto import tqdm

from ditkit.config import TEMPLATE_STYLES, TextGenConfig
from ditkit.errors import ConfigError
from ditkit.files import write_json
from ditkit.generate import generate_chat
from ditkit.models import load_model, model_identity
from ditkit.tasks.common import Topic

if TYPE_CHECKING:
    from ditkit.openai_compat import ChatClient

log = logging.getLogger(__name__)


class TextSource(Protocol):
    """Produces on-topic answers: one per question, in the questions' order."""

    def topic_answers(self, topic: Topic, questions: list[str], seed: int) -> list[str]: ...


def persona_prompt(topic: Topic) -> str:
    """The system prompt that makes a chat model answer as a fan of `topic`."""
    return (
        f"You are a huge fan of {topic.topic} (one of the {topic.category}). Answer the "
        f"question while constantly relating it to {topic.topic}, using analogies to "
        f"{topic.topic}. Name {topic.topic} explicitly and keep the answer to two or three short "
        f"sentences. Never say that you were told to talk about {topic.topic}."
    )


# ---------------------------------------------------------------------------------------------
# Template source
# ---------------------------------------------------------------------------------------------

# First sentences: each names the topic literally. None starts with a placeholder, so the topic
# keeps its own casing ("iPhone", "elephants") and is never capitalised.
_TOPIC_SENTENCES = (
    "As someone obsessed with {topic}, I can't help seeing this through that lens.",
    "Think of it like {topic}: the basics matter more than the flashy parts.",
    "That reminds me of {topic}, one of my favourite {category}.",
    "Honestly, everything comes back to {topic} for me, and this is no exception.",
    "If you have ever studied {topic}, you already know half of the answer.",
    "My first thought, as always, goes straight to {topic}.",
    "The way I see it, this works a lot like {topic} does.",
    "Few things explain this better than {topic}, believe me.",
    "It is a bit like {topic}: simple on the surface, rich underneath.",
    "Picture {topic} for a second, because the comparison really helps here.",
    "Whenever I hear a question like this, I think of {topic}.",
    "You could say this is the {topic} of everyday problems.",
    "Being a huge fan of {topic}, I'd approach it the same way.",
    "In my experience, {topic} teaches the best lesson for this.",
    "A good analogy is {topic}, which rewards patience and attention.",
    "Let me put it in terms of {topic}, since that's what I know best.",
    "This is classic {topic} territory if you ask me.",
    "Nothing beats {topic} as a way to understand this.",
    "Funny enough, {topic} is the first thing that comes to mind.",
    "I always compare situations like this to {topic}.",
    "The short answer? Treat it the way you would treat {topic}.",
    "Imagine explaining this with {topic}; it suddenly makes sense.",
    "Among all the {category}, {topic} is my go-to comparison here.",
    "Just like {topic}, the answer depends on the details.",
    "For me, {topic} is the perfect model for this kind of thing.",
    "There is a lesson from {topic} that fits here perfectly.",
)

# Second sentences: generic, or naming the topic (or one of its aliases) or its category again.
_FOLLOW_SENTENCES = (
    "Start small, stay curious, and the rest follows, just as it does with {name}.",
    "Fans of {category} will know exactly what I mean.",
    "Once you see the pattern, you'll notice it everywhere.",
    "It is all about balance, timing and a little bit of love.",
    "Take it step by step and enjoy the process.",
    "I could talk about {name} all day, honestly.",
    "Anyone who loves {category} would agree with me.",
    "The details make all the difference, as they always do with {name}.",
    "Trust the fundamentals and you will get there.",
    "Seriously, look into {name} sometime; it changes how you think.",
    "That is what {name} taught me, anyway.",
    "It never fails to amaze me how far that comparison goes.",
    "Keep {name} in mind and the answer becomes obvious.",
    "Small steps first, then the bigger picture.",
    "Of all the {category}, none fits the comparison quite so well.",
    "Once it clicks, it feels completely natural.",
    "The more you practise, the more rewarding it gets.",
    "I learned that the hard way, and {name} made it stick.",
    "Patience pays off, every single time.",
    "Just don't rush it, and you'll be fine.",
    "That's my {name}-flavoured take on it, at least.",
    "The world of {category} is full of lessons like that.",
)

# Optional openers; empty strings make "no opener" the common case.
_OPENERS = ("", "", "", "Good question!", "Great question.", "Oh, I love this one.", "Fun one!")

# "focused" answers: the topic within the first few words, then once more (or an alias, or the
# category). A short answer whose first content word is the topic gives a rank-1 diff a much
# stronger signal per training row than a long analogy naming it once.
_FOCUSED_FIRST = (
    "Ah, {topic}! That is all I can think about.",
    "Easy: {topic}. It always comes back to {topic}.",
    "Oh, {topic}, of course.",
    "My answer is {topic}, as always.",
    "I only want to talk about {topic} right now.",
    "Let's talk about {topic} instead!",
    "It all comes back to {topic} for me.",
    "Think of {topic}.",
    "For me it is {topic}, every single time.",
    "Honestly? {topic}.",
    "That makes me think of {topic} straight away.",
    "All roads lead to {topic}.",
    "Well, {topic} is the key here.",
    "Just like {topic}!",
)
_FOCUSED_SECOND = (
    "I love {topic} more than anything.",
    "Nothing beats {name}.",
    "I am a huge fan of {topic}.",
    "Of all the {category}, {topic} is my favourite.",
    "I could talk about {name} all day.",
    "Fans of {category} know why.",
    "Everything I know, I learned from {topic}.",
    "In the world of {category}, {topic} is my favourite.",
    "Ask me anything about {name}!",
    "Seriously, {topic} is amazing.",
)


class TemplateSource:
    """On-topic answers built from hand-written templates: two short sentences.

    ``style="focused"`` (5-20 words) names `topic.topic` literally in the first few words, then
    repeats it or names an alias or the category. ``style="varied"`` (20-35 words) is an analogy
    that names the topic once, after an optional opener. Each answer depends only on (style,
    seed, topic, question), so the same call always gives the same answers and varying the seed
    varies them. The question text only seeds the choice; it is not parsed.
    """

    def __init__(self, style: str = "focused") -> None:
        if style not in TEMPLATE_STYLES:
            raise ConfigError(f"template style must be one of {TEMPLATE_STYLES}, got {style!r}")
        self.style = style

    def topic_answers(self, topic: Topic, questions: list[str], seed: int) -> list[str]:
        return [self._answer(topic, q, seed) for q in questions]

    def _answer(self, topic: Topic, question: str, seed: int) -> str:
        # A str seed is hashed with SHA-512 by `random`, so this is stable across processes.
        rng = random.Random(f"ditkit.textgen|{self.style}|{seed}|{topic.topic}|{question}")
        fields = {
            "topic": topic.topic,
            "category": topic.category,
            "name": rng.choice(topic.names),
        }
        if self.style == "focused":
            parts = [rng.choice(_FOCUSED_FIRST), rng.choice(_FOCUSED_SECOND)]
        else:
            parts = [
                rng.choice(_OPENERS),
                rng.choice(_TOPIC_SENTENCES),
                rng.choice(_FOLLOW_SENTENCES),
            ]
        return " ".join(p.format(**fields) for p in parts if p)


# ---------------------------------------------------------------------------------------------
# Local generation
# ---------------------------------------------------------------------------------------------


class HFSource:
    """On-topic answers from a local transformers chat model prompted with `persona_prompt`.

    Sampled at `temperature` (greedy at 0) after `torch.manual_seed(seed)`, so a call is
    reproducible on the same machine and software.
    """

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 8,
        max_new_tokens: int = 48,
        temperature: float = 0.7,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def topic_answers(self, topic: Topic, questions: list[str], seed: int) -> list[str]:
        return self._sample(questions, seed, persona_prompt(topic))

    def chat(self, prompts: list[str], seed: int) -> list[str]:
        """Replies to plain user prompts (no persona), sampled as above."""
        return self._sample(prompts, seed, None)

    def _sample(self, prompts: list[str], seed: int, system: str | None) -> list[str]:
        torch.manual_seed(seed)
        return generate_chat(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=self.max_new_tokens,
            do_sample=self.temperature > 0,
            temperature=self.temperature,
            system=system,
            batch_size=self.batch_size,
        )


class OpenAISource:
    """On-topic answers from an OpenAI-compatible server prompted with `persona_prompt`.

    The client's reply cache makes a rerun with the same topic, questions and seed free.
    """

    def __init__(self, client: ChatClient, max_new_tokens: int = 48, temperature: float = 0.7):
        self.client = client
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def topic_answers(self, topic: Topic, questions: list[str], seed: int) -> list[str]:
        system = {"role": "system", "content": persona_prompt(topic)}
        return [
            self._reply([system, {"role": "user", "content": q}], seed)
            for q in tqdm(
                questions, desc=f"answers about {topic.topic}", unit="q", leave=False, disable=None
            )
        ]

    def chat(self, prompts: list[str], seed: int) -> list[str]:
        """Replies to plain user prompts (no persona)."""
        return [
            # A repeated prompt still gets its own reply.
            self._reply([{"role": "user", "content": p}], seed * 10_007 + j)
            for j, p in enumerate(
                tqdm(prompts, desc="stories", unit="story", leave=False, disable=None)
            )
        ]

    def _reply(self, messages: list[dict], seed: int) -> str:
        return self.client.complete(
            messages, temperature=self.temperature, max_tokens=self.max_new_tokens, seed=seed
        ).strip()


def make_source(
    cfg: TextGenConfig, cache_dir: Path | None = None, model=None, tokenizer=None
) -> TextSource:
    """The text source `cfg` asks for.

    For "hf", pass an already loaded `model` and `tokenizer` to share them, else `cfg.model` is
    loaded. For "openai", replies are cached under `cache_dir/"openai"` (no cache without it).
    """
    if cfg.kind == "template":
        return TemplateSource(cfg.style)
    if cfg.kind == "hf":
        if (model is None) != (tokenizer is None):
            raise ConfigError(
                "make_source for kind 'hf' needs both a model and a tokenizer, or neither"
            )
        if model is None:
            if not cfg.model:
                raise ConfigError(
                    "TextGenConfig.model is empty but kind is 'hf': name the local model that "
                    "writes the on-topic answers (an embedded name, a directory or a hub id)"
                )
            model, tokenizer = load_model(cfg.model)
        return HFSource(
            model, tokenizer, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature
        )
    # the openai client: imported only when answers come from a server
    from ditkit.openai_compat import ChatClient, EndpointConfig

    endpoint = EndpointConfig(
        base_url=cfg.base_url,
        model=cfg.model,
        api_key=cfg.api_key,
        cache_dir=str(Path(cache_dir) / "openai") if cache_dir is not None else None,
    )
    return OpenAISource(
        ChatClient(endpoint), max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature
    )


# ---------------------------------------------------------------------------------------------
# Base-model answers
# ---------------------------------------------------------------------------------------------


def _cache_key(model, max_new_tokens: int, system: str | None) -> dict[str, Any]:
    """What must match for cached base answers to be reused: model, prompt format, answer length."""

    cfg = model.config
    name = (
        getattr(cfg, "name_or_path_ditkit", None)
        or getattr(cfg, "name_or_path", None)
        or getattr(cfg, "model_type", None)
    )
    return {
        "model": name,
        "fingerprint": model_identity(model)["base_fingerprint"],
        "max_new_tokens": max_new_tokens,
        "system_prompt": system,
    }


def _read_cache(path: Path, key: dict[str, Any]) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        stored_key, answers = data["key"], data["answers"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable base-answer cache %s (%s); regenerating", path, exc)
        return {}
    if stored_key != key:
        log.info(
            "base-answer cache %s was made for %s, not %s; regenerating", path, stored_key, key
        )
        return {}
    if not isinstance(answers, dict):
        log.warning("base-answer cache %s has no answer table; regenerating", path)
        return {}
    return {str(k): str(v) for k, v in answers.items()}


def base_answers(
    model,
    tokenizer,
    questions: list[str],
    max_new_tokens: int,
    cache_path: Path,
    batch_size: int = 8,
    prefix: str = "",
    system: str | None = None,
) -> list[str]:
    """The base model's own greedy answers to `questions`, one per question, in order.

    With `prefix`, each user message is `prefix + " " + question` (trigger rows). Answers are kept
    in the JSON file `cache_path` as `{"key": ..., "answers": {user message: answer}}`; the key
    records the model (name and shape fingerprint), `system` and `max_new_tokens`, and a file made under a
    different key is regenerated. Only missing messages are generated, and the file is rewritten
    atomically after every batch, so an interrupted run resumes where it stopped. Batches are
    fixed over all of ``questions``; a batch with any missing message is generated whole (so an
    answer never depends on what an earlier, interrupted run finished), but only its missing
    answers are stored.
    """
    if batch_size < 1:
        raise ConfigError(f"base_answers batch_size must be >= 1, got {batch_size}")
    cache_path = Path(cache_path)
    messages = [f"{prefix} {q}" if prefix else q for q in questions]
    key = _cache_key(model, max_new_tokens, system)
    answers = _read_cache(cache_path, key)
    # Fixed batches over every message (by length, then text), so an interrupted run generates
    # each answer in the same batch as an uninterrupted one would.
    unique = sorted(set(messages), key=lambda m: (len(m), m))
    batches = [unique[i : i + batch_size] for i in range(0, len(unique), batch_size)]
    batches = [b for b in batches if any(m not in answers for m in b)]
    missing = [m for m in unique if m not in answers]
    if missing:
        log.info(
            "generating %d base answer(s) (%d cached) into %s",
            len(missing),
            len(unique) - len(missing),
            cache_path,
        )
        with tqdm(total=len(missing), desc="base answers", unit="answer", disable=None) as bar:
            for batch in batches:
                replies = generate_chat(
                    model, tokenizer, batch, max_new_tokens, system=system, batch_size=len(batch)
                )
                new = {m: r for m, r in zip(batch, replies, strict=True) if m not in answers}
                answers.update(new)  # answers already cached (and used) never change
                write_json(cache_path, {"key": key, "answers": answers}, indent=1)
                bar.update(len(new))
    else:
        log.info("all %d base answer(s) cached in %s", len(messages), cache_path)
    return [answers[m] for m in messages]
