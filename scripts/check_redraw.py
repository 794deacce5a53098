"""The generator check's own noise: the same generator drawn twice on the same passages.

    python scripts/check_redraw.py RUN_DIR [results/NAME.json]

A `seal train` run with `restem.generator_check N` scores, in round t, one self-edit per held-apart
passage from the generator before the round's M-step and one from the generator after it
(rounds/round_t/check.jsonl). Round t's "after" generator is round t+1's "before": the same
model, the same N passages, sampled and trained again with round t+1's seeds. The paired
difference of those two draws is what the check reads when nothing changed, so a verdict of
the size of that difference says little. A reward is the round's (`controlled_reward`): the
self-edit update's gain over the unadapted model, less that of the control it was scored against
when the run has controls (`restem.reward_against`; the steps control of as many sequences); a
self-edit that parsed to nothing counts 0, as in the check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from seal.knowledge.task import control_key, controlled_reward, is_control, record_key
from seal.runs import read_jsonl
from seal.stats import paired_bootstrap


def check_rewards(path: Path, reward_against: str, permutations: int) -> tuple[list[str], dict[tuple[str, int], float]]:
    """(the check's passage ids, {(passage id, 0 before | 1 after): reward}), each reward as the
    round computes it: over its seeds, less the controls it was scored against (`plan`)."""
    recs = read_jsonl(path)
    by_key = {record_key(r): r for r in recs}
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in recs:
        if not is_control(r):
            ctrl = by_key.get(control_key(r, reward_against, permutations) or "")
            groups.setdefault((r["passage_id"], r["sample"]), []).extend([r] + ([ctrl] if ctrl else []))
    rewards = {key: v for key, group in groups.items() if (v := controlled_reward(group)) is not None}
    return sorted({r["passage_id"] for r in recs}), rewards


def redraws(run: Path, seed: int = 0) -> list[dict]:
    checks = {int(p.parent.name.split("_")[1]): p for p in (run / "rounds").glob("round_*/check.jsonl")}
    cfg = yaml.safe_load((run / "config.yaml").read_text()) if checks else {}
    against = (cfg.get("restem") or {}).get("reward_against", "no-adaptation")
    perms = (cfg.get("selfedit") or {}).get("permutations", 0)
    out = []
    for t in sorted(checks):
        if t + 1 not in checks:
            continue
        ids, first = check_rewards(checks[t], against, perms)
        ids2, second = check_rewards(checks[t + 1], against, perms)
        if ids != ids2:
            raise SystemExit(f"{checks[t]} and {checks[t + 1]} check different passages")
        a = [first.get((i, 1), 0.0) for i in ids]   # round t's new generator, first draw
        b = [second.get((i, 0), 0.0) for i in ids]  # the same generator, round t+1's draw
        base = [first.get((i, 0), 0.0) for i in ids]
        out.append({"generator": f"round_{t}", "n_passages": len(ids),
                    "first_draw": sum(a) / len(a), "second_draw": sum(b) / len(b),
                    "second_minus_first": paired_bootstrap(b, a, seed=seed),
                    "check_verdict_first_draw": paired_bootstrap(a, base, seed=seed),
                    "check_verdict_second_draw": paired_bootstrap(b, base, seed=seed)})
    return out


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    run = Path(argv[0])
    rows = redraws(run)
    if not rows:
        print(f"{run}: no two consecutive rounds with a generator check", file=sys.stderr)
        return 1
    for r in rows:
        d = r["second_minus_first"]
        print(f"{r['generator']} drawn twice on {r['n_passages']} held-apart passages: {r['first_draw']:+.3f} then "
              f"{r['second_draw']:+.3f} reward, second - first {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]")
    if len(argv) == 2:
        Path(argv[1]).write_text(json.dumps({"run": str(run), "redraws": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
