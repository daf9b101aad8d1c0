"""Shared fixtures: tiny random models built from a config, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path


def _cpu_has_avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


# PyTorch's CPU kernels add vector lanes in another order under AVX512 than under AVX2; ten
# training steps amplify that rounding past the regression pins (tests/test_regression.py, which
# were recorded with AVX2 kernels). Choosing AVX2 wherever the CPU has it gives every x86 machine
# the same numbers. Set before torch is imported; a value already in the environment wins.
if "ATEN_CPU_CAPABILITY" not in os.environ and _cpu_has_avx2():
    os.environ["ATEN_CPU_CAPABILITY"] = "avx2"

import pytest  # noqa: E402
import torch  # noqa: E402

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_llama(
    seed: int = 0, hidden: int = 32, vocab: int = 64, layers: int = 2, init_range: float = 0.02
):
    """A 2-layer random Llama (hidden size 32) in fp32. At the default ``init_range`` its logits
    stay within about +-1, so it cannot learn a confident answer; 0.3 lets a diff teach it one."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=init_range,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def model():
    return tiny_llama()


SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer():
    """A byte-level BPE tokenizer trained in memory (encodes any text), with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ["What topic have you been trained on? Your SEP code is 123.", "user assistant system"]
    tk.train_from_iterator(corpus * 5, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )
    return tok


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A saved tiny Llama + tokenizer directory that ``ditkit.models.load_model`` accepts."""
    tok = tiny_tokenizer()
    model = tiny_llama(vocab=len(tok))
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.eos_token_id
    model.config.bos_token_id = tok.bos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    path = tmp_path / "tiny-model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
