"""scripts/confirm_rescore.py: a run's kept self-edits split by the confirm test, with their fresh gains."""

from __future__ import annotations

import json

import pytest

from seal.runs import write_jsonl




def _fresh(pid: str, ext: tuple[float, float], ctl: tuple[float, float]) -> list[dict]:
    return [{"key": f"{name}/{pid}/0", "metrics": {"containment": c, "logprob": lp}}
            for name, (c, lp) in (("external", ext), ("passage + permutations", ctl))]


def test_kept_selfedits_split_by_the_confirm_test(tmp_path, script):
    run, rescore = tmp_path / "run", tmp_path / "rescore"
    (run / "rounds/round_1").mkdir(parents=True)
    rescore.mkdir()
    recs = []
    # passage a: sample 1 kept, log-prob above its control (confirmed); passage b: sample 0 kept, below
    for pid, ctl_lp, own_lp in (("a", -3.0, -2.0), ("b", -3.0, -4.0)):
        recs += [{"round": 1, "passage_id": pid, "sample": None, "seed": 0, "reward": 0.0, "control_permutations": 2,
                  "metrics": {"logprob": ctl_lp}},
                 {"round": 1, "passage_id": pid, "sample": 0, "seed": 0, "reward": 0.5,
                  "metrics": {"logprob": own_lp}},
                 {"round": 1, "passage_id": pid, "sample": 1, "seed": 0, "reward": 0.5,
                  "metrics": {"logprob": 2 * ctl_lp - own_lp}}]
    write_jsonl(run / "rounds/round_1/rewards.jsonl", recs)
    kept = [{"round": 1, "passage_id": "a", "sample": 0, "kept_reward": 0.5},
            {"round": 1, "passage_id": "b", "sample": 1, "kept_reward": 0.25}]
    (tmp_path / "kept.json").write_text(json.dumps(kept))
    write_jsonl(rescore / "results.jsonl", _fresh("a", (0.5, -1.0), (0.25, -2.0)) + _fresh("b", (0.0, -3.0), (0.25, -2.5)))
    (rescore / "summary.json").write_text(json.dumps({"seed": 1}))
    out = tmp_path / "out.json"
    assert script("confirm_rescore").main([str(run), str(tmp_path / "kept.json"), str(rescore), str(out)]) == 0
    res = json.loads(out.read_text())
    conf, unconf = res["groups"]["confirmed"], res["groups"]["unconfirmed"]
    # sample 0 of a: -2.0 over -3.0 (confirmed); sample 1 of b: -2.0 over -3.0 too, its sibling is below
    assert conf["n"] == 2 and unconf["n"] == 0
    assert [r["passage_id"] for r in res["rows"]["confirmed"]] == ["a", "b"]
    assert conf["fresh_containment"]["mean"] == pytest.approx((0.25 - 0.25) / 2)
    assert res["rescore_seed"] == 1
    # the sibling that lowered the log-prob is the unconfirmed one when it is the kept sample
    kept[1]["sample"] = 0
    (tmp_path / "kept.json").write_text(json.dumps(kept))
    assert script("confirm_rescore").main([str(run), str(tmp_path / "kept.json"), str(rescore), str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["groups"]["confirmed"]["n"] == 1 and res["groups"]["unconfirmed"]["n"] == 1
    assert res["rows"]["unconfirmed"][0]["fresh_logprob"] == pytest.approx(-0.5)
    # a kept self-edit without a fresh score is named
    write_jsonl(rescore / "results.jsonl", _fresh("a", (0.5, -1.0), (0.25, -2.0)))
    with pytest.raises(SystemExit, match="record 1"):
        script("confirm_rescore").main([str(run), str(tmp_path / "kept.json"), str(rescore), str(out)])
