"""Shared fixtures: the method matrix every behavioural test runs through (PEFT-style)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import aurora

# (id, AdapterConfig options): one entry per method and per AuroRA variant worth covering.
CASES = [
    ("lora", dict(method="lora", rank=4, alpha=8.0)),
    ("moslora", dict(method="moslora", rank=4, alpha=8.0)),
    ("aurora", dict(method="aurora", rank=2, alpha=4.0)),
    ("aurora-sum", dict(method="aurora", rank=2, spline_mode="sum")),
    ("aurora-per_edge", dict(method="aurora", rank=3, spline_mode="per_edge")),
    ("aurora-woF", dict(method="aurora", rank=2, fixed_nonlinearity=False)),
    ("aurora-woL", dict(method="aurora", rank=2, learnable_nonlinearity=False)),
    ("aurora-sigmoid", dict(method="aurora", rank=2, activation="sigmoid")),
    ("aurora-static", dict(method="aurora", rank=2, form="static")),
    ("dora", dict(method="dora", rank=4, alpha=8.0)),
    ("loran", dict(method="loran", rank=4, alpha=8.0)),
]
CASE_IDS = [c[0] for c in CASES]


class TinyNet(nn.Module):
    """Two named linear layers and a head, like an attention block's query/value and a classifier."""

    def __init__(self, d: int = 12, classes: int = 3) -> None:
        super().__init__()
        self.query = nn.Linear(d, d)
        self.value = nn.Linear(d, d, bias=False)
        self.classifier = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.query(x)) + self.value(x))


class TinyConv1DNet(nn.Module):
    """TinyNet with transformers' ``Conv1D`` (GPT-2's layer type, weights stored ``(d_in, d_out)``) for query/value."""

    def __init__(self, d: int = 12, classes: int = 3) -> None:
        from transformers.pytorch_utils import Conv1D

        super().__init__()
        self.query = Conv1D(d, d)
        self.value = Conv1D(d, d)
        nn.init.normal_(self.query.bias, std=0.1)
        nn.init.normal_(self.value.weight, std=0.3)
        self.classifier = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.query(x)) + self.value(x))


def randomize_adapters(model: nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    """Give every adapter parameter (B starts at zero) a random nonzero value, so updates are visible."""
    generator = torch.Generator().manual_seed(seed)
    for _, layer in aurora.adapter_layers(model):
        for name, parameter in layer.named_parameters():
            if not name.startswith("base_layer."):
                with torch.no_grad():
                    noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * scale
                    parameter.copy_(parameter * (1 + noise) if name == "lora_magnitude" else noise)  # DoRA's m stays near ‖W0‖


@pytest.fixture(params=CASES, ids=CASE_IDS)
def case(request) -> dict:
    return dict(request.param[1])


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return TinyNet()
