"""LoRA with many adapters over one shared, frozen base model.

A LoRA adapter (Hu et al., 2021) adds a low-rank update to a frozen linear layer:

    y = W x + (alpha / r) * B A x,    A in R^{r x d_in},  B in R^{d_out x r},  B = 0 at start.

SEAL scores every candidate self-edit by its own LoRA update, so a ReSTEM round needs hundreds
of independent adapters. Here one layer holds `n` adapters (`A_i: [r, d_in]`, `B_i: [d_out, r]`)
and every batch row says which adapter it uses (`rows`, -1 = none). The
k self-edits of a passage then train together in one batched forward over a single copy of the
base model: the base matmuls are shared, the adapter matmuls are batched (`bmm`), and the
gradients of adapter i come only from the rows of adapter i, so each adapter learns exactly
what it would learn alone (up to float summation order).
"""

from __future__ import annotations

import contextlib
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from seal.config import ConfigError, LoRAConfig


@dataclass
class LoRAState:
    """Shared by every LoRA layer of a model: the adapter of each batch row."""

    n: int
    cfg: LoRAConfig
    rows: torch.Tensor | None = None
    segments: list[tuple[int, int, int]] | None = None
    """When rows are sorted by adapter: (adapter, start, end) runs of rows, so each adapter's
    update is a plain matmul on a slice (no gathered weight copies)."""
    mixes: list[list[tuple[int, float]]] | None = None
    """Row id n + j means "the adapters mixes[j] = [(adapter, coef), ...] at once": the row's
    update is sum_a coef_a * B_a A_a x. Used for a row shared by several *fresh* adapters (all
    B_a = 0), whose forward and input gradients are then the base model's, so one row gives each
    B_a its gradient, weighted by coef_a (see inner_loop.train_adapters)."""
    layers: dict[str, LoRALinear] = field(default_factory=dict)
    fuse_shared_input: bool = False
    dense: bool = False
    """Compute every adapter's update for every row, masked (`coef`): see LoRALinear._dense.
    Set by the inner loop for training (inner_loop.Speedups.dense_lora)."""
    coef: torch.Tensor | None = None
    """With `dense`: [b, 1, n * r], row j's weight on each adapter's rank-r columns (scale
    alpha / r times 1 for its adapter, its coefficients for a mix, 0 elsewhere)."""
    """Layers that read the same input (q/k/v, gate/up: `SHARED_INPUT`) compute their A products
    as one matmul, x [A_q; A_k; A_v]^T, split for each (inner_loop.Speedups.fuse_lora_a)."""

    def parameters(self, adapter: int | None = None) -> list[nn.Parameter]:
        """All adapters' weights, or those of one adapter."""
        ids = range(self.n) if adapter is None else [adapter]
        return [p for layer in self.layers.values() for i in ids for p in (layer.A[i], layer.B[i])]


SHARED_INPUT = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
"""Sibling layers that every Llama-style block calls on one and the same input tensor."""


class _SharedInput:
    """The LoRA layers of one block that read the same input, and the last fused A product:
    the first of them to run on a tensor x computes x [A_1; ...; A_m]^T for every adapter segment
    and the others take their slice. The product is reused only for the very same tensor object,
    unmodified (a weak reference and its version counter), so a new input is never mistaken for
    an old one."""

    def __init__(self, members: list[LoRALinear]):
        self.members = members
        self.ref = None
        self.version = -1
        self.kind = ""
        self.parts: dict[int, list[torch.Tensor] | torch.Tensor] = {}

    def _holds(self, x: torch.Tensor, kind: str) -> bool:
        """Whether the parts are this kind of product (per segment or dense) of x, unmodified."""
        return self.ref is not None and self.ref() is x and self.version == x._version and self.kind == kind

    def _remember(self, x: torch.Tensor, kind: str) -> None:
        self.ref, self.version, self.kind = weakref.ref(x), x._version, kind

    def take(self, layer: LoRALinear, x: torch.Tensor, segs, xs_list) -> list[torch.Tensor]:
        """The scaled A products (x_s A_a^T * scale * coef) of `layer`, per segment and mix entry."""
        if not self._holds(x, "segments"):
            self.parts = {id(m): [] for m in self.members}
            state = layer.state
            for (adapter, _, _), xs in zip(segs, xs_list):
                if adapter < 0:
                    continue
                mix = [(adapter, 1.0)] if adapter < state.n else state.mixes[adapter - state.n]
                flat = xs.reshape(-1, xs.shape[-1])
                for a, c in mix:
                    fused = flat @ torch.cat([m.A[a] for m in self.members]).to(x.dtype).t()
                    for m, part in zip(self.members, fused.split([m.A[a].shape[0] for m in self.members], -1)):
                        self.parts[id(m)].append(part * (m.scale * c))
            self._remember(x, "segments")
        return self.parts[id(layer)]

    def take_dense(self, layer: LoRALinear, x: torch.Tensor) -> torch.Tensor:
        """`layer`'s unmasked A product x [A_1; ...; A_n]^T, computed once for all members."""
        if not self._holds(x, "dense"):
            fused = x @ torch.cat([w for m in self.members for w in m.A]).to(x.dtype).t()
            n_r = [sum(w.shape[0] for w in m.A) for m in self.members]
            self.parts = {id(m): part for m, part in zip(self.members, fused.split(n_r, -1))}
            self._remember(x, "dense")
        return self.parts[id(layer)]


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, state: LoRAState):
        super().__init__()
        self.base = base
        self.state = state
        self.shared: _SharedInput | None = None
        r, n = state.cfg.rank, state.n
        dev = base.weight.device
        # one Parameter per adapter: gradients land directly in each, with no scatter
        self.A = nn.ParameterList([torch.zeros(r, base.in_features, device=dev) for _ in range(n)])
        self.B = nn.ParameterList([torch.zeros(base.out_features, r, device=dev) for _ in range(n)])
        self.scale = state.cfg.alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        rows = self.state.rows
        if rows is None:
            return y
        if x.dim() != 3 or rows.shape[0] != x.shape[0]:
            raise RuntimeError(f"LoRA rows ({tuple(rows.shape)}) do not match the batch ({tuple(x.shape)})")
        if self.state.coef is not None:
            return self._dense(x, y)
        if self.state.segments is not None:
            # per run of rows: y_s + (scale * x_s A^T) B^T as one addmm (the scale lands on the
            # rank-r tensor, the add is fused); split, not slicing: its backward is one cat
            segs = self.state.segments
            sizes = [e - s for _, s, e in segs]
            xs_list = x.split(sizes, 0)
            fused = iter(self.shared.take(self, x, segs, xs_list)) \
                if self.shared is not None and self.state.fuse_shared_input else None
            outs = []
            for (adapter, _, _), xs, ys in zip(segs, xs_list, y.split(sizes, 0)):
                if adapter < 0:
                    outs.append(ys)
                    continue
                mix = [(adapter, 1.0)] if adapter < self.state.n else self.state.mixes[adapter - self.state.n]
                flat = ys.reshape(-1, ys.shape[-1])
                for a, c in mix:
                    xa = next(fused) if fused is not None else \
                        (xs.reshape(-1, xs.shape[-1]) @ self.A[a].to(x.dtype).t()) * (self.scale * c)
                    flat = torch.addmm(flat, xa.to(y.dtype), self.B[a].to(y.dtype).t())
                outs.append(flat.view(ys.shape))
            return outs[0] if len(outs) == 1 else torch.cat(outs, 0)
        idx = rows.clamp(min=0)  # rows in any order: gather each row's weights
        a = torch.stack(list(self.A))[idx].to(x.dtype)  # [b, r, d_in]
        b = torch.stack(list(self.B))[idx].to(x.dtype)  # [b, d_out, r]
        delta = torch.bmm(torch.bmm(x, a.transpose(1, 2)), b.transpose(1, 2)) * self.scale
        if bool((rows < 0).any()):
            delta = delta * (rows >= 0).to(delta.dtype).view(-1, 1, 1)
        return y + delta.to(y.dtype)


    def _dense(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y + ((x [A_1; ...; A_n]^T) * coef) [B_1, ..., B_n]^T: all n adapters' updates for every
        row in two matmuls, the mask `coef` keeping each row's own (or its mix's). It spends
        n times the adapter FLOPs of the per-segment path (rank 32 x 5 adapters: ~+40% of the
        base's FLOPs on SmolLM2) but runs ~6 ops per layer instead of ~4 per adapter, which is
        what costs where bf16 matmuls are fast (AMX): on SmolLM2's body (5 rows x 375 tokens,
        forward + backward) the adapters added 49% to the base model's 1.98 s this way and 61%
        per segment. The gradients are the same: a masked column contributes zero to every other
        adapter's A and B."""
        if self.shared is not None and self.state.fuse_shared_input:
            xa = self.shared.take_dense(self, x)
        else:
            xa = x @ torch.cat(list(self.A)).to(x.dtype).t()
        xa = xa * self.state.coef.to(xa.dtype)
        return y + (xa @ torch.cat(list(self.B), 1).to(xa.dtype).t()).to(y.dtype)


def dense_coef(state: LoRAState, rows: list[int], mixes, device) -> torch.Tensor:
    """LoRAState.coef for `rows` (adapter ids, -1 none, n + i the mix mixes[i])."""
    r, n = state.cfg.rank, state.n
    scale = state.cfg.alpha / r
    w = torch.zeros(len(rows), n)
    for j, a in enumerate(rows):
        if 0 <= a < n:
            w[j, a] = scale
        elif a >= n:
            for b, c in mixes[a - n]:
                w[j, b] += scale * c
    return w.repeat_interleave(r, 1).unsqueeze(1).to(device)


def _targets(model, cfg: LoRAConfig):
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in cfg.targets:
            yield name, module


def check_targets(model, cfg: LoRAConfig, setting: str = "lora.targets") -> None:
    """ConfigError naming `setting` when a target name matches no linear layer of `model` (a typo
    would otherwise train fewer layers than asked, or fail only when the update starts)."""
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in cfg.targets if t not in names]
    if missing:
        raise ConfigError(f"{setting}: the model has no linear layer named {', '.join(missing)} "
                          f"(its linear layers: {', '.join(sorted(names))})")


def attach(model, cfg: LoRAConfig, n: int) -> LoRAState:
    """Wrap the target linear layers of `model` with `n` zero adapters (B = 0, A set by `reset`)."""
    if getattr(model, "_seal_lora", None) is not None:
        raise RuntimeError("model already has LoRA adapters attached; call lora.detach first")
    state = LoRAState(n=n, cfg=cfg)
    found = list(_targets(model, cfg))
    if not found:
        check_targets(model, cfg)
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = LoRALinear(module, state)
        setattr(parent, child, layer)
        state.layers[name] = layer
    for names in SHARED_INPUT:  # siblings that read one input: one fused A matmul (when enabled)
        parents = {name.rpartition(".")[0] for name in state.layers if name.rpartition(".")[2] == names[0]}
        for parent_name in parents:
            members = [state.layers.get(f"{parent_name}.{c}" if parent_name else c) for c in names]
            members = [m for m in members if m is not None]
            if len(members) > 1:
                group = _SharedInput(members)
                for m in members:
                    m.shared = group
    model._seal_lora = state
    return state


def detach(model) -> None:
    """Put the plain linear layers back; the base weights were never changed."""
    state = getattr(model, "_seal_lora", None)
    if state is None:
        return
    for name, layer in state.layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.base)
    model._seal_lora = None


def reset(state: LoRAState, seeds: list[int]) -> None:
    """Fresh adapters: A ~ N(0, init_std^2) from each adapter's own seed, B = 0.

    Adapter i's initial weights depend only on seeds[i], so an adapter trained in a batch of
    others starts exactly where it would start alone.
    """
    if len(seeds) != state.n:
        raise ValueError(f"need {state.n} seeds, got {len(seeds)}")
    with torch.no_grad():
        for i, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            for name in sorted(state.layers):
                layer = state.layers[name]
                a = torch.randn(layer.A[i].shape, generator=g) * state.cfg.init_std
                layer.A[i].copy_(a.to(layer.A[i].device))
                layer.B[i].zero_()


@contextlib.contextmanager
def use_rows(model, rows: torch.Tensor | list[int] | None, mixes: list[list[tuple[int, float]]] | None = None):
    """Within the block, batch row j of every forward uses adapter rows[j] (-1: base model;
    n + i: the adapter mix mixes[i], see LoRAState.mixes)."""
    state = getattr(model, "_seal_lora", None)
    if state is None:
        if rows is not None and any(int(r) >= 0 for r in rows):
            raise RuntimeError("no LoRA adapters attached")
        yield
        return
    old = state.rows, state.segments, state.mixes, state.coef
    if rows is not None and not isinstance(rows, torch.Tensor):
        rows = torch.tensor(list(rows), dtype=torch.long)
    ids = None if rows is None else rows.tolist()
    state.rows = None if rows is None else rows.to(next(iter(state.layers.values())).A[0].device)
    state.segments = None if rows is None else _segments(ids, limit=None if mixes else 8)
    state.mixes = mixes
    state.coef = None if rows is None or not state.dense else dense_coef(state, ids, mixes, state.rows.device)
    if mixes and (state.segments is None or max(ids) >= state.n + len(mixes)):
        raise ValueError("rows with adapter mixes must come in one run per mix, with valid mix ids")
    try:
        yield
    finally:
        state.rows, state.segments, state.mixes, state.coef = old


def _segments(rows: list[int], limit: int | None = 8) -> list[tuple[int, int, int]] | None:
    """Runs of equal adapter ids, if each adapter appears in one run only and there are at
    most `limit` runs (else None: many short runs are faster as one gathered bmm)."""
    segs: list[tuple[int, int, int]] = []
    for i, r in enumerate(rows):
        if segs and segs[-1][0] == r:
            segs[-1] = (r, segs[-1][1], i + 1)
        else:
            segs.append((r, i, i + 1))
    if len({a for a, _, _ in segs}) != len(segs) or (limit is not None and len(segs) > limit):
        return None
    return segs


def merge(model, adapter: int = 0) -> None:
    """Fold adapter `adapter` into the base weights (W += scale * B A) and detach all adapters."""
    state = getattr(model, "_seal_lora", None)
    if state is None:
        raise RuntimeError("no LoRA adapters attached")
    with torch.no_grad():
        for layer in state.layers.values():
            delta = layer.B[adapter] @ layer.A[adapter] * layer.scale
            layer.base.weight.add_(delta.to(layer.base.weight.dtype))
    detach(model)


def adapter_state(state: LoRAState, adapter: int) -> dict[str, torch.Tensor]:
    """One adapter's weights (for saving or comparing)."""
    out = {}
    for name, layer in state.layers.items():
        out[f"{name}.lora_A"] = layer.A[adapter].detach().clone()
        out[f"{name}.lora_B"] = layer.B[adapter].detach().clone()
    return out


# ----------------------------------------------------------------------------- saved adapter weights

def target_weights(model, lora_cfg) -> dict[str, torch.Tensor]:
    """Copies of the weights a merged update changes (the LoRA target layers), to restore the
    never-edited model at the start of each sequence."""
    return {name: m.weight.detach().clone() for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in lora_cfg.targets}


def restore_weights(model, saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, w in saved.items():
            model.get_submodule(name).weight.copy_(w)


def load_adapter(state: LoRAState, slot: int, weights: dict[str, torch.Tensor]) -> None:
    """Put saved adapter weights (`lora.adapter_state`) into adapter `slot`."""
    with torch.no_grad():
        for name, layer in state.layers.items():
            layer.A[slot].copy_(weights[f"{name}.lora_A"])
            layer.B[slot].copy_(weights[f"{name}.lora_B"])


def merge_saved(model, lora_cfg, weights: dict[str, torch.Tensor]) -> None:
    """Merge a saved adapter into the weights: the same W += scale * B A as the step that made it."""
    state = attach(model, lora_cfg, 1)
    load_adapter(state, 0, weights)
    merge(model, 0)


def save_adapter(path: Path, weights: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp))
        os.replace(tmp, path)
    except BaseException as e:  # a full disk: one line naming the file, no .tmp left
        tmp.unlink(missing_ok=True)
        from seal.training.models import is_write_failure, write_error

        if is_write_failure(e):
            raise write_error(e, path) from None
        raise


def read_adapter(path: Path, device) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.exists():
        raise FileNotFoundError(f"{path}: the saved update of a finished step is missing; start a new --out")
    return {k: v.to(device) for k, v in load_file(str(path)).items()}
