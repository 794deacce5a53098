"""Property-based tests: no input makes a parser crash; every rejection is a clear error."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seal import knowledge as K
from seal.config import ConfigError, RunConfig, from_dict

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["title", "context", "questions", "question", "answer", "data", "paragraphs", "qas",
                         "answers", "text", "completions", "x"]), children, max_size=5),
    max_leaves=25)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(json_values)
def test_squad_parser_never_crashes(data):
    try:
        passages, counts = K.parse_squad(data, "f.json")
    except K.DataError as e:
        assert str(e).startswith("f.json")
    else:
        assert counts["passages"] == len(passages)
        assert all(p.questions for p in passages)


@SETTINGS
@given(st.text(max_size=400), st.sampled_from(["implications", "implications-long", "rewrite", "self-qa", "none"]))
def test_selfedit_parser_never_crashes(text, template):
    items = K.parse_selfedit(text, template)
    assert all(isinstance(i, str) and i.strip() for i in items)


@SETTINGS
@given(json_values)
def test_config_parser_rejects_cleanly(data):
    try:
        from_dict(RunConfig, data if isinstance(data, dict) else {"inner": data})
    except ConfigError:
        pass


@SETTINGS
@given(st.dictionaries(st.sampled_from(["lr", "epochs", "batch_size", "dtype", "seeds", "loss_on", "lora"]),
                       st.one_of(st.text(max_size=8), st.integers(-3, 3), st.floats(allow_nan=False), st.none()),
                       max_size=4))
def test_inner_config_values(values):
    try:
        cfg = from_dict(RunConfig, {"inner": values})
    except ConfigError:
        return
    assert cfg.inner.epochs >= 1 and cfg.inner.dtype in ("auto", "fp32", "bf16")
    json.dumps(cfg.inner.lora.targets)


grid_like = st.recursive(st.integers(-2, 12) | st.text(max_size=3) | st.none() | st.floats(allow_nan=False),
                         lambda c: st.lists(c, max_size=4), max_leaves=30)
arc_tasks = st.dictionaries(st.sampled_from(["train", "test", "x"]), st.lists(st.dictionaries(
    st.sampled_from(["input", "output", "y"]), grid_like, max_size=3), max_size=3), max_size=3)


@SETTINGS
@given(arc_tasks | json_values)
def test_arc_task_parser_never_crashes(obj):
    from seal.arc.data import ArcDataError, task_from_json
    try:
        task = task_from_json("t1", obj, "tasks/t1.json", outputs_optional=False)
    except ArcDataError as e:
        assert "t1" in str(e)
    else:
        assert task.train and task.test


def test_interval_sign_names_a_significant_difference():
    from seal.stats import interval_sign

    assert interval_sign(0.01, 0.2) == 1 and interval_sign(-0.2, -0.01) == -1
    assert interval_sign(-0.1, 0.1) == 0 and interval_sign(0.0, 0.1) == 0  # an interval that touches 0 holds it
    assert interval_sign(None, 0.1) is None and interval_sign(0.1, None) is None
