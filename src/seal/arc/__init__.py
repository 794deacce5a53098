"""Few-shot ARC domain (paper section 4.2), model-free half: data, grid text, augmentations,
the tool-configuration self-edit, TTT data, inference views, voting and pass@2 scoring."""

from seal.arc.augment import Transform, leave_k_out, leave_one_out, leave_two_out
from seal.arc.data import ArcDataError, ArcTask, Grid, Pair, load_tasks
from seal.arc.grids import count_tokens, fits_budget, format_pair, grid_to_text, task_prompt, text_to_grid
from seal.arc.selfedit import (
    FALLBACK,
    ParsedSelfEdit,
    SelfEditConfig,
    config_space,
    parse_selfedit,
    selfedit_prompt,
    validate_config,
)
from seal.arc.ttt import TrainExample, build_ttt_data, inference_views, map_back, score, vote, within_tokens

__all__ = [
    "FALLBACK",
    "ArcDataError",
    "ArcTask",
    "Grid",
    "Pair",
    "ParsedSelfEdit",
    "SelfEditConfig",
    "TrainExample",
    "Transform",
    "build_ttt_data",
    "config_space",
    "count_tokens",
    "fits_budget",
    "format_pair",
    "grid_to_text",
    "inference_views",
    "leave_k_out",
    "leave_one_out",
    "leave_two_out",
    "load_tasks",
    "map_back",
    "parse_selfedit",
    "score",
    "selfedit_prompt",
    "task_prompt",
    "text_to_grid",
    "validate_config",
    "vote",
    "within_tokens",
]
