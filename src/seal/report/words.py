"""The report's sentences: what each table, ReSTEM run, continual run, registry and benchmark
says, in words and numbers with their 95% intervals. Plain text (the page escapes it).

The evaluation sentence generalises `evaluate.plain_summary` (the demo's closing line) to any
table: every row in the summary's order (no adaptation, passage-only, compute-matched controls
such as `passage x steps`, each source of self-edits), then every paired comparison the summary
holds (`gain_vs_*`), each judged on the run's reward metric: an interval above 0 is "more than",
below 0 "less than", and only an interval that holds 0 "cannot be told apart from".
"""

from __future__ import annotations

import statistics

from seal.report.load import Bench, Registry, Run, Table, as_dict, dig, num, stat
from seal.rows import control_kind
from seal.stats import interval_sign

FRACTION_METRICS = ("containment", "f1", "em", "success", "accuracy")
METRIC_WORDS = {
    "containment": "questions answered right (the gold answer appears in the reply)",
    "f1": "token F1 of the answers",
    "em": "exact-match answers",
    "logprob": "mean log-probability per token of the gold answers",
    "success": "tasks solved",
}
CONDITION_WORDS = {
    "no-adaptation": "before any update",
    "passage": "after training on the passage alone",
    "self-edits": "after training on the passage plus the model's own self-edits",
    "external": "with the external self-edits",
}


def is_fraction(metric: str) -> bool:
    return metric in FRACTION_METRICS


def fmt_level(metric: str, mean, lo=None, hi=None) -> str:
    """A row's value: 44% [30%, 58%] for a share, -2.73 [-3.01, -2.46] otherwise."""
    if mean is None:
        return "n/a"
    small = max(abs(v) for v in (mean, lo, hi) if v is not None) < 0.1
    f = (lambda v: f"{v:.{1 if small else 0}%}") if is_fraction(metric) else (lambda v: f"{v:.2f}")
    return f(mean) + ("" if lo is None or hi is None else f" [{f(lo)}, {f(hi)}]")


def fmt_gain(metric: str, mean, lo=None, hi=None) -> str:
    """A paired difference: +19 pp [+5, +33] for a share, +0.41 [+0.12, +0.70] otherwise."""
    if mean is None:
        return "n/a"
    if is_fraction(metric):
        f, unit = (lambda v: f"{round(100 * v, 1) + 0.0:+.1f}"), " pp"
    else:
        f, unit = (lambda v: f"{v:+.2f}"), ""
    return f(mean) + unit + ("" if lo is None or hi is None else f" [{f(lo)}, {f(hi)}]")


def verdict(lo, hi) -> str:
    """What a paired 95% interval says: never "cannot be told apart" when it excludes 0."""
    return {1: "more than", -1: "less than", 0: "cannot be told apart from", None: "(no interval) vs"}[
        interval_sign(lo, hi)]


def reference_name(key: str) -> str:
    """gain_vs_no_adaptation -> 'no adaptation', gain_vs_steps_control -> 'the passage trained for
    the same steps', gain_vs_<anything> -> '<anything>' with spaces."""
    ref = key.removeprefix("gain_vs_")
    known = {"own_selfedits": "the model's own self-edits", "no_adaptation": "no adaptation",
             "passage": "passage-only", "steps_control": "the passage trained for the same steps",
             "tokens_control": "the passage trained for about the same tokens",
             "permutations_control": "the passage with the same permuted copies, without the self-edit"}
    return known.get(ref, ref.replace("_", " "))


def condition_words(cond: str) -> str:
    """A row's name in a sentence: `passage x steps:round_2` -> 'with the passage alone trained
    for as many steps as the round_2 self-edits' update (passage x steps:round_2)'."""
    if cond in CONDITION_WORDS:
        return CONDITION_WORDS[cond]
    kind = control_kind(cond)
    if kind == "permutations":  # one row for every writer: no self-edit in it
        return f"with the passage and its permuted copies, without any self-edit ({cond})"
    if kind is not None:
        writer = cond.partition(":")[2]
        return f"with the passage alone trained for as many {kind} as the {writer or 'own'} self-edits' update ({cond})"
    if cond.startswith("self-edits:"):
        return f"with self-edits written by the {cond.split(':', 1)[1]} model"
    return f"under {cond}"


def table_sentence(t: Table) -> str:
    """One sentence: every row's level on the reward metric (and on containment, when the reward
    is another metric), over how many passages."""
    m = t.reward_metric
    rows = [c for c in t.conditions if t.level(c, m)[0] is not None]
    if not rows:
        return "The table has no value on its reward metric."
    n_p = max((x for c in rows if isinstance(x := t.info(c).get("n_passages"), int)), default=None)
    n_q = max((x for c in rows if isinstance(x := t.info(c).get("n_questions"), int)), default=None)
    over = f"On {n_p} passages ({n_q} questions)" if n_p and n_q else "Over the table's passages"
    parts = [f"{condition_words(c)} {fmt_level(m, *t.level(c, m))}" for c in rows]
    text = f"{over}, {METRIC_WORDS.get(m, m)}: " + "; ".join(parts)
    if m != "containment" and "containment" in t.metrics():
        acc = [f"{c} {fmt_level('containment', *t.level(c, 'containment'))}" for c in rows
               if t.level(c, "containment")[0] is not None]
        text += f" (questions answered right: {', '.join(acc)})"
    return text + " (mean over passages, 95% interval)."


def comparison_lines(t: Table) -> list[str]:
    """Every paired gain on the reward metric, one line each, with its verdict."""
    m = t.reward_metric
    out = []
    for key, by_cond in t.gains().items():
        for cond, g in by_cond.items():
            mean, lo, hi = stat(g.get(m))
            if mean is None:
                continue
            if t.info(cond).get("n_passages") == 1:  # a bootstrap over one passage has no width
                out.append(f"{cond} vs {reference_name(key)}: {m} {fmt_gain(m, mean)} on one passage (no interval)")
                continue
            out.append(f"{cond}: {verdict(lo, hi)} {reference_name(key)} ({m} {fmt_gain(m, mean, lo, hi)}, paired, "
                       "95% interval)")
    return out


def rounds_sentence(run: Run) -> str | None:
    """What the ReSTEM rounds did: reward, kept share, the M-step's movement, length, diversity."""
    ev = run.round_events
    if not ev:
        return None
    rs = list(ev)
    first, last = ev[rs[0]], ev[rs[-1]]

    def span(key, fmt, *path) -> str | None:
        a, b = dig(first, *path), dig(last, *path)
        if a is None or b is None:
            return None
        return f"{key} {fmt(a)}" if len(rs) == 1 else f"{key} {fmt(a)} -> {fmt(b)}"

    what = f"{len(rs)} ReSTEM round{'s' if len(rs) > 1 else ''}" + (f" ({rs[0]}-{rs[-1]})" if len(rs) > 1 else "")
    parts = [span("mean reward", lambda v: f"{v:+.3f}", "mean_reward")]
    kept = [(num(e.get("n_kept")), num(e.get("n_scored")) or num(e.get("n_selfedits"))) for e in (first, last)]
    if all(k is not None and n for k, n in kept):
        shares = [f"{k:.0f}/{n:.0f}" for k, n in kept]
        parts.append("kept " + (shares[0] if len(rs) == 1 else f"{shares[0]} -> {shares[1]}"))
    moves = [(r, num(e.get("kept_logprob_before")), num(e.get("kept_logprob_after"))) for r, e in ev.items()]
    moves = [(r, a, b) for r, a, b in moves if a is not None and b is not None]
    if moves:
        parts.append("the M-step moved the kept self-edits' log-prob per token " +
                     ", ".join(f"{a:.2f} -> {b:.2f}" + (f" (round {r})" if len(moves) > 1 else "")
                               for r, a, b in moves))
    parts.append(span("self-edit length (tokens)", lambda v: f"{v:.0f}", "selfedits", "mean_tokens"))
    parts.append(span("distinct-2", lambda v: f"{v:.2f}", "selfedits", "distinct_2"))
    return f"{what}: " + "; ".join(p for p in parts if p) + "."


def in_progress_sentence(run: Run) -> str | None:
    """The round being run (rewards on disk, no done.json yet): how far it is."""
    done = run.round_events
    rd = next((x for x in reversed(run.rounds.values()) if x.rewards and x.index not in done), None)
    if rd is None:
        return None
    vals = list(rd.rewards.values())
    n = sum(len(v) for v in rd.samples.values())
    return (f"Round {rd.index} is in progress: {len(vals)}" + (f" of {n}" if n else "") + " self-edits scored so far, "
            f"mean reward {sum(vals) / len(vals):+.3f}, {sum(v > 0 for v in vals)} above 0.")


def continual_sentence(c: dict) -> str:
    """A `seal continual` run: after the sequence, against never editing, and what was forgotten."""
    m = c.get("metric") if isinstance(c.get("metric"), str) else "containment"
    s = as_dict(as_dict(c.get("summary")).get(m))
    guard, length = c.get("guard", "?"), c.get("length", "?")
    n = c.get("sequences_done", "?")
    parts = [f"Guard {guard}, {n} sequence{'' if n == 1 else 's'} of {length} passages: {m} after the last "
             f"edit {fmt_level(m, *stat(s.get('final_mean')))} against {fmt_level(m, *stat(s.get('final_mean_base')))} "
             "never edited"]
    g = stat(s.get("final_gain_over_base"))
    if g[0] is not None:
        parts.append(f"gain {fmt_gain(m, *g)} " + ("(one sequence: no interval)" if n == 1 else
                                                   f"({verdict(g[1], g[2])} never editing)"))
    f = stat(s.get("forgetting"))
    if f[0] is not None:
        parts.append(f"forgetting (just after each edit minus at the end) {fmt_gain(m, *f)}")
    ret = [stat(x)[0] for x in s.get("first_retention") or []] if isinstance(s.get("first_retention"), list) else []
    if len(ret) > 1 and ret[0] is not None and ret[-1] is not None:
        parts.append(f"the first passage {fmt_level(m, ret[0])} just after its edit, {fmt_level(m, ret[-1])} "
                     "after the last")
    signals = {k: a for k, v in as_dict(as_dict(c.get("when_to_adapt")).get("signals")).items()
               if (a := num(as_dict(v).get("auroc_repeat_vs_new"))) is not None}
    if signals:
        best = max(signals, key=signals.get)
        parts.append(f"on the mixed stream {best} tells a repeated passage from a new one best (AUROC "
                     f"{signals[best]:.2f})")
    comp = as_dict(c.get("compute"))
    if num(comp.get("updates_kept")) is not None:
        parts.append(f"{comp['updates_kept']} update(s) kept, {comp.get('updates_rejected', 0)} rejected")
    return "; ".join(parts) + "."


def continual_comparison(runs: list[dict]) -> str | None:
    """Across several continual runs on one metric: which guard ends highest and which forgets least."""
    m = runs[0].get("metric") if runs else None
    if len(runs) < 2 or any(c.get("metric") != m or c.get("length") != runs[0].get("length") for c in runs):
        return None  # only runs on one metric and sequence length compare

    def get(c, key):
        return stat(as_dict(as_dict(c.get("summary")).get(m)).get(key))

    have = [c for c in runs if get(c, "final_mean")[0] is not None and get(c, "forgetting")[0] is not None]
    if len(have) < 2:
        return None
    top = max(have, key=lambda c: get(c, "final_mean")[0])
    least = min(have, key=lambda c: get(c, "forgetting")[0])
    return (f"Across {len(have)} runs, {top.get('guard')} ends highest ({m} {fmt_level(m, *get(top, 'final_mean'))}) "
            f"and {least.get('guard')} forgets least ({fmt_gain(m, *get(least, 'forgetting'))}).")


def registry_sentence(r: Registry) -> str:
    h = r.history
    versions = [v for v in h["versions"] if isinstance(v, dict)]
    text = (f"Registry {h.get('registry', r.path)} (model {h.get('model', '?')}): {len(versions)} version(s), "
            f"current {h.get('current')}")
    cur = next((v for v in versions if v.get("version") == h.get("current")), None)
    if cur is not None:
        text += f" with {cur.get('documents', '?')} document(s)"
        added = [d for d in cur.get("added") or [] if isinstance(d, dict)]
        for d in added[:3]:
            rec = as_dict(d.get("record"))
            gate = as_dict(rec.get("gate"))
            metric = gate.get("metric", "f1")
            b, a = num(as_dict(rec.get("probes_before")).get(metric)), num(as_dict(rec.get("probes_after")).get(metric))
            text += f"; it added \"{d.get('title', '?')}\""
            if b is not None and a is not None:
                text += f" (probe {metric} {b:.2f} -> {a:.2f}"
                gb, ga = num(gate.get("before")), num(gate.get("after"))
                text += (f"; gate: earlier probes {gb:.2f} -> {ga:.2f}, threshold {gate.get('threshold')})"
                         if gb is not None and ga is not None else "; gate: no earlier probes)")
        refused = cur.get("refused") or []
        if refused:
            text += f"; {len(refused)} document(s) refused by the gate"
    return text + "."


def bench_ratios(b: Bench) -> dict[str, float]:
    """Every speed ratio a bench result holds, by path: `speedup_vs_ref` (seal bench round),
    evaluations/min over `ref` (seal bench inner-loop), `speedup_*` maps and A/B variants' `vs_*`."""
    r = b.result
    out: dict[str, float] = {}
    for key, v in r.items():
        if key.startswith("speedup") and isinstance(v, dict):
            out.update({k: y for k, x in v.items() if (y := num(x)) is not None})
    rates = as_dict(r.get("rates"))
    ref = num(as_dict(rates.get("ref")).get("evals_per_min"))
    if ref:
        for k, v in rates.items():
            if (x := num(as_dict(v).get("evals_per_min"))) is not None:
                out.setdefault(k, x / ref)
    for k, v in as_dict(r.get("variants")).items():
        for kk, x in as_dict(v).items():
            if kk.startswith("vs_") and (x := num(x)) is not None:
                out.setdefault(k, x)
    return out


def bench_repeats(b: Bench) -> dict[str, list[float]]:
    """Repeated timings (seconds) per path, where the result holds several."""
    out: dict[str, list[float]] = {}
    for k, v in as_dict(b.result.get("variants")).items():
        secs = [x for s in as_dict(v).get("seconds") or [] if (x := num(s)) is not None]
        if len(secs) > 1:
            out[k] = secs
    for k, v in as_dict(b.result.get("runs")).items():
        secs = [x for s in v if (x := num(as_dict(s).get("seconds"))) is not None] if isinstance(v, list) else []
        if len(secs) > 1:
            out[k] = secs
    return out


def spread(xs: list[float]) -> tuple[float, float, float]:
    return min(xs), statistics.median(xs), max(xs)


def bench_sentence(benches: list[Bench]) -> str:
    """The best path's ratio, with min/median/max across the results given."""
    by_path: dict[str, list[float]] = {}
    for b in benches:
        for k, v in bench_ratios(b).items():
            by_path.setdefault(k, []).append(v)
    if not by_path:
        return f"{len(benches)} bench result(s) with no speed ratio."
    best = max(by_path, key=lambda k: statistics.median(by_path[k]))
    lo, med, hi = spread(by_path[best])
    what = ", ".join(sorted({str(b.result.get("command", "bench")).split(" --")[0] for b in benches}))
    text = f"{what}: the fastest path, {best}, runs {med:.2f}x the reference"
    if len(by_path[best]) > 1:
        text += f" (median of {len(by_path[best])} results; min {lo:.2f}x, max {hi:.2f}x)"
    return text + "."
