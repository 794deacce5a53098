"""Run folders: never overwritten, resumable, with everything needed to re-run them.

    runs/<command>-<UTC time>/
      manifest.json     command, argv, seed, data sha256, package versions, git revision
      config.yaml       the resolved config
      metrics.jsonl     one event per line (also TensorBoard / W&B when asked for)
      ...               each command's results, appended one record per line as they finish

Every result is appended to a JSONL file and flushed to disk as soon as it exists, so a run
killed at any moment (even kill -9) loses at most the work in flight; a torn last line is
ignored on reading. Starting a command with `--out` pointing at an existing run folder resumes
it: its saved config is used (a different config is an error, not a silent mix).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from seal import __version__
from seal.config import ConfigError, from_dict, load_yaml, save_yaml, to_dict


class RunError(RuntimeError):
    pass


def strict_json(obj, where: str = "", undefined: dict | None = None):
    """`obj` with every NaN or infinity replaced by None (JSON has no NaN: Python writes a bare
    `NaN` that strict parsers reject). Where one is replaced, `undefined` gets its path."""
    if isinstance(obj, float) and not math.isfinite(obj):
        if undefined is not None:
            undefined[where or "."] = "not a finite number"
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v, f"{where}.{k}" if where else str(k), undefined) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v, f"{where}[{i}]", undefined) for i, v in enumerate(obj)]
    return obj


def atomic_write_json(path: Path, obj) -> None:
    """Write `obj` as strict JSON (no NaN; see `strict_json`), atomically: a reader sees the old
    file or the new one, never half of one."""
    path = Path(path)
    undefined: dict = {}
    obj = strict_json(obj, "", undefined)
    if undefined and isinstance(obj, dict):
        obj.setdefault("undefined", {}).update({k: v for k, v in undefined.items() if k not in obj["undefined"]})
    tmp = path.with_name(path.name + ".tmp")
    with naming(path, tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def append_jsonl(path: Path, record: dict) -> None:
    path = Path(path)
    if path.exists() and path.stat().st_size:  # cut a torn last line (killed mid-write) first
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
    line = json.dumps(strict_json(record), allow_nan=False) + "\n"
    with naming(path), open(path, "a") as f:  # (a torn line a failed write leaves is cut by the next append)
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: Path, records: list[dict]) -> None:
    """Write a whole JSONL file at once (through a temporary file, so a reader never sees half of
    it), each record strict JSON as `append_jsonl` writes it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    text = "".join(json.dumps(strict_json(r), allow_nan=False) + "\n" for r in records)
    with naming(path, tmp):
        tmp.write_text(text)
        tmp.replace(path)


@contextlib.contextmanager
def naming(path: Path, tmp: Path | None = None):
    """Within the block, an OSError that names no file (a write or fsync failing with ENOSPC,
    EDQUOT, EIO) is raised again naming `path`, and the temporary file `tmp` is removed on any
    failure: a full disk is one line naming the file and leaves no temporary file behind."""
    try:
        yield
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not e.filename:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def read_jsonl(path: Path) -> list[dict]:
    """All complete records; a torn last line (a run killed mid-write) is dropped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    lines = path.read_text().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i >= len(lines) - 2:
                warnings.warn(f"{path}: ignoring a torn last line (the run was interrupted while writing)")
            else:
                raise RunError(f"{path}: line {i + 1} is not valid JSON") from None
    return out


def git_rev() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    import torch
    import transformers
    return {"seal": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform()}


class Run:
    """An open run folder."""

    def __init__(self, path: Path, cfg, resumed: bool):
        self.path = Path(path)
        self.cfg = cfg
        self.resumed = resumed
        self._tb = None
        self._wandb = None

    def file(self, *parts: str) -> Path:
        p = self.path.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def log(self, event: str, step: int | None = None, **values) -> None:
        rec = {"event": event, **({"step": step} if step is not None else {}), **values,
               "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        append_jsonl(self.path / "metrics.jsonl", rec)
        nums = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for k, v in nums.items():
                self._tb.add_scalar(f"{event}/{k}", v, step or 0)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({f"{event}/{k}": v for k, v in nums.items()})

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_manifest(path: Path) -> dict:
    """A run folder's manifest.json, or a RunError that names the file."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: not a seal run folder ({path / 'manifest.json'}: {e})") from None
    if not isinstance(manifest, dict):
        raise RunError(f"{path / 'manifest.json'}: not a seal run manifest (a JSON object)")
    return manifest


def open_run(command: str, cfg, argv: list[str], data_path: str | None = None, data_sha256: str | None = None,
             n_items: int | None = None, grows: tuple[str, ...] = ()) -> Run:
    """Create runs/<command>-<time> (or cfg.out), or resume cfg.out if it is a run folder.

    A resumed run must have the same settings, except `threads`, `out` and the settings named in
    `grows` ("section.field"): a list there may gain items at the end, the old ones kept in order
    (e.g. `seal evaluate` adding a writer's or a control's rows to a finished table, which then
    computes only the new rows), and a count may rise (`seal train` given more `restem.rounds`
    runs only the new rounds). The grown settings are saved and logged."""
    if cfg.out:
        path = Path(cfg.out)
    else:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{command}-{stamp}"
        n = 1
        while path.exists():
            n += 1
            path = Path("runs") / f"{command}-{stamp}-{n}"
    _check_out(path)
    resumed = (path / "manifest.json").exists()
    if resumed:
        manifest = read_manifest(path)
        if manifest.get("command") != command:
            raise RunError(f"{path}: is a '{manifest.get('command')}' run; cannot resume it with '{command}'")
        saved = from_dict(type(cfg), load_yaml(path / "config.yaml"), str(path / "config.yaml"))
        mine, theirs = to_dict(cfg), to_dict(saved)
        for section in (mine, theirs):
            section.pop("out", None)
            section.pop("threads", None)
        grown = _grown(mine, theirs, grows)
        for section, field in grown:
            theirs[section][field] = mine[section][field]
        if mine != theirs:
            diff = [k for k in mine if mine[k] != theirs.get(k)]
            extra = f" ({', '.join(grows)} may only grow)" if grows else ""
            raise ConfigError(f"{path}: resuming with a different config (sections {diff}){extra}; "
                              "use a new --out or the same settings")
        if data_sha256 and manifest.get("data", {}).get("sha256") not in (None, data_sha256):
            raise RunError(f"{path}: the data file changed since this run started (sha256 differs)")
        for section, field in grown:
            setattr(getattr(saved, section), field, getattr(getattr(cfg, section), field))
        if grown:
            save_yaml(saved, path / "config.yaml")
        run = Run(path, saved, resumed=True)
        run.log("resume", argv=argv, git_rev=git_rev(),
                **({"grown": {f"{sec}.{field}": theirs[sec][field] for sec, field in grown}} if grown else {}))
    else:
        created = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
            if created:
                _UNSTARTED.append(path)
            save_yaml(cfg, path / "config.yaml")
            atomic_write_json(path / "manifest.json", {
                "command": command, "argv": argv,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "seed": cfg.seed, "data": {"path": data_path, "sha256": data_sha256, "n_items": n_items},
                "versions": versions(), "git_rev": git_rev(), "python_executable": sys.executable,
            })
        except OSError as e:
            discard_unstarted_runs()
            raise RunError(f"{path}: cannot write the run folder ({e.strerror or e})") from None
        run = Run(path, cfg, resumed=False)
    if getattr(cfg, "tensorboard", False):
        try:
            from torch.utils.tensorboard import SummaryWriter
            run._tb = SummaryWriter(str(path / "tensorboard"))
        except ImportError:
            raise RunError("--tensorboard needs the tensorboard package: pip install 'seal[tensorboard]'") from None
    if getattr(cfg, "wandb", ""):
        try:
            import wandb
        except ImportError:
            raise RunError("--wandb needs the wandb package: pip install wandb") from None
        run._wandb = wandb.init(project=cfg.wandb, name=path.name, config=to_dict(cfg), resume="allow", id=path.name)
    return run


def _items(value) -> list[str]:
    """A list setting's items: a list as it is, a comma-separated string split."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [v.strip() for v in str(value or "").split(",") if v.strip()]


def _grown(mine: dict, theirs: dict, grows: tuple[str, ...]) -> list[tuple[str, str]]:
    """The settings of `grows` ("section.field") that grew in `mine` against `theirs` (saved), as
    (section, field): a list that extends the saved one, or a count above the saved one."""
    out = []
    for section, field in (dotted.split(".") for dotted in grows):
        new, old = mine.get(section, {}).get(field), theirs.get(section, {}).get(field)
        if _is_count(new) and _is_count(old):
            if new > old:
                out.append((section, field))
            continue
        new, old = _items(new), _items(old)
        if new != old and new[: len(old)] == old:
            out.append((section, field))
    return out


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_out(path: Path) -> None:
    """Refuse, before any work, a run folder path that cannot become one: a file, a folder that
    holds something other than a seal run, or a place this process cannot write."""
    if path.exists() and not path.is_dir():
        raise RunError(f"{path}: exists and is a file, not a run folder (--out names a folder)")
    if path.is_dir() and not (path / "manifest.json").exists() and any(path.iterdir()):
        raise RunError(f"{path}: exists and is not a seal run folder (no manifest.json); "
                       "name a new or empty folder with --out")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunError(f"{path}: cannot create the run folder ({ancestor} is a file)")
    try:  # the only sure test of writability (root ignores permission bits; /proc refuses anyway)
        probe = Path(tempfile.mkdtemp(prefix=".seal-probe-", dir=ancestor))
        probe.rmdir()
    except OSError as e:
        raise RunError(f"{path}: cannot create the run folder (writing in {ancestor} failed: {e.strerror or e})") from None


# Run folders this process created and has not yet written a result to (see discard_unstarted_runs).
_UNSTARTED: list[Path] = []
_BOOKKEEPING = {"manifest.json", "config.yaml", "metrics.jsonl"}


def discard_unstarted_runs() -> list[Path]:
    """Remove the run folders this process created that hold no result yet (only the manifest,
    the config and the event log), after a start that failed: left behind, such a folder would
    refuse the corrected rerun as 'resuming with a different config'. Returns what it removed."""
    removed = []
    while _UNSTARTED:
        path = _UNSTARTED.pop()
        if not path.is_dir():
            continue
        files = [p for p in path.rglob("*") if p.is_file()]
        if all(p.parent == path and (p.name in _BOOKKEEPING or p.name.endswith(".tmp")) or "tensorboard" in p.parts
               for p in files):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def progress(total: int, desc: str, unit: str = "it"):
    """A tqdm bar with rate and ETA (to stderr; quiet when SEAL_QUIET is set)."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, disable=bool(os.environ.get("SEAL_QUIET")))
