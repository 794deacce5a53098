"""The inner loop: apply self-edits as LoRA updates (paper section 3.1, "inner loop update").

Given self-edits SE_1..SE_n (each already turned into training sequences), we compute

    theta'_i = SFT(theta, SE_i)

as n LoRA adapters trained *together* over one shared frozen base model (see lora.py).

How an update's sequences become optimizer steps is `InnerLoopConfig.steps`:
  * sequence (default): one sequence a step, as the paper's reference code (batch size 1, the
    passage appended as one more sequence): a self-edit of N items takes (N+1) x epochs steps,
    the passage alone `epochs`. A longer self-edit buys steps, so `seal evaluate` pairs every
    self-edit row with the passage trained for as many steps (`eval.controls`).
  * packed: `batch_size` sequences a step, the loss averaged over the step's tokens; every
    update of up to batch_size sequences takes `epochs` steps, and a self-edit's items take
    gradient away from the passage (the earlier default, and why a self-edit taught less than the
    passage alone: issue "Self-edits that teach more than the passage").
  * packed-weighted: packed steps, each sequence's loss its own token mean, weighted so that the
    passage counts as much as the self-edit's items together (`row_weights`).

Each step takes the next batch of every adapter that still has one; the rows are sorted by length
and cut into micro-batches under a token budget, so padding stays small without packing
sequences into one row (which would need a block-diagonal attention mask). Loss is next-token
cross-entropy on real tokens only (never on padding; optionally only on the completion after a
prompt). Adapter i's loss is the mean over *its* tokens in the step, and the total is the sum
over adapters, so gradients never mix; AdamW and gradient clipping are per adapter
(`_AdapterAdamW`), so a batch of adapters trains as each would alone.

Where the time goes, and what is done about it (`Speedups`; each switch is measured by
`seal bench inner-loop --ablate` and `bench/ab_inner_loop.py`; none changes the update beyond
float summation order and rounding):
  * share_first_step: in its first step every adapter still has B = 0, so each adapter's model
    is the base model and a sequence that several adapters train on (SEAL appends the passage
    to every self-edit's data) runs once for all of them (`share_rows`). This is the largest
    saving: ~18% of executed tokens on the benchmark workload.
  * fused_head: the output layer (21% of SmolLM2's matmul weights) and its cross-entropy with
    the gradient formed in the forward pass, instead of recomputing the logits in the backward.
  * foreach_adamw: the per-adapter AdamW as multi-tensor ops (~400 LoRA tensors per adapter).
  * mask_free: right padding needs no attention mask under causal attention; 6-11% off the
    model body's forward + backward on the 2-core CPU (bench/attention_mask_ab.py), and on GPUs
    a mask keeps SDPA off its flash kernel.
  * low_precision_base (bf16 only): the frozen linear weights cast to bf16 once per update
    (`FrozenCast`) instead of by autocast on every matmul; the tied output layer gets its own copy.
  * dense_lora (bf16 only, n x rank <= DENSE_MAX_COLUMNS): every adapter's update computed on every
    row and masked, 2 matmuls per layer instead of ~4 per adapter (lora.LoRALinear._dense).
    Meant for hardware where bf16 matmuls are cheap next to op overhead (AMX: ~7x the fp32 peak
    here): 8% faster on the model body's forward + backward, 1.04x on a whole update.
  * short_attention (bf16 on a CPU, sequences <= 320 tokens): causal attention as three matmuls
    and an fp32 softmax (seal/training/attention.py) instead of SDPA's CPU flash kernel, whose bf16
    backward is 1.3-3x slower at the 20-200-token lengths of self-edit lines (seal/training/attention.py); 1.09x best of 3 on a
    whole update (per round 1.00-1.09x, results/bench_ab_short_attention.json).
  * share_prefill (grading, knowledge/qa.score_rows): the greedy answers come from the pruned
    decoder (generation.decode_pruned; the same tokens as transformers' generate), which also
    scores the gold answers on the answers' own prompt cache, so the prompts run once, not twice;
    grading one passage's 5 adapters took 1.2-1.3x less time, with the same answers and
    log-probs within 1e-5 (bench/ab_grading.py, results/bench_ab_grading.json).
The fused head keeps its [chunk x vocab] scratch tensors for the whole update (`_buffer`; 1.04x).
Measured on a 2-core AMX Xeon (bench/ab_inner_loop.py, interleaved, one workload passage's 5
self-edits, 5 epochs; results/bench_ab_amx.json, bench_ab_amx_dense.json): switching one off costs
fused_head 1.31x, low_precision_base 1.09x, share_first_step 1.06x, fuse_lora_a 1.04x,
dense_lora 1.04x (4 rounds; within the machine's ~10% noise, as are mask_free and foreach_adamw
there); all off 1.37x, fp32 instead of bf16 1.64x. The model body itself
(no adapters) reaches only ~20% of the bf16 peak at these sizes: a third of its time is
elementwise ops (norms, rotary, SiLU) and a quarter the CPU flash-attention backward.
`torch.compile` of the decoder layers took 8.4 s instead of 11.6 s on one passage and 7.0 s
instead of 7.6 s on another, after a 56 s compile per process: not worth it for a round's ~8
passages, so it is not used.
Micro-batches are capped at `InnerLoopConfig.micro_batch_tokens` padded tokens: activations
dominate memory (~2.6 MB per token here), and on this CPU larger micro-batches are not faster.

Departures from the paper's reference code: no padding to a fixed 2048 tokens, no deep copy of
the model per self-edit, constant learning rate, bf16 autocast with fp32 LoRA weights where the
CPU supports bf16.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seal.config import InnerLoopConfig
from seal.training import lora
from seal.training.attention import use_short_attention
from seal.training.models import FrozenCast, end_of_turn_ids, model_device, pick_dtype

DENSE_MAX_COLUMNS = 512
"""`dense_lora` only while n adapters x rank stays at most this many columns: its adapter FLOPs
grow with n, the per-segment path's do not."""


@dataclass(frozen=True)
class Speedups:
    """Implementation switches of the inner loop. None changes what is computed (only float
    summation order); all are on by default and exist so that `seal bench inner-loop --ablate`
    can measure each one against the same run."""

    mask_free: bool = True  # right padding + causal attention: no padding mask (SDPA causal kernel)
    fused_head: bool = True  # output layer + cross-entropy with its gradient in one pass (no recompute)
    foreach_adamw: bool = True  # the per-adapter AdamW as multi-tensor (_foreach) ops
    share_first_step: bool = True  # a sequence in several adapters' first step runs once (share_rows)
    fuse_lora_a: bool = True  # q/k/v and gate/up (one input each) compute their LoRA A products as one matmul
    low_precision_base: bool = True  # under bf16: the frozen linear weights cast once per update, not per matmul
    dense_lora: bool = True  # every adapter's update on every row, masked: 2 matmuls per layer (lora.LoRALinear._dense)
    short_attention: bool = True  # bf16 on a CPU, sequences <= 320 tokens: attention as matmuls, not SDPA's flash kernel (seal/training/attention.py)
    share_prefill: bool = True  # grading: gold answers' log-probs from the greedy answers' own prefill (pruned decoder), no second forward


@dataclass(frozen=True)
class TrainExample:
    """One training sequence: loss on `completion` (and on `prompt` too when loss_on=all)."""

    completion: str
    prompt: str = ""
    weight: float = 1.0
    """Relative weight of this sequence's mean token loss in a step (only under
    `inner.steps packed-weighted`; see `row_weights`)."""


@dataclass
class Tokenized:
    ids: list[int]
    loss_from: int  # first position whose token is a target
    weight: float = 1.0  # TrainExample.weight

    @property
    def targets(self) -> int:
        return len(self.ids) - self.loss_from


def tokenize_examples(tok, examples: list[TrainExample], cfg: InnerLoopConfig,
                      counts: dict | None = None) -> list[Tokenized]:
    """Token ids of each example, cut to `cfg.max_seq_len`.

    A completion ends with the token that ends the model's reply: after a chat-formatted prompt
    (one that contains the chat template's end-of-turn token, which closes every turn before the
    assistant's) that is the end-of-turn token, as in the rendered conversation and where sampling
    stops (`models.end_of_turn_ids`); otherwise EOS. An example with no target token left after the
    cut (e.g. a prompt longer than max_seq_len) is dropped. When `counts` is given, it receives
    `n_truncated` (sequences cut, kept) and `n_dropped` (examples left out)."""
    out = []
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    turn = end_of_turn_ids(tok, True)[:1]
    chat_end = turn if turn and turn != eos else None
    n_truncated = n_dropped = 0
    for ex in examples:
        p = tok(ex.prompt, add_special_tokens=False)["input_ids"] if ex.prompt else []
        end = chat_end if chat_end is not None and chat_end[0] in p else eos
        c = tok(ex.completion, add_special_tokens=False)["input_ids"] + end
        bos = [tok.bos_token_id] if (getattr(tok, "add_bos_token", False) and tok.bos_token_id is not None) else []
        full = bos + p + c
        ids = full[: cfg.max_seq_len]
        loss_from = 1 if cfg.loss_on == "all" else max(1, len(bos) + len(p))
        if len(ids) > loss_from:
            out.append(Tokenized(ids, loss_from, ex.weight))
            n_truncated += len(full) > len(ids)
        else:
            n_dropped += 1
    if counts is not None:
        counts["n_truncated"] = counts.get("n_truncated", 0) + n_truncated
        counts["n_dropped"] = counts.get("n_dropped", 0) + n_dropped
    return out


def schedule(n_examples: int, cfg: InnerLoopConfig, seed: int) -> list[list[int]]:
    """Batches of example indices for all epochs (shuffled each epoch from `seed`)."""
    rng = random.Random(seed)
    batches = []
    b = cfg.sequences_per_step
    for _ in range(cfg.epochs):
        order = list(range(n_examples))
        rng.shuffle(order)
        batches += [order[i : i + b] for i in range(0, n_examples, b)]
    return batches


def row_weights(rows: list[tuple[int, Tokenized]], n: int, steps: str) -> list[float]:
    """Each row's weight on the sum of its token losses, so that adapter a's loss in a step is

        packed, sequence:  sum_r sum_t l_rt / sum_r T_r           (the mean over its tokens)
        packed-weighted:   sum_r w_r (sum_t l_rt / T_r) / sum_r w_r  (a weighted mean of the
                           sequences' own token means)

    over a's rows r of T_r target tokens (w_r: TrainExample.weight). The token mean lets a long
    sequence dominate a step; the weighted form fixes each sequence's share (SEAL's passage:
    half, its self-edit's items the other half, `tasks.knowledge.training_examples`)."""
    if steps == "packed-weighted":
        total = [0.0] * n
        for a, t in rows:
            total[a] += t.weight
        return [t.weight / (max(1, t.targets) * max(total[a], 1e-12)) for a, t in rows]
    tokens = [0] * n
    for a, t in rows:
        tokens[a] += t.targets
    return [1.0 / max(1, tokens[a]) for a, _ in rows]


def epoch_aligned(plans: list[list[list[int]]], n_examples: list[int], batch_size: int,
                  epochs: int) -> tuple[list[list[list[int] | None]], dict[int, int]]:
    """The adapters' plans re-cut into steps where every adapter ends epoch e at the same step
    (an adapter with fewer batches per epoch waits), so all can be judged after an epoch.
    Returns per step each adapter's batch (None: no batch this step), and {step: epoch it ends}.
    Each adapter's own batches and their order are unchanged."""
    spe = [math.ceil(m / batch_size) for m in n_examples]
    steps, ends = [], {}
    for e in range(epochs):
        for j in range(max(spe, default=0)):
            steps.append([plans[a][e * spe[a] + j] if j < spe[a] else None for a in range(len(plans))])
        if steps:
            ends[len(steps) - 1] = e + 1
    return steps, ends


def micro_batches(rows: list[tuple[int, Tokenized]], max_tokens: int,
                  max_pad: float = 0.25) -> list[list[tuple[int, Tokenized]]]:
    """Sort rows by length and cut them into groups whose padded size stays under max_tokens
    and whose padding stays under `max_pad` of the real tokens."""
    rows = sorted(rows, key=lambda r: len(r[1].ids))
    groups, cur = [], []
    real = 0
    for r in rows:
        longest = max([len(x[1].ids) for x in cur] + [len(r[1].ids)])
        padded = longest * (len(cur) + 1)
        if cur and (padded > max_tokens or padded > (1 + max_pad) * (real + len(r[1].ids))):
            groups.append(cur)
            cur, real = [], 0
        cur.append(r)
        real += len(r[1].ids)
    if cur:
        groups.append(cur)
    # rows of one adapter next to each other: LoRA then runs on slices (see lora.LoRAState)
    return [sorted(g, key=lambda r: r[0]) for g in groups]


def collate(group: list[tuple[int, Tokenized]], pad_id: int, device):
    T = max(len(t.ids) for _, t in group)
    ids = torch.full((len(group), T), pad_id, dtype=torch.long)
    labels = torch.full((len(group), T), -100, dtype=torch.long)
    attn = torch.zeros((len(group), T), dtype=torch.long)
    for j, (_, t) in enumerate(group):
        n = len(t.ids)
        ids[j, :n] = torch.tensor(t.ids)
        attn[j, :n] = 1
        labels[j, t.loss_from : n] = ids[j, t.loss_from : n]
    rows = torch.tensor([a for a, _ in group], dtype=torch.long)
    return ids.to(device), attn.to(device), labels.to(device), rows


def right_padded(attn) -> bool:
    """True when every row is real tokens followed only by padding (what `collate` builds)."""
    return attn is None or bool((attn[:, 1:] <= attn[:, :-1]).all())


def _hidden(model, ids, attn, mask_free: bool = True):
    """Final hidden states (the decoder without the output layer).

    With right padding a causal model never lets a real token see a padding token, so the
    padding mask changes nothing at real positions. Dropping it (`mask_free`) lets SDPA use its
    causal kernel instead of a materialized [b, 1, T, T] mask, which on CPU is several times
    faster. Outputs at padding positions then differ, but nothing reads them.
    """
    if mask_free and right_padded(attn):
        attn = None
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is not None and decoder is not model:
        out = decoder(input_ids=ids, attention_mask=attn, use_cache=False)
        if getattr(out, "last_hidden_state", None) is not None:
            return out.last_hidden_state
    # wrapped models (e.g. PEFT): the last hidden state of the full forward, after the final norm
    out = model(input_ids=ids, attention_mask=attn, use_cache=False, output_hidden_states=True)
    return out.hidden_states[-1]


def _chunk_nll(head, h, tgt):
    return F.cross_entropy(head(h).float(), tgt, reduction="none")


class _LinearCrossEntropy(torch.autograd.Function):
    """nll_t = logsumexp(W h_t + b) - (W h_t + b)[y_t] for a frozen output layer, with the
    gradient d nll_t / d h_t = W^T (softmax(W h_t + b) - onehot(y_t)) formed in the forward pass.

    The backward then only scales those per-token gradients by the incoming d loss / d nll_t.
    Against `checkpoint(cross_entropy(head(h)))` this skips the recomputed logits and the
    log-softmax backward: two vocab-sized matmuls per token instead of three, and the
    [tokens x vocab] logits live one chunk at a time.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, tgt, chunk: int, workspace: dict | None):
        nll = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        grad = torch.empty(h.shape, dtype=torch.float32, device=h.device)
        ws = {} if workspace is None else workspace
        for i in range(0, h.shape[0], chunk):
            hc = h[i : i + chunk].to(weight.dtype)
            c = hc.shape[0]
            logits = _buffer(ws, "logits", (chunk, weight.shape[0]), weight.dtype, h.device)[:c]
            torch.mm(hc, weight.t(), out=logits)
            if bias is not None:
                logits += bias
            wide = _buffer(ws, "wide", (chunk, weight.shape[0]), torch.float32, h.device)[:c]
            logp = _buffer(ws, "logp", (chunk, weight.shape[0]), torch.float32, h.device)[:c]
            wide.copy_(logits)
            torch.ops.aten._log_softmax.out(wide, -1, False, out=logp)
            tc = tgt[i : i + chunk].unsqueeze(-1)
            nll[i : i + c] = -logp.gather(-1, tc).squeeze(-1)
            p = logp.exp_()  # softmax, in place
            p.scatter_add_(-1, tc, torch.full_like(tc, -1.0, dtype=p.dtype))
            logits.copy_(p)  # the [chunk, vocab] gradient, rounded to the weight's dtype
            grad[i : i + c] = (logits @ weight).float()
        ctx.save_for_backward(grad)
        ctx.h_dtype = h.dtype
        return nll

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return (grad * g.unsqueeze(-1)).to(ctx.h_dtype), None, None, None, None, None


def _buffer(ws: dict, name: str, shape: tuple, dtype, device) -> torch.Tensor:
    """A [chunk x vocab] scratch tensor kept in `ws` and reused while its shape fits. A fresh
    50 MB buffer per chunk costs page faults on every first touch. On the AMX Xeon the whole
    update gained 1.04x best of 3 (per round 0.89-1.11x, within the machine's noise;
    bench/ab_head_buffers.py, one passage's 5 self-edits); the results are bit-identical."""
    b = ws.get(name)
    if b is None or b.shape != shape or b.dtype != dtype or b.device != device:
        b = ws[name] = torch.empty(shape, dtype=dtype, device=device)
    return b


def head_nll(head, h, tgt, chunk: int = 1024, fused: bool = True, weight: torch.Tensor | None = None,
             workspace: dict | None = None) -> torch.Tensor:
    """Per-token cross-entropy of the output layer at hidden states h [n, d] against tgt [n]
    (`weight`: a low-precision copy of the frozen head's weight to use instead, see FrozenCast;
    `workspace`: a dict that keeps the fused head's scratch buffers between calls)."""
    if fused and type(head) is torch.nn.Linear and not head.weight.requires_grad and (
            head.bias is None or not head.bias.requires_grad):
        return _LinearCrossEntropy.apply(h, head.weight if weight is None else weight, head.bias, tgt, chunk,
                                         workspace)
    from torch.utils.checkpoint import checkpoint
    parts = [checkpoint(_chunk_nll, head, h[i : i + chunk], tgt[i : i + chunk], use_reentrant=False)
             for i in range(0, h.shape[0], chunk)]
    return torch.cat(parts) if parts else h.new_zeros(0, dtype=torch.float32)


def token_losses(model, ids, attn, labels, dtype, chunk: int = 256, speed: Speedups | None = None,
                 head_weight: torch.Tensor | None = None, workspace: dict | None = None) -> torch.Tensor:
    """Per-token next-token cross-entropy [b, T-1] (0 where labels are -100).

    The output layer (vocab x hidden, 28M of SmolLM2's 135M weights) runs only at positions
    that have a target, one chunk at a time (`head_nll`), so neither padding nor the full
    [tokens x vocab] logits tensor costs compute or memory. (Assumes the model's logits are
    lm_head(hidden), true of Llama-style models; no logit soft-capping.) 256 tokens a chunk: the
    head of 1870 tokens took 459 ms against 526 ms at 1024 on the AMX Xeon, where every fresh
    200 MB fp32 logits buffer costs page faults.
    """
    speed = speed or Speedups()
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        h = _hidden(model, ids, attn, speed.mask_free)[:, :-1]
    tgt = labels[:, 1:]
    mask = tgt != -100
    nll = head_nll(model.get_output_embeddings(), h[mask], tgt[mask], chunk, speed.fused_head, head_weight, workspace)
    out = torch.zeros(tgt.shape, dtype=torch.float32, device=h.device)
    return out.masked_scatter(mask, nll) if nll.numel() else out


class _AdapterAdamW:
    """AdamW per adapter: adapter i steps only when it had a batch, with its own step count and
    its own gradient-norm clipping, so adapters that train together never influence each other.

    The update (Loshchilov & Hutter, decoupled weight decay), per adapter with step count t:
        g <- g * min(1, clip / ||g||);  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2
        p <- p (1 - lr wd) - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
    `foreach` runs it as multi-tensor ops over the adapter's ~400 tensors (one call per op
    instead of one per tensor); the arithmetic is the same."""

    def __init__(self, groups: list[list[torch.nn.Parameter]], lr: float, weight_decay: float,
                 max_grad_norm: float, betas=(0.9, 0.999), eps=1e-8, foreach: bool = True):
        self.groups = groups
        self.lr, self.wd, self.clip = lr, weight_decay, max_grad_norm
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.foreach = foreach
        self.m = [[torch.zeros_like(p) for p in g] for g in groups]
        self.v = [[torch.zeros_like(p) for p in g] for g in groups]
        self.t = [0] * len(groups)

    @torch.no_grad()
    def step(self, active: list[bool]) -> list[float]:
        """Update the active adapters; return every adapter's gradient norm (before clipping)."""
        norms = []
        for a, params in enumerate(self.groups):
            live = [(p, m, v) for p, m, v in zip(params, self.m[a], self.v[a]) if p.grad is not None]
            grads = [p.grad for p, _, _ in live]
            if not grads:
                norm = 0.0
            elif self.foreach:
                norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm([g.float() for g in grads]))))
            else:
                norm = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)))
            norms.append(norm)
            if not active[a] or not grads:
                continue
            scale = min(1.0, self.clip / (norm + 1e-6)) if self.clip > 0 else 1.0
            self.t[a] += 1
            bc1, bc2 = 1 - self.b1 ** self.t[a], 1 - self.b2 ** self.t[a]
            if self.foreach:
                ps, ms, vs = [x[0] for x in live], [x[1] for x in live], [x[2] for x in live]
                gs = torch._foreach_mul(grads, scale)
                torch._foreach_mul_(ms, self.b1)
                torch._foreach_add_(ms, gs, alpha=1 - self.b1)
                torch._foreach_mul_(vs, self.b2)
                torch._foreach_addcmul_(vs, gs, gs, value=1 - self.b2)
                if self.wd:
                    torch._foreach_mul_(ps, 1 - self.lr * self.wd)
                den = torch._foreach_div(vs, bc2)
                torch._foreach_sqrt_(den)
                torch._foreach_add_(den, self.eps)
                num = torch._foreach_div(ms, bc1)
                torch._foreach_addcdiv_(ps, num, den, value=-self.lr)
            else:
                for p, m, v in live:
                    g = p.grad * scale
                    m.mul_(self.b1).add_(g, alpha=1 - self.b1)
                    v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
                    if self.wd:
                        p.mul_(1 - self.lr * self.wd)
                    p.addcdiv_(m / bc1, (v / bc2).sqrt_().add_(self.eps), value=-self.lr)
        for params in self.groups:
            for p in params:
                p.grad = None
        return norms


def share_rows(rows: list[tuple[int, Tokenized]], weights: list[float], n: int):
    """Run each sequence that several fresh adapters train on once, for all of them.

    On its first step every adapter still has B = 0, so each adapter's model *is* the base
    model: a sequence that adapters a_1..a_m all train on has the same forward pass and the same
    input gradients for each of them, and only d loss / d B_a = scale * w_a * g (A_a x)^T differs.
    So the sequence runs once with weight W = sum_a w_a, and its LoRA update is the mix
    sum_a (w_a / W) B_a A_a x (lora.LoRAState.mixes): zero in value, and in the backward each B_a
    gets exactly the gradient it would get from its own copy. With SEAL's passage in every
    self-edit's data, this runs the passage once instead of k times in the first step.

    `weights[i]` is row i's loss weight (`row_weights`). Returns the new rows (a mix j appears as
    adapter id n + j), their weights (a mix's is W), the mixes, and each mix's member counts (how
    many of its copies each adapter had) for the loss bookkeeping.
    """
    by_seq: dict[tuple, tuple[Tokenized, list[tuple[int, float]]]] = {}
    for (a, t), w in zip(rows, weights):
        by_seq.setdefault((tuple(t.ids), t.loss_from), (t, []))[1].append((a, w))
    out, out_w, mixes, mix_m = [], [], [], []
    for t, copies in by_seq.values():
        if len(copies) == 1:
            out.append((copies[0][0], t))
            out_w.append(copies[0][1])
            continue
        counts, w = torch.zeros(n), torch.zeros(n)
        for a, wa in copies:
            counts[a] += 1
            w[a] += wa
        total = float(w.sum())
        mixes.append([(a, float(w[a]) / total) for a in range(n) if counts[a] > 0])
        mix_m.append(counts)
        out.append((n + len(mixes) - 1, t))
        out_w.append(total)
    if not mixes:
        return rows, weights, None, torch.zeros(0, n)
    return out, out_w, mixes, torch.stack(mix_m)


def train_adapters(model, tok, datasets: list[list[TrainExample]], cfg: InnerLoopConfig,
                   seeds: list[int], max_tokens: int | None = None, progress=None,
                   speed: Speedups | None = None, regularizer=None, judge=None, rungs: tuple[int, ...] = ()) -> dict:
    """Train one fresh adapter per dataset on the model's attached LoRA state.

    The model must have `lora.attach(model, cfg.lora, n)` with n == len(datasets). Returns
    statistics: steps, trained tokens (real, not padding) per adapter, the final losses, and per
    adapter `n_truncated` (sequences cut to cfg.max_seq_len) and `n_dropped` (examples with no
    target token left within it); a one-line warning is printed when either is nonzero.

    `regularizer(step)`, if given, runs after each step's loss backward and before the optimizer
    step: it backpropagates its own penalty into the adapters' gradients (clipped together with
    the loss's) and returns the penalty's value (`final_penalty` in the statistics).

    `judge(epoch, alive) -> survivors`, if given, is called when every adapter still training has
    finished epoch e, for each e in `rungs` (racing selection, see seal/engine/racing.py): `alive` are
    the adapter indices still training, and only the returned ones train on. The steps are then
    cut by epoch (`epoch_aligned`; each adapter's updates are the same, only which adapters share
    a step changes), and the statistics add `epochs_trained` per adapter.
    """
    state: lora.LoRAState = model._seal_lora
    n = len(datasets)
    if state.n != n or len(seeds) != n:
        raise ValueError(f"{n} datasets, {len(seeds)} seeds, {state.n} adapters attached")
    lora.reset(state, seeds)
    device = model_device(model)
    dtype = pick_dtype(cfg.dtype, device)
    counts = [{} for _ in datasets]
    tokd = [tokenize_examples(tok, ds, cfg, c) for ds, c in zip(datasets, counts)]
    n_truncated = [c["n_truncated"] for c in counts]
    n_dropped = [c["n_dropped"] for c in counts]
    if sum(n_truncated) or sum(n_dropped):
        print(f"seal: warning: {sum(n_truncated)} of {sum(len(d) for d in datasets)} training sequences cut to "
              f"max_seq_len={cfg.max_seq_len} tokens, {sum(n_dropped)} dropped (no target token left within it)",
              file=sys.stderr)
    plans = [schedule(len(t), cfg, s) for t, s in zip(tokd, seeds)]
    if judge is None:
        step_plan = [[p[s] if s < len(p) else None for p in plans] for s in range(max((len(p) for p in plans), default=0))]
        epoch_end: dict[int, int] = {}
    else:
        step_plan, epoch_end = epoch_aligned(plans, [len(t) for t in tokd], cfg.sequences_per_step, cfg.epochs)
    steps = len(step_plan)
    alive = list(range(n))
    epochs_trained = [0] * n
    params = state.parameters()
    for p in params:
        p.requires_grad_(True)
    speed = speed or Speedups()
    fused_before, state.fuse_shared_input = state.fuse_shared_input, speed.fuse_lora_a
    # dense adapters pay off where matmuls are cheap next to op overhead (bf16 on AMX/GPU); in fp32
    # on a CPU its extra FLOPs cost more than the ops it saves (18.8 s -> 20.2 s, 5 adapters)
    dense_before, state.dense = state.dense, (speed.dense_lora and dtype != torch.float32
                                              and n * state.cfg.rank <= DENSE_MAX_COLUMNS)
    max_tokens = max_tokens or cfg.micro_batch_tokens
    cast = FrozenCast(model, dtype) if dtype != torch.float32 and speed.low_precision_base else None
    opt = _AdapterAdamW([state.parameters(a) for a in range(n)], cfg.lr, cfg.weight_decay, cfg.max_grad_norm,
                        foreach=speed.foreach_adamw)
    tokens = [0] * n
    adapter_steps = [0] * n  # the optimizer steps each adapter took (`steps` is the batch's, the longest)
    last_loss = [float("nan")] * n
    last_penalty = None
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    executed: list[int] = []  # lengths of the sequences actually run (after sharing)
    workspace: dict = {}  # the fused head's scratch buffers, for this update
    for s in range(steps):
        rows = []
        for a in alive:
            if step_plan[s][a] is not None:
                rows += [(a, tokd[a][i]) for i in step_plan[s][a]]
        active = torch.zeros(n, dtype=torch.bool)
        denom = torch.zeros(n)
        for a, t in rows:
            active[a] = True
            denom[a] += t.targets
        # each row's loss weight, and which adapters' losses a row adds to
        weights = row_weights(rows, n, cfg.steps)
        members = torch.eye(n)
        mixes = None
        if s == 0 and speed.share_first_step:
            rows, weights, mixes, mix_m = share_rows(rows, weights, n)
            members = torch.cat([members, mix_m])
        weight_of = {(a, id(t)): w for (a, t), w in zip(rows, weights)}
        loss_sum = torch.zeros(n)
        for group in micro_batches(rows, max_tokens):
            ids, attn, labels, r = collate(group, pad, device)
            executed += [len(t.ids) for _, t in group]
            with lora.use_rows(model, r, mixes), (cast or contextlib.nullcontext()), \
                    use_short_attention(model, speed.short_attention):
                tl = token_losses(model, ids, attn, labels, dtype, speed=speed,
                                  head_weight=cast.head_weight if cast else None, workspace=workspace)
                per_row = tl.sum(1)
                w = torch.tensor([weight_of[(a, id(t))] for a, t in group], dtype=per_row.dtype)
                (per_row * w.to(per_row.device)).sum().backward()
            loss_sum += members[r].t() @ per_row.detach().cpu()
        if regularizer is not None:
            last_penalty = float(regularizer(s))
        opt.step(active.tolist())
        for a in range(n):
            if active[a]:
                adapter_steps[a] += 1
                tokens[a] += int(denom[a])
                last_loss[a] = float(loss_sum[a] / denom[a].clamp(min=1))
        if progress is not None:
            progress(s + 1, steps)
        if s in epoch_end:
            for a in alive:
                epochs_trained[a] = epoch_end[s]
            if epoch_end[s] in rungs and epoch_end[s] < cfg.epochs and len(alive) > 1:
                survivors = sorted(judge(epoch_end[s], list(alive)))
                if not survivors or not set(survivors) <= set(alive):
                    raise ValueError(f"judge returned {survivors}, not a non-empty subset of {alive}")
                alive = survivors
    for p in params:
        p.requires_grad_(False)
    state.fuse_shared_input = fused_before
    state.dense = dense_before
    out = {"steps": steps, "adapter_steps": adapter_steps, "tokens": tokens, "final_loss": last_loss, "examples": [len(t) for t in tokd],
           "executed_lens": executed, "n_truncated": n_truncated, "n_dropped": n_dropped,
           "final_penalty": last_penalty}
    if judge is not None:
        out["epochs_trained"] = epochs_trained
    return out


# ----------------------------------------------------------------------------- scoring

def answer_ids(tok, answer: str) -> list[int]:
    """The token ids of an answer as it is scored after its prompt: stripped of surrounding
    space, no special tokens (`answer_logprobs`, and the decoder's own scoring of it)."""
    return tok(answer.strip(), add_special_tokens=False)["input_ids"]


@torch.no_grad()
def answer_logprobs(model, tok, prompts: list[str], answers: list[str], rows: list[int],
                    max_tokens: int = 4096, mask_free: bool = True) -> list[float]:
    """Mean per-token log-probability of each answer given its prompt, under adapter rows[j].

    Only the answer's own tokens are scored: no end token, no leading space (the issue's hand
    check found these track self-edit quality, while scores including the end token did not).
    """
    device = model_device(model)
    items = []
    for j, (p, a) in enumerate(zip(prompts, answers)):
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        a_ids = answer_ids(tok, a)
        items.append((rows[j], Tokenized(p_ids + a_ids, len(p_ids)), j))
    out = [0.0] * len(items)
    by_j = {id(t): j for _, t, j in items}
    groups = micro_batches([(r, t) for r, t, _ in items], max_tokens)
    for group in groups:
        ids, attn, labels, r = collate(group, tok.pad_token_id or 0, device)
        with lora.use_rows(model, r):
            h = _hidden(model, ids, attn, mask_free)[:, :-1]
        tgt = labels[:, 1:]
        mask = tgt != -100
        # the output layer only where an answer token is scored
        logp = torch.log_softmax(model.get_output_embeddings()(h[mask]).float(), -1)
        lp = torch.zeros(tgt.shape, device=h.device)
        lp[mask] = logp.gather(-1, tgt[mask].unsqueeze(-1)).squeeze(-1)
        means = lp.sum(1) / mask.sum(1).clamp(min=1)
        for k, (_, t) in enumerate(group):
            out[by_j[id(t)]] = float(means[k])
    return out


def has_nan(values) -> bool:
    return any(isinstance(v, float) and math.isnan(v) for v in values)
