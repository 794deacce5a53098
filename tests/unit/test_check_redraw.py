"""scripts/check_redraw.py: round t's new generator, drawn again as round t+1's starting one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest




def _check(rdir: Path, rewards: dict[str, tuple[float, float, float]], parsed_after: bool = True) -> None:
    """rewards: passage -> (control, before, after) gains over the unadapted model, as a run with
    `restem.reward_against permutations-control` and `selfedit.permutations 2` records them."""
    rdir.mkdir(parents=True)
    (rdir.parent.parent / "config.yaml").write_text(
        "restem:\n  reward_against: permutations-control\nselfedit:\n  permutations: 2\n")
    lines = []
    for pid, (ctl, before, after) in rewards.items():
        lines += [{"passage_id": pid, "sample": None, "seed": 0, "reward": ctl, "control_permutations": 2},
                  {"passage_id": pid, "sample": 0, "seed": 0, "reward": before, "train": {"examples": 4}}]
        lines += [{"passage_id": pid, "sample": 1, "seed": 0, "reward": after, "train": {"examples": 5}}] \
            if parsed_after else []
    (rdir / "check.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_the_same_generator_drawn_twice_is_paired_against_its_controls(tmp_path, script):
    run = tmp_path / "run"
    _check(run / "rounds" / "round_1", {"a": (0.5, 0.5, 0.25), "b": (0.0, 0.25, 0.0)})
    _check(run / "rounds" / "round_2", {"a": (0.25, 0.5, 0.0), "b": (0.5, 0.5, 0.5)}, parsed_after=False)
    (row,) = script("check_redraw").redraws(run)
    assert row["generator"] == "round_1" and row["n_passages"] == 2
    assert row["first_draw"] == pytest.approx((-0.25 + 0.0) / 2)   # round 1's "after" minus its control
    assert row["second_draw"] == pytest.approx((0.25 + 0.0) / 2)   # round 2's "before" minus its control
    assert row["second_minus_first"]["mean"] == pytest.approx(0.25)
    assert row["check_verdict_first_draw"]["mean"] == pytest.approx((-0.25 - 0.25) / 2)
    out = tmp_path / "redraw.json"
    assert script("check_redraw").main([str(run), str(out)]) == 0 and json.loads(out.read_text())["redraws"][0] == row


def test_checks_of_different_passages_are_refused(tmp_path, script):
    run = tmp_path / "run"
    _check(run / "rounds" / "round_1", {"a": (0.0, 0.0, 0.0)})
    _check(run / "rounds" / "round_2", {"z": (0.0, 0.0, 0.0)})
    with pytest.raises(SystemExit, match="check different passages"):
        script("check_redraw").redraws(run)
    assert script("check_redraw").main([str(tmp_path / "empty")]) == 1


def test_a_steps_control_is_the_one_of_as_many_sequences(tmp_path, script):
    """Under steps-control, before and after self-edits of a passage have controls of their own
    (the passage x as many sequences): each reward is paired with its own."""
    run = tmp_path / "run"
    for rnd, (before, after) in ((1, (0.5, 0.5)), (2, (0.75, 0.5))):
        rdir = run / "rounds" / f"round_{rnd}"
        rdir.mkdir(parents=True)
        recs = [{"passage_id": "a", "sample": None, "seed": 0, "reward": 0.25, "control_copies": 3},
                {"passage_id": "a", "sample": None, "seed": 0, "reward": 0.0, "control_copies": 6},
                {"passage_id": "a", "sample": 0, "seed": 0, "reward": before, "train": {"examples": 3}},
                {"passage_id": "a", "sample": 1, "seed": 0, "reward": after, "train": {"examples": 6}}]
        (rdir / "check.jsonl").write_text("".join(json.dumps(x) + "\n" for x in recs))
    (run / "config.yaml").write_text("restem:\n  reward_against: steps-control\n")
    (row,) = script("check_redraw").redraws(run)
    assert row["first_draw"] == pytest.approx(0.5 - 0.0)     # round 1's after: 6 sequences, its 6-copy control
    assert row["second_draw"] == pytest.approx(0.75 - 0.25)  # round 2's before: 3 sequences, its 3-copy control
    assert row["check_verdict_first_draw"]["mean"] == pytest.approx(0.5 - 0.25)
