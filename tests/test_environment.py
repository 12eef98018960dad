"""The pinned environment: requirement files agree, the venv matches them, torchvision/timm import."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import time
import tomllib
import types
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
import patch_torchvision  # noqa: E402


def requirement_lines(path: Path) -> list[str]:
    """Requirement strings of a pip requirements/constraints file (comments and options dropped)."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def constraint_versions() -> dict[str, Version]:
    pins = {}
    for line in requirement_lines(REPO_ROOT / "constraints.txt"):
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"constraints.txt must pin exactly: {line}"
        pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    return pins


def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_constraints_satisfy_requirements_and_package_dependencies():
    pins = constraint_versions()
    project = pyproject()["project"]
    declared = requirement_lines(REPO_ROOT / "requirements.txt") + project["dependencies"]
    declared += [dep for extra in project["optional-dependencies"].values() for dep in extra]
    for line in declared:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (line, str(pins[name]))


def test_torch_is_pinned_to_the_cpu_build():
    assert constraint_versions()["torch"].local == "cpu"


def test_environment_yml_matches_requirements_and_python_version():
    environment = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    dependencies = environment["dependencies"]
    (pip_section,) = [entry["pip"] for entry in dependencies if isinstance(entry, dict)]
    pip_requirements = [entry for entry in pip_section if not entry.startswith("-")]
    assert sorted(pip_requirements) == sorted(requirement_lines(REPO_ROOT / "requirements.txt"))
    assert "-c constraints.txt" in pip_section
    (python,) = [entry for entry in dependencies if isinstance(entry, str) and entry.startswith("python=")]
    conda_python = Version(python.split("=")[1])
    assert Requirement(f"python{pyproject()['project']['requires-python']}").specifier.contains(conda_python)


def test_installed_versions_match_constraints():
    """The running environment is the pinned one (pip, setuptools and the like aside)."""
    mismatches = {}
    for name, pinned in constraint_versions().items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            mismatches[name] = (str(pinned), "missing")
            continue
        if installed != pinned:
            mismatches[name] = (str(pinned), str(installed))
    assert not mismatches


def test_timm_and_torchvision_import_in_a_fresh_interpreter():
    code = "import torchvision, torchvision.transforms, timm; print(timm.__version__, torchvision.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    timm_version, torchvision_version = result.stdout.split()
    pins = constraint_versions()
    assert Version(timm_version) == pins["timm"]
    assert Version(torchvision_version).release == pins["torchvision"].release


ORIGINAL_SNIPPET = '''
@torch.library.register_fake("torchvision::nms")
def meta_nms(dets, scores, iou_threshold):
    return "nms-fake"
'''


@pytest.mark.parametrize("has_ops", [False, True])
def test_patched_registration_runs_only_when_torchvision_ops_loaded(has_ops):
    patched, replaced = patch_torchvision.patch_source(ORIGINAL_SNIPPET)
    assert replaced == 1
    registered = []

    def register_fake(operator):
        def decorator(function):
            registered.append(operator)
            return function
        return decorator

    namespace = {
        "torch": types.SimpleNamespace(library=types.SimpleNamespace(register_fake=register_fake)),
        "torchvision": types.SimpleNamespace(extension=types.SimpleNamespace(_has_ops=lambda: has_ops)),
    }
    exec(compile(patched, "<patched>", "exec"), namespace)
    assert registered == (["torchvision::nms"] if has_ops else [])
    assert namespace["meta_nms"](None, None, None) == "nms-fake"  # the function itself is untouched


def test_patch_is_idempotent_and_applied_to_the_installed_torchvision():
    installed = patch_torchvision.meta_registrations_path().read_text()
    assert patch_torchvision.PATCH_MARKER in installed
    assert patch_torchvision.patch_source(installed)[1] == 0
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "patch_torchvision.py")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "already patched" in result.stdout


def test_console_script_and_pytest_markers_are_declared(pytestconfig):
    (entry_point,) = importlib.metadata.entry_points(group="console_scripts", name="aurora-count")
    assert entry_point.value == "aurora.counting:main"
    declared = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert {"slow", "browser"} <= declared


@pytest.mark.skipif(Path(sys.prefix).resolve() != (REPO_ROOT / ".venv").resolve(),
                    reason="runs only inside the .venv that scripts/setup.sh manages")
def test_setup_script_second_run_is_fast_and_idempotent():
    started = time.perf_counter()
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "setup.sh")], capture_output=True, text=True,
                            timeout=600)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert "up to date" in result.stdout
    assert elapsed < 15, f"second setup run took {elapsed:.1f} s"


def test_ci_entry_point_runs_make_test():
    script = REPO_ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK)
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in lines
    assert lines[-1].strip() == "make test"


# ---------------------------------------------------------------- full mode on a GPU
def pins_of(path: Path) -> dict[str, Requirement]:
    return {canonicalize_name(Requirement(line).name): Requirement(line) for line in requirement_lines(path)}


def test_cuda_constraints_differ_from_the_cpu_ones_only_in_torch():
    """constraints-cuda.txt (setup.sh --cuda): the same pins, except torch's CUDA build, pinned exactly, and the
    CUDA runtime wheels that build pulls in (pinned too; nothing the CPU set has)."""
    cpu, cuda = pins_of(REPO_ROOT / "constraints.txt"), pins_of(REPO_ROOT / "constraints-cuda.txt")
    assert set(cpu) <= set(cuda)
    runtime = set(cuda) - set(cpu)
    assert runtime and all(name.startswith(("nvidia-", "cuda-")) or name == "triton" for name in runtime), runtime
    assert all(str(cuda[name].specifier).startswith("==") for name in runtime)
    differing = {name for name in cpu if str(cpu[name]) != str(cuda[name])}
    assert differing == {"torch"}
    assert str(cuda["torch"].specifier) == "===2.13.0"
    assert cuda["torch"].specifier.contains("2.13.0") and not cuda["torch"].specifier.contains("2.13.0+cpu")
    # why not "==2.13.0": PEP 440 lets it match the local +cpu wheel of the machine's find-links folder too
    assert Requirement("torch==2.13.0").specifier.contains("2.13.0+cpu")
    assert Version(str(cpu["torch"].specifier).lstrip("=")).release == Version("2.13.0").release


def test_setup_script_offers_the_cuda_build():
    help_text = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "setup.sh"), "--help"], capture_output=True,
                               text=True, timeout=60).stdout
    assert "--cuda" in help_text and "constraints-cuda.txt" in help_text
    refused = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "setup.sh"), "--gpu"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "--cuda" in refused.stderr


@pytest.mark.parametrize("gpu", [True, False])
def test_book_full_uses_the_gpu_when_torch_sees_one(gpu):
    makefile = (REPO_ROOT / "Makefile").read_text()
    (snippet,) = [line.split(":=", 1)[1].strip() for line in makefile.splitlines() if line.startswith("FULL_MODE_DEVICE")]
    code = f"import torch\ntorch.cuda.is_available = lambda: {gpu}\n{snippet}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("cuda" if gpu else "cpu")
    assert ("WARNING" in result.stderr) == (not gpu)
    recipe = subprocess.run(["make", "-n", "book-full"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60).stdout
    assert 'scripts/build_book.py --full --device "$device"' in recipe
