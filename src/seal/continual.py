"""`seal continual`: continual self-adaptation, the forgetting it causes, and guards against it.

The paper's experiment (section 6, "Catastrophic forgetting", Figure 6; Qwen2.5-7B, sequences
of 8 passages, the LoRA of each self-edit merged into the weights before the next): passages
arrive one after another; for passage t the *current* model writes a self-edit, a LoRA update
trains on it, and the update is kept; then every passage seen so far is graded closed-book.
Per sequence this gives a lower-triangular matrix A[t][j] (accuracy on passage j after the
update with passage t, j <= t); the paper reports its mean over sequences. Forgetting is A[t][j]
falling as t grows past j.

    for each sequence (passages p_0..p_{L-1}, drawn from the seeded shuffle of the data):
        base row: the never-edited model on p_0..p_{L-1} and on unrelated passages
        for t = 0..L-1:
            [when to adapt] skip p_t if the current model already answers its questions
            SE_t ~ LM_current(. | p_t)                  one self-edit (`selfedit` settings)
            adapter_t = SFT(LM_current, SE_t + p_t)     the inner loop (`inner` settings)
            apply adapter_t as the guard says           (below)
            grade p_0..p_t and the unrelated passages   greedy answers + gold-answer log-prob

Guards (`continual.guard`), compared on the same sequences and seeds:
  merge    the paper's baseline: W += scale * B A after every update.
  replay   as merge, but each update also trains on `continual.replay` training sequences drawn
           (seeded) from the kept earlier updates' data (their self-edit items and passages).
  gate     before merging, grade the earlier passages' questions with the candidate adapter on
           top of the current model; reject the update (count it) when their mean
           `gate_metric` falls by more than `gate_threshold` against the current model's grades
           (the previous step's row), after first retrying it at half its scale up to
           `gate_halvings` times (the update scaled down). The first passage has nothing to
           protect: always kept.
  per-doc  one adapter per passage, never merged; the base stays frozen (so every self-edit is
           written by the base model). At question time each question goes to one adapter:
           the passage whose title + text best matches the question's topic + text (BM25) if
           that passage covers at least `router_min_coverage` of the question's IDF mass, else
           the base model; or its own passage (`router oracle`, an upper bound). Routing
           accuracy, and how many unrelated questions reached an adapter, are recorded.
  kl       as merge, but each update also minimizes kl_beta * KL(p_pre || p_new) per token on
           generic text: `kl_texts` texts the never-edited model wrote for neutral prompts
           (kl_texts.jsonl), `kl_batch` of them per optimizer step. p_pre is the model before
           this update, so the penalty holds each update near the model it starts from
           (forgetting tracks this forward KL: Shenfeld et al., arXiv:2509.04259).

When to adapt. `continual.skip_if_gain` (default 1.0; 0 turns it off) skips, and counts, the
update of a passage whose log-prob per token under the current model already exceeds the
never-edited model's by that many nats: a label-free test of "already learned". `continual.probe` records before every update what a skip rule can use: the
current model's closed-book grades on the passage's questions (label-using) and the passage's
mean log-prob per token, also as a gain over the never-edited model (label-free). On a mixed
stream (`continual.repeats`: steps that re-present an earlier passage of the sequence),
`when_to_adapt` in continual.json gives, per signal and threshold, the share of updates skipped
against the share of the immediate accuracy gain kept. `continual.skip_if_known` > 0 skips, and
counts, updates whose probe containment reaches it.

Reported per guard (`continual.json`, strict JSON): per sequence the matrix, the base row, the
unrelated-passage accuracy after each step (general ability), decisions, seconds; over
sequences the mean matrix and, with 95% bootstrap intervals over sequences, the final mean
accuracy over the L passages against the never-edited model, the first passage's retention after
each step, the just-edited accuracy (the diagonal), forgetting (diagonal minus final, over
p_0..p_{L-2}), unrelated accuracy and its change, and compute. `forgetting.json` holds the mean
matrix (base row on top) in the layout `seal report` draws as a heatmap.

Departures and limits (each a known gap, not hidden):
- the gate and the containment probe use the passages' own evaluation questions (label-using:
  a deployed system would need held-out probes, or the passage's likelihood, which is probed);
- accuracy is local containment / F1 / EM / gold-answer log-prob, not GPT-4.1 grading.

Run folder: base.jsonl (one record per sequence), steps.jsonl (one per sequence and step),
adapters/seq_<s>/step_<t>.safetensors (kept updates of the sequence in progress, ~40 MB each for
SmolLM2-135M at rank 32, deleted when it finishes), continual.json, forgetting.json. Resume: finished sequences are read back; in the
unfinished one the kept adapters are re-merged (or re-attached, per-doc) from their saved
weights, which reproduces the weights of an uninterrupted run exactly, and the run goes on from
the first missing step.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import lora
from .config import ConfigError, RunConfig
from .engine import job_seed
from .evaluate import check_models, prepare_passages
from .generation import HFGenerator
from .inner_loop import _hidden, answer_logprobs, train_adapters
from .models import format_prompt, is_write_failure, load_model, model_device, pick_dtype, uses_chat, write_error
from .runs import append_jsonl, atomic_write_json, open_run, read_jsonl
from .stats import bootstrap_mean
from .tasks import knowledge as K
from .tasks.knowledge import STOPWORDS

# ----------------------------------------------------------------------------- sequences

def draw_sequences(passages: list[K.Passage], n_seq: int, length: int, n_unrelated: int,
                   where: str = "data", repeats: int = 0,
                   seed: int = 0) -> tuple[list[list[K.Passage]], list[list[K.Passage]], bool]:
    """(sequences, unrelated passages per sequence, disjoint?) from passages already shuffled with
    the run's seed. Each sequence holds `length - repeats` distinct passages; with enough passages
    the sequences are consecutive, disjoint slices and the unrelated set is the last `n_unrelated`
    passages, the same for every sequence; otherwise sequences wrap around (a passage may recur in
    another sequence) and each sequence's unrelated passages are the last ones not in it.
    `repeats` seeded steps (never the first) re-present a passage from earlier in the sequence."""
    n, d = len(passages), length - repeats
    if d > n:
        raise K.DataError(f"{where}: continual.length {length} (with {repeats} repeats) needs at least {d} "
                          f"passages, the data has {n}")
    disjoint = n >= n_seq * d + n_unrelated
    seqs = []
    for s in range(n_seq):
        fresh = iter([passages[(s * d + i) % n] for i in range(d)])
        rng = random.Random(seed * 1_000_003 + s)
        again = set(rng.sample(range(1, length), repeats))
        seq: list[K.Passage] = []
        for t in range(length):
            seq.append(rng.choice(list({p.id: p for p in seq}.values())) if t in again else next(fresh))
        seqs.append(seq)
    unrelated = []
    for seq in seqs:
        ids = {p.id for p in seq}
        unrelated.append([p for p in reversed(passages) if p.id not in ids][:n_unrelated])
    return seqs, unrelated, disjoint


# ----------------------------------------------------------------------------- per-doc routing

class BM25:
    """Okapi BM25 (k1 = 1.5, b = 0.75) over SQuAD-normalized words."""

    def __init__(self, docs: list[str], k1: float = 1.5, b: float = 0.75):
        self.docs = [K.normalize_answer(d).split() for d in docs]
        self.k1, self.b = k1, b
        self.avg = sum(map(len, self.docs)) / max(1, len(self.docs))
        df: dict[str, int] = {}
        for d in self.docs:
            for w in set(d):
                df[w] = df.get(w, 0) + 1
        n = len(self.docs)
        self.idf = {w: math.log(1 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}

    def best(self, query: str) -> tuple[int, float]:
        """(index of the best-matching document, the first on ties; its coverage of the query).

        Coverage: the share of the query's content words (not in STOPWORDS) that occur in that
        document. Unlike a BM25 score it does not depend on how many documents are indexed, so
        one threshold serves the first passage of a stream and the eighth. A question about a
        seen passage shares most of its content words with it; one about another topic shares few."""
        q = K.normalize_answer(query).split()
        scores = []
        for d in self.docs:
            tf: dict[str, int] = {}
            for w in d:
                tf[w] = tf.get(w, 0) + 1
            norm = self.k1 * (1 - self.b + self.b * len(d) / max(self.avg, 1e-9))
            scores.append(sum(self.idf.get(w, 0.0) * tf[w] * (self.k1 + 1) / (tf[w] + norm) for w in q if w in tf))
        i = max(range(len(scores)), key=lambda i: (scores[i], -i))
        content = {w for w in q if w not in STOPWORDS}
        return i, (len(content & set(self.docs[i])) / len(content) if content else 0.0)


def route(queries: list[str], owners: list[int], seen: list[K.Passage], router: str,
          min_coverage: float = 0.0) -> list[int]:
    """For each query (a question with its topic, or a passage), the index in `seen` of the
    passage whose adapter answers it, or -1 (the base model) when no seen passage covers at least
    `min_coverage` of it. `owners[i]` is the query's own passage index (-1 for unrelated
    questions; used only by `oracle`)."""
    if router == "oracle":
        return [o if o >= 0 else -1 for o in owners]
    if not seen:
        return [-1] * len(queries)
    index = BM25([f"{p.title}\n{p.context}" for p in seen])
    return [i if cov >= min_coverage else -1 for i, cov in map(index.best, queries)]


def question_query(qa: K.QA) -> str:
    return f"{qa.title} {qa.question}"


# ----------------------------------------------------------------------------- the gate

def halving_gate(before: float | None, threshold: float, halvings: int, score_after, halve) -> dict:
    """Keep an update only if it costs at most `threshold` of a protected metric, first trying it
    at half its scale, then a quarter..., up to `halvings` times (shared by `seal continual`'s
    gate and `seal adapt`'s).

    `before` is the metric without the update; `score_after()` measures it with the update at
    its present scale; `halve()` halves the update's scale (B <- B / 2 halves scale * B A).
    Returns {before, threshold, tries: [{scale, after, drop}], after, drop, scale, passed};
    `drop` = before - after, and an undefined drop (nothing to measure) passes."""
    out: dict = {"before": before, "threshold": threshold, "tries": []}
    scale = 1.0
    for k in range(halvings + 1):
        if k:
            scale /= 2
            halve()
        after = score_after()
        drop = None if before is None or after is None else before - after
        out["tries"].append({"scale": scale, "after": after, "drop": drop})
        if drop is None or drop <= threshold:
            break
    out.update(after=after, drop=drop, scale=scale, passed=drop is None or drop <= threshold)
    return out


# ----------------------------------------------------------------------------- weights

def target_weights(model, lora_cfg) -> dict[str, torch.Tensor]:
    """Copies of the weights a merged update changes (the LoRA target layers), to restore the
    never-edited model at the start of each sequence."""
    return {name: m.weight.detach().clone() for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in lora_cfg.targets}


def restore_weights(model, saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, w in saved.items():
            model.get_submodule(name).weight.copy_(w)


def load_adapter(state: lora.LoRAState, slot: int, weights: dict[str, torch.Tensor]) -> None:
    """Put saved adapter weights (`lora.adapter_state`) into adapter `slot`."""
    with torch.no_grad():
        for name, layer in state.layers.items():
            layer.A[slot].copy_(weights[f"{name}.lora_A"])
            layer.B[slot].copy_(weights[f"{name}.lora_B"])


def merge_saved(model, lora_cfg, weights: dict[str, torch.Tensor]) -> None:
    """Merge a saved adapter into the weights: the same W += scale * B A as the step that made it."""
    state = lora.attach(model, lora_cfg, 1)
    load_adapter(state, 0, weights)
    lora.merge(model, 0)


def save_adapter(path: Path, weights: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp))
        os.replace(tmp, path)
    except BaseException as e:  # a full disk: one line naming the file, no .tmp left
        tmp.unlink(missing_ok=True)
        if is_write_failure(e):
            raise write_error(e, path) from None
        raise


def read_adapter(path: Path, device) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.exists():
        raise FileNotFoundError(f"{path}: the saved update of a finished step is missing; start a new --out")
    return {k: v.to(device) for k, v in load_file(str(path)).items()}


# ----------------------------------------------------------------------------- one sequence

@dataclass
class Setup:
    model: object
    tok: object
    gen: object
    chat: bool
    cfg: RunConfig
    run_dir: Path
    generic: list = None  # guard kl: (prompt, text) pairs, see generic_texts


@dataclass
class Learner:
    """The model as the guard keeps it: merged into the weights, or base + per-passage adapters."""

    adapters: dict[int, dict[str, torch.Tensor]]  # per-doc: step -> adapter weights
    pool: list  # replay: training sequences of the kept updates, in order


def _passage_means(grades: list[list[dict]], metric: str) -> list[float]:
    return [K.mean_metrics(g).get(metric) for g in grades]


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def grade(su: Setup, learner: Learner, seen: list[K.Passage], groups: list[list[K.QA]],
          owners: list[int]) -> tuple[list[list[dict]], dict | None]:
    """Closed-book grades of each group of questions under the learner; for per-doc also the
    routing (fraction of questions with an owner sent to their own passage)."""
    cfg = su.cfg
    if cfg.continual.guard != "per-doc":
        return K.score_rows(su.model, su.tok, su.gen, su.chat, groups, [-1] * len(groups), cfg.eval), None
    flat = [(g, qa) for g, qs in enumerate(groups) for qa in qs]
    owner_of = [owners[g] for g, _ in flat]
    routed = route([question_query(qa) for _, qa in flat], owner_of, seen, cfg.continual.router,
                   cfg.continual.router_min_coverage)
    steps = sorted(learner.adapters)
    slot = {t: i for i, t in enumerate(steps)}
    rows = [slot.get(r, -1) for r in routed]
    if steps:
        state = lora.attach(su.model, cfg.inner.lora, len(steps))
        for t in steps:
            load_adapter(state, slot[t], learner.adapters[t])
    try:
        singles = K.score_rows(su.model, su.tok, su.gen, su.chat, [[qa] for _, qa in flat], rows, cfg.eval)
    finally:
        lora.detach(su.model)
    out: list[list[dict]] = [[] for _ in groups]
    for (g, _), res, r in zip(flat, singles, routed):
        out[g].append({**res[0], "routed_to": r})
    owned = [(o, r) for o, r in zip(owner_of, routed) if o >= 0]
    others = [r for o, r in zip(owner_of, routed) if o < 0]
    # right when routed to its own passage (or an earlier copy of it, in a stream with repeats)
    return out, {"questions": len(owned), "correct": sum(r >= 0 and seen[r].id == seen[o].id for o, r in owned),
                 "unrelated": len(others), "unrelated_to_adapter": sum(r >= 0 for r in others)}


GENERIC_PROMPTS = (
    "Write a short paragraph about a topic of your choice.",
    "Explain how something in everyday life works.",
    "Tell a short story.",
    "Describe a place you find interesting.",
    "Give some advice for learning a new skill.",
    "Explain a simple idea from science.",
    "Describe an animal and how it lives.",
    "Write a few sentences about a famous invention.",
)


def generic_texts(su: Setup) -> list[tuple[str, str]]:
    """guard kl: (prompt, text) pairs the never-edited model writes for neutral prompts, sampled
    once per run (temperature 1, seeded) and kept in kl_texts.jsonl so a resumed run reuses them.
    No dataset is needed: the anchor is the model's own generic behaviour."""
    cc, path = su.cfg.continual, su.run_dir / "kl_texts.jsonl"
    have = read_jsonl(path)
    if len(have) < cc.kl_texts:
        prompts = [format_prompt(su.tok, GENERIC_PROMPTS[i % len(GENERIC_PROMPTS)], su.chat) for i in range(cc.kl_texts)]
        outs = su.gen.generate(prompts, n=1, max_new_tokens=cc.kl_tokens, temperature=1.0, top_p=1.0,
                               seed=job_seed(su.cfg.seed, "kl-texts"))
        path.unlink(missing_ok=True)
        for pr, o in zip(prompts, outs):
            append_jsonl(path, {"prompt": pr, "text": o[0]})
        have = read_jsonl(path)
    return [(r["prompt"], r["text"]) for r in have[: cc.kl_texts]]


class KLAnchor:
    """guard kl: the penalty beta * KL(p_pre || p_new), the mean over the generic texts' tokens of

        sum_v p_pre(v | x_<i) (log p_pre(v | x_<i) - log p_new(v | x_<i)),

    p_pre the model before this update (built before the adapter is attached; the full
    next-token distributions are kept) and p_new the model with the adapter being trained
    (row 0). Called by `train_adapters` once per optimizer step on `batch` texts, cycling."""

    def __init__(self, model, tok, texts: list[tuple[str, str]], beta: float, batch: int, dtype):
        from .inner_loop import Tokenized, collate

        self.model, self.beta, self.batch, self.dtype = model, beta, batch, dtype
        self.pad = tok.pad_token_id or 0
        self.items = []
        for prompt, text in texts:
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            t_ids = tok(text, add_special_tokens=False)["input_ids"]
            if t_ids:
                self.items.append(Tokenized(p_ids + t_ids, len(p_ids)))
        self.collate = collate
        with torch.no_grad():
            self.ref = [self._logp([t]) for t in self.items]

    def _logp(self, group) -> torch.Tensor:
        """log p(. | prefix) at every text position of the group's rows, [positions, vocab]."""
        ids, attn, labels, _ = self.collate([(0, t) for t in group], self.pad, model_device(self.model))
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16):
            h = _hidden(self.model, ids, attn)[:, :-1]
        mask = labels[:, 1:] != -100
        return torch.log_softmax(self.model.get_output_embeddings()(h[mask]).float(), -1)

    def __call__(self, step: int) -> float:
        if not self.items or self.beta == 0:
            return 0.0
        pick = [(step * self.batch + k) % len(self.items) for k in range(min(self.batch, len(self.items)))]
        with lora.use_rows(self.model, [0] * len(pick)):
            new = self._logp([self.items[i] for i in pick])
        ref = torch.cat([self.ref[i] for i in pick])
        kl = (ref.exp() * (ref - new)).sum(-1).mean()
        (self.beta * kl).backward()
        return float(kl.detach())


def doc_logprob(su: Setup, learner: Learner, earlier: list[K.Passage], p: K.Passage, owner: int) -> float:
    """Mean log-probability per token of the passage text (after its title) under the learner: a
    label-free sign that the model already knows it. per-doc: under the adapter the passage
    routes to (`owner`: an earlier copy of it, for the oracle router), or the base model."""
    cfg = su.cfg
    r = -1
    if cfg.continual.guard == "per-doc":
        r = route([f"{p.title}\n{p.context}"], [owner], earlier, cfg.continual.router,
                  cfg.continual.router_min_coverage)[0]

    def score(row: int) -> float:
        return answer_logprobs(su.model, su.tok, [f"{p.title}\n"], [p.context], [row])[0]

    if r not in learner.adapters:  # merged guards, the base model, or a passage without an adapter
        return score(-1)
    state = lora.attach(su.model, cfg.inner.lora, 1)
    try:
        load_adapter(state, 0, learner.adapters[r])
        return score(0)
    finally:
        lora.detach(su.model)


def replay_examples(learner: Learner, n: int, seed: int) -> list:
    """`n` training sequences drawn without replacement from the kept earlier updates' data."""
    if n <= 0 or not learner.pool:
        return []
    return random.Random(seed).sample(learner.pool, min(n, len(learner.pool)))


def _own_examples(cfg: RunConfig, p: K.Passage, completion: str):
    items = K.parse_selfedit(completion, cfg.selfedit.template)
    return items, K.selfedit_examples(p, items, cfg.selfedit, job_seed(cfg.seed, "permute", p.id, 0))


def _adapter_path(su: Setup, s: int, t: int) -> Path:
    return su.run_dir / "adapters" / f"seq_{s}" / f"step_{t}.safetensors"


def _apply_kept(su: Setup, learner: Learner, t: int, weights, examples) -> None:
    if su.cfg.continual.guard == "per-doc":
        learner.adapters[t] = weights
    else:
        merge_saved(su.model, su.cfg.inner.lora, weights)
    learner.pool.extend(examples)


def run_sequence(su: Setup, s: int, seq: list[K.Passage], unrelated: list[K.Passage]) -> list[dict]:
    """Adapt to `seq` one passage after another from the model as it is now (the never-edited
    model), resuming from steps.jsonl; returns the step records. Leaves merged updates in the
    weights (the caller restores them)."""
    cfg, cc = su.cfg, su.cfg.continual
    steps_file = su.run_dir / "steps.jsonl"
    done = {r["step"]: r for r in read_jsonl(steps_file) if r["sequence"] == s}
    learner = Learner({}, [])

    # the never-edited model's row (written before any step, so a resumed sequence has it)
    if not any(r["sequence"] == s for r in read_jsonl(su.run_dir / "base.jsonl")):
        graded, _ = grade(su, learner, [], [p.questions for p in seq + unrelated], [-1] * (len(seq) + len(unrelated)))
        row = {"sequence": s, "passage_ids": [p.id for p in seq], "unrelated_ids": [p.id for p in unrelated],
               "grades": graded[: len(seq)], "unrelated": graded[len(seq):]}
        if cc.probe or cc.skip_if_gain > 0:  # the never-edited model's likelihood of each passage
            row["doc_logprob"] = answer_logprobs(su.model, su.tok, [f"{p.title}\n" for p in seq],
                                                 [p.context for p in seq], [-1] * len(seq))
        append_jsonl(su.run_dir / "base.jsonl", row)
    base = next(r for r in read_jsonl(su.run_dir / "base.jsonl") if r["sequence"] == s)
    device = model_device(su.model)

    records: list[dict] = []
    prev_grades: list[list[dict]] = []
    for t, p in enumerate(seq):
        if t in done:  # finished earlier: re-apply its kept update exactly as it was made
            rec = done[t]
            if rec["decision"] == "kept":
                _, own = _own_examples(cfg, p, rec["selfedit"])
                _apply_kept(su, learner, t, read_adapter(_adapter_path(su, s, t), device), own)
            records.append(rec)
            prev_grades = rec["grades"]
            continue
        rec = step(su, learner, s, t, seq, unrelated, prev_grades, base.get("doc_logprob"))
        append_jsonl(steps_file, rec)
        records.append(rec)
        prev_grades = rec["grades"]
        print(f"sequence {s + 1}/{cc.sequences}, passage {t + 1}/{len(seq)}: {rec['decision']}; "
              f"just edited {_fmt(K.mean_metrics(rec['grades'][t]).get(_headline(cfg)))}, mean so far "
              f"{_fmt(_mean(_passage_means(rec['grades'], _headline(cfg))))} "
              f"(base {_fmt(_mean(_passage_means(base['grades'][: t + 1], _headline(cfg))))}), {rec['seconds']:.0f} s")
    return records


def step(su: Setup, learner: Learner, s: int, t: int, seq: list[K.Passage], unrelated: list[K.Passage],
         prev_grades: list[list[dict]], base_doc: list[float] | None = None) -> dict:
    """One passage of a sequence: (maybe skip,) self-edit, update, guard, grade."""
    cfg, cc = su.cfg, su.cfg.continual
    p, seen = seq[t], seq[: t + 1]
    rec: dict = {"sequence": s, "step": t, "passage_id": p.id, "title": p.title, "guard": cc.guard}
    t0 = time.time()

    # when to adapt: does the current model already answer this passage's questions / know its text?
    earlier = next((j for j in range(t) if seq[j].id == p.id), -1)
    if cc.skip_if_known > 0 or cc.probe:
        probe, _ = grade(su, learner, seen, [p.questions], [earlier if earlier >= 0 else t])
        rec["probe"] = K.mean_metrics(probe[0])
        rec["probe_containment"] = rec["probe"].get("containment")
        if cc.skip_if_known > 0 and rec["probe_containment"] is not None and rec["probe_containment"] >= cc.skip_if_known:
            rec["decision"] = "skipped"
    if cc.skip_if_gain > 0 or cc.probe:
        rec.setdefault("probe", {})["doc_logprob"] = doc_logprob(su, learner, seq[:t], p, earlier)
        rec["probe"]["doc_logprob_gain"] = rec["probe"]["doc_logprob"] - base_doc[t]
        if cc.skip_if_gain > 0 and rec["probe"]["doc_logprob_gain"] >= cc.skip_if_gain:
            rec["decision"] = "skipped"

    if "decision" not in rec:
        # one self-edit from the current model (per-doc: the frozen base model)
        comps = K.sample_selfedits(su.gen, su.tok, su.chat, [p], cfg.selfedit, 1, job_seed(cfg.seed, "continual", s, t),
                                   {}, lambda *_: None)
        rec["selfedit"] = comps[p.id][0]
        items, own = _own_examples(cfg, p, rec["selfedit"])
        rec["n_items"] = len(items)
        rec["empty_selfedit"] = not items and cfg.selfedit.template != "none"  # trained passage-only, counted
        extra = replay_examples(learner, cc.replay, job_seed(cfg.seed, "replay", s, t)) if cc.guard == "replay" else []
        rec["replayed"] = len(extra)
        t1 = time.time()
        anchor = None
        if cc.guard == "kl":  # the pre-update model's distributions, before the adapter exists
            anchor = KLAnchor(su.model, su.tok, su.generic, cc.kl_beta, cc.kl_batch,
                              pick_dtype(cfg.inner.dtype, model_device(su.model)))
        state = lora.attach(su.model, cfg.inner.lora, 1)
        try:
            stats = train_adapters(su.model, su.tok, [own + extra], cfg.inner, [job_seed(cfg.seed, "inner", s, t)],
                                   regularizer=anchor)
            weights = lora.adapter_state(state, 0)
            rec["train"] = {"examples": stats["examples"][0], "tokens": stats["tokens"][0],
                            "steps": stats["steps"], "final_loss": stats["final_loss"][0],
                            "truncated": stats["n_truncated"][0]}
            if anchor is not None:
                rec["train"]["final_kl"] = stats["final_penalty"]
            rec["train_seconds"] = time.time() - t1
            rec["decision"] = "kept"
            if cc.guard == "gate" and t > 0:  # the candidate on top of the current model, on earlier passages
                def after() -> float | None:
                    cand = K.score_rows(su.model, su.tok, su.gen, su.chat, [q.questions for q in seq[:t]], [0] * t,
                                        cfg.eval)
                    return _mean(_passage_means(cand, cc.gate_metric))

                def halve() -> None:
                    with torch.no_grad():
                        for layer in state.layers.values():
                            layer.B[0].mul_(0.5)

                before = _mean(_passage_means(prev_grades[:t], cc.gate_metric))
                rec["gate"] = {"metric": cc.gate_metric,
                               **halving_gate(before, cc.gate_threshold, cc.gate_halvings, after, halve)}
                if not rec["gate"]["passed"]:
                    rec["decision"] = "rejected"
                weights = lora.adapter_state(state, 0)  # as kept: scaled down if it had to be
        finally:
            lora.detach(su.model)
        if rec["decision"] == "kept":
            save_adapter(_adapter_path(su, s, t), weights)  # before the step record: resume re-applies it
            _apply_kept(su, learner, t, weights, own)

    # grade every passage seen so far, and the unrelated ones
    t2 = time.time()
    graded, routing = grade(su, learner, seen, [q.questions for q in seen + unrelated],
                            list(range(len(seen))) + [-1] * len(unrelated))
    rec["grades"], rec["unrelated"] = graded[: len(seen)], graded[len(seen):]
    if routing is not None:
        rec["routing"] = routing
    rec["eval_seconds"] = time.time() - t2
    rec["seconds"] = time.time() - t0
    return rec


# ----------------------------------------------------------------------------- summary

def _headline(cfg: RunConfig) -> str:
    return "containment" if cfg.eval.generate else "logprob"


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def sequence_summary(base: dict, records: list[dict], metric: str) -> dict:
    """One sequence's matrix (L x L, None above the diagonal), base row, unrelated accuracy per
    step, and the scalar numbers the guards are compared on."""
    L = len(base["grades"])
    recs = sorted(records, key=lambda r: r["step"])
    matrix = [[None] * L for _ in range(L)]
    for r in recs:
        for j, m in enumerate(_passage_means(r["grades"], metric)):
            matrix[r["step"]][j] = m
    base_row = _passage_means(base["grades"], metric)
    unrel = [_mean(_passage_means(r["unrelated"], metric)) for r in recs]
    diag = [matrix[t][t] for t in range(L)]
    final = matrix[L - 1]
    return {
        "matrix": matrix, "base": base_row, "unrelated": unrel,
        "unrelated_base": _mean(_passage_means(base["unrelated"], metric)),
        "final_mean": _mean(final), "final_mean_base": _mean(base_row),
        "first_retention": [matrix[t][0] for t in range(L)],
        "just_edited": _mean(diag),
        "forgetting": _mean([diag[j] - final[j] for j in range(L - 1)
                             if diag[j] is not None and final[j] is not None]) if L > 1 else None,
    }


def summarize(cfg: RunConfig, seqs: list[list[K.Passage]], bases: dict[int, dict],
              steps: dict[int, list[dict]], counts: dict, disjoint: bool) -> dict:
    metrics = [m for m in K.METRICS if cfg.eval.generate or m == "logprob"]
    headline = _headline(cfg)
    L = cfg.continual.length
    n_boot, seed = cfg.eval.bootstrap, cfg.seed
    out: dict = {"guard": cfg.continual.guard, "metric": headline, "metrics": metrics, "length": L,
                 "sequences_done": 0, "disjoint_sequences": disjoint, "settings": dict(vars(cfg.continual)),
                 "weighting": "per passage: mean over its questions; means over passages, then over sequences",
                 "sequences": [], "mean_matrix": {}, "summary": {}, "data": counts}
    complete = [s for s in range(len(seqs)) if len(steps.get(s, [])) == L]
    out["sequences_done"] = len(complete)
    per_seq = {s: {m: sequence_summary(bases[s], steps[s], m) for m in metrics} for s in complete}
    for s in complete:
        recs = sorted(steps[s], key=lambda r: r["step"])
        dec = [r["decision"] for r in recs]
        routing = [r["routing"] for r in recs if "routing" in r]
        out["sequences"].append({
            "index": s, "passages": [{"id": p.id, "title": p.title} for p in seqs[s]],
            "unrelated_ids": bases[s]["unrelated_ids"], "decisions": dec,
            "kept": dec.count("kept"), "rejected": dec.count("rejected"), "skipped": dec.count("skipped"),
            "empty_selfedits": sum(bool(r.get("empty_selfedit")) for r in recs),
            "replayed": sum(r.get("replayed", 0) for r in recs),
            "routing_accuracy": (sum(x["correct"] for x in routing) / max(1, sum(x["questions"] for x in routing))
                                 if routing else None),
            "seconds": sum(r["seconds"] for r in recs),
            "train_tokens": sum(r.get("train", {}).get("tokens", 0) for r in recs),
            "metrics": per_seq[s]})
    if not complete:
        return out
    for m in metrics:
        mats = [per_seq[s][m]["matrix"] for s in complete]
        out["mean_matrix"][m] = [[_mean([mat[i][j] for mat in mats]) for j in range(L)] for i in range(L)]
        out.setdefault("mean_base", {})[m] = [_mean([per_seq[s][m]["base"][j] for s in complete]) for j in range(L)]

        def boot(key, m=m):
            vals = [per_seq[s][m][key] for s in complete]
            vals = [v for v in vals if v is not None]
            return bootstrap_mean(vals, n_boot, seed)

        def boot_diff(a, b, m=m):
            vals = [per_seq[s][m][a] - per_seq[s][m][b] for s in complete
                    if per_seq[s][m][a] is not None and per_seq[s][m][b] is not None]
            return bootstrap_mean(vals, n_boot, seed)

        unrel_final = [per_seq[s][m]["unrelated"][-1] for s in complete]
        unrel_change = [per_seq[s][m]["unrelated"][-1] - per_seq[s][m]["unrelated_base"] for s in complete
                        if per_seq[s][m]["unrelated"][-1] is not None and per_seq[s][m]["unrelated_base"] is not None]
        out["summary"][m] = {
            "final_mean": boot("final_mean"), "final_mean_base": boot("final_mean_base"),
            "final_gain_over_base": boot_diff("final_mean", "final_mean_base"),
            "just_edited": boot("just_edited"), "forgetting": boot("forgetting"),
            "first_retention": [bootstrap_mean([v for s in complete if (v := per_seq[s][m]["first_retention"][t])
                                                is not None], n_boot, seed) for t in range(L)],
            "unrelated_final": bootstrap_mean([v for v in unrel_final if v is not None], n_boot, seed),
            "unrelated_change": bootstrap_mean(unrel_change, n_boot, seed),
        }
    seqs_out = out["sequences"]
    out["compute"] = {
        "seconds_per_sequence": bootstrap_mean([x["seconds"] for x in seqs_out], n_boot, seed),
        "train_tokens_per_sequence": bootstrap_mean([x["train_tokens"] for x in seqs_out], n_boot, seed),
        "updates_kept": sum(x["kept"] for x in seqs_out), "updates_rejected": sum(x["rejected"] for x in seqs_out),
        "updates_skipped": sum(x["skipped"] for x in seqs_out),
        "empty_selfedits": sum(x["empty_selfedits"] for x in seqs_out),
    }
    if (w := when_to_adapt(steps, complete, metrics)) is not None:
        out["when_to_adapt"] = w
    if cfg.continual.guard == "per-doc":
        out["compute"]["unrelated_to_adapter"] = sum(x["routing"].get("unrelated_to_adapter", 0)
                                                     for s in complete for x in steps[s] if "routing" in x)
        out["compute"]["routing_accuracy"] = bootstrap_mean([x["routing_accuracy"] for x in seqs_out
                                                             if x["routing_accuracy"] is not None], n_boot, seed)
    return out


SKIP_SIGNALS = ("containment", "logprob", "doc_logprob", "doc_logprob_gain")
"""What a skip rule can threshold (higher: more likely already known): the current model's
closed-book containment / gold-answer log-prob on the passage's questions (label-using), the
passage's mean log-prob per token, and its gain over the never-edited model (label-free)."""


def _auroc(pos: list[float], neg: list[float]) -> float | None:
    """P(a repeated passage's signal > a new passage's), ties counted half."""
    if not pos or not neg:
        return None
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def when_to_adapt(steps: dict[int, list[dict]], complete: list[int], metrics: list[str]) -> dict | None:
    """The skip-rule curve of a probed run (`continual.probe`, updating every passage).

    Each step i has its signals before the update and its immediate gain g_i = (grade on the
    passage just after its update) - (grade before it, the probe). A rule "skip when signal >=
    tau" keeps the gain sum(g_i, i not skipped) / sum(g_i) while sparing the skipped updates.
    Counterfactual by construction: exact for per-doc (adapters never interact), first-order for
    merged guards (a skipped update would also have left the later weights different)."""
    items = []
    for s in complete:
        recs = sorted(steps[s], key=lambda r: r["step"])
        if any("doc_logprob" not in r.get("probe", {}) or r["decision"] == "skipped" for r in recs):
            return None
        for r in recs:
            t = r["step"]
            pr = r["probe"]
            after = K.mean_metrics(r["grades"][t])
            items.append({
                "sequence": s, "step": t, "repeat": any(x["passage_id"] == r["passage_id"] for x in recs[:t]),
                "signals": {"containment": pr.get("containment"), "logprob": pr.get("logprob"),
                            "doc_logprob": pr["doc_logprob"],
                            "doc_logprob_gain": pr["doc_logprob_gain"]},
                "gain": {m: (after[m] - pr[m]) if after.get(m) is not None and pr.get(m) is not None else None
                         for m in metrics}})
    if not items:
        return None
    out: dict = {"items": len(items), "repeats": sum(i["repeat"] for i in items), "signals": {},
                 "rule": "skip when signal >= threshold; gain kept = sum of the immediate gains of the updates made "
                         "/ sum over all updates"}
    for sig in SKIP_SIGNALS:
        have = [i for i in items if i["signals"][sig] is not None]
        if not have:
            continue
        total = {m: sum(i["gain"][m] for i in have if i["gain"][m] is not None) for m in metrics}
        points = []
        for tau in sorted({i["signals"][sig] for i in have}) + [math.inf]:
            skip = [i for i in have if i["signals"][sig] >= tau]
            kept = {m: (total[m] - sum(i["gain"][m] for i in skip if i["gain"][m] is not None)) / total[m]
                    if total[m] > 0 else None for m in metrics}
            points.append({"threshold": None if tau == math.inf else tau, "skipped": len(skip) / len(have),
                           "repeats_skipped": sum(i["repeat"] for i in skip), "new_skipped": sum(not i["repeat"] for i in skip),
                           "gain_kept": kept})
        out["signals"][sig] = {
            "auroc_repeat_vs_new": _auroc([i["signals"][sig] for i in have if i["repeat"]],
                                          [i["signals"][sig] for i in have if not i["repeat"]]),
            "mean_repeat": _mean([i["signals"][sig] for i in have if i["repeat"]]),
            "mean_new": _mean([i["signals"][sig] for i in have if not i["repeat"]]),
            "total_gain": total, "curve": points}
    out["per_step"] = items
    return out


def forgetting_view(summary: dict) -> dict | None:
    """The mean matrix, base row on top, in the layout `seal report` draws (forgetting.json)."""
    m = summary["metric"]
    if m not in summary["mean_matrix"]:
        return None
    L = summary["length"]
    return {"metric": f"{m} ({summary['guard']})", "guard": summary["guard"], "sequences": summary["sequences_done"],
            "after": ["base"] + [f"passage {t + 1}" for t in range(L)],
            "on": [f"passage {j + 1}" for j in range(L)],
            "matrix": [summary["mean_base"][m]] + summary["mean_matrix"][m]}


def print_summary(summary: dict) -> None:
    m = summary["metric"]
    if m not in summary["mean_matrix"]:
        print("no finished sequence yet")
        return
    L = summary["length"]
    print(f"mean {m} over {summary['sequences_done']} sequence(s), guard {summary['guard']} "
          "(row: after the update with passage t; column: graded on passage j)")
    print(f"{'':>10}" + "".join(f"{'p' + str(j + 1):>8}" for j in range(L)))
    for label, row in [("base", summary["mean_base"][m])] + [(f"after {t + 1}", r)
                                                             for t, r in enumerate(summary["mean_matrix"][m])]:
        print(f"{label:>10}" + "".join(f"{'' if v is None else f'{v:.3f}':>8}" for v in row))
    s = summary["summary"][m]

    def ci(x):
        return "n/a" if x.get("mean") is None else f"{x['mean']:.3f} [{x['lo']:.3f}, {x['hi']:.3f}]"
    print(f"final mean over the {L} passages: {ci(s['final_mean'])} (never edited: {ci(s['final_mean_base'])}; "
          f"gain {ci(s['final_gain_over_base'])})")
    print(f"just edited (diagonal): {ci(s['just_edited'])}; forgetting (diagonal - final): {ci(s['forgetting'])}")
    print(f"first passage after each step: {', '.join(_fmt(x.get('mean')) for x in s['first_retention'])}")
    print(f"unrelated questions after the last step: {ci(s['unrelated_final'])} (change {ci(s['unrelated_change'])})")
    c = summary["compute"]
    print(f"updates kept {c['updates_kept']}, rejected {c['updates_rejected']}, skipped {c['updates_skipped']}, "
          f"empty self-edits {c['empty_selfedits']}; {ci(c['seconds_per_sequence'])} s per sequence"
          + (f"; routing accuracy {ci(c['routing_accuracy'])}" if "routing_accuracy" in c else ""))


# ----------------------------------------------------------------------------- the command

def continual(cfg: RunConfig, argv: list[str], passages: list[K.Passage] | None = None,
              data_sha: str | None = None) -> Path:
    cc = cfg.continual
    if cfg.selfedit.model:
        raise ConfigError("selfedit.model: seal continual adapts the model with its own self-edits; leave it empty")
    if not cfg.eval.generate and (cc.skip_if_known > 0 or (cc.guard == "gate" and cc.gate_metric != "logprob")):
        raise ConfigError("eval.generate false leaves no answers for continual.skip_if_known or the gate's "
                          f"{cc.gate_metric}; use eval.generate true or continual.gate_metric logprob")
    if passages is None:
        passages, counts = K.load_selection(cfg.data, cfg.seed)
        data_sha = K.file_sha256(cfg.data.path)
    else:
        counts = {"passages": len(passages), "questions": sum(len(p.questions) for p in passages)}
    where = cfg.data.path or "passages"
    draw_sequences(passages, cc.sequences, cc.length, cc.unrelated, where, cc.repeats)  # refuse a short file first
    check_models(cfg)
    run = open_run("continual", cfg, argv, cfg.data.path, data_sha, len(passages))
    print(f"run folder: {run.path}" + (" (resumed)" if run.resumed else ""))
    model, tok = load_model(cfg.model)
    chat = uses_chat(tok, cfg.model)
    passages = prepare_passages(cfg, model, tok, chat, passages, counts, where)
    seqs, unrelated, disjoint = draw_sequences(passages, cc.sequences, cc.length, cc.unrelated, where, cc.repeats,
                                               cfg.seed)
    if not disjoint:
        print(f"continual: {len(passages)} passages are too few for {cc.sequences} disjoint sequences of {cc.length} "
              f"plus {cc.unrelated} unrelated passages; sequences share passages")
    run.log("data", **{k: v for k, v in counts.items() if isinstance(v, int)})
    su = Setup(model, tok, HFGenerator(model, tok), chat, cfg, run.path)
    if cc.guard == "kl":
        su.generic = generic_texts(su)  # from the never-edited model
    never_edited = target_weights(model, cfg.inner.lora)

    steps: dict[int, list[dict]] = {}
    for s, seq in enumerate(seqs):
        have = [r for r in read_jsonl(run.path / "steps.jsonl") if r["sequence"] == s]
        if len(have) < len(seq):
            restore_weights(model, never_edited)
            have = run_sequence(su, s, seq, unrelated[s])
            restore_weights(model, never_edited)
        steps[s] = have
        if (folder := run.path / "adapters" / f"seq_{s}").is_dir():  # a finished sequence needs none
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()
    if (run.path / "adapters").is_dir() and not any((run.path / "adapters").iterdir()):
        (run.path / "adapters").rmdir()
    bases = {r["sequence"]: r for r in read_jsonl(run.path / "base.jsonl")}
    summary = summarize(cfg, seqs, bases, steps, counts, disjoint)
    atomic_write_json(run.path / "continual.json", summary)
    if (view := forgetting_view(summary)) is not None:
        atomic_write_json(run.path / "forgetting.json", view)
    m = summary["metric"]
    if m in summary["summary"]:
        run.log("continual", **{f"{k}": v["mean"] for k, v in summary["summary"][m].items()
                                if isinstance(v, dict) and v.get("mean") is not None})
    run.close()
    print_summary(summary)
    print(f"results: {run.path / 'continual.json'}")
    return run.path
