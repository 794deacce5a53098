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
           (the previous step's row). The first passage has nothing to protect: always kept.
  per-doc  one adapter per passage, never merged; the base stays frozen (so every self-edit is
           written by the base model). At question time each question goes to one adapter:
           the passage whose title + text best matches the question's topic + text (BM25), or
           its own passage (`router oracle`, an upper bound); routing accuracy is recorded.
           A question routed to a passage without an adapter (skipped) is answered by the base.

When to adapt (`continual.skip_if_known` > 0): before spending an update, the current model
answers the passage's questions closed-book; if its containment reaches the threshold, the update
is skipped and counted.

Reported per guard (`continual.json`, strict JSON): per sequence the matrix, the base row, the
unrelated-passage accuracy after each step (general ability), decisions, seconds; over
sequences the mean matrix and, with 95% bootstrap intervals over sequences, the final mean
accuracy over the L passages against the never-edited model, the first passage's retention after
each step, the just-edited accuracy (the diagonal), forgetting (diagonal minus final, over
p_0..p_{L-2}), unrelated accuracy and its change, and compute. `forgetting.json` holds the mean
matrix (base row on top) in the layout `seal report` draws as a heatmap.

Departures and limits (each a known gap, not hidden):
- the gate and the skip probe use the passages' own evaluation questions (label-using: a
  deployed system would need held-out probes, or the likelihood of the passage, for these);
- the gate rejects; it does not scale an update down;
- the KL penalty to the pre-update model on generic text (issue guard 5) is not implemented;
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
from .evaluate import check_models, job_seed, prepare_passages
from .generation import HFGenerator
from .inner_loop import train_adapters
from .models import load_model, model_device, uses_chat
from .runs import append_jsonl, atomic_write_json, open_run, read_jsonl
from .stats import bootstrap_mean
from .tasks import knowledge as K

MERGED = ("merge", "replay", "gate")


# ----------------------------------------------------------------------------- sequences

def draw_sequences(passages: list[K.Passage], n_seq: int, length: int, n_unrelated: int,
                   where: str = "data") -> tuple[list[list[K.Passage]], list[list[K.Passage]], bool]:
    """(sequences, unrelated passages per sequence, disjoint?) from passages already shuffled with
    the run's seed. With enough passages the sequences are consecutive, disjoint slices and the
    unrelated set is the last `n_unrelated` passages, the same for every sequence; otherwise
    sequences wrap around (a passage may recur in another sequence) and each sequence's unrelated
    passages are the last ones not in it."""
    n = len(passages)
    if length > n:
        raise K.DataError(f"{where}: continual.length {length} needs at least {length} passages, the data has {n}")
    disjoint = n >= n_seq * length + n_unrelated
    seqs = [[passages[(s * length + i) % n] for i in range(length)] for s in range(n_seq)]
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

    def best(self, query: str) -> int:
        """Index of the best-matching document (the first on ties)."""
        q = K.normalize_answer(query).split()
        scores = []
        for d in self.docs:
            tf: dict[str, int] = {}
            for w in d:
                tf[w] = tf.get(w, 0) + 1
            norm = self.k1 * (1 - self.b + self.b * len(d) / max(self.avg, 1e-9))
            scores.append(sum(self.idf.get(w, 0.0) * tf[w] * (self.k1 + 1) / (tf[w] + norm) for w in q if w in tf))
        return max(range(len(scores)), key=lambda i: (scores[i], -i))


def route(questions: list[K.QA], owners: list[int], seen: list[K.Passage], router: str) -> list[int]:
    """For each question, the index in `seen` of the passage whose adapter answers it. `owners[i]`
    is the question's own passage index (-1 for unrelated questions; used only by `oracle`)."""
    if router == "oracle":
        return [o if o >= 0 else -1 for o in owners]
    index = BM25([f"{p.title}\n{p.context}" for p in seen])
    return [index.best(f"{q.title} {q.question}") for q in questions]


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
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp))
    os.replace(tmp, path)


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
    routed = route([qa for _, qa in flat], owner_of, seen, cfg.continual.router) if seen else [-1] * len(flat)
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
    return out, {"questions": len(owned), "correct": sum(o == r for o, r in owned)}


def replay_examples(learner: Learner, n: int, seed: int) -> list:
    """`n` training sequences drawn without replacement from the kept earlier updates' data."""
    if n <= 0 or not learner.pool:
        return []
    return random.Random(seed).sample(learner.pool, min(n, len(learner.pool)))


def _own_examples(cfg: RunConfig, p: K.Passage, completion: str):
    items = K.parse_selfedit(completion, cfg.selfedit.template)
    return items, K.training_examples(p, items, cfg.selfedit.include_passage)


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
        append_jsonl(su.run_dir / "base.jsonl", {"sequence": s, "passage_ids": [p.id for p in seq],
                                                  "unrelated_ids": [p.id for p in unrelated],
                                                  "grades": graded[: len(seq)], "unrelated": graded[len(seq):]})
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
        rec = step(su, learner, s, t, seq, unrelated, prev_grades)
        append_jsonl(steps_file, rec)
        records.append(rec)
        prev_grades = rec["grades"]
        print(f"sequence {s + 1}/{cc.sequences}, passage {t + 1}/{len(seq)}: {rec['decision']}; "
              f"just edited {_fmt(K.mean_metrics(rec['grades'][t]).get(_headline(cfg)))}, mean so far "
              f"{_fmt(_mean(_passage_means(rec['grades'], _headline(cfg))))} "
              f"(base {_fmt(_mean(_passage_means(base['grades'][: t + 1], _headline(cfg))))}), {rec['seconds']:.0f} s")
    return records


def step(su: Setup, learner: Learner, s: int, t: int, seq: list[K.Passage], unrelated: list[K.Passage],
         prev_grades: list[list[dict]]) -> dict:
    """One passage of a sequence: (maybe skip,) self-edit, update, guard, grade."""
    cfg, cc = su.cfg, su.cfg.continual
    p, seen = seq[t], seq[: t + 1]
    rec: dict = {"sequence": s, "step": t, "passage_id": p.id, "title": p.title, "guard": cc.guard}
    t0 = time.time()

    # when to adapt: does the current model already answer this passage's questions?
    if cc.skip_if_known > 0:
        probe, _ = grade(su, learner, seen, [p.questions], [t])
        rec["probe_containment"] = K.mean_metrics(probe[0]).get("containment")
        if rec["probe_containment"] is not None and rec["probe_containment"] >= cc.skip_if_known:
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
        state = lora.attach(su.model, cfg.inner.lora, 1)
        try:
            stats = train_adapters(su.model, su.tok, [own + extra], cfg.inner, [job_seed(cfg.seed, "inner", s, t)])
            weights = lora.adapter_state(state, 0)
            rec["train"] = {"examples": stats["examples"][0], "tokens": stats["tokens"][0],
                            "steps": stats["steps"], "final_loss": stats["final_loss"][0],
                            "truncated": stats["n_truncated"][0]}
            rec["train_seconds"] = time.time() - t1
            rec["decision"] = "kept"
            if cc.guard == "gate" and t > 0:  # the candidate on top of the current model, on earlier passages
                cand = K.score_rows(su.model, su.tok, su.gen, su.chat, [q.questions for q in seq[:t]], [0] * t, cfg.eval)
                before = _mean(_passage_means(prev_grades[:t], cc.gate_metric))
                after = _mean(_passage_means(cand, cc.gate_metric))
                drop = None if before is None or after is None else before - after
                rec["gate"] = {"metric": cc.gate_metric, "before": before, "after": after, "drop": drop,
                               "threshold": cc.gate_threshold}
                if drop is not None and drop > cc.gate_threshold:
                    rec["decision"] = "rejected"
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
    if cfg.continual.guard == "per-doc":
        out["compute"]["routing_accuracy"] = bootstrap_mean([x["routing_accuracy"] for x in seqs_out
                                                             if x["routing_accuracy"] is not None], n_boot, seed)
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
    draw_sequences(passages, cc.sequences, cc.length, cc.unrelated, where)  # refuse a short file before any work
    check_models(cfg)
    run = open_run("continual", cfg, argv, cfg.data.path, data_sha, len(passages))
    print(f"run folder: {run.path}" + (" (resumed)" if run.resumed else ""))
    model, tok = load_model(cfg.model)
    chat = uses_chat(tok, cfg.model)
    passages = prepare_passages(cfg, model, tok, chat, passages, counts, where)
    seqs, unrelated, disjoint = draw_sequences(passages, cc.sequences, cc.length, cc.unrelated, where)
    if not disjoint:
        print(f"continual: {len(passages)} passages are too few for {cc.sequences} disjoint sequences of {cc.length} "
              f"plus {cc.unrelated} unrelated passages; sequences share passages")
    run.log("data", **{k: v for k, v in counts.items() if isinstance(v, int)})
    su = Setup(model, tok, HFGenerator(model, tok), chat, cfg, run.path)
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
