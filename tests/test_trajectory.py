"""ΔW recording and trajectory PCA (Fig. 2) against closed forms and a numpy SVD reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TinyNet, randomize_adapters

import aurora
from aurora.trajectory import DeltaWeightRecorder, fit_trajectory_pca, flatten_delta_weight, path_length


def lora_model(rank: int = 2, alpha: float = 4.0) -> TinyNet:
    torch.manual_seed(0)
    return aurora.add_adapters(TinyNet(), aurora.AdapterConfig(method="lora", rank=rank, alpha=alpha))


def test_flatten_matches_closed_form_lora():
    model = lora_model(rank=2, alpha=4.0)
    randomize_adapters(model)
    expected = []
    for name in ("query", "value"):  # module order of TinyNet
        layer = model.get_submodule(name)
        expected.append((4.0 / 2) * (layer.lora_B.detach() @ layer.lora_A.detach()).flatten())
    torch.testing.assert_close(flatten_delta_weight(model), torch.cat(expected))


def test_flatten_aurora_uses_column_wise_static_update():
    torch.manual_seed(0)
    model = aurora.add_adapters(TinyNet(), aurora.AdapterConfig(method="aurora", rank=2, alpha=4.0))
    randomize_adapters(model)
    layer = model.get_submodule("query")
    # σ applied to each column A e_j separately (the r-vector the layer sees for a one-hot input)
    columns = torch.stack([layer.anl(layer.lora_A[:, j].detach()) for j in range(layer.in_features)], dim=1)
    expected = (4.0 / 2) * layer.lora_B.detach() @ columns
    flat = flatten_delta_weight(model)
    torch.testing.assert_close(flat[: expected.numel()], expected.flatten(), rtol=1e-5, atol=1e-6)


def test_flatten_needs_adapters():
    with pytest.raises(ValueError, match="no adapters"):
        flatten_delta_weight(TinyNet())


def test_recorder_starts_at_zero_and_follows_training():
    model = lora_model()
    recorder = DeltaWeightRecorder()
    recorder.on_epoch_end(0, model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 12, generator=generator), torch.randint(0, 3, (32,), generator=generator)
    for epoch in (1, 2):
        for _ in range(3):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        recorder.on_epoch_end(epoch, model)
    stacked = recorder.stacked()
    assert recorder.epochs == [0, 1, 2]
    assert stacked.shape == (3, 2 * 12 * 12)
    assert np.all(stacked[0] == 0.0)  # B = 0 at initialisation
    assert np.linalg.norm(stacked[2] - stacked[1]) > 0
    layer = model.get_submodule("value")
    np.testing.assert_allclose(stacked[2][144:], (2.0 * layer.lora_B @ layer.lora_A).detach().flatten().numpy(), rtol=1e-6)
    # snapshots are copies: changing the model afterwards leaves them alone
    with torch.no_grad():
        layer.lora_B.add_(1.0)
    assert not np.allclose(recorder.stacked()[2][144:], (2.0 * layer.lora_B @ layer.lora_A).detach().flatten().numpy())


def test_recorder_rejects_bad_dtype_and_empty():
    with pytest.raises(ValueError, match="dtype"):
        DeltaWeightRecorder(dtype=np.int32)
    with pytest.raises(ValueError, match="no snapshots"):
        DeltaWeightRecorder().stacked()


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    trajectories = {
        "lora": np.cumsum(rng.normal(size=(10, 50)), axis=0),
        "moslora": np.cumsum(rng.normal(size=(10, 50)), axis=0),
        "aurora": np.cumsum(rng.normal(scale=2.0, size=(10, 50)), axis=0),
    }
    result = fit_trajectory_pca(trajectories, n_components=2)
    pooled = np.concatenate(list(trajectories.values()))
    centred = pooled - pooled.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(result.explained_variance_ratio, singular[:2] ** 2 / np.sum(singular**2), rtol=1e-10)
    for name, values in trajectories.items():
        reference = (values - pooled.mean(axis=0)) @ vt[:2].T
        ours = result.projections[name]
        signs = np.sign(np.sum(ours * reference, axis=0))  # components are defined up to sign
        np.testing.assert_allclose(ours * signs, reference, atol=1e-9)


def test_pca_of_points_on_a_line():
    direction = np.linspace(1.0, 2.0, 30)
    direction /= np.linalg.norm(direction)
    steps = np.arange(10, dtype=float)
    line = {"a": np.outer(steps, direction), "b": np.outer(2 * steps, direction)}
    result = fit_trajectory_pca(line, n_components=2)
    assert result.explained_variance_ratio[0] == pytest.approx(1.0, abs=1e-12)
    first = np.concatenate([result.projections["a"][:, 0], result.projections["b"][:, 0]])
    expected = np.concatenate([steps, 2 * steps])
    expected -= expected.mean()
    np.testing.assert_allclose(np.abs(first), np.abs(expected), atol=1e-9)
    assert path_length(result.projections["b"]) == pytest.approx(18.0, rel=1e-9)


def test_pca_rejects_bad_input():
    with pytest.raises(ValueError, match="trajectories"):
        fit_trajectory_pca({})
    with pytest.raises(ValueError, match="same number of coordinates"):
        fit_trajectory_pca({"a": np.zeros((3, 4)), "b": np.zeros((3, 5))})
    with pytest.raises(ValueError, match="n_components"):
        fit_trajectory_pca({"a": np.eye(3)}, n_components=4)


def test_path_length_closed_form():
    points = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 0.0]])
    assert path_length(points) == pytest.approx(9.0)
    with pytest.raises(ValueError, match="points"):
        path_length(np.zeros(3))
