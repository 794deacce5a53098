"""Label-free probes, the faithfulness filter, reading documents and cutting them into chunks."""

from __future__ import annotations

import pytest

from seal import knowledge as K
from seal.config import EvalConfig, ModelConfig
from seal.documents import oversight
from seal.documents.reading import chunk_text, read_document
from seal.knowledge import probes as P
from seal.training.generation import HFGenerator
from seal.training.inner_loop import answer_logprobs
from seal.training.models import load_model

VELMORA = K.Passage("v", "Velmora", "Velmora is a harbor town founded in 1742 by salt traders. Its lighthouse is "
                    "painted green and white. The town holds a lantern festival every April.", [])


class ScriptedGenerator:
    """Answers from a script: the probe-writing prompt gets `questions`, an in-context question
    the answer its question maps to; records the temperatures it was asked for."""

    def __init__(self, questions: list[str], answers: dict[str, str]):
        self.questions, self.answers, self.temperatures = questions, answers, []

    def generate(self, prompts, *, n=1, max_new_tokens=0, temperature=0.0, top_p=1.0, seed=0, rows=None,
                 batch_size=16, progress=None):
        out = []
        for p in prompts:
            if "write" in p and "questions" in p:
                self.temperatures.append(temperature)
                out.append([self.questions.pop(0) if self.questions else ""])
            else:
                q = p.rsplit("Question: ", 1)[1].split("\n")[0]
                out.append([self.answers.get(q, "")])
        return out


def test_parse_questions_strips_labels_and_keeps_only_questions():
    text = ("Here are some questions:\n1. Who founded Velmora?\n- **Question 2:** What color is the lighthouse? "
            "Green and white.\nQ3) When is the festival held?\nWhy?\nVelmora is a harbor town.\n")
    assert P.parse_questions(text) == ["Who founded Velmora?", "What color is the lighthouse?",
                                       "When is the festival held?"]


def test_supported_needs_every_content_word_in_the_document():
    assert P.supported("salt traders", VELMORA.context)
    assert P.supported("The salt traders.", VELMORA.context)
    assert not P.supported("fishermen", VELMORA.context)
    assert not P.supported("the", VELMORA.context)  # no content word: not a usable reference


def test_write_probes_keeps_supported_new_questions_and_fills_with_cloze():
    gen = ScriptedGenerator(
        ["1. Who founded Velmora?\n2. Who founded Velmora?\n3. Who rules Velmora?", "What colors is the lighthouse?"],
        {"Who founded Velmora?": "Salt traders", "Who rules Velmora?": "a duke",
         "What colors is the lighthouse?": "green and white"})
    probes = P.write_probes(gen, _Tok(), False, VELMORA, 3, seed=0)
    assert [(p.question, p.answer, p.kind) for p in probes[:2]] == [
        ("Who founded Velmora?", "Salt traders", "model"), ("What colors is the lighthouse?", "green and white", "model")]
    assert gen.temperatures == [0.0, 1.0]  # greedy first, one sampled try for the rest
    assert probes[2].kind == "cloze" and len(probes) == 3 and all(p.title == "Velmora" for p in probes)
    assert P.write_probes(ScriptedGenerator([], {}), _Tok(), False, VELMORA, 2, 0, fill="none") == []


class _Tok:
    """format_prompt with chat=False never touches the tokenizer."""


def test_cloze_probes_blank_the_last_content_words_spread_over_the_passage():
    probes = P.cloze_probes(VELMORA, 10)
    assert [(p.question, p.answer) for p in probes] == [
        ("Complete the sentence: Velmora is a harbor town founded in 1742 by ...", "salt traders"),
        ("Complete the sentence: Its lighthouse is painted ...", "green and white"),
        ("Complete the sentence: The town holds a lantern ...", "festival every April")]
    assert [p.answer for p in P.cloze_probes(VELMORA, 2)] == ["salt traders", "green and white"]
    taken = {K.normalize_answer(probes[0].question)}
    assert [p.answer for p in P.cloze_probes(VELMORA, 10, taken)] == ["green and white", "festival every April"]


def test_probe_scores_grade_closed_book_answers_against_the_references(tiny_model_dir):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    probes = P.cloze_probes(VELMORA, 2)
    (res,) = P.probe_scores(model, tok, HFGenerator(model, tok), True, [probes], [-1], EvalConfig(max_answer_tokens=4))
    assert len(res["probes"]) == 2 and set(res["metrics"]) == {"logprob", "containment", "f1", "em"}
    for g, p in zip(res["probes"], probes):
        assert g["gold"] == p.answer and g["f1"] == K.f1_score(g["answer"], p.answer)
    (q,) = P.probe_passages([VELMORA, K.Passage("x", "X", "x", [])], {"v": probes})
    assert q.questions == probes and q.context == VELMORA.context


def test_faithfulness_gain_is_the_log_prob_the_document_adds(tiny_model_dir):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    items = ["Velmora was founded by salt traders.", "Velmora exports purple wool to Mars."]
    gains = oversight.faithfulness_gains(model, tok, VELMORA, items)
    with_doc = answer_logprobs(model, tok, [f"Velmora\n{VELMORA.context}\n\nVelmora\n"] * 2, items, [-1, -1])
    alone = answer_logprobs(model, tok, ["Velmora\n"] * 2, items, [-1, -1])
    assert gains == pytest.approx([a - b for a, b in zip(with_doc, alone)])
    kept, scored = oversight.filter_items(model, tok, VELMORA, items, min(gains))
    assert kept == [s["line"] for s in scored if s["gain"] >= min(gains)] and len(kept) >= 1
    kept, scored = oversight.filter_items(model, tok, VELMORA, items, max(gains) + 1)
    assert kept == [] and [s["kept"] for s in scored] == [False, False]


def test_probe_passages_make_evaluate_grade_self_edits_on_probes(tiny_model_dir, squad_tiny, tmp_path):
    """The label-free reward: the knowledge table (and so ReSTEM) runs on probes, no gold question."""
    import json

    from seal.config import RunConfig, resolve
    from seal.knowledge.evaluate import evaluate
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    passages = [K.Passage(p.id, p.title, p.context, []) for p in K.load_passages(squad_tiny)[0][:2]]
    probes = P.probes_for(HFGenerator(model, tok), tok, True, passages, 2, seed=0, max_new_tokens=8, max_answer_tokens=4)
    assert probes == P.probes_for(HFGenerator(model, tok), tok, True, passages[::-1], 2, seed=0, max_new_tokens=8,
                                  max_answer_tokens=4)  # seeded per passage
    cfg = resolve(RunConfig, None, {"model.name": str(tiny_model_dir), "out": str(tmp_path / "run"), "threads": "1",
                                    "selfedit.max_new_tokens": "8", "eval.max_answer_tokens": "4", "inner.epochs": "1",
                                    "eval.bootstrap": "20"})
    run = evaluate(cfg, [], passages=P.probe_passages(passages, probes))
    s = json.loads((run / "summary.json").read_text())
    assert s["conditions"]["self-edits"]["n_questions"] == sum(len(v) for v in probes.values()) == 4


# ----------------------------------------------------------------------------- documents

def test_chunks_fit_the_budget_and_lose_no_word():
    def n(text):
        return len(text.split())
    text = "First paragraph is short.\n\n" + " ".join(f"Sentence {i} has five words." for i in range(30)) + \
        "\n\n" + " ".join(["word"] * 25) + "\n\nLast one."
    chunks = chunk_text(text, n, 12)
    assert all(n(c) <= 12 for c in chunks) and len(chunks) > 3
    assert " ".join(chunks).split() == text.split()
    assert chunk_text("A short text.", n, 12) == ["A short text."]
    with pytest.raises(ValueError):
        chunk_text("x", n, 0)


def test_a_document_title_is_its_heading_or_its_file_name(tmp_path):
    (tmp_path / "harbor_notes.md").write_text("# The Harbor\n\nSalt traders came in 1742.\n")
    (tmp_path / "plain-text.txt").write_text("Salt traders came in 1742.\r\nThey stayed.\n")
    (doc,) = read_document(tmp_path / "harbor_notes.md")
    assert (doc.title, doc.text) == ("The Harbor", "Salt traders came in 1742.")
    (doc,) = read_document(tmp_path / "plain-text.txt")
    assert (doc.title, doc.text) == ("plain text", "Salt traders came in 1742.\nThey stayed.")
    assert len(doc.sha256) == 64
