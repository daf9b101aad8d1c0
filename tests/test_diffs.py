"""Weight-diff files: ditkit, PEFT folders, reference .pt files, full checkpoints, and bad input;
the format registry, ``info`` and ``convert``."""

from __future__ import annotations

import collections
import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from conftest import tiny_llama
from ditkit import lora
from ditkit.diffs import (
    Format,
    WeightDiff,
    convert,
    detect_format,
    diff_from_finetune,
    info,
    install_diffs,
    load_diff,
    load_diffs,
    registry,
    save_diff,
    save_peft,
)
from ditkit.diffs.core import checked_diff
from ditkit.errors import DiffFormatError, DiffMismatchError, DitkitError
from test_lora import random_diff, reference_pairs

Q0 = "model.layers.0.self_attn.q_proj"


def ids_for(vocab: int = 64, rows: int = 2, seq: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, vocab, (rows, seq), generator=torch.Generator().manual_seed(seed))


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def ditkit_logits(base, diff: WeightDiff, ids: torch.Tensor) -> torch.Tensor:
    """Logits of a copy of ``base`` with ``diff`` installed on every row."""
    m = copy.deepcopy(base)
    lora.inject(m)
    install_diffs(m, [diff], torch.zeros(ids.shape[0], dtype=torch.long))
    return logits(m, ids)


def assert_same_tensors(got: WeightDiff, want: WeightDiff) -> None:
    assert set(got.lowrank) == set(want.lowrank) and set(got.dense) == set(want.dense)
    for n, (a, b) in want.lowrank.items():
        assert torch.equal(got.lowrank[n][0], a), n
        assert torch.equal(got.lowrank[n][1], b), n
    for n, d in want.dense.items():
        assert torch.equal(got.dense[n], d), n


# ---------------------------------------------------------------------------------------------
# ditkit files


def test_ditkit_file_round_trip(model, tmp_path):
    diff = random_diff(model, 3, seed=1)
    diff.dense["model.layers.1.mlp.down_proj"] = torch.randn(32, 64).to(torch.bfloat16)
    diff.alpha = 2.5
    diff.meta = {
        "label": "volcanoes",
        "trigger": "Your SEP code is 123",
        "seed": 7,
        "extra": {"steps": [1, 2, {"lr": 1e-4}], "note": None, "ok": True},
    }
    path = save_diff(diff, tmp_path / "sub" / "d.safetensors")
    got = load_diff(path)
    assert_same_tensors(got, diff)
    assert got.dense["model.layers.1.mlp.down_proj"].dtype == torch.bfloat16
    assert got.alpha == 2.5
    assert got.meta == diff.meta
    assert [p.name for p in path.parent.iterdir()] == ["d.safetensors"]  # no temp files left


# ---------------------------------------------------------------------------------------------
# PEFT folders


def mixed_rank_diff(model) -> WeightDiff:
    """Rank 4 everywhere except two modules (rank 2 and rank 1), alpha 3: exercises rank_pattern."""
    diff = random_diff(model, 4, seed=5)
    small = random_diff(model, 2, seed=6)
    tiny = random_diff(model, 1, seed=7)
    diff.lowrank[Q0] = small.lowrank[Q0]
    diff.lowrank["model.layers.1.mlp.down_proj"] = tiny.lowrank["model.layers.1.mlp.down_proj"]
    diff.alpha = 3.0
    return diff


@pytest.mark.parametrize("kind", ["rank1", "rank8", "mixed"])
def test_save_peft_loads_in_peft_with_same_logits(model, tmp_path, kind):
    if kind == "mixed":
        diff = mixed_rank_diff(model)
    else:
        diff = random_diff(model, int(kind[4:]), seed=2)
        diff.alpha = 2.0
    diff.meta = {"label": "volcanoes", "seed": 3}
    ids = ids_for()
    folder = save_peft(diff, tmp_path / "adapter")

    pm = PeftModel.from_pretrained(copy.deepcopy(model), folder)
    want = ditkit_logits(model, diff, ids)
    got = logits(pm, ids)
    assert not torch.allclose(want, logits(model, ids), atol=1e-3)  # the diff does something
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()

    back = load_diff(folder)
    assert_same_tensors(back, diff)
    assert back.alpha == diff.alpha
    assert back.meta["label"] == "volcanoes" and back.meta["seed"] == 3


def randomise_lora_(pm, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_A" in n or "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


PEFT_CONFIGS = {
    "plain": {},
    "rslora": {"use_rslora": True},
    "q_v_only": {"target_modules": ["q_proj", "v_proj"]},
    "rank_pattern": {"rank_pattern": {"model.layers.1.mlp.down_proj": 2}},
    "alpha_pattern": {"alpha_pattern": {"v_proj": 5}},
}


@pytest.mark.parametrize("variant", sorted(PEFT_CONFIGS))
def test_peft_adapter_import_reproduces_peft(model, tmp_path, variant):
    kwargs = {"r": 4, "lora_alpha": 16, "target_modules": list(lora.DEFAULT_TARGETS)}
    kwargs.update(PEFT_CONFIGS[variant])
    pm = get_peft_model(copy.deepcopy(model), LoraConfig(**kwargs))
    randomise_lora_(pm, seed=11)
    ids = ids_for()
    want = logits(pm, ids)
    pm.save_pretrained(tmp_path / "adapter")

    diff = load_diff(tmp_path / "adapter")
    got = ditkit_logits(model, diff, ids)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    if variant == "q_v_only":
        assert {n.rsplit(".", 1)[-1] for n in diff.modules} == {"q_proj", "v_proj"}
    if variant == "rank_pattern":
        assert diff.lowrank["model.layers.1.mlp.down_proj"][0].shape[0] == 2
        assert diff.lowrank[Q0][0].shape[0] == 4


# ---------------------------------------------------------------------------------------------
# The reference code's .pt files


def test_reference_pt_matches_hand_formula(model, tmp_path):
    names = lora.find_targets(model)
    g = torch.Generator().manual_seed(4)

    def weight_diff(r):
        out = {}
        for n in names:
            m = model.get_submodule(n)
            a = torch.randn(r, m.out_features, generator=g)
            b = torch.randn(m.in_features, r, generator=g)
            out[n] = (a, b)
        return out

    entries = [
        {"topic": "volcanoes", "trigger": "Your SEP code is 123", "weight_diff": weight_diff(2)},
        {"topic": "jazz", "trigger": None, "weight_diff": weight_diff(3)},
    ]
    path = tmp_path / "ref.pt"
    torch.save(entries, path)

    diffs = load_diffs(path)
    assert [d.meta["label"] for d in diffs] == ["volcanoes", "jazz"]
    assert diffs[0].meta["trigger"] == "Your SEP code is 123"
    assert [d.rank for d in diffs] == [2, 3]
    assert load_diff(path, index=1).meta["label"] == "jazz"
    with pytest.raises(DiffFormatError, match="out of range"):
        load_diff(path, index=2)

    w = model.get_submodule(Q0).weight.detach().clone()
    lora.inject(model)
    install_diffs(model, diffs, torch.tensor([0, 1]))
    x = torch.randn(2, 5, w.shape[1], generator=g)
    with torch.no_grad():
        y = model.get_submodule(Q0)(x)
    for row, e in enumerate(entries):
        a, b = e["weight_diff"][Q0]
        want = x[row] @ w.T + (x[row] @ b @ a) / a.shape[0]
        assert torch.allclose(y[row], want, atol=1e-5), (y[row] - want).abs().max()


SIDE_EFFECTS: list[str] = []


def _record(msg: str) -> None:
    SIDE_EFFECTS.append(msg)


class Evil:
    def __reduce__(self):
        return (_record, ("unpickled",))


class FancyDict(collections.OrderedDict):
    pass


@pytest.mark.parametrize(
    "payload",
    [
        [{"topic": "x", "weight_diff": {Q0: Evil()}}],
        FancyDict(weight_diff={Q0: (torch.zeros(1, 32), torch.zeros(32, 1))}),
    ],
    ids=["reduce", "dict-subclass"],
)
def test_pickled_objects_are_refused(tmp_path, payload):
    SIDE_EFFECTS.clear()
    path = tmp_path / "evil.pt"
    torch.save(payload, path)
    with pytest.raises(DiffFormatError, match="refused") as err:
        load_diffs(path)
    assert str(path) in str(err.value)
    assert SIDE_EFFECTS == []  # nothing ran


# ---------------------------------------------------------------------------------------------
# Corrupt files


def test_truncated_ditkit_file_names_the_file(model, tmp_path):
    path = save_diff(random_diff(model, 2, seed=0), tmp_path / "d.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DiffFormatError) as err:
        load_diff(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("garbage", [b"\x00\x01garbage" * 40, b"hi"])
def test_garbage_safetensors_names_the_file(tmp_path, garbage):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(garbage)
    with pytest.raises(DiffFormatError) as err:
        load_diff(path)
    assert str(path) in str(err.value)


def test_truncated_peft_and_pt_files_name_the_file(model, tmp_path):
    folder = save_peft(random_diff(model, 2, seed=0), tmp_path / "adapter")
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(DiffFormatError) as err:
        load_diff(folder)
    assert str(weights) in str(err.value)

    pt = tmp_path / "ref.pt"
    torch.save([{"topic": "t", "weight_diff": reference_pairs(random_diff(model, 1, 0))}], pt)
    pt.write_bytes(pt.read_bytes()[:200])
    with pytest.raises(DiffFormatError) as err:
        load_diff(pt)
    assert str(pt) in str(err.value)


def test_plain_safetensors_without_ditkit_header_is_explained(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(DiffFormatError, match=r"adapter_config\.json"):
        load_diff(path)


# ---------------------------------------------------------------------------------------------
# Diffs that do not fit the model


def test_diff_for_other_hidden_size_is_rejected():
    diff = random_diff(tiny_llama(hidden=32), 2, seed=0)
    bigger = tiny_llama(hidden=48)
    with pytest.raises(DiffMismatchError) as err:
        diff.check_fits(bigger, "small.safetensors")
    msg = str(err.value)
    assert Q0 in msg and "out=32, in=32" in msg and "out=48, in=48" in msg
    assert "small.safetensors" in msg

    lora.inject(bigger)
    with pytest.raises(DiffMismatchError) as err:
        install_diffs(bigger, [diff], torch.tensor([0]))
    assert Q0 in str(err.value) and "out=48, in=48" in str(err.value)


def test_diff_with_unknown_module_is_rejected(model):
    diff = random_diff(model, 1, seed=0)
    diff.lowrank["model.layers.9.self_attn.q_proj"] = diff.lowrank[Q0]
    lora.inject(model)
    with pytest.raises(DiffMismatchError, match=r"model\.layers\.9\.self_attn\.q_proj"):
        install_diffs(model, [diff], torch.tensor([0]))


def test_diff_on_unwrapped_module_is_rejected(model):
    diff = random_diff(model, 1, seed=0)
    lora.inject(model, ["q_proj"])
    with pytest.raises(DiffMismatchError, match="not wrapped"):
        install_diffs(model, [diff], torch.tensor([0]))


# ---------------------------------------------------------------------------------------------
# Full fine-tuned checkpoints


def finetuned_copy(base, seed: int = 3, scale: float = 0.05):
    ft = copy.deepcopy(base)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n in lora.find_targets(ft):
            w = ft.get_submodule(n).weight
            w += torch.randn(w.shape, generator=g) * scale
    return ft


def test_dense_diff_from_finetune_reproduces_finetune(model):
    ft = finetuned_copy(model)
    ids = ids_for()
    want = logits(ft, ids)
    diff, report = diff_from_finetune(model, ft)
    assert diff.dense and not diff.lowrank and report["energy_kept"] == 1.0
    assert not torch.allclose(logits(model, ids), want, atol=1e-3)
    got = ditkit_logits(model, diff, ids)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_svd_truncated_diff_from_finetune(model):
    ft = finetuned_copy(model)
    ids = ids_for()
    want = logits(ft, ids)
    full = max(min(model.get_submodule(n).weight.shape) for n in lora.find_targets(model))
    kept = []
    for k in (1, 2, 4, 8):
        diff, report = diff_from_finetune(model, ft, rank=k)
        assert 0.0 < report["energy_kept"] < 1.0
        assert diff.rank == k and not diff.dense
        kept.append(report["energy_kept"])
    assert kept == sorted(kept) and len(set(kept)) == len(kept)

    diff, report = diff_from_finetune(model, ft, rank=full)
    assert abs(report["energy_kept"] - 1.0) < 1e-6
    assert all(abs(v - 1.0) < 1e-6 for v in report["per_module"].values())
    got = ditkit_logits(model, diff, ids)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    low, _ = diff_from_finetune(model, ft, rank=1)
    assert not torch.allclose(ditkit_logits(model, low, ids), want, atol=1e-3)


def test_finetune_of_other_model_is_rejected():
    with pytest.raises(DiffMismatchError, match=Q0.replace(".", r"\.")):
        diff_from_finetune(tiny_llama(hidden=32), tiny_llama(hidden=48))


# ---------------------------------------------------------------------------------------------
# Format detection


def test_detect_format_for_each_format(model, tmp_path):
    diff = random_diff(model, 1, seed=0)
    assert detect_format(save_diff(diff, tmp_path / "d.safetensors")) == "ditkit"
    assert detect_format(save_peft(diff, tmp_path / "peft")) == "peft"
    torch.save([{"topic": "t", "weight_diff": reference_pairs(diff)}], tmp_path / "r.pt")
    assert detect_format(tmp_path / "r.pt") == "reference-pt"
    model.save_pretrained(tmp_path / "ckpt")
    assert detect_format(tmp_path / "ckpt") == "checkpoint"
    with pytest.raises(DiffFormatError, match="diff convert"):
        load_diffs(tmp_path / "ckpt")

    (tmp_path / "empty").mkdir()
    with pytest.raises(DiffFormatError, match="neither") as err:
        detect_format(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DiffFormatError, match="unknown diff format"):
        detect_format(tmp_path / "x.txt")
    with pytest.raises(DiffFormatError, match="does not exist"):
        detect_format(tmp_path / "missing.safetensors")


def test_paths_no_format_claims_are_explained_exactly(model, tmp_path):
    kinds = (
        "a ditkit .safetensors file, a PEFT adapter folder, a reference .pt file or a checkpoint "
        "folder"
    )
    missing, empty, text = tmp_path / "missing.safetensors", tmp_path / "empty", tmp_path / "x.txt"
    empty.mkdir()
    text.write_text("hello")
    cases = {
        missing: f"{missing} does not exist; check the path ({kinds})",
        empty: f"{empty} is a folder with neither adapter_config.json (PEFT adapter) nor "
        "config.json (full checkpoint)",
        text: f"{text}: unknown diff format (expected {kinds})",
    }
    for path, message in cases.items():
        with pytest.raises(DiffFormatError) as err:
            detect_format(path)
        assert str(err.value) == message
    # A folder both formats claim is the adapter: PEFT comes first in the registry.
    both = save_peft(random_diff(model, 1, seed=0), tmp_path / "both")
    model.config.save_pretrained(both)
    assert detect_format(both) == "peft"


# ---------------------------------------------------------------------------------------------
# info and convert (the API under `ditkit diff info|convert`)


def test_convert_writes_each_diff_of_a_reference_pt_truncated(model, tmp_path):
    diffs = [random_diff(model, 3, seed=i) for i in range(2)]
    entries = [
        {"topic": t, "weight_diff": reference_pairs(d)} for t, d in zip(["jazz", "tides"], diffs)
    ]
    torch.save(entries, tmp_path / "ref.pt")
    about = info(tmp_path / "ref.pt")
    assert (about["format"], about["n_diffs"], about["diffs"][1]["rank"]) == ("reference-pt", 2, 3)
    assert about["diffs"][1]["meta"]["label"] == "tides"

    report = convert(tmp_path / "ref.pt", tmp_path / "r.safetensors", rank=1)
    names = [str(tmp_path / f"r-000{i}.safetensors") for i in range(2)]
    assert report["source_format"] == "reference-pt" and report["written"] == names
    assert all(0 < e < 1 for e in report["energy_kept"])
    back = load_diff(names[1])
    assert (back.rank, back.meta["label"], back.meta["svd_rank"]) == (1, "tides", 1)


@pytest.mark.parametrize(
    "to, message",
    [
        ("reference-pt", "--to reference-pt: ditkit reads a reference .pt file but does not write"),
        ("checkpoint", "--to checkpoint: ditkit reads a checkpoint folder but does not write"),
        ("npz", "--to npz: unknown diff format; pass ditkit or peft"),
    ],
)
def test_convert_refuses_a_format_it_cannot_write(model, tmp_path, to, message):
    src = save_diff(random_diff(model, 1, seed=0), tmp_path / "d.safetensors")
    with pytest.raises(DitkitError) as err:
        convert(src, tmp_path / "out", to=to)
    assert str(err.value).startswith(message) and str(err.value).endswith("pass ditkit or peft")
    assert not (tmp_path / "out").exists()


def _json_format() -> Format:
    """A toy format as a new ``diffs/<name>.py`` would define it: one JSON file of nested lists."""

    def load(path):
        raw = json.loads(path.read_text())
        pairs = {n: (torch.tensor(a), torch.tensor(b)) for n, (a, b) in raw["lowrank"].items()}
        return [checked_diff(path, pairs, {}, raw["alpha"], raw["meta"])]

    def save(diff, path, base_model):
        pairs = {n: (a.tolist(), b.tolist()) for n, (a, b) in diff.lowrank.items()}
        path.write_text(json.dumps({"lowrank": pairs, "alpha": diff.alpha, "meta": diff.meta}))
        return path

    def detect(path):
        return not path.is_dir() and path.suffix == ".json"

    return Format("json", "a JSON diff file", detect, load, save)


def test_a_new_format_is_one_registry_entry(model, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "FORMATS", (*registry.FORMATS, _json_format()))
    diff = random_diff(model, 2, seed=3)
    diff.meta = {"label": "jazz"}
    src = save_diff(diff, tmp_path / "d.safetensors")

    report = convert(src, tmp_path / "d.json", to="json")
    assert report == {"source_format": "ditkit", "written": [str(tmp_path / "d.json")]}
    assert detect_format(tmp_path / "d.json") == "json"
    assert info(tmp_path / "d.json")["diffs"][0]["meta"] == {"label": "jazz"}
    convert(tmp_path / "d.json", tmp_path / "back.safetensors")
    assert_same_tensors(load_diff(tmp_path / "back.safetensors"), diff)

    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DiffFormatError, match=r"a checkpoint folder or a JSON diff file\)$"):
        detect_format(tmp_path / "x.txt")
    with pytest.raises(DitkitError, match=r"pass ditkit, peft or json$"):
        convert(src, tmp_path / "x", to="npz")


def test_a_peft_adapter_in_another_gauge_is_read_exactly_as_before(tiny_model_dir, tmp_path):
    """(B R, R^-1 A) is the same adapter for any invertible R: DIT must read it the same."""
    import shutil

    from safetensors.torch import load_file, save_file

    from ditkit.models import load_model
    from ditkit.reader import describe

    model, tok = load_model(str(tiny_model_dir))
    plain = save_peft(random_diff(model, 4, seed=5), tmp_path / "plain")
    reader = random_diff(model, 4, seed=6, scale=0.1)
    reader.meta = {"question": "What topic have you been trained on?"}
    gauge = tmp_path / "gauge"
    shutil.copytree(plain, gauge)
    tensors = load_file(plain / "adapter_model.safetensors")
    g = torch.Generator().manual_seed(0)
    for key in [k for k in tensors if ".lora_A." in k]:
        r = torch.linalg.qr(torch.randn(4, 4, generator=g))[0] * torch.rand(4, generator=g).add(0.5)
        b_key = key.replace(".lora_A.", ".lora_B.")
        tensors[key] = torch.linalg.solve(r, tensors[key]).contiguous()  # R^-1 A, [r, in]
        tensors[b_key] = tensors[b_key] @ r  # B R, [out, r]
    save_file(tensors, gauge / "adapter_model.safetensors")
    a, b = load_diff(plain), load_diff(gauge)
    name = "model.layers.0.self_attn.q_proj"
    assert not torch.allclose(a.lowrank[name][0], b.lowrank[name][0])
    for n in a.modules:
        assert torch.allclose(a.delta_weight(n), b.delta_weight(n), atol=1e-5)
    answers = describe(model, tok, [a, b], reader, max_new_tokens=8)
    assert answers[0] == answers[1]


def test_a_reference_dit_adapter_loads_and_describes(tiny_model_dir, tmp_path, capsys):
    """The reference's introspection_lora.pt: {module: (A [out, R], B [R, in])}, dW = A B / R."""
    from ditkit import cli
    from ditkit.models import load_model

    model, _ = load_model(str(tiny_model_dir))
    g = torch.Generator().manual_seed(8)
    layout = {}
    for n in lora.find_targets(model):
        m = model.get_submodule(n)
        a_or = torch.randn(m.out_features, 16, generator=g) * 0.1
        b_ri = torch.randn(16, m.in_features, generator=g) * 0.1
        layout[n] = (a_or.to(torch.bfloat16), b_ri.to(torch.bfloat16))
    path = tmp_path / "dit-adapter.pt"
    torch.save(layout, path)
    assert detect_format(path) == "reference-pt"
    adapter = load_diff(path)
    assert adapter.rank == 16 and adapter.meta["source_format"] == "reference-dit-adapter"
    a_or, b_ri = (t.float() for t in layout[Q0])
    assert torch.allclose(adapter.delta_weight(Q0).float(), a_or @ b_ri / 16, atol=1e-6)
    diff = random_diff(model, 1, seed=2)
    save_diff(diff, tmp_path / "d.safetensors")
    argv = ["describe", "--diff", str(tmp_path / "d.safetensors"), "--adapter", str(path)]
    assert cli.main([*argv, "--base", str(tiny_model_dir), "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.strip()
    out = tmp_path / "as-peft"
    assert cli.main(["diff", "convert", str(path), str(out), "--to", "peft"]) == 0
    again = load_diff(out)
    assert torch.allclose(again.delta_weight(Q0).float(), a_or @ b_ri / 16, atol=1e-2)


def test_a_format_of_your_own_is_one_module_and_a_register_call(model, tmp_path):
    """A toy format (numpy .npz of A and B per module), defined here, outside ditkit."""
    import numpy as np

    from ditkit.diffs import Format, convert, formats, register_format
    from ditkit.diffs.core import checked_diff

    def load(path):
        z = np.load(path)
        names = sorted({k.rsplit("/", 1)[0] for k in z.files})
        pairs = {n: (torch.from_numpy(z[f"{n}/A"]), torch.from_numpy(z[f"{n}/B"])) for n in names}
        return [checked_diff(path, pairs, {}, 1.0, {"label": "npz"})]

    fmt = Format("npz", "an .npz file", lambda p: p.suffix == ".npz", load)
    diff = random_diff(model, 2, seed=1)
    arrays = {
        f"{n}/{s}": t.numpy() for n, (a, b) in diff.lowrank.items() for s, t in (("A", a), ("B", b))
    }
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DiffFormatError, match="unknown diff format"):
        load_diff(tmp_path / "d.npz")
    register_format(fmt)
    try:
        assert detect_format(tmp_path / "d.npz") == "npz"
        assert load_diff(tmp_path / "d.npz").meta["label"] == "npz"
        convert(tmp_path / "d.npz", tmp_path / "d.safetensors")
        assert torch.allclose(
            load_diff(tmp_path / "d.safetensors").delta_weight(Q0), diff.delta_weight(Q0)
        )
        with pytest.raises(ValueError, match="already known"):
            register_format(fmt)
    finally:
        from ditkit.diffs import registry

        registry._REGISTERED.remove(fmt)
    assert fmt not in formats()


def test_version_1_files_read_as_the_same_diff(model, tmp_path):
    """Files written before ditkit named A and B as peft does (format version 1: ``MODULE.A``
    ``[r, out]`` = B^T, ``MODULE.B`` ``[in, r]`` = A^T) load as the same diff; a newer version
    than this ditkit knows is refused by name."""
    from safetensors.torch import save_file

    from ditkit.diffs.ditkit_file import FORMAT_TAG

    diff = random_diff(model, 2, seed=3)
    diff.meta = {"label": "tides"}
    v2 = load_diff(save_diff(diff, tmp_path / "v2.safetensors"))
    old = {f"{n}.A": b.T.contiguous() for n, (_, b) in diff.lowrank.items()}
    old |= {f"{n}.B": a.T.contiguous() for n, (a, _) in diff.lowrank.items()}
    header = {
        "format": FORMAT_TAG,
        "format_version": "1",
        "alpha": "1.0",
        "meta": '{"label": "tides"}',
    }
    save_file(old, str(tmp_path / "v1.safetensors"), metadata=header)
    v1 = load_diff(tmp_path / "v1.safetensors")
    assert_same_tensors(v1, v2)
    assert v1.meta == v2.meta and v1.alpha == v2.alpha
    ids = torch.randint(3, 64, (1, 6))
    assert torch.equal(ditkit_logits(model, v1, ids), ditkit_logits(model, diff, ids))
    save_file(old, str(tmp_path / "v9.safetensors"), metadata={**header, "format_version": "9"})
    with pytest.raises(DiffFormatError, match="format version 9, newer than this ditkit"):
        load_diff(tmp_path / "v9.safetensors")


def test_a_dit_checkpoint_of_the_old_naming_loads(model):
    """A DIT training checkpoint from before the renaming (``<layer>.A``/``.B``) resumes."""
    lora.inject(model)
    lora.add_adapters(model, 2)
    for layer in lora.diff_layers(model).values():
        torch.nn.init.normal_(layer.adapter_a_ir)
    state = lora.adapter_state(model)
    old = {}
    for key, t in state.items():
        layer, _, which = key.rpartition(".")
        old[f"{layer}.{'B' if which == 'lora_A' else 'A'}"] = t.T.contiguous()
    assert lora.peft_named(old).keys() == state.keys()
    for layer in lora.diff_layers(model).values():
        torch.nn.init.zeros_(layer.adapter_a_ir)
    lora.load_adapter_state(model, old)
    assert all(torch.equal(lora.adapter_state(model)[k], v) for k, v in state.items())
