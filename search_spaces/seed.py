"""Seed family: the reference network's 3-block VGG-style layout with every choice opened up.

Sampled per study trial: number of convs per block, the width and padding of every conv,
whether each block ends in a stride-2 conv and/or 2x2 max pooling, one dropout rate, batch
norm before or after the ReLU, and the head (flatten + linear, or global average pooling).
The seed's 19,290-parameter network is the point ``REFERENCE_PARAMS``; widths down to 4
channels give networks far smaller than it.
"""

from __future__ import annotations

import optuna

from harness.spec import ArchSpec, BlockSpec, ConvSpec

__all__ = ["MAX_CONVS", "REFERENCE_PARAMS", "WIDTHS", "suggest"]

WIDTHS = (4, 8, 12, 16, 20, 24, 32)  # channel choices for every conv
MAX_CONVS = (3, 3, 2)  # most convs in blocks 1, 2, 3

#: The seed network: block 1 Conv(1->16, p1), Conv(16->16, p0), pool, dropout;
#: block 2 Conv(16->16), Conv(16->32), Conv(32->16, stride 2), pool, dropout;
#: block 3 Conv(16->32), pool, dropout; flatten; Linear(32->10). ReLU then BN. 19,290 params.
REFERENCE_PARAMS = {
    "b1_convs": 2,
    "b1_c1_width": 16, "b1_c1_pad": 1,
    "b1_c2_width": 16, "b1_c2_pad": 0,
    "b1_stride2": False, "b1_pool": True,
    "b2_convs": 3,
    "b2_c1_width": 16, "b2_c1_pad": 1,
    "b2_c2_width": 32, "b2_c2_pad": 1,
    "b2_c3_width": 16, "b2_c3_pad": 1,
    "b2_stride2": True, "b2_pool": True,
    "b3_convs": 1,
    "b3_c1_width": 32, "b3_c1_pad": 1,
    "b3_stride2": False, "b3_pool": True,
    "dropout": 0.25,
    "bn": "after_relu",
    "head": "flatten",
}  # fmt: skip


def suggest(trial: optuna.trial.BaseTrial) -> ArchSpec:
    """Sample one architecture of the seed family."""
    dropout = trial.suggest_float("dropout", 0.0, 0.3, step=0.05)
    blocks = []
    for b, max_convs in enumerate(MAX_CONVS, 1):
        n = trial.suggest_int(f"b{b}_convs", 1, max_convs)
        convs = [
            ConvSpec(
                out_channels=trial.suggest_categorical(f"b{b}_c{c}_width", WIDTHS),
                kernel=3,
                padding=trial.suggest_categorical(f"b{b}_c{c}_pad", (0, 1)),
            )
            for c in range(1, n + 1)
        ]
        if trial.suggest_categorical(f"b{b}_stride2", (False, True)):
            last = convs[-1]
            convs[-1] = ConvSpec(last.out_channels, last.kernel, stride=2, padding=last.padding)
        pool = trial.suggest_categorical(f"b{b}_pool", (False, True))
        blocks.append(BlockSpec(convs=tuple(convs), pool=pool, dropout=dropout))
    return ArchSpec(
        blocks=tuple(blocks),
        head=trial.suggest_categorical("head", ("flatten", "gap")),
        bn=trial.suggest_categorical("bn", ("after_relu", "before_relu")),
    )
