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

import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from seal import knowledge as K
from seal.config import ConfigError, RunConfig
from seal.engine.jobs import job_seed
from seal.knowledge.continual_summary import (
    fmt,
    forgetting_view,
    headline_metric,
    mean_or_none,
    passage_means,
    print_summary,
    summarize,
)
from seal.knowledge.routing import question_query, route
from seal.knowledge.table import check_models, prepare_passages
from seal.runs import append_jsonl, atomic_write_json, open_run, read_jsonl
from seal.training import lora
from seal.training.generation import HFGenerator
from seal.training.inner_loop import _hidden, answer_logprobs, train_adapters
from seal.training.models import format_prompt, load_model, model_device, pick_dtype, uses_chat

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
            lora.load_adapter(state, slot[t], learner.adapters[t])
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
        from seal.training.inner_loop import Tokenized, collate

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
        lora.load_adapter(state, 0, learner.adapters[r])
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
        lora.merge_saved(su.model, su.cfg.inner.lora, weights)
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
                _apply_kept(su, learner, t, lora.read_adapter(_adapter_path(su, s, t), device), own)
            records.append(rec)
            prev_grades = rec["grades"]
            continue
        rec = step(su, learner, s, t, seq, unrelated, prev_grades, base.get("doc_logprob"))
        append_jsonl(steps_file, rec)
        records.append(rec)
        prev_grades = rec["grades"]
        print(f"sequence {s + 1}/{cc.sequences}, passage {t + 1}/{len(seq)}: {rec['decision']}; "
              f"just edited {fmt(K.mean_metrics(rec['grades'][t]).get(headline_metric(cfg)))}, mean so far "
              f"{fmt(mean_or_none(passage_means(rec['grades'], headline_metric(cfg))))} "
              f"(base {fmt(mean_or_none(passage_means(base['grades'][: t + 1], headline_metric(cfg))))}), {rec['seconds']:.0f} s")
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
                    return mean_or_none(passage_means(cand, cc.gate_metric))

                def halve() -> None:
                    with torch.no_grad():
                        for layer in state.layers.values():
                            layer.B[0].mul_(0.5)

                before = mean_or_none(passage_means(prev_grades[:t], cc.gate_metric))
                rec["gate"] = {"metric": cc.gate_metric,
                               **halving_gate(before, cc.gate_threshold, cc.gate_halvings, after, halve)}
                if not rec["gate"]["passed"]:
                    rec["decision"] = "rejected"
                weights = lora.adapter_state(state, 0)  # as kept: scaled down if it had to be
        finally:
            lora.detach(su.model)
        if rec["decision"] == "kept":
            lora.save_adapter(_adapter_path(su, s, t), weights)  # before the step record: resume re-applies it
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
    never_edited = lora.target_weights(model, cfg.inner.lora)

    steps: dict[int, list[dict]] = {}
    for s, seq in enumerate(seqs):
        have = [r for r in read_jsonl(run.path / "steps.jsonl") if r["sequence"] == s]
        if len(have) < len(seq):
            lora.restore_weights(model, never_edited)
            have = run_sequence(su, s, seq, unrelated[s])
            lora.restore_weights(model, never_edited)
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
