"""Knowledge incorporation as a seal Task (paper section 4.1), and `seal train`.

    context   a passage (title, text) and its questions; each round draws `restem.passages_per_round`
              fresh ones from the seeded shuffle of the training file (wrapping around)
    self-edit k completions of the `selfedit.template` prompt (default: implications)
    jobs      every parsable self-edit x `inner.seeds` seeds: a LoRA on the title-prefixed items
              (+ the passage), graded closed-book on the passage's questions (QAInnerLoop)
    reward    r = metric(adapted base) - metric(base) on those questions, averaged over seeds
              (`eval.reward`, default containment; see knowledge/__init__.py for the grading)
    filter    `restem.keep` (best-positive, the paper's; all-positive; top-fraction), among the
              self-edits whose gold-answer log-prob also beat the control's with `restem.confirm logprob`
    M-step    SFT on (self-edit prompt -> sampled self-edit), loss on the self-edit

Departures from the paper, each a setting:
- the reward is measured on the *base* model updated by the self-edit (as the reference code's
  inner-loop server does), so a round's reward reflects only the data the generator wrote;
- the reward metric is local (gold-answer containment gain by default) instead of GPT-4.1 grading;
- common random numbers: the k self-edits of a passage share each inner-loop seed (LoRA init and
  batch order) and train side by side in one batch, so their rewards differ by the data they
  wrote, not by the luck of the update;
- `restem.selection racing` stops losing self-edits early (seal/engine/racing.py): they get no reward;
- `restem.reward_questions probes` computes the reward without labels: on probe questions that
  the base model writes and answers with the passage in view (seal/knowledge/probes.py), written once per
  run (probes.jsonl). The data's own questions, when there are any, are graded beside them for
  comparison only (`gold_reward`), and done.json's `agreement_with_gold` reports how often both
  rewards keep the same self-edit.

Run folder (seal/engine/restem.py for the round skeleton): probes.jsonl, rounds/round_<t>/{samples.jsonl,
base.jsonl, rewards.jsonl (one record per inner-loop run), sft.jsonl, model/, done.json}.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from seal import knowledge as K
from seal.config import ConfigError, InnerLoopConfig, RunConfig
from seal.engine.jobs import job_seed
from seal.engine.racing import Race
from seal.engine.restem import select_kept
from seal.engine.sft_distributed import sft_config  # the M-step's settings are `seal sft`'s
from seal.engine.task import Plan, Sampling, Session
from seal.knowledge.probes import Probe, write_probes
from seal.knowledge.table import control_examples
from seal.runs import append_jsonl, progress, read_jsonl
from seal.stats import bootstrap_mean, spearman
from seal.training.inner_loop import TrainExample

CONTROL_FIELDS = {"c": "control_copies", "p": "control_permutations"}
"""A control job's key tag (`<passage>/<tag><n>/<seed>`) and its rewards.jsonl field
(`restem.reward_against`): `c`, the passage x n copies (steps-control); `p`, the passage and its n
permuted copies (permutations-control)."""
CONTROL_KINDS = {"steps-control": "steps", "permutations-control": "permutations"}
"""`restem.reward_against` -> the `eval.controls` kind whose update it trains (`control_examples`)."""


def is_control(record: dict) -> bool:
    """Is this rewards.jsonl record a control job's (never a self-edit's)?"""
    return any(record.get(field) for field in CONTROL_FIELDS.values())


def control_tag(kind: str, n_sequences: int, permutations: int) -> str:
    """A control job's key tag: `c<n>`, the passage x n copies (the `steps` control of an update of
    n sequences), or `p<n>`, the passage and its n permuted copies (`permutations`)."""
    return f"c{n_sequences}" if kind == "steps" else f"p{permutations}"


def record_key(record: dict) -> str:
    """A rewards.jsonl record's job key: `<passage>/<sample>/<seed>`, or a control's
    `<passage>/<tag>/<seed>`."""
    for tag, field in CONTROL_FIELDS.items():
        if record.get(field):
            return f"{record['passage_id']}/{tag}{record[field]}/{record['seed']}"
    return f"{record['passage_id']}/{record['sample']}/{record['seed']}"


def control_key(record: dict, reward_against: str, permutations: int) -> str | None:
    """The job key of the control a self-edit's record was scored against (`plan`): the same
    passage and seed, and for the steps control as many sequences; None without a control."""
    kind = CONTROL_KINDS.get(reward_against)
    if kind is None:
        return None
    return f"{record['passage_id']}/{control_tag(kind, record['train']['examples'], permutations)}/{record['seed']}"


def own_and_control_means(records: list[dict], value) -> tuple[float | None, float | None]:
    """The mean of `value(record)` over a self-edit's graded records (seeds stopped by racing
    have no reward and count for nothing), and over its controls' among `records` (None: none)."""
    graded = [r for r in records if r["reward"] is not None]
    means = []
    for control in (False, True):
        vals = [value(r) for r in graded if is_control(r) == control]
        means.append(sum(vals) / len(vals) if vals else None)
    return means[0], means[1]


def controlled_reward(records: list[dict]) -> float | None:
    """The mean over inner-loop seeds of a self-edit's gain over the unadapted model, less the
    mean gain of its controls among `records` (the same seeds; none: less nothing)."""
    own, ctrl = own_and_control_means(records, lambda r: r["reward"])
    return None if own is None else own - (ctrl or 0.0)


def logprob_over_control(records: list[dict]) -> float | None:
    """A self-edit's mean gold-answer log-prob after its update less its controls' (the same
    seeds, from the same records as `controlled_reward`); None without both."""
    own, ctrl = own_and_control_means(records, lambda r: r["metrics"]["logprob"])
    return None if own is None or ctrl is None else own - ctrl


@dataclass
class KnowledgeTask:
    """Knowledge incorporation (see the module docstring): `passages` is the pool rounds draw from."""

    cfg: RunConfig
    passages: list[K.Passage]

    name = "knowledge"
    unit = "passage"
    id_field = "passage_id"
    job_file = "rewards.jsonl"
    selfedit_file = None

    @property
    def label_free(self) -> bool:
        return self.cfg.restem.reward_questions == "probes"

    @property
    def keep(self) -> str:
        return self.cfg.restem.keep

    @property
    def keep_fraction(self) -> float:
        return self.cfg.restem.keep_fraction

    @property
    def sampling(self) -> Sampling:
        se = self.cfg.selfedit
        return Sampling(se.k, se.max_new_tokens, se.temperature, se.top_p, se.batch_size)

    @property
    def inner_loop(self) -> K.QAInnerLoop:
        """LoRA + closed-book grading, with the reward's grading (no greedy answers for a log-prob
        reward) and racing when `restem.selection racing`."""
        return K.QAInnerLoop(self.cfg.inner, K.reward_eval_config(self.cfg.eval),
                             race=Race.from_config(self.cfg.restem, self.cfg.inner.epochs))

    @property
    def sft_config(self) -> InnerLoopConfig:
        return sft_config(self.cfg)

    @property
    def generator_check(self) -> int:
        return self.cfg.restem.generator_check

    def held_apart(self, n: int) -> list[K.Passage]:
        """`restem.generator_check` passages that no round uses: the last n of the pool (train()
        refuses a pool too small to hold them apart)."""
        return held_apart(self.passages, self.cfg, n)

    # ------------------------------------------------------------------ E-step

    def round_contexts(self, rnd: int, session: Session) -> list[K.Passage]:
        """`round_passages`; label-free: with their probes first among their questions (passages
        without a probe are left out)."""
        chosen = round_passages(self.passages, self.cfg, rnd)
        if not self.label_free:
            return chosen
        probes = run_probes(session.run_dir / "probes.jsonl", session.gen, session.tok, session.chat, chosen, self.cfg)
        graded = [dataclasses.replace(p, questions=list(probes[p.id]) + list(p.questions))
                  for p in chosen if probes.get(p.id)]
        if len(graded) < len(chosen):
            print(f"round {rnd}: {len(chosen) - len(graded)} passage(s) got no probe question and are left out "
                  "of this round")
        return graded

    def selfedit_input(self, ctx: K.Passage, tok, chat: bool) -> str | None:
        return None if self.cfg.selfedit.template == "none" else K.selfedit_input(tok, ctx, self.cfg.selfedit, chat)

    def reward_baseline(self, session: Session, contexts: list[K.Passage]) -> dict[str, dict]:
        graded = K.base_scores(session.model, session.tok, session.gen, session.chat, contexts,
                               K.reward_eval_config(self.cfg.eval))
        return {pid: {"questions": g} for pid, g in graded.items()}

    def plan(self, rnd: int, contexts: list[K.Passage], samples: dict[str, list[str]], tok, chat: bool) -> Plan:
        """Every parsable self-edit x `inner.seeds` seeds; the k self-edits of a passage share
        each seed, the same permuted passages (`selfedit.permutations`: those of the table's
        first update of the passage) and one batch group (common random numbers). With `restem.reward_against
        steps-control`, each self-edit is also scored by the passage alone trained on as many
        sequences (so as many steps) with the same seed: one control job per passage, seed and
        sequence count, in a batch group of its own. With `permutations-control`, by the update
        without the self-edit's items (the passage and the same permuted copies): one control
        job per passage and seed."""
        cfg = self.cfg
        kind = CONTROL_KINDS.get(cfg.restem.reward_against)
        jobs, scored_by, empty, controls = [], {}, [], set()
        for p in contexts:
            permute = job_seed(cfg.seed, "permute", p.id, 0)
            n_reward = reward_question_count(p) if self.label_free else len(p.questions)
            for j, c in enumerate(samples[p.id]):
                items = K.parse_selfedit(c, cfg.selfedit.template)
                if not items:
                    empty.append((p.id, j))  # unusable self-edit: no reward, never kept
                    continue
                examples = K.selfedit_examples(p, items, cfg.selfedit, permute)
                keys = []
                for s in range(cfg.inner.seeds):
                    seed = job_seed(cfg.seed, "inner", rnd, p.id, s)
                    keys.append(f"{p.id}/{j}/{s}")
                    jobs.append(K.Job(keys[-1], [p.id], examples, p.questions, seed, group=f"{p.id}/{s}",
                                      reward_questions=n_reward))
                    if kind:  # the same control update as the evaluation table's row of this kind
                        control = control_examples(kind, examples, p, cfg, tok, permute)
                        keys.append(f"{p.id}/{control_tag(kind, len(control), cfg.selfedit.permutations)}/{s}")
                        if keys[-1] not in controls:
                            controls.add(keys[-1])
                            jobs.append(K.Job(keys[-1], [p.id], control, p.questions, seed,
                                              group=f"{p.id}/{s}/control", reward_questions=n_reward))
                scored_by[(p.id, j)] = keys
        return Plan(jobs, scored_by, empty,
                    f"parse to no training item ({cfg.selfedit.template} template); they get no reward and are "
                    "never kept")

    def job_record(self, rnd: int, job: K.Job, result: dict, baseline: dict[str, dict]) -> dict:
        """rewards.jsonl's record of one inner-loop run: its reward (the metric's gain over the
        base on the reward questions) and, label-free, the gold reward beside it."""
        pid, j, s = job.key.split("/")
        rec = {"round": rnd, "passage_id": pid, "sample": int(j) if j[0].isdigit() else None, "seed": int(s),
               "reward": None}
        if j[0] in CONTROL_FIELDS:  # a control job (restem.reward_against): the passage x copies, or permuted
            rec[CONTROL_FIELDS[j[0]]] = int(j[1:])
        if result.get("raced_out"):  # stopped at a rung: no reward, never kept
            return {**rec, "raced_out": True, "race": result["race"], "train": result["train"],
                    "seconds": result["seconds"]}
        metric, n = self.cfg.eval.reward, job.reward_questions
        graded, base = result["questions"], baseline[pid]["questions"]
        rec["reward"] = K.mean_metrics(graded[:n])[metric] - K.mean_metrics(base[:n])[metric]
        rec.update(metrics=K.mean_metrics(graded[:n]), train=result["train"], seconds=result["seconds"])
        if self.label_free and len(graded) > n:
            rec["gold_reward"] = K.mean_metrics(graded[n:])[metric] - K.mean_metrics(base[n:])[metric]
            rec["gold_metrics"] = K.mean_metrics(graded[n:])
        if "race" in result:
            rec["race"] = result["race"]
        return rec

    def record_key(self, record: dict) -> str:
        return record_key(record)

    def reward(self, records: list[dict]) -> float | None:
        """`controlled_reward`: with `restem.reward_against` a control, the gain less its controls'."""
        return controlled_reward(records)

    def tiebreak(self, records: list[dict]) -> float | None:
        """The mean gold-answer log-prob after the update (over the reward questions, mean over
        seeds), which orders self-edits with equal rewards (`restem.tie_break logprob`)."""
        if self.cfg.restem.tie_break != "logprob":
            return None
        own, _ = own_and_control_means([r for r in records if "logprob" in r.get("metrics", {})],
                                       lambda r: r["metrics"]["logprob"])
        return own

    @property
    def confirm(self):
        """`restem.confirm logprob`: `logprob_over_control`, the second score a kept self-edit
        must have above 0; None (`none`): the reward alone decides."""
        return logprob_over_control if self.cfg.restem.confirm == "logprob" else None

    # ------------------------------------------------------------------ M-step and reporting

    def sft_example(self, ctx: K.Passage, completion: str, tok, chat: bool) -> TrainExample:
        return TrainExample(completion, self.selfedit_input(ctx, tok, chat))

    def round_stats(self, rnd, contexts, samples, plan, records, rewards, kept, info, tok) -> dict:
        template = self.cfg.selfedit.template
        gold: dict[tuple[str, int], list[float]] = {}
        for r in records.values():
            if r.get("gold_reward") is not None and not is_control(r):
                gold.setdefault((r["passage_id"], r["sample"]), []).append(r["gold_reward"])
        agreement = reward_agreement(rewards, {k: sum(v) / len(v) for k, v in gold.items()}, self.cfg) if gold \
            else None
        return {"reward_questions": self.cfg.restem.reward_questions, "n_empty": len(plan.unusable),
                "n_raced_out": sum(bool(r.get("raced_out")) for r in records.values()),
                "selfedits": selfedit_stats([c for p in contexts for c in samples[p.id]], tok, template,
                                            update_steps(self.cfg)),
                "kept_selfedits": selfedit_stats([samples[pid][j] for pid, j, _ in kept], tok, template,
                                                 update_steps(self.cfg)),
                "agreement_with_gold": agreement}

    def round_notes(self, rnd: int, info: dict) -> list[str]:
        notes = [f"round {rnd}: distinct-2 of the self-edits {_fmt(info['selfedits']['distinct_2'])}"]
        for what, key in (("sampled", "selfedits"), ("kept", "kept_selfedits")):
            st = info[key]
            if st["n"]:
                notes.append(f"round {rnd}: {what} self-edits ({st['n']}): {st['mean_tokens']:.0f} tokens, "
                             f"{st['mean_items']:.1f} items, {_fmt(st.get('mean_steps'))} inner-loop steps on average")
        if a := info["agreement_with_gold"]:
            notes.append(f"round {rnd}: probe vs gold reward over {a['n_selfedits']} self-edits: Spearman within a "
                         f"passage {_fmt(a['spearman_within_mean'])} (mean of {a['spearman_within_n']}), pooled "
                         f"{_fmt(a['spearman_pooled'])}; same self-edits kept on "
                         f"{_fmt((a['same_kept'] or {}).get('mean'))} of passages")
        return notes

    # ------------------------------------------------------------------ the table (`seal evaluate`)

    baseline_file = "base.jsonl"
    table_job_file = "results.jsonl"

    @property
    def table_inner_loop(self) -> K.QAInnerLoop:
        """LoRA + the full grading (`eval`: greedy answers too), no racing."""
        return K.QAInnerLoop(self.cfg.inner, self.cfg.eval)

    def table_baseline(self, session: Session, contexts: list[K.Passage], on_result, progress) -> None:
        print(f"grading the unadapted model on {sum(len(p.questions) for p in contexts)} questions")
        for pid, g in K.base_scores(session.model, session.tok, session.gen, session.chat, contexts,
                                    self.cfg.eval).items():
            on_result(pid, {"questions": g})
        progress(len(contexts))

    def table_plan(self, contexts, selfedits, tok, chat):
        from seal.knowledge.table import table_plan

        return table_plan(self.cfg, contexts, selfedits, tok)

    def table_record(self, job: K.Job, result: dict) -> dict:
        cond, pid, idx = job.key.split("/")
        return {**result, "condition": cond, "passage_id": pid, "selfedit_index": int(idx)}

    def summarize_table(self, contexts, baseline, details, records) -> dict:
        from seal.knowledge.table import summarize

        base = {pid: r["questions"] for pid, r in baseline.items()}
        return summarize(self.cfg, contexts, base, records, ["no-adaptation"] + details["conditions"],
                         details["skipped"], details.get("controls"))

    def table_files(self, contexts, baseline, details, records) -> dict[str, list[dict]]:
        from seal.knowledge.table import passage_lines

        return {"passages.jsonl": passage_lines(contexts, {pid: r["questions"] for pid, r in baseline.items()}, records)}

    def print_table(self, summary: dict) -> None:
        from seal.knowledge.table import print_table

        print_table(summary)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def round_passages(pool: list[K.Passage], cfg: RunConfig, rnd: int) -> list[K.Passage]:
    """Round `rnd`'s passages: the next `restem.passages_per_round` of the pool (never the same
    passage twice in a round; wrapping around when the pool is smaller than R * N)."""
    n = min(cfg.restem.passages_per_round, len(pool))
    start = ((rnd - 1) * n) % max(1, len(pool))
    chosen = pool[start : start + n]
    if len(chosen) < n:
        chosen += pool[: n - len(chosen)]
    return chosen


def held_apart(pool: list[K.Passage], cfg: RunConfig, n: int) -> list[K.Passage]:
    """The last `n` passages of the pool, when the rounds' passages (`round_passages`) leave them
    out; else a ConfigError naming both counts."""
    used = cfg.restem.rounds * min(cfg.restem.passages_per_round, len(pool))
    if n and cfg.restem.reward_questions == "probes":
        raise ConfigError("restem.generator_check grades held-apart passages on their own questions; "
                          "it does not run with reward_questions probes")
    if n and used + n > len(pool):
        raise ConfigError(f"restem.generator_check {n} needs {n} passages beyond the {used} that "
                          f"{cfg.restem.rounds} rounds use; the data has {len(pool)}")
    return pool[len(pool) - n:] if n else []


def reward_question_count(p: K.Passage) -> int:
    """How many leading questions of a label-free round's passage are its probes (they make the
    reward; the data's questions follow, graded beside)."""
    return sum(isinstance(q, Probe) for q in p.questions)


def run_probes(path: Path, gen, tok, chat: bool, passages: list[K.Passage], cfg: RunConfig) -> dict[str, list[Probe]]:
    """The probes of `passages` (reward_questions probes), written by the base model once per run
    and appended to `path` as each is made (a resumed run reads them back)."""
    have = {r["passage_id"]: [Probe(**q) for q in r["probes"]] for r in read_jsonl(path)}
    todo = [p for p in passages if p.id not in have]
    bar = progress(len(todo), "writing probe questions", "passage")
    for p in todo:
        have[p.id] = write_probes(gen, tok, chat, p, cfg.restem.probes, job_seed(cfg.seed, "probes", p.id),
                                  max_answer_tokens=cfg.eval.max_answer_tokens)
        append_jsonl(path, {"passage_id": p.id, "probes": [dataclasses.asdict(q) for q in have[p.id]]})
        bar.update(1)
    bar.close()
    return have


def reward_agreement(probe: dict[tuple[str, int], float], gold: dict[tuple[str, int], float], cfg: RunConfig) -> dict:
    """How well a label-free reward (`probe`) stands in for the gold one over the same self-edits,
    keyed (passage id, sample): Spearman's rank correlation within each passage (the ranking
    ReSTEM uses; mean over passages where both rewards vary) and pooled; per passage whether the
    filter (`restem.keep`) keeps the same self-edits under both; and the gold reward of what each
    keeps, against choosing at random (mean gold reward of all self-edits)."""
    keys = sorted(k for k in probe if probe[k] is not None and gold.get(k) is not None)
    pids = sorted({pid for pid, _ in keys})
    within = [rho for pid in pids
              for a, b in [([probe[k] for k in keys if k[0] == pid], [gold[k] for k in keys if k[0] == pid])]
              if (rho := spearman(a, b)) is not None]
    keep, frac = cfg.restem.keep, cfg.restem.keep_fraction
    kept_p = {(pid, j) for pid, j, _ in select_kept({k: probe[k] for k in keys}, keep, frac)}
    kept_g = {(pid, j) for pid, j, _ in select_kept({k: gold[k] for k in keys}, keep, frac)}
    same = [float({k for k in kept_p if k[0] == pid} == {k for k in kept_g if k[0] == pid}) for pid in pids]

    def per_passage(chosen):  # mean gold reward per passage of what a rule kept (0 when nothing: no update)
        return [sum(gold[k] for k in chosen if k[0] == pid) / max(1, sum(k[0] == pid for k in chosen)) for pid in pids]

    rnd = [sum(gold[k] for k in keys if k[0] == pid) / sum(k[0] == pid for k in keys) for pid in pids]
    probe_kept, gold_kept = per_passage(kept_p), per_passage(kept_g)
    return {"n_passages": len(pids), "n_selfedits": len(keys),
            "spearman_within_mean": sum(within) / len(within) if within else None,
            "spearman_within_n": len(within),
            "spearman_pooled": spearman([probe[k] for k in keys], [gold[k] for k in keys]),
            "same_kept": bootstrap_mean(same, seed=cfg.seed) if same else None,
            "kept_gold_reward": {"probe": bootstrap_mean(probe_kept, seed=cfg.seed) if pids else None,
                                 "gold": bootstrap_mean(gold_kept, seed=cfg.seed) if pids else None,
                                 "random": bootstrap_mean(rnd, seed=cfg.seed) if pids else None},
            "note": "kept_gold_reward: per passage, the mean gold reward of the self-edits each reward's filter "
                    "keeps (0 where it keeps none); random: the mean over all its self-edits"}


def selfedit_stats(completions: list[str], tok, template: str, steps=None) -> dict:
    """Length and diversity of self-edits: mean tokens, mean parsed items, mean inner-loop steps
    (`steps(n items)`, when given), and distinct-2 (unique
    word bigrams / all bigrams over the set), whose fall across rounds signals the collapse of
    diversity that self-edit RL is known for."""
    if not completions:
        return {"n": 0, "mean_tokens": None, "mean_items": None, "mean_steps": None, "distinct_2": None}
    toks = [len(tok(c, add_special_tokens=False)["input_ids"]) for c in completions]
    items = [len(K.parse_selfedit(c, template)) for c in completions]
    bigrams = [tuple(w[i : i + 2]) for c in completions for w in [c.lower().split()] for i in range(len(w) - 1)]
    return {"n": len(completions), "mean_tokens": sum(toks) / len(toks), "mean_items": sum(items) / len(items),
            "mean_steps": sum(map(steps, items)) / len(items) if steps else None,
            "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else None}


def update_steps(cfg: RunConfig):
    """Optimizer steps of the inner-loop update of a self-edit with n items (with the passage and
    its permutations, `inner.steps`): a self-edit's length buys steps under inner.steps sequence."""
    extra = int(cfg.selfedit.include_passage) + cfg.selfedit.permutations
    return lambda n: cfg.inner.update_steps(n + extra)


def check_estep_source(cfg: RunConfig, data_sha: str | None) -> None:
    """Refuse `restem.estep_from` unless that folder is a `seal train` run on the same data whose
    round-1 E-step settings equal `cfg`'s (seal.engine.restem.estep_differences)."""
    from seal.config import from_dict, load_yaml, to_dict
    from seal.engine.restem import estep_differences
    from seal.runs import RunError, read_manifest

    src = Path(cfg.restem.estep_from)
    try:
        manifest = read_manifest(src)
    except RunError as e:
        raise RunError(f"restem.estep_from {e}") from None
    if manifest.get("command") != "train":
        raise RunError(f"restem.estep_from {src}: is a '{manifest.get('command')}' run, not a 'train' run")
    saved = load_yaml(src / "config.yaml")
    from_dict(RunConfig, saved, str(src / "config.yaml"))  # a readable config, or a clear error
    if diff := estep_differences(to_dict(cfg), saved):
        raise ConfigError(f"restem.estep_from {src}: its round-1 E-step was made with other settings "
                          f"({', '.join(diff)}); only the M-step, rounds, executor and threads may differ")
    if data_sha is None or manifest.get("data", {}).get("sha256") != data_sha:
        raise RunError(f"restem.estep_from {src}: was run on another data file (its sha256 "
                       f"{manifest.get('data', {}).get('sha256')}, this run's {data_sha})")


def train(cfg: RunConfig, argv: list[str], passages: list[K.Passage] | None = None, data_sha: str | None = None,
          command: str = "train") -> Path:
    """`seal train`: load the passages and the model, open (or resume) the run folder, and run
    `restem.rounds` ReSTEM rounds of KnowledgeTask (seal/engine/restem.py). Returns the run folder."""
    from seal.engine.restem import open_backends, run_rounds, take_estep
    from seal.knowledge.table import prepare_passages
    from seal.runs import open_run
    from seal.training.lora import check_targets
    from seal.training.models import check_model_name, load_model, uses_chat

    if cfg.selfedit.template == "none":
        raise ConfigError("seal train needs a self-edit template other than 'none'")
    if cfg.selfedit.pool != 1:
        raise ConfigError("selfedit.pool must be 1 for seal train: ReSTEM rewards each self-edit's own update "
                          "(pool several in seal evaluate)")
    if passages is None:
        passages, counts = K.load_selection(cfg.data, cfg.seed, require_questions=cfg.restem.reward_questions != "probes")
        data_sha = K.file_sha256(cfg.data.path)
    else:
        counts = {"passages": len(passages), "questions": sum(len(p.questions) for p in passages)}
    check_model_name(cfg.model.name)
    if cfg.restem.estep_from:
        check_estep_source(cfg, data_sha)
    run = open_run(command, cfg, argv, cfg.data.path, data_sha, len(passages), grows=("restem.rounds",))
    print(f"run folder: {run.path}" + (" (resumed)" if run.resumed else ""))
    if cfg.restem.estep_from and (taken := take_estep(Path(cfg.restem.estep_from), run.path, KnowledgeTask.job_file,
                                                      ("probes.jsonl",))):
        run.log("estep_from", src=cfg.restem.estep_from, files=taken)
        print(f"round 1: E-step taken from {cfg.restem.estep_from} ({len(taken)} files)")
    base, tok = load_model(cfg.model)
    chat = uses_chat(tok, cfg.model)
    check_targets(base, cfg.restem.sft_lora, "restem.sft_lora.targets")  # before a round's E-step, not after it
    passages = prepare_passages(cfg, base, tok, chat, passages, counts, cfg.data.path or "passages")
    held_apart(passages, cfg, cfg.restem.generator_check)  # refused before any round when the data is too small
    if cfg.restem.passages_per_round > len(passages):
        print(f"restem.passages_per_round {cfg.restem.passages_per_round} > {len(passages)} passages: "
              f"each round uses all {len(passages)}")
    run.log("data", **{k: v for k, v in counts.items() if isinstance(v, int)})
    with open_backends(cfg, cfg.restem.sft_processes) as backends:
        run_rounds(KnowledgeTask(cfg, passages), run, base, tok, chat, cfg.model, cfg.restem.rounds, cfg.seed,
                   "unchanged (no self-edit earned a positive reward)", backends, data=counts)
    return run.path
