"""Compact family: the levers that matter under a tight parameter budget (the default space).

Three stages of Conv-BN-ReLU, then global average pooling and one linear layer (the head
costs 10 x (last width + 1) parameters). Sampled:

* per stage: width, number of convs (1-3), kernel size (3 or 5), whether its convs are
  depthwise-separable (a depthwise k x k conv then a pointwise 1 x 1: about k*k times
  fewer parameters than a full conv of the same widths);
* between stages, the resolution drop: 2x2 max pooling, a stride-2 first conv of the next
  stage, or none (the next stage keeps the resolution);
* residual connections per stage, around the 2nd and later convs (the only ones whose input
  already has the stage's shape);
* one dropout rate, applied after stages 1 and 2.

A parameter that would not change the network is never suggested, so neither TPE nor the
importance plot sees dead dimensions: ``s{s}_residual`` only with 2+ convs, and
``s1_separable`` only with 2+ convs in stage 1 (its first conv sees the 1-channel image, where
a depthwise conv is pointless: it is always a full conv).

The seed's 19,290-parameter network is not a point of this space: it uses a different width
per conv, conv biases with batch norm after the ReLU, an unpadded conv, a stride-2 conv *and*
max pooling at one drop, four resolution drops and a flatten head. Opening those choices here
would add a dozen dimensions that only the seed needs, so it stays the study's fixed baseline,
built directly (see README, "Study files").
"""

from __future__ import annotations

import optuna

from harness.spec import ArchSpec, BlockSpec, ConvSpec

__all__ = ["DROPS", "KERNELS", "STAGE_WIDTHS", "suggest"]

STAGE_WIDTHS = ((4, 6, 8, 12, 16), (8, 12, 16, 24, 32), (8, 12, 16, 24, 32, 48))  # per stage
KERNELS = (3, 5)
DROPS = ("max", "conv", "none")  # how the resolution falls between stages


def suggest(trial: optuna.trial.BaseTrial) -> ArchSpec:
    """Sample one architecture of the compact family."""
    dropout = trial.suggest_float("dropout", 0.0, 0.15, step=0.05)
    blocks: list[BlockSpec] = []
    strided = False  # the previous drop is this stage's stride-2 first conv
    for s, widths in enumerate(STAGE_WIDTHS, 1):
        width = trial.suggest_categorical(f"s{s}_width", widths)
        n = trial.suggest_int(f"s{s}_convs", 1, 3)
        kernel = trial.suggest_categorical(f"s{s}_kernel", KERNELS)
        separable = (s > 1 or n > 1) and trial.suggest_categorical(f"s{s}_separable", (False, True))
        residual = n > 1 and trial.suggest_categorical(f"s{s}_residual", (False, True))
        convs = []
        for j in range(n):
            convs.append(
                ConvSpec(
                    width,
                    kernel=kernel,
                    stride=2 if (j == 0 and strided) else 1,
                    padding=kernel // 2,
                    residual=residual and j > 0,
                    separable=separable and not (s == 1 and j == 0),
                )
            )
        last = s == len(STAGE_WIDTHS)
        drop = "none" if last else trial.suggest_categorical(f"drop{s}", DROPS)
        strided = drop == "conv"
        blocks.append(BlockSpec(convs=tuple(convs), pool=drop == "max", dropout=0.0 if last else dropout))
    return ArchSpec(blocks=tuple(blocks), head="gap", bn="before_relu", conv_bias=False)
