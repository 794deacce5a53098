"""The golden comparison for refactors that must not change behaviour: run the same small
commands on a tiny random-weight model and fingerprint what they wrote, so two checkouts can be
compared record for record and the round models byte for byte.

    python scripts/golden.py build MODEL_DIR                 # the tiny model (tests/conftest.py)
    PYTHONPATH=<checkout>/src python scripts/golden.py run MODEL_DIR OUT_DIR FINGERPRINT.json
    python scripts/golden.py compare A.json B.json          # exit 1 and the differing files

`run` drives the CLI as a user would (`python -m seal.cli`): two knowledge ReSTEM rounds
(`seal train`), the knowledge table with its steps control (`seal evaluate`), and the ARC table
and one ARC ReSTEM round (`seal arc evaluate`, `seal arc train`) on the test fixtures. The
fingerprint holds, for every file the runs wrote, the sha256 of its bytes (weights, text) or, for
JSON and JSON lines, of its records with the fields that name a time, a duration, a path or the
git revision removed. Everything runs in fp32 (SEAL_FORCE_FP32=1) on one thread, so the same
checkout gives the same fingerprint on every CPU kind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQUAD = ROOT / "tests" / "fixtures" / "squad_tiny.json"
ARC = ROOT / "tests" / "fixtures" / "arc"
FAST = ["--selfedit.max_new_tokens", "12", "--eval.max_answer_tokens", "4", "--inner.epochs", "1", "--threads", "1"]
ARC_SMALL = ["--selfedits", "2", "--max_new_tokens", "12", "--views", "2", "--max_examples", "2", "--max_steps", "2",
             "--batch_size", "1", "--max_answer_tokens", "12", "--parallel_adapters", "1", "--bootstrap", "100",
             "--threads", "1"]
# A field whose value depends on when, where or how fast a run went, not on what it computed.
VOLATILE = re.compile(r"(second|time|wall|date|elapsed|started|created|updated|git|host|pid|python|torch|transformers|cpu|"
                      r"machine|platform|version|speed|per_s)", re.I)


def commands(model: Path, out: Path) -> dict[str, list[str]]:
    m = str(model)
    return {
        "train": ["train", "--model", m, "--data", str(SQUAD), "--restem.rounds", "2", "--restem.passages_per_round",
                  "2", "--selfedit.k", "2", "--restem.keep", "top-fraction", "--eval.reward", "logprob", *FAST,
                  "--out", str(out / "train")],
        "evaluate": ["evaluate", "--model", m, "--data", str(SQUAD), "--selfedit.model",
                     str(out / "train" / "rounds" / "round_2" / "model"), *FAST, "--out", str(out / "evaluate")],
        "arc-evaluate": ["arc", "evaluate", "--tasks", str(ARC), "--model", m, *ARC_SMALL, "--oracle.families", "none",
                         "--oracle.learning_rates", "1e-3", "--out", str(out / "arc-evaluate")],
        "arc-train": ["arc", "train", "--tasks", str(ARC), "--model", m, *ARC_SMALL, "--out", str(out / "arc-train")],
    }


def _scrub(value):
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in sorted(value.items()) if not VOLATILE.search(str(k))}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def fingerprint_file(path: Path, places: dict[str, str]) -> str:
    data = path.read_bytes()
    if path.suffix in (".json", ".jsonl", ".yaml"):
        try:
            text = data.decode()
            for place, token in places.items():  # the folders this run was given, not what it computed
                text = text.replace(place, token)
            if path.suffix == ".yaml":
                records = [text]
            elif path.suffix == ".jsonl":
                records = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                records = [json.loads(text)]
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
        else:
            data = json.dumps([_scrub(r) for r in records], sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


def fingerprint(out: Path, model: Path) -> dict[str, str]:
    skip = {".log", ".lock"}  # logs carry timings
    places = {str(out.resolve()): "<out>", str(out): "<out>", str(model.resolve()): "<model>", str(model): "<model>",
              str(ROOT): "<checkout>"}
    return {str(p.relative_to(out)): fingerprint_file(p, places) for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix not in skip and "tensorboard" not in p.parts}


def run(model: Path, out: Path, dest: Path) -> int:
    env = {**os.environ, "SEAL_FORCE_FP32": "1", "SEAL_QUIET": "1", "HF_HUB_OFFLINE": "1"}
    for name, argv in commands(model, out).items():
        done = subprocess.run([sys.executable, "-m", "seal.cli", *argv], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}", file=sys.stderr)
            return done.returncode
    dest.write_text(json.dumps(fingerprint(out, model), indent=1, sort_keys=True) + "\n")
    print(f"{dest}: {len(json.loads(dest.read_text()))} files fingerprinted")
    return 0


def compare(a: Path, b: Path) -> int:
    fa, fb = json.loads(a.read_text()), json.loads(b.read_text())
    differ = sorted(k for k in fa.keys() & fb.keys() if fa[k] != fb[k])
    only_a, only_b = sorted(fa.keys() - fb.keys()), sorted(fb.keys() - fa.keys())
    for label, names in (("differ", differ), (f"only in {a}", only_a), (f"only in {b}", only_b)):
        for n in names:
            print(f"{label}: {n}")
    same = not (differ or only_a or only_b)
    print(f"{'same' if same else 'NOT the same'}: {len(fa.keys() & fb.keys()) - len(differ)} of "
          f"{len(fa.keys() | fb.keys())} files equal")
    return 0 if same else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"] and len(argv) == 2:
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import build_tiny_model
        build_tiny_model(Path(argv[1]))
        return 0
    if argv[:1] == ["run"] and len(argv) == 4:
        return run(Path(argv[1]), Path(argv[2]), Path(argv[3]))
    if argv[:1] == ["compare"] and len(argv) == 3:
        return compare(Path(argv[1]), Path(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
