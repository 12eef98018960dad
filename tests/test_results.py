"""Provenance: the commit a result names, and when it is marked dirty."""

import subprocess
from pathlib import Path

from aurora.results import COMMAND_ENV, _git_commit, provenance, read_provenance, write_results


def git(root: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def test_commit_is_dirty_for_code_changes_but_not_for_results(tmp_path: Path) -> None:
    (tmp_path / "data" / "results" / "demo").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "data" / "results" / "demo" / "table.csv").write_text("a\n1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "start")
    head = git(tmp_path, "rev-parse", "HEAD")
    assert _git_commit(tmp_path) == head
    (tmp_path / "data" / "results" / "demo" / "table.csv").write_text("a\n2\n")  # a rerun rewrote a result
    assert _git_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")  # the code no longer matches the commit
    assert _git_commit(tmp_path) == head + "+dirty"


def test_write_results_round_trips_tables_and_provenance(tmp_path: Path) -> None:
    folder = write_results("demo", {"runs": [{"seed": 0, "accuracy": 0.5}, {"seed": 1, "accuracy": 0.75}]},
                           {"lr": 0.01}, wall_time_s=1.5, results_dir=tmp_path)
    assert (folder / "runs.csv").read_text().splitlines() == ["seed,accuracy", "0,0.5", "1,0.75"]
    provenance = read_provenance("demo", results_dir=tmp_path)
    assert provenance["config"] == {"lr": 0.01} and provenance["wall_time_s"] == 1.5 and provenance["device"] == "cpu"


def test_provenance_names_the_command_a_book_build_passes_down(monkeypatch) -> None:
    """Inside a chapter the process is a Jupyter kernel; the build script tells results how to rerun the chapter."""
    monkeypatch.setenv(COMMAND_ENV, "python scripts/build_book.py --quick --chapters ablations")
    assert provenance({})["command"] == "python scripts/build_book.py --quick --chapters ablations"
    monkeypatch.delenv(COMMAND_ENV)
    assert provenance({})["command"].split()[1:] == __import__("sys").argv


def test_provenance_command_is_what_a_user_types_in_the_repository() -> None:
    """``python -m`` leaves the module's file in argv[0]; the command names the module (or the script's path) instead."""
    from aurora.results import REPO_ROOT, _command

    module_file = str(REPO_ROOT / "aurora" / "experiments" / "vision_classification.py")
    assert _command([module_file, "--smoke"]) == "python -m aurora.experiments.vision_classification --smoke"
    assert _command([str(REPO_ROOT / "aurora" / "claims.py")]) == "python -m aurora.claims"
    assert _command([str(REPO_ROOT / "benchmarks" / "adapter_cost.py"), "--tiny"]) == "python benchmarks/adapter_cost.py --tiny"
    assert _command(["/usr/bin/pytest", "-q"]) == "python /usr/bin/pytest -q"  # outside the repository: as it ran
    installed = str(REPO_ROOT / ".venv" / "lib" / "pytest" / "__main__.py")
    assert _command([installed]) == f"python {installed}"  # an installed package is not the repository's code


def test_a_rewrite_leaves_no_stale_tables_and_a_bad_table_changes_nothing(tmp_path: Path) -> None:
    write_results("demo", {"runs": [{"seed": 0}], "summary": [{"mean": 1.0}]}, {"run": 1}, results_dir=tmp_path)
    (tmp_path / "demo" / "notes.csv").write_text("kept\n")  # not written by write_results: not ours to remove
    folder = write_results("demo", {"runs": [{"seed": 0}, {"seed": 1}]}, {"run": 2}, results_dir=tmp_path)
    assert sorted(path.name for path in folder.iterdir()) == ["notes.csv", "provenance.json", "runs.csv"]
    assert read_provenance("demo", results_dir=tmp_path)["tables"] == ["runs"]
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    try:
        write_results("demo", {"runs": [{"seed": 5}], "empty": []}, {"run": 3}, results_dir=tmp_path)
    except ValueError as error:
        assert "empty" in str(error)
    else:
        raise AssertionError("an empty table must be refused")
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before  # validated before anything changed


def test_results_dir_follows_aurora_results_dir(tmp_path: Path) -> None:
    code = "from aurora.results import RESULTS_DIR; print(RESULTS_DIR)"
    import os
    import sys

    moved = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "AURORA_RESULTS_DIR": str(tmp_path)}).stdout.strip()
    default = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={k: v for k, v in os.environ.items() if k != "AURORA_RESULTS_DIR"}).stdout.strip()
    assert Path(moved) == tmp_path.resolve()
    assert Path(default) == Path(__file__).resolve().parents[1] / "data" / "results"
