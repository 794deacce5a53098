"""Per-document routing: which kept adapter answers a question. BM25 over the passages each
adapter was trained on (`continual.router bm25`), used by `seal continual --continual.guard per-doc`
and by `seal ask`."""

from __future__ import annotations

import math

from seal.knowledge.grading import STOPWORDS, normalize_answer
from seal.knowledge.passages import QA, Passage


class BM25:
    """Okapi BM25 (k1 = 1.5, b = 0.75) over SQuAD-normalized words."""

    def __init__(self, docs: list[str], k1: float = 1.5, b: float = 0.75):
        self.docs = [normalize_answer(d).split() for d in docs]
        self.k1, self.b = k1, b
        self.avg = sum(map(len, self.docs)) / max(1, len(self.docs))
        df: dict[str, int] = {}
        for d in self.docs:
            for w in set(d):
                df[w] = df.get(w, 0) + 1
        n = len(self.docs)
        self.idf = {w: math.log(1 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}

    def best(self, query: str) -> tuple[int, float]:
        """(index of the best-matching document, the first on ties; its coverage of the query).

        Coverage: the share of the query's content words (not in STOPWORDS) that occur in that
        document. Unlike a BM25 score it does not depend on how many documents are indexed, so
        one threshold serves the first passage of a stream and the eighth. A question about a
        seen passage shares most of its content words with it; one about another topic shares few."""
        q = normalize_answer(query).split()
        scores = []
        for d in self.docs:
            tf: dict[str, int] = {}
            for w in d:
                tf[w] = tf.get(w, 0) + 1
            norm = self.k1 * (1 - self.b + self.b * len(d) / max(self.avg, 1e-9))
            scores.append(sum(self.idf.get(w, 0.0) * tf[w] * (self.k1 + 1) / (tf[w] + norm) for w in q if w in tf))
        i = max(range(len(scores)), key=lambda i: (scores[i], -i))
        content = {w for w in q if w not in STOPWORDS}
        return i, (len(content & set(self.docs[i])) / len(content) if content else 0.0)


def route(queries: list[str], owners: list[int], seen: list[Passage], router: str,
          min_coverage: float = 0.0) -> list[int]:
    """For each query (a question with its topic, or a passage), the index in `seen` of the
    passage whose adapter answers it, or -1 (the base model) when no seen passage covers at least
    `min_coverage` of it. `owners[i]` is the query's own passage index (-1 for unrelated
    questions; used only by `oracle`)."""
    if router == "oracle":
        return [o if o >= 0 else -1 for o in owners]
    if not seen:
        return [-1] * len(queries)
    index = BM25([f"{p.title}\n{p.context}" for p in seen])
    return [i if cov >= min_coverage else -1 for i, cov in map(index.best, queries)]


def question_query(qa: QA) -> str:
    return f"{qa.title} {qa.question}"
