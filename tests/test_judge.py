"""Judge and guessers: score parsing, a real OpenAI-style server on 127.0.0.1, local HF models."""

from __future__ import annotations

import numpy as np
import pytest

from ditkit.errors import ConfigError, DataError
from ditkit.evaluate.judge import (
    HFGuesser,
    LLMJudge,
    OpenAIGuesser,
    RetrievalGuesser,
    clean_guess,
    guess_prompt,
    parse_score,
)
from ditkit.openai_compat import ChatClient, EndpointConfig
from ditkit.tasks.base import get_task
from ditkit.tasks.hidden_topic import RUBRIC as TOPIC
from ditkit.tasks.news import RUBRIC as NEWS
from fake_openai import FakeOpenAI, bypass_proxies


def judge_client(server: FakeOpenAI) -> ChatClient:
    return ChatClient(EndpointConfig(base_url=server.url, model="judge-model", max_retries=0))


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    bypass_proxies(monkeypatch)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Both are string instruments.\nSCORE: 4", 4),
        ("**Score:** 2", 2),
        ("I first thought SCORE: 2, but on reflection\nSCORE: 5", 5),
        ("5", 5),
        ("SCORE: 7", 1),
        ("SCORE: 0", 1),
        ("SCORE: 4.5", 1),
        ("The guess is great, a perfect match", 1),
        ("", 1),
    ],
)
def test_parse_score(text, expected):
    assert parse_score(text) == expected


def test_judge_scores_come_from_the_server_and_garbage_counts_as_1():
    replies = ["Same instrument family.\nSCORE: 4", "I cannot decide, sorry!", "SCORE: 5"]
    with FakeOpenAI(replies, default=None) as server:
        judge = LLMJudge(judge_client(server), TOPIC)
        scores = [
            judge.score("cello", "violin"),
            judge.score("something", "volcanoes"),
            judge.score("volcano", "volcanoes"),
        ]
    assert scores == [4, 1, 5]
    first = server.requests[0]
    assert first["temperature"] == 0.0
    assert "conservative" in first["messages"][0]["content"]
    assert "violin" in first["messages"][1]["content"]
    assert "cello" in first["messages"][1]["content"]
    assert judge.info() == {"judge_model": "judge-model", "judge_base_url": server.url}


def test_judge_empty_prediction_scores_1_without_a_request():
    with FakeOpenAI([], default=None) as server:
        judge = LLMJudge(judge_client(server), TOPIC)
        assert judge.score("  ", "volcanoes") == 1
    assert server.requests == []


def test_news_judge_uses_the_headline_rubric():
    with FakeOpenAI(["SCORE: 3"], default=None) as server:
        judge = LLMJudge(judge_client(server), NEWS)
        assert judge.score("Storm hits coast", "Hurricane floods Miami") == 3
    system = server.requests[0]["messages"][0]["content"]
    assert "headline" in system and "Nearly identical" in system


def test_rubrics_come_from_the_tasks():
    assert "SCORE: N" in TOPIC.grading and "SCORE: N" in NEWS.grading
    assert get_task("hidden_topic").judge_rubric is TOPIC
    assert get_task("news").judge_rubric is NEWS
    assert "headline" in guess_prompt(TRANSCRIPT, NEWS) and "topic" in guess_prompt(
        TRANSCRIPT, TOPIC
    )


TRANSCRIPT = [
    ("What should I cook tonight?", "Something fiery, like lava: a volcano of chili!"),
    ("How do I fix my bike?", "Patience, like magma slowly rising."),
]


def test_openai_guesser_returns_the_servers_phrase():
    with FakeOpenAI(['Topic: "Volcanoes".\nThey kept mentioning lava.'], default=None) as server:
        guess = OpenAIGuesser(judge_client(server), TOPIC).guess(TRANSCRIPT)
    assert guess == "Volcanoes"
    prompt = server.requests[0]["messages"][0]["content"]
    assert "magma slowly rising" in prompt and "How do I fix my bike?" in prompt


def test_guess_prompt_rejects_empty_transcript():
    with pytest.raises(DataError):
        guess_prompt([], TOPIC)


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("\n  Jazz piano  \nbecause...", "Jazz piano"),
        ("**Coffee**", "Coffee"),
        ('Topic: "Deep-sea fish."', "Deep-sea fish"),
        ("", ""),
    ],
)
def test_clean_guess(raw, expected):
    assert clean_guess(raw) == expected


# ---------------------------------------------------------------- local HF guesser


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<|user|>", "<|assistant|>", "shark", "whale", "tail", "fin"]
    words += guess_prompt(TRANSCRIPT, TOPIC).replace("\n", " ").split()
    vocab = {w: i for i, w in enumerate(dict.fromkeys(["<unk>", *words]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    fast.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|> {{ m.content }} <eos> {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return fast


class FakeLM:
    """Stands in for a causal LM: appends fixed tokens and records the generate() arguments."""

    def __init__(self, new_ids):
        import torch

        self.device = torch.device("cpu")
        self.new_ids = new_ids
        self.kwargs = None

    def generate(self, input_ids, attention_mask, **kwargs):
        import torch

        self.kwargs = {"input_ids": input_ids, **kwargs}
        return torch.cat([input_ids, torch.tensor([self.new_ids])], dim=1)


def test_hf_guesser_decodes_only_new_tokens_greedily():
    tok = _tiny_tokenizer()
    ids = tok.convert_tokens_to_ids(["shark", "fin", "<eos>"])
    model = FakeLM(ids)
    guess = HFGuesser(model, tok, TOPIC, max_new_tokens=16).guess(TRANSCRIPT)
    assert guess == "shark fin"
    assert model.kwargs["do_sample"] is False
    assert model.kwargs["max_new_tokens"] == 16
    prompt_tokens = tok.convert_ids_to_tokens(model.kwargs["input_ids"][0].tolist())
    assert prompt_tokens[0] == "<|user|>" and prompt_tokens[-1] == "<|assistant|>"


def test_hf_guesser_runs_a_tiny_real_model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(cfg).eval()
    guess = HFGuesser(model, tok, TOPIC, max_new_tokens=4).guess(TRANSCRIPT)
    assert isinstance(guess, str)
    assert len(guess.split()) <= 4  # only the new tokens, never the prompt


def test_hf_guesser_needs_a_chat_template():
    tok = _tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(ConfigError, match="chat template"):
        HFGuesser(FakeLM([]), tok, TOPIC)


# ---------------------------------------------------------------- retrieval guesser


class BagOfWords:
    """A deterministic stand-in embedder: unit-length word-count vectors over a fixed vocabulary."""

    vocab = ("volcano", "lava", "magma", "shark", "fin", "ocean", "piano", "jazz")

    def encode(self, texts):
        vecs = np.zeros((len(texts), len(self.vocab)), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().replace(",", " ").replace(".", " ").split():
                for j, v in enumerate(self.vocab):
                    if word.startswith(v):
                        vecs[i, j] += 1
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)


def test_retrieval_guesser_picks_the_nearest_topic():
    guesser = RetrievalGuesser(BagOfWords(), ["jazz piano", "sharks and fins", "volcano lava"])
    assert guesser.guess(TRANSCRIPT) == "volcano lava"
    assert guesser.guess([("q", "A shark fin in the ocean")]) == "sharks and fins"
    with pytest.raises(DataError):
        RetrievalGuesser(BagOfWords(), [" "])
