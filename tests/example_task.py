"""A third domain in one module, with no engine change: invented words (an example seal Task).

    context   an invented word and what it means ("blick": "a small blue stone used as money")
    self-edit sentences that use the word, one per line (`PROMPT`)
    job       a LoRA on the sentences of one self-edit (seal.training.inner_loop.train_adapters)
    check     the mean log-probability of the meaning after "<word> means" (nothing else in view)
    reward    its gain over the unadapted model
    filter    the best self-edit per word if its reward is positive (the paper's filter)
    M-step    SFT on (prompt -> self-edit), loss on the self-edit
    table     no adaptation vs each source's self-edits: mean log-prob over words, 95% bootstrap

`seal.engine.restem.run_rounds(WordsTask(cfg, words), run, ...)` trains it and
`seal.engine.table.evaluate_task(WordsTask(cfg, words), run, ...)` tables it, exactly as they run
knowledge incorporation and ARC (tests/unit/test_example_task.py does both on the tiny model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seal.config import InnerLoopConfig
from seal.engine.jobs import job_seed
from seal.engine.task import Plan, Sampling, Session
from seal.stats import bootstrap_mean
from seal.training import lora
from seal.training.inner_loop import TrainExample, answer_logprobs, train_adapters
from seal.training.models import format_prompt

PROMPT = "Write three sentences that use the word '{word}', which means {meaning}. One sentence per line."


@dataclass
class Word:
    id: str
    """The word itself."""
    meaning: str


@dataclass
class WordsConfig:
    """Every setting of the example (what seal.runs saves as the run's config.yaml)."""

    out: str = ""
    seed: int = 0
    threads: int = 0
    k: int = 2
    """Self-edits per word in a ReSTEM round."""
    max_new_tokens: int = 24
    inner: InnerLoopConfig = field(default_factory=lambda: InnerLoopConfig(epochs=2, lr=1e-2, parallel_adapters=4))
    sft: InnerLoopConfig = field(default_factory=lambda: InnerLoopConfig(epochs=1, loss_on="completion", steps="packed",
                                                                         parallel_adapters=1))
    bootstrap: int = 200


@dataclass
class WordJob:
    key: str
    group: str
    word: Word
    examples: list[TrainExample]
    seed: int


def meaning_logprob(model, tok, words: list[Word], rows: list[int]) -> list[float]:
    """The check: log-prob per token of each word's meaning after "<word> means", under adapter
    rows[i] (-1: the unadapted model)."""
    return answer_logprobs(model, tok, [f"{w.id} means" for w in words], [w.meaning for w in words], rows)


@dataclass
class WordLoop:
    """The inner loop: one LoRA per job, trained side by side, then the check."""

    inner: InnerLoopConfig

    @property
    def adapters_per_batch(self) -> int:
        return self.inner.parallel_adapters

    def run_batch(self, model, tok, gen, chat, batch: list[WordJob], done=frozenset()) -> list[tuple[WordJob, dict]]:
        lora.attach(model, self.inner.lora, len(batch))
        try:
            train_adapters(model, tok, [j.examples for j in batch], self.inner, [j.seed for j in batch])
            lps = meaning_logprob(model, tok, [j.word for j in batch], list(range(len(batch))))
        finally:
            lora.detach(model)
        return [(j, {"key": j.key, "logprob": lp}) for j, lp in zip(batch, lps) if j.key not in done]


def sentences(completion: str) -> list[str]:
    return [line.strip() for line in completion.split("\n") if line.strip()]


@dataclass
class WordsTask:
    """seal.engine.task.TableTask for invented words."""

    cfg: WordsConfig
    words: list[Word]

    name = "words"
    unit = "word"
    id_field = "word"
    job_file = "rewards.jsonl"
    selfedit_file = None
    keep = "best-positive"
    keep_fraction = 1.0
    baseline_file = "base.jsonl"
    table_job_file = "results.jsonl"

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.cfg.k, self.cfg.max_new_tokens, temperature=1.0, top_p=0.95, batch_size=16)

    @property
    def inner_loop(self) -> WordLoop:
        return WordLoop(self.cfg.inner)

    table_inner_loop = inner_loop

    @property
    def sft_config(self) -> InnerLoopConfig:
        return self.cfg.sft

    def round_contexts(self, rnd: int, session: Session) -> list[Word]:
        return self.words

    def selfedit_input(self, ctx: Word, tok, chat: bool) -> str:
        return format_prompt(tok, PROMPT.format(word=ctx.id, meaning=ctx.meaning), chat)

    def reward_baseline(self, session: Session, contexts: list[Word]) -> dict[str, dict]:
        lps = meaning_logprob(session.model, session.tok, contexts, [-1] * len(contexts))
        return {w.id: {"logprob": lp} for w, lp in zip(contexts, lps)}

    def _job(self, key: str, group: str, word: Word, completion: str, seed: int) -> WordJob:
        return WordJob(key, group, word, [TrainExample(s) for s in sentences(completion)], seed)

    def plan(self, rnd: int, contexts: list[Word], samples: dict[str, list[str]], tok, chat: bool) -> Plan:
        jobs, scored_by, empty = [], {}, []
        for w in contexts:
            for j, c in enumerate(samples[w.id]):
                if not sentences(c):
                    empty.append((w.id, j))
                    continue
                jobs.append(self._job(f"{w.id}/{j}", w.id, w, c, job_seed(self.cfg.seed, "inner", rnd, w.id)))
                scored_by[(w.id, j)] = [jobs[-1].key]
        return Plan(jobs, scored_by, empty, "are empty; they get no reward")

    def job_record(self, rnd: int, job: WordJob, result: dict, baseline: dict[str, dict]) -> dict:
        word, j = job.key.split("/")
        return {"round": rnd, "word": word, "sample": int(j), "logprob": result["logprob"],
                "reward": result["logprob"] - baseline[word]["logprob"]}

    def record_key(self, record: dict) -> str:
        return f"{record['word']}/{record['sample']}"

    def reward(self, records: list[dict]) -> float | None:
        return records[0]["reward"] if records else None

    def sft_example(self, ctx: Word, completion: str, tok, chat: bool) -> TrainExample:
        return TrainExample(completion, self.selfedit_input(ctx, tok, chat))

    def round_stats(self, rnd, contexts, samples, plan, records, rewards, kept, info, tok) -> dict:
        return {}

    def round_notes(self, rnd: int, info: dict) -> list[str]:
        return []

    # ------------------------------------------------------------------ the table

    def table_baseline(self, session: Session, contexts: list[Word], on_result, progress) -> None:
        for w, rec in self.reward_baseline(session, contexts).items():
            on_result(w, rec)
        progress(len(contexts))

    def table_plan(self, contexts, selfedits, tok, chat):
        jobs = [self._job(f"{source}/{w.id}/{i}", source, w, c, job_seed(self.cfg.seed, "table", w.id))
                for source, by_word in selfedits.items() for w in contexts
                for i, c in enumerate(by_word.get(w.id, [])) if sentences(c)]
        return jobs, list(selfedits)

    def table_record(self, job: WordJob, result: dict) -> dict:
        return {**result, "source": job.group, "word": job.word.id}

    def summarize_table(self, contexts, baseline, details, records) -> dict:
        rows = {"no-adaptation": {w.id: [baseline[w.id]["logprob"]] for w in contexts}}
        for source in details:
            rows[source] = {}
            for r in records.values():
                if r["source"] == source:
                    rows[source].setdefault(r["word"], []).append(r["logprob"])
        conditions = {}
        for cond, by_word in rows.items():
            means = [sum(v) / len(v) for v in by_word.values()]
            conditions[cond] = {"n_words": len(means),
                                "metrics": {"logprob": bootstrap_mean(means, self.cfg.bootstrap, self.cfg.seed)}}
        return {"order": list(rows), "conditions": conditions}

    def table_files(self, contexts, baseline, details, records) -> dict[str, list[dict]]:
        return {}

    def print_table(self, summary: dict) -> None:
        for cond in summary["order"]:
            m = summary["conditions"][cond]["metrics"]["logprob"]
            print(f"{cond:<16}{m['mean']:>8.3f} [{m['lo']:.3f}, {m['hi']:.3f}]")
