"""The report's figures (matplotlib's object API on the Agg canvas; pyplot's global state is not
used). Each function draws one PNG and returns its path; none draws a figure without data.

Gains are drawn as points with their 95% intervals around a line at 0, never as bars from 0
(a log-prob bar hanging from 0 makes the best condition the shortest bar). Round curves have
integer x axes and are only drawn from 2 rounds on.
"""

from __future__ import annotations

import math
from pathlib import Path

from seal.report.load import ReportError, Run, Table, as_dict, dig, num, stat
from seal.report.words import bench_ratios, is_fraction, reference_name

MPL_MISSING = "seal report needs matplotlib: pip install 'seal[report]'"
DPI = 100
WIDTH = 13.5  # inches at DPI: 1350 px, the page's 1400 px less its margins


def mpl():
    """matplotlib's Figure and Agg canvas, imported lazily."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError(MPL_MISSING) from None
    return Figure, FigureCanvasAgg


def figure(n_panels: int, panel_h: float, ncols: int = 2, width: float = WIDTH):
    Figure, Canvas = mpl()
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(width, panel_h * nrows), dpi=DPI)
    Canvas(fig)
    axes = [fig.add_subplot(nrows, ncols, k + 1) for k in range(n_panels)]
    return fig, axes


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    return path


def plain(text) -> str:
    """Text safe for a matplotlib label: no mathtext ($), no control characters."""
    s = "".join(c if c.isprintable() or c == "\n" else "\N{REPLACEMENT CHARACTER}" for c in str(text))
    return s.replace("$", r"\$")


def constant_metrics(t: Table) -> dict[str, float]:
    """Metrics with one value in every row (mean and interval alike): named, not drawn."""
    out = {}
    for m in t.metrics():
        vals = [v for c in t.conditions for v in t.level(c, m) if v is not None]
        if vals and max(vals) - min(vals) < 1e-12:
            out[m] = vals[0]
    return out


def gain_plot(t: Table, title: str, path: Path) -> Path | None:
    """Per condition, every paired gain the table has (over no adaptation, over the model's own
    self-edits, over any control), point + 95% interval; one panel per non-constant metric."""
    gains = t.gains()
    skip = constant_metrics(t)
    metrics = [m for m in t.metrics() if m not in skip
               and any(stat(g.get(m))[0] is not None for by in gains.values() for g in by.values())]
    if not metrics:
        return None
    conds = [c for c in t.conditions if any(c in by for by in gains.values())]
    conds += [c for by in gains.values() for c in by if c not in conds]
    fig, axes = figure(len(metrics), 1.3 + 0.5 * len(conds) * max(1, len(gains)) ** 0.5, ncols=3)
    step = 0.7 / max(1, len(gains))
    for ax, m in zip(axes, metrics, strict=True):
        scale = 100.0 if is_fraction(m) else 1.0
        for k, (key, by) in enumerate(gains.items()):
            ys, xs, err = [], [], [[], []]
            for i, c in enumerate(conds):
                mean, lo, hi = stat(as_dict(by.get(c)).get(m))
                if mean is None:
                    continue
                ys.append(len(conds) - 1 - i + 0.35 - step * (k + 0.5))
                xs.append(mean * scale)
                err[0].append(max(0.0, mean - lo) * scale if lo is not None else 0.0)
                err[1].append(max(0.0, hi - mean) * scale if hi is not None else 0.0)
            if xs:
                ax.errorbar(xs, ys, xerr=err, fmt="o", color=f"C{k % 10}", capsize=4, ms=6, lw=1.6,
                            label="vs " + reference_name(key))
        ax.axvline(0, color="0.25", lw=1)
        ax.set_yticks(range(len(conds)), [plain(c) for c in reversed(conds)], fontsize=10)
        ax.set_ylim(-0.6, len(conds) - 0.4)
        unit = " (percentage points)" if scale == 100.0 else ""
        ax.set(title=plain(f"{m}: paired gain, 95% interval"), xlabel=plain(f"gain in {m}{unit}"))
        ax.grid(axis="x", alpha=0.3)
    legend = {}  # every comparison once, whichever panel has it
    for ax in axes:
        for h, lbl in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(lbl, h)
    labels, handles = list(legend), list(legend.values())
    fig.suptitle(plain(title), fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.93 if len(axes) <= 3 else 0.96))
    fig.legend(handles, labels, loc="upper center", ncol=min(4, len(labels)), fontsize=10, frameon=False,
               bbox_to_anchor=(0.5, 0.955 if len(axes) <= 3 else 0.975))
    fig.savefig(path, dpi=DPI, format="png")
    return path


ROUND_PANELS = {  # panel -> the done.json fields (paths) it draws; drawn when any round has one
    "reward": [("mean_reward",), ("reward_quantiles", "median")],
    "share": [("n_kept",), ("frac_positive",), ("n_empty",)],
    "logprob": [("kept_logprob_before",), ("kept_logprob_after",)],
    "length": [("selfedits", "mean_tokens"), ("kept_selfedits", "mean_tokens")],
    "distinct": [("selfedits", "distinct_2"), ("kept_selfedits", "distinct_2")],
    "items": [("selfedits", "mean_items"), ("kept_selfedits", "mean_items")],
}


def round_panels(run: Run) -> list[str]:
    """The round curves a run has data for (the reward panel also from rewards.jsonl alone)."""
    ev = run.round_events
    return [p for p, paths in ROUND_PANELS.items()
            if any(dig(e, *f) is not None for e in ev.values() for f in paths)
            or (p == "reward" and any(rd.rewards for rd in run.rounds.values()))]


def rounds_plot(run: Run, path: Path) -> Path | None:
    """ReSTEM rounds as lines over integer rounds: rewards, kept / positive / unparsable shares,
    the M-step's movement of the kept self-edits' log-prob, their length, distinct-2 and parsed
    items. None with fewer than 2 rounds."""
    ev = run.round_events
    panels = round_panels(run)
    if len(ev) < 2 or not panels:
        return None
    rs = list(ev)

    def series(*keys):
        return [dig(ev[r], *keys) for r in rs]

    dist = {r: sorted(rd.rewards.values()) for r, rd in run.rounds.items() if rd.rewards}
    fig, axes = figure(len(panels), 3.6, ncols=3)

    def line(ax, ys, label, **kw):
        pts = [(r, y) for r, y in zip(rs, ys, strict=True) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label, lw=2, **{"ls": "-", **kw})

    for ax, name in zip(axes, panels, strict=True):
        if name == "reward":
            q = {k: [] for k in ("min", "q25", "median", "q75", "max")}
            for r in rs:
                vals = dist.get(r)
                rq = as_dict(ev[r].get("reward_quantiles"))
                for k, f in (("min", 0), ("q25", .25), ("median", .5), ("q75", .75), ("max", 1)):
                    q[k].append(vals[min(len(vals) - 1, int(round(f * (len(vals) - 1))))] if vals else num(rq.get(k)))
            if all(v is not None for v in q["min"] + q["max"]):
                ax.fill_between(rs, q["min"], q["max"], color="C0", alpha=0.12, label="min-max")
            if all(v is not None for v in q["q25"] + q["q75"]):
                ax.fill_between(rs, q["q25"], q["q75"], color="C0", alpha=0.3, label="quartiles")
            line(ax, q["median"], "median", color="C0")
            line(ax, series("mean_reward"), "mean", color="C3", ls="--")
            line(ax, series("mean_kept_reward"), "mean of kept", color="C2", ls=":")
            ax.set(title="Reward of each self-edit", ylabel="reward")
        elif name == "share":
            n = [s or t for s, t in zip(series("n_scored"), series("n_selfedits"), strict=True)]
            line(ax, [k / t if k is not None and t else None for k, t in zip(series("n_kept"), n, strict=True)], "kept")
            line(ax, series("frac_positive"), "reward > 0")
            line(ax, [e / t if e is not None and t else None
                      for e, t in zip(series("n_empty"), series("n_selfedits"), strict=True)], "unparsable")
            ax.set(title="Share of self-edits", ylabel="share", ylim=(-0.03, 1.03))
        elif name == "logprob":
            line(ax, series("kept_logprob_before"), "before the M-step")
            line(ax, series("kept_logprob_after"), "after the M-step")
            ax.set(title="Kept self-edits' log-prob per token", ylabel="log-prob")
        elif name == "length":
            line(ax, series("selfedits", "mean_tokens"), "all")
            line(ax, series("kept_selfedits", "mean_tokens"), "kept")
            ax.set(title="Self-edit length", ylabel="tokens")
        elif name == "items":
            line(ax, series("selfedits", "mean_items"), "all")
            line(ax, series("kept_selfedits", "mean_items"), "kept")
            ax.set(title="Parsed items per self-edit", ylabel="items")
        else:
            line(ax, series("selfedits", "distinct_2"), "all")
            line(ax, series("kept_selfedits", "distinct_2"), "kept")
            ax.set(title="Diversity (distinct-2)", ylabel="distinct word bigrams / all")
        ax.set_xticks(rs, [str(r) for r in rs])
        ax.set_xlabel("ReSTEM round")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(plain(f"ReSTEM rounds: {run.label}"), fontsize=12)
    return save(fig, path)


def _axis_labels(labels: list) -> tuple[list[str], str]:
    """Tick labels without a prefix they all share ("passage 1", "passage 2" -> "1", "2"; "passage")."""
    words = [str(x).rsplit(" ", 1) for x in labels]
    heads = {w[0] for w in words if len(w) == 2}
    if len(heads) == 1 and sum(len(w) == 2 for w in words) >= len(words) - 1:
        return [plain(w[-1]) for w in words], plain(heads.pop())
    return [plain(x) for x in labels], ""


def heatmaps(views: list[tuple[str, dict]], path: Path) -> Path | None:
    """Forgetting matrices side by side (row: after which update; column: graded on which
    passage), one colour scale for all."""
    import numpy as np

    if not views:
        return None
    mats = [np.array([[np.nan if num(v) is None else v for v in row] for row in f["matrix"]], dtype=float)
            for _, f in views]
    finite = np.concatenate([m[np.isfinite(m)] for m in mats])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    ncols = min(len(views), 5)
    fig, axes = figure(len(views), 4.0 if ncols > 2 else 4.6, ncols=ncols)
    im = None
    for k, (ax, (label, f), mat) in enumerate(zip(axes, views, mats, strict=True)):
        im = ax.imshow(np.ma.masked_invalid(mat), cmap="viridis", aspect="auto", vmin=vmin, vmax=vmax)
        xt, xname = _axis_labels(f["on"])
        yt, yname = _axis_labels(f["after"])
        ax.set_xticks(range(len(xt)), xt, fontsize=8)
        ax.set_yticks(range(len(yt)), yt, fontsize=8)
        if max(mat.shape) <= 12 and ncols <= 3:
            mid = (vmin + vmax) / 2
            for (a, b), v in np.ndenumerate(mat):
                if np.isfinite(v):
                    ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if v > mid else "white")
        ax.set_title(plain(label), fontsize=11)
        ax.set_xlabel(f"graded on {xname}".strip())
        if k % ncols == 0:
            ax.set_ylabel(f"after the update with {yname}".strip())
    fig.colorbar(im, ax=axes, shrink=0.85, label=plain(str(views[0][1].get("metric", "")).split(" (")[0]))
    fig.savefig(path, dpi=DPI, format="png", bbox_inches="tight")
    return path


def retention_plot(runs: list[tuple[str, dict]], path: Path) -> Path | None:
    """The first passage's grade after each later update, per guard, with its 95% interval."""
    drawn = []
    for label, c in runs:
        m = c.get("metric")
        pts = [stat(x) for x in as_dict(as_dict(c.get("summary")).get(m)).get("first_retention") or []]
        if any(p[0] is not None for p in pts):
            drawn.append((label, m, pts, (as_dict(c.get("mean_base")).get(m) or [None])[0]))
    if not drawn:
        return None
    fig, (ax,) = figure(1, 4.2, width=9.0)
    for k, (label, m, pts, base) in enumerate(drawn):
        shift = 0.0 if len(drawn) <= 2 else 0.3 * (k / (len(drawn) - 1) - 0.5)  # intervals side by side
        have = [(i + 1 + shift, p) for i, p in enumerate(pts) if p[0] is not None]
        err = [[max(0.0, p[0] - p[1]) if p[1] is not None else 0.0 for _, p in have],
               [max(0.0, p[2] - p[0]) if p[2] is not None else 0.0 for _, p in have]]
        ax.errorbar([x for x, _ in have], [p[0] for _, p in have], yerr=err, fmt="o-", color=f"C{k % 10}", lw=2,
                    capsize=3, elinewidth=1, alpha=0.9, label=plain(label))
        if num(base) is not None:
            ax.axhline(base, color=f"C{k % 10}", ls=":", lw=1)
    ax.set_xticks(range(1, max(len(d[2]) for d in drawn) + 1))
    ax.set(title="Retention: the first passage's grade after each update (95% interval; dotted: never edited)",
           xlabel="updates made (the first passage's is 1)", ylabel=plain(drawn[0][1]))
    ax.grid(alpha=0.3)
    ax.legend(title="guard / run", fontsize=9)
    return save(fig, path)


def bench_plot(benches: list, path: Path) -> Path | None:
    """Per path, each result's speed ratio (dots) with min-max line and median mark."""
    import statistics

    by: dict[str, list[float]] = {}
    for b in benches:
        for k, v in bench_ratios(b).items():
            by.setdefault(k, []).append(v)
    if not by:
        return None
    names = sorted(by, key=lambda k: statistics.median(by[k]))
    fig, (ax,) = figure(1, 1.2 + 0.42 * len(names), width=9.0)
    for i, k in enumerate(names):
        v = by[k]
        ax.plot([min(v), max(v)], [i, i], color="0.6", lw=3, solid_capstyle="round")
        ax.plot(v, [i] * len(v), "o", color="C0", ms=5, alpha=0.7)
        ax.plot([statistics.median(v)], [i], "|", color="C3", ms=16, mew=2.5)
    ax.axvline(1, color="0.25", lw=1)
    ax.set_yticks(range(len(names)), [plain(n) for n in names])
    ax.set(title="Speed ratio over the reference path (dots: results; bar: min-max; red: median)",
           xlabel="x reference")
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)
