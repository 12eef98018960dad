"""Text classification data: Amazon Fine Food reviews offline, GLUE from the Hugging Face Hub.

Used by the text fine-tuning chapter (the paper's Table 1: RoBERTa on GLUE).
"""

from __future__ import annotations

import bz2
import functools
import io
import lzma
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from .specs import JANE_AUSTEN, DataSpec, debian_file, load_hub_dataset, subsample_indices

TextInput = Union[str, tuple[str, str]]  # one sentence, or a sentence pair (GLUE's MRPC, RTE, ...)
Example = tuple[TextInput, Union[int, float]]

MODELDATA_DIR = "usr/lib/R/site-library/modeldata/data"
GLUE_HUB_ID = "nyu-mll/glue"
# task -> (first text column, second text column or None, evaluation split); GLUE's test labels are
# hidden, so the paper (like LoRA before it) reports the validation split, and so does "test" here.
GLUE_TASKS: dict[str, tuple[str, str | None, str]] = {
    "cola": ("sentence", None, "validation"),
    "sst2": ("sentence", None, "validation"),
    "mrpc": ("sentence1", "sentence2", "validation"),
    "qqp": ("question1", "question2", "validation"),
    "stsb": ("sentence1", "sentence2", "validation"),
    "mnli": ("premise", "hypothesis", "validation_matched"),
    "qnli": ("question", "sentence", "validation"),
    "rte": ("sentence1", "sentence2", "validation"),
}
OFFLINE_TEXT_SUBSTITUTE = "load_text_classification('fine_foods') (binary sentiment, 4,000/1,000 reviews)"

TEXT_DATASETS: dict[str, DataSpec] = {
    "fine_foods": DataSpec(
        "fine_foods", "text", "Debian r-cran-modeldata 1.1.0 (R data set small_fine_foods)", True,
        num_classes=2, train_size=4000, test_size=1000,
        stands_in_for="GLUE SST-2 (binary sentiment of short reviews; Table 1)",
        notes="Amazon Fine Food reviews; label 1 = 'great' (5 stars), 0 = 'other'. "
        "HTML line breaks (<br />) are replaced by spaces.",
    ),
    "austen": JANE_AUSTEN,
    **{
        f"glue/{task}": DataSpec(
            f"glue/{task}", "text", f"Hugging Face Hub {GLUE_HUB_ID} ({task})", False,
            num_classes=0 if task == "stsb" else 3 if task == "mnli" else 2, train_size=0, test_size=0,
            notes=f"'test' is the {split} split; sizes depend on the task",
        )
        for task, (_, _, split) in GLUE_TASKS.items()
    },
}


@dataclass(frozen=True)
class TextSplits:
    """Train and test examples ``(text, label)``; ``label_names[label]`` names a class."""

    train: list[Example]
    test: list[Example]
    label_names: tuple[str, ...]
    spec: DataSpec


def read_r_lazyload_object(data_dir: Path, name: str) -> Any:
    """One object of an installed R package's lazy-load database (``Rdata.rdx`` + ``Rdata.rdb``).

    The ``.rdx`` index maps names to ``(offset, length)`` in the ``.rdb``; each record is a 4-byte
    big-endian length, a compression tag (for tagged formats) and a compressed R serialization,
    which the ``rdata`` package converts.
    """
    import rdata

    index = rdata.read_rds(data_dir / "Rdata.rdx")
    if name not in index["variables"]:
        raise KeyError(f"{name!r} is not in {data_dir}/Rdata.rdx")
    offset, length = (int(value) for value in index["variables"][name])
    with open(data_dir / "Rdata.rdb", "rb") as database:
        database.seek(offset)
        record = database.read(length)
    compression = int(np.asarray(index["compressed"]).ravel()[0])
    if compression == 1:
        payload = zlib.decompress(record[4:])
    else:
        tag, body = record[4:5], record[5:]
        decompressors = {
            b"0": lambda data: data,
            b"1": zlib.decompress,
            b"2": bz2.decompress,
            b"Z": lambda data: lzma.decompress(
                data, format=lzma.FORMAT_RAW,
                filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}],
            ),
        }
        if tag not in decompressors:
            raise ValueError(f"unknown R lazy-load compression tag {tag!r} in {data_dir}")
        payload = decompressors[tag](body)
    if len(payload) != struct.unpack(">I", record[:4])[0]:
        raise ValueError(f"corrupt record {name!r} in {data_dir}/Rdata.rdb")
    constructors = dict(rdata.conversion.DEFAULT_CLASS_MAP)
    constructors["tbl_df"] = constructors["data.frame"]  # tibbles are data frames
    return rdata.read_rds(io.BytesIO(payload), constructor_dict=constructors)


@functools.lru_cache(maxsize=2)
def _fine_foods_split(split: str) -> tuple[tuple[str, ...], np.ndarray]:
    data_dir = debian_file("r-cran-modeldata", f"{MODELDATA_DIR}/Rdata.rdb").parent
    frame = read_r_lazyload_object(data_dir, f"{split}_data")
    texts = tuple(re.sub(r"\s*<br\s*/?>\s*", " ", str(review)).strip() for review in frame["review"])
    labels = (frame["score"].astype(str).to_numpy() == "great").astype(np.int64)
    return texts, labels


def _fine_foods(n_train: int | None, n_test: int | None, seed: int) -> TextSplits:
    splits = []
    for split, count, parameter in (("training", n_train, "n_train"), ("testing", n_test, "n_test")):
        texts, labels = _fine_foods_split(split)
        chosen = subsample_indices(labels, count, seed, stratify=True, parameter=parameter)
        splits.append([(texts[i], int(labels[i])) for i in chosen])
    return TextSplits(splits[0], splits[1], ("other", "great"), TEXT_DATASETS["fine_foods"])


def _glue(task: str, n_train: int | None, n_test: int | None, seed: int) -> TextSplits:
    first, second, eval_split = GLUE_TASKS[task]
    what = f"GLUE task {task!r} ({GLUE_HUB_ID})"
    hub_splits = load_hub_dataset(what, OFFLINE_TEXT_SUBSTITUTE, GLUE_HUB_ID, task)
    label_feature = hub_splits["train"].features["label"]
    label_names = tuple(getattr(label_feature, "names", ()))
    result = []
    for split, count, parameter in (("train", n_train, "n_train"), (eval_split, n_test, "n_test")):
        table = hub_splits[split]
        labels = np.asarray(table["label"])
        chosen = subsample_indices(labels, count, seed, stratify=task != "stsb", parameter=parameter)
        rows = table.select(chosen.tolist())
        texts = rows[first] if second is None else list(zip(rows[first], rows[second]))
        result.append(list(zip(texts, labels[chosen].tolist())))
    return TextSplits(result[0], result[1], label_names, TEXT_DATASETS[f"glue/{task}"])


def load_text_classification(
    name: str, n_train: int | None = None, n_test: int | None = None, seed: int = 0
) -> TextSplits:
    """Train/test ``(text, label)`` lists of a text classification set, optionally subsampled.

    ``name``: ``"fine_foods"`` or ``"austen"`` (offline; :mod:`aurora.data.austen`) or ``"glue/<task>"`` with task in cola, sst2, mrpc, qqp,
    stsb, mnli, qnli, rte (Hugging Face Hub; needs the internet). ``n_train``/``n_test`` draw a
    class-stratified subsample with ``seed``; None keeps every example.
    """
    if name == "fine_foods":
        return _fine_foods(n_train, n_test, seed)
    if name == "austen":
        from .austen import load_austen

        return load_austen(n_train, n_test, seed)
    if name.startswith("glue/") and name.removeprefix("glue/") in GLUE_TASKS:
        return _glue(name.removeprefix("glue/"), n_train, n_test, seed)
    raise ValueError(f"name must be one of {sorted(TEXT_DATASETS)}, got {name!r}")
