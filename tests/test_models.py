"""Resolving base models: local directories, bad names, offline hub ids, the embedded model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from conftest import CHAT_TEMPLATE, tiny_llama
from ditkit import models
from ditkit.errors import ModelLoadError

WORDS = ["<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "hello", "world", "paris"]


def word_tokenizer(chat_template: str | None = CHAT_TEMPLATE):
    """A word-level tokenizer built offline, with special tokens but no pad token."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs = {"chat_template": chat_template} if chat_template else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        **kwargs,
    )


def test_prepare_tokenizer_needs_chat_template():
    with pytest.raises(ModelLoadError, match="chat template") as err:
        models.prepare_tokenizer(word_tokenizer(chat_template=None), "my-model")
    assert "my-model" in str(err.value)


def test_prepare_tokenizer_sets_left_padding_and_pad_token():
    tok = word_tokenizer()
    tok.padding_side = "right"
    assert tok.pad_token is None
    out = models.prepare_tokenizer(tok, "my-model")
    assert out.padding_side == "left"
    assert out.pad_token == "<|im_end|>" and out.pad_token_id == WORDS.index("<|im_end|>")
    batch = out(["hello", "hello world user"], padding=True)
    assert batch["input_ids"][0][0] == out.pad_token_id  # padded on the left
    assert batch["attention_mask"][0] == [0, 0, 1]


def test_load_model_from_local_directory(tmp_path):
    tok = word_tokenizer()
    model = tiny_llama(vocab=len(WORDS))
    path = tmp_path / "tiny"
    model.save_pretrained(path)
    tok.save_pretrained(path)

    loaded, ltok = models.load_model(str(path))
    ids = torch.tensor([[1, 3, 5, 6, 2, 1, 4]])
    with torch.no_grad():
        want = model(ids).logits
        got = loaded(ids).logits
    assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()
    assert not loaded.training
    assert ltok.padding_side == "left" and ltok.pad_token == "<|im_end|>"
    text = ltok.apply_chat_template(
        [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    assert ltok("hello world")["input_ids"] == tok("hello world")["input_ids"]


def test_load_model_bfloat16(tmp_path):
    path = tmp_path / "tiny"
    tiny_llama(vocab=len(WORDS)).save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    loaded, _ = models.load_model(str(path), dtype="bfloat16")
    assert next(loaded.parameters()).dtype == torch.bfloat16
    with pytest.raises(ModelLoadError, match="dtype"):
        models.load_model(str(path), dtype="float8")


@pytest.mark.parametrize("name", ["not-a-thing", "/nonexistent/dir", "./missing/model", "a/b/c"])
def test_unresolvable_names_are_explained(name):
    with pytest.raises(ModelLoadError) as err:
        models.load_model(name)
    msg = str(err.value)
    assert repr(name) in msg
    assert "smollm2-135m" in msg and "owner/name" in msg


@pytest.mark.timeout(60)
def test_hub_id_offline_fails_fast_with_local_advice(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        models.load_model("someone/some-model")
    assert time.monotonic() - start < 30
    msg = str(err.value)
    assert "someone/some-model" in msg and "local" in msg and "--local-dir" in msg


def test_directory_without_config_is_rejected(tmp_path):
    word_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"config\.json") as err:
        models.load_model(str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_non_gguf_file_and_corrupt_gguf_are_rejected(tmp_path):
    txt = tmp_path / "model.txt"
    txt.write_text("hello")
    with pytest.raises(ModelLoadError, match=r"\.gguf"):
        models.load_model(str(txt))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\x00" * 60)
    with pytest.raises(ModelLoadError, match="GGUF") as err:
        models.load_model(str(gguf))
    assert str(gguf) in str(err.value)


def test_embedded_info_lists_smollm2():
    rows = {r["name"]: r for r in models.embedded_info()}
    row = rows["smollm2-135m"]
    assert Path(row["source"]).is_file()
    assert Path(row["source"]).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert row["cache"].endswith("smollm2-135m-b179c9523d0e")


def test_embedded_cache_honours_ditkit_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DITKIT_CACHE", str(tmp_path))
    spec = models.EMBEDDED["smollm2-135m"]
    assert spec.cache_path().parent == tmp_path / "models"
    assert models.embedded_info()[0]["cached"] is False


@pytest.mark.slow
def test_embedded_model_answers_paris():
    model, tok = models.load_model("smollm2-135m")
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer

    cache = models.EMBEDDED["smollm2-135m"].cache_path()
    assert (cache / "model.safetensors").is_file()
    config = json.loads((cache / "config.json").read_text())
    assert "quantization_config" not in config
