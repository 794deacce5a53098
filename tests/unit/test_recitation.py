"""scripts/recitation.py: how often a table's closed-book answers say the passage back word for word."""

from __future__ import annotations

import json

import pytest

from seal import knowledge as K
from seal.config import DataConfig
from seal.runs import write_jsonl


def test_an_answer_recites_only_whole_words_of_its_passage(script):
    recites = script("recitation").recites
    text = "velmora is harbor town on quillan coast founded in 1742 by salt traders"
    assert recites("Velmora is a harbor town, on the Quillan coast!", text, 6)  # normalized: case, articles
    assert not recites("Velmora is a harbor town", text, 6)  # shorter than the words asked for
    assert not recites("Velmora is harbor town on quill", text, 6)  # "quill" is not a word of the passage
    assert not recites("Town on Quillan shore founded in 1742", text, 6)  # one word differs
    assert recites("Traders founded it", "founded it traders", 1) and not recites("", text, 1)


def _run(tmp, squad_tiny, rows: dict[str, list[tuple[str, float]]]):
    """A table at `tmp` over the tiny fixture: each row gives every passage's one update the
    same (answer, containment) pairs, an answer "<words>" standing for the passage's first words."""
    passages, _ = K.load_selection(DataConfig(path=str(squad_tiny)), 0)
    (tmp / "config.yaml").write_text(f"data:\n  path: {squad_tiny}\nseed: 0\n")
    recs = []
    for row, answers in rows.items():
        for p in passages:
            first = " ".join(p.context.split()[:8])
            recs.append({"key": f"{row}/{p.id}/0", "condition": row, "passage_id": p.id, "metrics": {},
                         "questions": [{"answer": first if a == "<words>" else a, "containment": c} for a, c in answers]})
    write_jsonl(tmp / "results.jsonl", recs)
    return passages


def test_each_row_is_split_into_reciting_and_other_answers(tmp_path, squad_tiny, script, capsys):
    passages = _run(tmp_path, squad_tiny, {"passage": [("<words>", 1.0), ("<words>", 0.0), ("no idea at all here", 0.0)],
                                           "self-edits": [("it was founded by some traders long ago", 1.0)]})
    out = tmp_path / "recite.json"
    assert script("recitation").main([str(tmp_path), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    p, s = rows["passage"], rows["self-edits"]
    assert p["n_passages"] == len(passages) and p["n_answers"] == 3 * len(passages)
    assert p["recite"]["mean"] == pytest.approx(2 / 3) and s["recite"]["mean"] == 0.0
    assert (p["containment_reciting"], p["containment_other"]) == (0.5, 0.0)
    assert p["contained_by_reciting"] == pytest.approx(1 / 3)
    assert s["containment_reciting"] is None and (s["containment_other"], s["contained_by_reciting"]) == (1.0, 0.0)
    assert "passage" in capsys.readouterr().out


def test_a_table_the_data_does_not_match_is_refused_by_name(tmp_path, squad_tiny, script):
    main = script("recitation").main
    with pytest.raises(SystemExit, match="results.jsonl: not found"):
        main([str(tmp_path)])
    _run(tmp_path, squad_tiny, {"passage": [("<words>", 1.0)]})
    write_jsonl(tmp_path / "results.jsonl", [{"key": "passage/nosuchid/0", "condition": "passage",
                                              "passage_id": "nosuchid", "questions": []}])
    with pytest.raises(SystemExit, match="row 'passage' has passage nosuchid"):
        main([str(tmp_path)])
    write_jsonl(tmp_path / "results.jsonl", [{"metrics": {}}])
    with pytest.raises(SystemExit, match="results.jsonl: record 1: not a table result"):
        main([str(tmp_path)])
    with pytest.raises(SystemExit, match="no such data file"):
        main([str(tmp_path), "--data", str(tmp_path / "gone.json")])
