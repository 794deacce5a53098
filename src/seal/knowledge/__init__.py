"""Knowledge incorporation (paper section 4.1): passages -> self-edits -> LoRA -> closed-book QA.

A *context* is a passage (title, text) with its questions. The model writes a self-edit (by
default a list of implications of the passage); the self-edit becomes training sequences; a
LoRA update on them is the inner loop; the updated model answers the passage's questions with
no passage in its prompt.

Parsing a completion into training sequences follows the paper's code: one sequence per line
(per item), the title prefixed to each, and the passage itself appended as one more sequence.
Departures: bullets and list numbers are stripped, a preamble line ("Here are some
implications:") is dropped, lines under 3 words are dropped, `self-qa` pairs a question line
with its answer line into one item, `rewrite` splits on blank lines (or lines if none).

Grading. The paper grades answers with GPT-4.1. We grade locally with SQuAD exact match, F1 and
gold-answer containment on greedy answers, plus the mean per-token log-probability of the gold
answer's own tokens (`logprob`). The question names the passage's title (`Topic: ...`), as the
reference code does. The default reward is the gain in `containment` over the unadapted model:
in the reward study on dev updates (results/reward_table.md) it ranked the accuracy gain of an
independent re-run of the same update best, while the `logprob` gain, smooth and nearly
noise-free, did not track accuracy. `seal evaluate` reports how the log-prob gain tracks
containment on its own passages (`reward_tracking`).

The package's modules are the domain's pieces: `passages` (the data file and the selection),
`selfedits` (templates, parsing, an update's training sequences), `grading` (the QA prompt and
grades) and `qa` (`Job` and `QAInnerLoop`: how one batch of jobs trains and is graded); their
names are importable from `seal.knowledge` itself. `task` assembles them into the seal Task that
`seal train` runs, `table` and `evaluate` build the table from them, and `continual` adapts
passages one after another. Batching, resume and execution of jobs are the engine's
(`seal.engine.jobs.run_inner_jobs`).
"""

from __future__ import annotations

from seal.knowledge.grading import (
    QA_CUE,
    QA_PROMPT,
    STOPWORDS,
    clean_answer,
    containment,
    exact_match,
    f1_score,
    grade,
    normalize_answer,
    qa_input,
    qa_prompt,
)
from seal.knowledge.passages import (
    QA,
    DataError,
    Passage,
    describe_counts,
    file_sha256,
    load_passages,
    load_selection,
    parse_squad,
    select,
)
from seal.knowledge.qa import (
    METRICS,
    Job,
    QAInnerLoop,
    base_scores,
    mean_metrics,
    reward_eval_config,
    sample_selfedits,
    score_rows,
    train_and_grade,
)
from seal.knowledge.selfedits import (
    BULLET,
    CUES,
    SENTENCE_END,
    TEMPLATES,
    fit_to_context,
    parse_selfedit,
    passage_example,
    permuted_passages,
    pooled_items,
    selfedit_examples,
    selfedit_input,
    selfedit_prompt,
    training_examples,
)

__all__ = [
    "BULLET",
    "CUES",
    "DataError",
    "Job",
    "METRICS",
    "Passage",
    "QA",
    "QAInnerLoop",
    "QA_CUE",
    "QA_PROMPT",
    "SENTENCE_END",
    "STOPWORDS",
    "TEMPLATES",
    "base_scores",
    "clean_answer",
    "containment",
    "describe_counts",
    "exact_match",
    "f1_score",
    "file_sha256",
    "fit_to_context",
    "grade",
    "load_passages",
    "load_selection",
    "mean_metrics",
    "normalize_answer",
    "parse_selfedit",
    "parse_squad",
    "passage_example",
    "permuted_passages",
    "pooled_items",
    "qa_input",
    "qa_prompt",
    "reward_eval_config",
    "sample_selfedits",
    "score_rows",
    "select",
    "selfedit_examples",
    "selfedit_input",
    "selfedit_prompt",
    "train_and_grade",
    "training_examples",
]
