"""Try seal's commands with bad input, as a new user would, and write what each one shows.

    .venv/bin/python scripts/bad_input_tour.py [--out results/bad_input_tour.md] [--only WORD ...]

Every case runs the installed `seal` in a fresh process on the tiny random model the tests use
(built here, in a temporary folder; nothing is downloaded) and records the exit code, the last line
of stderr (or the line of stdout that reports the skip), whether a Python traceback appeared, and
whether a refused start left a run folder behind. The Markdown table is the "input -> what the user
sees" list of the bad-input issue; tests/unit/test_bad_input.py asserts the same behaviour.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
SEAL = str(Path(sys.executable).with_name("seal"))
FIXTURE = ROOT / "tests" / "fixtures" / "squad_tiny.json"
ARC = ROOT / "tests" / "fixtures" / "arc"
LONG = " ".join(["The harbor town keeps many salt traders and green lighthouses."] * 1500)
SAID = ("data:", "external", "restem.", "  too long", "  + document")
"""Lines of stdout a case that ran shows (what it said about its input), with `seal ask`'s line
saying which version and document answered."""
VERIFY_SAID = ("  damaged:", "  version ", "  the current version", "  every adapter")
"""What `seal history --verify` shows of its report."""


def make_files(d: Path) -> None:
    good = json.loads(FIXTURE.read_text())

    def w(name, obj):
        (d / name).write_text(obj if isinstance(obj, str) else json.dumps(obj))
    w("no_questions.json", good + [{"title": "Empty", "context": "A passage nobody asked about.", "questions": []}])
    w("empty_answer.json", [dict(good[0], questions=good[0]["questions"] + [{"question": "What?", "answer": ""}])] + good[1:])
    w("duplicate.json", good + [good[0]])
    w("one_too_long.json", [dict(good[0], context=LONG)] + good[1:])
    w("only_too_long.json", [dict(good[0], context=LONG)])
    w("ext_partial.json", [dict(good[0], completions=["Velmora was founded in 1742 by salt traders."])])
    w("ext_empty.json", [dict(p, completions=[""]) for p in good])
    w("nan.json", '[{"title": "x", "context": NaN}]')
    w("empty.json", "")
    w("strings.json", ["a", "b"])
    (d / "binary.json").write_bytes(b"\x00\x01\xff\xfe")
    (d / "afile").write_text("x")
    (d / "notes").mkdir()
    (d / "notes" / "keep.txt").write_text("mine")
    (d / "bad.yaml").write_text("inner: [1, 2\n")
    w("velmora.md", "# Velmora\n\nVelmora is a harbor town founded in 1742 by salt traders. Its lighthouse is green.\n")
    w("drosk.txt", "The Drosk Mining Company extracts blue cobalt from the Harrow Hills. Ilsa Drosk founded it in 1911.\n")
    w("evil.md", "# Velm\x1b]0;owned\x07ora\n\nVelmora is a harbor town \x1b[2J founded by salt traders in 1742.\n")
    w("long.txt", " ".join(f"The ferry carries {i} crates of green salt every morning." for i in range(200)))
    os.mkfifo(d / "pipe.txt")


def make_registries(d: Path, tiny: Path) -> None:
    """A registry of two versions (Velmora; Velmora and Drosk), and damaged copies of it: Drosk's
    adapter file cut in half, the database emptied (`: > registry.sqlite`); one holding a
    document whose title carries terminal escape sequences."""
    fast = ["--model", str(tiny), "--selfedit.max_new_tokens", "8", "--inner.epochs", "1", "--eval.max_answer_tokens",
            "4", "--adapt.probe_max_new_tokens", "8", "--threads", "1"]
    env = {**os.environ, "SEAL_QUIET": "1"}
    for reg, doc in (("reg", "velmora.md"), ("reg", "drosk.txt"), ("reg-evil", "evil.md")):
        subprocess.run([SEAL, "adapt", str(d / doc), "--registry", str(d / reg), *fast], capture_output=True, env=env,
                       check=True)
    shutil.copytree(d / "reg", d / "reg-damaged")
    newest = max((d / "reg-damaged" / "adapters").iterdir(), key=lambda p: p.stat().st_mtime)
    weights = newest / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    shutil.copytree(d / "reg", d / "reg-emptied")
    (d / "reg-emptied" / "registry.sqlite").write_bytes(b"")


def cases(d: Path, tiny: Path) -> list[tuple[str, list[str]]]:
    fast = ["--model", str(tiny), "--selfedit.max_new_tokens", "8", "--inner.epochs", "1", "--eval.max_answer_tokens",
            "4", "--selfedit.k", "1", "--threads", "1"]
    ev = ["evaluate", "--data", str(FIXTURE), "--limit", "1", *fast]
    tr = ["train", "--data", str(FIXTURE), "--limit", "1", "--restem.rounds", "1", *fast]
    arc = ["arc", "evaluate", "--tasks", str(ARC), "--model", str(tiny)]
    return [
        ("--data is a folder", ["evaluate", "--data", str(d), *fast]),
        ("--data does not exist", ["evaluate", "--data", str(d / "nope.json"), *fast]),
        ("--data is binary", ["evaluate", "--data", str(d / "binary.json"), *fast]),
        ("--data is empty", ["evaluate", "--data", str(d / "empty.json"), *fast]),
        ("--data holds NaN", ["evaluate", "--data", str(d / "nan.json"), *fast]),
        ("--data is a list of strings", ["evaluate", "--data", str(d / "strings.json"), *fast]),
        ("--out is an existing file", [*ev, "--out", str(d / "afile")]),
        ("--out below a file", [*ev, "--out", str(d / "afile" / "run")]),
        ("--out cannot be written (/proc)", [*ev, "--out", "/proc/seal-run"]),
        ("--out is a folder of other files", [*ev, "--out", str(d / "notes")]),
        ("--eval.bootstrap 0", [*ev, "--eval.bootstrap", "0"]),
        ("--selfedit.max_new_tokens 0", [*ev, "--selfedit.max_new_tokens", "0"]),
        ("--eval.max_answer_tokens 0", [*ev, "--eval.max_answer_tokens", "0"]),
        ("--eval.batch_size 0", [*ev, "--eval.batch_size", "0"]),
        ("--selfedit.batch_size 0", [*ev, "--selfedit.batch_size", "0"]),
        ("--inner.lr -1e-3", [*ev, "--inner.lr", "-1e-3"]),
        ("--inner.lr=-1e-3", [*ev, "--inner.lr=-1e-3"]),
        ("--inner.weight_decay -1", [*ev, "--inner.weight_decay", "-1"]),
        ("--inner.max_grad_norm -1", [*ev, "--inner.max_grad_norm", "-1"]),
        ("--inner.lora.alpha 0", [*ev, "--inner.lora.alpha", "0"]),
        ("--inner.lora.init_std 0", [*ev, "--inner.lora.init_std", "0"]),
        ("--inner.lora.targets '' (none)", [*ev, "--inner.lora.targets", ""]),
        ("--inner.lora.targets foo_proj (no such layer)", [*ev, "--inner.lora.targets", "foo_proj"]),
        ("--selfedit.temperature -1", [*ev, "--selfedit.temperature", "-1"]),
        ("--selfedit.top_p 0", [*ev, "--selfedit.top_p", "0"]),
        ("--selfedit.top_p 2", [*ev, "--selfedit.top_p", "2"]),
        ("--selfedit.template implication (typo)", [*ev, "--selfedit.template", "implication"]),
        ("--selfedit.template custom, no custom_template", [*ev, "--selfedit.template", "custom"]),
        ("--selfedit.custom_template without {passage}", [*ev, "--selfedit.template", "custom",
                                                           "--selfedit.custom_template", "Write facts."]),
        ("--selfedit.custom_template with {oops}", [*ev, "--selfedit.template", "custom",
                                                     "--selfedit.custom_template", "Facts {passage} {oops}"]),
        ("--model.chat_template maybe", [*ev, "--model.chat_template", "maybe"]),
        ("--eval.generate false with containment reward", [*ev, "--eval.generate", "false"]),
        ("--threads -2", [*ev, "--threads", "-2"]),
        ("--seed -1", [*ev, "--seed", "-1"]),
        ("--seed 2**40", [*ev, "--seed", str(2**40)]),
        ("--limit -1", [*ev, "--limit", "-1"]),
        ("--data.offset -1", [*ev, "--data.offset", "-1"]),
        ("--data.offset 10 (past the end of 4)", [*ev, "--data.offset", "10"]),
        ("--restem.rounds 0", [*tr, "--restem.rounds", "0"]),
        ("--restem.passages_per_round 0", [*tr, "--restem.passages_per_round", "0"]),
        ("--restem.keep_fraction 0", [*tr, "--restem.keep_fraction", "0"]),
        ("--restem.sft_lr -1", [*tr, "--restem.sft_lr", "-1"]),
        ("--restem.sft_lora.targets with a typo", [*tr, "--restem.sft_lora.targets", "q_proj,vv_proj"]),
        ("--restem.passages_per_round 9 > 4 passages", ["train", "--data", str(FIXTURE), "--restem.rounds", "1", *fast,
                                                         "--restem.passages_per_round", "9"]),
        ("--inner.lrr 1 (unknown setting)", [*ev, "--inner.lrr", "1"]),
        ("--inner.epochs many", [*ev, "--inner.epochs", "many"]),
        ("--config missing", [*ev, "--config", str(d / "nope.yaml")]),
        ("--config is a folder", [*ev, "--config", str(d)]),
        ("--config is broken YAML", [*ev, "--config", str(d / "bad.yaml")]),
        ("passage without questions", ["evaluate", "--data", str(d / "no_questions.json"), *fast]),
        ("question with an empty answer", ["evaluate", "--data", str(d / "empty_answer.json"), *fast]),
        ("duplicate passage", ["evaluate", "--data", str(d / "duplicate.json"), *fast]),
        ("one passage longer than the context window", ["evaluate", "--data", str(d / "one_too_long.json"), *fast]),
        ("every passage longer than the context window", ["evaluate", "--data", str(d / "only_too_long.json"), *fast]),
        ("--completions missing", [*ev, "--completions", str(d / "nope.json")]),
        ("--completions covering 1 of 4 passages", ["evaluate", "--data", str(FIXTURE), "--completions",
                                                   str(d / "ext_partial.json"), *fast]),
        ("--completions all empty strings", ["evaluate", "--data", str(FIXTURE), "--completions",
                                             str(d / "ext_empty.json"), *fast]),
        ("--model hub id, offline", ["evaluate", "--data", str(FIXTURE), "--model", "nobody/no-such-model-xyz"]),
        ("--model ./missing-folder", ["evaluate", "--data", str(FIXTURE), "--model", "./missing-folder"]),
        ("--model x.gguf (missing)", ["evaluate", "--data", str(FIXTURE), "--model", "x.gguf"]),
        ("--selfedit.model ./missing-folder", [*ev, "--selfedit.model", "./missing-folder"]),
        ("--selfedit.model a train run folder, not its model", [*ev, "--selfedit.model", str(d / "train-run")]),
        ("seal demo on 4 passages", ["demo", "--data", str(FIXTURE), "--model", str(tiny)]),
        ("seal report on a missing folder", ["report", str(d / "nope")]),
        ("seal report on a folder that is not a run", ["report", str(d / "notes")]),
        ("seal report --out an existing file", ["report", str(d / "ok-run"), "--out", str(d / "afile")]),
        ("seal arc --tasks missing", ["arc", "evaluate", "--tasks", str(d / "nope"), "--model", str(tiny)]),
        ("seal arc --tasks a folder with a binary .json", ["arc", "evaluate", "--tasks", str(d), "--model", str(tiny)]),
        ("seal arc --limit -1", [*arc, "--limit", "-1"]),
        ("seal arc --bootstrap 0", [*arc, "--bootstrap", "0"]),
        ("seal arc --top_p 0", [*arc, "--top_p", "0"]),
        ("seal arc --out an existing file", [*arc, "--out", str(d / "afile")]),
        ("seal bench inner-loop --passages -1", ["bench", "inner-loop", "--passages", "-1"]),
        # your own documents: special files, numbers, endless questions, damage, unsafe text
        ("seal adapt a FIFO nobody writes to", ["adapt", str(d / "pipe.txt"), "--registry", str(d / "reg-new"), *fast]),
        ("seal adapt /dev/zero", ["adapt", "/dev/zero", "--registry", str(d / "reg-new"), *fast]),
        ("seal adapt /dev/null", ["adapt", "/dev/null", "--registry", str(d / "reg-new"), *fast]),
        ("seal adapt, refused after the model loads (first start)",
         ["adapt", str(d / "long.txt"), "--registry", str(d / "reg-new"), *fast, "--adapt.max_chunks", "1"]),
        ("seal rollback 2**64", ["rollback", str(2**64), "--registry", str(d / "reg")]),
        ("seal ask --version 2**64", ["ask", "Who?", "--version", str(2**64), "--registry", str(d / "reg")]),
        ("seal ask, a question past the context window",
         ["ask", "Who founded the harbor town of Velmora and when? " * 400, "--registry", str(d / "reg"), *fast]),
        ("seal ask, routed to a damaged adapter",
         ["ask", "What does the Drosk Mining Company extract?", "--registry", str(d / "reg-damaged"), *fast]),
        ("seal ask, routed past a damaged adapter",
         ["ask", "Who founded the harbor town Velmora?", "--registry", str(d / "reg-damaged"), *fast]),
        ("seal history --verify, a damaged adapter", ["history", "--verify", "--registry", str(d / "reg-damaged")]),
        ("seal adapt, registry.sqlite emptied (0 bytes)",
         ["adapt", str(d / "drosk.txt"), "--registry", str(d / "reg-emptied"), *fast]),
        ("seal history, registry.sqlite emptied (0 bytes)", ["history", "--registry", str(d / "reg-emptied")]),
        ("seal history, a title with terminal escapes", ["history", "--registry", str(d / "reg-evil")]),
    ]


def run_case(argv: list[str], runs: Path, name: str) -> dict:
    out = None
    if "--out" not in argv and argv[0] in ("evaluate", "train"):
        out = runs / f"case{abs(hash(name)) % 10**8}"
        argv = argv + ["--out", str(out)]
    t = time.time()
    try:
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # let the hub check probe the network
        r = subprocess.run([SEAL, *argv], capture_output=True, text=True, timeout=300, cwd=runs, env={**env, "SEAL_QUIET": "1"})
        rc, err, so = r.returncode, r.stderr, r.stdout
    except subprocess.TimeoutExpired:
        rc, err, so = "timeout", "", ""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    shown = lines[-1] if lines else ""
    if rc in (0, 1) and not shown:  # what the run said about its input, not the table
        said = VERIFY_SAID if "--verify" in argv else SAID
        keep = [line.strip() for line in so.splitlines()
                if line.startswith(said) or (line.startswith("version ") and " answered" in line)]
        shown = " / ".join(keep) or "(ran)"
    if "--registry" in argv and argv[0] == "adapt":  # a refused first start must leave no registry
        out = Path(argv[argv.index("--registry") + 1])
        out = out if out.name == "reg-new" else None
    return {"case": name, "rc": rc, "seconds": round(time.time() - t, 1), "traceback": "Traceback" in err,
            "shown": shown, "folder_left": bool(out and out.exists() and rc != 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/bad_input_tour.md")
    ap.add_argument("--only", nargs="*", default=[], help="run only cases whose name contains one of these")
    args = ap.parse_args()
    from conftest import build_tiny_model
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny = build_tiny_model(tmp / "tiny")
        d = tmp / "data"
        d.mkdir()
        make_files(d)
        runs = tmp / "runs"
        runs.mkdir()
        # one good run for the report case
        subprocess.run([SEAL, "evaluate", "--data", str(FIXTURE), "--limit", "1", "--model", str(tiny), "--inner.epochs",
                        "1", "--selfedit.max_new_tokens", "8", "--selfedit.k", "1", "--out", str(d / "ok-run")],
                       capture_output=True, env={**os.environ, "SEAL_QUIET": "1"}, check=True)
        make_registries(d, tiny)
        (d / "train-run").mkdir()
        (d / "train-run" / "final.json").write_text(json.dumps({"model": str(d / "train-run/rounds/round_1/model")}))
        rows = []
        for name, argv in cases(d, tiny):
            if args.only and not any(o in name for o in args.only):
                continue
            row = run_case(argv, runs, name)
            rows.append(row)
            print(f"{name:50s} rc={row['rc']} {row['seconds']:5.1f}s tb={row['traceback']} left={row['folder_left']}  "
                  f"{row['shown'][:150]}", flush=True)
    tmpdir = str(tmp)
    lines = ["# Bad input: what the user sees", "",
             "Made by `.venv/bin/python scripts/bad_input_tour.py` (tiny random model, temporary files). "
             "Paths under the temporary folder are shown as `$TMP`.", "",
             f"{sum(r['traceback'] for r in rows)} tracebacks, "
             f"{sum(r['folder_left'] for r in rows)} run or registry folders left by refused starts, "
             f"{len(rows)} cases.", "",
             "| input | exit | seconds | what the user sees |", "|---|---|---|---|"]
    for r in rows:
        shown = r["shown"].replace(tmpdir, "$TMP").replace(str(ROOT), ".").replace("|", "\\|")
        flags = (" **(traceback)**" if r["traceback"] else "") + (" **(run folder left)**" if r["folder_left"] else "")
        lines.append(f"| {r['case']} | {r['rc']} | {r['seconds']} | {shown}{flags} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
