"""Racing selection: successive halving over the k self-edits of one context.

ReSTEM keeps only the best self-edit per passage (paper section 3.1), yet exhaustive evaluation
trains every one of the k self-edits for the whole inner-loop budget and grades it in full.
Racing spends the budget where the choice is still open (successive halving; Jamieson &
Talwalkar 2016, Li et al. 2018 "Hyperband"):

    alive = all k self-edits (trained side by side, one adapter each, common seed)
    for each rung epoch e in  first, first*eta, first*eta^2, ...  (< inner.epochs):
        train the alive adapters up to epoch e
        score each on the context's questions (`race_score`)
        keep the best ceil(|alive| / eta); a self-edit tied with the last kept one stays too
    train the survivors to inner.epochs and grade them exactly as exhaustive evaluation does

A survivor's final reward is the one exhaustive evaluation computes for it (same seed, same
data order; only which adapters share a forward pass changes, i.e. float summation order), so
racing can only differ from exhaustive evaluation by stopping the eventual winner early. A
stopped self-edit gets no reward and is never kept; its rung scores are saved.

Score at a rung: `reward` grades with the reward's own metric (greedy answers for containment
/ F1 / EM), ties broken by the gold-answer log-probability; `logprob` uses the log-probability
alone (no generation, cheaper, less faithful to a containment reward). Chosen on dev passages
outside every reported workload (scripts/race_curves.py, results/race_curves_logprob.json).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Race:
    """Racing settings as the inner loop uses them (from ReSTEMConfig: `race_first`, `race_eta`,
    `race_score`, and `inner.epochs`)."""

    rungs: tuple[int, ...]
    eta: float
    score: str = "reward"

    @classmethod
    def from_config(cls, restem_cfg, epochs: int) -> Race | None:
        if restem_cfg.selection != "racing":
            return None
        return cls(rung_epochs(restem_cfg.race_first, restem_cfg.race_eta, epochs), restem_cfg.race_eta,
                   restem_cfg.race_score)


def rung_epochs(first: int, eta: float, epochs: int) -> tuple[int, ...]:
    """Rung epochs first, first*eta, ... (rounded, strictly increasing) below `epochs`."""
    out, e = [], float(first)
    while round(e) < epochs:
        if not out or round(e) > out[-1]:
            out.append(round(e))
        e *= eta
    return tuple(out)


def survivors(keys: dict[int, tuple], eta: float) -> list[int]:
    """The adapters that race on: the best ceil(m / eta) by key (larger is better), plus every one
    whose key equals the last kept one's (a tie never eliminates)."""
    order = sorted(keys, key=lambda a: (keys[a], -a), reverse=True)
    n_keep = max(1, math.ceil(len(order) / eta))
    cutoff = keys[order[n_keep - 1]]
    return sorted(a for a in order if keys[a] >= cutoff)


def score_key(metrics: dict, score: str, reward: str) -> tuple:
    """The ranking key of one adapter's rung metrics (see the module docstring)."""
    if score == "logprob" or reward == "logprob":
        return (metrics["logprob"],)
    return (metrics[reward], metrics["logprob"])


def make_judge(rung_metrics, questions: list[list], score: str, reward: str, eta: float, history: list[list[dict]]):
    """A `train_adapters` judge: `rung_metrics(questions_per_row, rows)`, handed over by the
    task's inner loop, returns per row the adapter's metrics on its questions (the knowledge
    inner loop: the mean of knowledge/qa.score_rows' grades); each rung's metrics are appended
    to history[a]."""

    def judge(epoch: int, alive: list[int]) -> list[int]:
        keys = {}
        for a, m in zip(alive, rung_metrics([questions[a] for a in alive], alive)):
            history[a].append({"epoch": epoch, "metrics": m})
            keys[a] = score_key(m, score, reward)
        return survivors(keys, eta)

    return judge
