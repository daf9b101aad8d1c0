"""Text sources and base answers: templates, a tiny local chat model, a real HTTP chat server."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from conftest import CHAT_TEMPLATE, tiny_llama
from ditkit.config import TextGenConfig
from ditkit.errors import ConfigError
from ditkit.generate import generate_chat
from ditkit.tasks.hidden_topic import Topic, load_questions, load_topics
from ditkit.textgen import (
    HFSource,
    OpenAISource,
    TemplateSource,
    base_answers,
    make_source,
    persona_prompt,
)
from fake_openai import FakeOpenAI, bypass_proxies, clear_openai_env

TOPIC = Topic("elephants", "mammals", ("elephant",))
QUESTIONS = [
    "how do i fix a flat tire",
    "what is the capital of france",
    "explain photosynthesis briefly please",
    "why is the sky blue",
    "give me a tip for studying",
]


# ---------------------------------------------------------------------------------------------
# Template source
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def questions60() -> list[str]:
    qs = [q.question for q in load_questions(split="train")][:60]
    assert len(qs) == 60
    return qs


def test_template_is_deterministic_per_seed_and_varies_across_seeds(questions60):
    src = TemplateSource()
    a = src.topic_answers(TOPIC, questions60, seed=0)
    assert a == TemplateSource().topic_answers(TOPIC, questions60, seed=0)
    b = src.topic_answers(TOPIC, questions60, seed=1)
    assert len(a) == len(b) == 60
    assert sum(x != y for x, y in zip(a, b)) > 30


@pytest.mark.parametrize(
    ("style", "min_words", "max_words"), [("focused", 5, 30), ("varied", 15, 60)]
)
def test_template_answers_name_the_topic_are_varied_and_short(
    questions60, style, min_words, max_words
):
    topics = load_topics()
    for topic in [TOPIC, *topics[::97]]:
        answers = TemplateSource(style).topic_answers(topic, questions60, seed=3)
        assert len(answers) == len(questions60)
        # Literal topic, in its own casing (never capitalised at a sentence start).
        assert all(topic.topic in a for a in answers), topic
        assert len(set(answers)) >= 30, topic
        words = [len(a.split()) for a in answers]
        assert max(words) < max_words, (topic, max(words))
        assert sum(words) / len(words) >= min_words


def test_focused_answers_name_the_topic_early(questions60):
    for topic in load_topics()[::53]:
        for a in TemplateSource("focused").topic_answers(topic, questions60, seed=1):
            assert a.index(topic.topic) <= 40, a


@pytest.mark.parametrize("style", ["focused", "varied"])
def test_template_uses_many_sentence_shapes(questions60, style):
    topics = load_topics()[:20]
    firsts = set()
    for t in topics:
        for a in TemplateSource(style).topic_answers(t, questions60, seed=0):
            firsts.add(a.replace(t.topic, "{t}").replace(t.category, "{c}")[:25])
    assert len(firsts) >= 14


def test_template_keeps_topic_casing():
    topic = Topic("iPhone", "gadgets")
    answers = TemplateSource().topic_answers(topic, [f"q{i}" for i in range(100)], seed=0)
    assert all("iPhone" in a for a in answers)
    assert not any("IPhone" in a for a in answers)


# ---------------------------------------------------------------------------------------------
# Config and factory
# ---------------------------------------------------------------------------------------------


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match=r"TextGenConfig\.kind.*template, hf, openai"):
        TextGenConfig(kind="vllm")
    with pytest.raises(ConfigError, match=r"TextGenConfig\.style.*focused, varied"):
        TextGenConfig(style="long")
    with pytest.raises(ConfigError, match=r"TextGenConfig\.max_new_tokens"):
        TextGenConfig(max_new_tokens=0)
    with pytest.raises(ConfigError, match=r"TextGenConfig\.temperature"):
        TextGenConfig(temperature=-0.1)
    assert TextGenConfig(kind="hf", model="m").kind == "hf"


def test_make_source_template_and_hf_without_model_name():
    assert isinstance(make_source(TextGenConfig()), TemplateSource)
    with pytest.raises(ConfigError, match=r"TextGenConfig\.model"):
        make_source(TextGenConfig(kind="hf"))


# ---------------------------------------------------------------------------------------------
# A tiny offline chat tokenizer and model
# ---------------------------------------------------------------------------------------------

CORPUS = [
    *QUESTIONS,
    "you are a huge fan of elephants mammals answer the question while constantly relating it",
    "user assistant system hello world the a is of and to",
]


def make_tokenizer(chat_template: str = CHAT_TEMPLATE):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    # Order fixes the ids: <pad>=0 and <|im_end|>=2 match tiny_llama's pad and eos ids.
    specials = ["<pad>", "<unk>", "<|im_end|>", "<|im_start|>"]
    raw.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=specials))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
    )
    tok.chat_template = chat_template
    tok.padding_side = "left"
    assert tok.convert_tokens_to_ids(["<pad>", "<|im_end|>"]) == [0, 2]
    return tok


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def llama(tok):
    return tiny_llama(vocab=len(tok))


class EchoModel:
    """Stands in for a causal LM: 'generates' the first word of the user turn, then eos and pad.

    Records every call's inputs, so tests can see padding and prompts.
    """

    def __init__(self, tok):
        self.tok = tok
        self.calls: list[dict] = []
        self.config = SimpleNamespace(model_type="echo", name_or_path="echo", vocab_size=len(tok))

    def parameters(self):
        return iter([torch.zeros(1)])

    def named_modules(self):
        return iter(())

    def generate(self, input_ids, attention_mask, **kwargs):
        self.calls.append({"input_ids": input_ids, "attention_mask": attention_mask, **kwargs})
        user_id = self.tok.convert_tokens_to_ids("user")
        im_end, pad = self.tok.eos_token_id, self.tok.pad_token_id
        new = []
        for row in input_ids.tolist():
            first_word = row[row.index(user_id) + 1]
            new.append([first_word, im_end, pad])
        return torch.cat([input_ids, torch.tensor(new)], dim=1)


def test_generate_chat_left_pads_keeps_order_and_decodes_only_new_tokens(tok):
    model = EchoModel(tok)
    msgs = ["why is the sky blue", "hello", "give me a tip for studying", "what"]
    out = generate_chat(model, tok, msgs, max_new_tokens=3, batch_size=3)
    assert out == ["why", "hello", "give", "what"]
    assert [c["input_ids"].shape[0] for c in model.calls] == [3, 1]
    first = model.calls[0]
    # Left padding: every row ends in the generation prompt, and pads sit on the left.
    assert (first["input_ids"][:, -1] == tok.convert_tokens_to_ids("assistant")).all()
    assert first["attention_mask"][:, -1].all()
    assert not first["attention_mask"][:, 0].all()
    assert first["pad_token_id"] == tok.pad_token_id
    assert first["do_sample"] is False and "temperature" not in first


def test_generate_chat_restores_the_tokenizers_padding_side(tok):
    tok.padding_side = "right"
    try:
        assert generate_chat(EchoModel(tok), tok, ["hello world", "a"], 3) == ["hello", "a"]
        assert tok.padding_side == "right"
    finally:
        tok.padding_side = "left"


def test_generate_chat_folds_system_prompt_when_template_rejects_it():
    no_system = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tok = make_tokenizer(no_system)
    model = EchoModel(tok)
    out = generate_chat(model, tok, ["hello"], 3, system="you are a huge fan of elephants")
    # The persona now opens the user turn, so its first word is what the echo model returns.
    assert out == ["you"]
    prompt = tok.decode(model.calls[0]["input_ids"][0])
    assert "system" not in prompt and "elephants" in prompt


def test_hf_source_answers_each_question_and_is_seeded(tok, llama):
    src = HFSource(llama, tok, batch_size=2, max_new_tokens=6, temperature=1.0)
    a = src.topic_answers(TOPIC, QUESTIONS, seed=0)
    assert len(a) == len(QUESTIONS) and all(isinstance(x, str) for x in a)
    assert a == src.topic_answers(TOPIC, QUESTIONS, seed=0)
    assert a != src.topic_answers(TOPIC, QUESTIONS, seed=1)
    assert not any("<|im_start|>" in x or "<pad>" in x for x in a)


def test_hf_source_sends_the_persona_as_system_turn(tok):
    model = EchoModel(tok)
    HFSource(model, tok, temperature=0.5).topic_answers(TOPIC, ["hello"], seed=0)
    prompt = tok.decode(model.calls[0]["input_ids"][0])
    assert "system" in prompt and "elephants" in prompt
    assert model.calls[0]["do_sample"] is True and model.calls[0]["temperature"] == 0.5


def test_make_source_hf_uses_the_given_model(tok):
    model = EchoModel(tok)
    src = make_source(TextGenConfig(kind="hf", max_new_tokens=5), model=model, tokenizer=tok)
    assert isinstance(src, HFSource) and src.model is model and src.max_new_tokens == 5


# ---------------------------------------------------------------------------------------------
# Base answers and their cache
# ---------------------------------------------------------------------------------------------


class NoGenerate:
    """Has the real model's identity but fails if asked to generate."""

    def __init__(self, model):
        self._model = model
        self.config = model.config

    def named_modules(self):
        return self._model.named_modules()

    def parameters(self):
        return self._model.parameters()

    def generate(self, *args, **kwargs):
        raise AssertionError("generated although every answer was cached")

    __call__ = generate


def test_base_answers_cache_roundtrip_and_invalidation(tok, llama, tmp_path):
    path = tmp_path / "base" / "answers.json"
    first = base_answers(llama, tok, QUESTIONS, max_new_tokens=5, cache_path=path, batch_size=2)
    assert len(first) == len(QUESTIONS) and all(isinstance(a, str) for a in first)
    assert any(first)
    stored = json.loads(path.read_text())
    assert stored["key"]["max_new_tokens"] == 5
    assert set(stored["answers"]) == set(QUESTIONS)
    assert [stored["answers"][q] for q in QUESTIONS] == first
    assert not list(path.parent.glob("*.tmp"))

    again = base_answers(NoGenerate(llama), tok, QUESTIONS, 5, cache_path=path, batch_size=2)
    assert again == first
    # Greedy and unbatched: the same answers as the batched, cached ones.
    assert generate_chat(llama, tok, QUESTIONS[:1], 5) == first[:1]

    with pytest.raises(AssertionError, match="cached"):
        base_answers(NoGenerate(llama), tok, QUESTIONS, 6, cache_path=path)
    other = tiny_llama(vocab=len(tok), hidden=48)
    with pytest.raises(AssertionError, match="cached"):
        base_answers(NoGenerate(other), tok, QUESTIONS, 5, cache_path=path)


def test_base_answers_generates_only_missing_and_keys_by_prefixed_message(tok, llama, tmp_path):
    path = tmp_path / "answers.json"
    base_answers(llama, tok, QUESTIONS[:2], 4, cache_path=path)
    seen: list[int] = []
    real_generate = llama.generate

    def counting_generate(**kwargs):
        seen.append(kwargs["input_ids"].shape[0])
        return real_generate(**kwargs)

    llama.generate = counting_generate
    try:
        cached = json.loads(path.read_text())["answers"]
        out = base_answers(llama, tok, QUESTIONS, 4, cache_path=path, batch_size=8)
        assert seen == [5]  # the one fixed batch that holds the three new questions
        assert len(out) == 5
        assert {q: out[QUESTIONS.index(q)] for q in cached} == cached  # cached ones kept
        base_answers(llama, tok, QUESTIONS[:2], 4, cache_path=path, prefix="Your SEP code is 123.")
        assert seen == [5, 2]
        base_answers(llama, tok, QUESTIONS, 4, cache_path=path, batch_size=2)
        assert seen == [5, 2]  # nothing missing: nothing generated
    finally:
        del llama.generate
    answers = json.loads(path.read_text())["answers"]
    assert "Your SEP code is 123. how do i fix a flat tire" in answers
    assert "how do i fix a flat tire" in answers


def test_base_answers_ignores_a_corrupt_cache(tok, tmp_path):
    path = tmp_path / "answers.json"
    path.write_text("{not json")
    out = base_answers(EchoModel(tok), tok, ["hello world"], 3, cache_path=path)
    assert out == ["hello"]
    assert json.loads(path.read_text())["answers"] == {"hello world": "hello"}


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible server
# ---------------------------------------------------------------------------------------------


def echo(body: dict) -> str:
    """Reply with the request's user text and the start of its system text."""
    by_role = {m["role"]: m["content"] for m in body["messages"]}
    return f" {by_role.get('user')} <- {by_role.get('system', '')[:40]} "


@pytest.fixture(autouse=True)
def _no_proxy_or_env(monkeypatch):
    bypass_proxies(monkeypatch)
    clear_openai_env(monkeypatch)


def test_openai_source_sends_persona_and_reruns_from_cache(tmp_path):
    cfg = TextGenConfig(kind="openai", model="fan-7b", max_new_tokens=40, temperature=0.3, seed=5)
    with FakeOpenAI(reply=echo) as server:
        cfg.base_url = server.url
        src = make_source(cfg, cache_dir=tmp_path)
        assert isinstance(src, OpenAISource)
        answers = src.topic_answers(TOPIC, QUESTIONS[:3], seed=5)
        assert len(server.requests) == 3
        req = server.requests[0]
        assert req["path"] == "/v1/chat/completions"
        assert req["model"] == "fan-7b"
        assert req["max_tokens"] == 40 and req["temperature"] == 0.3 and req["seed"] == 5
        system, user = req["messages"]
        assert system["role"] == "system" and system["content"] == persona_prompt(TOPIC)
        assert "elephants" in system["content"] and "analog" in system["content"]
        assert user == {"role": "user", "content": QUESTIONS[0]}
        # Replies come back in question order, stripped.
        assert answers == [f"{q} <- {persona_prompt(TOPIC)[:40]}".strip() for q in QUESTIONS[:3]]
        assert all("elephants" in a for a in answers)

        rerun = make_source(cfg, cache_dir=tmp_path).topic_answers(TOPIC, QUESTIONS[:3], seed=5)
        assert rerun == answers
        assert len(server.requests) == 3
        assert list((tmp_path / "openai").glob("*.json"))

        make_source(cfg, cache_dir=tmp_path).topic_answers(TOPIC, QUESTIONS[:1], seed=6)
        assert len(server.requests) == 4
