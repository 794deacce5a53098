"""`seal report RUN [RUN ...] --out DIR`: PNG plots and one self-contained HTML page.

Reads run folders (manifest.json, config.yaml, metrics.jsonl, rounds/round_<r>/rewards.jsonl,
summary.json or eval/summary.json, forgetting.json or eval/forgetting.json) defensively: every
file but manifest.json is optional and a plot whose data is missing is left out. A truncated
JSONL line (a run killed mid-write) is skipped with a warning. Several runs are shown side by
side. The page embeds its images as base64 data URIs and loads nothing else.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import re
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ReportError", "ReportWarning", "build_report", "add_cli"]

MPL_MISSING = "seal report needs matplotlib: pip install 'seal[report]'"
PLOT_NAMES = ("rewards.png", "mean_reward.png", "summary.png", "forgetting.png")
DPI = 100


class ReportError(ValueError):
    """Input that cannot be reported on (or matplotlib missing); the message is one line."""


class ReportWarning(UserWarning):
    """Something in a run folder was skipped (a truncated line, an unreadable optional file)."""


@dataclass
class Run:
    path: Path
    label: str
    manifest: dict
    config_text: str | None = None
    metrics: list[dict] = field(default_factory=list)
    rewards: dict[int, list[float]] = field(default_factory=dict)  # round -> rewards
    summary: dict | None = None
    forgetting: dict | None = None


def _warn(msg: str) -> None:
    warnings.warn(msg, ReportWarning, stacklevel=3)


def _read_json(path: Path) -> Any:
    """Parsed JSON, or None (with a warning when the file exists but cannot be read)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        _warn(f"{path}: ignored, not readable JSON ({e})")
        return None


def _read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file; bad lines are skipped with a warning."""
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()
                 if ln.strip()]
    except OSError as e:
        _warn(f"{path}: ignored ({e})")
        return []
    out = []
    for k, line in enumerate(lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            _warn(f"{path}: ignoring " + ("truncated last line" if k == len(lines) - 1
                                          else "a malformed line"))
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _load_run(path: Path) -> Run:
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise ReportError(f"{path}: not a run folder (no manifest.json)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{mpath}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise ReportError(f"{mpath}: manifest is not a JSON object")
    run = Run(path=path, label=path.resolve().name or str(path), manifest=manifest)
    if (path / "config.yaml").is_file():
        run.config_text = (path / "config.yaml").read_text(encoding="utf-8", errors="replace")
    if (path / "metrics.jsonl").is_file():
        run.metrics = _read_jsonl(path / "metrics.jsonl")
    for rdir in (path / "rounds").glob("round_*") if (path / "rounds").is_dir() else ():
        m = re.fullmatch(r"round_(\d+)", rdir.name)
        if m and (rdir / "rewards.jsonl").is_file():
            vals = [_num(rec.get("reward")) for rec in _read_jsonl(rdir / "rewards.jsonl")]
            if vals := [v for v in vals if v is not None]:
                run.rewards[int(m.group(1))] = vals
    run.rewards = dict(sorted(run.rewards.items()))
    for sub in ("", "eval"):  # evaluate/arc runs at the top, demo runs in eval/
        s = run.summary or _read_json(path / sub / "summary.json")
        if isinstance(s, dict) and isinstance(s.get("conditions"), dict) and s["conditions"]:
            run.summary = s
        run.forgetting = run.forgetting or _check_forgetting(path / sub / "forgetting.json")
    return run


def _check_forgetting(where: Path) -> dict | None:
    if not isinstance(f := _read_json(where), dict):
        return None
    after, on, mat = (f.get(k) or [] for k in ("after", "on", "matrix"))
    if (isinstance(mat, list) and after and on and len(mat) == len(after)
            and all(isinstance(r, list) and len(r) == len(on) for r in mat)):
        return f
    _warn(f"{where}: ignored, matrix shape does not match 'after' x 'on'")
    return None


def _label_runs(runs: list[Run]) -> None:
    """Folder names as labels; parent/name (then #k) where names clash."""
    names = [r.label for r in runs]
    for r in runs:
        if names.count(r.label) > 1:
            r.label = "/".join(r.path.resolve().parts[-2:])
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.label = f"{r.label} #{seen[r.label]}"


def _union(lists) -> list:
    out: list = []
    for xs in lists:
        out += [x for x in xs if x not in out]
    return out


def _conditions(run: Run) -> list[str]:
    conds, order = run.summary["conditions"], run.summary.get("order")
    order = [c for c in order if c in conds] if isinstance(order, list) else []
    return order + [c for c in conds if c not in order]


def _info(run: Run, cond: str) -> dict:
    info = run.summary["conditions"].get(cond)
    return info if isinstance(info, dict) else {}


def _metric_names(run: Run) -> list[str]:
    return _union(list(m) if isinstance(m := _info(run, c).get("metrics"), dict) else []
                  for c in _conditions(run))


def _stat(run: Run, cond: str, metric: str) -> tuple[float | None, float | None, float | None]:
    m = _info(run, cond).get("metrics")
    s = m.get(metric) if isinstance(m, dict) else None
    if isinstance(s, dict):
        return _num(s.get("mean")), _num(s.get("lo")), _num(s.get("hi"))
    return _num(s), None, None


def _mpl():
    """matplotlib's Figure and Agg canvas, imported lazily (pyplot's global state is not used)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError(MPL_MISSING) from None
    return Figure, FigureCanvasAgg


def _figure(n_panels: int, panel_w: float, panel_h: float, ncols: int = 2):
    Figure, Canvas = _mpl()
    ncols = min(ncols, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(panel_w * ncols, panel_h * nrows), dpi=DPI)
    Canvas(fig)
    return fig, [fig.add_subplot(nrows, ncols, k + 1) for k in range(n_panels)]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _plot_rewards(runs: list[Run], out: Path) -> Path:
    import numpy as np
    rng = np.random.default_rng(0)  # deterministic jitter
    fig, axes = _figure(len(runs), 5.5, 4.0)
    for i, (run, ax) in enumerate(zip(runs, axes, strict=True)):
        rounds, data = list(run.rewards), list(run.rewards.values())
        ax.boxplot(data, positions=rounds, widths=0.6, showfliers=False,
                   medianprops={"color": "black"}, boxprops={"color": "0.4"})
        for r, vals in zip(rounds, data, strict=True):
            ax.scatter(r + rng.uniform(-0.18, 0.18, len(vals)), vals, s=12, alpha=0.55,
                       color=f"C{i % 10}", edgecolors="none")
        ax.plot(rounds, [float(np.mean(v)) for v in data], "o-", color=f"C{i % 10}", lw=2,
                label=f"{run.label}: mean")
        ax.set_xticks(rounds, [str(r) for r in rounds])
        ax.set_xlim(min(rounds) - 0.6, max(rounds) + 0.6)
        ax.set(title=f"Reward per inner-loop evaluation\n{run.label}", xlabel="ReSTEM round",
               ylabel="reward")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out / "rewards.png")


def _plot_mean_reward(runs: list[Run], out: Path) -> Path:
    fig, (ax,) = _figure(1, 6.5, 4.0)
    for i, run in enumerate(runs):
        ax.plot(list(run.rewards), [sum(v) / len(v) for v in run.rewards.values()], "o-",
                color=f"C{i % 10}", lw=2, label=run.label)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(title="Mean reward per round", xlabel="ReSTEM round", ylabel="mean reward")
    ax.grid(alpha=0.3)
    ax.legend(title="run", fontsize=8)
    return _save(fig, out / "mean_reward.png")


def _plot_summary(runs: list[Run], out: Path) -> Path:
    conds = _union(_conditions(r) for r in runs)
    metrics = _union(_metric_names(r) for r in runs)
    fig, axes = _figure(len(metrics), max(5.0, 1.0 + 0.9 * len(conds) * len(runs) ** 0.5), 4.2)
    width = 0.8 / len(runs)
    for ax, metric in zip(axes, metrics, strict=True):
        bounded = True  # every value in [0, 1]: use a fixed 0..1 axis
        for i, run in enumerate(runs):
            xs, ys, err = [], [], [[], []]
            for j, c in enumerate(conds):
                mean, lo, hi = _stat(run, c, metric)
                if mean is None:
                    continue
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(mean)
                err[0].append(max(mean - lo, 0.0) if lo is not None else 0.0)
                err[1].append(max(hi - mean, 0.0) if hi is not None else 0.0)
                bounded &= all(0.0 <= v <= 1.0 for v in (mean, lo, hi) if v is not None)
            if xs:
                ax.bar(xs, ys, width=width * 0.92, yerr=err, capsize=3, color=f"C{i % 10}",
                       label=run.label, error_kw={"elinewidth": 1, "ecolor": "0.2"})
        tilt = len(conds) > 2
        ax.set_xticks(range(len(conds)), conds, rotation=25 if tilt else 0,
                      ha="right" if tilt else "center", fontsize=9)
        if bounded:
            ax.set_ylim(0, 1.05)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set(title=f"{metric} by condition (95% interval)", ylabel=metric)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(title="run", fontsize=8)
    return _save(fig, out / "summary.png")


def _plot_forgetting(runs: list[Run], out: Path) -> Path:
    import numpy as np
    fig, axes = _figure(len(runs), 5.5, 4.8)
    for run, ax in zip(runs, axes, strict=True):
        f = run.forgetting
        metric = str(f.get("metric") or "accuracy")
        mat = np.array([[np.nan if _num(v) is None else v for v in row] for row in f["matrix"]],
                       dtype=float)
        finite = mat[np.isfinite(mat)]
        bounded = finite.size and finite.min() >= 0 and finite.max() <= 1
        im = ax.imshow(np.ma.masked_invalid(mat), cmap="viridis", aspect="auto",
                       vmin=0 if bounded else None, vmax=1 if bounded else None)
        fig.colorbar(im, ax=ax, label=metric)
        ax.set_xticks(range(len(f["on"])), [str(x) for x in f["on"]], rotation=45, ha="right",
                      fontsize=8)
        ax.set_yticks(range(len(f["after"])), [str(x) for x in f["after"]], fontsize=8)
        if max(mat.shape) <= 12 and finite.size:  # small enough to print the values
            mid = (finite.max() + finite.min()) / 2
            for (a, b), v in np.ndenumerate(mat):
                if np.isfinite(v):
                    ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if v > mid else "white")
        ax.set(title=f"Forgetting: {metric}\n{run.label}", xlabel="evaluated on passage",
               ylabel="after update with passage")
    return _save(fig, out / "forgetting.png")


CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em;margin:.4em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.runs{display:flex;flex-wrap:wrap;gap:1.2em}.run{flex:1 1 380px;min-width:0;overflow-x:auto}
img{max-width:100%;height:auto;border:1px solid #eee}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}code{font-size:.9em}"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


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


def _overview(runs: list[Run]) -> str:
    """Manifest facts, one column per run."""
    def row(name, values):
        return f"<tr><th>{_e(name)}</th>" + "".join(f"<td>{v}</td>" for v in values) + "</tr>"

    def get(fn, m):
        try:
            v = fn(m)
        except (AttributeError, KeyError, TypeError):
            return "—"
        return "—" if v in (None, "") else f"<code>{_e(v)}</code>"
    rows = [row("run", [f"<b>{_e(r.label)}</b>" for r in runs]),
            row("folder", [f"<code>{_e(r.path)}</code>" for r in runs])]
    rows += [row(key, [get(fn, r.manifest) for r in runs]) for key, fn in MANIFEST_ROWS]
    return "<table>" + "".join(rows) + "</table>"


def _summary_table(run: Run) -> str:
    """Condition x metric, "mean [lo, hi]"."""
    metrics = _metric_names(run)
    head = "".join(f"<th>{_e(x)}</th>" for x in ["condition", "questions", "passages", *metrics])
    body = []
    counts = [n for c in _conditions(run) if isinstance(n := _info(run, c).get("n_passages"), int)]
    n_max = max(counts, default=0)
    for c in _conditions(run):
        cells = [_e(_info(run, c).get(k, "—")) for k in ("n_questions", "n_passages")]
        n = _info(run, c).get("n_passages")
        if isinstance(n, int) and n < n_max:  # a row on fewer passages says so
            cells[1] += f" (only {n} of {n_max})"
        for m in metrics:
            mean, lo, hi = _stat(run, c, m)
            cells.append(_e(_fmt(mean) + ("" if lo is None and hi is None
                                          else f" [{_fmt(lo)}, {_fmt(hi)}]")))
        body.append(f"<tr><th>{_e(c)}</th>" + "".join(f'<td class="n">{x}</td>' for x in cells)
                    + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _cell(v: Any) -> str:
    n = _num(v)
    return "—" if n is None else (str(int(n)) if n.is_integer() else f"{n:.4g}")


def _rounds_table(run: Run) -> str:
    """The numeric fields of metrics.jsonl's `round` events."""
    evs = [e for e in run.metrics if e.get("event") == "round"]
    keys = _union([k for k, v in e.items() if k != "event" and _num(v) is not None] for e in evs)
    if not keys:
        return ""
    body = "".join("<tr>" + "".join(f'<td class="n">{_e(_cell(e.get(k)))}</td>' for k in keys)
                   + "</tr>" for e in evs)
    return "<table><tr>" + "".join(f"<th>{_e(k)}</th>" for k in keys) + f"</tr>{body}</table>"


def _page(runs: list[Run], images: list[tuple[str, Path]]) -> str:
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    parts = [f"<h1>SEAL report</h1><p>{len(runs)} run(s): "
             + ", ".join(f"<b>{_e(r.label)}</b>" for r in runs) + f". Generated {_e(now)}.</p>",
             "<h2>Runs</h2>", _overview(runs)]
    for title, path in images:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts += [f"<h2>{_e(title)}</h2>",
                  f'<img src="data:image/png;base64,{data}" alt="{_e(title)}">']
    if not images:
        parts.append("<p><i>No rewards, summary or forgetting data to plot.</i></p>")
    if summarized := [r for r in runs if r.summary]:  # wide tables: stacked, not side by side
        parts.append("<h2>Evaluation summary (mean [95% interval])</h2>")
        parts += [f"<h3>{_e(r.label)}</h3>" + _summary_table(r) for r in summarized]
    if tables := [(r, t) for r in runs if (t := _rounds_table(r))]:
        parts += ["<h2>Rounds (metrics.jsonl)</h2>", '<div class="runs">'
                  + "".join(f'<div class="run"><h3>{_e(r.label)}</h3>{t}</div>' for r, t in tables)
                  + "</div>"]
    parts.append("<h2>Configuration</h2>")
    for r in runs:
        text = r.config_text if r.config_text is not None else "(no config.yaml)"
        parts.append(f"<details><summary>config.yaml — {_e(r.label)}</summary>"
                     f"<pre>{_e(text)}</pre></details>")
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"  # nothing from outside
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>SEAL report: {_e(', '.join(r.label for r in runs))}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def build_report(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write the plots and `report.html` for `run_dirs` into `out_dir`; return the html path."""
    if not run_dirs:
        raise ReportError("no run folders given")
    runs = [_load_run(Path(p)) for p in run_dirs]
    _label_runs(runs)
    _mpl()  # fail early, with the install hint, before writing anything
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: exists and is a file; --out names the report's folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"{out}: cannot create the report folder ({e.strerror or e})") from None
    for name in PLOT_NAMES:  # stale plots from an earlier report into the same folder
        (out / name).unlink(missing_ok=True)
    images: list[tuple[str, Path]] = []
    if trained := [r for r in runs if r.rewards]:
        images.append(("Reward distribution per round", _plot_rewards(trained, out)))
        images.append(("Mean reward per round", _plot_mean_reward(trained, out)))
    if evaluated := [r for r in runs if r.summary and _metric_names(r)]:
        images.append(("Accuracy by condition", _plot_summary(evaluated, out)))
    if forgot := [r for r in runs if r.forgetting]:
        images.append(("Forgetting", _plot_forgetting(forgot, out)))
    page = out / "report.html"
    page.write_text(_page(runs, images), encoding="utf-8")
    return page


def _cmd_report(args, argv=None) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReportWarning)
        try:
            page = build_report(args.runs, args.out)
        except ReportError as e:
            page = None
            print(f"seal report: error: {e}", file=sys.stderr)
    for w in caught:  # one line each, not Python's two-line warning format
        print(f"seal report: warning: {w.message}", file=sys.stderr)
    if page is None:
        return 2
    print(page)
    return 0


def add_cli(subparsers) -> None:
    """Register `seal report RUN [RUN ...] --out DIR`; the handler is `args.func(args) -> int`."""
    p = subparsers.add_parser(
        "report", help="plots and a self-contained HTML page for one or several runs",
        description="Write PNG plots and report.html (images embedded) for the given run "
                    "folders, side by side when several.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folder(s)")
    p.add_argument("--out", type=Path, default=Path("report"),
                   help="output folder (default: report/)")
    p.set_defaults(func=_cmd_report)
