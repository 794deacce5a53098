"""The names of a knowledge table's rows, shared by the layer that computes them
(seal/knowledge/table.py) and the one that reads them back (seal/report/): a row is a condition
(`passage`, `self-edits`, `self-edits:<writer>`, ...) or an `eval.controls` control of one,
`<control row>[:<writer>]`. No heavy imports: `seal report` reads tables without torch."""

from __future__ import annotations

CONTROL_ROWS = {"steps": "passage x steps", "tokens": "passage x tokens", "permutations": "passage + permutations"}
"""Each `eval.controls` kind's row name (before `:<writer>`)."""


def control_name(control: str, selfedit_condition: str) -> str:
    """`passage x steps` for the own self-edits' steps control, `passage x steps:round_2` for
    another writer's, `passage x tokens:external`, ... The `permutations` control is one row,
    `passage + permutations`, for every writer: it leaves the self-edit out, so its update (the
    passage, the same permuted copies, the same seed) is the same whoever wrote the self-edit."""
    writer = selfedit_condition.split(":", 1)[1] if ":" in selfedit_condition else \
        ("" if selfedit_condition == "self-edits" else selfedit_condition)
    if control == "permutations":
        writer = ""
    return CONTROL_ROWS[control] + (f":{writer}" if writer else "")


def control_kind(row: str) -> str | None:
    """The `eval.controls` kind of a row (`passage x steps:round_2` -> `steps`); None for a row
    that is not a control."""
    base = row.split(":", 1)[0]
    return next((kind for kind, name in CONTROL_ROWS.items() if name == base), None)
