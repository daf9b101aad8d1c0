"""The LoRA maths of ditkit: one wrapper around ``nn.Linear``.

For a batch row ``i`` with input ``x_i`` (``[seq, in]``) a wrapped projection computes

    y_i = W x_i + b                                   (the frozen base layer)
        + s_d * B_d A_d x_i      for d = low_index[i]    (a per-row low-rank diff, any rank)
        + D_e x_i                for e = dense_index[i]  (a per-row dense diff, full fine-tunes)
        + s_a * B_a A_a x_i                             (one shared adapter, e.g. the DIT adapter)

with ``A [r, in]``, ``B [out, r]`` and ``s = alpha / r``, as in the LoRA paper and peft
(``lora_A.weight``, ``lora_B.weight``; docs/method.md; alpha = 1 by default). The layer keeps
them transposed, ``A^T [in, r]`` and ``B^T [r, out]`` (names ending ``_ir`` and ``_ro``), so that a
row of activations ``x [seq, in]`` goes ``x A^T B^T`` with two plain matmuls.
An index of -1 means "no diff for this row". Diffs live in *banks*: ``K`` diffs stacked on a leading
dimension. A bank's tensors are trainable ``nn.Parameter``s (train ``K`` diffs at once, row ``t``
through diff ``t``) or frozen buffers (DIT training and inference). The low-rank path never builds a
dense ``[out, in]`` matrix: its cost per token is ``O(r (in + out))``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .config import DEFAULT_TARGETS
from .errors import DiffMismatchError

# Decoder layers only: not vision towers, embeddings or lm_head.
_DECODER_LAYER = re.compile(r"(^|\.)layers\.\d+\.")


B_INITS = ("reference", "unit")


def b_bound(rank: int, out: int, init: str = "unit") -> float:
    """Half-width of the uniform initialisation of ``B [out, r]`` (A starts at zero: the reference
    code's choice, which ditkit keeps; peft starts B at zero instead).

    "unit": Kaiming-uniform with a = sqrt(5) (torch's and peft's default) over fan-in r,
    1 / sqrt(r): the DIT adapter, and ditkit's first diff initialisation. "reference":
    Kaiming-uniform with a = 0 over fan-in r x out, sqrt(6 / (r out)), which the reference code
    gets by initialising its stacked ``[diffs, r, out]`` tensor (10-16x smaller on SmolLM2).
    """
    if init == "reference":
        return math.sqrt(6.0 / (rank * out))
    if init == "unit":
        return rank**-0.5
    raise ValueError(f"B initialisation {init!r} is not one of {', '.join(B_INITS)}")


def init_lora_(a_ir: torch.Tensor, b_ro: torch.Tensor) -> None:
    """Initialise one LoRA pair (kept transposed) in place from torch's global generator: B "unit"
    uniform (`b_bound`), A zeros, so the product starts at 0; works on stacked banks too."""
    bound = b_bound(b_ro.shape[-2], b_ro.shape[-1], "unit")
    with torch.no_grad():
        b_ro.uniform_(-bound, bound)
        a_ir.zero_()


def init_diff_b(shape_ro: tuple[int, int], gen: torch.Generator, init: str) -> torch.Tensor:
    """One diff's ``B^T [r, out]`` drawn from ``gen`` alone (a diff's start depends on its own
    seed, never on the diffs beside it), uniform within `b_bound`."""
    r, out = shape_ro
    return (torch.rand(shape_ro, generator=gen) * 2 - 1) * b_bound(r, out, init)


class DiffLinear(nn.Module):
    """An ``nn.Linear`` plus per-row diffs and an optional shared adapter (see module docstring)."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.low_a_kir: torch.Tensor | None = None  # [K, in, r]: each diff's A^T
        self.low_b_kro: torch.Tensor | None = None  # [K, r, out]: each diff's B^T
        self.low_scale_k: torch.Tensor | None = None  # [K]
        self.low_index: torch.Tensor | None = None  # [batch], long, -1 = none
        self.dense_koi: torch.Tensor | None = None  # [K, out, in]
        self.dense_index: torch.Tensor | None = None  # [batch]
        self.adapter_a_ir: nn.Parameter | None = None  # [in, r]: A^T
        self.adapter_b_ro: nn.Parameter | None = None  # [r, out]: B^T
        self.adapter_scale = 1.0
        self.enabled = True  # False switches every diff and the adapter off (e.g. KL targets)
        self.diffs_enabled = True  # False switches the per-row diffs off, keeps the adapter

    @property
    def in_features(self) -> int:
        return self.base.in_features

    # The wrapped layer's own parameters, so that code reading a projection's weight (diffs from
    # checkpoints, alignment, norms) works on an injected model as on a plain one.
    @property
    def weight(self) -> nn.Parameter:
        return self.base.weight

    @property
    def bias(self) -> nn.Parameter | None:
        return self.base.bias

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x_bsi: torch.Tensor) -> torch.Tensor:
        y_bso = self.base(x_bsi)
        if not self.enabled:
            return y_bso
        if self.diffs_enabled and self.low_index is not None:
            y_bso = self._add_lowrank(x_bsi, y_bso)
        if self.diffs_enabled and self.dense_index is not None:
            y_bso = y_bso + self._dense(x_bsi)
        if self.adapter_b_ro is not None:
            h_bsr = x_bsi @ self.adapter_a_ir.to(x_bsi.dtype)
            y_bso = y_bso + self.adapter_scale * (h_bsr @ self.adapter_b_ro.to(x_bsi.dtype))
        return y_bso

    def _rows(
        self, index_b: torch.Tensor, x_bsi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if index_b.shape[0] != x_bsi.shape[0]:
            raise ValueError(
                f"diff row index has {index_b.shape[0]} rows but the batch has {x_bsi.shape[0]}"
            )
        present_b = index_b >= 0
        return index_b.clamp(min=0), present_b

    def _add_lowrank(self, x_bsi: torch.Tensor, y_bso: torch.Tensor) -> torch.Tensor:
        """``y + s x A^T B^T`` per row. The scale goes on the rank-r activations and the sum is one
        ``baddbmm``: no extra pass over the ``[batch, seq, out]`` output (this path is
        memory-bound on CPUs, docs/performance.md)."""
        idx_b, present_b = self._rows(self.low_index, x_bsi)
        a_bir = self.low_a_kir.index_select(0, idx_b).to(x_bsi.dtype)
        b_bro = self.low_b_kro.index_select(0, idx_b).to(x_bsi.dtype)
        # Rows with no diff get weight 0: no output and no gradient reaches diff 0 through them.
        w_b = self.low_scale_k.index_select(0, idx_b).to(x_bsi.dtype) * present_b
        h_bsr = torch.bmm(_as3d(x_bsi), a_bir) * w_b[:, None, None]
        return torch.baddbmm(_as3d(y_bso), h_bsr, b_bro).view(y_bso.shape)

    def _dense(self, x_bsi: torch.Tensor) -> torch.Tensor:
        idx_b, present_b = self._rows(self.dense_index, x_bsi)
        d_boi = self.dense_koi.index_select(0, idx_b).to(x_bsi.dtype)
        out = torch.bmm(_as3d(x_bsi), d_boi.transpose(1, 2)) * present_b[:, None, None]
        return out.view(*x_bsi.shape[:-1], -1)

    def set_lowrank(
        self,
        a_kir: torch.Tensor,
        b_kro: torch.Tensor,
        scale_k: torch.Tensor,
        index_b: torch.Tensor | None = None,
    ) -> None:
        """Install a bank of K low-rank diffs, A and B transposed (``A^T [K, in, r]``,
        ``B^T [K, r, out]``). Tensors may be ``nn.Parameter`` (trainable)."""
        k, i, r = a_kir.shape
        if i != self.in_features or b_kro.shape != (k, r, self.out_features):
            raise ValueError(
                f"low-rank bank shapes A^T {tuple(a_kir.shape)} / B^T {tuple(b_kro.shape)} do "
                f"not fit a Linear({self.in_features} -> {self.out_features})"
            )
        self._bank(low_a_kir=a_kir, low_b_kro=b_kro, low_scale_k=scale_k, low_index=index_b)

    def set_dense(self, dense_koi: torch.Tensor, index_b: torch.Tensor | None = None) -> None:
        """Install a bank of K dense diffs ``[K, out, in]``."""
        if dense_koi.shape[1:] != (self.out_features, self.in_features):
            raise ValueError(
                f"dense bank shape {tuple(dense_koi.shape)} does not fit "
                f"a Linear({self.in_features} -> {self.out_features})"
            )
        self._bank(dense_koi=dense_koi, dense_index=index_b)

    def clear_diffs(self) -> None:
        """Drop both banks (the adapter stays)."""
        self._bank(low_a_kir=None, low_b_kro=None, low_scale_k=None, low_index=None)
        self._bank(dense_koi=None, dense_index=None)

    def _bank(self, **tensors: torch.Tensor | None) -> None:
        # Banks are plain attributes, not registered parameters: a trainable bank belongs to the
        # optimizer that trains it, and swapping banks per batch must not touch the module tree.
        for name, value in tensors.items():
            self._parameters.pop(name, None)
            object.__setattr__(self, name, value)

    def lowrank_entry(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of bank entry ``k``: ``(A [r, in], B [out, r])``."""
        return _t_copy(self.low_a_kir[k]), _t_copy(self.low_b_kro[k])

    def add_adapter(self, rank: int, alpha: float = 1.0) -> None:
        """Create the shared trainable adapter (B "unit" uniform, A zeros; fp32)."""
        # fp32 whatever the base's dtype (optimizer precision); cast in the forward pass.
        f32 = {"device": self.base.weight.device, "dtype": torch.float32}
        self.adapter_a_ir = nn.Parameter(torch.empty(self.in_features, rank, **f32))
        self.adapter_b_ro = nn.Parameter(torch.empty(rank, self.out_features, **f32))
        init_lora_(self.adapter_a_ir.data, self.adapter_b_ro.data)
        self.adapter_scale = alpha / rank

    def set_adapter(self, a_ri: torch.Tensor | None, b_or: torch.Tensor | None, scale=1.0) -> None:
        """A frozen shared adapter ``(A [r, in], B [out, r])``, cast to the base's dtype and
        device; None removes it."""
        if a_ri is None:
            self.adapter_a_ir = self.adapter_b_ro = None
            return
        w = self.base.weight
        self.adapter_a_ir = nn.Parameter(a_ri.T.to(w), requires_grad=False)
        self.adapter_b_ro = nn.Parameter(b_or.T.to(w), requires_grad=False)
        self.adapter_scale = scale


def _t_copy(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``t`` transposed, never a view of it (safetensors refuses views)."""
    return t.detach().T.clone(memory_format=torch.contiguous_format)


def _as3d(x: torch.Tensor) -> torch.Tensor:
    """View ``[batch, ..., in]`` as ``[batch, tokens, in]`` for bmm."""
    return x.reshape(x.shape[0], -1, x.shape[-1])


def find_targets(model: nn.Module, targets: Iterable[str] = DEFAULT_TARGETS) -> list[str]:
    """Names of the decoder-layer ``nn.Linear`` modules whose last name part is in ``targets``."""
    wanted = set(targets)
    names = [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear | DiffLinear)
        and name.rsplit(".", 1)[-1] in wanted
        and _DECODER_LAYER.search(name)
        and "vision" not in name
    ]
    return names


def inject(model: nn.Module, targets: Iterable[str] = DEFAULT_TARGETS) -> dict[str, DiffLinear]:
    """Wrap the target projections of ``model`` in place; returns ``{name: DiffLinear}``.

    Injecting twice is a no-op for modules already wrapped.
    """
    wrapped: dict[str, DiffLinear] = {}
    for name in find_targets(model, targets):
        parent, leaf = _parent(model, name)
        mod = getattr(parent, leaf)
        if not isinstance(mod, DiffLinear):
            mod = DiffLinear(mod)
            setattr(parent, leaf, mod)
        wrapped[name] = mod
    if not wrapped:
        raise ValueError(f"no projection named any of {sorted(set(targets))} in a decoder layer")
    return wrapped


def remove(model: nn.Module) -> None:
    """Put the original ``nn.Linear`` modules back; the model's outputs return bit for bit."""
    for name, mod in list(model.named_modules()):
        if isinstance(mod, DiffLinear):
            parent, leaf = _parent(model, name)
            setattr(parent, leaf, mod.base)


def diff_layers(model: nn.Module) -> dict[str, DiffLinear]:
    """The wrapped projections of ``model`` by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, DiffLinear)}


@contextmanager
def disabled(model: nn.Module, adapter_too: bool = True) -> Iterator[None]:
    """Run ``model`` as the plain base model (or base + adapter) inside the block."""
    layers = list(diff_layers(model).values())
    flag = "enabled" if adapter_too else "diffs_enabled"
    saved = [getattr(m, flag) for m in layers]
    for m in layers:
        setattr(m, flag, False)
    try:
        yield
    finally:
        for m, s in zip(layers, saved):
            setattr(m, flag, s)


def set_row_index(
    model: nn.Module, low_index: torch.Tensor | None, dense_index: torch.Tensor | None = None
) -> None:
    """Point every wrapped layer's batch rows at bank entries (``-1`` = no diff)."""
    for m in diff_layers(model).values():
        dev = m.base.weight.device
        if m.low_a_kir is not None:
            m.low_index = low_index.to(dev) if low_index is not None else None
        if m.dense_koi is not None:
            m.dense_index = dense_index.to(dev) if dense_index is not None else None


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    head, _, leaf = name.rpartition(".")
    return (model.get_submodule(head) if head else model), leaf


# ---------------------------------------------------------------- whole-model state


def new_lowrank_banks(
    model: nn.Module, b_init: dict[str, list[torch.Tensor]], rank: int, alpha: float
) -> list[nn.Parameter]:
    """Trainable fp32 banks of ``len(b_init[name])`` diffs on every wrapped layer, B from
    ``b_init`` (``{layer: [B^T [r, out] per diff]}``), A zeros; returns the parameters."""
    params = []
    for name, layer in diff_layers(model).items():
        # fp32 whatever the model's dtype: Adam's moments and small updates need the precision;
        # the layer casts the banks to the activations' dtype in the forward pass.
        f32 = {"device": layer.base.weight.device, "dtype": torch.float32}
        t = len(b_init[name])
        a_kir = nn.Parameter(torch.zeros(t, layer.in_features, rank, **f32))
        b_kro = nn.Parameter(torch.stack(b_init[name]).to(**f32))
        layer.set_lowrank(a_kir, b_kro, torch.full((t,), alpha / rank, **f32))
        params += [b_kro, a_kir]
    return params


def install_banks(
    model: nn.Module,
    lowrank: list[dict[str, tuple[torch.Tensor, torch.Tensor, float]]],
    dense: list[dict[str, torch.Tensor]],
    row_index: torch.Tensor,
) -> None:
    """Frozen banks of K diffs on every wrapped layer; batch row i uses diff ``row_index[i]``.

    ``lowrank[j]`` maps a layer to diff j's ``(A [r_j, in], B [out, r_j], scale)``, ``dense[j]``
    to its ``[out, in]`` delta. Ranks may differ (zero-padded, adding nothing); a layer a diff
    lacks gets zeros.
    """
    row_index = row_index.long()
    r = max((a.shape[0] for d in lowrank for a, _, _ in d.values()), default=0)
    for name, layer in diff_layers(model).items():
        w = layer.base.weight
        layer.clear_diffs()
        if r:
            k = len(lowrank)
            a_kir = w.new_zeros(k, layer.in_features, r)
            b_kro = w.new_zeros(k, r, layer.out_features)
            s_k = w.new_zeros(k)
            for j, d in enumerate(lowrank):
                if name in d:
                    a_ri, b_or, scale = d[name]
                    a_kir[j, :, : a_ri.shape[0]] = a_ri.T.to(w)
                    b_kro[j, : a_ri.shape[0]] = b_or.T.to(w)
                    s_k[j] = scale
            layer.set_lowrank(a_kir, b_kro, s_k, row_index.to(w.device))
        if any(dense):
            d_koi = w.new_zeros(len(dense), layer.out_features, layer.in_features)
            for j, d in enumerate(dense):
                if name in d:
                    d_koi[j] = d[name].to(w)
            layer.set_dense(d_koi, row_index.to(w.device))


def clear_diffs(model: nn.Module) -> None:
    """Drop every wrapped layer's diff banks (adapters stay)."""
    for layer in diff_layers(model).values():
        layer.clear_diffs()


def set_adapter(model: nn.Module, adapter) -> None:
    """Install ``adapter`` (a ``WeightDiff``: its ``lowrank`` pairs, each at ``scale(name)``) as
    every wrapped layer's frozen shared adapter; a layer it lacks gets none, None removes it."""
    layers = diff_layers(model)
    pairs = {} if adapter is None else adapter.lowrank
    missing = set(pairs) - set(layers)
    if missing:
        raise DiffMismatchError(
            f"the DIT adapter's modules {sorted(missing)[:3]} are not in the model; it was "
            f"trained on another base model (recorded: {adapter.meta.get('base_model')}): "
            "pass that one (--base) or an adapter trained on this model"
        )
    for name, layer in layers.items():
        a_ri, b_or = pairs.get(name, (None, None))
        layer.set_adapter(a_ri, b_or, adapter.scale(name) if a_ri is not None else 1.0)


def add_adapters(model: nn.Module, rank: int, alpha: float = 1.0) -> list[nn.Parameter]:
    """A fresh trainable shared adapter on every wrapped layer; returns its parameters."""
    params = []
    for layer in diff_layers(model).values():
        layer.add_adapter(rank, alpha)
        params += [layer.adapter_b_ro, layer.adapter_a_ir]
    return params


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the shared adapter: ``{"<layer>.lora_A": [r, in], "<layer>.lora_B": [out, r]}``."""
    out = {}
    for name, layer in diff_layers(model).items():
        out[f"{name}.lora_A"] = _t_copy(layer.adapter_a_ir)
        out[f"{name}.lora_B"] = _t_copy(layer.adapter_b_ro)
    return out


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `adapter_state`'s tensors (or `peft_named`'s older ones) into the trainable adapter."""
    state = peft_named(state)
    with torch.no_grad():
        for name, layer in diff_layers(model).items():
            layer.adapter_a_ir.copy_(state[f"{name}.lora_A"].T)
            layer.adapter_b_ro.copy_(state[f"{name}.lora_B"].T)


def peft_named(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An adapter state with peft's names: a DIT checkpoint from before ditkit named A and B as
    peft does holds ``<layer>.A [r, out]`` (B^T) and ``<layer>.B [in, r]`` (A^T)."""
    out = {}
    for key, value in state.items():
        if key.endswith(".A"):
            out[key[:-2] + ".lora_B"] = value.T.contiguous()
        elif key.endswith(".B"):
            out[key[:-2] + ".lora_A"] = value.T.contiguous()
        else:
            out[key] = value
    return out
