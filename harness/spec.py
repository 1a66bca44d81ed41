"""Architecture specs: frozen, JSON-serialisable descriptions of a CNN, and their exact size.

An :class:`ArchSpec` is pure data. The same spec feeds :func:`count_params` (no torch, no
model built) and :func:`harness.model.build`; the two agree exactly for every valid spec, which
is what lets the budget gate reject a candidate before any memory is touched.

Layer order inside a block follows the seed network: each conv is followed by its activation
and batch norm (order chosen by ``ArchSpec.bn``), then optional 2x2 max pooling, then dropout.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "ACTIVATIONS",
    "BN_PLACEMENTS",
    "HEADS",
    "ArchSpec",
    "BlockSpec",
    "ConvSpec",
    "InvalidSpecError",
    "check_fields",
    "check_names",
    "check_values",
    "count_params",
    "feature_shapes",
]

#: Where batch norm goes relative to the activation of each conv ("none": no batch norm; the names
#: say ReLU, the seed's activation, whichever `activation` is).
BN_PLACEMENTS = ("after_relu", "before_relu", "none")
#: The activation after every conv: "relu" (the seed's), "silu" (x * sigmoid(x)), "gelu" (exact,
#: erf). Smooth ones keep a gradient for negative inputs, at no cost in parameters.
ACTIVATIONS = ("relu", "silu", "gelu")
#: Classifier heads: "flatten" = flatten + linear; "gap" = global average pool + linear.
HEADS = ("flatten", "gap")


class InvalidSpecError(ValueError):
    """The spec does not describe a buildable network (e.g. the feature map shrinks to 0)."""


@dataclass(frozen=True)
class ConvSpec:
    """One 2-D convolution (square kernel)."""

    out_channels: int  # output channels (width)
    kernel: int = 3  # kernel size, pixels
    stride: int = 1  # stride, pixels
    padding: int = 1  # zero padding on each side, pixels
    residual: bool = False  # add the conv's input to its output (needs same shape)
    separable: bool = False  # depthwise kernel x kernel (stride, padding; no bias) then pointwise 1x1


@dataclass(frozen=True)
class BlockSpec:
    """A run of convs, then optional 2x2 max pooling, then dropout."""

    convs: tuple[ConvSpec, ...]
    pool: bool = True  # 2x2 max pooling (stride 2) after the convs
    dropout: float = 0.0  # dropout probability after the block, in [0, 1)


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: conv blocks, then a classifier head."""

    blocks: tuple[BlockSpec, ...]
    head: str = "flatten"  # one of HEADS
    bn: str = "after_relu"  # one of BN_PLACEMENTS
    conv_bias: bool = True  # conv layers carry a bias (the seed network's convs do)
    in_channels: int = 1  # input image channels
    input_size: int = 28  # input height = width, pixels
    num_classes: int = 10  # classifier outputs
    activation: str = "relu"  # one of ACTIVATIONS, after every conv

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data. The default activation is left out, so a ReLU spec reads
        exactly as it did before the field existed (stored specs are compared as JSON)."""
        d = asdict(self)
        if d["activation"] == "relu":
            del d["activation"]
        return d

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): equal specs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchSpec:
        """Inverse of :meth:`to_dict`. Raises InvalidSpecError on a malformed dict."""
        try:
            blocks = tuple(
                BlockSpec(
                    convs=tuple(ConvSpec(**c) for c in b["convs"]),
                    pool=bool(b.get("pool", True)),
                    dropout=float(b.get("dropout", 0.0)),
                )
                for b in d["blocks"]
            )
            rest = {k: v for k, v in d.items() if k != "blocks"}
            return cls(blocks=blocks, **rest)
        except (KeyError, TypeError) as exc:
            raise InvalidSpecError(f"malformed architecture spec: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        return cls.from_dict(json.loads(text))

    def describe(self) -> str:
        """One readable line, e.g. ``[16 16p0] M D.25 | [16 16 16s2] M ... | gap``."""
        parts = []
        for b in self.blocks:
            convs = []
            for c in b.convs:
                s = str(c.out_channels)
                if c.kernel != 3:
                    s += f"k{c.kernel}"
                if c.stride != 1:
                    s += f"s{c.stride}"
                if c.padding != (c.kernel // 2):
                    s += f"p{c.padding}"
                if c.separable:
                    s += "d"  # depthwise-separable
                if c.residual:
                    s += "r"
                convs.append(s)
            text = "[" + " ".join(convs) + "]"
            if b.pool:
                text += " M"
            if b.dropout:
                text += f" D{b.dropout:g}"
            parts.append(text)
        bn = {"after_relu": "", "before_relu": " bn-pre", "none": " no-bn"}[self.bn]
        act = "" if self.activation == "relu" else f" {self.activation}"
        return " | ".join(parts) + f" | {self.head}{bn}{act}"


def _conv_out(size: int, conv: ConvSpec) -> int:
    return (size + 2 * conv.padding - conv.kernel) // conv.stride + 1


def check_names(spec: ArchSpec) -> None:
    """Raise InvalidSpecError naming the field if the spec's head, bn placement or activation is
    not one of the known names (the checks that need no shapes)."""
    if spec.head not in HEADS:
        raise InvalidSpecError(f"unknown head {spec.head!r}; valid: {', '.join(HEADS)}")
    if spec.bn not in BN_PLACEMENTS:
        raise InvalidSpecError(f"unknown bn placement {spec.bn!r}; valid: {', '.join(BN_PLACEMENTS)}")
    if spec.activation not in ACTIVATIONS:
        raise InvalidSpecError(f"unknown activation {spec.activation!r}; valid: {', '.join(ACTIVATIONS)}")


#: The images and classes the harness trains on (MNIST): what ``in_channels``, ``input_size``
#: and ``num_classes`` must be (harness.data, harness.train and harness.export assume them).
DATA_FIELDS = {"in_channels": 1, "input_size": 28, "num_classes": 10}


def _type_name(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if isinstance(value, (int, float, str)) else type(value).__name__


def _check_field(where: str, value: Any, kind: type) -> None:
    if kind is bool:
        ok = isinstance(value, bool)
    else:  # True is an int to Python, not a width; a dropout of 0 is a number too
        ok = isinstance(value, (int, float) if kind is float else kind) and not isinstance(value, bool)
    if not ok:
        what = {bool: "true or false (a bool)", int: "an integer", float: "a number", str: "a string"}[kind]
        raise InvalidSpecError(f"{where} must be {what}, got {_type_name(value)}")


def check_fields(spec: Any) -> None:
    """Raise InvalidSpecError naming the field if ``spec`` is not an ArchSpec made of BlockSpecs
    and ConvSpecs whose fields have the types they declare (an int width, a bool flag), or
    describes other images than the harness trains on (:data:`DATA_FIELDS`). What a space
    that builds a spec by hand can get wrong and no layout check would catch: a float width
    is counted, then fails in torch; a 3-channel input fails on 1-channel images. Lists stand
    for tuples. Layouts (sizes, shapes) are :func:`feature_shapes`' to check."""
    if not isinstance(spec, ArchSpec):
        raise InvalidSpecError(f"not a harness.spec.ArchSpec: {type(spec).__name__}")
    if not isinstance(spec.blocks, (tuple, list)):
        raise InvalidSpecError(f"blocks must be a tuple of BlockSpec, got {type(spec.blocks).__name__}")
    for i, block in enumerate(spec.blocks):
        if not isinstance(block, BlockSpec):
            raise InvalidSpecError(f"blocks[{i}] must be a BlockSpec, got {type(block).__name__}")
        if not isinstance(block.convs, (tuple, list)):
            raise InvalidSpecError(f"blocks[{i}].convs must be a tuple of ConvSpec, got {type(block.convs).__name__}")
        for j, conv in enumerate(block.convs):
            if not isinstance(conv, ConvSpec):
                raise InvalidSpecError(f"blocks[{i}].convs[{j}] must be a ConvSpec, got {type(conv).__name__}")
            for name in ("out_channels", "kernel", "stride", "padding"):
                _check_field(f"blocks[{i}].convs[{j}].{name}", getattr(conv, name), int)
            for name in ("residual", "separable"):
                _check_field(f"blocks[{i}].convs[{j}].{name}", getattr(conv, name), bool)
        _check_field(f"blocks[{i}].pool", block.pool, bool)
        _check_field(f"blocks[{i}].dropout", block.dropout, float)
    for name in ("head", "bn", "activation"):
        _check_field(name, getattr(spec, name), str)
    _check_field("conv_bias", spec.conv_bias, bool)
    for name, value in DATA_FIELDS.items():
        _check_field(name, getattr(spec, name), int)
        if getattr(spec, name) != value:
            raise InvalidSpecError(f"{name} = {getattr(spec, name)}: the harness trains on MNIST's 1-channel "
                                   f"28x28 images of 10 classes ({name} must be {value})")  # fmt: skip


def check_values(spec: ArchSpec) -> None:
    """Raise InvalidSpecError naming the field if ``spec`` (fields of the right types: see
    :func:`check_fields`) holds a value that no layout makes valid: no blocks, a block without
    convs, a width, kernel or stride under 1, a negative padding, a dropout outside [0, 1) (NaN
    included). What is left to :func:`feature_shapes` depends on the layout (a feature map
    shrinking to nothing, a residual conv changing the shape)."""
    if not spec.blocks:
        raise InvalidSpecError("blocks must hold at least one BlockSpec, got none")
    for i, block in enumerate(spec.blocks):
        if not block.convs:
            raise InvalidSpecError(f"blocks[{i}].convs must hold at least one ConvSpec, got none")
        for j, conv in enumerate(block.convs):
            for name, low in (("out_channels", 1), ("kernel", 1), ("stride", 1), ("padding", 0)):
                if getattr(conv, name) < low:
                    raise InvalidSpecError(f"blocks[{i}].convs[{j}].{name} must be >= {low}, got {getattr(conv, name)}")
        if not (block.dropout >= 0.0 and block.dropout < 1.0):  # NaN fails both comparisons
            raise InvalidSpecError(f"blocks[{i}].dropout must be in [0, 1), got {block.dropout}")


def feature_shapes(spec: ArchSpec) -> list[tuple[int, int]]:
    """(channels, size) after each block; validates the spec on the way.

    Raises:
        InvalidSpecError: unknown head/bn/activation, a non-positive width or kernel, dropout outside
            [0, 1), a feature map that shrinks below 1 pixel, or a residual conv whose input
            and output shapes differ.
    """
    check_names(spec)
    if not spec.blocks:
        raise InvalidSpecError("architecture has no blocks")
    channels, size = spec.in_channels, spec.input_size
    shapes = []
    for i, block in enumerate(spec.blocks, 1):
        if not block.convs:
            raise InvalidSpecError(f"block {i} has no convs")
        if not 0.0 <= block.dropout < 1.0:
            raise InvalidSpecError(f"block {i}: dropout {block.dropout} outside [0, 1)")
        for conv in block.convs:
            if conv.out_channels < 1 or conv.kernel < 1 or conv.stride < 1 or conv.padding < 0:
                raise InvalidSpecError(f"block {i}: invalid conv {conv}")
            new_size = _conv_out(size, conv)
            if new_size < 1:
                raise InvalidSpecError(f"block {i}: feature map shrinks below 1 pixel")
            if conv.residual and (new_size != size or conv.out_channels != channels):
                raise InvalidSpecError(f"block {i}: residual conv changes the shape")
            channels, size = conv.out_channels, new_size
        if block.pool:
            size //= 2
            if size < 1:
                raise InvalidSpecError(f"block {i}: pooling shrinks the feature map below 1 pixel")
        shapes.append((channels, size))
    return shapes


def count_params(spec: ArchSpec) -> int:
    """Exact number of trainable parameters of ``harness.model.build(spec)``, without torch.

    Raises:
        InvalidSpecError: see :func:`feature_shapes`.
    """
    shapes = feature_shapes(spec)
    total = 0
    channels = spec.in_channels
    for block in spec.blocks:
        for conv in block.convs:
            if conv.separable:  # depthwise (one k x k filter per input channel), then 1 x 1
                total += channels * conv.kernel * conv.kernel + channels * conv.out_channels
            else:
                total += channels * conv.out_channels * conv.kernel * conv.kernel
            if spec.conv_bias:
                total += conv.out_channels
            if spec.bn != "none":
                total += 2 * conv.out_channels  # BN weight and bias
            channels = conv.out_channels
    last_channels, last_size = shapes[-1]
    features = last_channels * (last_size * last_size if spec.head == "flatten" else 1)
    total += features * spec.num_classes + spec.num_classes
    return total
