"""Teacher check of the ReSTEM M-step: finetune the default model on the paper's own kept
self-edits (Qwen2.5-7B's best of 5 for 50 training passages per round) with `seal`'s SFT step,
exactly as a ReSTEM round would with those self-edits kept, and save the model. `seal evaluate
--selfedit.model <out>` then scores its self-edits against the base model's on dev passages.

If the teacher's data does not make the small model's self-edits better, ReSTEM's SFT cannot move a
model of this size whatever the reward picks; if it does, the gap is in selection.

    .venv/bin/python scripts/teacher_sft.py --kept ../shared/data/squad/paper_restem_kept.jsonl \
        --config configs/squad_restem_cpu.yaml --out results-runs/teacher-model
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from seal import knowledge as K
from seal.config import RunConfig, resolve
from seal.engine.restem import completion_logprob, sft
from seal.knowledge.task import selfedit_stats, sft_config
from seal.runs import atomic_write_json, versions
from seal.training.inner_loop import TrainExample
from seal.training.models import load_model, save_model, uses_chat


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kept", required=True)
    ap.add_argument("--config", default="configs/squad_restem_cpu.yaml", help="the ReSTEM config whose M-step to use")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg: RunConfig = resolve(RunConfig, args.config, {})
    model, tok = load_model(cfg.model)
    chat = uses_chat(tok, cfg.model)
    examples = []
    for i, line in enumerate(Path(args.kept).read_text().splitlines()):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            p = K.Passage(str(i), r["title"], r["context"], [])
            examples.append(TrainExample(r["completion"], K.selfedit_input(tok, p, cfg.selfedit, chat)))
        except (json.JSONDecodeError, KeyError) as e:
            raise SystemExit(f"{args.kept}: line {i + 1}: not a kept self-edit record ({e})") from None
    t0 = time.time()
    before = completion_logprob(model, tok, examples)
    stats = sft(model, tok, examples, sft_config(cfg), seed=cfg.seed)
    after = completion_logprob(model, tok, examples)
    save_model(model, tok, Path(args.out))
    summary = {"kept_file": args.kept, "kept_sha256": K.file_sha256(args.kept), "config": args.config,
               "n_examples": len(examples), "sft_tokens": stats["tokens"][0], "sft_steps": stats["steps"],
               "kept_logprob_before": before, "kept_logprob_after": after,
               "kept_selfedits": selfedit_stats([e.completion for e in examples], tok, cfg.selfedit.template),
               "restem": {k: v for k, v in vars(cfg.restem).items() if k != "sft_lora"},
               "sft_lora": vars(cfg.restem.sft_lora), "seed": cfg.seed, "seconds": time.time() - t0,
               "versions": versions()}
    atomic_write_json(Path(args.out).with_name(Path(args.out).name + ".json"), summary)
    print(json.dumps({k: summary[k] for k in ("n_examples", "kept_logprob_before", "kept_logprob_after", "seconds")}))


if __name__ == "__main__":
    main()
