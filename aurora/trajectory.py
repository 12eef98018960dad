"""Recording the weight update ``ΔW`` during training and projecting its trajectory with PCA (Fig. 2).

The AuroRA paper (Fig. 2, upper) records ``ΔW`` of LoRA, MoSLoRA and AuroRA (ViT-Base, r = 2) at
epochs 0, 1, …, 9, fits one PCA on all of them and plots each method's path in the first two
principal components: AuroRA's path covers more of the plane ("explores a broader parameter space").

Here ``ΔW`` of a model is the concatenation of ``layer.delta_weight()`` over every adapter layer,
flattened (for AuroRA that is the paper's static update ``s · B σ(A)``, Eq. 9).
:class:`DeltaWeightRecorder` is a training-engine callback (``aurora.train.fit(..., callbacks=[...])``)
that stores this vector at every epoch end (epoch 0 = before training); :func:`fit_trajectory_pca`
fits one scikit-learn PCA on the snapshots of all methods and returns each method's 2-D path.

Chapter: ``book/trajectories.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA
from torch import nn

from .inject import adapter_layers

__all__ = [
    "flatten_delta_weight",
    "DeltaWeightRecorder",
    "TrajectoryPCA",
    "fit_trajectory_pca",
    "path_length",
]


@torch.no_grad()
def flatten_delta_weight(model: nn.Module) -> torch.Tensor:
    """All adapter updates of ``model`` as one fp32 CPU vector: ``concat(vec(ΔW_1), vec(ΔW_2), …)``.

    Layers are taken in module order (:func:`aurora.adapter_layers`), each ``ΔW`` row-major,
    so vectors from two models with the same architecture are comparable coordinate by coordinate.
    """
    layers = adapter_layers(model)
    if not layers:
        raise ValueError("model has no adapters; call aurora.add_adapters(model, config) first")
    return torch.cat([layer.delta_weight().detach().float().flatten().cpu() for _, layer in layers])


class DeltaWeightRecorder:
    """Training callback that keeps ``flatten_delta_weight(model)`` at every ``on_epoch_end(epoch, model)``.

    The engine calls ``on_epoch_end(0, model)`` before the first epoch, so ``epochs`` starts at 0
    with the initial update (all zeros, since ``B = 0`` at initialisation).
    ``dtype`` is the storage type (``np.float16`` halves memory for large models such as ViT-B).
    """

    def __init__(self, dtype: type[np.floating] = np.float32) -> None:
        if dtype not in (np.float16, np.float32, np.float64):
            raise ValueError(f"dtype must be one of np.float16, np.float32, np.float64; got {dtype!r}")
        self.dtype = dtype
        self.epochs: list[int] = []
        self.snapshots: list[np.ndarray] = []

    def on_epoch_end(self, epoch: int, model: nn.Module) -> None:
        self.epochs.append(int(epoch))
        self.snapshots.append(flatten_delta_weight(model).numpy().astype(self.dtype))

    def stacked(self) -> np.ndarray:
        """Snapshots as an ``(n_epochs, n_coordinates)`` array, in recording order."""
        if not self.snapshots:
            raise ValueError("no snapshots recorded yet; pass the recorder to aurora.train.fit(callbacks=[...])")
        return np.stack(self.snapshots)


@dataclass
class TrajectoryPCA:
    """One PCA fitted on the ``ΔW`` snapshots of several methods, and each method's projected path."""

    projections: dict[str, np.ndarray]  # method -> (n_epochs, n_components)
    explained_variance_ratio: np.ndarray  # (n_components,)
    pca: PCA


def _floating(values: np.ndarray) -> np.ndarray:
    """float32/float64 stay as they are (ViT-B snapshots are large); float16 and integers are widened."""
    values = np.asarray(values)
    return values if values.dtype in (np.float32, np.float64) else values.astype(np.float32 if values.dtype == np.float16 else np.float64)


def fit_trajectory_pca(trajectories: Mapping[str, np.ndarray], n_components: int = 2) -> TrajectoryPCA:
    """Fit one PCA on all methods' snapshots (rows) and project each method's trajectory onto it.

    ``trajectories`` maps a method name to an ``(n_epochs, n_coordinates)`` array (e.g.
    :meth:`DeltaWeightRecorder.stacked`); all must have the same ``n_coordinates``. The PCA centres
    the pooled snapshots, as scikit-learn does, so the origin of the plot is their mean, not ``ΔW = 0``.
    """
    if not trajectories:
        raise ValueError("trajectories must map at least one method name to an (n_epochs, n_coordinates) array")
    arrays = {name: _floating(values) for name, values in trajectories.items()}
    widths = {name: values.shape[1] if values.ndim == 2 else None for name, values in arrays.items()}
    if None in widths.values() or len(set(widths.values())) != 1:
        raise ValueError(f"trajectories must all be 2-D with the same number of coordinates; got shapes "
                         f"{ {name: values.shape for name, values in arrays.items()} }")
    pooled = np.concatenate(list(arrays.values()))
    if not isinstance(n_components, int) or not 1 <= n_components <= min(pooled.shape):
        raise ValueError(f"n_components must be an integer in [1, {min(pooled.shape)}] (min of snapshots and "
                         f"coordinates); got {n_components!r}")
    pca = PCA(n_components=n_components, svd_solver="full").fit(pooled)
    projections = {name: pca.transform(values) for name, values in arrays.items()}
    return TrajectoryPCA(projections, pca.explained_variance_ratio_.copy(), pca)


def path_length(points: np.ndarray) -> float:
    """Length of the polyline through the rows of ``points``: ``Σ_t ||p_{t+1} - p_t||``."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"points must be an (n_points, n_dims) array; got shape {points.shape}")
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())
