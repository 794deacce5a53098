"""`seal report`: plots and a self-contained HTML page from fake run folders."""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seal.report import ReportError, ReportWarning, add_cli, build_report

needs_mpl = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                               reason="matplotlib not installed (pip install 'seal[report]')")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM = Path("/usr/bin/chromium")


# ----------------------------------------------------------------------------- fake runs

def _manifest(command: str, seed: int = 0) -> dict:
    return {"command": command, "created": "2025-06-20T14:03:11+00:00",
            "argv": ["seal", command, "--seed", str(seed)], "seed": seed,
            "data": {"path": "data/squad_tiny.json",
                     "sha256": "3f9a6c1e0b7d2a4458c1f0e9d8b7a6c5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9",
                     "n_items": 8},
            "versions": {"seal": "0.1.0", "torch": "2.4.1", "transformers": "4.46.0"},
            "git_rev": "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"}


def _write_run(root: Path, command: str, seed: int = 0) -> Path:
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps(_manifest(command, seed)))
    (root / "config.yaml").write_text(
        f"seed: {seed}\nmodel:\n  name: default\nlora:\n  rank: 16\n  alpha: 32.0\n"
        "inner:\n  lr: 0.001\n  epochs: 5\nrestem:\n  rounds: 3\n  samples: 4\n")
    return root


def make_train_run(root: Path, seed: int = 0, rounds: int = 3) -> Path:
    run = _write_run(root, "train", seed)
    rng = random.Random(seed)
    events = []
    for r in range(1, rounds + 1):
        lines = []
        for p in range(4):
            for s in range(4):
                reward = min(1.0, max(0.0, rng.gauss(0.15 + 0.08 * r, 0.1)))
                lines.append({"round": r, "passage_id": f"p{p}", "sample": s, "seed": seed,
                              "reward": round(reward, 4),
                              "metrics": {"logprob": round(-2.5 + reward, 3),
                                          "containment": reward},
                              "seconds": round(rng.uniform(8, 15), 2)})
        d = run / "rounds" / f"round_{r}"
        d.mkdir(parents=True)
        (d / "rewards.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        mean = sum(x["reward"] for x in lines) / len(lines)
        events.append({"event": "round", "round": r, "n_kept": 5 + r, "mean_reward": round(mean, 4),
                       "seconds": 321.5})
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


SUMMARY = {
    "order": ["base", "passage_in_context", "implications_lora"],
    "conditions": {
        "base": {"n_questions": 40, "n_passages": 8, "metrics": {
            "containment": {"mean": 0.325, "lo": 0.187, "hi": 0.483},
            "f1": {"mean": 0.2411, "lo": 0.152, "hi": 0.339},
            "em": {"mean": 0.1, "lo": 0.028, "hi": 0.237},
            "logprob": {"mean": -2.734, "lo": -3.01, "hi": -2.46}}},
        "passage_in_context": {"n_questions": 40, "n_passages": 8, "metrics": {
            "containment": {"mean": 0.675, "lo": 0.517, "hi": 0.813},
            "f1": {"mean": 0.5873, "lo": 0.47, "hi": 0.7},
            "em": {"mean": 0.45, "lo": 0.293, "hi": 0.615},
            "logprob": {"mean": -1.212, "lo": -1.43, "hi": -1.0}}},
        "implications_lora": {"n_questions": 40, "n_passages": 8, "metrics": {
            "containment": {"mean": 0.45, "lo": 0.293, "hi": 0.615},
            "f1": {"mean": 0.3962, "lo": 0.28, "hi": 0.51},
            "em": {"mean": 0.2, "lo": 0.091, "hi": 0.356},
            "logprob": {"mean": -2.051, "lo": -2.3, "hi": -1.8}}},
    },
}


def make_eval_run(root: Path, seed: int = 0, shift: float = 0.0, forgetting: bool = True) -> Path:
    run = _write_run(root, "evaluate", seed)
    summary = json.loads(json.dumps(SUMMARY))
    for info in summary["conditions"].values():
        for stat in info["metrics"].values():
            for k in stat:
                stat[k] = round(stat[k] + shift, 4)
    (run / "summary.json").write_text(json.dumps(summary))
    if forgetting:
        ids = ["p1", "p2", "p3", "p4"]
        mat = [[round(0.9 - 0.1 * (i - j), 3) if j <= i else 0.2 for j in range(4)]
               for i in range(4)]
        (run / "forgetting.json").write_text(
            json.dumps({"after": ids, "on": ids, "matrix": mat, "metric": "containment"}))
    return run


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


def no_external_refs(page: str) -> None:
    assert not re.search(r"https?://", page)
    assert "<script" not in page.lower()
    for ref in re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page):
        assert ref.startswith("data:image/png;base64,"), ref[:60]


# ----------------------------------------------------------------------------- tests

@needs_mpl
def test_train_run_report(tmp_path):
    run = make_train_run(tmp_path / "train_s0")
    page = build_report([run], tmp_path / "out")
    assert page == tmp_path / "out" / "report.html"
    for name in ("rewards.png", "mean_reward.png"):
        assert is_png(tmp_path / "out" / name)
    assert not (tmp_path / "out" / "summary.png").exists()
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 2
    no_external_refs(text)
    assert "<details>" in text and "rank: 16" in text          # config.yaml, collapsible
    assert "3f9a6c1e0b7d" in text and "a1b2c3d4e5f6" in text   # short sha256 / git rev
    assert "n_kept" in text                                    # metrics.jsonl round table


@needs_mpl
def test_eval_run_report_table_and_plots(tmp_path):
    run = make_eval_run(tmp_path / "eval_s0")
    page = build_report([run], tmp_path / "out")
    assert is_png(tmp_path / "out" / "summary.png")
    assert is_png(tmp_path / "out" / "forgetting.png")
    assert not (tmp_path / "out" / "rewards.png").exists()
    text = page.read_text()
    assert "0.325 [0.187, 0.483]" in text                      # containment of `base`
    assert "-1.212 [-1.430, -1.000]" in text                   # logprob of passage_in_context
    assert text.index("passage_in_context") < text.index("implications_lora")
    assert text.count("data:image/png;base64,") == 2
    no_external_refs(text)


@needs_mpl
def test_compare_two_runs_side_by_side(tmp_path):
    a = make_eval_run(tmp_path / "a" / "run", seed=0)
    b = make_eval_run(tmp_path / "b" / "run", seed=1, shift=0.05, forgetting=False)
    t = make_train_run(tmp_path / "t", seed=2)
    page = build_report([a, b, t], tmp_path / "out")
    text = page.read_text()
    assert "<b>a/run</b>" in text and "<b>b/run</b>" in text  # clashing names get the parent
    assert "0.325 [0.187, 0.483]" in text and "0.375 [0.237, 0.533]" in text
    assert "<h3>a/run</h3>" in text and "<h3>b/run</h3>" in text  # one summary table each
    for name in ("summary.png", "forgetting.png", "rewards.png", "mean_reward.png"):
        assert is_png(tmp_path / "out" / name)
    no_external_refs(text)


@needs_mpl
def test_demo_and_arc_runs(tmp_path):
    demo = make_train_run(tmp_path / "demo", rounds=1)
    m = json.loads((demo / "manifest.json").read_text())
    (demo / "manifest.json").write_text(json.dumps({**m, "command": "demo"}))
    (demo / "eval").mkdir()
    (demo / "eval" / "summary.json").write_text(json.dumps(SUMMARY))
    arc = _write_run(tmp_path / "arc", "arc-evaluate")
    (arc / "summary.json").write_text(json.dumps({"order": ["base", "ttt"], "conditions": {
        "base": {"n_questions": 12, "n_passages": 12,
                 "metrics": {"success": {"mean": 0.0833, "lo": 0.015, "hi": 0.354}}},
        "ttt": {"n_questions": 12, "n_passages": 12,
                "metrics": {"success": {"mean": 0.4167, "lo": 0.193, "hi": 0.68}}}}}))
    page = build_report([demo, arc], tmp_path / "out")
    text = page.read_text()
    assert "0.325 [0.187, 0.483]" in text and "0.417 [0.193, 0.680]" in text
    assert is_png(tmp_path / "out" / "summary.png") and is_png(tmp_path / "out" / "rewards.png")


@needs_mpl
def test_minimal_run_has_no_plots(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"command": "train"}))
    page = build_report([run], tmp_path / "out")
    text = page.read_text()
    assert "data:image" not in text and "(no config.yaml)" in text
    assert not list((tmp_path / "out").glob("*.png"))


def test_not_a_run_folder(tmp_path):
    good = make_eval_run(tmp_path / "good")
    bad = tmp_path / "not_a_run"
    bad.mkdir()
    with pytest.raises(ReportError, match=re.escape(str(bad))) as exc:
        build_report([good, bad], tmp_path / "out")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ReportError, match="missing_dir"):
        build_report([tmp_path / "missing_dir"], tmp_path / "out")


@needs_mpl
def test_truncated_jsonl_is_tolerated(tmp_path):
    run = make_train_run(tmp_path / "killed", rounds=2)
    with open(run / "rounds" / "round_2" / "rewards.jsonl", "a") as f:
        f.write('{"round": 2, "passage_id": "p0", "sample": 0, "rew')
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"event": "round", "round": 3, "n_ke')
    with pytest.warns(ReportWarning, match="truncated last line"):
        page = build_report([run], tmp_path / "out")
    assert is_png(tmp_path / "out" / "rewards.png")
    assert "data:image/png;base64," in page.read_text()


@needs_mpl
def test_malformed_optional_files_are_skipped(tmp_path):
    run = make_eval_run(tmp_path / "odd")
    (run / "forgetting.json").write_text(json.dumps(
        {"after": ["p1", "p2"], "on": ["p1"], "matrix": [[0.5, 0.1]], "metric": "containment"}))
    (run / "metrics.jsonl").write_text('{"event": "round", "round": 1, "n_kept": 3}\n'
                                       "not json\n" '{"event": "done"}\n')
    (run / "rounds" / "round_x").mkdir(parents=True)           # not a round folder
    s = json.loads((run / "summary.json").read_text())
    s["conditions"]["broken"] = "oops"                         # not a mapping
    s["conditions"]["base"]["metrics"]["f1"] = {"mean": None}  # no value
    (run / "summary.json").write_text(json.dumps(s))
    with pytest.warns(ReportWarning) as rec:
        page = build_report([run], tmp_path / "out")
    msgs = " ".join(str(w.message) for w in rec)
    assert "forgetting.json" in msgs and "malformed line" in msgs
    assert not (tmp_path / "out" / "forgetting.png").exists()
    assert is_png(tmp_path / "out" / "summary.png")
    text = page.read_text()
    assert "broken" in text and "0.325 [0.187, 0.483]" in text and "n_kept" in text

    (run / "summary.json").write_text('{"conditions": {"base": ')  # killed mid-write
    with pytest.warns(ReportWarning) as rec:
        build_report([run], tmp_path / "out")
    assert any("summary.json" in str(w.message) for w in rec)
    assert not (tmp_path / "out" / "summary.png").exists()      # the stale plot is gone


def test_missing_matplotlib_message(tmp_path, monkeypatch):
    run = make_eval_run(tmp_path / "e")
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # makes `import matplotlib` fail
    with pytest.raises(ReportError, match=re.escape("pip install 'seal[report]'")):
        build_report([run], tmp_path / "out")


@needs_mpl
def test_cli_subcommand(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="seal")
    add_cli(parser.add_subparsers(dest="command"))
    run = make_eval_run(tmp_path / "e", forgetting=False)
    args = parser.parse_args(["report", str(run), "--out", str(tmp_path / "r")])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "report.html")
    assert str(parser.parse_args(["report", str(run)]).out) == "report"
    args = parser.parse_args(["report", str(tmp_path)])
    assert args.func(args) == 2
    assert str(tmp_path) in capsys.readouterr().err
    with open(run / "metrics.jsonl", "w") as f:
        f.write('{"event": "round", "round": 1, "n_kept": 4}\n{"event": "ro')
    args = parser.parse_args(["report", str(run), "--out", str(tmp_path / "r")])
    assert args.func(args) == 0                                   # warnings: one line each
    assert capsys.readouterr().err.strip() == (
        f"seal report: warning: {run / 'metrics.jsonl'}: ignoring truncated last line")


@needs_mpl
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed")
def test_page_renders_in_headless_chromium(tmp_path):
    from matplotlib.image import imread

    runs = [make_eval_run(tmp_path / "e"), make_train_run(tmp_path / "t")]
    page = build_report(runs, tmp_path / "out")
    shot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1200,1600", page.resolve().as_uri()]
    t0 = time.monotonic()
    try:
        subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not finish within 60 s")
    print(f"chromium took {time.monotonic() - t0:.1f} s")
    assert shot.is_file() and is_png(shot)
    img = imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    assert float(img[..., :3].std()) > 0.02                  # not a blank page
