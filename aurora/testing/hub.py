"""A local stand-in for the Hugging Face Hub: the book's full-mode data sets and models, tiny, offline.

Full mode reads GLUE, seven image sets and three backbones from the hub. This module writes, under one
folder, what a machine that once downloaded them would hold in its Hugging Face caches:

- **data sets** with the real repository ids, configurations, split names, column names and feature
  types (a few dozen rows each, generated), prepared in the ``datasets`` cache layout
  (``<HF_DATASETS_CACHE>/<namespace>___<name>/<config>/0.0.0/<revision>/``) by ``datasets``' own
  Parquet builder, exactly as ``load_dataset`` leaves a hub set after its first download;
- **models** built from the real configurations (``config.json`` values of ``FacebookAI/roberta-base``,
  ``FacebookAI/roberta-large`` and ``google/vit-base-patch16-224-in21k``, the in21k checkpoint a
  headless ``ViTModel`` as on the hub) with random weights at a tiny width (hidden 32, 2 layers by
  default), a byte-level BPE tokenizer of the real class (``RobertaTokenizer``, trained on the
  stand-in's sentences) and the real image processor settings, saved in the hub cache layout
  (``<HF_HUB_CACHE>/models--<owner>--<name>/snapshots/<revision>/`` with ``refs/main``).

With :func:`hub_environment`'s variables (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_DATASETS_CACHE``,
``HF_HUB_OFFLINE=1``) the unchanged loaders -- ``datasets.load_dataset(id, config)``,
``AutoModel*.from_pretrained(id)``, ``AutoTokenizer``/``AutoImageProcessor`` -- find everything locally,
so the full-mode code paths run end to end on a CPU in minutes (``tests/test_rehearsal.py``).
Nothing here is a real data point: class names beyond the real label count are placeholders where the
real names are long lists, pixels and sentences are random, and weights are untrained.

    python -m aurora.testing.hub /tmp/hub            # build, then print the environment to export
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = [
    "REVISION", "GLUE", "IMAGE_SETS", "MODELS", "StandInDataset", "StandInModel",
    "hub_environment", "build_hub_stand_in", "main",
]

REVISION = hashlib.sha1(b"aurora-book hub stand-in, format 1").hexdigest()
"""The commit hash every stand-in repository is stored under (the hub's would be the repo's commit)."""

WORDS = {
    0: "dull bland stale soggy awful bitter cold broken late poor".split(),
    1: "fresh tasty great lovely crisp sweet warm perfect quick rich".split(),
    2: "the a this that it was is very quite and but with of for".split(),
}


@dataclass(frozen=True)
class StandInDataset:
    """One hub data set (one configuration): its columns as ``datasets`` feature specs, and split sizes."""

    repo_id: str
    config: str | None  # None: the repository's single "default" configuration
    columns: dict[str, tuple]  # column -> ("string",) | ("int32",) | ("float32",) | ("class", names) | ("image", side)
    splits: dict[str, int]
    label: str = "label"  # the column the task predicts (other class columns get random values)
    unlabelled_splits: tuple[str, ...] = ()  # GLUE's test splits: label -1


@dataclass(frozen=True)
class StandInModel:
    """One hub model: the real ``config.json`` values (before shrinking) and what else the repository holds."""

    repo_id: str
    config: dict[str, Any]
    files: tuple[str, ...] = field(default=())  # "tokenizer" | "image_processor"


def _glue(config: str, columns: dict[str, tuple], label: tuple, evaluation: tuple[str, ...], tests: tuple[str, ...]):
    splits = {"train": 48, **{split: 16 for split in evaluation}, **{split: 8 for split in tests}}
    return StandInDataset("nyu-mll/glue", config, {**columns, "label": label, "idx": ("int32",)}, splits,
                          unlabelled_splits=tests)


_ONE = {"sentence": ("string",)}
_PAIR = {"sentence1": ("string",), "sentence2": ("string",)}
_NLI = ("class", ("entailment", "not_entailment"))
# GLUE as nyu-mll/glue serves it (Parquet, one configuration per task); test labels are hidden (-1).
GLUE: tuple[StandInDataset, ...] = (
    _glue("cola", _ONE, ("class", ("unacceptable", "acceptable")), ("validation",), ("test",)),
    _glue("sst2", _ONE, ("class", ("negative", "positive")), ("validation",), ("test",)),
    _glue("mrpc", _PAIR, ("class", ("not_equivalent", "equivalent")), ("validation",), ("test",)),
    _glue("qqp", {"question1": ("string",), "question2": ("string",)}, ("class", ("not_duplicate", "duplicate")),
          ("validation",), ("test",)),
    _glue("stsb", _PAIR, ("float32",), ("validation",), ("test",)),
    _glue("mnli", {"premise": ("string",), "hypothesis": ("string",)},
          ("class", ("entailment", "neutral", "contradiction")),
          ("validation_matched", "validation_mismatched"), ("test_matched", "test_mismatched")),
    _glue("qnli", {"question": ("string",), "sentence": ("string",)}, _NLI, ("validation",), ("test",)),
    _glue("rte", _PAIR, _NLI, ("validation",), ("test",)),
)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _classes(count: int, prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}_{index:03d}" for index in range(count))


def _images(repo_id: str, side: int, label: str, classes: tuple[str, ...], **extra: tuple) -> StandInDataset:
    image_column = "img" if repo_id.startswith("uoft-cs/") else "image"
    columns = {image_column: ("image", side), label: ("class", classes), **extra}
    return StandInDataset(repo_id, None, columns, {"train": 40, "test": 16}, label=label)


# The image sets of aurora.data.images.HUB_IMAGE_SETS, with the real label counts (CIFAR-10's real names).
IMAGE_SETS: tuple[StandInDataset, ...] = (
    _images("uoft-cs/cifar10", 32, "label", CIFAR10_CLASSES),
    _images("uoft-cs/cifar100", 32, "fine_label", _classes(100, "fine"), coarse_label=("class", _classes(20, "coarse"))),
    _images("tanganke/dtd", 96, "label", _classes(47, "texture")),
    _images("tanganke/eurosat", 64, "label", _classes(10, "land_use")),
    _images("tanganke/resisc45", 96, "label", _classes(45, "scene")),
    _images("tanganke/stanford_cars", 96, "label", _classes(196, "car")),
    _images("timm/oxford-iiit-pet", 96, "label", _classes(37, "breed"), image_id=("string",),
            label_cat_dog=("class", ("cat", "dog"))),
)

_ROBERTA = dict(
    architectures=["RobertaForMaskedLM"], model_type="roberta", attention_probs_dropout_prob=0.1, bos_token_id=0,
    eos_token_id=2, pad_token_id=1, hidden_act="gelu", hidden_dropout_prob=0.1, initializer_range=0.02,
    layer_norm_eps=1e-05, max_position_embeddings=514, type_vocab_size=1, vocab_size=50265,
)
# config.json of each hub repository (its values, before :func:`_shrink` narrows width and depth).
MODELS: tuple[StandInModel, ...] = (
    StandInModel("roberta-base", dict(_ROBERTA, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                      intermediate_size=3072), ("tokenizer",)),
    StandInModel("roberta-large", dict(_ROBERTA, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                       intermediate_size=4096), ("tokenizer",)),
    StandInModel("google/vit-base-patch16-224-in21k", dict(
        architectures=["ViTModel"], model_type="vit", attention_probs_dropout_prob=0.0, hidden_act="gelu",
        hidden_dropout_prob=0.0, hidden_size=768, image_size=224, initializer_range=0.02, intermediate_size=3072,
        layer_norm_eps=1e-12, num_attention_heads=12, num_channels=3, num_hidden_layers=12, patch_size=16,
        qkv_bias=True), ("image_processor",)),
)


def hub_environment(root: Path) -> dict[str, str]:
    """The environment under which Hugging Face libraries read the stand-in at ``root`` and nothing else."""
    root = Path(root).resolve()
    return {"HF_HOME": str(root), "HF_HUB_CACHE": str(root / "hub"), "HF_DATASETS_CACHE": str(root / "datasets"),
            "HF_HUB_OFFLINE": "1"}


def _sentence(generator: np.random.Generator, label: int | float) -> str:
    polar = WORDS[1 if float(label) > 0.5 else 0]
    words = [str(generator.choice(polar if generator.random() < 0.4 else WORDS[2])) for _ in range(generator.integers(4, 12))]
    return " ".join(words).capitalize() + "."


def _picture(generator: np.random.Generator, side: int, label: int, count: int):
    from PIL import Image

    height, width = (int(side * generator.uniform(0.75, 1.25)) for _ in range(2))  # hub images vary in size
    hue = np.array([label * 97 % 256, label * 53 % 256, label * 29 % 256], dtype=np.float64)
    pixels = np.clip(hue + generator.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    return image.convert("L") if count % 7 == 3 else image  # a few grey images, as in DTD and the car set


def _features(spec: StandInDataset):
    import datasets

    kinds: dict[str, Callable[[tuple], Any]] = {
        "string": lambda column: datasets.Value("string"), "int32": lambda column: datasets.Value("int32"),
        "float32": lambda column: datasets.Value("float32"), "class": lambda column: datasets.ClassLabel(names=list(column[1])),
        "image": lambda column: datasets.Image(),
    }
    return datasets.Features({name: kinds[column[0]](column) for name, column in spec.columns.items()})


def _rows(spec: StandInDataset, split: str, count: int, generator: np.random.Generator) -> dict[str, list]:
    label_name = spec.label
    label_kind = spec.columns[label_name]
    if label_kind[0] == "float32":
        labels: list = [round(float(value), 2) for value in generator.uniform(0, 5, count)]
    else:  # every class once in the training split where it fits, then uniformly
        classes = len(label_kind[1])
        labels = [index % classes for index in range(count)] if split == "train" else generator.integers(0, classes, count).tolist()
    rows: dict[str, list] = {}
    for name, column in spec.columns.items():
        if name == label_name:
            hidden = split in spec.unlabelled_splits
            rows[name] = [-1.0 if label_kind[0] == "float32" else -1] * count if hidden else labels
        elif column[0] == "string":
            rows[name] = [_sentence(generator, label / 5 if label_kind[0] == "float32" else label) for label in labels]
        elif column[0] == "int32":
            rows[name] = list(range(count))
        elif column[0] == "class":
            rows[name] = [int(value) for value in generator.integers(0, len(column[1]), count)]
        else:
            rows[name] = [_picture(generator, column[1], label, index) for index, label in enumerate(labels)]
    return rows


def _write_dataset(spec: StandInDataset, datasets_cache: Path, scratch: Path, seed: int) -> Path:
    """Prepare ``spec`` in the datasets cache with ``datasets``' Parquet builder (the hub path's builder)."""
    import datasets
    from datasets.packaged_modules.parquet.parquet import Parquet

    features = _features(spec)
    generator = np.random.default_rng([seed, *spec.repo_id.encode(), *(spec.config or "").encode()])
    data_files = {}
    for split, count in spec.splits.items():
        path = scratch / f"{spec.repo_id.replace('/', '--')}-{spec.config}-{split}.parquet"
        datasets.Dataset.from_dict(_rows(spec, split, count, generator), features=features).to_parquet(str(path))
        data_files[split] = [str(path)]
    config = spec.config or "default"
    builder = Parquet(cache_dir=str(datasets_cache), dataset_name=spec.repo_id.split("/")[-1], config_name=config,
                      config_id=config, hash=REVISION, data_files=data_files, features=features)
    # The hub path passes repo_id (its data files are hf:// URLs); ours are local, so the namespace is set afterwards.
    builder.repo_id = spec.repo_id
    builder._cache_dir = builder._output_dir = builder._build_cache_dir()
    builder.download_and_prepare()
    return Path(builder.cache_dir)


def _shrink(config: dict[str, Any], width: int, layers: int) -> dict[str, Any]:
    heads = max(1, width // 16)
    return dict(config, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * width)


def _snapshot(hub_cache: Path, repo_id: str) -> Path:
    repository = hub_cache / f"models--{repo_id.replace('/', '--')}"
    (repository / "refs").mkdir(parents=True, exist_ok=True)
    (repository / "refs" / "main").write_text(REVISION)
    snapshot = repository / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def _tokenizer(corpus: list[str]):
    """A RobertaTokenizer with a byte-level BPE vocabulary learnt from ``corpus`` (RoBERTa's special-token ids)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=600, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    vocab = bpe.get_vocab()
    vocab["<mask>"] = len(vocab)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in model["merges"]]
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=512)


def _write_model(spec: StandInModel, hub_cache: Path, width: int, layers: int, corpus: list[str], seed: int) -> Path:
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, ViTImageProcessor

    values = _shrink(spec.config, width, layers)
    config = AutoConfig.for_model(**values)
    torch.manual_seed(seed)
    model_class = AutoModelForMaskedLM if values["architectures"][0].endswith("ForMaskedLM") else AutoModel
    model = model_class.from_config(config)
    snapshot = _snapshot(hub_cache, spec.repo_id)
    model.save_pretrained(snapshot)
    if "tokenizer" in spec.files:
        _tokenizer(corpus).save_pretrained(snapshot)
    if "image_processor" in spec.files:  # the in21k checkpoint's preprocessor_config.json
        ViTImageProcessor(do_resize=True, size={"height": 224, "width": 224}, resample=2, do_rescale=True,
                          do_normalize=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]).save_pretrained(snapshot)
    return snapshot


def build_hub_stand_in(
    root: Path, width: int = 32, layers: int = 2, data_sets: tuple[StandInDataset, ...] = GLUE + IMAGE_SETS,
    models: tuple[StandInModel, ...] = MODELS, seed: int = 0,
) -> dict[str, str]:
    """Write the stand-in under ``root`` (replacing an older one there); returns :func:`hub_environment`.

    ``width``/``layers`` set every model's hidden size and depth (heads: width // 16, feed-forward 4 x width).
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 16 or width % 16:
        raise ValueError(f"width must be a positive multiple of 16, got {width!r}")
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be a positive int, got {layers!r}")
    from datasets.utils.logging import disable_progress_bar
    from transformers.utils import logging as transformers_logging

    disable_progress_bar()
    transformers_logging.disable_progress_bar()
    environment = hub_environment(root)
    hub_cache, datasets_cache = Path(environment["HF_HUB_CACHE"]), Path(environment["HF_DATASETS_CACHE"])
    for folder in (hub_cache, datasets_cache):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        for spec in data_sets:
            _write_dataset(spec, datasets_cache, Path(scratch), seed)
    generator = np.random.default_rng(seed)
    corpus = [_sentence(generator, label) for label in (0, 1) * 200]
    for spec in models:
        _write_model(spec, hub_cache, width, layers, corpus, seed)
    return environment


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aurora.testing.hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder for the stand-in (becomes HF_HOME)")
    parser.add_argument("--width", type=int, default=32, help="hidden size of every model (default 32)")
    parser.add_argument("--layers", type=int, default=2, help="layers of every model (default 2)")
    args = parser.parse_args(argv)
    environment = build_hub_stand_in(args.root, args.width, args.layers)
    print("\n".join(f"export {name}={value}" for name, value in environment.items()))


if __name__ == "__main__":
    main()
