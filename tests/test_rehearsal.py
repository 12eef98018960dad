"""Dress rehearsal of full mode: the hub loaders and experiments against a local stand-in for the hub.

:mod:`aurora.testing.hub` writes the full-mode data sets (real ids, configurations, splits, columns and
feature types, a few dozen rows) and models (real configurations at hidden 32, 2 layers) into a fresh
Hugging Face cache; every check here runs in a subprocess with ``HF_HUB_OFFLINE=1`` and that cache, so
the unchanged ``load_dataset``/``from_pretrained`` calls of the package are what is exercised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aurora.testing import hub

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("hub")
    environment = hub.build_hub_stand_in(root)
    keep = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    return {**keep, **environment}


def run_python(code: str, environment: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=timeout, env=environment, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_stand_in_is_laid_out_as_the_hub_caches(stand_in):
    datasets_cache, hub_cache = Path(stand_in["HF_DATASETS_CACHE"]), Path(stand_in["HF_HUB_CACHE"])
    for spec in hub.GLUE + hub.IMAGE_SETS:
        namespace, name = spec.repo_id.split("/")
        folder = datasets_cache / f"{namespace}___{name}" / (spec.config or "default") / "0.0.0" / hub.REVISION
        info = json.loads((folder / "dataset_info.json").read_text())
        assert set(info["splits"]) == set(spec.splits) and list(info["features"]) == list(spec.columns)
    for spec in hub.MODELS:
        repository = hub_cache / f"models--{spec.repo_id.replace('/', '--')}"
        assert (repository / "refs" / "main").read_text() == hub.REVISION
        config = json.loads((repository / "snapshots" / hub.REVISION / "config.json").read_text())
        for key, value in spec.config.items():  # the real configuration, narrowed only in width and depth
            if key not in {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"}:
                assert config[key] == value, key
        assert (config["hidden_size"], config["num_hidden_layers"]) == (32, 2)
    with pytest.raises(ValueError, match="width"):
        hub.build_hub_stand_in(Path(stand_in["HF_HOME"]) / "unused", width=24)


def test_every_hub_loader_reads_the_stand_in_offline(stand_in):
    """The package's own loaders, HF_HUB_OFFLINE=1: every GLUE task, every image set, every backbone."""
    result = run_python("""
        import json, torch
        from aurora.data import (GLUE_TASKS, HUB_IMAGE_SETS, load_image_classification, load_text_classification,
                                 load_text_model, load_tokenizer, load_vision_model, vision_preprocessing)
        out = {"text": {}, "images": {}}
        for task in GLUE_TASKS:
            splits = load_text_classification(f"glue/{task}")
            out["text"][task] = [len(splits.train), len(splits.test), list(splits.label_names),
                                 isinstance(splits.train[0][0], tuple), type(splits.train[0][1]).__name__]
        for name in HUB_IMAGE_SETS:
            splits = load_image_classification(name, n_train=12, n_test=8)
            out["images"][name] = [list(splits.train_images.shape), str(splits.train_images.dtype),
                                   len(splits.test_labels), len(splits.label_names), splits.spec.train_size]
        tokenizer = load_tokenizer("roberta-base")
        batch = tokenizer(["Fresh tasty crisp.", "Stale and bland."], padding=True, return_tensors="pt")
        for name in ("roberta-base", "roberta-large"):
            model = load_text_model(name, num_labels=3, seed=0).eval()
            with torch.no_grad():
                out[name] = [type(model).__name__, list(model(**batch).logits.shape)]
        vit = "google/vit-base-patch16-224-in21k"
        preprocess = vision_preprocessing(vit)
        model = load_vision_model(vit, num_labels=47, seed=0).eval()
        images = load_image_classification("dtd", n_train=4, n_test=2).train_images
        with torch.no_grad():
            out[vit] = [type(model).__name__, preprocess.image_size, list(model(pixel_values=preprocess(images)).logits.shape)]
        out["tokens"] = [tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.sep_token_id, type(tokenizer).__name__]
        print("RESULT" + json.dumps(out))
    """, stand_in)
    out = json.loads(result.stdout.split("RESULT", 1)[1])
    specs = {spec.config: spec for spec in hub.GLUE}
    for task, (n_train, n_test, label_names, pairs, label_type) in out["text"].items():
        spec = specs[task]
        evaluation = "validation_matched" if task == "mnli" else "validation"
        assert (n_train, n_test) == (spec.splits["train"], spec.splits[evaluation])  # GLUE validation is "test"
        assert pairs == (task not in {"cola", "sst2"})
        assert label_type == ("float" if task == "stsb" else "int")
        assert label_names == ([] if task == "stsb" else list(spec.columns["label"][1]))
    image_specs = {spec.repo_id: spec for spec in hub.IMAGE_SETS}
    for name, (shape, dtype, n_test, classes, train_size) in out["images"].items():
        from aurora.data import HUB_IMAGE_SETS

        side = HUB_IMAGE_SETS[name].image_size
        spec = image_specs[HUB_IMAGE_SETS[name].hub_id]
        assert shape == [12, 3, side, side] and dtype == "torch.uint8" and n_test == 8
        assert classes == len(spec.columns[HUB_IMAGE_SETS[name].label_column][1])
        assert train_size == spec.splits["train"]
    assert out["roberta-base"] == ["RobertaForSequenceClassification", [2, 3]] == out["roberta-large"]
    assert out["google/vit-base-patch16-224-in21k"] == ["ViTForImageClassification", 224, [4, 47]]
    assert out["tokens"] == [0, 1, 2, "RobertaTokenizer"]  # RoBERTa's special-token ids


# ---------------------------------------------------------------- full-mode experiments end to end
@pytest.fixture(scope="module")
def full_results(tmp_path_factory) -> Path:
    """One results folder (AURORA_RESULTS_DIR) for every experiment of the rehearsal, as data/results would be."""
    return tmp_path_factory.mktemp("results")


def results_environment(stand_in: dict[str, str], results: Path) -> dict[str, str]:
    return {**stand_in, "AURORA_RESULTS_DIR": str(results), "OMP_NUM_THREADS": "1"}


def csv_rows(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:] if path.is_file() else []


# The rehearsal's size cap for the text experiment: its CLI has none yet, so the Python entry point is called
# with the smallest protocol (one rate, one tuning seed, two final seeds) and Table 11 cut to one epoch of 64 tokens
# in batches of 4 (four optimizer steps: with one, linear warmup keeps the rate at 0 and nothing trains).
TEXT_FULL = """
import torch
torch.set_num_threads(1)
import aurora.experiments.text_classification as tc
for hyper in tc.TABLE_11["roberta-base"].values():
    hyper.update(epochs=1, max_length=64, batch_size=4)
methods = [method for method in tc.MAIN_METHODS if method.label in {labels!r}]
tc.run_full(tasks={tasks!r}, device="cpu", lr_grid=(1e-3,), tuning_seeds=(1000,), final_seeds=(0, 1), methods=methods,
            limit=16, smoke=True, progress=False)
"""
TEXT_LABELS = ("LoRA r=8", "AuroRA r̃=2", "PEFT LoRA r=8")
TEXT_TASKS = ("stsb", "rte")


def test_text_full_mode_resumes_after_a_kill_and_leaves_no_stale_tables(stand_in, full_results):
    """roberta-base on GLUE through run_full: killed after 4 runs, rerun, finished without redoing them."""
    environment = results_environment(stand_in, full_results)
    code = textwrap.dedent(TEXT_FULL.format(labels=set(TEXT_LABELS), tasks=TEXT_TASKS))
    folders = {task: full_results / "text_classification_full" / "roberta-base" / task for task in TEXT_TASKS}
    runs_per_task = len(TEXT_LABELS) * (1 + 2)  # tuning: 1 rate x 1 seed; final: 2 seeds
    first = subprocess.Popen([sys.executable, "-c", code], env=environment, cwd=REPO_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 400
        while len(csv_rows(folders["stsb"] / "runs.csv")) < 4:
            assert first.poll() is None, first.stderr.read()[-4000:]
            assert time.monotonic() < deadline, "no runs written"
            time.sleep(0.2)
        first.kill()  # a hard interruption, as a lost machine would be
    finally:
        first.wait(timeout=60)
        first.stderr.close()
    before = csv_rows(folders["stsb"] / "runs.csv")
    assert 4 <= len(before) < runs_per_task
    assert not (folders["stsb"] / "summary.csv").exists() or not json.loads(
        (folders["stsb"] / "provenance.json").read_text())["config"]["complete"]
    run_python(code, environment)
    for task, folder in folders.items():
        rows = csv_rows(folder / "runs.csv")
        assert len(rows) == len(set(rows)) == runs_per_task, task
        summary = (folder / "summary.csv").read_text()
        assert all(label in summary for label in TEXT_LABELS)
        assert json.loads((folder / "provenance.json").read_text())["config"]["complete"] is True
    assert csv_rows(folders["stsb"] / "runs.csv")[:len(before)] == before  # resumed, not redone
    assert_training_moved_the_methods_apart(folders["rte"] / "runs.csv")


def assert_training_moved_the_methods_apart(runs_csv: Path) -> None:
    """Same seed, same head, different adapters: after real optimizer steps the test losses differ."""
    import pandas as pd

    finals = pd.read_csv(runs_csv).query("phase == 'final'")
    for seed, rows in finals.groupby("seed"):
        assert rows["test_loss"].nunique() == len(rows), (seed, rows[["label", "test_loss"]])


VISION_FULL = """
import torch
torch.set_num_threads(1)
import dataclasses
import aurora.experiments.vision_classification as vc
methods = [method for method in vc.FULL_METHODS if method.label in {labels!r}]
# dtd with the CLIs' --smoke protocol (the ablations CLI reuses those runs); cifar100 with a few real optimizer
# steps (the smoke protocol's single step trains at a warmup rate of 0)
for task, protocol in (("dtd", vc.SMOKE_PROTOCOL), ("cifar100", dataclasses.replace(vc.SMOKE_PROTOCOL, epochs=2, batch_size=8))):
    vc.run_full(tasks=(task,), results_dir={folder!r}, methods=methods, protocol=protocol, device="cpu",
                n_train=24, n_test=8)
"""
VISION_LABELS = ("LoRA r=16", "AuroRA r̃=2", "PEFT LoRA r=16")
VISION_TASKS = ("dtd", "cifar100")  # "image"/"label" and "img"/"fine_label" columns; 96-px and 32-px images to 224


def test_vision_and_ablation_full_modes_run_vit_b_on_hub_sets(stand_in, full_results):
    """google/vit-base-patch16-224-in21k on hub image sets through run_full (images decoded lazily from the cache),
    then the ablations CLI in full mode on DTD, which copies the runs it shares with the vision comparison."""
    folder = full_results / "vision_classification" / "full"
    environment = results_environment(stand_in, full_results)
    code = VISION_FULL.format(labels=set(VISION_LABELS), folder=str(folder))
    run_python(code, environment)
    for task in VISION_TASKS:
        rows = csv_rows(folder / task / "runs.csv")
        assert len(rows) == len(set(rows)) == len(VISION_LABELS) * 3, task
        summary = (folder / task / "summary.csv").read_text()
        assert all(label in summary for label in VISION_LABELS)
    assert "4096" in (folder / "dtd" / "summary.csv").read_text()  # LoRA r=16 on q/v of 2 layers at width 32
    assert_training_moved_the_methods_apart(folder / "cifar100" / "runs.csv")

    ablations = subprocess.run([sys.executable, "-m", "aurora.experiments.ablations", "--full", "--smoke", "--groups",
                                "components", "--device", "cpu"], capture_output=True, text=True, timeout=600,
                               env=environment, cwd=REPO_ROOT)
    assert ablations.returncode == 0, ablations.stderr[-4000:]
    ablation_folder = full_results / "ablations" / "full"
    runs = (ablation_folder / "runs.csv").read_text()
    assert all(label in runs for label in ("AuroRA r̃=2", "AuroRA w/o F", "AuroRA w/o L"))
    shared = [row for row in csv_rows(folder / "dtd" / "runs.csv") if ",AuroRA r̃=2," in row]
    copied = [row for row in runs.splitlines() if ",AuroRA r̃=2," in row]
    assert len(shared) == 3 and copied == shared  # copied from the vision runs, not rerun
    merges = (ablation_folder / "merges.csv").read_text()
    assert all(strategy in merges for strategy in ("static", "linearized", "least_squares"))
    assert json.loads((ablation_folder / "claims_inputs.json").read_text())["T7a"]

    trajectories = subprocess.run([sys.executable, "-m", "aurora.experiments.trajectories", "--full", "--smoke", "--device",
                                   "cpu"], capture_output=True, text=True, timeout=600, env=environment, cwd=REPO_ROOT)
    assert trajectories.returncode == 0, trajectories.stderr[-4000:]
    for task in ("dtd", "resisc45"):
        trajectory_folder = full_results / "trajectories" / "full" / task
        paths = csv_rows(trajectory_folder / "paths.csv")
        assert len(paths) == 3 * 2, task  # LoRA, MoSLoRA and AuroRA at rank 2, two final seeds, each replayed
        assert (trajectory_folder / "projections.csv").is_file() and (trajectory_folder / "claims_inputs.json").is_file()
    copied = [row for row in csv_rows(full_results / "trajectories" / "full" / "dtd" / "runs.csv") if ",AuroRA r̃=2," in row]
    assert copied == shared  # the vision comparison's runs, replayed rather than trained again


# ---------------------------------------------------------------- the chapters in full mode
FULL_CHAPTERS = ("text_classification", "vision_classification", "ablations", "trajectories")


def test_full_mode_chapters_render_the_rehearsal_results_under_W(stand_in, full_results, tmp_path):
    """build_book.py --full (papermill, then jupyter-book -W) over the results the experiments above wrote: each
    chapter renders them and names what is missing with the command that makes it, without rerunning anything."""
    assert (full_results / "vision_classification" / "full" / "dtd" / "summary.csv").is_file()  # run after the above
    output = tmp_path / "book"
    command = [sys.executable, "scripts/build_book.py", "--full", "--device", "cpu", "--chapters", *FULL_CHAPTERS,
               "--executed-dir", str(tmp_path / "executed"), "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200,
                            env=results_environment(stand_in, full_results), cwd=REPO_ROOT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    pages = {name: (output / "html" / "book" / f"{name}.html").read_text() for name in FULL_CHAPTERS}
    assert "roberta-base/stsb" in pages["text_classification"] and "AuroRA" in pages["text_classification"]
    assert "roberta-base/mrpc" in pages["text_classification"]  # not rehearsed: named with its command
    assert "text_classification --full" in pages["text_classification"]
    for name in ("vision_classification", "ablations", "trajectories"):
        assert "AuroRA" in pages[name], name
