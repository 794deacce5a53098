"""`seal demo`: SEAL end to end on passages the model cannot already know.

The package ships 20 short passages of invented facts (a harbor town, a mining company, a frog
species, ...) with 4 questions each. The demo

  1. runs one ReSTEM round on 6 of them (sample 3 self-edits per passage, score each by its
     LoRA update, keep the best positive one per passage, fine-tune the generator on them), then
  2. runs the evaluation table on the next 6: no adaptation, passage only, passage + the
     base model's self-edits, passage + the round-1 model's self-edits (each self-edit update
     with two sentence-permuted copies of the passage, `selfedit.permutations`), and beside each
     self-edit row its compute-matched control (`passage x steps`: the passage alone trained
     for as many optimizer steps as that self-edit's update).

The settings below are the demo's only departures from the defaults, sized to finish in under
10 minutes on 2 idle CPU cores with the default model (6.8 min on a 2-core Xeon,
results/demo_s27.json; two single-thread worker processes run the updates). A round's time
follows the number of self-edits it scores (passages x k), the table's its passages. Every
setting can be overridden by flags. It ends with plain sentences saying what the
numbers mean, judged by the reward's metric with paired 95% intervals, and which row taught most.
"""

from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path

from seal import knowledge as K
from seal.config import RunConfig
from seal.knowledge.evaluate import evaluate
from seal.knowledge.table import plain_summary
from seal.knowledge.task import train

DEMO_DEFAULTS = {
    "restem.rounds": 1,
    "restem.passages_per_round": 6,
    "selfedit.k": 3,
    "selfedit.max_new_tokens": 128,
    "eval.selfedits": 1,
    "executor.kind": "processes",
    "executor.workers": 2,
    "threads": 1,
}
N_TRAIN = 6  # passages of the ReSTEM round
N_EVAL = 6  # passages of the evaluation table, the next ones


def demo_passages() -> tuple[list[K.Passage], str, str]:
    ref = resources.files("seal") / "data" / "demo_passages.json"
    raw = ref.read_bytes()
    passages, _ = K.parse_squad(json.loads(raw), str(ref))
    return passages, str(ref), hashlib.sha256(raw).hexdigest()


def demo(cfg: RunConfig, argv: list[str]) -> Path:
    passages, path, sha = demo_passages()
    if cfg.data.path:
        passages, _ = K.load_passages(cfg.data.path)
        path, sha = cfg.data.path, K.file_sha256(cfg.data.path)
    cfg.data.path = path
    if len(passages) <= N_TRAIN:
        raise K.DataError(f"{path}: the demo needs more than {N_TRAIN} passages ({N_TRAIN} to train on, up to "
                          f"{N_EVAL} more to evaluate); it has {len(passages)}")
    train_set, eval_set = passages[:N_TRAIN], passages[N_TRAIN:N_TRAIN + N_EVAL]
    if not cfg.out:
        import datetime as dt
        cfg.out = str(Path("runs") / ("demo-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")))
    print(f"== 1/2 ReSTEM: one round on {len(train_set)} fictional passages ==")
    run_dir = train(cfg, argv, passages=train_set, data_sha=sha, command="demo")
    final = json.loads((run_dir / "final.json").read_text())["model"]

    print(f"== 2/2 evaluation on {len(eval_set)} held-out fictional passages ==")
    ecfg = copy.deepcopy(cfg)
    ecfg.out = str(run_dir / "eval")
    if final:
        ecfg.selfedit.model = final
    summary_dir = evaluate(ecfg, argv, passages=eval_set, data_sha=sha)
    summary = json.loads((summary_dir / "summary.json").read_text())
    print("\n" + plain_summary(summary))
    print(f"\nrun folder: {run_dir}\nreport:     seal report {run_dir}")
    return summary_dir
