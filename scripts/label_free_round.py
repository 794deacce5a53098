"""The label-free ReSTEM round, summarized (issue: "Your own documents", label-free probes).

Reads a `seal train --restem.reward_questions probes` run whose passages also have gold
questions (configs/squad_restem_labelfree_dev.yaml): every self-edit was graded on its
passage's probes (the reward) and on the gold questions (recorded, never used). Reports, per
metric (containment: the reward; log-prob: the continuous check):
  - Spearman's rank correlation of probe and gold rewards within each passage (the ranking
    ReSTEM uses) and pooled over all self-edits;
  - on how many passages ReSTEM's filter (best-positive) keeps the same self-edit under both;
  - the gold reward of what each keeps, against picking at random.
With --gold-model DIR it also trains the counterfactual round: the same samples, the same M-step
and seed, but the self-edits kept by the *gold* reward, so that `seal evaluate` can compare the
label-free round's model with the one gold labels would have made:

    python scripts/label_free_round.py --run results-runs/labelfree-r1 --gold-model results-runs/labelfree-r1-goldsel \
        --out results/label_free_restem.json
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

from seal import knowledge as K
from seal.config import RunConfig, from_dict, load_yaml
from seal.engine.jobs import job_seed
from seal.engine.restem import select_kept
from seal.knowledge.task import reward_agreement, sft_config
from seal.runs import atomic_write_json, read_jsonl


def rewards_by_metric(rdir: Path, n_probes: dict[str, int], metric: str) -> tuple[dict, dict]:
    """(probe reward, gold reward) per (passage, sample) in `metric`, from the saved grades."""
    base = {}
    for r in read_jsonl(rdir / "base.jsonl"):
        n = n_probes[r["passage_id"]]
        base[r["passage_id"]] = (K.mean_metrics(r["questions"][:n])[metric], K.mean_metrics(r["questions"][n:])[metric])
    probe, gold = {}, {}
    for r in read_jsonl(rdir / "rewards.jsonl"):
        if r.get("reward") is None or "gold_metrics" not in r:
            continue
        key = (r["passage_id"], r["sample"])
        probe[key] = r["metrics"][metric] - base[r["passage_id"]][0]
        gold[key] = r["gold_metrics"][metric] - base[r["passage_id"]][1]
    return probe, gold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--round", type=int, default=1)
    ap.add_argument("--gold-model", default="", help="train the gold-selected counterfactual round's model here")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    run = Path(args.run)
    cfg: RunConfig = from_dict(RunConfig, load_yaml(run / "config.yaml"), str(run / "config.yaml"))
    rdir = run / "rounds" / f"round_{args.round}"
    probes = {r["passage_id"]: r["probes"] for r in read_jsonl(run / "probes.jsonl")}
    n_probes = {pid: len(p) for pid, p in probes.items()}
    out = {"run": str(run), "manifest": json.loads((run / "manifest.json").read_text()),
           "round": json.loads((rdir / "done.json").read_text()),
           "probes": {"passages": len(probes), "per_passage": sum(n_probes.values()) / max(1, len(probes)),
                      "kinds": {k: sum(q["kind"] == k for p in probes.values() for q in p) for k in ("model", "cloze")}},
           "agreement": {}}
    for metric in ("containment", "logprob"):
        probe, gold = rewards_by_metric(rdir, n_probes, metric)
        out["agreement"][metric] = reward_agreement(probe, gold, cfg)
    # the kept sets under each reward (the reward metric) and their overlap
    probe, gold = rewards_by_metric(rdir, n_probes, cfg.eval.reward)
    keep = (cfg.restem.keep, cfg.restem.keep_fraction)
    kept_p, kept_g = select_kept(probe, *keep), select_kept(gold, *keep)
    out["kept"] = {"probe": [[p, j] for p, j, _ in kept_p], "gold": [[p, j] for p, j, _ in kept_g],
                   "both": len({(p, j) for p, j, _ in kept_p} & {(p, j) for p, j, _ in kept_g})}
    if args.gold_model:
        from seal.engine.restem import completion_logprob, sft
        from seal.training.inner_loop import TrainExample
        from seal.training.models import load_model, save_model, uses_chat

        base, tok = load_model(cfg.model)
        chat = uses_chat(tok, cfg.model)
        passages, _ = K.load_selection(cfg.data, cfg.seed, require_questions=False)
        by_id = {p.id: p for p in passages}
        samples = {r["passage_id"]: r["completions"] for r in read_jsonl(rdir / "samples.jsonl")}
        examples = [TrainExample(samples[pid][j], K.selfedit_input(tok, by_id[pid], cfg.selfedit, chat))
                    for pid, j, _ in kept_g]
        model = copy.deepcopy(base)
        before = completion_logprob(model, tok, examples)
        stats = sft(model, tok, examples, sft_config(cfg), job_seed(cfg.seed, "sft", args.round))
        save_model(model, tok, Path(args.gold_model))
        out["gold_model"] = {"path": args.gold_model, "n_kept": len(examples), "sft_tokens": stats["tokens"][0],
                             "kept_logprob_before": before, "kept_logprob_after": completion_logprob(model, tok, examples)}
    atomic_write_json(Path(args.out), out)
    for metric, a in out["agreement"].items():
        kg = a["kept_gold_reward"]
        print(f"{metric}: Spearman within passage {a['spearman_within_mean']} (n={a['spearman_within_n']}), pooled "
              f"{a['spearman_pooled']}; same kept {a['same_kept']['mean']:.3f}; gold reward of kept: probe "
              f"{kg['probe']['mean']:+.3f} gold {kg['gold']['mean']:+.3f} random {kg['random']['mean']:+.3f}")
    print(f"kept: probe {len(kept_p)}, gold {len(kept_g)}, both {out['kept']['both']}; wrote {args.out}")


if __name__ == "__main__":
    main()
