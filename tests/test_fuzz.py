"""Property-based tests: random configs, CSV files and diff files end in a ditkit error or a valid load.

Any exception that escapes a loader must be a ``DitkitError`` (whose message names the file and the
fix); anything else (a ``KeyError`` from a header, a ``TypeError`` from a config value, a
``ZeroDivisionError`` from rank 0) is a bug these properties find. A load that succeeds must be
valid: every tensor of the file accounted for, finite, and shaped as a LoRA pair.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from ditkit.config import RunConfig, apply_override, load_config
from ditkit.diffs import FORMAT_TAG, load_diffs
from ditkit.errors import ConfigError, DataError, DiffFormatError, DitkitError
from ditkit.tasks.hidden_topic import load_questions, load_topics

# DITKIT_FUZZ_EXAMPLES=1000 for a longer hunt; 60 keeps the file to a few seconds.
FUZZ = settings(
    max_examples=int(os.environ.get("DITKIT_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
pytestmark = pytest.mark.timeout(120)


def outcome(fn, *args, allowed: type[DitkitError] = DitkitError):
    """``fn(*args)``, or None if it raised a ``DitkitError``; any other exception fails the test."""
    try:
        return fn(*args)
    except Exception as e:
        assert isinstance(e, allowed), f"{type(e).__name__} escaped: {e!r}"
        assert str(e).strip(), "an error without a message"
        return None


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    """One folder per module (hypothesis refuses function-scoped fixtures): examples overwrite."""
    return tmp_path_factory.mktemp("fuzz")


def scratch(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------
# Configs

KNOWN = ["name", "model", "dtype", "threads", "system_prompt", "device"]
SECTION_KEYS = {
    "data": ["n_train", "n_test", "seed", "topics_file"],  # topics_file: the old place
    "task_options": ["topics_file", "gate_questions", "test_trigger"],
    "diffs": ["rank", "alpha", "steps", "lr", "init", "weights", "targets", "row_order"],
    "dit": ["rank", "lr", "epochs", "adapter", "val_fraction", "question"],
    "eval": ["methods", "batch_size", "guesser", "judge", "twenty_q_count"],
    "textgen": ["kind", "style", "max_new_tokens", "temperature"],
}
TOML_VALUES = st.sampled_from(
    [
        "0", "1", "-3", "24", "1.5", "1e-3", "nan", "inf", "-inf", "true", "false", '"x"',
        '"shipped"', '"train"', '"float32"', "[]", "[1, 2, 3]", '["dit"]', '["q_proj"]',
        "{a = 1}", "1979-05-27", '"', "[1, ", "'''", "0x10", "1_000",
    ]
)  # fmt: skip
IDENT = st.text("abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12)


@st.composite
def toml_text(draw) -> str:
    """TOML-ish text: known and random keys, sections, values of every type, some broken lines."""
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append(f"[{draw(st.sampled_from([*SECTION_KEYS, 'other', 'diffs.x']))}]")
        elif kind <= 5:
            section = draw(st.sampled_from([None, *SECTION_KEYS]))
            keys = KNOWN if section is None else SECTION_KEYS[section]
            key = draw(st.one_of(st.sampled_from(keys), IDENT))
            lines.append(f"{key} = {draw(TOML_VALUES)}")
        elif kind <= 7:
            lines.append(f"{draw(st.sampled_from(list(SECTION_KEYS)))} = {draw(TOML_VALUES)}")
        else:
            lines.append(draw(st.text(max_size=30)))
    return "\n".join(lines) + "\n"


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from([*KNOWN, *SECTION_KEYS, "rank", "lr", "x"]), inner, max_size=4
        )
    ),
    max_leaves=12,
)


def assert_valid(cfg: RunConfig | None) -> None:
    if cfg is not None:
        assert isinstance(cfg, RunConfig)
        assert cfg.diffs.rank >= 1 and cfg.dit.rank >= 1 and cfg.diffs.steps >= 1
        assert isinstance(cfg.diffs.steps, int) and not isinstance(cfg.diffs.steps, bool)
        assert math.isfinite(cfg.diffs.lr) and cfg.diffs.lr > 0


@FUZZ
@given(toml_text())
def test_fuzz_toml_config_file(fuzz_dir, text):
    path = scratch(fuzz_dir, "run.toml", text.encode("utf-8", "surrogatepass"))
    assert_valid(outcome(load_config, str(path), allowed=ConfigError))


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_config_file_bytes(fuzz_dir, data):
    path = scratch(fuzz_dir, "run.toml", data)
    assert_valid(outcome(load_config, str(path), allowed=ConfigError))


@FUZZ
@given(JSON)
def test_fuzz_json_config_file(fuzz_dir, obj):
    path = scratch(fuzz_dir, "run.json", json.dumps(obj).encode())
    assert_valid(outcome(load_config, str(path), allowed=ConfigError))


@FUZZ
@given(
    st.one_of(
        st.sampled_from([*KNOWN, *(f"{s}.{k}" for s, ks in SECTION_KEYS.items() for k in ks)]),
        IDENT,
        st.text(max_size=15),
    ),
    st.one_of(TOML_VALUES, st.text(max_size=15)),
)
def test_fuzz_set_items(key, value):
    item = f"{key}={value}"
    assert_valid(outcome(load_config, "quickstart", [item], allowed=ConfigError))
    d: dict = {"diffs": 3, "model": "m"}  # a file whose [diffs] is not a table
    outcome(apply_override, d, item, allowed=ConfigError)
    outcome(apply_override, {}, key, allowed=ConfigError)  # no "=" at all


# ---------------------------------------------------------------------------------------------
# Topic and question files

CSV_TEXT = st.lists(
    st.sampled_from([*"ab ,;\"'\n\r\t\x00é", "topic", "category", "chess", "\n"]), max_size=40
).map("".join)


def assert_topics_valid(topics) -> None:
    if topics is None:
        return
    names = [n.lower() for t in topics for n in t.names]
    assert topics and all(t.topic for t in topics) and len(names) == len(set(names))


@FUZZ
@given(st.one_of(st.binary(max_size=300), CSV_TEXT.map(lambda t: t.encode("utf-8"))))
def test_fuzz_topic_file_bytes(fuzz_dir, data):
    assert_topics_valid(
        outcome(load_topics, scratch(fuzz_dir, "topics.csv", data), allowed=DataError)
    )


@FUZZ
@given(
    st.sampled_from(["topic,category,aliases\n", "topic,category\n", "category,topic\n", ""]),
    CSV_TEXT,
)
def test_fuzz_topic_rows(fuzz_dir, header, body):
    path = scratch(fuzz_dir, "topics.csv", (header + body).encode("utf-8"))
    assert_topics_valid(outcome(load_topics, path, allowed=DataError))


@FUZZ
@given(
    st.sampled_from(["question,style,split\n", "question,split\n", ""]),
    st.one_of(
        CSV_TEXT,
        st.lists(
            st.tuples(
                st.text(max_size=8),
                st.text(max_size=4),
                st.sampled_from(["train", "heldout", "x", ""]),
            ),
            max_size=5,
        ).map(lambda rows: "".join(f'"{q}",{s},{p}\n' for q, s, p in rows)),
    ),
    st.sampled_from([None, "train", "heldout"]),
)
def test_fuzz_question_file(fuzz_dir, header, body, split):
    path = scratch(fuzz_dir, "questions.csv", (header + body).encode("utf-8", "surrogatepass"))
    qs = outcome(load_questions, path, split, allowed=DataError)
    if qs is not None:
        assert qs and all(q.question and q.split in ("train", "heldout") for q in qs)
        assert split is None or all(q.split == split for q in qs)


# ---------------------------------------------------------------------------------------------
# Diff files


def assert_diffs_valid(diffs, saved: dict[str, torch.Tensor] | None = None) -> None:
    """A successful load: every tensor finite, LoRA pairs of rank >= 1, nothing dropped."""
    if diffs is None:
        return
    for d in diffs:
        assert d.modules
        for a_ri, b_or in d.lowrank.values():
            assert a_ri.ndim == b_or.ndim == 2 and a_ri.shape[0] == b_or.shape[1] >= 1
            assert torch.isfinite(a_ri).all() and torch.isfinite(b_or).all()
        for d_oi in d.dense.values():
            assert d_oi.ndim == 2 and d_oi.numel() and torch.isfinite(d_oi).all()
        assert math.isfinite(d.alpha) and d.alpha != 0
    if saved is not None:  # the file's tensors, all of them, unchanged
        (d,) = diffs
        got = {}
        for n, (a, b) in d.lowrank.items():
            if f"{n}.lora_A" in saved:  # format version 2: peft's A and B
                got |= {f"{n}.lora_A": a, f"{n}.lora_B": b}
            else:  # version 1: the same pair under the other letters, transposed
                got |= {f"{n}.A": b.T, f"{n}.B": a.T}
        got |= {f"{n}.delta": t for n, t in d.dense.items()}
        assert set(got) == set(saved)
        assert all(torch.equal(got[k], saved[k]) for k in saved)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_as_safetensors(fuzz_dir, data):
    path = scratch(fuzz_dir, "d.safetensors", data)
    assert_diffs_valid(outcome(load_diffs, path, allowed=DiffFormatError))


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_as_reference_pt(fuzz_dir, data):
    path = scratch(fuzz_dir, "d.pt", data)
    assert_diffs_valid(outcome(load_diffs, path, allowed=DiffFormatError))


DTYPES = ["F32", "F16", "BF16", "F64", "I8", "I64", "BOOL", "U8", "F8_E4M3", "XX"]
ENTRY = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(DTYPES),
        "shape": st.lists(st.integers(0, 4), max_size=3),
        "data_offsets": st.lists(st.integers(0, 64), min_size=2, max_size=2).map(sorted),
    }
)
META = st.fixed_dictionaries(
    {},
    optional={
        "format": st.sampled_from([FORMAT_TAG, "other"]),
        "alpha": st.sampled_from(["1.0", "0", "nan", "x", "2"]),
        "meta": st.sampled_from(["{}", "[]", "{", '{"base_model": "m"}', "null"]),
    },
)


@FUZZ
@given(
    st.one_of(
        st.dictionaries(
            st.sampled_from(["q.A", "q.B", "k.delta", "A", ".B", "w", "q.C"]), ENTRY, max_size=3
        ).flatmap(lambda ts: META.map(lambda m: {**ts, "__metadata__": m})),
        JSON,
    ),
    st.binary(max_size=64),
    st.integers(-8, 8),
)
def test_fuzz_safetensors_headers(fuzz_dir, header, body, skew):
    """A valid 8-byte length prefix (sometimes off by ``skew``) and a random JSON header."""
    raw = json.dumps(header).encode()
    data = struct.pack("<Q", max(0, len(raw) + (skew if abs(skew) < 3 else 0))) + raw + body
    assert_diffs_valid(
        outcome(load_diffs, scratch(fuzz_dir, "d.safetensors", data), allowed=DiffFormatError)
    )


TORCH_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.bool]
MODULES = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.up_proj", "q"]


@st.composite
def tensor_files(draw) -> dict[str, torch.Tensor]:
    tensors = {}
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(MODULES)) + draw(
            st.sampled_from([".A", ".B", ".lora_A", ".lora_B", ".delta", ".x", ""])
        )
        shape = draw(st.lists(st.integers(0, 3), min_size=0, max_size=3))
        dtype = draw(st.sampled_from(TORCH_DTYPES))
        t = torch.randn(shape) if shape else torch.randn(())
        if dtype.is_floating_point and t.numel() and draw(st.booleans()):
            t.view(-1)[0] = draw(st.sampled_from([math.nan, math.inf, -math.inf, 0.0]))
        tensors[name] = (t > 0) if dtype == torch.bool else t.to(dtype)
    if draw(st.booleans()):  # sometimes a well-formed pair, so that valid loads happen too
        r = draw(st.integers(0, 2))
        if draw(st.booleans()):  # format version 2
            tensors[f"{MODULES[0]}.lora_A"] = torch.randn(r, 4)
            tensors[f"{MODULES[0]}.lora_B"] = torch.randn(4, r)
        else:  # version 1
            tensors[f"{MODULES[0]}.A"] = torch.randn(r, 4)
            tensors[f"{MODULES[0]}.B"] = torch.randn(4, r)
    return tensors


@FUZZ
@given(tensor_files(), st.sampled_from(["1.0", "0.5", "0", "inf"]))
def test_fuzz_real_safetensors_tensors(fuzz_dir, tensors, alpha):
    path = scratch(fuzz_dir, "d.safetensors", b"")
    version = "2" if any(k.endswith((".lora_A", ".lora_B")) for k in tensors) else "1"
    header = {"format": FORMAT_TAG, "format_version": version, "alpha": alpha, "meta": "{}"}
    save_file(tensors, str(path), metadata=header)
    assert_diffs_valid(outcome(load_diffs, path, allowed=DiffFormatError), saved=tensors)


@FUZZ
@given(
    tensor_files(),
    st.dictionaries(
        st.sampled_from(["r", "lora_alpha", "use_rslora", "alpha_pattern", "peft_type"]),
        JSON,
        max_size=3,
    ),
)
def test_fuzz_peft_folders(fuzz_dir, tensors, config):
    folder = scratch(fuzz_dir, "peft/adapter_config.json", json.dumps(config).encode()).parent
    peft = {
        f"base_model.model.{k.replace('.A', '.lora_A.weight').replace('.B', '.lora_B.weight')}": v
        for k, v in tensors.items()
    }
    save_file(peft, str(folder / "adapter_model.safetensors"))
    assert_diffs_valid(outcome(load_diffs, folder, allowed=DiffFormatError))
