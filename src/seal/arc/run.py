"""Few-shot ARC with a real model: self-edit sampling, test-time training (TTT) and voting
(paper section 4.2). The model-free pieces live in data/grids/augment/selfedit/ttt.py.

For one task and one self-edit (a tool configuration, see selfedit.py):

    config  = parse_selfedit(SE)                      invalid -> no training (FALLBACK)
    D       = build_ttt_data(task demos, config)      leave-one-out tasks x augmentations
    theta'  = LoRA-SFT(theta, D; lr, epochs, loss on all tokens or on the output only)
    answers = greedy theta'(view_v(test input)) for the inference views, mapped back
    reward  = pass@2(vote(answers), gold)             1 if one of the 2 attempts is exact

Several TTT runs train together as adapters over one base model (seal.training.lora / seal.training.inner_loop);
`train_adapters` takes one InnerLoopConfig, so runs are grouped by (lr, epochs, loss_on).

Prompt format. Every ARC prompt (the self-edit prompt, each TTT sequence's prompt and each
inference prompt) goes through `seal.training.models.format_prompt(tok, text, chat)` with one `chat`
flag per model (`uses_chat`: the chat template of an instruct model unless
`--model.chat_template no`), so TTT trains on exactly the text inference later continues. The
answer is the grid, a newline and the end token, which is also the end of an assistant turn,
so a model stops after its grid. For SmolLM2 the wrapper costs ~30 tokens per sequence; the
token budget counts it.

Departures from the paper (beyond those of ttt.py and selfedit.py): the step cap `max_steps`
(CPU budget) lowers a self-edit's epochs instead of discarding the self-edit; a task with
several test inputs counts as solved only when all are; identical configurations of one task
share one TTT run (same seed, same data, so the same result), which the summary reports as
separate (task, self-edit) pairs.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import dataclass

from seal.arc.config import ArcConfig
from seal.arc.data import ArcDataError, ArcTask, load_tasks, task_to_json
from seal.arc.grids import answer_text, grid_to_text, task_prompt, token_ids
from seal.arc.selfedit import ParsedSelfEdit, SelfEditConfig, parse_selfedit, selfedit_prompt, validate_config
from seal.arc.ttt import build_ttt_data, inference_views, map_back, score, vote
from seal.config import InnerLoopConfig
from seal.engine.jobs import job_seed
from seal.training import lora
from seal.training.generation import HFGenerator
from seal.training.inner_loop import TrainExample, train_adapters
from seal.training.models import format_prompt

# ----------------------------------------------------------------------------- tasks


def task_tokens(task: ArcTask, tok, chat: bool) -> int:
    """Tokens of the task's longest prompt + answer + end token, as the model sees them."""
    best = 0
    for pair in task.test:
        answer = pair.output if pair.output is not None else pair.input
        prompt = format_prompt(tok, task_prompt(task.train, pair.input), chat)
        best = max(best, len(token_ids(tok, prompt)) + len(token_ids(tok, answer_text(answer))) + 1)
    return best


def tasks_sha256(tasks: list[ArcTask]) -> str:
    blob = json.dumps([[t.id, task_to_json(t)] for t in tasks], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_candidates(cfg: ArcConfig) -> tuple[list[ArcTask], int]:
    """The spec's tasks minus those of `exclude` (strict: a bad file or task raises
    ArcDataError naming it), and how many were loaded."""
    tasks = load_tasks(cfg.tasks)
    excluded = {t.id for t in load_tasks(cfg.exclude)} if cfg.exclude else set()
    return [t for t in tasks if t.id not in excluded], len(tasks)


def select_tasks(cfg: ArcConfig, tok, chat: bool, loaded: tuple[list[ArcTask], int] | None = None
                 ) -> tuple[list[ArcTask], dict]:
    """The candidates (see load_candidates) within the token budget, the first `limit` of them."""
    candidates, n_loaded = loaded or load_candidates(cfg)
    tokens = {t.id: task_tokens(t, tok, chat) for t in candidates}
    fit = [t for t in candidates if not cfg.max_task_tokens or tokens[t.id] <= cfg.max_task_tokens]
    chosen = fit[: cfg.limit] if cfg.limit else fit
    if not chosen:
        smallest = min(tokens.values(), default=0)
        raise ArcDataError(f"{cfg.tasks}: no task fits max_task_tokens={cfg.max_task_tokens} "
                           f"(the smallest of {len(candidates)} takes {smallest} tokens)")
    info = {"spec": cfg.tasks, "exclude": cfg.exclude, "n_loaded": n_loaded, "n_excluded": n_loaded - len(candidates),
            "max_task_tokens": cfg.max_task_tokens, "n_fit": len(fit), "n_over_budget": len(candidates) - len(fit),
            "n_chosen": len(chosen), "ids": [t.id for t in chosen], "tokens": {t.id: tokens[t.id] for t in chosen},
            "sha256": tasks_sha256(chosen)}
    return chosen, info


# ----------------------------------------------------------------------------- self-edits


def selfedit_text(task: ArcTask, tok, chat: bool, cfg: ArcConfig) -> str:
    return format_prompt(tok, selfedit_prompt(task, cfg.selfedit_demo_chars), chat)


def config_key(config: SelfEditConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))


def job_key(task: ArcTask, config: SelfEditConfig) -> str:
    """`<task id>/<hash of the configuration>`: one TTT run per distinct (task, configuration)."""
    return f"{task.id}/{hashlib.sha1(config_key(config).encode()).hexdigest()[:12]}"


def oracle_parsed(cfg: ArcConfig) -> list[ParsedSelfEdit]:
    return [validate_config(d) for d in cfg.oracle.configs()]


# ----------------------------------------------------------------------------- TTT jobs


@dataclass
class TTTJob:
    """One TTT run: an adapter trained on `examples`, then asked the task's test inputs."""

    key: str
    task: ArcTask
    config: SelfEditConfig
    examples: list[TrainExample]
    epochs: int
    """The self-edit's epochs, lowered when the step cap needs it."""
    capped: bool
    seed: int

    @property
    def group(self) -> tuple:
        """Jobs train together only with the same lr, epochs and loss (one InnerLoopConfig)."""
        return (self.config.learning_rate, self.epochs, self.config.loss_on)


def make_job(task: ArcTask, config: SelfEditConfig, tok, chat: bool, cfg: ArcConfig) -> TTTJob | None:
    """The TTT run of `config` on `task`, or None when it trains on nothing (the invalid-self-edit
    fallback, or a task too small for leave-one-out): then the unadapted model answers."""
    if not config.trains:
        return None
    key = job_key(task, config)
    seed = job_seed(cfg.seed, "ttt", key)
    overhead = len(token_ids(tok, format_prompt(tok, "", chat))) + 1

    def keep(ex) -> bool:
        return overhead + len(token_ids(tok, ex.prompt + ex.completion)) <= cfg.max_seq_len

    data = build_ttt_data(task, config, random.Random(seed), cfg.max_examples, leave_two=cfg.leave_two_out,
                          permutations=cfg.permutations, keep=keep)
    if not data:
        return None
    epochs, capped = config.num_train_epochs, False
    per_epoch = math.ceil(len(data) / cfg.batch_size)
    if cfg.max_steps and epochs * per_epoch > cfg.max_steps:
        capped = True
        epochs = max(1, cfg.max_steps // per_epoch)
        data = data[: cfg.max_steps * cfg.batch_size]
    examples = [TrainExample(completion=ex.completion, prompt=format_prompt(tok, ex.prompt, chat)) for ex in data]
    return TTTJob(key, task, config, examples, epochs, capped, seed)


def inner_config(job: TTTJob, cfg: ArcConfig) -> InnerLoopConfig:
    return InnerLoopConfig(lora=cfg.lora, lr=job.config.learning_rate, epochs=job.epochs, steps="packed",
                           batch_size=cfg.batch_size,
                           max_seq_len=cfg.max_seq_len, dtype=cfg.dtype, max_grad_norm=cfg.max_grad_norm,
                           parallel_adapters=cfg.parallel_adapters, loss_on=job.config.loss_on)


def train_group(model, tok, jobs: list[TTTJob], cfg: ArcConfig) -> dict:
    """TTT for `jobs` on the adapters already attached (`lora.attach(model, cfg.lora, len(jobs))`);
    adapter i is job i's. The base weights are not touched."""
    return train_adapters(model, tok, [j.examples for j in jobs], inner_config(jobs[0], cfg), [j.seed for j in jobs])


# ----------------------------------------------------------------------------- inference


def answer_cap(task: ArcTask, tok, cfg: ArcConfig) -> int:
    """Tokens an answer may take: twice the longest demonstration output or test input + 8."""
    grids = [p.output for p in task.train if p.output is not None] + [p.input for p in task.test]
    longest = max(len(token_ids(tok, answer_text(g))) for g in grids)
    return min(cfg.max_answer_tokens, 2 * longest + 8)


def predict(model, tok, chat: bool, task: ArcTask, row: int, cfg: ArcConfig) -> dict:
    """Answer every test input under `cfg.views` views with adapter `row` (-1: none), map the
    answers back, vote to 2 attempts and score pass@2. The views depend only on the seed and
    task, so every condition is asked the same prompts."""
    views_per_test, prompts = [], []
    for ti in range(len(task.test)):
        views = inference_views(task, cfg.views, random.Random(job_seed(cfg.seed, "views", task.id, ti)), ti)
        views_per_test.append(views)
        prompts += [format_prompt(tok, p, chat) for _, p in views]
    outs = HFGenerator(model, tok).generate(prompts, temperature=0.0, max_new_tokens=answer_cap(task, tok, cfg),
                                            rows=None if row < 0 else [row] * len(prompts),
                                            batch_size=cfg.infer_batch_size)
    answers = [o[0] for o in outs]
    tests, i = [], 0
    for pair, views in zip(task.test, views_per_test):
        mine = answers[i : i + len(views)]
        i += len(views)
        preds = map_back(views, mine)
        attempts = vote(preds, 2)
        tests.append({"solved": score(attempts, pair.output), "attempts": [grid_to_text(a) for a in attempts],
                      "n_parsed": sum(p is not None for p in preds), "answers": [a[:300] for a in mine]})
    return {"solved": int(all(t["solved"] for t in tests)), "tests": tests}


def run_in_context(model, tok, chat: bool, tasks: list[ArcTask], cfg: ArcConfig, on_result, done=frozenset(),
                   progress=None) -> None:
    """The unadapted model's answers (in-context only); also what invalid self-edits get."""
    for task in tasks:
        if task.id in done:
            continue
        t0 = time.time()
        pred = predict(model, tok, chat, task, -1, cfg)
        on_result(task, {"task_id": task.id, **pred, "seconds": time.time() - t0})
        if progress is not None:
            progress(1)


@dataclass
class TTTInnerLoop:
    """The ARC inner loop (seal.engine.task.InnerLoop): test-time training of one adapter per TTTJob
    (jobs of one lr/epochs/loss group side by side, `cfg.parallel_adapters` at a time), then
    pass@2 of each adapted model on its task's test inputs."""

    cfg: ArcConfig

    @property
    def adapters_per_batch(self) -> int:
        return self.cfg.parallel_adapters

    def run_batch(self, model, tok, gen, chat: bool, batch: list[TTTJob], done=frozenset()) -> list[tuple[TTTJob, dict]]:
        return train_and_predict(model, tok, chat, batch, self.cfg, done)


def train_and_predict(model, tok, chat: bool, group: list[TTTJob], cfg: ArcConfig, done=frozenset()
                      ) -> list[tuple[TTTJob, dict]]:
    """TTT for `group` (one batch of TTTInnerLoop) and the predictions of the jobs not in
    `done`: (job, record) for each of those."""
    t0 = time.time()
    lora.attach(model, cfg.lora, len(group))
    try:
        stats = train_group(model, tok, group, cfg)
        train_s = (time.time() - t0) / len(group)  # wall time of the group, shared equally
        preds, infer_s = [], []
        for i, job in enumerate(group):
            t1 = time.time()
            preds.append(predict(model, tok, chat, job.task, i, cfg) if job.key not in done else None)
            infer_s.append(time.time() - t1)
    finally:
        lora.detach(model)
    return [(job, {
        "key": job.key, "task_id": job.task.id, "config": job.config.to_dict(), "epochs_run": job.epochs,
        "capped": job.capped, "seed": job.seed, "solved": preds[i]["solved"], "tests": preds[i]["tests"],
        "train": {"steps": math.ceil(stats["examples"][i] / cfg.batch_size) * job.epochs,
                  "tokens": stats["tokens"][i], "examples": stats["examples"][i],
                  "final_loss": stats["final_loss"][i]},
        "seconds": train_s + infer_s[i], "train_seconds": train_s, "infer_seconds": infer_s[i]})
        for i, job in enumerate(group) if job.key not in done]


# ----------------------------------------------------------------------------- resolving self-edits


@dataclass
class Attempt:
    """One (task, self-edit) pair of a condition and where its result comes from."""

    task_id: str
    index: int
    parsed: ParsedSelfEdit
    job_key: str | None
    """The TTT run that answers it; None: the unadapted model answers (in-context result)."""


def plan(tasks: list[ArcTask], sources: dict[str, dict[str, list[str]] | list[ParsedSelfEdit]], tok, chat: bool,
         cfg: ArcConfig) -> tuple[dict[str, list[Attempt]], list[TTTJob]]:
    """Attempts per condition and the unique TTT jobs they need, in a fixed order (task by
    task, then condition by condition). A source is either sampled completions by task id or
    one list of configurations applied to every task (the oracle)."""
    attempts: dict[str, list[Attempt]] = {name: [] for name in sources}
    jobs: dict[str, TTTJob | None] = {}
    for task in tasks:
        for name, src in sources.items():
            parsed = [parse_selfedit(c) for c in src.get(task.id, [])] if isinstance(src, dict) else list(src)
            for i, p in enumerate(parsed):
                key = job_key(task, p.config)
                if key not in jobs:
                    jobs[key] = make_job(task, p.config, tok, chat, cfg)
                attempts[name].append(Attempt(task.id, i, p, key if jobs[key] is not None else None))
    return attempts, [j for j in jobs.values() if j is not None]


def open_task_run(cfg, argv: list[str], command: str):
    """Load and filter the tasks, load the model, open (or resume) the run folder.

    A bad task spec fails before the model loads. Returns (run, model, tok, chat, tasks, info)."""
    from seal.runs import atomic_write_json, open_run
    from seal.training.lora import check_targets
    from seal.training.models import check_model_name, load_model, uses_chat

    loaded = load_candidates(cfg)
    for name in [cfg.model.name] + ([cfg.rl_model] if getattr(cfg, "rl_model", "") else []):
        check_model_name(name)
    model, tok = load_model(cfg.model)
    check_targets(model, cfg.lora, "lora.targets")
    check_targets(model, cfg.restem.sft_lora, "restem.sft_lora.targets")
    chat = uses_chat(tok, cfg.model)
    tasks, info = select_tasks(cfg, tok, chat, loaded)
    run = open_run(command, cfg, argv, cfg.tasks, info["sha256"], len(tasks))
    print(f"run folder: {run.path}" + (" (resumed)" if run.resumed else ""))
    print(f"tasks: {info['n_chosen']} chosen, {info['n_fit']} of {info['n_loaded'] - info['n_excluded']} fit "
          f"max_task_tokens={cfg.max_task_tokens}")
    atomic_write_json(run.path / "tasks.json", {**info, "chat_template": chat})
    return run, model, tok, chat, tasks, info
