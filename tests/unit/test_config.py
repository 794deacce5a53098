import pytest

from seal.cli import build_parser, config_from_args
from seal.config import ConfigError, RunConfig, from_dict, load_yaml, resolve, save_yaml, to_dict


def test_yaml_roundtrip(tmp_path):
    cfg = resolve(RunConfig, None, {"inner.lr": "5e-4", "inner.lora.rank": "8", "inner.lora.targets": "q_proj,v_proj"})
    assert cfg.inner.lr == 5e-4 and cfg.inner.lora.rank == 8 and cfg.inner.lora.targets == ("q_proj", "v_proj")
    save_yaml(cfg, tmp_path / "c.yaml")
    again = from_dict(RunConfig, load_yaml(tmp_path / "c.yaml"))
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize("overrides,needle", [
    ({"inner.lrr": "1"}, "unknown setting 'lrr'"),
    ({"inner.epochs": "many"}, "inner.epochs: expected int"),
    ({"inner.epochs": "0"}, "inner.epochs must be >= 1"),
    ({"eval.reward": "bleu"}, "eval.reward must be"),
    ({"inner.dtype": "fp8"}, "inner.dtype"),
    ({"restem.keep": "everything"}, "restem.keep"),
])
def test_bad_settings_name_the_setting(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        resolve(RunConfig, None, overrides)


def test_bad_yaml_names_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("inner: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_yaml(p)


def test_cli_flags_and_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("inner:\n  lr: 0.002\n  epochs: 7\nseed: 3\n")
    args = build_parser().parse_args(["evaluate", "--config", str(p), "--inner.epochs", "2", "--limit", "5", "--cpt"])
    cfg = config_from_args(args)
    assert cfg.inner.lr == 0.002 and cfg.inner.epochs == 2 and cfg.seed == 3
    assert cfg.data.limit == 5 and cfg.eval.mode == "cpt"


def test_append_after_torn_line_keeps_file_readable(tmp_path):
    from seal.runs import append_jsonl, read_jsonl
    p = tmp_path / "r.jsonl"
    append_jsonl(p, {"a": 1})
    with open(p, "a") as f:
        f.write('{"a": 2, "b"')  # killed mid-write
    with pytest.warns(UserWarning, match="torn"):
        assert read_jsonl(p) == [{"a": 1}]
    append_jsonl(p, {"a": 3})
    assert read_jsonl(p) == [{"a": 1}, {"a": 3}]


def test_jsonl_writers_hold_no_nan(tmp_path):
    """append_jsonl and write_jsonl both write strict JSON: a non-finite number becomes null."""
    import json

    from seal.runs import append_jsonl, write_jsonl
    record = {"reward": float("nan"), "loss": float("inf"), "n": 2}
    append_jsonl(tmp_path / "a.jsonl", record)
    write_jsonl(tmp_path / "w.jsonl", [record])
    for name in ("a.jsonl", "w.jsonl"):
        line = (tmp_path / name).read_text()
        assert "NaN" not in line and "Infinity" not in line
        assert json.loads(line, parse_constant=lambda c: pytest.fail(f"{name}: {c}"))["n"] == 2
