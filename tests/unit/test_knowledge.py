import json

import pytest

from seal import knowledge as K
from seal.config import SELFEDIT_TEMPLATES, ConfigError, SelfEditConfig


def test_reads_both_layouts(tmp_path, squad_tiny):
    simple, counts = K.load_passages(squad_tiny)
    assert counts["passages"] == 4 and counts["questions"] == 8
    official = {"data": [{"title": p["title"], "paragraphs": [{"context": p["context"], "qas": [
        {"question": q["question"], "answers": [{"text": q["answer"], "answer_start": 0}]} for q in p["questions"]]}]}
        for p in json.loads(squad_tiny.read_text())]}
    f = tmp_path / "official.json"
    f.write_text(json.dumps(official))
    other, _ = K.load_passages(f)
    assert [(p.id, [q.answer for q in p.questions]) for p in other] == [(p.id, [q.answer for q in p.questions]) for p in simple]


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    ('[{"title": "a", "questions": []}]', "record 0: missing or empty 'context'"),
    ('[{"title": "a", "context": "x", "questions": "q"}]', "record 0: 'questions' must be a list"),
    ('[{"context": "x", "questions": [{"question": "q", "answer": "a"}]}, 5]', "record 1: expected an object"),
    ('{"data": 3}', "'data' must be a list"),
    ('[{"context": "x", "questions": []}]', "no passage with at least one question"),
])
def test_bad_files_name_file_and_record(tmp_path, content, needle):
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(K.DataError) as e:
        K.load_passages(f)
    assert "bad.json" in str(e.value) and needle in str(e.value)


def test_missing_file():
    with pytest.raises(K.DataError, match="no such data file"):
        K.load_passages("/nonexistent/file.json")


def test_passages_without_questions_are_skipped_and_counted():
    data = [{"context": "x y", "questions": []}, {"context": "z", "questions": [{"question": "q", "answer": "a"},
                                                                              {"question": "", "answer": "b"}]}]
    ps, counts = K.parse_squad(data)
    assert len(ps) == 1 and counts["skipped_no_questions"] == 1 and counts["skipped_questions"] == 1


def test_select_is_deterministic_and_disjoint(squad_tiny):
    ps, _ = K.load_passages(squad_tiny)
    a = K.select(ps, 2, seed=7)
    assert [p.id for p in a] == [p.id for p in K.select(ps, 2, seed=7)]
    b = K.select(ps, 2, seed=7, offset=2)
    assert not {p.id for p in a} & {p.id for p in b}


def test_parse_implications():
    text = "Here are some implications:\n1. Velmora was founded by salt traders.\n- The tower is green and white.\n\nok\n* Eel is exported to Tevra islands."
    assert K.parse_selfedit(text, "implications") == [
        "Velmora was founded by salt traders.", "The tower is green and white.", "Eel is exported to Tevra islands."]
    assert K.parse_selfedit("", "implications") == []
    assert K.parse_selfedit("   \n\n", "rewrite") == []


def test_parse_self_qa_and_rewrite():
    qa = "Question: Who founded Velmora?\nAnswer: salt traders\nQuestion: dangling"
    assert K.parse_selfedit(qa, "self-qa") == ["Question: Who founded Velmora?\nAnswer: salt traders"]
    rw = "Velmora is a town by the sea.\nIt has a tower.\n\nA second version of the passage here."
    assert K.parse_selfedit(rw, "rewrite") == ["Velmora is a town by the sea. It has a tower.", "A second version of the passage here."]


# Self-QA completions in the layouts models actually write; each must give the same two pairs.
SELF_QA_PAIRS = ["Question: Who founded Velmora?\nAnswer: Salt traders from Orsk.",
                 "Question: What colour is the tower?\nAnswer: Green and white."]


@pytest.mark.parametrize("completion", [
    # "Question 1: / Answer 1:"
    "Question 1: Who founded Velmora?\nAnswer 1: Salt traders from Orsk.\n\n"
    "Question 2: What colour is the tower?\nAnswer 2: Green and white.",
    # "Q1: / A1:" and "Q2. / A2."
    "Q1: Who founded Velmora?\nA1: Salt traders from Orsk.\nQ2. What colour is the tower?\nA2. Green and white.",
    # markdown bold / italics around the labels and the text
    "**Question:** Who founded Velmora?\n**Answer:** Salt traders from Orsk.\n\n"
    "*Q2:* What colour is the tower?\n__A2:__ **Green and white.**",
    # "**Q1:**" and "**Question**:" (colon outside the bold)
    "**Q1:** Who founded Velmora?\n**A1:** Salt traders from Orsk.\n"
    "**Question 2**: What colour is the tower?\n**Answer 2**: Green and white.",
    # labels inside a numbered list, preamble first
    "Here are some questions about the passage:\n\n1. Question: Who founded Velmora?\n   Answer: Salt traders from Orsk.\n"
    "2. **Question:** What colour is the tower?\n   **Answer:** Green and white.",
    # question and answer on the same line
    "Q: Who founded Velmora? A: Salt traders from Orsk.\n- **Question:** What colour is the tower? **Answer:** Green and white.",
    # bare labels with the text on the next line (also as markdown headings)
    "Question:\nWho founded Velmora?\nAnswer:\nSalt traders from Orsk.\n\n### Question 2\nWhat colour is the tower?\n### Answer\n\nGreen and white.",
    # numbered questions without a label, each followed by "Answer:"
    "1. Who founded Velmora?\nAnswer: Salt traders from Orsk.\n\n2. What colour is the tower?\n   Answer: Green and white.",
    # "Q. / A." (the "A." here is a label, not an initial: it answers a "Q." question)
    "Q. Who founded Velmora?\nA. Salt traders from Orsk.\nQ. What colour is the tower?\nA. Green and white.",
    # Windows line endings and a closing remark
    "Q1: Who founded Velmora?\r\nA1: Salt traders from Orsk.\r\nQ2: What colour is the tower?\r\nA2: Green and white.\r\nI hope this helps!",
])
def test_parse_self_qa_formats(completion):
    assert K.parse_selfedit(completion, "self-qa") == SELF_QA_PAIRS


def test_parse_self_qa_edge_cases():
    # nothing that pairs up is still [] (callers count these)
    for text in ("Velmora is a town by the sea. It has a tower.", "Question:", "Answer: salt traders",
                 "Question: Who founded Velmora?\n\nAnswer:", "Questions and answers:\n", "**Q1:** **A1:**"):
        assert K.parse_selfedit(text, "self-qa") == []
    # an answer made of initials keeps them; an orphan answer is skipped, the pending question is kept
    assert K.parse_selfedit("Answer: orphan one\nQ: Who founded the company?\nA: A. J. Smith", "self-qa") == [
        "Question: Who founded the company?\nAnswer: A. J. Smith"]
    # a new question replaces one that never got its answer
    assert K.parse_selfedit("Q: dangling question here\nQ: Where is Orsk?\nA: In the north.", "self-qa") == [
        "Question: Where is Orsk?\nAnswer: In the north."]


def test_bullets_keep_initials_and_abbreviations():
    text = ("A. J. Smith founded the company.\nU.S. forces landed in 1944.\na. The tower is green.\n"
            "(b) The port exports eel.\n2) Orsk is a city.\n• Tevra is an island.\nB) Salt was traded there.\n"
            "10. The harbour is deep.\n* E. Coli was found here.")
    assert K.parse_selfedit(text, "implications") == [
        "A. J. Smith founded the company.", "U.S. forces landed in 1944.", "The tower is green.",
        "The port exports eel.", "Orsk is a city.", "Tevra is an island.", "Salt was traded there.",
        "The harbour is deep.", "E. Coli was found here."]


def test_training_examples_prefix_title_and_append_passage(squad_tiny):
    p = K.load_passages(squad_tiny)[0][0]
    ex = K.training_examples(p, ["one two three"], include_passage=True)
    assert ex[0].completion == f"{p.title}\none two three" and ex[-1].completion.endswith(p.context)
    assert len(K.training_examples(p, ["one two three"], include_passage=False)) == 1


def test_prompt_templates(squad_tiny):
    p = K.load_passages(squad_tiny)[0][0]
    for t in ("implications", "implications-long", "rewrite", "self-qa"):
        assert p.context in K.selfedit_prompt(p, SelfEditConfig(template=t))
    assert K.selfedit_prompt(p, SelfEditConfig(template="custom", custom_template="Notes on {title}: {passage}")).startswith("Notes on")
    with pytest.raises(ConfigError, match="template must be one of"):
        SelfEditConfig(template="nope")
    assert set(SELFEDIT_TEMPLATES) == set(K.TEMPLATES) | {"custom"}


def test_grading():
    g = K.grade("Answer: The Ambertine Tower.\nmore text", "Ambertine Tower")
    assert g == {"em": 1.0, "f1": 1.0, "containment": 1.0}
    g = K.grade("It is the tower of Ambertine", "Ambertine Tower")
    assert g["em"] == 0.0 and g["containment"] == 0.0 and 0 < g["f1"] < 1
    assert K.grade("salt traders from Orsk", "salt traders")["containment"] == 1.0
