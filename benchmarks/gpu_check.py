"""GPU check: ditkit's diff generation and DIT step on random models shaped like Qwen3-0.6B / 4B.

No network, no downloaded weights: each model is built from a ``Qwen3Config`` with the published
shapes (random init, bf16, sdpa attention). Per model it measures, in one run:

- diff generation, the limit: the frozen model's forward + input-gradient backward on the rows
  below (answer-position vocabulary projection, rows sorted by length into micro-batches), what
  any diff trainer must at least spend;
- diff generation, ditkit: the real ``train_diffs.train_group`` (T rank-1 diffs stacked, batch row
  i through diff ``row_index[i]``, cached top-k KL targets, one Adam) on synthetic token rows of the
  paper recipe's shape (per question a trigger / wrong-trigger / no-trigger row, 6 rows per diff
  per step, ~128 tokens a row). Its per-step time is the difference between a 1-step and a
  (1 + S)-step call, so the per-pass set-up (A init, diff extraction) is reported apart;
- diffs per hour at the paper recipe (135 steps x 6 rows per diff, passes of T diffs);
- the DIT step at batch 8: ditkit's low-rank per-row path (frozen rank-1 banks through
  ``DiffLinear.set_lowrank``, as ``diffs.install_diffs`` leaves them, plus a trainable rank-16
  adapter) vs the reference code's dense per-row deltas (``W_i = B_i A_i / r`` materialised as
  ``[batch, out, in]`` per layer every batch, added by ``einsum("bsi,boi->bso")``): step time and
  peak memory (``torch.cuda.max_memory_allocated``).

Prints a table and writes JSON (rewritten after every phase, so a timeout keeps what finished).

    bash benchmarks/gpu_check.sh                                    # one H100/H200, < 8 min
    .venv/bin/python benchmarks/gpu_check.py --tiny --device cpu    # smoke test, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TQDM_DISABLE", "1")  # train_group's bar would flood the log

import torch
import transformers
from transformers import AutoModelForCausalLM, Qwen3Config

from ditkit import lora, train_diffs
from ditkit.batching import Encoded
from ditkit.config import DiffConfig
from ditkit.tasks.hidden_topic import TASK as HIDDEN_TOPIC

# Published Qwen3 shapes (config.json of Qwen/Qwen3-0.6B and Qwen/Qwen3-4B).
QWEN3 = {"vocab_size": 151936, "head_dim": 128, "tie_word_embeddings": True}
SHAPES = {
    "qwen3-0.6b": {
        **QWEN3,
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
    },
    "qwen3-4b": {
        **QWEN3,
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
    },
    "tiny": {
        "vocab_size": 512,
        "head_dim": 16,
        "tie_word_embeddings": True,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
}
# The paper's hidden-topic recipe (docs/DESIGN.md 2.2): 810 sequences = 135 steps x 6 per diff.
PAPER_DIFFS, PAPER_STEPS, ROWS_PER_STEP = 4660, 135, 6
WRONG_POOL = 8  # wrong SEP codes per question shared by all diffs (DiffConfig.wrong_pool)
H100_BF16_PEAK_TFLOPS = 989.0  # dense bf16, SXM; H200 has the same tensor cores


@dataclass
class RowShape:
    """Token lengths of a synthetic row: question prompt, SEP code, answer (ranges inclusive)."""

    prompt: tuple[int, int]
    sep: int
    answer: tuple[int, int]


# Full size: Qwen3 chat template + a short question ~26-40 tokens, the SEP code ~10, answers
# ~76-100 (the reference generated topic answers with max_tokens=100): ~128 tokens a row.
ROWS = {"full": RowShape((26, 40), 10, (76, 100)), "tiny": RowShape((6, 10), 3, (6, 12))}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def reset_peak(device: torch.device) -> int:
    """Reset the peak counter; returns the bytes allocated now (the static part)."""
    if device.type != "cuda":
        return 0
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def peak_gib(device: torch.device, static: int) -> dict:
    if device.type != "cuda":
        return {"peak_gib": None, "peak_over_static_gib": None}
    peak = torch.cuda.max_memory_allocated(device)
    return {
        "peak_gib": round(peak / 2**30, 2),
        "peak_over_static_gib": round((peak - static) / 2**30, 2),
    }


def build_model(name: str, device: torch.device, dtype: torch.dtype):
    cfg = Qwen3Config(**SHAPES[name])
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def synthetic_rows(
    t: int, questions: int, shape: RowShape, vocab: int, seed: int
) -> list[list[tuple[int, Encoded]]]:
    """Per diff, the 3 x ``questions`` rows of the recipe as ``(kind, Encoded)``, shuffled.

    As in the real task, every diff shares the questions and the base answers, so a no-trigger row
    is the same sequence for all diffs and wrong-trigger rows come from a pool per question: the
    KL targets are computed once per distinct sequence.
    """
    rng = random.Random(seed)

    def toks(n: int) -> list[int]:
        return [rng.randrange(10, vocab) for _ in range(n)]

    q_tok = [toks(rng.randint(*shape.prompt)) for _ in range(questions)]
    base_tok = [toks(rng.randint(*shape.answer)) for _ in range(questions)]
    pool = [[toks(shape.sep) for _ in range(WRONG_POOL)] for _ in range(questions)]
    out = []
    for _ in range(t):
        own = toks(shape.sep)
        rows = []
        for q, base, wrongs in zip(q_tok, base_tok, pool):
            topic = toks(rng.randint(*shape.answer))
            wrong = rng.choice(wrongs)
            rows += [
                (0, Encoded(ids=own + q + topic, n_prompt=len(own) + len(q))),
                (1, Encoded(ids=wrong + q + base, n_prompt=len(wrong) + len(q))),
                (2, Encoded(ids=q + base, n_prompt=len(q))),
            ]
        rng.shuffle(rows)
        out.append(rows)
    return out


def step_picks(rows, step: int, k: int) -> list[Encoded]:
    """The rows ``train_group`` takes at ``step``: ``k`` per diff, cycling through its rows."""
    return [r[(step * k + i) % len(r)][1] for r in rows for i in range(k)]


class SyntheticTask:
    """A task whose rows are given: ditkit's trainer on pre-built token rows."""

    name = "synthetic"
    row_kinds = HIDDEN_TOPIC.row_kinds

    def __init__(self, rows_by_id: dict):
        self.rows_by_id = rows_by_id

    def rows(self, job, tok, data, cfg, system):
        return self.rows_by_id[job.diff_id]

    def diff_meta(self, job) -> dict:
        return {"task": self.name}


def run_train_group(model, rows, cfg: DiffConfig, kl, pad_id: int) -> None:
    """``train_diffs.train_group`` on synthetic rows, through a task that hands them out."""
    task = SyntheticTask({f"d{j}": r for j, r in enumerate(rows)})
    jobs = [SimpleNamespace(diff_id=f"d{j}", seed=j) for j in range(len(rows))]
    pad = SimpleNamespace(pad_token_id=pad_id)
    train_diffs.train_group(model, pad, jobs, {}, cfg, "", kl, task=task)


def limit_steps(model, rows, steps: range, k: int, micro: int, pad_id: int) -> None:
    """Frozen forward + input-gradient backward over the same rows, bucketed by length."""
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: o.requires_grad_())
    try:
        for s in steps:
            encs = sorted(step_picks(rows, s, k), key=lambda e: len(e.ids))
            for c in range(0, len(encs), micro):
                logits_nv, *_ = train_diffs.answer_logits(model, encs[c : c + micro], pad_id)
                torch.logsumexp(logits_nv.float(), -1).sum().backward()
    finally:
        hook.remove()


def flops_per_step(model, encs: list[Encoded]) -> float:
    """Forward + input-gradient backward of a frozen model: 4 x params per token they pass.

    Decoder projections on every token, the vocabulary projection on answer positions only;
    attention scores (about 1% at 128 tokens) are left out.
    """
    n_dec = sum(m.base.weight.numel() for m in lora.diff_layers(model).values())
    n_head = model.get_output_embeddings().weight.numel()
    tokens = sum(len(e.ids) for e in encs)
    answers = sum(len(e.ids) - e.n_prompt for e in encs)
    return 4.0 * (n_dec * tokens + n_head * answers)


def diff_generation(model, args, device, peak_tflops: float | None) -> dict:
    vocab = model.config.vocab_size
    shape = ROWS["tiny" if args.tiny else "full"]
    t, k, s = args.diffs, ROWS_PER_STEP, args.steps
    rows = synthetic_rows(t, args.questions, shape, vocab, seed=1)
    warm_rows = synthetic_rows(t, args.questions, shape, vocab, seed=2)
    pad_id = 0
    cfg = DiffConfig(
        rank=1, steps=1, rows_per_step=k, diffs_per_pass=t, lr=1e-3,
        micro_batch_rows=args.micro, weights=[1.0, 1.0, 5.0],
    )  # fmt: skip
    lora.inject(model)
    kl = train_diffs.KLTargets(cfg.kl_topk)
    kl.fill(model, [e for r in warm_rows for kind, e in r if kind], pad_id, args.micro)
    n_warm = len(kl)
    kl_encs = [e for r in rows for kind, e in r if kind]
    kl_fill_s = timed(lambda: kl.fill(model, kl_encs, pad_id, args.micro), device)
    n_kl = len(kl) - n_warm  # distinct KL sequences of the timed diffs' rows

    # Warm-up (allocations, kernel choice) on other rows, then the limit on steps 1..S.
    run_train_group(model, warm_rows, cfg, kl, pad_id)
    limit_steps(model, rows, range(1), k, args.micro, pad_id)
    static = reset_peak(device)
    t_limit = timed(
        lambda: limit_steps(model, rows, range(1, s + 1), k, args.micro, pad_id), device
    )
    mem_limit = peak_gib(device, static)

    # ditkit: one call of 1 step, one of 1 + S steps on the same rows; the difference is S steps.
    t_one = timed(lambda: run_train_group(model, rows, cfg, kl, pad_id), device)
    static = reset_peak(device)
    cfg_long = dataclasses.replace(cfg, steps=1 + s)
    t_long = timed(lambda: run_train_group(model, rows, cfg_long, kl, pad_id), device)
    mem_ditkit = peak_gib(device, static)
    step_ditkit = max(t_long - t_one, 1e-9) / s
    overhead = max(t_one - step_ditkit, 0.0)

    encs = [e for st in range(1, s + 1) for e in step_picks(rows, st, k)]
    tokens = sum(len(e.ids) for e in encs)
    flops = flops_per_step(model, encs) / s
    tok_per_row = tokens / len(encs)
    step_limit = t_limit / s

    def tflops(sec: float) -> float:
        return flops / sec / 1e12

    pass_s = overhead + PAPER_STEPS * step_ditkit  # a pass of T diffs at the paper recipe
    diffs_per_hour = 3600.0 * t / pass_s
    out = {
        "diffs_per_pass": t,
        "rows_per_step_per_diff": k,
        "timed_steps": s,
        "micro_batch_rows": args.micro,
        "tokens_per_row": round(tok_per_row, 1),
        "tokens_per_step": tokens // s,
        "limit": {
            "s_per_step": round(step_limit, 4),
            "tokens_per_s": round(tokens / t_limit, 1),
            "tflops": round(tflops(step_limit), 2),
            **mem_limit,
        },
        "ditkit": {
            "s_per_step": round(step_ditkit, 4),
            "tokens_per_s": round(tokens / s / step_ditkit, 1),
            "tflops": round(tflops(step_ditkit), 2),
            "pass_setup_s": round(overhead, 3),
            **mem_ditkit,
        },
        "ditkit_vs_limit": round(step_limit / step_ditkit, 3),
        "kl_fill_s": round(kl_fill_s, 3),
        "kl_sequences": n_kl,
        "paper_recipe": {
            "rows_per_diff": PAPER_STEPS * ROWS_PER_STEP,
            "tokens_per_diff": round(PAPER_STEPS * ROWS_PER_STEP * tok_per_row),
            "pass_s": round(pass_s, 1),
            "diffs_per_hour": round(diffs_per_hour, 1),
            "hours_for_4660_diffs": round(PAPER_DIFFS / diffs_per_hour, 2),
        },
    }
    if peak_tflops:
        out["limit"]["mfu"] = round(tflops(step_limit) / peak_tflops, 3)
        out["ditkit"]["mfu"] = round(tflops(step_ditkit) / peak_tflops, 3)
    lora.remove(model)
    return out


def dit_paths(model, args, device) -> dict:
    """DIT steps at batch B: low-rank per-row banks vs dense ``[B, out, in]`` deltas per layer."""
    b, seq, vocab = args.dit_batch, args.dit_seq, model.config.vocab_size
    layers = lora.inject(model)
    torch.manual_seed(0)
    for layer in layers.values():
        layer.add_adapter(16)
    params = [p for layer in layers.values() for p in (layer.adapter_b_ro, layer.adapter_a_ir)]
    opt = torch.optim.AdamW(params, lr=1e-4)
    w0 = next(iter(layers.values())).base.weight
    ids_bs = torch.randint(10, vocab, (b, seq), device=device)
    labels_bs = ids_bs.clone()
    labels_bs[:, : seq - args.dit_label] = -100  # supervise the label tokens only
    banks = {}  # name -> (B [b, in, 1], A [b, 1, out]): one frozen rank-1 diff per row
    for name, layer in layers.items():
        # B at the reference init's scale, A as after some training: a few % of W x per layer.
        bound = (6.0 / layer.out_features) ** 0.5
        b_bro = (torch.rand(b, 1, layer.out_features, device=device) * 2 - 1) * bound
        a_bir = torch.randn(b, layer.in_features, 1, device=device) * 0.05
        banks[name] = (a_bir.to(w0.dtype), b_bro.to(w0.dtype))
    scale_b = w0.new_ones(b)
    rows_b = torch.arange(b, device=device)
    dense: dict[torch.nn.Module, torch.Tensor] = {}

    def add_dense(mod, args_, y_bso):
        x_bsi = args_[0]
        w_boi = dense[mod]
        return y_bso + torch.bmm(
            x_bsi.reshape(b, -1, x_bsi.shape[-1]), w_boi.transpose(1, 2)
        ).view_as(y_bso)

    def train_step() -> None:
        loss = model(input_ids=ids_bs, labels=labels_bs).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def low_step() -> None:
        for name, layer in layers.items():
            layer.set_lowrank(*banks[name], scale_b, rows_b)
        train_step()

    def dense_step() -> None:
        for name, layer in layers.items():  # the reference's set_lora_batch, every batch
            a_bir, b_bro = banks[name]
            dense[layer] = torch.einsum("bir,bro->boi", a_bir, b_bro) / a_bir.shape[-1]
        train_step()
        dense.clear()

    result = {"batch": b, "seq": seq, "label_tokens": args.dit_label}
    reset_peak(device)  # hand the diff-generation phase's cached blocks back first
    try:
        result["same_loss"] = same_loss(model, layers, banks, dense, add_dense, ids_bs, labels_bs)
    except torch.OutOfMemoryError as exc:
        dense.clear()
        result["same_loss"] = {"oom": str(exc).splitlines()[0]}
    for path, step in (("lowrank", low_step), ("dense", dense_step)):
        for layer in layers.values():
            layer.clear_diffs()
        hooks = (
            [m.register_forward_hook(add_dense) for m in layers.values()] if path == "dense" else []
        )
        try:
            step()  # warm-up (optimizer state, kernels)
            static = reset_peak(device)
            sec = timed(lambda step=step: [step() for _ in range(args.dit_steps)], device)
            result[path] = {
                "s_per_step": round(sec / args.dit_steps, 4),
                **peak_gib(device, static),
            }
        except torch.OutOfMemoryError as exc:
            dense.clear()
            result[path] = {"oom": str(exc).splitlines()[0]}
        finally:
            for h in hooks:
                h.remove()
    low, den = result["lowrank"], result["dense"]
    if "s_per_step" in low and "s_per_step" in den:
        result["dense_vs_lowrank_time"] = round(den["s_per_step"] / low["s_per_step"], 2)
        if low.get("peak_over_static_gib"):
            result["dense_vs_lowrank_memory"] = round(
                den["peak_over_static_gib"] / low["peak_over_static_gib"], 1
            )
    per_row_lowrank = (
        sum(x.numel() * x.element_size() for bb, aa in banks.values() for x in (bb, aa)) / b
    )
    per_row_dense = sum(layer.base.weight.numel() * w0.element_size() for layer in layers.values())
    result["diff_bytes_per_row"] = {"lowrank": int(per_row_lowrank), "dense": int(per_row_dense)}
    lora.remove(model)
    return result


def same_loss(model, layers, banks, dense, add_dense, ids_bs, labels_bs) -> dict:
    """The loss with the diffs as low-rank banks and as dense deltas: the two paths must agree."""
    b = ids_bs.shape[0]
    rows_b = torch.arange(b, device=ids_bs.device)
    losses = {}
    with torch.no_grad():
        for name, layer in layers.items():
            bank_a, bank_b = banks[name]
            layer.set_lowrank(bank_a, bank_b, bank_a.new_ones(b), rows_b)
        losses["lowrank"] = float(model(input_ids=ids_bs, labels=labels_bs).loss)
        hooks = []
        for name, layer in layers.items():
            layer.clear_diffs()
            bank_a, bank_b = banks[name]
            dense[layer] = torch.einsum("bir,bro->boi", bank_a, bank_b)
            hooks.append(layer.register_forward_hook(add_dense))
        try:
            losses["dense"] = float(model(input_ids=ids_bs, labels=labels_bs).loss)
        finally:
            dense.clear()
            for h in hooks:
                h.remove()
        losses["none"] = float(model(input_ids=ids_bs, labels=labels_bs).loss)
    return {k: round(v, 5) for k, v in losses.items()}


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def print_tables(result: dict) -> None:
    print(f"\n{result['device_name']} | {result['dtype']} | torch {result['torch']}")
    print("\nDiff generation (T rank-1 diffs stacked, 6 rows per diff per step)")
    head = "| model | path | s/step | tokens/s | vs limit | TFLOP/s | MFU | peak GiB |"
    print(head + "\n|" + "---|" * 8)
    for name, m in result["models"].items():
        g = m.get("diff_generation")
        if not g:
            continue
        for path in ("limit", "ditkit"):
            p = g[path]
            ratio = "1" if path == "limit" else fmt(g["ditkit_vs_limit"], ".2f")
            print(
                f"| {name} | {path} | {fmt(p['s_per_step'])} | {fmt(p['tokens_per_s'], '.0f')} | "
                f"{ratio} | {fmt(p['tflops'], '.3g')} | {fmt(p.get('mfu'), '.2f')} | "
                f"{fmt(p['peak_gib'], '.1f')} |"
            )
    print("\nPaper recipe (135 steps x 6 rows per diff)")
    print("| model | tokens/row | tokens/diff | pass setup s | diffs/hour | h for 4,660 |")
    print("|" + "---|" * 6)
    for name, m in result["models"].items():
        g = m.get("diff_generation")
        if g:
            pr = g["paper_recipe"]
            print(
                f"| {name} | {g['tokens_per_row']} | {pr['tokens_per_diff']} | "
                f"{g['ditkit']['pass_setup_s']} | {pr['diffs_per_hour']:.0f} | "
                f"{pr['hours_for_4660_diffs']} |"
            )
    print("\nDIT step (rank-1 diff per row + rank-16 adapter)")
    print("| model | batch x seq | path | s/step | peak GiB | over static GiB | diff MiB/row |")
    print("|" + "---|" * 7)
    for name, m in result["models"].items():
        d = m.get("dit")
        if not d:
            continue
        for path in ("lowrank", "dense"):
            p = d[path]
            size = d["diff_bytes_per_row"][path] / 2**20
            if "oom" in p:
                print(f"| {name} | {d['batch']} x {d['seq']} | {path} | OOM | | | {size:.3f} |")
                continue
            print(
                f"| {name} | {d['batch']} x {d['seq']} | {path} | {fmt(p['s_per_step'])} | "
                f"{fmt(p['peak_gib'], '.2f')} | {fmt(p['peak_over_static_gib'], '.2f')} | "
                f"{size:.3f} |"
            )
        if "dense_vs_lowrank_time" in d:
            mem = d.get("dense_vs_lowrank_memory")
            print(
                f"  {name}: dense / low-rank = {d['dense_vs_lowrank_time']}x time"
                + (f", {mem}x transient memory" if mem else "")
            )
        loss = d["same_loss"]
        if "oom" in loss:
            print(f"  {name}: loss comparison ran out of memory")
            continue
        print(
            f"  {name}: loss with diffs as low-rank {loss['lowrank']}, as dense {loss['dense']} "
            f"(no diffs {loss['none']}): the two paths compute the same model"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--tiny", action="store_true", help="tiny shapes and few steps (CPU smoke test)"
    )
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--models", default=None, help="comma list of " + ", ".join(SHAPES))
    ap.add_argument("--diffs", type=int, default=None, help="T diffs per pass (32; tiny 4)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps S (4; tiny 2)")
    ap.add_argument("--micro", type=int, default=None, help="rows per micro-batch (32; tiny 8)")
    ap.add_argument("--questions", type=int, default=None, help="questions per diff (16; tiny 4)")
    ap.add_argument("--dit-batch", type=int, default=8)
    ap.add_argument("--dit-seq", type=int, default=None, help="DIT row tokens (64; tiny 16)")
    ap.add_argument("--dit-label", type=int, default=None, help="supervised tokens (16; tiny 4)")
    ap.add_argument("--dit-steps", type=int, default=None, help="timed DIT steps (5; tiny 2)")
    ap.add_argument("--skip-dit", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="for MFU (H100/H200: 989)")
    default_out = Path(os.environ.get("OUT") or "/tmp/gpu_check") / "gpu_check.json"
    ap.add_argument("--out", type=Path, default=default_out)
    args = ap.parse_args()
    tiny = {
        "diffs": 4,
        "steps": 2,
        "micro": 8,
        "questions": 4,
        "dit_seq": 16,
        "dit_label": 4,
        "dit_steps": 2,
    }
    full = {
        "diffs": 32,
        "steps": 4,
        "micro": 32,
        "questions": 16,
        "dit_seq": 64,
        "dit_label": 16,
        "dit_steps": 5,
    }
    for key, value in (tiny if args.tiny else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    models = (args.models or ("tiny" if args.tiny else "qwen3-0.6b,qwen3-4b")).split(",")
    unknown = [m for m in models if m not in SHAPES]
    if unknown:
        ap.error(f"--models: unknown {unknown}; choose from {sorted(SHAPES)}")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # CPU bf16 is slow here
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    peak = args.peak_tflops
    if peak is None and device.type == "cuda" and ("H100" in name or "H200" in name):
        peak = H100_BF16_PEAK_TFLOPS
    start = time.time()
    result = {
        "device_name": name or platform.machine(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "peak_tflops_for_mfu": peak,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "models": {},
    }
    for m in models:
        t0 = time.time()
        model = build_model(m, device, dtype)
        entry = result["models"][m] = {
            "config": SHAPES[m],
            "params": sum(p.numel() for p in model.parameters()),
            "build_s": round(time.time() - t0, 1),
        }
        progress(f"{m}: {entry['params'] / 1e9:.2f}B parameters, built in {entry['build_s']} s")
        entry["diff_generation"] = diff_generation(model, args, device, peak)
        write_json(args.out, result)
        g = entry["diff_generation"]
        progress(f"{m}: diff generation done, ditkit / limit = {g['ditkit_vs_limit']}")
        if not args.skip_dit:
            entry["dit"] = dit_paths(model, args, device)
            write_json(args.out, result)
            progress(f"{m}: DIT paths done")
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["wall_s"] = round(time.time() - start, 1)
    write_json(args.out, result)
    print_tables(result)
    print(f"\nwall {result['wall_s']} s; JSON: {args.out}")


if __name__ == "__main__":
    main()
