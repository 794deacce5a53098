"""`seal adapt` / `ask` / `history` / `rollback` on the tiny model: the round trip, PEFT loading,
atomic commits under SIGKILL, two writers at once, the gate, review, and bad input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from seal.cli import main
from seal.config import LoRAConfig, ModelConfig
from seal.documents import adapt as A
from seal.documents.registry import (
    Registry,
    RegistryError,
    peft_config,
    read_adapter_folder,
    write_adapter_folder,
)
from seal.training import lora
from seal.training.models import load_model

FAST = ["--selfedit.max_new_tokens", "12", "--eval.max_answer_tokens", "4", "--inner.epochs", "1",
        "--adapt.probe_max_new_tokens", "16", "--threads", "1"]

DOCS = {
    "velmora.md": "# Velmora\n\nVelmora is a harbor town founded in 1742 by salt traders. Its lighthouse is painted "
                  "green and white.\n\nThe town holds a lantern festival every April on the Sorrel River.\n",
    "drosk.txt": "The Drosk Mining Company extracts blue cobalt from the Harrow Hills. It was founded by Ilsa Drosk "
                 "in 1911 and employs four hundred miners.\n",
    "frog.txt": "The pellicant frog lives only on Orlet Island. Its eggs hatch after nine days in shallow ponds.\n",
}


@pytest.fixture
def docs(tmp_path) -> dict[str, Path]:
    d = tmp_path / "docs"
    d.mkdir()
    out = {}
    for name, text in DOCS.items():
        (d / name).write_text(text)
        out[name] = d / name
    return out


def _adapt(tiny, reg, *files, extra=()) -> int:
    return main(["adapt", *map(str, files), "--registry", str(reg), "--model", str(tiny), *FAST, *extra])


def _ask(reg, question, capsys, extra=()) -> tuple[str, str]:
    capsys.readouterr()
    assert main(["ask", question, "--registry", str(reg), *FAST, *extra]) == 0
    head, answer = capsys.readouterr().out.strip().split("\n")[-2:]
    return head, answer


def _history(reg, capsys) -> dict:
    capsys.readouterr()
    assert main(["history", "--registry", str(reg), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _peft_logits(tiny_model_dir, folder: Path, ids: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    with torch.no_grad():
        return PeftModel.from_pretrained(base, str(folder)).eval()(input_ids=ids).logits


# ----------------------------------------------------------------------------- the round trip

def test_adapt_ask_history_rollback_round_trip(tiny_model_dir, docs, tmp_path, capsys, monkeypatch):
    reg = tmp_path / "reg"
    loaded = []

    def spy(cfg):
        model, tok = load_model(cfg)
        loaded.append(model)
        return model, tok
    monkeypatch.setattr(A, "load_model", spy)

    assert _adapt(tiny_model_dir, reg, docs["velmora.md"]) == 0
    out = capsys.readouterr().out
    assert "version 0 is current" in out and "version 1 is current: 1 document(s)" in out
    # the adapter changed, the base weights did not
    fresh, _ = load_model(ModelConfig(name=str(tiny_model_dir)))
    after = loaded[0].state_dict()
    assert all(torch.equal(w, after[k]) for k, w in fresh.state_dict().items())
    r = Registry.open(reg)
    (doc,) = r.documents(1)
    weights, conf = r.load_adapter(doc)
    assert conf["r"] == 32 and conf["lora_alpha"] == 64
    assert any(k.endswith("lora_B") and w.abs().sum() > 0 for k, w in weights.items())  # trained away from B = 0
    r.close()

    head, answer_v1 = _ask(reg, "Who founded the harbor town Velmora?", capsys)
    assert head.startswith('version 1 (current) answered, routed to document 1 "Velmora"')
    head, _ = _ask(reg, "Which telescope does the Zarnik Observatory use?", capsys)
    assert "answered with the base model: no document covers the question" in head

    assert _adapt(tiny_model_dir, reg, docs["drosk.txt"]) == 0
    head, _ = _ask(reg, "What does the Drosk Mining Company extract?", capsys)
    assert head.startswith('version 2 (current) answered, routed to document 2 "drosk"')
    assert _ask(reg, "Who founded the harbor town Velmora?", capsys)[1] == answer_v1  # velmora's adapter, unchanged

    h = _history(reg, capsys)
    assert [v["version"] for v in h["versions"]] == [0, 1, 2] and h["current"] == 2
    v1, v2 = h["versions"][1], h["versions"][2]
    assert v1["parent"] == 0 and v2["parent"] == 1 and v2["documents"] == 2
    (d,) = v1["added"]
    assert d["sha256"] == hashlib.sha256(docs["velmora.md"].read_bytes()).hexdigest()
    rec = d["record"]
    assert rec["selfedit"] == rec["selfedits"][0]["text"] and rec["probes"] and "probes_before" in rec
    assert v2["added"][0]["record"]["gate"]["earlier_documents"] == 1
    assert {"before", "after", "drop", "threshold", "scale", "tries"} <= set(v2["added"][0]["record"]["gate"])

    assert main(["rollback", "1", "--registry", str(reg)]) == 0
    assert "version 1 is current (was 2)" in capsys.readouterr().out
    head, _ = _ask(reg, "What does the Drosk Mining Company extract?", capsys)
    assert head.startswith("version 1 (current) answered with the base model")
    head, _ = _ask(reg, "What does the Drosk Mining Company extract?", capsys, ["--version", "2"])
    assert head.startswith('version 2 answered, routed to document 2')
    assert _ask(reg, "Who founded the harbor town Velmora?", capsys)[1] == answer_v1

    # adapting after a rollback branches from the current version; nothing was deleted
    assert _adapt(tiny_model_dir, reg, docs["frog.txt"]) == 0
    h = _history(reg, capsys)
    assert h["versions"][3]["parent"] == 1 and h["versions"][3]["documents"] == 2 and h["current"] == 3
    assert [e["kind"] for e in h["events"]] == ["create", "commit", "commit", "rollback", "commit"]
    capsys.readouterr()
    assert main(["history", "--registry", str(reg)]) == 0
    text = capsys.readouterr().out
    assert "version 3, parent 1" in text and "<- current" in text and "rollbacks:" in text and "self-edit" in text
    assert "probe (cloze): Complete the sentence: The pellicant frog lives only on ... -> Orlet Island" in text
    r = Registry.open(reg)
    assert r.verify() == [] and len(list((reg / "adapters").iterdir())) == 3
    r.close()


def test_ask_answers_under_the_routed_adapter(tiny_model_dir):
    """The answer is generated with the routed document's adapter applied (and its title asked
    as the topic), not by the base model."""
    from seal import knowledge as K
    from seal.config import RunConfig
    from seal.training.generation import HFGenerator
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    cfg = RunConfig()
    cfg.eval.max_answer_tokens = 6
    conf = LoRAConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "down_proj"))
    state = lora.attach(model, conf, 1)
    lora.reset(state, [5])
    with torch.no_grad():
        for layer in state.layers.values():
            layer.B[0].normal_(0, 2.0)
    weights = lora.adapter_state(state, 0)
    lora.detach(model)
    entry = A.Entry("k" * 64, "Velmora", "Velmora is a harbor town founded by salt traders.", [], weights=weights,
                    lora=conf)
    su = A.Server(model, tok, HFGenerator(model, tok), True, cfg)
    question = "Who founded the harbor town Velmora?"
    r, cov, answer = A.answer_question(su, [entry], question)
    assert (r, cov) == (0, 1.0)
    prompt = K.qa_input(tok, K.QA(question, "", "Velmora"), True)
    with A._attached(su, entry):  # (checked against plain peft in the tests below)
        adapted = su.gen.generate([prompt], max_new_tokens=6, rows=[0])[0][0]
    base = su.gen.generate([prompt], max_new_tokens=6)[0][0]
    assert answer == K.clean_answer(adapted) != K.clean_answer(base)
    assert A.answer_question(su, [], question)[:2] == (-1, 0.0)  # no documents: the base model


def test_a_document_already_in_the_version_is_skipped(tiny_model_dir, docs, tmp_path, capsys):
    reg = tmp_path / "reg"
    assert _adapt(tiny_model_dir, reg, docs["frog.txt"], docs["frog.txt"]) == 0
    assert f"{docs['frog.txt']}: the same text as {docs['frog.txt']} (title and text); skipped" in capsys.readouterr().out
    assert _adapt(tiny_model_dir, reg, docs["frog.txt"]) == 0
    out = capsys.readouterr().out
    assert "already in version 1; skipped" in out and "nothing new to adapt; version 1 stays current" in out
    r = Registry.open(reg)
    assert r.version_ids() == [0, 1] and len(r.documents(1)) == 1
    r.close()


# ----------------------------------------------------------------------------- PEFT

def test_plain_peft_loads_an_adapter_with_the_same_logits(tiny_model_dir, tmp_path):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    cfg = LoRAConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "down_proj"))
    state = lora.attach(model, cfg, 1)
    lora.reset(state, [3])
    with torch.no_grad():
        for layer in state.layers.values():
            layer.B[0].normal_(0, 0.5)  # a nonzero update, as after training
    ids = torch.tensor([tok("Velmora is a harbor town founded by salt traders.")["input_ids"]])
    with torch.no_grad(), lora.use_rows(model, [0]):
        ours = model(input_ids=ids).logits
    weights = lora.adapter_state(state, 0)
    lora.detach(model)
    with torch.no_grad():
        base = model(input_ids=ids).logits
    folder = tmp_path / "adapter"
    write_adapter_folder(folder, weights, peft_config(cfg.rank, cfg.alpha, cfg.targets, str(tiny_model_dir)))
    theirs = _peft_logits(tiny_model_dir, folder, ids)
    assert (ours - base).abs().max() > 1e-3  # the adapter does something
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    back, conf = read_adapter_folder(folder)
    assert conf["target_modules"] == ["down_proj", "q_proj", "v_proj"]
    assert all(torch.equal(back[k], weights[k]) for k in weights)


def test_every_committed_adapter_loads_in_peft_as_seal_serves_it(tiny_model_dir, docs, tmp_path):
    from peft import AutoPeftModelForCausalLM
    reg = tmp_path / "reg"
    assert _adapt(tiny_model_dir, reg, docs["velmora.md"], docs["drosk.txt"]) == 0
    r = Registry.open(reg)
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    su = A.Server(model, tok, None, True, None, r)
    ids = torch.tensor([tok("The Drosk Mining Company extracts blue cobalt.")["input_ids"]])
    for e in A.entries_of(r, r.current):
        with torch.no_grad(), A._attached(su, e), lora.use_rows(model, [0]):
            ours = model(input_ids=ids).logits
        folder = r.adapter_path(e.adapter)
        torch.testing.assert_close(_peft_logits(tiny_model_dir, folder, ids), ours, rtol=1e-5, atol=1e-5)
        with torch.no_grad():  # the adapter names its base model: one call loads both
            auto = AutoPeftModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)(input_ids=ids).logits
        torch.testing.assert_close(auto, ours, rtol=1e-5, atol=1e-5)
    r.close()


def test_peft_base_path_names_the_model_seal_loads(tmp_path):
    from seal.config import ModelConfig as M
    assert A.peft_base_path(M(name="default", cache_dir=str(tmp_path))) == str(tmp_path / "smollm2-135m-instruct")
    assert A.peft_base_path(M(name="/m/x.gguf", cache_dir=str(tmp_path))) == str(tmp_path / "gguf-x")
    assert A.peft_base_path(M(name="org/model")) == "org/model"


# ----------------------------------------------------------------------------- crashes and two writers

def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "seal.cli", *map(str, args)]


def _env() -> dict:
    src = str(Path(A.__file__).resolve().parents[2])
    return {**os.environ, "SEAL_QUIET": "1", "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


class _Watched:
    """A subprocess whose stdout lines are collected as they come, with a time stamp each."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        self.lines: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    def wait_for(self, prefix: str, timeout: float = 120) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, line in list(self.lines):
                if line.startswith(prefix):
                    return t
            if self.proc.poll() is not None and not self.thread.is_alive():
                return None
            time.sleep(0.005)
        return None


def _consistent(reg: Path, tiny_model_dir, allowed: set[int]) -> int:
    """The registry opens, passes its own checks, serves a version in `allowed`, and every
    adapter of those versions loads in plain peft and gives finite logits."""
    r = Registry.open(reg)
    try:
        assert r.verify() == []
        cur = r.current
        assert cur in allowed, (cur, allowed)
        ids = torch.tensor([[1, 5, 9, 12]])
        for v in sorted(allowed & set(r.version_ids())):
            for d in r.documents(v):
                assert torch.isfinite(_peft_logits(tiny_model_dir, r.adapter_path(d.adapter), ids)).all()
        return cur
    finally:
        r.close()


def _versions(reg: Path) -> set[int]:
    r = Registry.open(reg)
    try:
        return set(r.version_ids())
    finally:
        r.close()


def test_sigkill_at_random_moments_never_breaks_the_registry(tiny_model_dir, docs, tmp_path):
    """20 runs of `seal adapt` killed with SIGKILL: half at a random moment of the run, half just
    as the commit starts. Every time the registry is consistent, serves either the previous
    version or the complete new one, and that version's adapters load in plain peft."""
    reg = tmp_path / "reg"
    argv = _cli("adapt", docs["drosk.txt"], "--registry", reg, "--model", tiny_model_dir, *FAST)
    assert _adapt(tiny_model_dir, reg, docs["velmora.md"]) == 0  # version 1: the previous version
    full = _Watched(argv)  # one uninterrupted run: how long the work after taking the lock lasts
    start = full.wait_for("registry ")
    assert full.proc.wait(timeout=300) == 0, full.proc.stderr.read()
    work = time.monotonic() - start
    rng = random.Random(12)
    killed = 0
    for trial in range(20):
        r = Registry.open(reg, lock_wait=30)
        r.rollback(1)
        r.close()
        before = _versions(reg)
        w = _Watched(argv)
        if trial % 2 == 0:
            assert w.wait_for("registry ") is not None, w.proc.stderr.read()
            time.sleep(rng.uniform(0, work))
        else:
            assert w.wait_for("committing version") is not None, w.proc.stderr.read()
            time.sleep(rng.uniform(0, 0.03))
        w.proc.send_signal(signal.SIGKILL)
        rc = w.proc.wait(timeout=60)
        killed += rc == -signal.SIGKILL
        new = _versions(reg) - before
        assert len(new) <= 1
        _consistent(reg, tiny_model_dir, {1} | new)
    assert killed >= 15  # the kills landed while adapt was running
    # the next adapt sweeps what the killed ones left, and commits
    assert subprocess.run(argv, check=False, capture_output=True, text=True, env=_env(), timeout=300).returncode == 0
    r = Registry.open(reg)
    named = {d.adapter for v in r.version_ids() for d in r.documents(v)}
    assert {p.name for p in (reg / "adapters").iterdir()} == named and r.verify() == []
    r.close()


def test_two_adapts_at_once_both_commit_or_one_is_refused(tiny_model_dir, docs, tmp_path):
    # refused at once (the default): one commits, the other says why in one line
    reg = tmp_path / "reg"
    procs = [subprocess.Popen(_cli("adapt", docs[n], "--registry", reg, "--model", tiny_model_dir, *FAST),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for n in ("velmora.md", "drosk.txt")]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for rc, err in results:
        if rc == 2:
            (line,) = err.strip().splitlines()
            # "(pid N)" when the holder's pid was already written, else without it (a race, both valid)
            assert line.startswith(f"seal: error: {reg}: another seal adapt or rollback "), line
    assert _consistent(reg, tiny_model_dir, {1, 2}) == len([c for c in codes if c == 0])

    # waiting for the lock: both commit, one after the other
    reg = tmp_path / "reg2"
    procs = [subprocess.Popen(_cli("adapt", docs[n], "--registry", reg, "--model", tiny_model_dir, *FAST,
                                   "--adapt.lock_wait", "300"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for n in ("velmora.md", "drosk.txt")]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    assert _consistent(reg, tiny_model_dir, {2}) == 2
    r = Registry.open(reg)
    assert r.version(2)["parent"] == 1 and len(r.documents(2)) == 2
    r.close()


def test_rollback_waits_for_or_refuses_a_running_writer(tmp_path, capsys):
    reg = Registry.open(tmp_path / "reg", create=True, model="m", lock_wait=0)
    assert main(["rollback", "0", "--registry", str(tmp_path / "reg")]) == 2
    assert "another seal adapt or rollback" in capsys.readouterr().err
    reg.close()  # the writer ends: its lock goes with it
    assert main(["rollback", "0", "--registry", str(tmp_path / "reg")]) == 0


# ----------------------------------------------------------------------------- gate and review

def test_the_gate_refuses_an_update_after_halving_it(tiny_model_dir, docs, tmp_path, capsys):
    reg = tmp_path / "reg"
    assert _adapt(tiny_model_dir, reg, docs["velmora.md"]) == 0
    capsys.readouterr()
    # a threshold of -1 demands that the earlier probes' f1 rise by a full point: never met
    assert _adapt(tiny_model_dir, reg, docs["drosk.txt"], extra=["--adapt.gate_threshold", "-1"]) == 1
    out = capsys.readouterr().out
    assert "refused by the forgetting gate" in out and "version 1 stays current" in out
    r = Registry.open(reg)
    assert r.current == 1 and r.version_ids() == [0, 1] and r.verify() == []
    r.close()
    # the same update passes a lenient gate
    assert _adapt(tiny_model_dir, reg, docs["drosk.txt"], extra=["--adapt.gate_threshold", "1"]) == 0


def test_halving_gate_retries_at_half_scale_then_refuses():
    from seal.knowledge.continual import halving_gate
    afters = iter([0.2, 0.5, 0.55])
    halved = []
    g = halving_gate(0.6, 0.05, 2, lambda: next(afters), lambda: halved.append(1))
    assert [t["scale"] for t in g["tries"]] == [1.0, 0.5, 0.25] and len(halved) == 2
    assert g["passed"] and g["scale"] == 0.25 and g["drop"] == pytest.approx(0.05)
    g = halving_gate(0.6, 0.05, 0, lambda: 0.1, lambda: None)
    assert not g["passed"] and g["drop"] == pytest.approx(0.5)
    assert halving_gate(None, 0.05, 3, lambda: 0.1, lambda: None)["passed"]  # nothing to protect


@pytest.mark.parametrize("reply,rc", [("y\n", 0), ("n\n", 1), ("", 1)])
def test_review_commits_only_on_yes(reply, rc, tiny_model_dir, docs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(reply))
    reg = tmp_path / "reg"
    assert _adapt(tiny_model_dir, reg, docs["velmora.md"], extra=["--review"]) == rc
    out = capsys.readouterr().out
    assert "== " in out and "self-edit" in out and "commit version 1 (parent 0)? [y/N]" in out
    r = Registry.open(reg)
    assert r.current == (1 if rc == 0 else 0)
    r.close()


def test_several_selfedits_keep_the_best_on_the_probes(tiny_model_dir, docs, tmp_path, capsys):
    reg = tmp_path / "reg"
    assert _adapt(tiny_model_dir, reg, docs["velmora.md"], extra=["--adapt.selfedits", "3"]) == 0
    (d,) = _history(reg, capsys)["versions"][1]["added"]
    rec = d["record"]
    assert len(rec["selfedits"]) == 3 and all("probe_metrics" in s for s in rec["selfedits"])
    scores = [s["probe_metrics"]["f1"] for s in rec["selfedits"]]
    assert scores[rec["chosen"]] == max(scores) and rec["selfedit"] == rec["selfedits"][rec["chosen"]]["text"]


# ----------------------------------------------------------------------------- bad input

def _refused(argv, capsys, needle: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("seal: error: ") and "Traceback" not in err, err
    assert needle in err, err


@pytest.fixture
def committed(tiny_model_dir, docs, tmp_path, capsys) -> Path:
    """A registry with one committed version that bad input must leave alone."""
    reg = tmp_path / "reg"
    assert _adapt(tiny_model_dir, reg, docs["velmora.md"]) == 0
    capsys.readouterr()
    return reg


def _unchanged(reg: Path) -> None:
    r = Registry.open(reg)
    assert r.current == 1 and r.version_ids() == [0, 1] and r.verify() == []
    r.close()


@pytest.mark.parametrize("make,needle", [
    (lambda d: d / "missing.txt", "missing.txt: no such file"),
    (lambda d: d, "is a folder; give text, Markdown or SQuAD JSON files"),
    (lambda d: _write(d / "empty.txt", b""), "empty.txt: empty document"),
    (lambda d: _write(d / "blank.md", b"  \n\n\t\n"), "blank.md: empty document"),
    (lambda d: _write(d / "only_title.md", b"# A title\n\n"), "only_title.md: empty document (a title and no text)"),
    (lambda d: _write(d / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), "image.png: a binary file, not text"),
    (lambda d: _write(d / "latin1.txt", "Caf\u00e9 au lait in Orl\u00e9ans.".encode("latin-1")),
     "latin1.txt: not UTF-8 text (byte 0xe9 at offset 3)"),
    (lambda d: _write(d / "bad.json", b'{"title": '), "bad.json: not valid JSON"),
    (lambda d: _write(d / "odd.json", b'{"x": 1}'), "odd.json: expected a list of passages"),
])
def test_bad_documents_are_one_line_and_lose_nothing(make, needle, committed, tiny_model_dir, tmp_path, capsys,
                                                     monkeypatch):
    path = make(tmp_path / "docs")
    monkeypatch.setattr(A, "load_model", _never_load)  # refused before the model loads
    _refused(["adapt", str(path), "--registry", str(committed), *FAST], capsys, needle)
    _unchanged(committed)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _never_load(*a, **k):
    raise AssertionError("the model was loaded before bad input was refused")


def test_registry_bad_input(committed, tiny_model_dir, docs, tmp_path, capsys):
    reg = str(committed)
    _refused(["ask", "Who founded Velmora?", "--registry", reg, "--version", "7"], capsys, f"{reg}: no version 7 (versions: 0-1)")
    _refused(["ask", "Who founded Velmora?", "--registry", reg, "--version", "seven"], capsys, "VERSION must be a version number")
    _refused(["rollback", "9", "--registry", reg], capsys, f"{reg}: no version 9")
    _refused(["history", "--registry", str(tmp_path / "nowhere")], capsys, "nowhere: no registry here")
    _refused(["ask", "Who?", "--registry", str(tmp_path / "nowhere")], capsys, "nowhere: no registry here")
    _refused(["adapt", str(docs["drosk.txt"]), "--registry", str(docs["drosk.txt"])], capsys, "is a file, not a registry folder")
    _refused(["adapt", str(docs["drosk.txt"]), "--registry", str(tmp_path / "docs")], capsys,
             "exists and is not a seal registry")
    _refused(["adapt", str(docs["drosk.txt"]), "--registry", reg, "--model", str(tmp_path)], capsys,
             f"model.name: {reg} holds adapters of the model {tiny_model_dir}")
    _refused(["ask", "Who?", "--registry", reg, "--adapt.router_min_coverage", "2"], capsys,
             "adapt.router_min_coverage must be in [0, 1]")
    _unchanged(committed)
    # a registry written by a newer seal is refused by every command, and left as it is
    db = sqlite3.connect(committed / "registry.sqlite")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    db.commit()
    db.close()
    for argv in (["adapt", str(docs["drosk.txt"]), "--registry", reg, *FAST], ["ask", "Who?", "--registry", reg],
                 ["history", "--registry", reg], ["rollback", "0", "--registry", reg]):
        _refused(argv, capsys, f"{reg}: registry format 99 is newer than this seal reads (1)")
    db = sqlite3.connect(committed / "registry.sqlite")
    assert db.execute("SELECT value FROM meta WHERE key = 'current'").fetchone() == ("1",)
    db.close()


def test_a_damaged_database_is_one_line(tmp_path, capsys):
    reg = tmp_path / "reg"
    reg.mkdir()
    (reg / "registry.sqlite").write_bytes(b"this is not a database" * 100)
    _refused(["history", "--registry", str(reg)], capsys, "registry.sqlite: not a readable registry database")


def test_a_document_longer_than_the_context_window_is_chunked_and_said(tiny_model_dir, tmp_path, capsys):
    sentence = "The Quillan ferry carries {n} crates of green salt across the Sorrel River every morning."
    long = tmp_path / "ferry.txt"
    long.write_text(" ".join(sentence.format(n=i) for i in range(120)))  # ~3 context windows of the tiny model
    reg = tmp_path / "reg"
    assert _adapt(tiny_model_dir, reg, long, extra=["--adapt.probes", "1"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "longer than one update can hold" in x)
    assert line.startswith(f"{long}: ") and "split into" in line
    n = int(line.split("split into ")[1].split()[0])
    r = Registry.open(reg)
    chunks = r.documents(1)
    assert len(chunks) == n >= 3 and [c.chunk for c in chunks] == list(range(n))
    assert " ".join(c.text for c in chunks).split() == long.read_text().split()  # no word lost
    r.close()
    capsys.readouterr()
    _refused(["adapt", str(long), "--registry", str(reg), "--model", str(tiny_model_dir), *FAST,
              "--adapt.max_chunks", "2"], capsys, f"would need {n} chunks")


def test_a_squad_file_gives_one_document_per_passage(tiny_model_dir, squad_tiny, tmp_path, capsys):
    reg = tmp_path / "reg"
    assert _adapt(tiny_model_dir, reg, squad_tiny, extra=["--adapt.probes", "1"]) == 0
    (v,) = [v for v in _history(reg, capsys)["versions"] if v["version"] == 1]
    assert len(v["added"]) == 4 and v["added"][0]["source"] == f"{squad_tiny}#0"
    q = v["added"][0]["record"]["questions"]
    assert q["n"] >= 1 and {"before", "after"} <= set(q)  # labelled questions measured, never needed


def test_a_registry_being_created_reads_as_no_model_yet(tmp_path):
    """While one `seal adapt` creates a registry (it holds the lock; its database is still
    `registry.sqlite.new`), another's model check sees no registry instead of failing on the
    half-made one: it then waits for or is refused by the lock, with that message (the race of
    the test above)."""
    reg_dir = tmp_path / "reg"
    reg_dir.mkdir()
    (reg_dir / "registry.sqlite.new").write_bytes(b"")  # a creation under way (or killed)
    with pytest.raises(RegistryError, match="no registry here"):
        Registry.open(reg_dir)
    assert A.stored_model(str(reg_dir)) is None
    made = Registry.open(reg_dir, create=True, model="tiny", lock_wait=0.0)  # an interrupted creation is finished
    made.close()
    assert A.stored_model(str(reg_dir)) == "tiny"
