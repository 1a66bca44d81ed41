"""Build a torch module from an :class:`~harness.spec.ArchSpec`.

``build(spec)`` is the only place that turns a spec into layers; its parameter count equals
``harness.spec.count_params(spec)`` for every valid spec (tested on many sampled specs).
"""

from __future__ import annotations

import torch
from torch import nn

from harness.spec import ArchSpec, ConvSpec, feature_shapes

__all__ = ["Net", "build"]


_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}  # spec.ACTIVATIONS -> module


class _ConvUnit(nn.Module):
    """conv -> (activation, BN) in the order the spec says; optional residual around it."""

    def __init__(self, in_ch: int, conv: ConvSpec, bn: str, bias: bool, activation: str = "relu"):
        super().__init__()
        if conv.separable:  # depthwise k x k (spatial, per channel) then pointwise 1 x 1 (mixing)
            self.conv = nn.Sequential(
                nn.Conv2d(in_ch, in_ch, conv.kernel, conv.stride, conv.padding, groups=in_ch, bias=False),
                nn.Conv2d(in_ch, conv.out_channels, 1, bias=bias),
            )
        else:
            self.conv = nn.Conv2d(in_ch, conv.out_channels, conv.kernel, conv.stride, conv.padding, bias=bias)
        self.bn = nn.BatchNorm2d(conv.out_channels) if bn != "none" else nn.Identity()
        self.act = _ACTIVATIONS[activation]()
        self.bn_first = bn == "before_relu"
        self.residual = conv.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = self.act(self.bn(y)) if self.bn_first else self.bn(self.act(y))
        return x + y if self.residual else y


class Net(nn.Module):
    """A CNN described by an ArchSpec: conv blocks, then flatten/GAP + linear."""

    def __init__(self, spec: ArchSpec):
        super().__init__()
        shapes = feature_shapes(spec)  # validates; raises InvalidSpecError
        layers: list[nn.Module] = []
        channels = spec.in_channels
        for block in spec.blocks:
            for conv in block.convs:
                layers.append(_ConvUnit(channels, conv, spec.bn, spec.conv_bias, spec.activation))
                channels = conv.out_channels
            if block.pool:
                layers.append(nn.MaxPool2d(2))
            if block.dropout > 0:
                layers.append(nn.Dropout(block.dropout))
        self.features = nn.Sequential(*layers)
        last_channels, last_size = shapes[-1]
        self.gap = spec.head == "gap"
        in_features = last_channels * (1 if self.gap else last_size * last_size)
        self.classifier = nn.Linear(in_features, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C, S, S)
        x = x.mean(dim=(2, 3)) if self.gap else x.flatten(1)  # (B, C) or (B, C*S*S)
        return self.classifier(x)  # (B, num_classes) logits


def build(spec: ArchSpec, seed: int | None = None) -> Net:
    """A freshly initialised network for ``spec`` (on the CPU, float32).

    With ``seed``, the initial weights are a function of (spec, seed) alone.

    Raises:
        harness.spec.InvalidSpecError: the spec does not describe a buildable network.
    """
    if seed is not None:
        torch.manual_seed(seed)
    return Net(spec)

