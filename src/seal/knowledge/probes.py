"""Label-free probes: questions about a document that nobody labelled.

SEAL's reward needs questions about the passage (SQuAD's, in the paper). A user's own document
has none, so the model makes them:

    1. write:      with the document in context, the model writes `n` short questions about
                   it (`PROBE_PROMPT`; greedy first, then one sampled try if it wrote too few);
    2. reference:  with the document in context, it answers each one (`IN_CONTEXT_PROMPT`,
                   greedy). A question is kept only if its answer is supported by the document
                   (every content word of the answer occurs in it) and it is new;
    3. fill:       when fewer than `n` remain, `cloze` probes are cut from the document's own
                   sentences ("Complete the sentence: Velmora was founded in 1742 by ..."; the
                   blank's last words are the reference answer), so even a model too weak to
                   write questions gets a probe set;
    4. test:       the (adapted) model answers the probes closed-book, with the QA prompt and
                   grading of knowledge/__init__.py (`score_rows`): EM / token F1 / containment of
                   the closed-book answer against the in-context answer, and the mean log-prob
                   of the in-context answer's tokens.

Agreement between the closed-book and the in-context answer is the probe metric: it rises as an
update teaches the model what the document says, and falls when an update makes the model
forget it. `seal adapt` uses it to choose among self-edits and in its forgetting gate; any
knowledge command can use it as its reward instead of human questions, through
`probe_passages` (passages whose questions are their probes), e.g.

    probes = probes_for(HFGenerator(model, tok), tok, chat, passages, 4, seed)
    knowledge_task.train(cfg, argv, passages=probe_passages(passages, probes))  # label-free ReSTEM round
    evaluate.evaluate(cfg, argv, passages=probe_passages(passages, probes))  # the table on probes

(the dev-set agreement study: the same self-edits' rewards on probes and on the gold questions).

Departure, stated: the reference answers are the model's own reading of the document, so the
metric measures "closed-book agrees with open-book", not correctness; cloze probes (whose
reference is the document's text) keep it honest when the model writes poor questions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from seal import knowledge as K
from seal.training.models import format_prompt

PROBE_PROMPT = (
    "Read the passage and write {n} short questions about the facts it states, one question per "
    "line. Each question must name what it asks about, so that it makes sense without the passage."
    "\n\nTitle: {title}\nPassage: {passage}"
)
PROBE_CUE = "Questions:\n"
IN_CONTEXT_PROMPT = ("Answer the question with a short phrase, using the passage.\n\n"
                     "Title: {title}\nPassage: {passage}\n\nQuestion: {question}")
CLOZE_QUESTION = "Complete the sentence: {prefix} ..."

_LABEL = re.compile(r"^\s*(?:[*_#]*\s*)?(?:q(?:uestion)?\s*#?\s*\d{0,3}\s*[:.)]\s*)?[*_]*\s*", re.IGNORECASE)


@dataclass
class Probe(K.QA):
    """A QA whose answer is a reference the model wrote with the document in view (`kind`
    "model"), or words cut from the document (`kind` "cloze")."""

    kind: str = "model"


def parse_questions(text: str) -> list[str]:
    """The questions in a completion: one per line, list markers and `Question 1:` labels
    stripped, cut after the first `?`; lines without a `?` or under 3 words are not questions."""
    out = []
    for line in text.replace("\r\n", "\n").split("\n"):
        line = K.BULLET.sub("", line.strip())
        line = _LABEL.sub("", line).strip()
        if "?" not in line:
            continue
        q = line[: line.index("?") + 1].strip(" *_")
        if len(q.split()) >= 3:
            out.append(" ".join(q.split()))
    return out


def _content_words(text: str) -> list[str]:
    return [w for w in K.normalize_answer(text).split() if w not in K.STOPWORDS]


def supported(answer: str, document: str) -> bool:
    """Every content word of `answer` occurs in `document` (and it has one)."""
    words = _content_words(answer)
    have = set(K.normalize_answer(document).split())
    return bool(words) and all(w in have for w in words)


def write_probes(gen, tok, chat: bool, passage: K.Passage, n: int, seed: int, *, max_new_tokens: int = 96,
                 max_answer_tokens: int = 24, fill: str = "cloze", temperature: float = 1.0) -> list[Probe]:
    """Up to `n` probes for `passage` (see the module docstring), written and answered by the
    generator's model as it is (no adapter rows). Deterministic for a given seed."""
    if n <= 0:
        return []
    prompt = format_prompt(tok, PROBE_PROMPT.format(n=n, title=passage.title, passage=passage.context), chat,
                           cue=PROBE_CUE)
    probes: list[Probe] = []
    seen: set[str] = set()
    for attempt, temp in enumerate((0.0, temperature)):
        if len(probes) >= n:
            break
        text = gen.generate([prompt], n=1, max_new_tokens=max_new_tokens, temperature=temp, top_p=0.95,
                            seed=seed + attempt)[0][0]
        questions = [q for q in parse_questions(text) if K.normalize_answer(q) not in seen]
        questions = list(dict.fromkeys(questions))
        if not questions:
            continue
        prompts = [format_prompt(tok, IN_CONTEXT_PROMPT.format(title=passage.title, passage=passage.context,
                                                               question=q), chat, cue=K.QA_CUE) for q in questions]
        answers = [K.clean_answer(a[0]) for a in gen.generate(prompts, n=1, max_new_tokens=max_answer_tokens,
                                                              temperature=0.0)]
        for q, a in zip(questions, answers):
            if len(probes) < n and supported(a, passage.context):
                probes.append(Probe(q, a, passage.title, "model"))
                seen.add(K.normalize_answer(q))
    if fill == "cloze" and len(probes) < n:
        probes += cloze_probes(passage, n - len(probes), seen)
    return probes


def cloze_probes(passage: K.Passage, n: int, taken: set[str] = frozenset()) -> list[Probe]:
    """Up to `n` fill-in-the-blank probes from sentences spread over the passage: the sentence
    without its last words is the question, those words (up to 3, from the first content word)
    the reference answer. Sentences under 6 words, or ending in stopwords only, are passed over."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", passage.context) if len(s.split()) >= 6]
    made = []
    for s in sentences:
        words = s.rstrip(".!?;:").split()
        tail = words[-3:]
        while tail and not _content_words(tail[0]):
            tail = tail[1:]
        if not tail:
            continue
        prefix = " ".join(words[: len(words) - len(tail)])
        q = CLOZE_QUESTION.format(prefix=prefix)
        if K.normalize_answer(q) not in taken:
            made.append(Probe(q, " ".join(tail), passage.title, "cloze"))
    if len(made) <= n:
        return made
    step = len(made) / n  # spread over the passage, not its first sentences
    return [made[int(i * step)] for i in range(n)]


def probe_scores(model, tok, gen, chat: bool, groups: list[list[Probe]], rows: list[int], eval_cfg) -> list[dict]:
    """Closed-book test of each group of probes under adapter rows[i] (-1: the model as it is):
    per group `metrics` (means of `tasks.knowledge.METRICS` against the reference answers) and
    `probes` (each probe's grades and closed-book answer)."""
    graded = K.score_rows(model, tok, gen, chat, groups, rows, eval_cfg)
    return [{"metrics": K.mean_metrics(g), "probes": g} for g in graded]


def probes_for(gen, tok, chat: bool, passages: list[K.Passage], n: int, seed: int, **kw) -> dict[str, list[Probe]]:
    """`write_probes` for every passage (keyword settings passed on), by passage id, each seeded
    from `seed` and its id (so a passage gets the same probes in any subset)."""
    from seal.engine.jobs import job_seed

    return {p.id: write_probes(gen, tok, chat, p, n, job_seed(seed, "probes", p.id), **kw) for p in passages}


def probe_passages(passages: list[K.Passage], probes: dict[str, list[Probe]]) -> list[K.Passage]:
    """The passages with their probes (by passage id) as their questions, for any command that
    grades on questions (evaluate, ReSTEM): the label-free reward. Passages without probes are
    left out."""
    return [K.Passage(p.id, p.title, p.context, list(probes[p.id]), list(p.completions))
            for p in passages if probes.get(p.id)]
