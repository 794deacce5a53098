"""`seal evaluate`: the paper's knowledge-incorporation table (section 4.1, Table 2) on any
passages and model.

Conditions, each graded closed-book on the passage's questions:
  no-adaptation   the model as it is
  passage         LoRA on the passage alone
  self-edits      LoRA on the passage + the adapted model's own self-edits
  self-edits:<m>  ... + self-edits written by another model m (`--selfedit.model`, e.g. a
                  ReSTEM round's model), when given
  external        ... + self-edits read from a file (`--data.completions`, e.g. GPT-4.1's)

Mode `single` (the paper's single-passage setting) runs one update per passage and
self-edit; mode `cpt` (the paper's continued-pretraining setting) one update on all passages'
data, graded on all questions. Intervals are 95% percentile bootstraps over passages.
"""

from __future__ import annotations

import time
from pathlib import Path

from seal import knowledge as K
from seal.config import RunConfig
from seal.engine.executors import open_executor
from seal.engine.table import evaluate_task
from seal.engine.task import Session
from seal.knowledge.table import (
    _other_path,
    _sources,
    check_models,
    describe_external,
    external_coverage,
    load_external,
    prepare_passages,
)
from seal.runs import open_run, read_jsonl
from seal.training.generation import HFGenerator
from seal.training.models import load_model, uses_chat


def first_writer_name(run_dir: Path) -> str | None:
    """The first --selfedit.model's name in the table at `run_dir` as its self-edits were saved
    ('other' or 'other:0'; None when it has none yet): a table grown by more writers keeps it."""
    saved = {r.get("source") for r in read_jsonl(run_dir / "selfedits.jsonl")}
    return next((name for name in ("other", "other:0") if name in saved), None)


def evaluate(cfg: RunConfig, argv: list[str], command: str = "evaluate", passages=None, data_sha=None) -> Path:
    """`seal evaluate`: the table over `passages` (by default the selection of `--data`), run by
    the evaluation skeleton (seal/engine/table.py) over KnowledgeTask. Returns the run folder."""
    from seal.knowledge.task import KnowledgeTask

    counts: dict = {}
    if passages is None:
        passages, counts = K.load_selection(cfg.data, cfg.seed)
        data_sha = K.file_sha256(cfg.data.path)
    else:
        counts = {"passages": len(passages), "questions": sum(len(p.questions) for p in passages)}
    check_models(cfg)
    external = load_external(cfg.data.completions, passages) if cfg.data.completions else {}
    run = open_run(command, cfg, argv, cfg.data.path, data_sha, len(passages),
                   grows=("selfedit.model", "eval.controls"))
    print(f"run folder: {run.path}" + (" (resumed)" if run.resumed else ""))
    t_start = time.time()
    model, tok = load_model(cfg.model)
    chat = uses_chat(tok, cfg.model)
    passages = prepare_passages(cfg, model, tok, chat, passages, counts, cfg.data.path or "passages")
    extra: dict = {"data": counts}
    if external:
        extra["external"] = external_coverage(cfg.data.completions, external, passages, cfg.eval.selfedits)
        print(describe_external(extra["external"]))
    run.log("data", **{k: v for k, v in counts.items() if isinstance(v, int)})
    # which models write self-edits: the model itself and each --selfedit.model; then the file's
    sources: dict = {s: None if s == "own" else _other_path(s, cfg) for s in _sources(cfg, first_writer_name(run.path))}
    if external:
        sources["external"] = {pid: c[: cfg.eval.selfedits * cfg.selfedit.pool] for pid, c in external.items()}
    with open_executor(cfg.executor, cfg.model, cfg.threads) as executor:
        evaluate_task(KnowledgeTask(cfg, passages), run, Session(run.path, model, tok, chat, HFGenerator(model, tok),
                                                                 executor),
                      cfg.model, passages, sources, cfg.eval.selfedits * cfg.selfedit.pool, cfg.seed, started=t_start,
                      extra=extra)
    return run.path
