"""The report's HTML: a first screen stating the results, then gains, rounds, examples, continual
runs, registries, benchmarks and the raw tables. Self-contained (images as data URIs; the page's
Content-Security-Policy allows nothing else, scripts included).

Everything that comes from a run folder is untrusted (titles, questions, model answers and
self-edits, condition names): it is HTML-escaped, and characters a terminal or the browser
would act on (ESC sequences, other control characters, bidi overrides) are shown as inert
`\\x1b`-style text.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import shlex
from pathlib import Path
from typing import Any

from seal.report import words as W
from seal.report.load import Bench, Registry, Run, Table, as_dict, num, stat

CSS = """body{font-family:system-ui,sans-serif;margin:1.2em auto;padding:0 1.2em;color:#222;max-width:1360px;
line-height:1.4}h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:1.6em}h3{margin-bottom:.3em}h4{margin:1em 0 .3em}
#headline{background:#f4f8fc;border:1px solid #cddbe8;padding:.4em 1em 1em;border-radius:6px}
#headline p{font-size:1.08em;margin:.5em 0}#headline ul{margin:.2em 0 .6em}
table{border-collapse:collapse;font-size:.9em;margin:.4em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.ok{background:#e6f4e6}td.t{max-width:26em;overflow-wrap:anywhere}
img{max-width:100%;height:auto;border:1px solid #eee;display:block;margin:.4em 0}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em;white-space:pre-wrap;overflow-wrap:anywhere}
tr.kept td{background:#e6f4e6}td.se pre{margin:0;background:none;padding:0;font-size:1.05em}td.se{min-width:30em}
pre.passage{background:#fbfaf3;color:#444}code{font-size:.9em}.ctl{color:#b00;background:#fee}
.note{color:#555;font-size:.92em}.wide{overflow-x:auto;max-width:100%}"""


def esc(x: Any) -> str:
    """HTML-escaped text; characters a terminal or browser acts on become visible `\\x1b` text."""
    out = []
    for c in str(x):
        if c in "\n\t" or c.isprintable():
            out.append(html.escape(c, quote=True))
        else:
            code = f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
            out.append(f'<span class="ctl">{code}</span>')
    return "".join(out)


def img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def fmt(v: float | None, spec: str = ".3f") -> str:
    return "—" if v is None else format(v, spec)


def cell(v: Any) -> str:
    n = num(v)
    return "—" if n is None else (str(int(n)) if n.is_integer() else f"{n:.4g}")


def table(head: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    """Cells are HTML already; columns from `numeric_from` on are right-aligned."""
    h = "".join(f"<th>{x}</th>" for x in head)
    body = "".join("<tr>" + "".join(f'<td class="n">{x}</td>' if i >= numeric_from else f"<td>{x}</td>"
                                    for i, x in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="wide"><table><tr>{h}</tr>{body}</table></div>'


# ----------------------------------------------------------------------------- first screen

def headline(runs: list[Run], registries: list[Registry], benches: list[Bench]) -> str:
    parts = ['<section id="headline"><h2>Result</h2>']
    if s := W.continual_comparison([r.continual for r in runs if r.continual is not None]):
        parts.append(f"<h3>continual runs compared</h3><p>{esc(s)}</p>")
    for r in runs:
        if r.table is not None:
            lines = W.comparison_lines(r.table)
            parts.append(f"<h3>{esc(r.label)}: evaluation table</h3><p>{esc(W.table_sentence(r.table))}</p>")
            if lines:
                parts.append("<ul>" + "".join(f"<li>{esc(x)}</li>" for x in lines) + "</ul>")
        said = [s for s in (W.rounds_sentence(r), W.in_progress_sentence(r)) if s]
        if said:
            parts.append(f"<h3>{esc(r.label)}: ReSTEM</h3>" + "".join(f"<p>{esc(s)}</p>" for s in said))
        if r.continual is not None:
            parts.append(f"<h3>{esc(r.label)}: continual</h3><p>{esc(W.continual_sentence(r.continual))}</p>")
    for g in registries:
        parts.append(f"<h3>{esc(g.label)}: registry</h3><p>{esc(W.registry_sentence(g))}</p>")
    if benches:
        parts.append(f"<h3>benchmarks</h3><p>{esc(W.bench_sentence(benches))}</p>")
    if len(parts) == 1:
        parts.append("<p>Nothing to state yet: no evaluation table, round, continual result, registry or "
                     "benchmark in what was given.</p>")
    return "".join(parts) + "</section>"


# ----------------------------------------------------------------------------- examples

def _source_condition(t: Table) -> dict[str, str]:
    """selfedits.jsonl's source -> the table's condition (own -> self-edits, other[:i] -> the
    i-th self-edits:<model> row, external -> external)."""
    others = [c for c in t.conditions if c.startswith("self-edits:")]
    out = {"own": "self-edits", "external": "external", "other": others[0] if others else "self-edits:other"}
    out.update({f"other:{i}": c for i, c in enumerate(others)})
    return out


def _passage_gains(t: Table, cond: str, m: str) -> dict[str, float]:
    from statistics import mean

    out = {}
    for pid, qs in t.base.items():
        b = [v for q in qs if (v := num(as_dict(q).get(m))) is not None]
        after = [num(as_dict(r.get("metrics")).get(m)) for r in t.results
                 if r["passage_id"] == pid and r["condition"] == cond]
        after = [v for v in after if v is not None]
        if b and after:
            out[pid] = mean(after) - mean(b)
    return out


def pick(gains: dict[str, float], n: int = 2) -> list[tuple[str, str]]:
    """The fixed rule: the n passages of largest gain, then the n of smallest (ties: passage id)."""
    order = sorted(gains, key=lambda p: (-gains[p], p))
    top = order[:n]
    low = [p for p in reversed(order) if p not in top][:n]
    return [(p, "largest gain") for p in top] + [(p, "smallest gain") for p in low]


def _answer_cell(q: dict) -> str:
    if "answer" in q:
        ok = num(q.get("containment")) == 1.0
        return f'<td class="t{" ok" if ok else ""}">{esc(q["answer"]) or "<i>(empty)</i>"}{" ✓" if ok else ""}</td>'
    return f'<td class="n">log-prob {fmt(num(q.get("logprob")), ".2f")}</td>'


def eval_examples(t: Table, texts: dict[str, tuple[str, str]] | None = None, max_chars: int = 1200) -> str:
    """For the passages of largest and smallest gain: each question with its gold answer and the
    answers before and after each update; then the self-edits with their gains."""
    m = t.reward_metric
    conds = [c for c in t.conditions if c != "no-adaptation"]
    se = [c for c in conds if c.startswith("self-edits") or c == "external"]
    main = "self-edits" if "self-edits" in se else (se or conds or [None])[0]
    gains = _passage_gains(t, main, m) if main else {}
    if not gains:
        return ""
    out = [f'<p class="note">Passages chosen by a fixed rule: the two of largest and the two of smallest gain in '
           f'{esc(m)} under <b>{esc(main)}</b> over no adaptation. ✓: the gold answer appears in the answer.</p>']
    by_pc: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(t.results, key=lambda r: r.get("selfedit_index", 0)):
        by_pc.setdefault((r["passage_id"], r["condition"]), []).append(r)
    src_cond = _source_condition(t)
    for pid, why in pick(gains):
        title, context = (texts or {}).get(pid, (t.titles.get(pid), None))
        out.append(f"<h4>{esc(title or pid)} <span class='note'>({why}: {esc(W.fmt_gain(m, gains[pid]))} under "
                   f"{esc(main)}; passage {esc(pid)})</span></h4>")
        if context:
            out.append(f"<pre class='passage'>{esc(clip(context, 500))}</pre>")
        cols = [c for c in conds if by_pc.get((pid, c))]
        head = ["question", "gold answer", "before any update"] + [
            f"after {esc(c)}" + (f" <span class='note'>(#1 of {n})</span>" if (n := len(by_pc[(pid, c)])) > 1 else "")
            for c in cols]
        rows = []
        for qi, q in enumerate(t.base[pid]):
            q = as_dict(q)
            row = [f'<td class="t">{esc(q.get("question", ""))}</td>',
                   f'<td class="t"><b>{esc(q.get("gold", ""))}</b></td>',
                   _answer_cell(q)]
            for c in cols:
                reps = [as_dict((r.get("questions") or [])[qi]) for r in by_pc[(pid, c)]
                        if isinstance(r.get("questions"), list) and qi < len(r["questions"])]
                row.append(_answer_cell(reps[0]) if reps else "<td>—</td>")
            rows.append("<tr>" + "".join(row) + "</tr>")
        out.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")
        rows = []
        for src, by_pid in t.selfedits.items():
            cond = src_cond.get(src, src)
            for j, text in enumerate(by_pid.get(pid, [])):
                rec = next((r for r in by_pc.get((pid, cond), []) if r.get("selfedit_index") == j), None)
                b = [v for q in t.base[pid] if (v := num(as_dict(q).get(m))) is not None]
                g = num(as_dict(rec.get("metrics")).get(m)) if rec else None
                gain = W.fmt_gain(m, g - sum(b) / len(b)) if g is not None and b else "not trained"
                rows.append([f"<b>{esc(cond)}</b> #{j + 1}", esc(gain), f"<pre>{esc(clip(text, max_chars))}</pre>"])
        if rows:
            out.append(table(["self-edit", f"its update's gain in {esc(m)}", "text"], rows, numeric_from=1)
                       .replace('<td class="n"><pre>', '<td class="se"><pre>'))
    return "".join(out)


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + f" … ({len(text) - n} more characters)"


def round_examples(run: Run, texts: dict[str, tuple[str, str]], max_chars: int = 900) -> str:
    """The last round's self-edits of the passages with the largest and smallest best reward,
    each with its reward; the ones ReSTEM kept are marked."""
    rd = next((x for x in reversed(run.rounds.values()) if x.samples and x.rewards), None)
    if rd is None:
        return ""
    best: dict[str, float] = {}
    for (pid, _), r in rd.rewards.items():
        if pid in rd.samples:
            best[pid] = max(best.get(pid, r), r)
    out = [f'<p class="note">Round {rd.index}; passages chosen by a fixed rule: the two of largest and the two of '
           'smallest best reward; "no reward": unparsable or stopped by racing. Green rows: the self-edits ReSTEM kept '
           'for the M-step.' + (" This collected result keeps only the kept self-edits' texts." if run.path.is_file()
                                else "") + '</p>']
    for pid, why in pick(best):
        title, context = texts.get(pid, (pid, None))
        out.append(f"<h4>{esc(title or pid)} <span class='note'>({why}: best reward {best[pid]:+.3f}; passage "
                   f"{esc(pid)})</span></h4>")
        if context:
            out.append(f"<pre class='passage'>{esc(clip(context, 500))}</pre>")
        rows = []
        for j, text in sorted(rd.samples.get(pid, {}).items()):
            r = rd.rewards.get((pid, j))
            kept = (pid, j) in rd.kept
            rows.append(f"<tr{' class=kept' if kept else ''}><td>#{j + 1}</td>"
                        f"<td class='n'>{'no reward' if r is None else f'{r:+.3f}'}</td>"
                        f"<td>{'kept' if kept else ''}</td>"
                        f"<td class='se'><pre>{esc(clip(text, max_chars))}</pre></td></tr>")
        out.append("<div class='wide'><table><tr><th>self-edit</th><th>reward</th><th>ReSTEM</th><th>text</th></tr>"
                   + "".join(rows) + "</table></div>")
    return "".join(out)


# ----------------------------------------------------------------------------- tables

def summary_table(t: Table) -> str:
    """Condition x metric, "mean [lo, hi]"."""
    metrics = t.metrics()
    n_max = max((n for c in t.conditions if isinstance(n := t.info(c).get("n_passages"), int)), default=0)
    rows = []
    for c in t.conditions:
        cells = [esc(t.info(c).get(k, "—")) for k in ("n_questions", "n_passages")]
        n = t.info(c).get("n_passages")
        if isinstance(n, int) and n < n_max:  # a row on fewer passages says so
            cells[1] += f" (only {n} of {n_max})"
        for m in metrics:
            mean, lo, hi = t.level(c, m)
            cells.append(esc(fmt(mean) + ("" if lo is None and hi is None else f" [{fmt(lo)}, {fmt(hi)}]")))
        rows.append([f"<b>{esc(c)}</b>", *cells])
    return table(["condition", "questions", "passages", *map(esc, metrics)], rows)


def gains_table(t: Table) -> str:
    metrics = t.metrics()
    rows = []
    for key, by in t.gains().items():
        for c, g in by.items():
            rows.append([esc(f"{c} vs {key.removeprefix('gain_vs_')}")]
                        + [esc(W.fmt_gain(m, *stat(g.get(m)))) for m in metrics])
    return table(["comparison (paired)", *map(esc, metrics)], rows) if rows else ""


def rounds_table(run: Run) -> str:
    """Per round, the numeric fields of done.json (one level of nesting flattened)."""
    ev = run.round_events
    flat = {}
    for r, e in ev.items():
        f = {}
        for k, v in e.items():
            if isinstance(v, dict):
                f.update({f"{k}.{kk}": vv for kk, vv in v.items() if num(vv) is not None})
            elif num(v) is not None and k not in ("round", "step"):
                f[k] = v
        flat[r] = f
    keys = [k for k in dict.fromkeys(k for f in flat.values() for k in f)]
    if not keys:
        return ""
    return table(["round", *map(esc, keys)], [[str(r)] + [esc(cell(f.get(k))) for k in keys] for r, f in flat.items()],
                 numeric_from=0)


def continual_table(runs: list[Run]) -> str:
    rows = []
    for r in runs:
        c = r.continual
        m = c.get("metric")
        s = as_dict(as_dict(c.get("summary")).get(m))
        comp = as_dict(c.get("compute"))
        rows.append([f"<b>{esc(c.get('guard', r.label))}</b>", esc(m), esc(c.get("sequences_done", "—"))]
                    + [esc(W.fmt_level(m, *stat(s.get(k)))) for k in ("final_mean", "final_mean_base", "just_edited")]
                    + [esc(W.fmt_gain(m, *stat(s.get(k)))) for k in ("final_gain_over_base", "forgetting",
                                                                      "unrelated_change")]
                    + [esc(f"{comp.get('updates_kept', '—')} / {comp.get('updates_rejected', '—')}"),
                       esc(fmt(stat(comp.get("seconds_per_sequence"))[0], ".0f"))])
    return table(["guard", "metric", "sequences", "after the last edit", "never edited", "just edited",
                  "gain over never edited", "forgetting", "unrelated change", "kept / rejected", "s / sequence"],
                 rows, numeric_from=2)


def registry_table(g: Registry) -> str:
    rows, texts = [], []
    for v in reversed([v for v in g.history["versions"] if isinstance(v, dict)]):
        added = [d for d in v.get("added") or [] if isinstance(d, dict)]
        docs, probes, gates = [], [], []
        for d in added:
            rec = as_dict(d.get("record"))
            gate = as_dict(rec.get("gate"))
            metric = gate.get("metric", "f1")
            docs.append(f"{esc(d.get('title', '?'))} <span class='note'>({esc(d.get('source', ''))})</span>")
            probes.append(esc(f"{metric} {fmt(num(as_dict(rec.get('probes_before')).get(metric)), '.2f')} -> "
                              f"{fmt(num(as_dict(rec.get('probes_after')).get(metric)), '.2f')}"))
            gates.append(esc("no earlier probes" if num(gate.get("before")) is None else
                             f"{fmt(num(gate.get('before')), '.2f')} -> {fmt(num(gate.get('after')), '.2f')} "
                             f"(drop {fmt(num(gate.get('drop')), '.3f')}, threshold {gate.get('threshold')}, "
                             f"scale {gate.get('scale')}, {'passed' if gate.get('passed') else 'refused'})"))
            texts.append(_registry_document(v, d, rec))
        means = as_dict(v.get("probe_means"))
        refused = [esc(as_dict(x).get("source", "?")) for x in v.get("refused") or []]
        rows.append([f"<b>{esc(v.get('version'))}</b>" + (" (current)" if v.get("current") else ""),
                     esc("—" if v.get("parent") is None else v["parent"]), esc(v.get("created", "")),
                     esc(v.get("documents", "—")),
                     "<br>".join(docs) or ("the base model" if v.get("version") == 0 else "—"),
                     "<br>".join(probes) or "—", "<br>".join(gates) or "—",
                     esc(", ".join(f"{k} {fmt(num(x), '.2f')}" for k, x in means.items())) or "—",
                     ", ".join(refused) or "—"])
    head = ["version", "parent", "created", "documents", "added", "its probes before -> after",
            "gate on earlier probes",
            "probe means", "refused"]
    return table(head, rows, numeric_from=99) + "".join(texts)


def _registry_document(v: dict, d: dict, rec: dict) -> str:
    """An added document's chosen self-edit (lines the faithfulness filter dropped marked) and its probes."""
    ses = [as_dict(x) for x in rec.get("selfedits") or []]
    k = rec.get("chosen", 0)
    se = ses[k] if isinstance(k, int) and 0 <= k < len(ses) else {}
    lines = [as_dict(x) for x in se.get("lines") or []]
    out = [f"<h4>version {esc(v.get('version'))}: {esc(d.get('title', '?'))}</h4>"]
    if lines:
        out.append("<p>self-edit (+ kept, - dropped by the faithfulness filter):</p><pre>" + "\n".join(
            f"{'+' if x.get('kept') else '-'} {esc(x.get('line', ''))}" for x in lines) + "</pre>")
    elif se.get("text") is not None:
        out.append("<p>self-edit (no usable line; trained on the document alone):</p>"
                   f"<pre>{esc(clip(str(se['text']), 1200))}</pre>")
    probes = [as_dict(q) for q in rec.get("probes") or []]
    if probes:
        out.append(table(["probe", "kind", "answer"], [[esc(q.get("question", "")), esc(q.get("kind", "")),
                                                       esc(q.get("answer", ""))] for q in probes], numeric_from=99))
    return "".join(out)


def bench_tables(benches: list[Bench]) -> str:
    """One row per result, one column per path (its speed ratio), then min/median/max rows."""
    import statistics

    ratios = {b.label: r for b in benches if (r := W.bench_ratios(b))}
    paths = list(dict.fromkeys(k for r in ratios.values() for k in r))
    machines = {b.label: as_dict(b.result.get("machine")) for b in benches}
    rows = [[esc(lbl), esc(", ".join(str(x) for x in (machines[lbl].get("cpu_model"),
                                                      " ".join(machines[lbl].get("cpu_flags") or []) or None,
                                                      f"{machines[lbl].get('torch_threads', '?')} threads") if x))]
            + [esc(fmt(r.get(p), ".2f")) for p in paths] for lbl, r in ratios.items()]
    for name, i in (("min", 0), ("median", 1), ("max", 2)):
        rows.append([f"<b>{name}</b>", ""] + [f"<b>{W.spread([r[p] for r in ratios.values() if p in r])[i]:.2f}</b>"
                                              for p in paths])
    out = table(["result", "machine", *map(esc, paths)], rows, numeric_from=2) if ratios else ""
    if none := [b.label for b in benches if b.label not in ratios]:
        out += f"<p class='note'>No speed ratio in: {esc(', '.join(none))}.</p>"
    reps = [(b.label, k, v) for b in benches for k, v in W.bench_repeats(b).items()]
    if reps:
        out += "<h3>Repeated timings (seconds)</h3>" + table(
            ["result", "path", "repeats", "min", "median", "max"],
            [[esc(lbl), esc(k), str(len(v)), f"{min(v):.1f}", f"{statistics.median(v):.1f}", f"{max(v):.1f}"]
             for lbl, k, v in reps], numeric_from=2)
    return out


# ----------------------------------------------------------------------------- run facts

MANIFEST_ROWS = [
    ("command", lambda m: m.get("command")),
    ("created", lambda m: m.get("created")),
    ("seed", lambda m: m.get("seed")),
    ("data", lambda m: m["data"].get("path")),
    ("data sha256", lambda m: str(m["data"].get("sha256") or "")[:12]),
    ("items", lambda m: m["data"].get("n_items")),
    ("git rev", lambda m: str(m.get("git_rev") or "")[:12]),
    ("versions", lambda m: ", ".join(f"{k} {v}" for k, v in m["versions"].items())),
    ("argv", lambda m: shlex.join(map(str, m["argv"]))),
]


def overview(runs: list[Run]) -> str:
    """Manifest facts, one column per run."""
    def get(fn, m):
        try:
            v = fn(m)
        except (AttributeError, KeyError, TypeError):
            return "—"
        return "—" if v in (None, "") else f"<code>{esc(v)}</code>"
    rows = [["run", *[f"<b>{esc(r.label)}</b>" for r in runs]],
            ["folder", *[f"<code>{esc(r.path)}</code>" for r in runs]]]
    rows += [[esc(key), *[get(fn, r.manifest) for r in runs]] for key, fn in MANIFEST_ROWS]
    return "<table>" + "".join("<tr><th>" + r[0] + "</th>" + "".join(f"<td>{x}</td>" for x in r[1:]) + "</tr>"
                               for r in rows) + "</table>"


def page(title: str, body: list[str]) -> str:
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"  # nothing from outside, no scripts
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>SEAL report: {esc(title)}</title><style>{CSS}</style></head><body>\n"
            f"<h1>SEAL report</h1><p class='note'>{esc(title)}. Generated {esc(now)}.</p>\n"
            + "\n".join(body) + "\n</body></html>\n")
