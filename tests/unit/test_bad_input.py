"""Bad input never wastes a run: every kind of bad input is refused before the work it would spoil,
with one line that names the file, record or setting, no traceback, and no run folder left behind
that would refuse the corrected rerun. Silent skips are counted, printed and stored."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seal.cli import join_negative_values, main

FAST = ["--selfedit.max_new_tokens", "8", "--eval.max_answer_tokens", "4", "--inner.epochs", "1", "--selfedit.k", "1",
        "--threads", "1"]
LONG = " ".join(["The harbor town keeps many salt traders and green lighthouses."] * 1500)


@pytest.fixture
def files(tmp_path, squad_tiny):
    """Bad data files next to the good fixture."""
    good = json.loads(squad_tiny.read_text())
    d = tmp_path / "data"
    d.mkdir()
    (d / "afile").write_text("x")
    (d / "nan.json").write_text('[{"title": "x", "context": NaN, "questions": []}]')
    (d / "only_long.json").write_text(json.dumps([dict(good[0], context=LONG)]))
    (d / "notes").mkdir()
    (d / "notes" / "keep.txt").write_text("mine")
    return d


def _refused(argv: list[str], capsys, out: Path | None, needle: str) -> str:
    rc = main(argv + (["--out", str(out)] if out is not None else []))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("seal"), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    if out is not None:
        assert not out.exists(), f"a refused start left {out} behind"
    return lines[0]


# ----------------------------------------------------------------------------- tracebacks before

@pytest.mark.parametrize("case,argv,needle", [
    ("data is a folder", ["evaluate", "--data", "{d}"], "is a folder"),
    ("NaN in data", ["evaluate", "--data", "{d}/nan.json"], "nan.json: not valid JSON (NaN is not a JSON value)"),
    ("bootstrap 0", ["evaluate", "--data", "{fix}", "--eval.bootstrap", "0"], "eval.bootstrap must be >= 1, got 0"),
    ("max_new_tokens 0", ["evaluate", "--data", "{fix}", "--selfedit.max_new_tokens", "0"],
     "selfedit.max_new_tokens must be >= 1"),
    ("answer tokens 0", ["evaluate", "--data", "{fix}", "--eval.max_answer_tokens", "0"], "eval.max_answer_tokens"),
    ("batch 0", ["evaluate", "--data", "{fix}", "--eval.batch_size", "0"], "eval.batch_size must be >= 1"),
    ("negative threads", ["evaluate", "--data", "{fix}", "--threads", "-2"], "threads must be >= 0"),
    ("negative seed", ["evaluate", "--data", "{fix}", "--seed", "-1"], "seed must be in [0, 4294967296)"),
    ("custom template brace", ["evaluate", "--data", "{fix}", "--selfedit.template", "custom",
                               "--selfedit.custom_template", "Facts of {passage} {oops}"], "selfedit.custom_template"),
    ("completions missing", ["evaluate", "--data", "{fix}", "--completions", "{d}/none.json"], "(data.completions)"),
])
def test_former_tracebacks_are_one_line(case, argv, needle, files, squad_tiny, tiny_model_dir, capsys, tmp_path):
    argv = [a.replace("{d}", str(files)).replace("{fix}", str(squad_tiny)) for a in argv]
    _refused(argv + ["--model", str(tiny_model_dir)], capsys, tmp_path / "run", needle)


@pytest.mark.parametrize("out,needle", [
    ("afile", "afile: exists and is a file"),
    ("afile/run", "cannot create the run folder"),
    ("notes", "notes: exists and is not a seal run folder"),
])
def test_out_that_cannot_be_a_run_folder(out, needle, files, squad_tiny, tiny_model_dir, capsys):
    before = sorted(p.name for p in files.rglob("*"))
    _refused(["evaluate", "--data", str(squad_tiny), "--model", str(tiny_model_dir), "--out", str(files / out)],
             capsys, None, needle)
    assert sorted(p.name for p in files.rglob("*")) == before  # nothing written into the user's folder
    assert (files / "notes" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("text", ["{\"command\": \"evaluate\"", "[]"])
def test_a_broken_manifest_is_named_and_the_run_kept(text, files, squad_tiny, tiny_model_dir, capsys):
    run = files / "run"
    run.mkdir()
    (run / "manifest.json").write_text(text)
    (run / "results.jsonl").write_text("mine\n")
    _refused(["evaluate", "--data", str(squad_tiny), "--model", str(tiny_model_dir), "--out", str(run)],
             capsys, None, f"{run / 'manifest.json'}")
    assert (run / "manifest.json").read_text() == text and (run / "results.jsonl").read_text() == "mine\n"


def test_out_under_a_read_only_place(squad_tiny, tiny_model_dir, capsys):
    _refused(["evaluate", "--data", str(squad_tiny), "--model", str(tiny_model_dir), "--out", "/proc/seal-run"],
             capsys, None, "/proc/seal-run: cannot create the run folder")


# ----------------------------------------------------------------------------- validate before work

@pytest.mark.parametrize("argv,needle", [
    (["evaluate", "--inner.lr", "-1e-3"], "inner.lr must be > 0, got -0.001"),
    (["evaluate", "--selfedit.temperature", "-0.5"], "selfedit.temperature must be in [0, 10]"),
    (["evaluate", "--selfedit.top_p", "1.5"], "selfedit.top_p must be in (0, 1]"),
    (["train", "--restem.rounds", "0"], "restem.rounds must be >= 1"),
    (["train", "--restem.passages_per_round", "0"], "restem.passages_per_round must be >= 1"),
    (["train", "--restem.keep_fraction", "0"], "restem.keep_fraction must be in (0, 1]"),
    (["evaluate", "--limit", "-1"], "data.limit must be >= 0"),
    (["evaluate", "--data.offset", "-3"], "data.offset must be >= 0"),
    (["evaluate", "--data.offset", "4"], "data.offset 4 skips all 4 passages"),
    (["evaluate", "--selfedit.template", "implication"], "selfedit.template must be one of implications,"),
    (["evaluate", "--model.chat_template", "maybe"], "model.chat_template must be one of auto, yes, no"),
    (["evaluate", "--inner.lora.targets", ""], "inner.lora.targets must name at least one"),
    (["evaluate", "--eval.generate", "false"], "eval.generate false leaves no answers to grade"),
])
def test_settings_are_checked_before_the_model_loads(argv, needle, squad_tiny, tiny_model_dir, capsys, tmp_path,
                                                     monkeypatch):
    _forbid_model_loading(monkeypatch)
    _refused(argv + ["--data", str(squad_tiny), "--model", str(tiny_model_dir)], capsys, tmp_path / "run", needle)


def _forbid_model_loading(monkeypatch, instead=None) -> None:
    import seal.engine.restem
    import seal.knowledge.evaluate
    import seal.training.models
    for mod in (seal.training.models, seal.knowledge.evaluate, seal.engine.restem):  # each imported load_model by name
        monkeypatch.setattr(mod, "load_model", instead or _never_load)


def _never_load(*a, **k):
    raise AssertionError("the model was loaded before a bad setting was refused")


@pytest.mark.parametrize("argv,needle", [
    (["evaluate", "--inner.lora.targets", "q_proj,vv_proj"], "inner.lora.targets: the model has no linear layer named vv_proj"),
    (["train", "--restem.sft_lora.targets", "qq_proj"], "restem.sft_lora.targets: the model has no linear layer named qq_proj"),
    (["evaluate", "--data", "{d}/only_long.json"], "every passage is too long for the model's context window (1024 tokens"),
])
def test_refused_after_loading_leaves_no_run_folder_and_the_fix_runs(argv, needle, files, squad_tiny, tiny_model_dir,
                                                                      capsys, tmp_path):
    """What needs the model (its layer names, its context window) is checked right after it
    loads; the folder that start created is removed, so the corrected command runs at once."""
    argv = [a.replace("{d}", str(files)) for a in argv]
    data = [] if "--data" in argv else ["--data", str(squad_tiny)]
    out = tmp_path / "run"
    _refused(argv + data + ["--model", str(tiny_model_dir), "--limit", "1", *FAST], capsys, out, needle)
    if "only_long" not in " ".join(argv):  # the corrected rerun, same --out
        fixed = [a for a in argv if "proj" not in a and "targets" not in a]
        assert main(fixed + data + ["--model", str(tiny_model_dir), "--limit", "1", "--restem.rounds", "1", *FAST,
                                    "--out", str(out)] if argv[0] == "train" else
                    fixed + data + ["--model", str(tiny_model_dir), "--limit", "1", *FAST, "--out", str(out)]) == 0


def test_join_negative_values():
    assert join_negative_values(["--inner.lr", "-1e-3", "--limit", "-1", "--x", "-.5", "-v"]) == \
        ["--inner.lr=-1e-3", "--limit=-1", "--x=-.5", "-v"]
    assert join_negative_values(["--inner.lr=-2"]) == ["--inner.lr=-2"]


# ----------------------------------------------------------------------------- models

def test_offline_hub_id_fails_in_seconds(squad_tiny, capsys, tmp_path, monkeypatch):
    import socket
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def unreachable(*a, **k):
        raise OSError(-2, "Name or service not known")
    monkeypatch.setattr(socket, "create_connection", unreachable)
    t = time.time()
    line = _refused(["evaluate", "--data", str(squad_tiny), "--model", "nobody/no-such-model-xyz"], capsys,
                    tmp_path / "run", "nobody/no-such-model-xyz: not a local folder or file, not in the Hugging Face cache")
    assert "cannot be reached" in line and time.time() - t < 10


def test_offline_flag_and_other_models(squad_tiny, tiny_model_dir, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _refused(["evaluate", "--data", str(squad_tiny), "--model", "nobody/x"], capsys, tmp_path / "a", "HF_HUB_OFFLINE is set")
    # a second self-edit writer is checked before the run starts, not after the first one's work
    _refused(["evaluate", "--data", str(squad_tiny), "--model", str(tiny_model_dir), "--selfedit.model", "./no-such-model"],
             capsys, tmp_path / "b", "./no-such-model: no such model folder")


def test_damaged_model_folder_is_one_line(squad_tiny, tiny_model_dir, capsys, tmp_path):
    import shutil
    bad = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    _refused(["evaluate", "--data", str(squad_tiny), "--model", str(bad)], capsys, tmp_path / "run", f"{bad}: cannot load model")


def test_real_process_prints_no_traceback(squad_tiny, tmp_path):
    """The same through the installed entry point, as a user runs it."""
    f = tmp_path / "afile"
    f.write_text("x")
    r = subprocess.run([sys.executable, "-m", "seal.cli", "evaluate", "--data", str(tmp_path), "--out", str(f)],
                       capture_output=True, text=True, env={**os.environ, "SEAL_QUIET": "1"}, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"seal: error: {tmp_path}: is a folder; give a SQuAD-style JSON file"]


# ----------------------------------------------------------------------------- no silent skips

def test_skips_are_counted_printed_and_stored(squad_tiny, tiny_model_dir, capsys, tmp_path):
    good = json.loads(squad_tiny.read_text())
    messy = [dict(good[0], questions=good[0]["questions"] + [{"question": "What?", "answer": ""}])] + good[1:] + [
        {"title": "Empty", "context": "A passage nobody asked about.", "questions": []},
        good[1],  # a repeat
        dict(good[2], context=LONG),  # longer than the tiny model's 1024-token window
    ]
    data = tmp_path / "messy.json"
    data.write_text(json.dumps(messy))
    ext = tmp_path / "ext.json"
    ext.write_text(json.dumps([dict(good[0], completions=["Velmora was founded by salt traders in 1742.", ""]),
                               dict(good[1], completions=[""])]))
    out = tmp_path / "run"
    assert main(["evaluate", "--data", str(data), "--completions", str(ext), "--model", str(tiny_model_dir),
                 "--eval.selfedits", "2", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "1 passage(s) without a usable question, left out" in printed
    assert "1 question(s) with an empty question or answer, left out" in printed
    assert "1 repeated passage(s) merged into their first copy" in printed
    assert "1 passage(s) too long for the model's context window, left out" in printed
    assert "external self-edits" in printed and "2 of 4 passages" in printed
    assert "2 completion(s) are empty" in printed and "1 passage(s) have fewer completions than eval.selfedits" in printed
    assert "external" in printed and "(only 2 of 4 passages)" in printed  # the short row says so
    s = json.loads((out / "summary.json").read_text(), parse_constant=_reject)
    assert s["data"]["skipped_no_questions"] == 1 and s["data"]["skipped_questions"] == 1
    assert s["data"]["merged_duplicates"] == 1 and s["data"]["too_long"] == 1
    assert s["data"]["too_long_titles"] == [good[2]["title"]]
    assert s["external"]["covered"] == 2 and len(s["external"]["missing"]) == 2
    assert s["conditions"]["external"]["n_passages"] == 2 and s["conditions"]["passage"]["n_passages"] == 4


def _reject(name):
    raise AssertionError(f"summary.json holds {name}")


# ----------------------------------------------------------------------------- strict JSON

def test_summary_is_strict_json_with_reasons(squad_tiny, tiny_model_dir, tmp_path):
    """One passage and no control row: Spearman over fewer than 3 updates is undefined, and says why."""
    out = tmp_path / "run"
    assert main(["evaluate", "--data", str(squad_tiny), "--limit", "1", "--model", str(tiny_model_dir),
                 "--eval.controls", "", "--out", str(out), *FAST]) == 0
    s = json.loads((out / "summary.json").read_text(), parse_constant=_reject)
    track = s["reward_tracking"]
    assert track["spearman_logprob_gain_vs_containment_gain"] is None
    assert "fewer than 3" in track["undefined"]["spearman_logprob_gain_vs_containment_gain"]


def test_atomic_write_json_never_writes_nan(tmp_path):
    from seal.runs import atomic_write_json
    from seal.stats import paired_bootstrap, spearman, spearman_undefined
    atomic_write_json(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": paired_bootstrap([], [])})
    x = json.loads((tmp_path / "x.json").read_text(), parse_constant=_reject)
    assert x["a"] is None and x["b"] == [1.0, None] and x["c"]["mean"] is None
    assert x["undefined"] == {"a": "not a finite number", "b[1]": "not a finite number"}
    assert spearman([1, 1, 1], [1, 2, 3]) is None and "constant" in spearman_undefined([1, 1, 1], [1, 2, 3])
    assert math.isclose(spearman([1, 2, 3], [1, 2, 4]), 1.0)


# ----------------------------------------------------------------------------- every range, property-tested

def _ranged(cls):
    return [(n, t, r) for n, t, _, r in __import__("seal.config", fromlist=["x"]).leaf_settings(cls) if r]


def _bounds(typ, rule, name):
    lo = rule.get("ge", rule.get("gt"))
    hi = rule.get("le", rule.get("lt"))
    if name in ("threads", "inner.parallel_adapters"):  # in range, but applied before the model loads
        hi = 4
    if name == "data.offset":  # past the end of the 4-passage fixture is refused by the data check
        hi = 3
    if name == "continual.repeats":  # must also stay below continual.length (default 8), checked with it
        hi = 7
    return lo, hi


@st.composite
def _setting_value(draw, settings):
    """(setting, value as typed on the command line, whether it lies in the documented range)."""
    name, typ, rule = draw(st.sampled_from(settings))
    inside = draw(st.booleans())
    if "choices" in rule:
        choices = [c for c in rule["choices"] if c != "custom"]  # custom needs its template (tested above)
        # a list of choices (eval.controls) may be empty: '' lies inside its range
        bad = [c + "x" for c in choices] + (["NONE"] if typing.get_origin(typ) is tuple else ["", "NONE"])
        value = draw(st.sampled_from(choices)) if inside else draw(st.sampled_from(bad))
        return name, str(value), inside
    lo, hi = _bounds(typ, rule, name)
    if typ is int:
        lo_in = lo + ("gt" in rule) if lo is not None else -10**6
        hi_in = (hi - ("lt" in rule) if hi is not None else lo_in + 10**4)
        if inside:
            value = draw(st.integers(lo_in, max(lo_in, min(hi_in, lo_in + 10**4))))
        else:
            below = st.integers(lo_in - 10**6, lo_in - 1)
            above = st.integers(hi_in + 1, hi_in + 10**6) if "le" in rule or "lt" in rule else below
            value = draw(below | above)
        return name, str(value), inside
    if inside:
        value = draw(st.floats(min_value=lo, max_value=hi if hi is not None else 1e6, exclude_min="gt" in rule,
                               exclude_max="lt" in rule, allow_nan=False, allow_infinity=False))
    else:
        below = st.floats(min_value=lo - 1e6, max_value=lo, exclude_max="ge" in rule, allow_nan=False)
        above = (st.floats(min_value=hi, max_value=hi + 1e6, exclude_min="le" in rule, allow_nan=False)
                 if hi is not None else below)
        value = draw(below | above)
    return name, repr(value), inside


class _Loaded(Exception):
    """The command got past every check and reached model loading."""


def _reached_loading(*a, **k):
    raise _Loaded()


def _check_setting(argv, name, value, inside, tmp, capsys):
    import torch
    threads = torch.get_num_threads()
    out = tmp / "run"
    try:
        if inside:
            with pytest.raises(_Loaded):
                main(argv + [f"--{name}", value, "--out", str(out)])
        else:
            assert main(argv + [f"--{name}", value, "--out", str(out)]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and name in err and "Traceback" not in err, (name, value, err)
    finally:
        torch.set_num_threads(threads)
        capsys.readouterr()  # a failing example's output must not reach the next one's check
    assert not out.exists()


SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@SETTINGS
@given(data=st.data())
def test_every_setting_range_is_checked_before_the_model_loads(data, squad_tiny, tiny_model_dir, capsys, monkeypatch,
                                                                tmp_path_factory):
    """Values drawn across each documented range are accepted (the command reaches model
    loading); values just outside are refused with one line naming the setting, before it."""
    from seal.config import RunConfig
    name, value, inside = data.draw(_setting_value(_ranged(RunConfig)))
    _forbid_model_loading(monkeypatch, _reached_loading)
    _check_setting(_argv(name, value, squad_tiny, tiny_model_dir), name, value, inside, tmp_path_factory.mktemp("p"),
                   capsys)


def _argv(name: str, value: str, squad_tiny, tiny_model_dir) -> list[str]:
    """The command a setting belongs to (`train` for restem.*, else `evaluate`) on the tiny
    fixture and model, with what `_NEEDS` adds for the value."""
    command = "train" if name.startswith("restem.") else "evaluate"
    return [command, "--data", str(squad_tiny), "--model", str(tiny_model_dir), *_NEEDS.get((name, value), ())]


_NEEDS = {("restem.confirm", "logprob"): ("--restem.reward_against", "permutations-control")}
"""Values in range that another setting's default refuses, with what they need (a refusal of
their own, tested where the setting is)."""


def _choices():
    from seal.config import RunConfig, leaf_settings
    return [(n, c) for n, _, _, r in leaf_settings(RunConfig) if r and "choices" in r for c in r["choices"]
            if c != "custom"]  # custom needs its template (tested above)


@pytest.mark.parametrize("name,value", _choices())
def test_every_choice_reaches_the_model(name, value, squad_tiny, tiny_model_dir, monkeypatch, tmp_path, capsys):
    """Each documented choice of each setting is accepted as the drawn test above assumes, with
    only what `_NEEDS` adds: a new cross-setting refusal shows here on every run, not on the
    one draw in many that picks it."""
    _forbid_model_loading(monkeypatch, _reached_loading)
    with pytest.raises(_Loaded):
        main(_argv(name, value, squad_tiny, tiny_model_dir) + [f"--{name}", value, "--out", str(tmp_path / "run")])
    assert capsys.readouterr().err == ""


@SETTINGS
@given(data=st.data())
def test_every_arc_setting_range_is_checked_before_the_model_loads(data, tiny_model_dir, capsys, monkeypatch,
                                                                    tmp_path_factory):
    from seal.arc.config import ArcConfig
    name, value, inside = data.draw(_setting_value(_ranged(ArcConfig)))
    _forbid_model_loading(monkeypatch, _reached_loading)
    tasks = Path(__file__).parents[1] / "fixtures" / "arc"
    argv = ["arc", "evaluate", "--tasks", str(tasks), "--model", str(tiny_model_dir)]
    _check_setting(argv, name, value, inside, tmp_path_factory.mktemp("p"), capsys)


def test_every_numeric_setting_has_a_range():
    """A new numeric setting without a documented range would escape the property tests above."""
    from seal.arc.config import ArcConfig
    from seal.config import RunConfig, leaf_settings
    for cls in (RunConfig, ArcConfig):
        missing = [n for n, t, _, r in leaf_settings(cls) if t in (int, float) and not r]
        assert not missing, f"{cls.__name__}: no range for {missing}"


def test_a_train_run_folder_given_as_a_model_names_its_model(squad_tiny, tiny_model_dir, capsys, tmp_path):
    run = tmp_path / "train-run"
    run.mkdir()
    (run / "final.json").write_text(json.dumps({"model": "train-run/rounds/round_2/model"}))
    _refused(["evaluate", "--data", str(squad_tiny), "--model", str(tiny_model_dir), "--selfedit.model", str(run)],
             capsys, tmp_path / "out", "whose final model is train-run/rounds/round_2/model")


def test_an_os_error_mid_run_names_its_file(squad_tiny, tiny_model_dir, capsys, tmp_path, monkeypatch):
    """A write that fails mid-run (disk full, permissions) is one line naming the file."""
    import seal.engine.table

    def full(path, record):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(seal.engine.table, "append_jsonl", full)  # where `seal evaluate` appends its records
    rc = main(["evaluate", "--data", str(squad_tiny), "--limit", "1", "--model", str(tiny_model_dir),
               "--out", str(tmp_path / "run"), *FAST])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("seal: error: ")
    assert "selfedits.jsonl: No space left on device; free space, then run the same command again" in err
    assert len(err.splitlines()) == 1
