"""Image classification data: Fashion-MNIST and scikit-learn digits offline, hub sets for full mode.

Used by the vision fine-tuning chapter (the paper's Table 3: ViT on eight image sets).
Images come back compact, shape ``(N, C, H, W)``: ``uint8`` pixels 0-255 for every 8-bit set
(Fashion-MNIST and all hub sets; a quarter of float32's memory: the seven hub sets at their default
sizes take about 9 GB instead of 35 GB; one at a time, at most about 4 GB), float32 in [0, 1] for scikit-learn's digits (17 grey levels);
``dtype=torch.float32`` asks for [0, 1] floats everywhere. Scaling to [0, 1], resizing and normalising
for a particular backbone is :func:`aurora.data.vision_preprocessing`'s job, batch by batch (it takes
both dtypes).
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from .specs import DataSpec, debian_file, load_hub_dataset, subsample_indices

IMAGE_DTYPES = (None, torch.uint8, torch.float32)

FASHION_MNIST_DIR = "usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
OFFLINE_IMAGE_SUBSTITUTE = "load_image_classification('fashion_mnist') (10 classes, 60,000/10,000 images)"


@dataclass(frozen=True)
class HubImageSet:
    """Where a paper image set lives on the Hugging Face Hub; the image column is found by its type."""

    hub_id: str
    train_split: str
    test_split: str
    image_size: int  # images are resized to image_size x image_size so they stack into one tensor
    label_column: str = "label"
    revision: str | None = None  # a branch/commit of the repository, e.g. specs.PARQUET_EXPORT


# Table 3's sets that have a plain image/label copy on the hub (FGVC-Aircraft has none).
HUB_IMAGE_SETS: dict[str, HubImageSet] = {
    "cifar10": HubImageSet("uoft-cs/cifar10", "train", "test", 32),
    "cifar100": HubImageSet("uoft-cs/cifar100", "train", "test", 32, label_column="fine_label"),
    "dtd": HubImageSet("tanganke/dtd", "train", "test", 224),
    "eurosat": HubImageSet("tanganke/eurosat", "train", "test", 64),
    "resisc45": HubImageSet("tanganke/resisc45", "train", "test", 224),
    "stanford_cars": HubImageSet("tanganke/stanford_cars", "train", "test", 224),
    "oxford_pets": HubImageSet("timm/oxford-iiit-pet", "train", "test", 224),
}

IMAGE_DATASETS: dict[str, DataSpec] = {
    "fashion_mnist": DataSpec(
        "fashion_mnist", "image", "Debian dataset-fashion-mnist (Zalando Fashion-MNIST, 28x28 grey)", True,
        num_classes=10, train_size=60000, test_size=10000,
        stands_in_for="the object-category sets of Table 3 (CIFAR-10/100): 10 balanced classes",
    ),
    "digits": DataSpec(
        "digits", "image", "scikit-learn load_digits (UCI optical digits, 8x8 grey, values 0-16)", True,
        num_classes=10, train_size=1437, test_size=360,
        stands_in_for="a seconds-long sanity set (no paper counterpart)",
        notes="no official split: a fixed stratified 80/20 split (random_state=0)",
    ),
    **{
        name: DataSpec(name, "image", f"Hugging Face Hub {hub.hub_id}", False, num_classes=0,
                       train_size=0, test_size=0, notes=f"resized to {hub.image_size}x{hub.image_size} RGB")
        for name, hub in HUB_IMAGE_SETS.items()
    },
}


@dataclass(frozen=True)
class ImageSplits:
    """Images ``(N, C, H, W)`` (uint8 0-255, or float32 in [0, 1]) and labels ``(N,)`` int64, for train and test."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    label_names: tuple[str, ...]
    spec: DataSpec


def read_idx(path) -> np.ndarray:
    """An IDX file (the MNIST format, optionally gzipped) as a uint8 array of its stated shape."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    dimensions = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dimensions))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dimensions).reshape(shape)


@functools.lru_cache(maxsize=2)
def _fashion_mnist_split(prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(debian_file("dataset-fashion-mnist", f"{FASHION_MNIST_DIR}/{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(debian_file("dataset-fashion-mnist", f"{FASHION_MNIST_DIR}/{prefix}-labels-idx1-ubyte.gz"))
    return images, labels.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _digits_splits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    return tuple(train_test_split(images, digits.target.astype(np.int64), test_size=360,
                                  stratify=digits.target, random_state=0))


def _to_tensors(images: np.ndarray, labels: np.ndarray, chosen: np.ndarray, dtype: torch.dtype | None):
    picked = torch.from_numpy(np.ascontiguousarray(images[chosen])).unsqueeze(1)
    if dtype is torch.float32 and picked.dtype == torch.uint8:
        picked = picked.to(torch.float32) / 255.0
    elif dtype is torch.uint8 and picked.dtype != torch.uint8:
        picked = (picked * 255.0).round().to(torch.uint8)
    return picked, torch.from_numpy(labels[chosen].copy())


def _offline(name: str, n_train: int | None, n_test: int | None, seed: int, dtype: torch.dtype | None) -> ImageSplits:
    if name == "fashion_mnist":
        (train_x, train_y), (test_x, test_y) = _fashion_mnist_split("train"), _fashion_mnist_split("t10k")
        label_names = FASHION_MNIST_CLASSES
    else:
        train_x, test_x, train_y, test_y = _digits_splits()
        label_names = tuple(str(digit) for digit in range(10))
    train_chosen = subsample_indices(train_y, n_train, seed, stratify=True, parameter="n_train")
    test_chosen = subsample_indices(test_y, n_test, seed, stratify=True, parameter="n_test")
    return ImageSplits(*_to_tensors(train_x, train_y, train_chosen, dtype),
                       *_to_tensors(test_x, test_y, test_chosen, dtype), label_names, IMAGE_DATASETS[name])


def _hub(name: str, n_train: int | None, n_test: int | None, seed: int, image_size: int | None,
         dtype: torch.dtype | None) -> ImageSplits:
    hub = HUB_IMAGE_SETS[name]
    what = f"image set {name!r} ({hub.hub_id})"
    hub_splits = load_hub_dataset(
        what, OFFLINE_IMAGE_SUBSTITUTE, hub.hub_id, revision=hub.revision,
        alternative=f"set hub_id or revision of aurora.data.HUB_IMAGE_SETS[{name!r}]; a task that cannot load is "
        "skipped by catching aurora.data.HubDataError")
    import datasets  # importable: load_hub_dataset succeeded
    side = image_size or hub.image_size
    features = hub_splits[hub.train_split].features
    image_column = next(column for column, feature in features.items() if isinstance(feature, datasets.Image))
    label_names = tuple(features[hub.label_column].names)
    tensors = []
    for split, count, parameter in ((hub.train_split, n_train, "n_train"), (hub.test_split, n_test, "n_test")):
        table = hub_splits[split]
        labels = np.asarray(table[hub.label_column], dtype=np.int64)
        chosen = subsample_indices(labels, count, seed, stratify=True, parameter=parameter)
        images = torch.empty(len(chosen), 3, side, side, dtype=dtype or torch.uint8)
        rows = table.select(chosen.tolist())
        for row, example in enumerate(tqdm(rows, desc=f"{name} {split}", unit="image")):
            picture = torch.from_numpy(np.asarray(example[image_column].convert("RGB").resize((side, side)))).permute(2, 0, 1)
            images[row] = picture.to(torch.float32) / 255.0 if dtype is torch.float32 else picture
        tensors += [images, torch.from_numpy(labels[chosen])]
    spec = replace(IMAGE_DATASETS[name], num_classes=len(label_names), train_size=len(hub_splits[hub.train_split]),
                   test_size=len(hub_splits[hub.test_split]))
    return ImageSplits(*tensors, label_names, spec)


def load_image_classification(
    name: str, n_train: int | None = None, n_test: int | None = None, seed: int = 0,
    image_size: int | None = None, dtype: torch.dtype | None = None,
) -> ImageSplits:
    """Train/test image tensors of a classification set, optionally subsampled (class-stratified).

    ``name``: ``"fashion_mnist"`` or ``"digits"`` (offline, native size, one channel), or a hub set
    (``cifar10``, ``cifar100``, ``dtd``, ``eurosat``, ``resisc45``, ``stanford_cars``,
    ``oxford_pets``; RGB, resized to ``image_size`` or the set's default; needs the internet).
    ``dtype``: None (compact: uint8 0-255, digits float32 in [0, 1]), ``torch.uint8`` (digits rounded to
    0-255) or ``torch.float32`` ([0, 1]). A hub set that cannot be loaded raises a
    :class:`~aurora.data.HubDataError` (unreachable hub, or a loading script) naming it and an alternative.
    """
    if dtype not in IMAGE_DTYPES:
        raise ValueError(f"dtype must be one of None, torch.uint8, torch.float32, got {dtype!r}")
    if name in HUB_IMAGE_SETS:
        return _hub(name, n_train, n_test, seed, image_size, dtype)
    if name in IMAGE_DATASETS:
        if image_size is not None:
            raise ValueError("image_size applies to hub sets only; resize offline sets with vision_preprocessing")
        return _offline(name, n_train, n_test, seed, dtype)
    raise ValueError(f"name must be one of {sorted(IMAGE_DATASETS)}, got {name!r}")
