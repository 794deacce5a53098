"""The summary of a `seal continual` run: per-sequence forgetting, the paired difference of each
guard against none, when adapting paid (AUROC of the skip signals) and the printed table."""

from __future__ import annotations

import math

from seal import knowledge as K
from seal.config import RunConfig
from seal.stats import bootstrap_mean


def passage_means(grades: list[list[dict]], metric: str) -> list[float]:
    return [K.mean_metrics(g).get(metric) for g in grades]


def mean_or_none(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def headline_metric(cfg: RunConfig) -> str:
    return "containment" if cfg.eval.generate else "logprob"


def fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def sequence_summary(base: dict, records: list[dict], metric: str) -> dict:
    """One sequence's matrix (L x L, None above the diagonal), base row, unrelated accuracy per
    step, and the scalar numbers the guards are compared on."""
    L = len(base["grades"])
    recs = sorted(records, key=lambda r: r["step"])
    matrix = [[None] * L for _ in range(L)]
    for r in recs:
        for j, m in enumerate(passage_means(r["grades"], metric)):
            matrix[r["step"]][j] = m
    base_row = passage_means(base["grades"], metric)
    unrel = [mean_or_none(passage_means(r["unrelated"], metric)) for r in recs]
    diag = [matrix[t][t] for t in range(L)]
    final = matrix[L - 1]
    return {
        "matrix": matrix, "base": base_row, "unrelated": unrel,
        "unrelated_base": mean_or_none(passage_means(base["unrelated"], metric)),
        "final_mean": mean_or_none(final), "final_mean_base": mean_or_none(base_row),
        "first_retention": [matrix[t][0] for t in range(L)],
        "just_edited": mean_or_none(diag),
        "forgetting": mean_or_none([diag[j] - final[j] for j in range(L - 1)
                             if diag[j] is not None and final[j] is not None]) if L > 1 else None,
    }


def summarize(cfg: RunConfig, seqs: list[list[K.Passage]], bases: dict[int, dict],
              steps: dict[int, list[dict]], counts: dict, disjoint: bool) -> dict:
    metrics = [m for m in K.METRICS if cfg.eval.generate or m == "logprob"]
    headline = headline_metric(cfg)
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
        out["mean_matrix"][m] = [[mean_or_none([mat[i][j] for mat in mats]) for j in range(L)] for i in range(L)]
        out.setdefault("mean_base", {})[m] = [mean_or_none([per_seq[s][m]["base"][j] for s in complete]) for j in range(L)]

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
            "mean_repeat": mean_or_none([i["signals"][sig] for i in have if i["repeat"]]),
            "mean_new": mean_or_none([i["signals"][sig] for i in have if not i["repeat"]]),
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
    print(f"first passage after each step: {', '.join(fmt(x.get('mean')) for x in s['first_retention'])}")
    print(f"unrelated questions after the last step: {ci(s['unrelated_final'])} (change {ci(s['unrelated_change'])})")
    c = summary["compute"]
    print(f"updates kept {c['updates_kept']}, rejected {c['updates_rejected']}, skipped {c['updates_skipped']}, "
          f"empty self-edits {c['empty_selfedits']}; {ci(c['seconds_per_sequence'])} s per sequence"
          + (f"; routing accuracy {ci(c['routing_accuracy'])}" if "routing_accuracy" in c else ""))
