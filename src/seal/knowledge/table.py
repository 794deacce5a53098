"""The knowledge-incorporation table's pieces (paper section 4.1, Table 2), over KnowledgeTask:
which rows a table has (`table_plan`: passage-only, one row per writer of self-edits, and each
self-edit row's compute-matched controls), how a row is summarized (`summarize`: mean of
per-passage means with bootstrap intervals, paired gains over no adaptation, passage-only, the
controls and the model's own self-edits), and how it is printed and put in words
(`print_table`, `plain_summary`). `seal evaluate` (seal/knowledge/evaluate.py) runs it.
"""

from __future__ import annotations

from pathlib import Path

from seal import knowledge as K
from seal.config import ConfigError, RunConfig
from seal.engine.jobs import job_seed
from seal.rows import control_kind, control_name
from seal.stats import bootstrap_mean, interval_sign, paired_bootstrap, spearman, spearman_undefined
from seal.training.inner_loop import tokenize_examples
from seal.training.lora import check_targets
from seal.training.models import check_model_name, context_window


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
    """Before the run folder is made: every model named exists on disk or can be fetched, and
    each writer can have rows of its own (`writer_labels`)."""
    for name in [cfg.model.name] + other_models(cfg):
        check_model_name(name)
    writer_labels(other_models(cfg))


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


def _sources(cfg: RunConfig, first: str | None = None) -> list[str]:
    """Which models write self-edits: 'own' and, when given, each --selfedit.model: 'other' when
    there is one, 'other:<i>' when there are several (the name also names the sampling seed of
    its self-edits). `first`: the first writer's name in a finished table grown by more writers
    ('other' when it had one), so that adding a writer renames nothing."""
    others = other_models(cfg)
    first = first or ("other" if len(others) == 1 else "other:0")
    return ["own"] + [first if i == 0 else f"other:{i}" for i in range(len(others))]


def table_plan(cfg: RunConfig, passages, selfedits: dict[str, dict[str, list[str]]], tok=None) -> tuple[list[K.Job], dict]:
    """The table's jobs (`passage`, one condition per source of self-edits and, in mode single,
    each source's compute-matched controls, `eval.controls`) and what the summary needs:
    (conditions, self-edits that parsed to nothing per condition, each control's self-edit
    condition). `tok` counts tokens for the `tokens` control."""
    conditions = ["passage"]
    for s in selfedits:
        cond = _cond_name(s, cfg)
        conditions.append(cond)
        if cfg.eval.mode == "single":
            conditions += [n for c in cfg.eval.controls if (n := control_name(c, cond)) not in conditions]
    jobs, skipped = _make_jobs(cfg, passages, selfedits, tok)
    for cond, n in skipped.items():
        print(f"{cond}: {n} self-edit(s) parse to no training item ({cfg.selfedit.template} template); "
              "each is graded as an update without it (the passage" +
              (f" and its {cfg.selfedit.permutations} permuted copies" if cfg.selfedit.permutations else "") +
              ") and counted in summary.json (skipped_empty_selfedits)")
    controls = [[control_name(c, cond), cond] for s in selfedits for cond in [_cond_name(s, cfg)]
                for c in cfg.eval.controls] if cfg.eval.mode == "single" else []
    return jobs, {"conditions": conditions, "skipped": skipped, "controls": controls}


def _make_jobs(cfg: RunConfig, passages, selfedits, tok=None) -> tuple[list[K.Job], dict]:
    skipped: dict[str, int] = {}
    jobs: list[K.Job] = []
    keys: set[str] = set()
    names = {source: _cond_name(source, cfg) for source in selfedits}
    if cfg.eval.mode == "single":
        for p in passages:
            seed = job_seed(cfg.seed, p.id)
            jobs.append(K.Job(f"passage/{p.id}/0", [p.id], K.training_examples(p, [], True), p.questions,
                              seed, group="passage"))
            for source, comps in selfedits.items():
                cond = names[source]
                pool = cfg.selfedit.pool
                mine = comps.get(p.id, [])[: cfg.eval.selfedits * pool]
                for j in range(-(-len(mine) // pool)):
                    items = K.pooled_items(mine[j * pool : (j + 1) * pool], cfg.selfedit.template)
                    if not items and cfg.selfedit.template != "none":
                        skipped[cond] = skipped.get(cond, 0) + 1  # counted; graded without the self-edit
                    permute = job_seed(cfg.seed, "permute", p.id, j)
                    examples = K.selfedit_examples(p, items, cfg.selfedit, permute)
                    jobs.append(K.Job(f"{cond}/{p.id}/{j}", [p.id], examples, p.questions, seed, group=cond))
                    for control in cfg.eval.controls:
                        name = control_name(control, cond)
                        if f"{name}/{p.id}/{j}" in keys:  # a control shared by every writer: once
                            continue
                        keys.add(f"{name}/{p.id}/{j}")
                        jobs.append(K.Job(f"{name}/{p.id}/{j}", [p.id],
                                          control_examples(control, examples, p, cfg, tok, permute), p.questions,
                                          seed, group=name))
    else:  # cpt: one update on everything
        allq = [q for p in passages for q in p.questions]
        ids = [p.id for p in passages]
        jobs.append(K.Job("passage/all/0", ids, [e for p in passages for e in K.training_examples(p, [], True)],
                          allq, job_seed(cfg.seed, "cpt"), group="passage"))
        for source, comps in selfedits.items():
            cond = names[source]
            for j in range(cfg.eval.selfedits):
                ex = []
                for p in passages:
                    c = comps.get(p.id, [])
                    pool = c[j * cfg.selfedit.pool : (j + 1) * cfg.selfedit.pool]
                    ex += K.selfedit_examples(p, K.pooled_items(pool, cfg.selfedit.template), cfg.selfedit,
                                              job_seed(cfg.seed, "permute", p.id, j))
                jobs.append(K.Job(f"{cond}/all/{j}", ids, ex, allq, job_seed(cfg.seed, "cpt"), group=cond))
    return jobs, skipped


def control_examples(control: str, examples: list, passage: K.Passage, cfg: RunConfig, tok, permute: int) -> list:
    """A control's training sequences for the self-edit update of `examples` (whose passage
    copies were permuted with seed `permute`): copies of the passage (`matched_copies`), or, for
    `permutations`, that update without the self-edit's items (the passage and the very same
    permuted copies)."""
    if control == "permutations":
        return K.selfedit_examples(passage, [], cfg.selfedit, permute)
    return [K.passage_example(passage)] * matched_copies(control, examples, passage, cfg, tok)


def matched_copies(control: str, examples: list, passage: K.Passage, cfg: RunConfig, tok) -> int:
    """How many copies of the passage match a self-edit update of `examples`: as many training
    sequences (`steps`: then the control takes exactly the update's optimizer steps under every
    `inner.steps`, one sequence a step or packed), or about as many target tokens (`tokens`:
    round(update tokens / passage tokens), at least 1)."""
    if control == "steps":
        return max(1, len(examples))
    if tok is None:
        raise ValueError("the tokens control needs the tokenizer")
    update = sum(t.targets for t in tokenize_examples(tok, examples, cfg.inner))
    alone = sum(t.targets for t in tokenize_examples(tok, [K.passage_example(passage)], cfg.inner))
    return max(1, round(update / max(1, alone)))


def _writer_index(source: str) -> int:
    """`other` -> 0, `other:<i>` -> i: which --selfedit.model a source is."""
    return 0 if source == "other" else int(source.split(":")[1])


def _other_path(source: str, cfg: RunConfig) -> str:
    return other_models(cfg)[_writer_index(source)]


def writer_labels(paths: list[str]) -> list[str]:
    """Each `--selfedit.model`'s row label, in order: its folder's name (`runs/t/rounds/round_2/model`
    -> `round_2`), or, when an earlier writer has that label, `<name>@<the nearest folder above
    that tells it apart>` (`round_2@t`). The first of them keeps the short label, so a table grown
    by a writer keeps its rows' names, and no two writers share a row (they did: the later one's
    rows were read from the earlier one's results). The same folder named twice is refused."""
    labels: list[str] = []
    seen: list[tuple[str, ...]] = []
    for path in paths:
        parts = tuple(x for x in Path(path).parts if x != Path(path).anchor)
        if len(parts) > 1 and parts[-1] == "model":  # rounds/round_2/model -> round_2
            parts = parts[:-1]
        label = next((c for k in range(1, len(parts) + 1)  # the shortest tail no earlier writer ends with
                      if all(q[-k:] != parts[-k:] for q in seen)
                      and (c := parts[-1] if k == 1 else f"{parts[-1]}@{parts[-k]}") not in labels), None)
        if label is None:
            raise ConfigError(f"selfedit.model: {path} is named twice")
        labels.append(label)
        seen.append(parts)
    return labels


def _cond_name(source: str, cfg: RunConfig) -> str:
    if source in ("own", "external"):
        return {"own": "self-edits", "external": "external"}[source]
    return "self-edits:" + writer_labels(other_models(cfg))[_writer_index(source)]


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


def summarize(cfg, passages, base, results, conditions, skipped, controls: list | None = None) -> dict:
    """summary.json's table: per condition the mean of per-passage means with its bootstrap
    interval, its mean optimizer steps and trained tokens per update, and the paired gains (same
    passages, bootstrap over passages): `gain_vs_no_adaptation` (every row), `gain_vs_passage`
    (every row past passage-only), `gain_vs_own_selfedits` (another writer's self-edits against
    the model's own), and `gain_vs_<kind>_control` (a self-edit row against its compute-matched
    control, `controls`: [control row, self-edit row] pairs)."""
    controls = [list(pair) for pair in controls or []]
    out = {"mode": cfg.eval.mode, "reward_metric": cfg.eval.reward, "seed": cfg.seed,
           "weighting": "mean over passages of each passage's mean over its questions (as the paper)", "order": [],
           "conditions": {}, "gain_vs_no_adaptation": {}, "skipped_empty_selfedits": skipped,
           "inner_steps": cfg.inner.steps, "controls": controls,
           "permutations": cfg.selfedit.permutations}
    rows = {cond: per_passage(cfg, passages, base, results, cond) for cond in conditions}

    def paired(cond: str, other: str) -> dict:
        a, b = rows[cond], rows[other]
        ids = [p.id for p in passages if p.id in a and p.id in b]
        return {m: paired_bootstrap([K.mean_metrics(a[i])[m] for i in ids], [K.mean_metrics(b[i])[m] for i in ids],
                                    cfg.eval.bootstrap, cfg.seed)
                for m in out["conditions"][cond]["metrics"] if m in out["conditions"][other]["metrics"]}

    for cond in conditions:
        pp = rows[cond]
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
        updates = [r for r in results.values() if r["condition"] == cond and "examples" in r.get("train", {})]
        if updates:  # each update's own optimizer steps (a batch's `steps` is its longest adapter's)
            out["conditions"][cond]["steps_mean"] = sum(cfg.inner.update_steps(r["train"]["examples"])
                                                        for r in updates) / len(updates)
            out["conditions"][cond]["tokens_mean"] = sum(r["train"]["tokens"] for r in updates) / len(updates)
        if cond != "no-adaptation":
            out["gain_vs_no_adaptation"][cond] = paired(cond, "no-adaptation")
    present = out["conditions"]
    for cond in out["order"]:
        if cond not in ("no-adaptation", "passage") and "passage" in present:
            out.setdefault("gain_vs_passage", {})[cond] = paired(cond, "passage")
        # other writers of self-edits (a ReSTEM round's model, external files) against the model's own
        if (cond.startswith("self-edits:") or cond == "external") and "self-edits" in present:
            out.setdefault("gain_vs_own_selfedits", {})[cond] = paired(cond, "self-edits")
    for ctrl, cond in controls:
        if ctrl in present and cond in present:
            kind = control_kind(ctrl)
            out.setdefault(f"gain_vs_{kind}_control", {})[cond] = paired(cond, ctrl)
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


GAIN_SECTIONS = (("gain over no adaptation", "gain_vs_no_adaptation"),
                 ("gain over passage-only (paired)", "gain_vs_passage"),
                 ("gain over the passage trained for the same steps (paired)", "gain_vs_steps_control"),
                 ("gain over the passage trained for about the same tokens (paired)", "gain_vs_tokens_control"),
                 ("gain over the passage with the same permuted copies (paired)", "gain_vs_permutations_control"),
                 ("gain over the model's own self-edits (paired)", "gain_vs_own_selfedits"))


def print_table(summary: dict) -> None:
    metrics = [m for m in K.METRICS if any(m in c["metrics"] for c in summary["conditions"].values())]
    head = f"{'condition':<28}" + "".join(f"{m:>24}" for m in metrics) + f"{'passages':>10}{'steps':>8}"
    print(f"mean over passages [95% interval]; {summary.get('weighting', '')}; inner.steps "
          f"{summary.get('inner_steps', '?')}, steps = mean optimizer steps per update")
    print(head)
    print("-" * len(head))
    n_max = max(c["n_passages"] for c in summary["conditions"].values())
    for cond in summary["order"]:
        c = summary["conditions"][cond]
        cells = "".join(_cell(c["metrics"].get(m), "") for m in metrics)
        steps = f"{c['steps_mean']:>8.1f}" if c.get("steps_mean") is not None else " " * 8
        note = "" if c["n_passages"] == n_max else f"  (only {c['n_passages']} of {n_max} passages)"
        print(f"{cond:<28}{cells}{c['n_passages']:>10}{steps}{note}")
    for title, key in GAIN_SECTIONS:
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


def verdict(gain: dict | None) -> str:
    """'taught more than' / 'taught less than' when the paired 95% interval excludes 0, else
    'could not be told apart from' (the interval holds 0)."""
    sign = interval_sign(gain.get("lo"), gain.get("hi")) if gain else None
    return {1: "taught more than", -1: "taught less than", 0: "could not be told apart from",
            None: "could not be compared with"}[sign]


def plain_summary(summary: dict) -> str:
    """Plain sentences on what the table means (the demo's closing lines), judged by the
    reward's metric (`reward_metric`, containment by default) and its paired 95% intervals."""
    c = summary["conditions"]
    metric = summary.get("reward_metric", "containment")
    if not any(metric in v["metrics"] for v in c.values()):
        metric = "containment"

    def value(cond):
        v = c.get(cond, {}).get("metrics", {}).get(metric, {}).get("mean")
        return None if v is None else (f"{v:.0%}" if metric in ("containment", "em", "f1") else f"{v:+.2f}")

    def gain(g):
        fmt = "{:+.0%}" if metric in ("containment", "em", "f1") else "{:+.2f}"
        return f"{fmt.format(g['mean'])} [{fmt.format(g['lo'])}, {fmt.format(g['hi'])}]"

    what = {"containment": "the model's answers contained the gold answer on", "em": "the model's answers matched "
            "the gold answer exactly on", "f1": "the model's answers scored a mean F1 of",
            "logprob": "the model gave the gold answers a mean log-prob per token of"}[metric]
    if value("no-adaptation") is None or value("passage") is None:
        return ""
    parts = [f"after training on the passage alone {value('passage')}"]
    for cond in summary["order"]:
        kind = control_kind(cond)
        if kind and value(cond) is not None:
            writer = cond.split(":", 1)[1] if ":" in cond else "own"
            parts.append(f"on the passage and its permuted copies without any self-edit {value(cond)}"
                         if kind == "permutations" else
                         f"on the passage alone for as many {kind} as the {writer} self-edits' update {value(cond)}")
    if value("self-edits") is not None:
        perms = summary.get("permutations") or 0
        what_trained = f"the passage, {perms} sentence-permuted copies of it and" if perms else "the passage plus"
        parts.append(f"on {what_trained} its own self-edits {value('self-edits')}")
    text = f"Before any update {what} {value('no-adaptation')} of the questions; " + "; ".join(parts) + "."
    for cond in summary["order"]:
        if not (cond == "self-edits" or cond.startswith("self-edits:") or cond == "external"):
            continue
        who = "Its own self-edits" if cond == "self-edits" else \
            ("External self-edits" if cond == "external" else f"Self-edits written by the {cond.split(':', 1)[1]} model")
        clauses = []
        for key, against in (("gain_vs_passage", "the passage alone"),
                             ("gain_vs_steps_control", "the passage trained for the same steps"),
                             ("gain_vs_tokens_control", "the passage trained for the same tokens"),
                             ("gain_vs_permutations_control", "the passage with the same permuted copies"),
                             ("gain_vs_own_selfedits", "the base model's own")):
            g = (summary.get(key) or {}).get(cond, {}).get(metric)
            if g and g.get("mean") is not None:
                clauses.append(f"{verdict(g)} {against} ({gain(g)})")
        if clauses:
            text += f" {who} " + ", ".join(clauses) + "."
    rows = [(v["metrics"][metric]["mean"], cond) for cond, v in c.items()
            if cond != "no-adaptation" and v["metrics"].get(metric, {}).get("mean") is not None]
    if rows:
        top = max(v for v, _ in rows)
        best = [cond for v, cond in rows if v == top]
        text += (f" Most taught: {' and '.join(best)}" + (" (tied)" if len(best) > 1 else "") +
                 " (paired 95% intervals in summary.json; differences inside them are noise).")
    return text
