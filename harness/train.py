"""The training engine: whole-batch augmentation on the device, no per-step host syncs.

Data stays on the training device as uint8 (see :mod:`harness.data`); each step slices a
random permutation, converts and augments the whole batch there (one ``affine_grid`` +
``grid_sample`` with per-image random rotation/shift/zoom), normalises, and steps. The loss
is summed on the device and read once per epoch, so the host never waits on the device
inside the epoch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import DEVICE_NAME, TrainConfig
from harness.data import MnistSplits

__all__ = [
    "MNIST_MEAN",
    "MNIST_STD",
    "DivergedError",
    "FitResult",
    "augment",
    "cpu_model",
    "device_name",
    "eval_batch_size",
    "evaluate",
    "fit",
    "fit_lockstep",
    "fp32_precision",
    "machine_label",
    "normalize",
    "precision_settings",
    "resolve_device",
    "seconds_per_step",
    "seed_everything",
]

MNIST_MEAN = 0.1307  # mean pixel of the training images, [0, 1] scale
MNIST_STD = 0.3081  # pixel standard deviation, [0, 1] scale


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class CpuOutOfMemoryError(RuntimeError):
    """The CPU allocator could not allocate a tensor. PyTorch raises a plain RuntimeError for
    it (CUDA has ``torch.OutOfMemoryError``); :func:`cpu_out_of_memory` tells it apart."""


def cpu_out_of_memory(exc: BaseException) -> CpuOutOfMemoryError | None:
    """``exc`` as a :class:`CpuOutOfMemoryError` when it is PyTorch's CPU allocation failure."""
    text = str(exc)
    # posix_memalign failed (Linux, macOS), or malloc on Windows/Android
    if isinstance(exc, RuntimeError) and any(f"DefaultCPUAllocator: {m}" in text for m in ("can't allocate memory", "not enough memory")):
        detail = text.split("DefaultCPUAllocator: ", 1)[1].splitlines()[0]
        return CpuOutOfMemoryError(f"CPU out of memory: {detail}")
    return None


@dataclass
class FitResult:
    val_acc: float  # accuracy on the validation split after the last epoch run
    epochs_run: int
    seconds: float  # wall time of the training loop, evaluation included (fit_lockstep: the run's own epochs only)
    history: list[float] = field(default_factory=list)  # validation accuracy per epoch
    train_loss: list[float] = field(default_factory=list)  # mean training loss per epoch
    # with cfg.ema_decay: the validation accuracy per epoch of the trained (not averaged) weights,
    # the same run's paired comparison; ``history`` scores the averaged ones
    raw_history: list[float] = field(default_factory=list)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given, if this machine has it.

    Raises:
        RuntimeError: an unknown device, or one this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE_NAME.fullmatch(name):  # "cpu:5" or "cuda:x" would pass torch or fail with its words
        raise RuntimeError("must be auto, cpu, cuda, cuda:N or mps")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RuntimeError("CUDA is not available on this machine")
        if device.index is not None and device.index >= count:
            raise RuntimeError(f"this machine has {count} CUDA device(s): cuda:0..cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise RuntimeError("the harness trains on cpu, cuda or mps")
    return device


def device_name(device: torch.device) -> str:
    """Human-readable device, e.g. ``NVIDIA H100 80GB HBM3``, ``mps (arm64)`` or ``cpu (AMD EPYC
    7B13, x86_64, 2 threads)``: a CPU's model too where the system names it, since speeds differ
    between CPUs of one architecture."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":  # Apple's GPU: not scored with a CPU's kernels (export checks by this label)
        return f"mps ({platform.machine()})"
    model = cpu_model()
    named = f"{model}, " if model not in (platform.machine(), platform.processor()) else ""
    threads = torch.get_num_threads()
    return f"cpu ({named}{platform.machine()}, {threads} thread{'' if threads == 1 else 's'})"


def machine_label(device_label: str, cpu: str) -> str:
    """``device_label`` with the CPU model ``cpu`` in front where the label lacks it: the labels
    recorded before they named the model (2026-11-27) read "cpu (x86_64, 2 threads)"."""
    return device_label if cpu in device_label else f"{cpu}, {device_label}"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (machines differ: an AMD EPYC, an Intel Xeon
    with AMX), else what ``platform`` knows."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNGs (init, dropout) and return a CPU generator for data order."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def normalize(x_uint8_or_unit: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 28, 28) or float [0, 1] (B, 1, 28, 28) -> normalised float (B, 1, 28, 28)."""
    x = x_uint8_or_unit
    if x.dtype == torch.uint8:
        x = x.unsqueeze(1).float().div_(255.0)
    return (x - MNIST_MEAN) / MNIST_STD


def augment(x: torch.Tensor, rotation: float, translate: float, scale: float) -> torch.Tensor:
    """Random affine per image, for a whole batch in one ``grid_sample``.

    Args:
        x: float images in [0, 1], (B, 1, H, W), background 0.
        rotation: max rotation, degrees (uniform in +-rotation).
        translate: max shift as a fraction of the side (uniform in +-translate, per axis).
        scale: max zoom (factor uniform in [1 - scale, 1 + scale]).
    """
    if rotation == 0 and translate == 0 and scale == 0:
        return x
    b = x.shape[0]
    u = torch.rand(b, 4, device=x.device, dtype=x.dtype) * 2 - 1  # (B, 4) in [-1, 1)
    angle = u[:, 0] * math.radians(rotation)
    zoom = 1 + u[:, 1] * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # affine_grid maps output coords to input coords in [-1, 1]: a shift of f*side is 2f there.
    theta = torch.stack(
        [torch.stack([cos, -sin, u[:, 2] * 2 * translate], 1), torch.stack([sin, cos, u[:, 3] * 2 * translate], 1)],
        1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _bf16(device: torch.device, amp: str) -> bool:
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


def _autocast(device: torch.device, amp: str):
    """bf16 autocast context for ``amp`` on ``device`` ("auto": CUDA only), else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=_bf16(device, amp))


@contextlib.contextmanager
def fp32_precision(mode: str):
    """Within the block, float32 matmuls and cuDNN convolutions on CUDA run in ``mode``:
    "ieee" (true float32) or "tf32" (10-bit mantissa inputs; this torch's default for
    convolutions). The previous settings come back afterwards. CPU kernels ignore both."""
    # Every CUDA backend together (rnn too): mixed settings make torch's legacy allow_tf32
    # flags, which inductor still reads, raise "mix of the legacy and new APIs".
    backends = [torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn]
    saved = [b.fp32_precision for b in backends]
    for b in backends:
        b.fp32_precision = mode
    try:
        yield
    finally:
        for b, old in zip(backends, saved):
            b.fp32_precision = old


def precision_settings(cfg: TrainConfig, device: torch.device) -> dict[str, str]:
    """What a trial's numbers were computed in, for the trial and the model card."""
    cuda = device.type == "cuda"
    return {
        "train_autocast": "bf16" if _bf16(device, cfg.amp) else "off",
        "train_fp32": cfg.fp32_precision if cuda else "ieee",
        "scoring": "float32 (ieee), no autocast",
    }


def eval_batch_size(device: torch.device, requested: int = 0) -> int:
    """``requested`` images per evaluation batch, or for 0 the device's best: 2000 on a GPU
    (few launches); 256 on a CPU, where a 2000-image batch's activations (~100 MB for the
    seed network) fall out of cache and score 5,000 images 2.3x slower (2-core Intel Xeon,
    results/raw_options-cpu.md)."""
    if requested > 0:
        return requested
    return 256 if device.type == "cpu" else 2000


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 0) -> float:
    """Accuracy of ``model`` on uint8 images ``x`` (N, 28, 28) with labels ``y``; one host sync.

    Always true float32 (no autocast, IEEE matmuls and convolutions on CUDA too), so that
    validation and test are scored alike and an exported float32 file reproduces the number.
    ``batch_size`` 0 picks the device's best (:func:`eval_batch_size`).
    """
    if len(x) == 0:
        return float("nan")
    batch_size = eval_batch_size(x.device, batch_size)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    with fp32_precision("ieee"):
        for i in range(0, len(x), batch_size):
            logits = model(normalize(x[i : i + batch_size]))
            correct += (logits.argmax(1) == y[i : i + batch_size]).sum()
    model.train(was_training)
    return correct.item() / len(x)


def _optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # BN affine parameters and biases get no weight decay: decaying them only hurts small nets.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = {"fused": True} if device.type == "cuda" else {}
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), **fused)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, **fused)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "onecycle":
        # OneCycleLR divides by its phase lengths: with a handful of steps (tiny data, big
        # batches) they round to zero. Planning for at least 8 steps only leaves the tail
        # of the cycle unused in that case.
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=max(total_steps, 8), pct_start=0.25, cycle_momentum=False
        )
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def _augments(cfg: TrainConfig) -> bool:
    return bool(cfg.rotation or cfg.translate or cfg.scale)


def _step_loss(
    model: nn.Module, data: MnistSplits, cfg: TrainConfig, teacher: nn.Module | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``step_loss(idx)``: the loss of the augmented training images ``idx``, ready for backward.

    With a ``teacher`` (knowledge distillation, Hinton et al. 2015) the loss is
    ``(1 - w) * CE(labels) + w * T^2 * KL(teacher || model)`` on both networks' logits divided by
    ``T`` (w = ``cfg.distill_weight``, T = ``cfg.distill_temperature``); the T^2 keeps the soft
    term's gradients on the scale of the hard one's. The teacher sees the same augmented images.

    With ``cfg.compile`` other than "off" the whole step (gather, augmentation, forward, loss
    and, through AOTAutograd, the backward) is one ``torch.compile`` graph. Evaluation keeps
    calling the eager ``model`` (same parameters), so switching to eval mode never recompiles.
    """
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    device = data.device
    weight, temp = cfg.distill_weight, cfg.distill_temperature

    def step_loss(idx: torch.Tensor) -> torch.Tensor:
        x = data.train_x[idx].unsqueeze(1).float().div_(255.0)  # (B, 1, 28, 28) in [0, 1]
        # A 1-channel NCHW batch is already channels_last: the weights' format decides.
        x = normalize(augment(x, cfg.rotation, cfg.translate, cfg.scale))
        with _autocast(device, cfg.amp):
            logits = model(x)
            loss = loss_fn(logits, data.train_y[idx])
        if teacher is None:
            return loss
        with torch.no_grad():
            soft_targets = F.log_softmax(teacher(x).float() / temp, dim=1)
        soft = F.kl_div(F.log_softmax(logits.float() / temp, dim=1), soft_targets, reduction="batchmean", log_target=True)
        return (1 - weight) * loss + weight * temp * temp * soft

    if cfg.compile == "off":
        return step_loss
    # Every trial is a new architecture: drop the previous trial's graphs, or dynamo's
    # per-function cache limit (8) would silently send later trials back to eager mode.
    torch.compiler.reset()
    mode = None if cfg.compile == "default" else cfg.compile
    return torch.compile(step_loss, mode=mode, dynamic=False)


class _WeightAverage:
    """An exponential moving average of a model's parameters and floating-point buffers (BN
    statistics too, so that the averaged weights are scored with statistics that match them),
    bias-corrected as in Adam (Kingma & Ba 2015): after n updates it is the mean of the n weights
    seen, each weighing decay**age, so the initial weights weigh nothing special (a plain EMA
    started from them would keep decay**n of them: 4 % after 15,600 steps at 0.9998). Integer
    buffers (BN's batch counter) are copied, not averaged.

    Not torch's AveragedModel: its update reads a CPU step counter onto the device every step,
    a host sync per step on CUDA; here the rate is a host float and the update one fused lerp.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.module = copy.deepcopy(model).requires_grad_(False)
        # (averaged, model's) tensor pairs, fixed: the model's tensors change in place
        self._pairs = list(zip([*self.module.parameters(), *self.module.buffers()],
                               [*model.parameters(), *model.buffers()], strict=True))  # fmt: skip
        floats = [(a, c) for a, c in self._pairs if a.is_floating_point()]
        self._averaged, self._current = [a for a, _ in floats], [c for _, c in floats]
        self._others = [(a, c) for a, c in self._pairs if not a.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        """After each optimiser step of the model given at construction."""
        self.updates += 1
        # A_n = A_{n-1} + (1 - d) / (1 - d**n) * (w_n - A_{n-1}): rate 1 (a copy) at n = 1
        rate = (1 - self.decay) / (1 - self.decay**self.updates)
        # one fused kernel per device and dtype (what torch.optim.swa_utils' EMA uses too)
        torch._foreach_lerp_(self._averaged, self._current, rate)
        for a, c in self._others:
            a.copy_(c)

    @torch.no_grad()
    def exchange(self) -> None:
        """Swap the values of the model's and the average's parameters and buffers, in place: the
        tensors stay the same objects, so optimizers, compiled graphs and callbacks that hold
        the model see the other weights. Twice restores both."""
        for a, c in self._pairs:
            kept = a.clone()
            a.copy_(c)
            c.copy_(kept)


def fit(
    model: nn.Module,
    data: MnistSplits,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    teacher: nn.Module | None = None,
    on_raw_epoch: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``data.train_*`` and score ``data.val_*`` after every epoch.

    ``teacher`` (:func:`harness.teacher.load_teacher`, on ``data.device``) is required when
    ``cfg.teacher`` names one, and then also trains ``model`` through its predictions.

    The model is moved to ``data.device``. ``on_epoch(epoch, val_acc)`` (epochs count from 1)
    may raise to stop training early, e.g. ``optuna.TrialPruned``; the exception propagates.

    With ``cfg.clean_epochs`` = k > 0 the last k epochs (all of them if k >= ``cfg.epochs``, as
    in a retrain with fewer epochs) train on the training images as they are (no rotation,
    shift or zoom), the distribution the test images come from; the schedule, the batches'
    order and everything else are unchanged.

    With ``cfg.ema_decay`` > 0 an exponential moving average of the weights is updated after
    every step (it does not change the training itself). Each epoch the trained weights are
    scored first (``result.raw_history``; ``on_raw_epoch(epoch, val_acc)`` is called with them
    in ``model``), then the averaged ones are put in ``model``, scored (``result.history``,
    ``result.val_acc``) and passed to ``on_epoch``. ``model`` ends holding the averaged
    weights: they are what the run produced, and what is stored and exported.

    Raises:
        DivergedError: the mean training loss of an epoch is NaN or infinite.
    """
    result = FitResult(val_acc=float("nan"), epochs_run=0, seconds=0.0)
    # the clock runs through on_epoch too: a run's seconds, as they always were
    for result in _epochs(model, data, cfg, seed=seed, teacher=teacher, on_raw_epoch=on_raw_epoch, own_clock=False):
        if on_epoch is not None:
            on_epoch(result.epochs_run, result.val_acc)  # may stop the run here
    return result


def fit_lockstep(
    models: list[nn.Module],
    data: MnistSplits,
    cfg: TrainConfig,
    *,
    seeds: list[int],
    on_epoch: Callable[[int, float], None] | None = None,
    teacher: nn.Module | None = None,
    on_raw_epoch: Callable[[int, float], None] | None = None,
) -> list[FitResult]:
    """Train ``models[i]`` with ``seeds[i]`` (several seeds of one candidate), one epoch of each
    in turn, and report their mean validation accuracy after each epoch.

    Each run is trained as :func:`fit` alone would train it with its seed: it keeps its own
    random streams (batch order, augmentation, dropout), saved and restored around the other
    runs' epochs, so the first run of a lockstep is a single run of its seed (bit for bit on a
    CPU; CUDA kernels are not bit-deterministic run to run anyway). ``on_epoch(epoch, mean
    val_acc)`` is called once all runs finished the epoch and may raise to stop them all
    (``optuna.TrialPruned``); with weight averaging ``on_raw_epoch(epoch, mean of the trained
    weights' scores)`` comes just before it (unlike :func:`fit`'s, with the averaged weights
    in the models). Each result's ``seconds`` is that run's own training and scoring time,
    without the other runs' epochs or the callbacks.

    Raises:
        DivergedError: any run's mean training loss of an epoch is NaN or infinite.
    """
    runs = [_epochs(m, data, cfg, seed=s, teacher=teacher) for m, s in zip(models, seeds, strict=True)]
    results: list[FitResult] = []
    try:
        for epoch in range(1, cfg.epochs + 1):
            results = [next(run) for run in runs]
            if on_raw_epoch is not None and results[0].raw_history:
                on_raw_epoch(epoch, sum(r.raw_history[-1] for r in results) / len(results))
            if on_epoch is not None:
                on_epoch(epoch, sum(r.val_acc for r in results) / len(results))
    finally:
        for run in runs:
            run.close()
    return results


def _rng_states(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """torch's global random state on the CPU and on ``device`` (init, dropout, augmentation)."""
    if device.type == "cuda":
        return torch.get_rng_state(), torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.get_rng_state(), torch.mps.get_rng_state()
    return torch.get_rng_state(), None


def _set_rng_states(device: torch.device, states: tuple[torch.Tensor, torch.Tensor | None]) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)
    elif device.type == "mps":
        torch.mps.set_rng_state(states[1])


def _epochs(
    model: nn.Module,
    data: MnistSplits,
    cfg: TrainConfig,
    *,
    seed: int,
    teacher: nn.Module | None = None,
    on_raw_epoch: Callable[[int, float], None] | None = None,
    own_clock: bool = True,
) -> Iterator[FitResult]:
    """The engine of :func:`fit` (see there): yields the run's result, updated, after each
    epoch's scoring, ``model`` then holding the scored (with weight averaging: the averaged)
    weights. The random streams the run draws from are its own across a yield, whatever the
    caller draws in between. ``result.seconds`` runs from the end of the set-up; with
    ``own_clock`` it stops while the caller holds the run (other runs' epochs, callbacks)."""
    device = data.device
    gen = seed_everything(seed)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=fmt).train()
    n = len(data.train_x)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = n // bs  # drop the ragged last batch: static shapes, and a new perm each epoch
    opt = _optimizer(model, cfg, device)
    sched = _scheduler(opt, cfg, cfg.epochs * steps_per_epoch)
    if bool(cfg.teacher) != (teacher is not None):
        raise ValueError(f"cfg.teacher = {cfg.teacher!r} but fit() was given {'a' if teacher else 'no'} teacher network")
    step_loss = _step_loss(model, data, cfg, teacher)
    augmented_epochs = max(cfg.epochs - cfg.clean_epochs, 0)  # then the images as they are: see clean_epochs
    average = _WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    graphs = cfg.compile == "reduce-overhead" and device.type == "cuda"
    result = FitResult(val_acc=float("nan"), epochs_run=0, seconds=0.0)
    start, held = time.perf_counter(), 0.0  # held: seconds the caller held the run (own_clock)
    for epoch in range(1, cfg.epochs + 1):
        if epoch == augmented_epochs + 1 and _augments(cfg):
            # A second step (a second graph when compiled), built only when the run gets here
            step_loss = _step_loss(model, data, dataclasses.replace(cfg, rotation=0.0, translate=0.0, scale=0.0), teacher)
        perm = torch.randperm(n, generator=gen).to(device, non_blocking=True)
        loss_sum = torch.zeros((), device=device)
        with fp32_precision(cfg.fp32_precision):  # scoring below is always IEEE float32
            for i in range(steps_per_epoch):
                if graphs:  # a new iteration: CUDA-graph outputs of the last one may be reused
                    torch.compiler.cudagraph_mark_step_begin()
                loss = step_loss(perm[i * bs : (i + 1) * bs])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if average is not None:
                    average.update()  # no host sync: the decay and the count are host values
                loss_sum += loss.detach()
        mean_loss = loss_sum.item() / steps_per_epoch  # the one host sync of the epoch
        result.train_loss.append(mean_loss)
        if not math.isfinite(mean_loss):
            result.seconds = time.perf_counter() - start - held
            raise DivergedError(f"training loss became {mean_loss} in epoch {epoch} (seed {seed})")
        if average is not None:
            raw_acc = evaluate(model, data.val_x, data.val_y, cfg.eval_batch_size)
            result.raw_history.append(raw_acc)
            if on_raw_epoch is not None:
                on_raw_epoch(epoch, raw_acc)
            average.exchange()  # the averaged weights in model; back after the yield
        val_acc = evaluate(model, data.val_x, data.val_y, cfg.eval_batch_size)
        result.history.append(val_acc)
        result.val_acc, result.epochs_run = val_acc, epoch
        result.seconds = time.perf_counter() - start - held
        states, handed = _rng_states(device), time.perf_counter()
        yield result  # the caller may stop the run here: model then holds the averaged weights
        _set_rng_states(device, states)
        if own_clock:
            held += time.perf_counter() - handed
        if average is not None and epoch < cfg.epochs:
            average.exchange()  # training goes on from the trained weights


def seconds_per_step(
    spec, cfg: TrainConfig, device: torch.device, *, steps: int = 4, rounds: int = 3, threads: int = 0,
    teacher: nn.Module | None = None,
) -> float:
    """Wall seconds of one training step of ``spec`` under ``cfg`` on ``device``, timed with
    the real engine (:func:`fit`) on random images: one warm-up epoch of 2 steps, then the
    fastest of ``rounds`` epochs of ``steps`` (a moment's load from another process would
    otherwise set the estimate for the whole run); with ``teacher``, distilled from it (else
    without one, whatever ``cfg`` says). For rough duration estimates, not benchmarks."""
    from harness.model import build

    bs = cfg.batch_size
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (bs * steps, 28, 28), dtype=torch.uint8, generator=gen).to(device)
    labels = torch.randint(0, 10, (bs * steps,), generator=gen).to(device)
    empty = images[:0]
    # clean_epochs = 0: the timed epoch is an augmented one, like most of a run's
    quick = dataclasses.replace(cfg, epochs=1, compile="off", clean_epochs=0,
                                teacher=cfg.teacher if teacher is not None else "")  # fmt: skip
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        warm = MnistSplits(images[: 2 * bs], labels[: 2 * bs], empty, labels[:0], empty, labels[:0])
        fit(build(spec), warm, quick, teacher=teacher)
        data = MnistSplits(images, labels, empty, labels[:0], empty, labels[:0])
        return min(fit(build(spec), data, quick, teacher=teacher).seconds for _ in range(rounds)) / steps
    finally:
        torch.set_num_threads(saved)
