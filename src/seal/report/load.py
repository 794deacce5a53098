"""Reading what `seal report` is given, defensively: every file but a run's manifest.json is
optional, a truncated JSONL line (a run killed mid-write) is skipped with a warning, and a field
missing from an older run's summary is simply not shown.

Four kinds of input:
  run        a run folder (manifest.json): `seal train` rounds (rounds/round_<r>/), an evaluation
             table (summary.json, at the top or in eval/ for demo runs) with its detail files
             (base.jsonl, results.jsonl, selfedits.jsonl, passages.jsonl), forgetting.json,
             or a `seal continual` result (continual.json)
  registry   a `seal adapt` registry folder (registry.sqlite), or `seal history --json` saved
  bench      a `seal bench` JSON result (or an A/B script's)
  collected  a run collected into one JSON for results/ (scripts/summarize_train.py): its rounds'
             records, rewards and kept self-edits, and its evaluation summary
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ReportError(ValueError):
    """Input that cannot be reported on (or matplotlib missing); the message is one line."""


class ReportWarning(UserWarning):
    """Something in a run folder was skipped (a truncated line, an unreadable optional file)."""


def warn(msg: str) -> None:
    warnings.warn(msg, ReportWarning, stacklevel=3)


def read_json(path: Path) -> Any:
    """Parsed JSON, or None (with a warning when the file exists but cannot be read)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        warn(f"{path}: ignored, not readable JSON ({e})")
        return None


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file ([] when it is missing); bad lines are skipped with a warning."""
    if not path.is_file():
        return []
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError as e:
        warn(f"{path}: ignored ({e})")
        return []
    out = []
    for k, line in enumerate(lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            warn(f"{path}: ignoring " + ("truncated last line" if k == len(lines) - 1 else "a malformed line"))
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def num(x: Any) -> float | None:
    """A finite number as float, else None (bools, strings, NaN and missing values alike)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def stat(x: Any) -> tuple[float | None, float | None, float | None]:
    """(mean, lo, hi) of a {"mean", "lo", "hi"} interval or a bare number."""
    if isinstance(x, dict):
        return num(x.get("mean")), num(x.get("lo")), num(x.get("hi"))
    return num(x), None, None


def as_dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def dig(x: Any, *path: str) -> float | None:
    """The number at `path` in nested dicts (done.json's selfedits.distinct_2), or None."""
    for k in path:
        x = as_dict(x).get(k)
    return num(x)


# ----------------------------------------------------------------------------- run folders

@dataclass
class Round:
    """One ReSTEM round's folder: done.json, the rewards (per self-edit: mean over inner-loop
    seeds, as restem.selfedit_rewards), the sampled self-edits and which ones sft.jsonl kept."""

    index: int
    done: dict = field(default_factory=dict)
    rewards: dict[tuple[str, int], float] = field(default_factory=dict)
    samples: dict[str, dict[int, str]] = field(default_factory=dict)  # passage -> sample index -> text
    kept: set[tuple[str, int]] = field(default_factory=set)


@dataclass
class Table:
    """An evaluation table: summary.json and, when present, its per-question detail files."""

    where: Path
    summary: dict
    base: dict[str, list[dict]] = field(default_factory=dict)        # passage -> graded questions
    results: list[dict] = field(default_factory=list)                # results.jsonl
    selfedits: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # source -> passage -> texts
    titles: dict[str, str] = field(default_factory=dict)             # passage -> title

    @property
    def conditions(self) -> list[str]:
        """Every condition, in the summary's order, then any the order does not name."""
        conds, order = self.summary["conditions"], self.summary.get("order")
        order = [c for c in order if c in conds] if isinstance(order, list) else []
        return order + [c for c in conds if c not in order]

    def info(self, cond: str) -> dict:
        return as_dict(self.summary["conditions"].get(cond))

    def metrics(self) -> list[str]:
        return union(list(as_dict(self.info(c).get("metrics"))) for c in self.conditions)

    def level(self, cond: str, metric: str):
        return stat(as_dict(self.info(cond).get("metrics")).get(metric))

    @property
    def reward_metric(self) -> str:
        m = self.summary.get("reward_metric")
        return m if isinstance(m, str) and m in self.metrics() else (
            "containment" if "containment" in self.metrics() else (self.metrics() or ["?"])[0])

    def gains(self) -> dict[str, dict[str, dict]]:
        """Every paired comparison the summary has: `gain_vs_<reference>` -> condition -> metric -> interval."""
        return {k: {c: as_dict(g) for c, g in v.items()} for k, v in self.summary.items()
                if k.startswith("gain_vs_") and isinstance(v, dict) and v}


@dataclass
class Run:
    path: Path
    label: str
    manifest: dict
    config_text: str | None = None
    metrics: list[dict] = field(default_factory=list)
    rounds: dict[int, Round] = field(default_factory=dict)
    table: Table | None = None
    forgetting: dict | None = None
    continual: dict | None = None

    @property
    def round_events(self) -> dict[int, dict]:
        """Per round, done.json, else metrics.jsonl's `round` event (older or killed runs)."""
        out = {}
        for e in self.metrics:
            r = e.get("round", e.get("step"))
            if e.get("event") == "round" and isinstance(r, int):
                out[r] = e
        for r, rd in self.rounds.items():
            if rd.done:
                out[r] = rd.done
        return dict(sorted(out.items()))


def data_passages(run: Run) -> dict[str, tuple[str, str]]:
    """(title, text) by passage id from the data file the manifest names, when it is still there
    and unchanged (its sha256 as recorded); {} otherwise (a changed file is named in a warning)."""
    from seal.knowledge import DataError, file_sha256, load_passages

    data = as_dict(run.manifest.get("data"))
    path = data.get("path")
    if not isinstance(path, str) or not path or not Path(path).is_file():
        return {}
    sha = data.get("sha256")
    if isinstance(sha, str) and sha and file_sha256(path) != sha:
        warn(f"{path}: changed since the run (sha256 differs from its manifest); passage titles not shown")
        return {}
    try:
        passages, _ = load_passages(path, require_questions=False)
    except DataError as e:
        warn(f"{e}; passage titles not shown")
        return {}
    return {p.id: (p.title, p.context) for p in passages}


def union(lists) -> list:
    out: list = []
    for xs in lists:
        out += [x for x in xs if x not in out]
    return out


def load_run(path: Path) -> Run:
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise ReportError(f"{path}: not a run folder (no manifest.json), registry or bench JSON")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{mpath}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise ReportError(f"{mpath}: manifest is not a JSON object")
    run = Run(path=path, label=path.resolve().name or str(path), manifest=manifest)
    if (path / "config.yaml").is_file():
        run.config_text = (path / "config.yaml").read_text(encoding="utf-8", errors="replace")
    run.metrics = read_jsonl(path / "metrics.jsonl")
    for rdir in sorted((path / "rounds").glob("round_*")) if (path / "rounds").is_dir() else ():
        if m := re.fullmatch(r"round_(\d+)", rdir.name):
            rd = load_round(rdir, int(m.group(1)))
            if rd.done or rd.rewards:
                run.rounds[rd.index] = rd
    run.rounds = dict(sorted(run.rounds.items()))
    for sub in ("", "eval"):  # evaluate/arc runs at the top, demo runs in eval/
        s = read_json(path / sub / "summary.json") if run.table is None else None
        if isinstance(s, dict) and isinstance(s.get("conditions"), dict) and s["conditions"]:
            run.table = load_table(path / sub, s)
        run.forgetting = run.forgetting or check_forgetting(path / sub / "forgetting.json")
    c = read_json(path / "continual.json")
    if isinstance(c, dict) and isinstance(c.get("summary"), dict):
        run.continual = c
    return run


def load_collected(path: Path, obj: dict) -> Run:
    """A run collected into one JSON for results/ (scripts/summarize_train.py, collect_result.py):
    its manifest, config, each round's done.json record, rewards and kept self-edits (with their
    texts; the other samples are not kept there), and an evaluation summary."""
    run = Run(path=path, label=path.stem, manifest=as_dict(obj.get("manifest")))
    if isinstance(obj.get("config"), dict):
        import yaml

        run.config_text = yaml.safe_dump(obj["config"], sort_keys=False)
    for done in obj.get("rounds") or []:
        if isinstance(done, dict) and isinstance(done.get("round"), int):
            run.rounds[done["round"]] = Round(done["round"], done=done)
    for name, recs in as_dict(obj.get("rewards")).items():
        if (m := re.fullmatch(r"round_(\d+)", name)) and isinstance(recs, list):
            rd = run.rounds.setdefault(int(m.group(1)), Round(int(m.group(1))))
            rd.rewards = mean_rewards(r for r in recs if isinstance(r, dict))
    for name, recs in as_dict(obj.get("kept")).items():
        if (m := re.fullmatch(r"round_(\d+)", name)) and isinstance(recs, list) and int(m.group(1)) in run.rounds:
            rd = run.rounds[int(m.group(1))]
            for k in recs:
                pid, j = as_dict(k).get("passage_id"), as_dict(k).get("sample")
                if isinstance(pid, str) and isinstance(j, int):
                    rd.kept.add((pid, j))
                    if isinstance(k.get("completion"), str):
                        rd.samples.setdefault(pid, {})[j] = k["completion"]
    run.rounds = dict(sorted(run.rounds.items()))
    ev = as_dict(obj.get("eval"))
    s = obj.get("summary") or ev.get("summary") or obj.get("eval_summary")
    if isinstance(s, dict) and isinstance(s.get("conditions"), dict) and s["conditions"]:
        run.table = Table(path, s)
    return run


def is_collected(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("manifest"), dict) and \
        any(k in obj for k in ("rounds", "summary", "eval", "eval_summary"))


def mean_rewards(recs) -> dict[tuple[str, int], float]:
    """r(SE) per (passage, sample): the mean over its inner-loop seeds, as restem.selfedit_rewards."""
    by_se: dict[tuple[str, int], list[float]] = {}
    for rec in recs:
        pid, j, r = rec.get("passage_id", rec.get("task_id")), rec.get("sample"), num(rec.get("reward"))
        if isinstance(pid, str) and isinstance(j, int) and r is not None:
            by_se.setdefault((pid, j), []).append(r)
    return {k: sum(v) / len(v) for k, v in by_se.items()}


def load_round(rdir: Path, index: int) -> Round:
    rd = Round(index, done=as_dict(read_json(rdir / "done.json")))
    rd.rewards = mean_rewards(read_jsonl(rdir / "rewards.jsonl"))
    for rec in read_jsonl(rdir / "samples.jsonl"):
        pid, comps = rec.get("passage_id", rec.get("task_id")), rec.get("completions")
        if isinstance(pid, str) and isinstance(comps, list):
            rd.samples[pid] = {j: str(c) for j, c in enumerate(comps)}
    rd.kept = {(rec.get("passage_id", rec.get("task_id")), rec.get("sample"))
               for rec in read_jsonl(rdir / "sft.jsonl")}
    return rd


def load_table(where: Path, summary: dict) -> Table:
    t = Table(where, summary)
    for rec in read_jsonl(where / "base.jsonl"):
        if isinstance(rec.get("passage_id"), str) and isinstance(rec.get("questions"), list):
            t.base[rec["passage_id"]] = rec["questions"]
    t.results = [r for r in read_jsonl(where / "results.jsonl")
                 if isinstance(r.get("condition"), str) and isinstance(r.get("passage_id"), str)]
    for rec in read_jsonl(where / "selfedits.jsonl"):
        src, pid, comps = rec.get("source"), rec.get("passage_id"), rec.get("completions")
        if isinstance(src, str) and isinstance(pid, str) and isinstance(comps, list):
            t.selfedits.setdefault(src, {})[pid] = [str(c) for c in comps]
    for rec in read_jsonl(where / "passages.jsonl"):
        if isinstance(rec.get("passage_id"), str):
            t.titles[rec["passage_id"]] = str(rec.get("title") or "")
    return t


def check_forgetting(where: Path) -> dict | None:
    if not isinstance(f := read_json(where), dict):
        return None
    after, on, mat = (f.get(k) or [] for k in ("after", "on", "matrix"))
    if (isinstance(mat, list) and after and on and len(mat) == len(after)
            and all(isinstance(r, list) and len(r) == len(on) for r in mat)):
        return f
    warn(f"{where}: ignored, matrix shape does not match 'after' x 'on'")
    return None


# ----------------------------------------------------------------------------- registries, bench results

@dataclass
class Registry:
    path: Path
    label: str
    history: dict


@dataclass
class Bench:
    path: Path
    label: str
    result: dict


def registry_history(path: Path) -> dict:
    """`seal history --json` of the registry folder `path` (read without the writer's lock)."""
    from seal.documents.registry import RegistryError
    from seal.documents.versions import history

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return history(str(path), as_json=True)
    except RegistryError as e:
        raise ReportError(str(e).splitlines()[0]) from None


def is_history(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("versions"), list) and "current" in obj


def load_any(path: Path) -> Run | Registry | Bench:
    """A run folder, registry folder, saved `seal history --json`, or bench JSON."""
    label = path.resolve().name or str(path)
    if path.is_dir() and (path / "registry.sqlite").is_file():
        return Registry(path, label, registry_history(path))
    if path.is_file():
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ReportError(f"{path}: not readable JSON ({e})") from None
        if is_history(obj):
            return Registry(path, label, obj)
        if is_collected(obj):
            return load_collected(path, obj)
        if isinstance(obj, dict) and any(k in obj for k in ("paths", "variants", "runs", "speedup_vs_ref")):
            return Bench(path, label, obj)
        raise ReportError(f"{path}: neither a bench result, a collected run nor `seal history --json` output")
    if not path.exists():
        raise ReportError(f"{path}: no such run folder or file")
    return load_run(path)


def label_items(items: list) -> None:
    """Folder names as labels; parent/name (then #k) where names clash."""
    names = [x.label for x in items]
    for x in items:
        if names.count(x.label) > 1:
            x.label = "/".join(x.path.resolve().parts[-2:])
    seen: dict[str, int] = {}
    for x in items:
        seen[x.label] = seen.get(x.label, 0) + 1
        if seen[x.label] > 1:
            x.label = f"{x.label} #{seen[x.label]}"
