"""The demo networks (PyTorch): an MNIST-style MLP, a small CNN and a TransformerEncoder, with seeded weights."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build with PyTorch's default initialisers drawn from ``seed``, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build()
    return module.eval()


def mlp(seed: int = 0) -> nn.Module:
    """Linear(784,128)-ReLU-Linear(128,10) on x [N, 784] FP32 -> logits [N, 10]."""
    return _seeded(lambda: nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)), seed)


def cnn(seed: int = 0) -> nn.Module:
    """Conv 3->32->64 (3x3, ReLU, 2x2 max-pool each) + Linear to 10 on images [N, 3, 64, 64] (~3 ms per image
    on one CPU core in eager PyTorch)."""
    return _seeded(
        lambda: nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 16 * 16, 10),
        ),
        seed,
    )


def transformer(seed: int = 0) -> nn.Module:
    """Two TransformerEncoder layers, d_model 128, 4 heads, on x [N, 128, 128] (sequence 128) -> same shape."""

    def build() -> nn.Module:
        layer = nn.TransformerEncoderLayer(128, nhead=4, dim_feedforward=512, dropout=0.0, batch_first=True)
        return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)

    return _seeded(build, seed)
