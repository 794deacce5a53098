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

from .config import RunConfig
from .engine import job_seed
from .evaluation import evaluate_task
from .executors import open_executor
from .generation import HFGenerator
from .lora import check_targets
from .models import check_model_name, context_window, load_model, uses_chat
from .runs import open_run
from .stats import bootstrap_mean, paired_bootstrap, spearman, spearman_undefined
from .task import Session
from .tasks import knowledge as K


def load_external(path: str, passages: list[K.Passage]) -> dict[str, list[str]]:
    """External self-edits by passage id (refused when they cover none of `passages`)."""
    try:
        ext, _ = K.load_passages(path)
    except K.DataError as e:
        raise K.DataError(f"{e} (data.completions)") from None
    by_id = {p.id: p.completions for p in ext if p.completions}
    if not any(p.id in by_id for p in passages):
        raise K.DataError(f"{path}: no passage of the evaluation data has 'completions' here "
                          "(passages are matched by title and context)")
    return by_id


def external_coverage(path: str, by_id: dict[str, list[str]], passages: list[K.Passage], n_selfedits: int) -> dict:
    """How well external self-edits cover the passages a run uses (printed at the start and
    stored in summary.json: the `external` row is computed on the covered ones only)."""
    comps = [c for p in passages for c in by_id.get(p.id, [])[:n_selfedits]]
    coverage = {"file": path, "passages": len(passages),
                "covered": sum(p.id in by_id for p in passages),
                "missing": [p.title or p.id for p in passages if p.id not in by_id],
                "fewer_than_eval_selfedits": sum(0 < len(by_id.get(p.id, [])) < n_selfedits for p in passages),
                "empty_completions": sum(not c.strip() for c in comps)}
    return coverage


def describe_external(cov: dict) -> str:
    text = f"external self-edits ({cov['file']}): {cov['covered']} of {cov['passages']} passages"
    if cov["missing"]:
        text += f"; the 'external' row leaves out the {len(cov['missing'])} without completions"
    if cov["fewer_than_eval_selfedits"]:
        text += f"; {cov['fewer_than_eval_selfedits']} passage(s) have fewer completions than eval.selfedits"
    if cov["empty_completions"]:
        text += f"; {cov['empty_completions']} completion(s) are empty (trained as passage-only updates)"
    return text


def check_models(cfg: RunConfig) -> None:
    """Before the run folder is made: every model named exists on disk or can be fetched."""
    for name in [cfg.model.name] + other_models(cfg):
        check_model_name(name)


def prepare_passages(cfg: RunConfig, model, tok, chat: bool, passages, counts: dict, where: str) -> list[K.Passage]:
    """Once the model is loaded: refuse LoRA targets it lacks, leave out (and count) passages too
    long for its context window, and print what the data gave and what was left out."""
    check_targets(model, cfg.inner.lora, "inner.lora.targets")
    passages, too_long = K.fit_to_context(passages, tok, context_window(model), cfg.selfedit, chat, where)
    counts["too_long"] = len(too_long)
    counts["too_long_titles"] = too_long
    print(f"data: {K.describe_counts(counts)}" + (f"; using {len(passages)}" if counts.get("used") else ""))
    if too_long:
        print(f"  too long (left out): {', '.join(too_long[:10])}" + (" ..." if len(too_long) > 10 else ""))
    return passages


def other_models(cfg: RunConfig) -> list[str]:
    """The other self-edit writers named by --selfedit.model (comma-separated for several)."""
    names = [m.strip() for m in cfg.selfedit.model.split(",") if m.strip()]
    return [m for m in dict.fromkeys(names) if m != cfg.model.name]


def _sources(cfg: RunConfig) -> list[str]:
    """Which models write self-edits: 'own' and, when given, each --selfedit.model ('other', or
    'other:<i>' when there are several)."""
    others = other_models(cfg)
    return ["own"] + (["other"] if len(others) == 1 else [f"other:{i}" for i in range(len(others))])


def evaluate(cfg: RunConfig, argv: list[str], command: str = "evaluate", passages=None, data_sha=None) -> Path:
    """`seal evaluate`: the table over `passages` (by default the selection of `--data`), run by
    the evaluation skeleton (seal/evaluation.py) over KnowledgeTask. Returns the run folder."""
    from .tasks.knowledge_task import KnowledgeTask

    counts: dict = {}
    if passages is None:
        passages, counts = K.load_selection(cfg.data, cfg.seed)
        data_sha = K.file_sha256(cfg.data.path)
    else:
        counts = {"passages": len(passages), "questions": sum(len(p.questions) for p in passages)}
    check_models(cfg)
    external = load_external(cfg.data.completions, passages) if cfg.data.completions else {}
    run = open_run(command, cfg, argv, cfg.data.path, data_sha, len(passages))
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
    sources: dict = {s: None if s == "own" else _other_path(s, cfg) for s in _sources(cfg)}
    if external:
        sources["external"] = {pid: c[: cfg.eval.selfedits] for pid, c in external.items()}
    with open_executor(cfg.executor, cfg.model, cfg.threads) as executor:
        evaluate_task(KnowledgeTask(cfg, passages), run, Session(run.path, model, tok, chat, HFGenerator(model, tok),
                                                                 executor),
                      cfg.model, passages, sources, cfg.eval.selfedits, cfg.seed, started=t_start, extra=extra)
    return run.path


def table_plan(cfg: RunConfig, passages, selfedits: dict[str, dict[str, list[str]]]) -> tuple[list[K.Job], dict]:
    """The table's jobs (`passage` and one condition per source of self-edits) and what the
    summary needs: (conditions, self-edits that parsed to nothing per condition)."""
    conditions = ["passage"] + [_cond_name(s, cfg) for s in selfedits]
    jobs, skipped = _make_jobs(cfg, passages, selfedits)
    for cond, n in skipped.items():
        print(f"{cond}: {n} self-edit(s) parse to no training item ({cfg.selfedit.template} template); "
              "each is graded as a passage-only update and counted in summary.json (skipped_empty_selfedits)")
    return jobs, {"conditions": conditions, "skipped": skipped}


def _other_path(source: str, cfg: RunConfig) -> str:
    others = other_models(cfg)
    return others[0] if source == "other" else others[int(source.split(":")[1])]


def _cond_name(source: str, cfg: RunConfig) -> str:
    if source in ("own", "external"):
        return {"own": "self-edits", "external": "external"}[source]
    other = Path(_other_path(source, cfg))
    label = other.parent.name if other.name == "model" else other.name  # rounds/round_2/model -> round_2
    return "self-edits:" + label


def _make_jobs(cfg: RunConfig, passages, selfedits) -> tuple[list[K.Job], dict]:
    skipped: dict[str, int] = {}
    jobs: list[K.Job] = []
    if cfg.eval.mode == "single":
        for p in passages:
            jobs.append(K.Job(f"passage/{p.id}/0", [p.id], K.training_examples(p, [], True), p.questions,
                              job_seed(cfg.seed, p.id), group="passage"))
            for source, comps in selfedits.items():
                cond = _cond_name(source, cfg)
                for j, c in enumerate(comps.get(p.id, [])[: cfg.eval.selfedits]):
                    items = K.parse_selfedit(c, cfg.selfedit.template)
                    if not items and cfg.selfedit.template != "none":
                        skipped[cond] = skipped.get(cond, 0) + 1  # counted; graded as passage-only
                    jobs.append(K.Job(f"{cond}/{p.id}/{j}", [p.id],
                                      K.training_examples(p, items, cfg.selfedit.include_passage),
                                      p.questions, job_seed(cfg.seed, p.id), group=cond))
    else:  # cpt: one update on everything
        allq = [q for p in passages for q in p.questions]
        ids = [p.id for p in passages]
        jobs.append(K.Job("passage/all/0", ids, [e for p in passages for e in K.training_examples(p, [], True)],
                          allq, job_seed(cfg.seed, "cpt"), group="passage"))
        for source, comps in selfedits.items():
            cond = _cond_name(source, cfg)
            for j in range(cfg.eval.selfedits):
                ex = []
                for p in passages:
                    c = comps.get(p.id, [])
                    items = K.parse_selfedit(c[j], cfg.selfedit.template) if j < len(c) else []
                    ex += K.training_examples(p, items, cfg.selfedit.include_passage)
                jobs.append(K.Job(f"{cond}/all/{j}", ids, ex, allq, job_seed(cfg.seed, "cpt"), group=cond))
    return jobs, skipped


def per_passage(cfg, passages, base, results, condition) -> dict[str, list[dict]]:
    """Per passage, the per-question grades of `condition`, averaged over its self-edits."""
    if condition == "no-adaptation":
        return {p.id: base[p.id] for p in passages}
    runs: dict[str, list[list[dict]]] = {}
    for r in results.values():
        if r["condition"] != condition:
            continue
        if r["passage_id"] == "all":  # cpt: split the questions back by passage
            i = 0
            for p in passages:
                runs.setdefault(p.id, []).append(r["questions"][i : i + len(p.questions)])
                i += len(p.questions)
        else:
            runs.setdefault(r["passage_id"], []).append(r["questions"])
    out = {}
    for pid, reps in runs.items():
        qs = []
        for qi in range(len(reps[0])):
            rec = {}
            for m in K.METRICS:
                vals = [rep[qi][m] for rep in reps if m in rep[qi]]
                if vals:
                    rec[m] = sum(vals) / len(vals)
            qs.append(rec)
        out[pid] = qs
    return out


def summarize(cfg, passages, base, results, conditions, skipped) -> dict:
    out = {"mode": cfg.eval.mode, "reward_metric": cfg.eval.reward, "seed": cfg.seed,
           "weighting": "mean over passages of each passage's mean over its questions (as the paper)", "order": [],
           "conditions": {}, "gain_vs_no_adaptation": {}, "skipped_empty_selfedits": skipped}
    base_pp = per_passage(cfg, passages, base, results, "no-adaptation")
    for cond in conditions:
        pp = per_passage(cfg, passages, base, results, cond)
        if not pp:
            continue
        ids = [p.id for p in passages if p.id in pp]
        metrics = {}
        for m in K.METRICS:
            # one weighting everywhere (the paper's): the mean of per-passage means, so the rows
            # subtract exactly to the paired gains below
            means = [K.mean_metrics(pp[i]).get(m) for i in ids]
            if means and all(v is not None for v in means):
                metrics[m] = bootstrap_mean(means, cfg.eval.bootstrap, cfg.seed)
        out["order"].append(cond)
        out["conditions"][cond] = {"n_passages": len(ids), "n_questions": sum(len(pp[i]) for i in ids),
                                   "metrics": metrics}
        if cond != "no-adaptation":
            gains = {}
            for m in metrics:
                a = [K.mean_metrics(pp[i])[m] for i in ids]
                b = [K.mean_metrics(base_pp[i])[m] for i in ids]
                gains[m] = paired_bootstrap(a, b, cfg.eval.bootstrap, cfg.seed)
            out["gain_vs_no_adaptation"][cond] = gains
    # other writers of self-edits (a ReSTEM round's model, external files) against the model's own
    own = per_passage(cfg, passages, base, results, "self-edits")
    for cond in out["order"]:
        if not (cond.startswith("self-edits:") or cond == "external") or not own:
            continue
        pp = per_passage(cfg, passages, base, results, cond)
        ids = [p.id for p in passages if p.id in pp and p.id in own]
        out.setdefault("gain_vs_own_selfedits", {})[cond] = {
            m: paired_bootstrap([K.mean_metrics(pp[i])[m] for i in ids],
                                [K.mean_metrics(own[i])[m] for i in ids], cfg.eval.bootstrap, cfg.seed)
            for m in out["conditions"][cond]["metrics"]}
    # how well the reward metric tracks accuracy, over every (passage, self-edit) update
    if cfg.eval.mode == "single" and cfg.eval.generate:
        base_mean = {pid: K.mean_metrics(q) for pid, q in base.items()}
        d = {m: [] for m in K.METRICS}
        for r in results.values():
            b = base_mean[r["passage_id"]]
            for m in K.METRICS:
                d[m].append(r["metrics"][m] - b[m])
        track = {"n_updates": len(d["logprob"])}
        for m in ("containment", "f1", "em"):
            key = f"spearman_logprob_gain_vs_{m}_gain"
            track[key] = spearman(d["logprob"], d[m])
            if track[key] is None:
                track.setdefault("undefined", {})[key] = spearman_undefined(d["logprob"], d[m])
        out["reward_tracking"] = track
    secs = [r["seconds"] for r in results.values()]
    if secs:
        out["seconds_per_update"] = {"mean": sum(secs) / len(secs), "n": len(secs),
                                     "train_mean": sum(r["train_seconds"] for r in results.values()) / len(secs),
                                     "tokens_mean": sum(r["train"]["tokens"] for r in results.values()) / len(secs)}
    return out


def passage_lines(passages, base, results) -> list[dict]:
    """passages.jsonl: per passage, the unadapted model's metrics and every update's."""
    return [{"passage_id": p.id, "title": p.title, "n_questions": len(p.questions),
             "no-adaptation": K.mean_metrics(base[p.id]),
             "updates": {r["key"]: r["metrics"] for r in results.values() if r["passage_id"] in (p.id,)}}
            for p in passages]


def print_table(summary: dict) -> None:
    metrics = [m for m in K.METRICS if any(m in c["metrics"] for c in summary["conditions"].values())]
    head = f"{'condition':<28}" + "".join(f"{m:>24}" for m in metrics) + f"{'passages':>10}"
    print(f"mean over passages [95% interval]; {summary.get('weighting', '')}")
    print(head)
    print("-" * len(head))
    n_max = max(c["n_passages"] for c in summary["conditions"].values())
    for cond in summary["order"]:
        c = summary["conditions"][cond]
        cells = ""
        for m in metrics:
            v = c["metrics"].get(m)
            cells += _cell(v, "")
        note = "" if c["n_passages"] == n_max else f"  (only {c['n_passages']} of {n_max} passages)"
        print(f"{cond:<28}{cells}{c['n_passages']:>10}{note}")
    for title, key in (("gain over no adaptation", "gain_vs_no_adaptation"),
                       ("gain over the model's own self-edits (paired)", "gain_vs_own_selfedits")):
        if summary.get(key):
            print(f"\n{title}")
            for cond, gains in summary[key].items():
                cells = "".join(_cell(gains.get(m), "+") for m in metrics)
                print(f"{cond:<28}{cells}")


def _cell(v: dict | None, sign: str) -> str:
    if not v:
        return " " * 24
    if v.get("mean") is None:
        return "n/a".rjust(24)
    return f"{v['mean']:>{sign}8.3f} [{v['lo']:{sign}.3f},{v['hi']:{sign}.3f}]".rjust(24)


def plain_summary(summary: dict) -> str:
    """One plain sentence on what the table means, for the demo's closing line."""
    c = summary["conditions"]

    def acc(cond):
        return c[cond]["metrics"]["containment"]["mean"] if cond in c and "containment" in c[cond]["metrics"] else None

    base, passage, own = acc("no-adaptation"), acc("passage"), acc("self-edits")
    if base is None or passage is None:
        return ""
    text = (f"Before any update the model answered {base:.0%} of the questions right (the gold answer appears in its "
            f"reply); after training on the passage alone it answered {passage:.0%}")
    if own is not None:
        text += f", and after training on the passage plus its own self-edits {own:.0%}"
    text += "."
    for cond, g in (summary.get("gain_vs_own_selfedits") or {}).items():
        lp, ct = g.get("logprob"), g.get("containment")
        if lp and ct:
            verdict = ("taught more than" if lp["lo"] > 0 else "taught less than" if lp["hi"] < 0
                       else "cannot yet be told apart from")
            text += (f" Self-edits written by the {cond.split(':', 1)[-1]} model {verdict} the base model's own "
                     f"(gold-answer log-prob {lp['mean']:+.2f} [{lp['lo']:+.2f}, {lp['hi']:+.2f}] per token, "
                     f"95% interval; accuracy {ct['mean']:+.0%} [{ct['lo']:+.0%}, {ct['hi']:+.0%}]).")
    return text
