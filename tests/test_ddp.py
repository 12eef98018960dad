"""Multi-process training through aurora.hf: 2 CPU processes (torchrun; accelerate picks gloo on CPU) train and log like one process.

Under DDP, transformers 5's Trainer multiplies the loss by the number of processes (it expects a loss divided
by ``num_items_in_batch``, the item count of the global batch); a model's own sequence-classification loss is a
per-batch mean, so the logged loss and the clipped gradient came out twice one process's. ``AdapterTrainer``
uses :func:`aurora.hf.loss_function`. The control run (the model's own loss) shows the test can fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import train  # noqa: E402

WORKER = Path(__file__).with_name("ddp_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def results(folder: Path, rank: int = 0) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    return json.loads((folder / f"rank{rank}.json").read_text())["logs"], load_file(str(folder / f"rank{rank}.safetensors"))


def assert_logs_close(ours: list[dict[str, float]], reference: list[dict[str, float]], rel: float = 1e-5) -> None:
    assert len(ours) == len(reference) == 6
    for step, (a, b) in enumerate(zip(ours, reference)):
        assert a["loss"] == pytest.approx(b["loss"], rel=rel), step
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=rel), step


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(WORKER.parent.parent)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}", str(WORKER), str(folder), "aurora"]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("single")
    train(folder / "aurora_loss", "aurora", accumulation=1)
    train(folder / "accumulated", "aurora", accumulation=2)
    train(folder / "model_loss", "aurora", accumulation=1, model_loss=True)
    return folder


def test_two_processes_end_with_identical_weights(two_processes: Path) -> None:
    for variant in ("aurora_loss", "model_loss"):
        (_, first), (_, second) = results(two_processes / variant, 0), results(two_processes / variant, 1)
        assert first.keys() == second.keys()
        for name in first:
            assert torch.equal(first[name], second[name]), (variant, name)


def test_two_processes_log_and_train_like_one(two_processes: Path, one_process: Path) -> None:
    logs, weights = results(two_processes / "aurora_loss")
    reference_logs, reference = results(one_process / "aurora_loss")
    assert_logs_close(logs, reference_logs)
    for name in reference:
        torch.testing.assert_close(weights[name], reference[name], rtol=1e-4, atol=1e-6)


def test_gradient_accumulation_logs_and_trains_like_one_batch(one_process: Path) -> None:
    logs, weights = results(one_process / "accumulated")
    reference_logs, reference = results(one_process / "aurora_loss")
    assert_logs_close(logs, reference_logs)
    for name in reference:
        torch.testing.assert_close(weights[name], reference[name], rtol=1e-4, atol=1e-6)


def test_the_models_own_loss_is_what_doubled(two_processes: Path, one_process: Path) -> None:
    """The control: with the model's loss, 2 processes log twice one process's loss and gradient norm."""
    logs, _ = results(two_processes / "model_loss")
    reference_logs, _ = results(one_process / "model_loss")
    for a, b in zip(logs, reference_logs):
        assert a["loss"] == pytest.approx(2 * b["loss"], rel=1e-4)
    assert logs[0]["grad_norm"] == pytest.approx(2 * reference_logs[0]["grad_norm"], rel=1e-4)
