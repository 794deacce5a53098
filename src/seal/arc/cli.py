"""`seal arc ...`: few-shot ARC commands (paper section 4.2).

    seal arc evaluate --tasks PATH [--rl_model FOLDER]   the table: in-context, self-edits, oracle
    seal arc train --tasks PATH                          ReSTEM rounds on ARC self-edits

PATH is a folder of ARC JSON files, one file, or arc1:train, arc1:eval, seal:train, seal:eval,
seal:eval_reported. Every setting in seal/arc/config.py is a flag (`--max_steps 4`,
`--oracle.learning_rates 1e-4,1e-3`, `--lora.rank 8`; `-` works in place of `_`), and
`--config FILE.yaml` sets many at once. Short forms: --model (model.name), --trust-remote-code.
"""

from __future__ import annotations

import argparse

from seal.arc.config import ArcConfig
from seal.config import leaf_settings, resolve, setting_help

SHORT = {"model": "model.name"}


def _add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of settings (flags override it)")
    g = p.add_argument_group("settings (see seal/arc/config.py for each one's meaning)")
    for name, typ, default, rule in leaf_settings(ArcConfig):
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        g.add_argument(*flags, dest=f"cfg:{name}", default=None, metavar=getattr(typ, "__name__", "LIST").upper(),
                       help=setting_help(default, rule))
    for short, full in SHORT.items():
        p.add_argument(f"--{short}", dest=f"cfg:{full}", default=None, help=f"same as --{full}")
    p.add_argument("--trust-remote-code", dest="cfg:model.trust_remote_code", action="store_const", const="true",
                   default=None, help="allow the model repository's own code to run")


def config_from_args(args) -> ArcConfig:
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None}
    return resolve(ArcConfig, args.config, overrides)


def _setup_threads(cfg: ArcConfig) -> None:
    if cfg.threads:
        import torch
        torch.set_num_threads(cfg.threads)


def cmd_evaluate(args, argv):
    from seal.arc.task import evaluate
    cfg = config_from_args(args)
    _setup_threads(cfg)
    evaluate(cfg, argv)


def cmd_train(args, argv):
    from seal.arc.task import train
    cfg = config_from_args(args)
    _setup_threads(cfg)
    train(cfg, argv)


def add_cli(subparsers) -> None:
    """Register `seal arc evaluate|train`; handlers are called as `args.func(args, argv)`."""
    p = subparsers.add_parser("arc", help="few-shot ARC: evaluate TTT self-edits, train them with ReSTEM",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="arc_command", required=True, metavar="{evaluate,train}")
    for name, fn, help_ in [
        ("evaluate", cmd_evaluate, "the few-shot table: in-context, TTT with self-edits (own, RL model), oracle"),
        ("train", cmd_train, "ReSTEM: train the model to write TTT configurations that solve tasks"),
    ]:
        q = sub.add_parser(name, help=help_, description=help_)
        _add_flags(q)
        q.set_defaults(func=fn)
