"""The knowledge domain's inner loop: a `Job` (train on a self-edit's sequences, grade on the
passage's questions), `QAInnerLoop` that the engine runs in batches, the unadapted model's
scores, and self-edit sampling."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from seal.config import EvalConfig, InnerLoopConfig, SelfEditConfig
from seal.engine.racing import Race, make_judge
from seal.knowledge.grading import clean_answer, grade, qa_input
from seal.knowledge.passages import QA, Passage
from seal.knowledge.selfedits import selfedit_input
from seal.training.inner_loop import Speedups, TrainExample


@dataclass
class Job:
    """One inner-loop run: train an adapter on `examples`, then grade it on `questions`."""

    key: str
    passage_ids: list[str]
    examples: list[TrainExample]
    questions: list[QA]
    seed: int
    group: str = ""
    """Jobs train together (one batched forward, `inner.parallel_adapters` at a time) only with
    jobs of the same group: `seal evaluate` groups by condition, so a condition's updates never
    depend on which other conditions run beside them (batch composition changes float
    summation order, and in bf16 that moved greedy answers)."""
    reward_questions: int | None = None
    """How many leading `questions` make a ReSTEM reward (label-free rewards: the probes; the
    data's questions after them are graded beside, for comparison). None: all of them."""


METRICS = ("logprob", "containment", "f1", "em")


def reward_eval_config(eval_cfg):
    """The grading a reward needs: greedy answers only when the reward is computed from them
    (a log-prob reward needs none, and generation is most of the grading's cost)."""
    return dataclasses.replace(eval_cfg, generate=eval_cfg.generate and eval_cfg.reward != "logprob")


def score_rows(model, tok, gen, chat: bool, questions: list[list[QA]], rows: list[int], eval_cfg,
               progress=None, speed=None) -> list[list[dict]]:
    """Grade adapter rows[i] on questions[i], closed-book; per-question metric dicts.

    Each record has the gold answer's mean token log-probability and, with eval_cfg.generate, the
    greedy answer and its grades. With the in-process generator (fp32) both come from one prefill
    of the prompts (`speed.share_prefill`, the default); otherwise the log-probs take a forward of
    their own (inner_loop.answer_logprobs)."""
    from seal.training.generation import HFGenerator
    from seal.training.inner_loop import Speedups, answer_logprobs

    speed = speed or Speedups()
    flat = [(i, qa) for i, qs in enumerate(questions) for qa in qs]
    prompts = [qa_input(tok, qa, chat) for _, qa in flat]
    flat_rows = [rows[i] for i, _ in flat]
    golds = [qa.answer for _, qa in flat]
    answers = [None] * len(flat)
    kw = dict(n=1, max_new_tokens=eval_cfg.max_answer_tokens, temperature=0.0, rows=flat_rows,
              batch_size=eval_cfg.batch_size, progress=progress)
    if eval_cfg.generate and speed.share_prefill and isinstance(gen, HFGenerator) \
            and gen.dtype == "fp32":
        # greedy answers from the pruned decoder (the same tokens as transformers' generate), which
        # scores the gold answers on the answers' own prefill: one forward over the prompts, not two
        outs, lps = dataclasses.replace(gen, decoder="pruned").generate(prompts, score=golds, **kw)
    else:
        lps = answer_logprobs(model, tok, prompts, golds, flat_rows, mask_free=speed.mask_free)
        outs = gen.generate(prompts, **kw) if eval_cfg.generate else None
    if outs is not None:
        answers = [o[0] for o in outs]
    result: list[list[dict]] = [[] for _ in questions]
    for (i, qa), lp, ans in zip(flat, lps, answers):
        rec = {"question": qa.question, "gold": qa.answer, "logprob": lp}
        if ans is not None:
            rec.update(grade(ans, qa.answer), answer=clean_answer(ans))
        result[i].append(rec)
    return result


def mean_metrics(per_question: list[dict]) -> dict[str, float]:
    out = {}
    for m in METRICS:
        vals = [q[m] for q in per_question if m in q]
        if vals:
            out[m] = sum(vals) / len(vals)
    return out


@dataclass
class QAInnerLoop:
    """The knowledge inner loop (seal.engine.task.InnerLoop): train one LoRA adapter per job on its
    examples (`inner`, all adapters of a batch side by side over the frozen base), then grade
    each adapted model closed-book on the job's questions (`grading`).

    `race` (a racing.Race): the jobs of a batch race (successive halving, seal/engine/racing.py); a job
    stopped at a rung gets a result with `raced_out` true, its rung metrics and no final grades.
    `speed`: implementation switches (inner_loop.Speedups) that change only summation order."""

    inner: InnerLoopConfig
    grading: EvalConfig
    race: Race | None = None
    speed: Speedups | None = None

    @property
    def adapters_per_batch(self) -> int:
        return self.inner.parallel_adapters

    def run_batch(self, model, tok, gen, chat, batch: list[Job], done=frozenset()) -> list[tuple[Job, dict]]:
        return train_and_grade(model, tok, gen, chat, batch, self.inner, self.grading, done, self.speed, self.race)


def train_and_grade(model, tok, gen, chat, group: list[Job], inner_cfg, eval_cfg, done=frozenset(), speed=None,
                    race=None) -> list[tuple[Job, dict]]:
    """One batch of the knowledge inner loop (see QAInnerLoop); (job, result) for the jobs not in
    `done`. Every finished adapter is graded, done or not, so that grading batches as before."""
    import time

    from seal.training import lora
    from seal.training.inner_loop import train_adapters

    t0 = time.time()
    history: list[list[dict]] = [[] for _ in group]
    judge = None
    if race is not None and len(group) > 1 and race.rungs:
        # a log-prob rung needs no answers: no generation, whatever the final reward's metric
        rung_cfg = eval_cfg if race.score == "reward" else dataclasses.replace(eval_cfg, generate=False,
                                                                                reward="logprob")
        judge = make_judge(lambda qs, rows: [mean_metrics(pq) for pq in score_rows(model, tok, gen, chat, qs, rows,
                                                                                 rung_cfg, speed=speed)],
                           [j.questions for j in group], race.score, eval_cfg.reward, race.eta, history)
    lora.attach(model, inner_cfg.lora, len(group))
    try:
        stats = train_adapters(model, tok, [j.examples for j in group], inner_cfg, [j.seed for j in group],
                               speed=speed, judge=judge, rungs=race.rungs if judge else ())
        t1 = time.time()
        finished = [i for i in range(len(group)) if judge is None or stats["epochs_trained"][i] == inner_cfg.epochs]
        graded = dict(zip(finished, score_rows(model, tok, gen, chat, [group[i].questions for i in finished], finished,
                                               eval_cfg, speed=speed)))
    finally:
        lora.detach(model)
    t2 = time.time()
    out = []
    for i, job in enumerate(group):
        if job.key in done:
            continue
        pq = graded.get(i)
        race_info = {"race": {"rungs": history[i], "stopped_at": None if pq is not None else history[i][-1]["epoch"]}} \
            if judge is not None else {}
        out.append((job, {
            "key": job.key, "metrics": mean_metrics(pq) if pq is not None else history[i][-1]["metrics"],
            "questions": pq, "raced_out": pq is None, **race_info,
            "train": {"steps": stats["adapter_steps"][i], "tokens": stats["tokens"][i], "examples": stats["examples"][i],
                      "final_loss": stats["final_loss"][i], "truncated": stats["n_truncated"][i],
                      # tokens the group actually ran (shared sequences once; sum of squared
                      # lengths for attention), split equally over its adapters
                      "executed_tokens": sum(stats["executed_lens"]) / len(group),
                      "executed_sq_tokens": sum(n * n for n in stats["executed_lens"]) / len(group)},
            # wall time of the group, shared equally by its adapters
            "seconds": (t2 - t0) / len(group), "train_seconds": (t1 - t0) / len(group),
        }))
    return out


def base_scores(model, tok, gen, chat: bool, passages: list[Passage], eval_cfg) -> dict[str, list[dict]]:
    """Per-question grades of the unadapted model, by passage id."""
    graded = score_rows(model, tok, gen, chat, [p.questions for p in passages], [-1] * len(passages), eval_cfg)
    return {p.id: g for p, g in zip(passages, graded)}


def sample_selfedits(gen, tok, chat: bool, passages: list[Passage], cfg: SelfEditConfig, k: int, seed: int,
                     done: dict[str, list[str]], on_sampled, progress=None) -> dict[str, list[str]]:
    """k sampled self-edits per passage (temperature/top-p from cfg); passages already in `done`
    (a resumed run) are not sampled again. on_sampled(passage, completions) saves each."""
    from seal.training.generation import sample_resumable

    def prompt_of(p):
        return None if cfg.template == "none" else selfedit_input(tok, p, cfg, chat)

    return sample_resumable(gen, passages, prompt_of, k, max_new_tokens=cfg.max_new_tokens,
                            temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.batch_size, seed=seed,
                            done=done, on_sampled=on_sampled, progress=progress)
