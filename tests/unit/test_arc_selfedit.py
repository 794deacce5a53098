"""The tool-configuration self-edit: parsing, validation, fallback, prompt, oracle space."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seal.arc.data import load_tasks
from seal.arc.selfedit import (
    EPOCHS_MAX,
    FALLBACK,
    LR_MAX,
    LR_MIN,
    STRATEGIES,
    ParsedSelfEdit,
    SelfEditConfig,
    config_space,
    extract_json_object,
    parse_selfedit,
    selfedit_prompt,
    training_steps,
    validate_config,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "arc"

GOOD = {
    "data_generation": {
        "use_basic_augmentations": True,
        "use_size_augmentations": False,
        "use_chain_augmentations": True,
        "use_repeat_augmentations": False,
    },
    "training": {"strategy": "train_using_all_tokens", "learning_rate": 1e-4, "num_train_epochs": 3},
}
GOOD_CONFIG = SelfEditConfig(
    use_basic_augmentations=True,
    use_chain_augmentations=True,
    strategy="train_using_all_tokens",
    learning_rate=1e-4,
    num_train_epochs=3,
)


def with_training(**changes) -> dict:
    return {**GOOD, "training": {**GOOD["training"], **changes}}


def assert_fallback(parsed: ParsedSelfEdit, reason: str):
    assert not parsed.valid and parsed.config == FALLBACK and not parsed.config.trains
    assert reason in parsed.reason


def test_valid_json():
    parsed = parse_selfedit(json.dumps(GOOD))
    assert parsed.valid and parsed.config == GOOD_CONFIG and parsed.notes == () and parsed.reason == ""
    assert parsed.config.families == ["basic", "chain"] and parsed.config.loss_on == "all"
    assert parsed.config.to_dict() == GOOD


@pytest.mark.parametrize(
    "text",
    [
        "Here is my configuration:\n" + json.dumps(GOOD, indent=2) + "\nThis should work well.",
        "```json\n" + json.dumps(GOOD, indent=2) + "\n```",
        "```\n" + json.dumps(GOOD) + '\n``` and {"second": 1}',
        json.dumps(GOOD).replace('"', "'"),
        json.dumps(GOOD).replace("}", ",}").replace("true", "True").replace("false", "False"),
        "{not json} then " + json.dumps(GOOD),
        json.dumps({**GOOD["data_generation"], **GOOD["training"]}),  # flat form
    ],
)
def test_tolerated_wrappings(text):
    parsed = parse_selfedit(text)
    assert parsed.valid, parsed.reason
    assert parsed.config == GOOD_CONFIG


def test_lenient_values_and_missing_flags():
    obj = {
        "data_generation": {"use_basic_augmentations": "yes", "use_size_augmentations": 0},
        "training": {"strategy": " Output ", "learning_rate": "5e-4", "num_train_epochs": 2.0},
    }
    parsed = parse_selfedit(json.dumps(obj))
    assert parsed.valid
    assert parsed.config == SelfEditConfig(True, False, False, False, "train_using_output_tokens", 5e-4, 2)
    assert parsed.config.loss_on == "completion"
    assert any("use_chain_augmentations missing" in n for n in parsed.notes)


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"learning_rate": 0.5}, "learning_rate", LR_MAX),
        ({"learning_rate": 1e-9}, "learning_rate", LR_MIN),
        ({"num_train_epochs": 50}, "num_train_epochs", EPOCHS_MAX),
    ],
)
def test_out_of_range_values_are_clamped(changes, field, value):
    parsed = parse_selfedit(json.dumps(with_training(**changes)))
    assert parsed.valid and getattr(parsed.config, field) == value
    assert any("clamped" in n for n in parsed.notes)


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (with_training(learning_rate=-1e-4), "learning_rate must be a positive number"),
        (with_training(learning_rate=0), "learning_rate must be a positive number"),
        (with_training(learning_rate="fast"), "learning_rate must be a positive number"),
        (with_training(learning_rate=True), "learning_rate must be a positive number"),
        (with_training(num_train_epochs=0), "num_train_epochs must be an integer >= 1"),
        (with_training(num_train_epochs=2.5), "num_train_epochs must be an integer >= 1"),
        (with_training(num_train_epochs=None), "num_train_epochs must be an integer"),
        (with_training(strategy="train_everything"), "strategy must be one of"),
        ({"data_generation": GOOD["data_generation"], "training": {"learning_rate": 1e-4}}, "strategy"),
        ({**GOOD, "training": {"strategy": "all", "num_train_epochs": 1}}, "learning_rate missing"),
        ({**GOOD, "training": {"strategy": "all", "learning_rate": 1e-4}}, "num_train_epochs missing"),
        ({**GOOD, "data_generation": {"use_basic_augmentations": "maybe"}}, "use_basic_augmentations is not a boolean"),
        ({**GOOD, "training": [1, 2]}, "must be objects"),
    ],
)
def test_invalid_values_fall_back_to_no_training(obj, reason):
    assert_fallback(parse_selfedit(json.dumps(obj)), reason)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty self-edit"),
        ("   \n", "empty self-edit"),
        ("I would use rotations and a small learning rate.", "no JSON object found"),
        ('{"data_generation": {"use_basic_augmentations": true', "no JSON object found"),  # truncated
        ("[1, 2, 3]", "no JSON object found"),
        ("{{{{", "no JSON object found"),
    ],
)
def test_garbage(text, reason):
    assert_fallback(parse_selfedit(text), reason)


def test_non_string_input_does_not_raise():
    assert_fallback(parse_selfedit(None), "empty")  # type: ignore[arg-type]
    assert_fallback(validate_config([1]), "not a JSON object")


def test_braces_inside_strings_and_first_object_wins():
    obj, raw = extract_json_object('x {"a": "}{", "b": {"c": 1}} {"d": 2}')
    assert obj == {"a": "}{", "b": {"c": 1}} and raw == '{"a": "}{", "b": {"c": 1}}'


JSONISH = st.lists(
    st.sampled_from(list("{}[]\":,'0123456789.-eE \ntruefalsnTFN_\\") + ['"use_basic_augmentations"', '"training"']),
    max_size=60,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), JSONISH))
def test_parse_selfedit_never_raises(text):
    parsed = parse_selfedit(text)
    assert isinstance(parsed, ParsedSelfEdit)
    assert parsed.valid or parsed.config == FALLBACK


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    )
)
def test_validate_config_never_raises(obj):
    parsed = validate_config({"training": obj, "data_generation": obj} if isinstance(obj, dict) else obj)
    assert parsed.valid or parsed.config == FALLBACK


def test_deep_nesting_does_not_raise():
    assert not parse_selfedit("{" * 5000 + "}" * 5000).valid
    assert not parse_selfedit('{"a":' * 3000 + "1" + "}" * 3000).valid


def test_config_space_is_valid_and_unique():
    space = config_space()
    assert len(space) == 48
    parsed = [validate_config(d) for d in space]
    assert all(p.valid and p.notes == () for p in parsed)
    assert len({p.config for p in parsed}) == 48
    assert {p.config.strategy for p in parsed} == set(STRATEGIES)
    assert all(validate_config(p.config.to_dict()).config == p.config for p in parsed)
    assert len(config_space(learning_rates=(1e-4,), epochs=(2,), strategies=STRATEGIES[:1])) == 6


def test_training_steps():
    assert training_steps(GOOD_CONFIG, 17, 8) == 3 * 3
    assert training_steps(FALLBACK, 17, 8) == 0


def test_selfedit_prompt_lists_tools_and_shows_demos():
    task = load_tasks(str(FIXTURES / "mirror.json"))[0]
    prompt = selfedit_prompt(task)
    for word in (
        "use_basic_augmentations",
        "use_size_augmentations",
        "use_chain_augmentations",
        "use_repeat_augmentations",
        *STRATEGIES,
        "learning_rate",
        "num_train_epochs",
    ):
        assert word in prompt
    assert "input:\n100\n020\noutput:\n001\n020" in prompt
    assert parse_selfedit(prompt).valid  # the example in the prompt is itself a valid self-edit
    short = selfedit_prompt(task, max_demo_chars=0)
    assert "Example 1: input 2x3 grid, output 2x3 grid" in short
