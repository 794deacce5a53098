"""`seal report`: the page a researcher reads, from small synthetic run folders written here
(a demo-sized ReSTEM + evaluation run, continual runs, a registry history, bench results)."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from seal.report import ReportError, ReportWarning, add_cli, build_report
from seal.report import words as W
from seal.report.browser import find_chromium
from seal.report.figures import constant_metrics, round_panels
from seal.report.load import Table, load_run

needs_mpl = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                               reason="matplotlib not installed (pip install 'seal[report]')")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script>\x1b[31mRED\x1b[0m\u202e"  # model text a page must show inert


# ----------------------------------------------------------------------------- synthetic runs

def _manifest(command: str, seed: int = 0) -> dict:
    return {"command": command, "created": "2025-06-20T14:03:11+00:00",
            "argv": ["seal", command, "--seed", str(seed)], "seed": seed,
            "data": {"path": "data/squad_tiny.json",
                     "sha256": "3f9a6c1e0b7d2a4458c1f0e9d8b7a6c5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9", "n_items": 8},
            "versions": {"seal": "0.1.0", "torch": "2.4.1"}, "git_rev": "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"}


def _write_run(root: Path, command: str, seed: int = 0) -> Path:
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps(_manifest(command, seed)))
    (root / "config.yaml").write_text(f"seed: {seed}\nlora:\n  rank: 16\nrestem:\n  rounds: 2\n")
    return root


def _lines(path: Path, recs: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def ci(mean: float, half: float) -> dict:
    return {"mean": mean, "lo": round(mean - half, 4), "hi": round(mean + half, 4)}


def write_rounds(run: Path, rounds: int = 2) -> None:
    """ReSTEM rounds on passages t0..t3, 3 self-edits each; sample 0 of t0 carries EVIL."""
    events = []
    for r in range(1, rounds + 1):
        d = run / "rounds" / f"round_{r}"
        d.mkdir(parents=True)
        samples, rewards, kept = [], [], []
        for p in range(4):
            comps = [f"Implication {r}.{p}.{s}: the harbor was built in 18{p}{s}." for s in range(3)]
            if p == 0:
                comps[0] = "Implication: " + EVIL
            samples.append({"passage_id": f"t{p}", "completions": comps})
            for s in range(3):
                rewards.append({"round": r, "passage_id": f"t{p}", "sample": s, "seed": 0,
                                "reward": round(0.1 * p + 0.05 * s + 0.1 * r - 0.2, 3)})
            kept.append({"passage_id": f"t{p}", "sample": 2, "reward": rewards[-1]["reward"]})
        _lines(d / "samples.jsonl", samples)
        _lines(d / "rewards.jsonl", rewards)
        _lines(d / "sft.jsonl", kept)
        done = {"round": r, "n_passages": 4, "n_selfedits": 12, "n_scored": 12, "n_kept": 4, "n_empty": 0,
                "mean_reward": 0.05 + 0.1 * r, "frac_positive": 0.5 + 0.1 * r, "mean_kept_reward": 0.2 + 0.1 * r,
                "reward_sd": 0.1, "kept_logprob_before": -2.0 + 0.3 * r, "kept_logprob_after": -1.5 + 0.3 * r,
                "selfedits": {"n": 12, "mean_tokens": 60.0 - 10 * r, "mean_items": 3.0, "distinct_2": 0.9 - 0.1 * r},
                "kept_selfedits": {"n": 4, "mean_tokens": 55.0 - 10 * r, "mean_items": 3.0,
                                   "distinct_2": 0.85 - 0.1 * r}}
        (d / "done.json").write_text(json.dumps(done))
        events.append({"event": "round", "step": r, "n_kept": 4, "mean_reward": done["mean_reward"]})
    _lines(run / "metrics.jsonl", events)


ORDER = ["no-adaptation", "passage", "passage x steps", "self-edits", "self-edits:round_2"]
LEVELS = {"no-adaptation": 0.10, "passage": 0.40, "passage x steps": 0.45, "self-edits": 0.30,
          "self-edits:round_2": 0.50}


def eval_summary() -> dict:
    conds = {c: {"n_passages": 4, "n_questions": 8, "metrics": {
        "containment": ci(v, 0.1), "f1": ci(v / 2, 0.05), "em": {"mean": 0.0, "lo": 0.0, "hi": 0.0},
        "logprob": ci(-3.0 + v, 0.2)}} for c, v in LEVELS.items()}
    return {"mode": "single", "reward_metric": "containment", "order": ORDER, "conditions": conds,
            "gain_vs_no_adaptation": {c: {"containment": ci(LEVELS[c] - 0.1, 0.08), "f1": ci(0.1, 0.05),
                                          "em": {"mean": 0.0, "lo": 0.0, "hi": 0.0}, "logprob": ci(0.3, 0.1)}
                                      for c in ORDER[1:]},
            "gain_vs_own_selfedits": {"self-edits:round_2": {"containment": ci(0.2, 0.1), "logprob": ci(0.2, 0.1)}},
            "gain_vs_steps_control": {"self-edits": {"containment": ci(-0.05, 0.1), "logprob": ci(0.1, 0.05)}},
            # a comparison this code has never heard of: shown all the same
            "gain_vs_control": {"self-edits": {"containment": ci(-0.15, 0.05), "logprob": ci(-0.1, 0.3)},
                                "self-edits:round_2": {"containment": ci(0.05, 0.1)}}}


def write_eval(where: Path) -> None:
    """An evaluation table on passages e0..e3 (2 questions each) with its detail files."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "summary.json").write_text(json.dumps(eval_summary()))
    base, results, passages = [], [], []
    for p in range(4):
        qs = [{"question": f"Who built harbor {p}-{q}?", "gold": f"Builder{p}{q}", "answer": "nobody",
               "logprob": -3.0, "containment": 0.0, "f1": 0.0, "em": 0.0} for q in range(2)]
        base.append({"passage_id": f"e{p}", "questions": qs})
        passages.append({"passage_id": f"e{p}", "title": f"Harbor {p}" + (" " + EVIL if p == 3 else "")})
        for c in ORDER[1:]:
            right = (p + ORDER.index(c)) % 3 == 0
            ans = [{**q, "answer": (f"It was Builder{p}{k}" if right else f"answer {c} {k}") +
                    (" " + EVIL if c == "self-edits" and p == 3 else ""),
                    "containment": 1.0 if right else 0.0} for k, q in enumerate(qs)]
            results.append({"key": f"{c}/e{p}/0", "condition": c, "passage_id": f"e{p}", "selfedit_index": 0,
                            "questions": ans, "metrics": {"containment": 1.0 if right else 0.0}})
    _lines(where / "base.jsonl", base)
    _lines(where / "results.jsonl", results)
    _lines(where / "passages.jsonl", passages)
    _lines(where / "selfedits.jsonl",
           [{"source": "own", "passage_id": f"e{p}", "completions": [f"Own self-edit for e{p}. {EVIL}"]}
            for p in range(4)] + [{"source": "other", "passage_id": f"e{p}", "completions": [f"Round-2 edit e{p}"]}
                                  for p in range(4)])


def make_demo_run(root: Path) -> Path:
    """Rounds on t0..t3 (their titles and texts in the data file the manifest names) and a table."""
    run = _write_run(root, "demo")
    write_rounds(run)
    data = [{"title": f"Town {p}" + (" " + EVIL if p == 0 else ""),
             "context": f"Town {p} has a harbor built in 18{p}0.",
             "questions": [{"question": f"When was harbor {p} built?", "answer": f"18{p}0"}]} for p in range(4)]
    (root / "data.json").write_text(json.dumps(data))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["data"] = {"path": str(root / "data.json"), "sha256": None, "n_items": 4}
    (run / "manifest.json").write_text(json.dumps(manifest))
    ids = {hashlib.sha1((d["title"] + "\n" + d["context"]).encode()).hexdigest()[:12]: f"t{p}"
           for p, d in enumerate(data)}
    for rdir in (run / "rounds").iterdir():   # the rounds' passage ids as the data file gives them
        for name in ("samples.jsonl", "rewards.jsonl", "sft.jsonl"):
            text = (rdir / name).read_text()
            for pid, short in ids.items():
                text = text.replace(f'"{short}"', f'"{pid}"')
            (rdir / name).write_text(text)
    write_eval(run / "eval")
    return run


def continual_result(guard: str, final: float, forgetting: float) -> dict:
    L = 3
    mat = [[0.1 + 0.1 * i - 0.05 * (i - j) if j <= i else None for j in range(L)] for i in range(L)]
    return {"guard": guard, "metric": "containment", "length": L, "sequences_done": 4,
            "mean_matrix": {"containment": mat}, "mean_base": {"containment": [0.02, 0.0, 0.04]},
            "summary": {"containment": {"final_mean": ci(final, 0.02), "final_mean_base": ci(0.02, 0.01),
                                        "final_gain_over_base": ci(final - 0.02, 0.015), "just_edited": ci(0.2, 0.03),
                                        "forgetting": ci(forgetting, 0.03), "unrelated_change": ci(0.0, 0.01),
                                        "first_retention": [ci(0.2, 0.05), ci(0.15, 0.05), ci(0.1, 0.05)]}},
            "compute": {"updates_kept": 12, "updates_rejected": 0, "seconds_per_sequence": ci(800.0, 50.0)}}


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


def section(page: str, name: str) -> str:
    m = re.search(rf'<section id="{name}">(.*?)</section>', page, re.S)
    assert m, f"no section {name}"
    return m.group(1)


def self_contained(page: str) -> None:
    assert not re.search(r"https?://", page)
    assert "<script" not in page.lower()
    for ref in re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page):
        assert ref.startswith("data:image/png;base64,"), ref[:60]


# ----------------------------------------------------------------------------- the demo-sized page

@pytest.fixture(scope="module")
def demo_page(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    run = make_demo_run(root / "demo")
    page = build_report([run], root / "out")
    return page, page.read_text(encoding="utf-8")


@needs_mpl
def test_first_screen_states_the_result(demo_page):
    _, text = demo_page
    assert text.index('<section id="headline">') < text.index('<section id="gains">')
    head = section(text, "headline")
    # every row in the summary's order, on the reward metric, with its interval
    for phrase in ("before any update 10% [0%, 20%]", "after training on the passage alone 40% [30%, 50%]",
                   "trained for as many steps as the own self-edits&#x27; update (passage x steps) 45% [35%, 55%]",
                   "own self-edits 30% [20%, 40%]", "round_2 model 50% [40%, 60%]"):
        assert phrase in head, phrase
    assert head.index("passage alone") < head.index("passage x steps") < head.index("plus the model")
    # paired comparisons, each judged by its interval; the unknown gain_vs_control shows too
    assert "self-edits: more than no adaptation (containment +20.0 pp [+12.0, +28.0]" in head
    assert "self-edits:round_2: more than the model&#x27;s own self-edits (containment +20.0 pp" in head
    assert "self-edits: less than control (containment -15.0 pp [-20.0, -10.0]" in head
    assert ("self-edits: cannot be told apart from the passage trained for the same steps "
            "(containment -5.0 pp [-15.0, +5.0]") in head
    assert "self-edits:round_2: cannot be told apart from control" in head
    assert "ReSTEM rounds (1-2): mean reward +0.150 -&gt; +0.250; kept 4/12 -&gt; 4/12" in head


@needs_mpl
def test_gain_plot_names_constant_metrics(demo_page):
    page, text = demo_page
    gains = section(text, "gains")
    assert gains.count("data:image/png;base64,") == 1 and is_png(page.parent / "gains_0.png")
    assert "Not drawn, the same in every condition: em = 0." in gains
    assert "+20.0 pp [+12.0, +28.0]" in gains   # the gains table beside the plot


@needs_mpl
def test_rounds_and_examples(demo_page):
    page, text = demo_page
    rounds = section(text, "rounds")
    assert "data:image/png;base64," in rounds and is_png(page.parent / "rounds_0.png")
    assert "kept_logprob_before" in rounds and "selfedits.distinct_2" in rounds
    run = load_run(page.parent.parent / "demo")
    assert round_panels(run) == ["reward", "share", "logprob", "length", "distinct", "items"]
    for rd in run.rounds.values():    # an older run without the M-step's log-probs: that panel goes
        for k in ("kept_logprob_before", "kept_logprob_after"):
            rd.done.pop(k)
    assert "logprob" not in round_panels(run)
    ex = section(text, "examples")
    # passages of largest and smallest gain (under self-edits), each question with gold and answers
    assert "largest gain" in ex and "smallest gain" in ex
    assert "Who built harbor 0-0?" in ex and "<b>Builder00</b>" in ex
    for cond in ORDER[1:]:
        assert f"after {cond}" in ex
    assert "It was Builder" in ex and " ✓" in ex
    assert "Own self-edit for e" in ex and "Round-2 edit e" in ex          # self-edit texts with their gains
    assert re.search(r"<b>self-edits</b> #1</td><td class=\"n\">[+-]\d", ex)
    # the training rounds' self-edits with rewards, the kept ones marked
    assert "Round 2;" in ex and "<tr class=kept><td>#3</td><td class='n'>+0.400</td><td>kept</td>" in ex
    assert "<h4>Town 3 <span" in ex and "Town 3 has a harbor built in 1830." in ex   # title and text from the data


@needs_mpl
def test_model_text_is_inert(demo_page):
    _, text = demo_page
    self_contained(text)
    assert "\x1b" not in text and "\u202e" not in text
    assert text.count("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;") >= 4  # title, answer, self-edits
    assert '<span class="ctl">\\x1b</span>[31mRED' in text and '<span class="ctl">\\u202e</span>' in text


@needs_mpl
@pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (CI installs it)")
def test_page_renders_in_headless_chromium(demo_page, tmp_path):
    from matplotlib.image import imread

    from seal.report.browser import dom, screenshot

    page, _ = demo_page
    built = dom(page)
    for name in ("headline", "gains", "rounds", "examples", "tables", "runs"):
        assert f'<section id="{name}">' in built
    assert "<script" not in built.lower()                    # the browser made no script element
    assert "&lt;script&gt;alert" in built                     # ... and shows the text instead
    shot = screenshot(page, tmp_path / "shot.png", width=1400, height=1400)
    img = imread(shot)
    assert img.shape[1] == 1400 and img.shape[0] >= 1000
    assert float(img[..., :3].std()) > 0.02                   # not a blank page


# ----------------------------------------------------------------------------- other kinds of input

@needs_mpl
def test_continual_registry_and_bench_pages(tmp_path):
    runs = []
    for guard, final, forg in (("merge", 0.05, 0.06), ("per-doc", 0.12, 0.0)):
        r = _write_run(tmp_path / guard, "continual")
        (r / "continual.json").write_text(json.dumps(continual_result(guard, final, forg)))
        runs.append(r)
    hist = {"registry": "/r", "format_version": 1, "model": "default", "current": 1, "events": [], "versions": [
        {"version": 0, "parent": None, "created": "t0", "current": False, "documents": 0, "probe_means": None,
         "refused": [], "added": []},
        {"version": 1, "parent": 0, "created": "t1", "current": True, "documents": 1,
         "probe_means": {"f1": 0.4}, "refused": [{"source": "bad.md", "gate": {"drop": 0.2, "threshold": 0.05}}],
         "added": [{"document": 1, "source": "doc.md", "title": "Doc " + EVIL, "record": {
             "probes_before": {"f1": 0.1}, "probes_after": {"f1": 0.4}, "chosen": 0,
             "selfedits": [{"text": "edit " + EVIL, "lines": []}],
             "gate": {"metric": "f1", "before": 0.5, "after": 0.48, "drop": 0.02, "threshold": 0.05, "scale": 1.0,
                      "passed": True}}}]}]}
    (tmp_path / "history.json").write_text(json.dumps(hist))
    benches = []
    for k, speed in enumerate((1.5, 2.5, 2.0)):
        b = tmp_path / f"bench_{k}.json"
        b.write_text(json.dumps({"command": "seal bench round", "paths": {}, "speedup_vs_ref":
                                 {"ref": 1.0, "racing": speed}}))
        benches.append(b)
    text = build_report([*runs, tmp_path / "history.json", *benches], tmp_path / "out").read_text()
    head = section(text, "headline")
    assert "Guard per-doc, 4 sequences of 3 passages: containment after the last edit 12% [10%, 14%]" in head
    assert "(more than never editing)" in head
    assert "Across 2 runs, per-doc ends highest (containment 12% [10%, 14%]) and per-doc forgets least" in head
    assert "current 1 with 1 document(s)" in head and "1 document(s) refused by the gate" in head
    assert "racing, runs 2.00x the reference (median of 3 results; min 1.50x, max 2.50x)" in head
    cont = section(text, "continual")
    assert cont.count("data:image/png;base64,") == 2          # heatmaps side by side + retention
    assert is_png(tmp_path / "out" / "forgetting.png") and is_png(tmp_path / "out" / "retention.png")
    reg = section(text, "registry")
    assert "0.50 -&gt; 0.48 (drop 0.020, threshold 0.05, scale 1.0, passed)" in reg
    assert "f1 0.10 -&gt; 0.40" in reg and "bad.md" in reg and "trained on the document alone" in reg
    bench = section(text, "bench")
    assert "<td><b>median</b></td><td></td><td class=\"n\"><b>1.00</b></td><td class=\"n\"><b>2.00</b></td>" in bench
    self_contained(text)
    assert "\x1b" not in text


@needs_mpl
def test_registry_folder(tmp_path):
    """A registry folder is read as `seal history --json` reads it (here a new one: version 0)."""
    from seal.documents.registry import Registry

    Registry.open(tmp_path / "reg", create=True, model="tiny-model", lock_wait=0).close()
    text = build_report([tmp_path / "reg"], tmp_path / "out").read_text()
    assert "(model tiny-model): 1 version(s), current 0 with 0 document(s)." in section(text, "headline")
    assert "the base model" in section(text, "registry")


@needs_mpl
def test_one_round_run_has_no_curves(tmp_path):
    run = _write_run(tmp_path / "train1", "train")
    write_rounds(run, rounds=1)
    text = build_report([run], tmp_path / "out").read_text()
    rounds = section(text, "rounds")
    assert "data:image" not in rounds and "One round: curves need at least two" in rounds
    assert "1 ReSTEM round: mean reward +0.150; kept 4/12" in section(text, "headline")
    assert not (tmp_path / "out" / "rounds_0.png").exists()
    # round 2 being run: its rewards so far, no done.json yet
    write_rounds(tmp_path / "r2", rounds=2)
    (run / "rounds" / "round_2").mkdir()
    for name in ("samples.jsonl", "rewards.jsonl"):
        (run / "rounds" / "round_2" / name).write_text((tmp_path / "r2" / "rounds" / "round_2" / name).read_text())
    text = build_report([run], tmp_path / "out").read_text()
    assert "Round 2 is in progress: 12 of 12 self-edits scored so far, mean reward +0.200, 11 above 0." in \
        section(text, "headline")
    assert "Round 2;" in section(text, "examples")


@needs_mpl
def test_collected_result_json(tmp_path):
    """A run collected into one JSON for results/ (scripts/summarize_train.py's layout)."""
    run = make_demo_run(tmp_path / "demo")
    rounds = [json.loads((run / "rounds" / f"round_{r}" / "done.json").read_text()) for r in (1, 2)]
    rewards = {f"round_{r}": [json.loads(x) for x in (run / "rounds" / f"round_{r}" / "rewards.jsonl").open()]
               for r in (1, 2)}
    samples = {json.loads(x)["passage_id"]: json.loads(x)["completions"]
               for x in (run / "rounds" / "round_2" / "samples.jsonl").open()}
    kept = {"round_2": [{**k, "completion": samples[k["passage_id"]][k["sample"]]}
                        for k in map(json.loads, (run / "rounds" / "round_2" / "sft.jsonl").open())]}
    collected = {"run": "demo", "manifest": json.loads((run / "manifest.json").read_text()), "config": {"seed": 0},
                 "rounds": rounds, "rewards": rewards, "kept": kept, "eval": {"summary": eval_summary()}}
    (tmp_path / "collected.json").write_text(json.dumps(collected))
    text = build_report([tmp_path / "collected.json"], tmp_path / "out").read_text()
    assert "2 ReSTEM rounds (1-2): mean reward +0.150 -&gt; +0.250" in section(text, "headline")
    assert "before any update 10% [0%, 20%]" in section(text, "headline")
    assert is_png(tmp_path / "out" / "rounds_0.png") and is_png(tmp_path / "out" / "gains_0.png")
    ex = section(text, "examples")
    assert "keeps only the kept self-edits" in ex and "Implication 2.3.2: the harbor was built in 1832." in ex
    assert "Implication 2.3.1" not in ex        # not kept: its text is not in a collected result
    assert "seed: 0" in section(text, "runs")


def test_verdicts_and_constant_metrics():
    assert W.verdict(0.01, 0.3) == "more than" and W.verdict(-0.3, -0.01) == "less than"
    assert W.verdict(-0.1, 0.1) == "cannot be told apart from"
    t = Table(Path("."), eval_summary())
    assert constant_metrics(t) == {"em": 0.0}
    assert list(t.gains()) == ["gain_vs_no_adaptation", "gain_vs_own_selfedits", "gain_vs_steps_control",
                               "gain_vs_control"]
    for line in W.comparison_lines(t):   # never "cannot be told apart" for an interval without 0
        lo, hi = (float(x) for x in re.search(r"\[([-+\d.]+), ([-+\d.]+)\]", line).groups())
        assert ("cannot be told apart" in line) == (lo <= 0 <= hi), line
    s = eval_summary()
    s["conditions"]["self-edits"]["n_passages"] = 1   # one passage: no interval, no verdict
    assert "self-edits vs no adaptation: containment +20.0 pp on one passage (no interval)" in \
        W.comparison_lines(Table(Path("."), s))
    s["reward_metric"] = "logprob"
    assert "questions answered right: no-adaptation 10% [0%, 20%]" in W.table_sentence(Table(Path("."), s))


# ----------------------------------------------------------------------------- robustness

def test_not_a_run_folder(tmp_path):
    good = make_demo_run(tmp_path / "good")
    bad = tmp_path / "not_a_run"
    bad.mkdir()
    with pytest.raises(ReportError, match=re.escape(str(bad))) as exc:
        build_report([good, bad], tmp_path / "out")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ReportError, match="missing_dir"):
        build_report([tmp_path / "missing_dir"], tmp_path / "out")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(ReportError, match="other.json: neither a bench result, a collected run nor `seal history"):
        build_report([tmp_path / "other.json"], tmp_path / "out")
    (tmp_path / "torn.json").write_text('{"paths": ')
    with pytest.raises(ReportError, match="torn.json: not readable JSON"):
        build_report([tmp_path / "torn.json"], tmp_path / "out")


@needs_mpl
def test_truncated_and_malformed_files_are_skipped(tmp_path):
    run = make_demo_run(tmp_path / "killed")
    with open(run / "rounds" / "round_2" / "rewards.jsonl", "a") as f:
        f.write('{"round": 2, "passage_id": "t0", "sample": 0, "rew')
    with open(run / "eval" / "results.jsonl", "a") as f:
        f.write("not json\n{}\n")
    s = json.loads((run / "eval" / "summary.json").read_text())
    s["conditions"]["broken"] = "oops"                          # not a mapping
    s["conditions"]["passage"]["metrics"]["f1"] = {"mean": None}  # no value
    del s["order"]                                              # an older run
    (run / "eval" / "summary.json").write_text(json.dumps(s))
    with pytest.warns(ReportWarning) as rec:
        text = build_report([run], tmp_path / "out").read_text()
    msgs = " ".join(str(w.message) for w in rec)
    assert "truncated last line" in msgs and "malformed line" in msgs
    assert "broken" in text and "0.100 [0.000, 0.200]" in text
    (run / "eval" / "summary.json").write_text('{"conditions": {"base": ')  # killed mid-write
    with pytest.warns(ReportWarning) as rec:
        text = build_report([run], tmp_path / "out").read_text()
    assert any("summary.json" in str(w.message) for w in rec)
    assert '<section id="gains">' not in text and not (tmp_path / "out" / "gains_0.png").exists()  # stale plot gone


def test_missing_matplotlib_message(tmp_path, monkeypatch):
    run = make_demo_run(tmp_path / "e")
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # makes `import matplotlib` fail
    with pytest.raises(ReportError, match=re.escape("pip install 'seal[report]'")):
        build_report([run], tmp_path / "out")


@needs_mpl
def test_cli_subcommand(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="seal")
    add_cli(parser.add_subparsers(dest="command"))
    run = _write_run(tmp_path / "e", "evaluate")
    (run / "summary.json").write_text(json.dumps(eval_summary()))
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
