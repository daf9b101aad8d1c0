"""Many processes, one run directory: who does what under ``torchrun`` or ``accelerate launch``.

ditkit never starts processes itself. Launch it with a standard launcher, single- or multi-node::

    torchrun --nproc_per_node 8 -m ditkit run paper-qwen3-4b --out runs/q4b
    accelerate launch --num_processes 8 -m ditkit run paper-qwen3-4b --out runs/q4b
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 8 -m ditkit run ...

Both set ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; accelerate's `PartialState` joins the process
group (NCCL on GPUs, gloo on CPUs). What each stage does with N processes:

- data and report: the main process only; the others wait.
- diffs: each process trains its share of the pending diff passes (independent, no gradient
  sync); pass boundaries are fixed over all diffs, so the files equal a one-process run's.
- dit: each process takes its share of every global batch; the adapter's gradients are summed
  across processes after backward (the loss is normalised by the global batch's token count), so
  every step equals the one-process step up to floating-point summation order.
- eval: each process generates its share of the fixed chunks into its own part file; the main
  process merges them into ``predictions.jsonl`` and scores.
- describe (a file holding many diffs): each process answers its share; the main one prints all.

Only the main process writes shared files (config, manifest, timings, adapter, checkpoints,
predictions, scores). With no launcher (``WORLD_SIZE`` unset or 1) none of this costs anything.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that need it: the command line imports this module at
# start-up, and `ditkit --help` should not wait for torch.


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@functools.lru_cache(maxsize=1)
def _state():
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    return _state().process_index if world_size() > 1 else 0


def local_rank() -> int:
    return _state().local_process_index if world_size() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    if world_size() > 1:
        _state().wait_for_everyone()


def share(items: list, r: int | None = None, n: int | None = None) -> list:
    """Process ``r``'s share of ``items`` out of ``n``: every ``n``-th item from ``r``.

    Every process calls it on the same list, so the shares are disjoint and cover ``items``.
    """
    r = rank() if r is None else r
    n = world_size() if n is None else n
    return items[r::n]


def all_reduce_sum_(tensors: list[torch.Tensor]) -> None:
    """Sum ``tensors`` in place across processes (one flat buffer, one collective)."""
    if world_size() == 1 or not tensors:
        return
    import torch

    flat = torch.cat([t.reshape(-1) for t in tensors])
    torch.distributed.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def shutdown() -> None:
    """Wait for every process, then leave the process group: a process that exits with the
    group still open can abort in its teardown ("terminate called without an active exception")."""
    if world_size() == 1:
        return
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def device_for(configured: str) -> str:
    """The device this process uses: ``cuda:LOCAL_RANK`` when launched on GPUs, else as configured."""
    if world_size() > 1 and configured.startswith("cuda"):
        return f"cuda:{local_rank()}"
    return configured


def gather_in_order(indices: list[int], values: list, total: int) -> list:
    """Every process's ``values`` (for its ``indices`` of ``range(total)``) in index order, on
    every process; in a single process just ``values``."""
    if world_size() == 1:
        return list(values)
    import torch

    parts: list = [None] * world_size()
    torch.distributed.all_gather_object(parts, list(zip(indices, values)))
    out: list = [None] * total
    for part in parts:
        for i, v in part:
            out[i] = v
    return out
