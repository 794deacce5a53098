"""The `seal` command: one subcommand per stage.

    seal demo                               the main job on built-in fictional passages
    seal evaluate --data FILE [--limit N]   the knowledge-incorporation table
    seal train --data FILE                  ReSTEM rounds (outer loop)
    seal sft --examples FILE --out DIR      the M-step alone (multi-process: accelerate launch -m seal.cli sft)
    seal adapt FILE... [--registry DIR]     your own documents into a versioned adapter registry
    seal ask QUESTION [--version N]         answer with the registry's current (or given) version
    seal history / seal rollback VERSION    the registry's versions; make an earlier one current
    seal report RUN [RUN ...]               plots and an HTML page for runs
    seal bench inner-loop                   inner-loop speed benchmark
    seal arc evaluate --tasks PATH          few-shot ARC table
    seal arc train --tasks PATH             ReSTEM on ARC self-edits

Every setting in seal/config.py is a flag named by its section: `--inner.lr 5e-4`,
`--selfedit.k 3`, `--eval.mode cpt`. Short forms: --model, --data, --limit, --seed, --out,
--completions, --cpt, --trust-remote-code. `--config FILE.yaml` sets many at once.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import re
import sys
import warnings

from seal.config import ConfigError, RunConfig, leaf_settings, resolve, setting_help

SHORT = {"model": "model.name", "data": "data.path", "limit": "data.limit", "completions": "data.completions"}


class CLIError(Exception):
    pass


def _add_config_flags(p: argparse.ArgumentParser, short: dict[str, str] | None = None) -> None:
    p.add_argument("--config", help="YAML file of settings (flags override it)")
    g = p.add_argument_group("settings (see seal/config.py for each one's meaning)")
    for name, typ, default, rule in leaf_settings(RunConfig):
        g.add_argument(f"--{name}", dest=f"cfg:{name}", default=None, metavar=getattr(typ, "__name__", "LIST").upper(),
                       help=setting_help(default, rule))
    for name, full in {**SHORT, **(short or {})}.items():
        p.add_argument(f"--{name}", dest=f"cfg:{full}", default=None, help=f"same as --{full}")
    p.add_argument("--cpt", dest="cfg:eval.mode", action="store_const", const="cpt", default=None,
                   help="continued-pretraining mode (same as --eval.mode cpt)")
    p.add_argument("--trust-remote-code", dest="cfg:model.trust_remote_code", action="store_const", const="true",
                   default=None, help="allow the model repository's own code to run")


_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$", re.I)


def join_negative_values(argv: list[str]) -> list[str]:
    """`--inner.lr -1e-3` -> `--inner.lr=-1e-3`: argparse takes a value that starts with `-` for a
    flag unless it looks like a plain negative integer, so without this a negative number meets
    'expected one argument' instead of the setting's own range check."""
    out: list[str] = []
    for arg in argv:
        if out and _NUMBER.match(arg) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def config_from_args(args, defaults: dict | None = None) -> RunConfig:
    overrides = dict(defaults or {})
    for key, value in vars(args).items():
        if key.startswith("cfg:") and value is not None:
            overrides[key[4:]] = value
    return resolve(RunConfig, args.config, overrides)


def _setup_threads(cfg: RunConfig) -> None:
    if cfg.threads:
        import torch
        torch.set_num_threads(cfg.threads)


def _on_data(command: str, target: str, what: str):
    """A handler for a command that runs on a passage file: config, the --data check, threads,
    then `target` ("module:function", imported only when the command runs)."""
    def handler(args, argv):
        cfg = config_from_args(args)
        if not cfg.data.path:
            raise CLIError(f"seal {command} needs --data FILE ({what})")
        _setup_threads(cfg)
        module, fn = target.split(":")
        getattr(importlib.import_module(module, __package__), fn)(cfg, argv)
    return handler


cmd_evaluate = _on_data("evaluate", "seal.knowledge.evaluate:evaluate", "a SQuAD-style JSON file")
cmd_train = _on_data("train", "seal.knowledge.task:train", "a SQuAD-style JSON file of training passages")
cmd_continual = _on_data("continual", "seal.knowledge.continual:continual", "a SQuAD-style JSON file")


def cmd_demo(args, argv):
    from seal.demo import DEMO_DEFAULTS, demo
    cfg = config_from_args(args, DEMO_DEFAULTS)
    _setup_threads(cfg)
    demo(cfg, argv)


def cmd_sft(args, argv):
    from seal.engine.sft_distributed import sft_command
    cfg = config_from_args(args)
    _setup_threads(cfg)
    sft_command(cfg, args.examples, cfg.out)


def _registry_config(args) -> RunConfig:
    """The config of a registry command: the registry's own model unless one is named (a
    different one is refused: adapters fit only the model they were trained on)."""
    from seal.config import load_yaml
    from seal.documents.adapt import bind_model, stored_model
    cfg = config_from_args(args)
    named = getattr(args, "cfg:model.name") is not None or bool(
        args.config and (load_yaml(args.config).get("model") or {}).get("name"))
    bind_model(cfg, stored_model(cfg.adapt.registry), named, cfg.adapt.registry)
    _setup_threads(cfg)
    return cfg


def cmd_adapt(args, argv):
    from seal.documents.adapt import adapt
    return adapt(_registry_config(args), args.files, argv)


def cmd_ask(args, argv):
    from seal.documents.adapt import ask
    from seal.documents.versions import parse_version
    version = None if args.version is None else parse_version(args.version)
    ask(_registry_config(args), " ".join(args.question), version)
    return 0


def cmd_history(args, argv):
    from seal.documents.versions import history
    out = history(args.registry, args.json, args.verify)
    return 1 if args.verify and (out["verify"]["damaged_documents"] or out["verify"]["problems"]) else 0


def cmd_rollback(args, argv):
    from seal.documents.versions import parse_version, rollback
    return rollback(args.registry, parse_version(args.version), args.lock_wait)


def _add_registry_commands(sub) -> None:
    from seal.config import AdaptConfig
    default = AdaptConfig().registry
    registry = {"registry": "adapt.registry"}
    p = sub.add_parser("adapt", help="your own documents: self-edit, LoRA update, forgetting gate, new registry version",
                       description="Adapt the model to your documents (plain text, Markdown or a SQuAD JSON file): "
                                   "one adapter per document, gated against forgetting, committed as a new version.")
    p.add_argument("files", nargs="+", metavar="FILE", help="documents to adapt to")
    p.add_argument("--review", dest="cfg:adapt.review", action="store_const", const="true", default=None,
                   help="show the self-edits and the gate's figures; commit only on 'y' from stdin")
    _add_config_flags(p, registry)
    p.set_defaults(func=cmd_adapt, interrupted="nothing was committed; the current version is unchanged")
    p = sub.add_parser("ask", help="answer a question with the registry's current (or a given) version",
                       description="Answer a question with a registry version, saying which version and which "
                                   "document's adapter answered.")
    p.add_argument("question", nargs="+", metavar="QUESTION", help="the question (quote it, or give its words)")
    p.add_argument("--version", default=None, help="the version to ask (default: the current one)")
    _add_config_flags(p, registry)
    p.set_defaults(func=cmd_ask, interrupted="nothing was changed")
    p = sub.add_parser("history", help="the registry's versions: documents, self-edits, probe and gate figures",
                       description="List a registry's versions with their parent, source sha256, self-edit, "
                                   "probe metrics and the forgetting gate's figures.")
    p.add_argument("--registry", default=default, help=f"the registry folder (default: {default})")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument("--verify", action="store_true",
                   help="check every adapter against the sha256 recorded at commit: what is damaged and which "
                        "versions still serve (exit 1 when something is damaged)")
    p.set_defaults(func=cmd_history)
    p = sub.add_parser("rollback", help="make an earlier registry version current (nothing is deleted)",
                       description="Make an earlier version current; every version stays, so a rollback can be "
                                   "undone with another rollback.")
    p.add_argument("version", metavar="VERSION", help="the version to make current (e.g. 2 or v2)")
    p.add_argument("--registry", default=default, help=f"the registry folder (default: {default})")
    p.add_argument("--lock-wait", dest="lock_wait", type=float, default=0.0,
                   help="seconds to wait for a running seal adapt to end (default: 0, refuse at once)")
    p.set_defaults(func=cmd_rollback, interrupted="the current version is unchanged unless the rollback was printed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seal", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="library logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_ in [
        ("demo", cmd_demo, "self-adapt on built-in fictional passages: one ReSTEM round and the table with its controls (~9 min on 2 idle cores)"),
        ("evaluate", cmd_evaluate, "the knowledge-incorporation table on a passage file"),
        ("train", cmd_train, "ReSTEM: train the model to write self-edits that earn reward"),
        ("continual", cmd_continual, "passages adapted one after another: forgetting matrix under a guard"),
    ]:
        p = sub.add_parser(name, help=help_, description=help_)
        _add_config_flags(p)
        p.set_defaults(func=fn)
    _add_registry_commands(sub)
    p = sub.add_parser("sft", help="the M-step alone: LoRA SFT of a model on a file of kept self-edits, merged; "
                                   "data-parallel under `accelerate launch`",
                       description="Finetune --model on a JSONL file of {prompt, completion} records with the "
                                   "restem.sft_* settings and write the merged model to --out. Several processes: "
                                   "accelerate launch --num_processes N -m seal.cli sft ... (see docs/cluster.md).")
    p.add_argument("--examples", required=True, metavar="FILE", help="JSONL of {\"prompt\": ..., \"completion\": ...}")
    _add_config_flags(p)
    p.set_defaults(func=cmd_sft)
    for module in ("report", "bench.round", "arc.cli"):  # bench.round: all of `seal bench`
        try:
            mod = __import__(f"seal.{module}", fromlist=["add_cli"])
        except ModuleNotFoundError as e:
            if e.name and f"seal.{module}".startswith(e.name):  # a part not in this copy
                continue
            raise
        mod.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = join_negative_values(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:
        logging.basicConfig(level=logging.WARNING)
        warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        _quiet_library_progress()
    else:
        logging.basicConfig(level=logging.INFO)
    from seal.runs import discard_unstarted_runs
    try:
        if os.environ.get("SEAL_FORCE_FP32"):  # a bad value is refused before anything starts
            from seal.training.models import force_fp32
            force_fp32()
        rc = args.func(args, argv)
    except KeyboardInterrupt:
        discard_unstarted_runs()
        note = getattr(args, "interrupted", None) or "finished results are saved; rerun with the same --out to resume"
        print(f"\ninterrupted: {note}", file=sys.stderr)
        return 130
    except Exception as e:  # user-facing errors: one line, no traceback (unless -v)
        # a run folder this start created but never wrote a result to would only refuse the
        # corrected rerun ("resuming with a different config"): remove it
        discard_unstarted_runs()
        if isinstance(e, OSError) and not args.verbose and (e.filename or e.errno in WRITE_ERRORS):
            print(f"seal: error: {_os_error(e, args)}", file=sys.stderr)  # disk full, permissions...: name the file
            return 2
        if args.verbose or not isinstance(e, _known_errors()):
            raise
        print(f"seal: error: {_one_line(e)}", file=sys.stderr)
        return 2
    return rc if isinstance(rc, int) else 0


WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG)
"""What a failed write raises; without a file name it is shown naming the command's output folder."""


def _os_error(e: OSError, args) -> str:
    """One line: the file (else the output folder the command writes), the cause, and after a full
    disk how to go on."""
    where = e.filename or next((v for k in ("cfg:out", "out", "registry", "cfg:adapt.registry")
                                if (v := getattr(args, k, None))), "the output folder")
    after = ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        note = getattr(args, "interrupted", None) or "finished results are saved; rerun with the same --out to resume"
        after = f"; free space, then run the same command again ({note})"
    return f"{where}: {e.strerror or e}{after}"


def _quiet_library_progress() -> None:
    """transformers draws a 'Loading weights' bar on every load: noise beside seal's own bars."""
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _one_line(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines) if len(lines) <= 3 else lines[0]


def _known_errors() -> tuple:
    """Errors whose message is written for the user (they name the file, record or setting)."""
    from seal.documents.registry import RegistryError
    from seal.engine.executors import ExecutorError
    from seal.knowledge import DataError
    from seal.runs import RunError
    from seal.training.models import ModelError
    out = [ConfigError, CLIError, ModelError, RunError, DataError, RegistryError, ExecutorError]
    for mod, name in (("seal.report", "ReportError"), ("seal.arc.data", "ArcDataError")):
        try:
            out.append(getattr(__import__(mod, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(out)


if __name__ == "__main__":
    sys.exit(main())
