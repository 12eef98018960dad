"""Result files with provenance: ``data/results/<name>/`` holds tidy tables plus ``provenance.json``.

Every experiment entry point (``python -m aurora.experiments.<name>``) writes through :func:`write_results`,
and every chapter reads through :func:`read_results`, so a number in the book can be traced to the
command, config, commit, device and time that produced it.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

__all__ = ["RESULTS_DIR", "provenance", "write_results", "read_results", "read_provenance"]

REPO_ROOT = Path(__file__).resolve().parent.parent
# AURORA_RESULTS_DIR moves every result (written and read) elsewhere, e.g. a dress rehearsal's scratch folder.
RESULTS_DIR = Path(os.environ.get("AURORA_RESULTS_DIR") or REPO_ROOT / "data" / "results").resolve()
# set by scripts/build_book.py for each chapter it executes: the command that reruns that chapter (a kernel's
# own argv, "ipykernel_launcher.py -f /tmp/...", would not)
COMMAND_ENV = "AURORA_RESULT_COMMAND"


def _git_commit(root: Path = REPO_ROOT) -> str:
    """``HEAD``'s commit, with ``+dirty`` when tracked files outside ``data/results`` differ from it.

    Results are left out: a book build rewrites them chapter by chapter, and the code that made a result
    is what its provenance has to pin down.
    """
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        status = ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)data/results"]
        dirty = subprocess.run(status, cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _device_description(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} (CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def _command(argv: list[str] | None = None) -> str:
    """The command line that reruns this process, as a user types it in the repository root.

    ``python -m aurora.experiments.x`` runs with ``argv[0]`` = the module's file, so a file of the
    package becomes its module name again, and any other file in the repository (outside hidden folders
    such as ``.venv``) its relative path.
    """
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(".py"):
        script = Path(argv[0]).resolve()
        if script.is_relative_to(REPO_ROOT / "aurora"):
            module = ".".join(script.relative_to(REPO_ROOT).with_suffix("").parts)
            argv = ["-m", module.removesuffix(".__main__"), *argv[1:]]
        elif script.is_relative_to(REPO_ROOT) and not script.relative_to(REPO_ROOT).parts[0].startswith("."):  # not .venv
            argv = [script.relative_to(REPO_ROOT).as_posix(), *argv[1:]]
    return " ".join(["python", *argv])


def provenance(config: Mapping[str, Any], device: str = "cpu", wall_time_s: float | None = None) -> dict[str, Any]:
    """Where a result came from: command, config, git commit, device, library versions, time."""
    import transformers

    return {
        "command": os.environ.get(COMMAND_ENV) or _command(),
        "config": dict(config),
        "git_commit": _git_commit(),
        "device": device,
        "device_description": _device_description(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": wall_time_s,
    }


def _atomic_write(path: Path, write) -> None:
    """``write(handle)`` into a temporary file next to ``path``, then rename it over ``path`` (never half a file)."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", newline="") as handle:
        write(handle)
    os.replace(temporary, path)


def write_results(
    name: str,
    tables: Mapping[str, Iterable[Mapping[str, Any]]],
    config: Mapping[str, Any],
    device: str = "cpu",
    wall_time_s: float | None = None,
    results_dir: Path | None = None,
) -> Path:
    """Write each table as ``<table>.csv`` and the provenance as ``provenance.json`` under ``<results_dir>/<name>/``.

    Every table is checked before any file changes, and each file is replaced atomically. Tables that the
    previous write of this folder made and this one does not (its ``provenance.json`` lists them) are
    removed, so a folder never mixes tables of two runs.
    """
    tables = {table: [dict(row) for row in rows] for table, rows in tables.items()}
    for table, rows in tables.items():
        if not rows:
            raise ValueError(f"table {table!r} of result {name!r} has no rows")
    folder = (results_dir or RESULTS_DIR) / name
    folder.mkdir(parents=True, exist_ok=True)
    previous = folder / "provenance.json"
    stale = set(json.loads(previous.read_text()).get("tables", [])) - set(tables) if previous.is_file() else set()
    for table, rows in tables.items():
        columns = list(dict.fromkeys(key for row in rows for key in row))

        def write_csv(handle, rows=rows, columns=columns):
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

        _atomic_write(folder / f"{table}.csv", write_csv)
    record = {**provenance(config, device, wall_time_s), "tables": sorted(tables)}
    _atomic_write(previous, lambda handle: handle.write(json.dumps(record, indent=2) + "\n"))
    for table in stale:
        (folder / f"{table}.csv").unlink(missing_ok=True)
    return folder


def read_results(name: str, table: str, results_dir: Path | None = None):
    """The table ``<name>/<table>.csv`` as a pandas DataFrame; ``FileNotFoundError`` names the command to run."""
    import pandas as pd

    path = (results_dir or RESULTS_DIR) / name / f"{table}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; produce it with `python -m aurora.experiments.{name}`")
    return pd.read_csv(path)


def read_provenance(name: str, results_dir: Path | None = None) -> dict[str, Any]:
    return json.loads(((results_dir or RESULTS_DIR) / name / "provenance.json").read_text())
