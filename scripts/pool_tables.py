"""Pool the paired comparisons of several `seal evaluate` tables run on disjoint passages.

    python scripts/pool_tables.py RUN_DIR RUN_DIR [...] --out results/NAME.json

Each table is a run folder (its `passages.jsonl` and `summary.json`). A passage's value of a row
is the mean over its updates in that row, as `summarize` takes it. The pooled comparisons are the
ones each table reports (every row against passage-only; each self-edit row against its controls,
`summary["controls"]`), bootstrapped over the passages of all tables that hold both rows. The
tables must share the model and every setting that makes their rows comparable: the script
refuses tables whose passages overlap, and says which settings differ between them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from seal.stats import paired_bootstrap

METRICS = ("containment", "logprob")
IGNORED = {"data", "out", "threads", "executor"}  # which passages, where and how fast: not what a row measures


def passage_values(run: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{passage id: {row: {metric: mean over the passage's updates in that row}}}."""
    out = {}
    for line in (run / "passages.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rows: dict[str, list[dict]] = {"no-adaptation": [rec["no-adaptation"]]}
        for key, metrics in rec["updates"].items():
            rows.setdefault(key.rsplit("/", 2)[0], []).append(metrics)
        out[rec["passage_id"]] = {row: {m: sum(u[m] for u in us) / len(us) for m in METRICS}
                                  for row, us in rows.items()}
    return out


def comparisons(summaries: list[dict]) -> list[tuple[str, str]]:
    """(row, reference) pairs the tables report, in the first table's order."""
    pairs = []
    for s in summaries:
        for row in s["order"]:
            if row not in ("no-adaptation", "passage") and (row, "passage") not in pairs:
                pairs.append((row, "passage"))
        controls = s.get("controls") or []
        for ctrl, row in (controls.items() if isinstance(controls, dict) else controls):  # a dict before 2026-12
            if (row, ctrl) not in pairs:
                pairs.append((row, ctrl))
    return pairs


def setting_differences(configs: list[dict]) -> list[str]:
    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            elif prefix.split(".")[0] not in IGNORED and k not in IGNORED:
                yield f"{prefix}{k}", v
    flats = [dict(flat(c)) for c in configs]
    keys = sorted(set().union(*flats))
    return [k for k in keys if any(f.get(k) != flats[0].get(k) for f in flats[1:])]  # 64 == 64.0


def pool(runs: list[Path], seed: int = 0) -> dict:
    values, owner = {}, {}
    for run in runs:
        for pid, rows in passage_values(run).items():
            if pid in owner:
                raise SystemExit(f"{run}: passage {pid} is also in {owner[pid]}; pooled tables need disjoint passages")
            owner[pid] = run
            values[pid] = rows
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    configs = [yaml.safe_load((r / "config.yaml").read_text()) for r in runs]
    out = {"runs": [str(r) for r in runs], "n_passages": len(values), "seed": seed,
           "settings_that_differ": setting_differences(configs), "levels": {}, "gains": {}}
    rows = sorted({row for v in values.values() for row in v})
    for row in rows:
        have = [v[row]["containment"] for v in values.values() if row in v]
        out["levels"][row] = {"containment": sum(have) / len(have), "n": len(have)}
    for row, ref in comparisons(summaries):
        both = [v for v in values.values() if row in v and ref in v]
        out["gains"][f"{row} - {ref}"] = {m: paired_bootstrap([v[row][m] for v in both], [v[ref][m] for v in both],
                                                              seed=seed) for m in METRICS}
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    result = pool(args.runs)
    args.out.write_text(json.dumps(result, indent=1))
    for name, g in result["gains"].items():
        c = g["containment"]
        print(f"{name:<45} {c['mean']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]  n={c['n']}")
    if result["settings_that_differ"]:
        print("settings that differ between the tables:", ", ".join(result["settings_that_differ"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
