"""`seal report INPUT [INPUT ...] --out DIR`: one self-contained HTML page (report.html, images
embedded) and its PNG figures, for run folders (or runs collected into one JSON), `seal adapt`
registries and bench results.

The first screen states each result in words and numbers with 95% intervals (one sentence per
evaluation table, with every paired comparison it holds judged on the run's reward metric);
then the gain plots (point + interval per condition and comparison, one panel per metric that
is not constant), ReSTEM rounds as curves over rounds (from 2 rounds on), examples (questions
with gold answers and the answers before and after each update; self-edits with their rewards,
the kept ones marked), continual runs (forgetting heatmaps side by side, retention curves), a
registry's versions with their gate figures and bench ratios with min/median/max. Several
inputs share one page. Conditions and comparisons are read from summary.json as they are
(`order`, `conditions`, every `gain_vs_*`), so a new row or control shows without code changes.

Modules: load (reading inputs defensively), words (the sentences), figures (matplotlib), page
(HTML, escaping of untrusted text).
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

from seal.report import figures as F
from seal.report import page as P
from seal.report import words as W
from seal.report.load import (
    Bench,
    Registry,
    ReportError,
    ReportWarning,
    Run,
    as_dict,
    data_passages,
    label_items,
    load_any,
)

__all__ = ["ReportError", "ReportWarning", "build_report", "add_cli"]

FIGURE_NAMES = re.compile(r"(gains|rounds)_\d+\.png|forgetting\.png|retention\.png|bench\.png")


def _forgetting_view(run: Run) -> dict | None:
    """A run's forgetting matrix (base row on top): forgetting.json, or built from continual.json."""
    if run.forgetting is not None:
        return run.forgetting
    c = run.continual or {}
    m = c.get("metric")
    mat, base = as_dict(c.get("mean_matrix")).get(m), as_dict(c.get("mean_base")).get(m)
    if not isinstance(mat, list) or not mat or not isinstance(base, list):
        return None
    return {"metric": f"{m} ({c.get('guard', '?')})", "after": ["base"] + [f"passage {t + 1}" for t in range(len(mat))],
            "on": [f"passage {j + 1}" for j in range(len(base))], "matrix": [base] + mat}


def _sections(runs: list[Run], registries: list[Registry], benches: list[Bench], out: Path) -> list[str]:
    body = [P.headline(runs, registries, benches)]
    tabled = [r for r in runs if r.table is not None]
    if tabled:
        sec = ['<section id="gains"><h2>Gains (paired, 95% interval)</h2>']
        for i, r in enumerate(tabled):
            sec.append(f"<h3>{P.esc(r.label)}</h3>")
            if png := F.gain_plot(r.table, f"{r.label}: gain of each condition", out / f"gains_{i}.png"):
                sec.append(P.img(png, f"paired gains, {r.label}"))
            elif not r.table.gains():
                sec.append("<p class='note'>This summary holds no paired gains (no gain_vs_* field).</p>")
            if const := F.constant_metrics(r.table):
                sec.append("<p class='note'>Not drawn, the same in every condition: "
                           + ", ".join(f"{P.esc(m)} = {v:.3g}" for m, v in const.items()) + ".</p>")
            sec.append(P.gains_table(r.table))
        body.append("".join(sec) + "</section>")
    trained = [r for r in runs if r.rounds or r.round_events]
    if trained:
        sec = ['<section id="rounds"><h2>ReSTEM rounds</h2>']
        for i, r in enumerate(trained):
            sec.append(f"<h3>{P.esc(r.label)}</h3>")
            if png := F.rounds_plot(r, out / f"rounds_{i}.png"):
                sec.append(P.img(png, f"rounds, {r.label}"))
            elif len(r.round_events) == 1:
                sec.append("<p class='note'>One round: curves need at least two; its figures are below.</p>")
            if s := W.in_progress_sentence(r):
                sec.append(f"<p class='note'>{P.esc(s)}</p>")
            sec.append(P.rounds_table(r))
        body.append("".join(sec) + "</section>")
    examples = []
    for r in runs:
        texts = data_passages(r) if r.table is not None or any(rd.samples for rd in r.rounds.values()) else {}
        examples.append((r, P.eval_examples(r.table, texts) if r.table else "", P.round_examples(r, texts)))
    if any(a or b for _, a, b in examples):
        sec = ['<section id="examples"><h2>Examples: what was learned and what the model wrote</h2>']
        for r, ev, rd in examples:
            if ev:
                sec.append(f"<h3>{P.esc(r.label)}: answers before and after each update</h3>{ev}")
            if rd:
                sec.append(f"<h3>{P.esc(r.label)}: self-edits and their rewards</h3>{rd}")
        body.append("".join(sec) + "</section>")
    views = [(r.continual.get("guard", r.label) if r.continual else r.label, v) for r in runs
             if (v := _forgetting_view(r)) is not None]
    continual = [r for r in runs if r.continual is not None]
    if views or continual:
        sec = ['<section id="continual"><h2>Continual adaptation and forgetting</h2>']
        if png := F.heatmaps(views, out / "forgetting.png"):
            sec.append(P.img(png, "forgetting matrices"))
        if png := F.retention_plot([(r.continual.get("guard", r.label), r.continual) for r in continual],
                                   out / "retention.png"):
            sec.append(P.img(png, "retention of the first passage"))
        if continual:
            sec.append(P.continual_table(continual))
        body.append("".join(sec) + "</section>")
    if registries:
        body.append('<section id="registry"><h2>Registry versions</h2>' + "".join(
            f"<h3>{P.esc(g.label)}</h3>" + P.registry_table(g) for g in registries) + "</section>")
    if benches:
        sec = ['<section id="bench"><h2>Benchmarks</h2>']
        if png := F.bench_plot(benches, out / "bench.png"):
            sec.append(P.img(png, "bench ratios"))
        body.append("".join(sec) + P.bench_tables(benches) + "</section>")
    if tabled:
        body.append('<section id="tables"><h2>Evaluation tables (mean [95% interval])</h2>' + "".join(
            f"<h3>{P.esc(r.label)}</h3>" + P.summary_table(r.table) for r in tabled) + "</section>")
    if runs:
        body += ['<section id="runs"><h2>Runs</h2>', P.overview(runs), "<h3>Configuration</h3>"]
        for r in runs:
            text = r.config_text if r.config_text is not None else "(no config.yaml)"
            body.append(f"<details><summary>config.yaml — {P.esc(r.label)}</summary>"
                        f"<pre>{P.esc(text)}</pre></details>")
        body.append("</section>")
    return body


def build_report(inputs: list[Path], out_dir: Path) -> Path:
    """Write the figures and `report.html` for `inputs` into `out_dir`; return the page's path."""
    if not inputs:
        raise ReportError("no run folders given")
    items = [load_any(Path(p)) for p in inputs]
    label_items(items)
    F.mpl()  # fail early, with the install hint, before writing anything
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: exists and is a file; --out names the report's folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"{out}: cannot create the report folder ({e.strerror or e})") from None
    for old in out.glob("*.png"):  # figures of an earlier report into the same folder
        if FIGURE_NAMES.fullmatch(old.name):
            old.unlink()
    runs = [x for x in items if isinstance(x, Run)]
    registries = [x for x in items if isinstance(x, Registry)]
    benches = [x for x in items if isinstance(x, Bench)]
    path = out / "report.html"
    path.write_text(P.page(", ".join(x.label for x in items), _sections(runs, registries, benches, out)),
                    encoding="utf-8")
    return path


def _cmd_report(args, argv=None) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReportWarning)
        try:
            page = build_report(args.runs, args.out)
        except ReportError as e:
            page = None
            print(f"seal report: error: {e}", file=sys.stderr)
    for w in caught:  # one line each, not Python's two-line warning format
        if issubclass(w.category, ReportWarning):
            print(f"seal report: warning: {w.message}", file=sys.stderr)
    if page is None:
        return 2
    print(page)
    return 0


def add_cli(subparsers) -> None:
    """Register `seal report INPUT [INPUT ...] --out DIR`; the handler is `args.func(args) -> int`."""
    p = subparsers.add_parser(
        "report", help="one self-contained HTML page for runs, registries and bench results",
        description="Write report.html (figures embedded) and its PNG figures for the given run folders "
                    "(seal train / evaluate / demo / continual), runs collected into one JSON for results/, "
                    "seal adapt registry folders (or saved `seal history --json`) and seal bench JSON results, "
                    "on one page.")
    p.add_argument("runs", nargs="+", type=Path, metavar="INPUT",
                   help="run folder, collected run JSON, registry folder, history JSON or bench JSON")
    p.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report/)")
    p.set_defaults(func=_cmd_report)
