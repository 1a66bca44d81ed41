"""The training engine on CPU: augmentation, evaluation, fitting, divergence (synthetic data)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from harness.config import TrainConfig
from harness.data import load_splits
from harness.model import build
from harness.train import DivergedError, augment, evaluate, fit, normalize
from search_spaces import baseline_spec, get_search_space


def test_augment_identity_when_disabled_and_shape_preserving():
    x = torch.rand(5, 1, 28, 28)
    assert augment(x, 0, 0, 0) is x
    y = augment(x, 15.0, 0.1, 0.1)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert not torch.equal(x, y)


def test_augment_draws_different_params_per_image():
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0  # the same square in every image
    y = augment(x, 30.0, 0.2, 0.2)
    flat = y.flatten(1)
    assert len({tuple(r.round(decimals=3).tolist()) for r in flat}) == 8


def test_augment_translation_moves_content():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 14, 14] = 1.0
    torch.manual_seed(0)
    y = augment(x.repeat(64, 1, 1, 1), 0.0, 0.2, 0.0)
    cols = (y[:, 0].sum(1) > 0.2).float().argmax(1)  # column of the brightest spot per image
    assert cols.min() < 14 < cols.max()


def test_normalize_uint8_matches_float_path():
    x = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    a = normalize(x)
    b = normalize(x.unsqueeze(1).float() / 255)
    assert a.shape == (3, 1, 28, 28) and torch.allclose(a, b)


def test_fit_learns_synthetic_data_and_reports_each_epoch(synthetic_root):
    data = load_splits(synthetic_root, val_size=100)
    model = build(get_search_space("seed").baseline_spec())
    seen = []
    cfg = TrainConfig(epochs=3, batch_size=50, lr=0.05, rotation=5, translate=0.05, scale=0.05)
    result = fit(model, data, cfg, seed=1, on_epoch=lambda e, acc: seen.append((e, acc)))
    assert [e for e, _ in seen] == [1, 2, 3] and result.epochs_run == 3
    assert result.history == [a for _, a in seen] and result.val_acc == seen[-1][1]
    assert result.val_acc > 0.5  # 10 classes: chance is 0.1
    assert evaluate(model, data.test_x, data.test_y) > 0.5
    assert all(math.isfinite(v) for v in result.train_loss)


def test_fit_is_reproducible_for_a_seed(synthetic_root):
    data = load_splits(synthetic_root, val_size=100)
    spec = get_search_space("seed").baseline_spec()
    cfg = TrainConfig(epochs=1, batch_size=50)
    a = fit(build(spec, seed=5), data, cfg, seed=5)
    b = fit(build(spec, seed=5), data, cfg, seed=5)
    assert a.train_loss == b.train_loss and a.val_acc == b.val_acc


def test_on_epoch_exception_stops_training(synthetic_root):
    data = load_splits(synthetic_root, val_size=100)

    class Stop(Exception):
        pass

    def stop(epoch, acc):
        raise Stop

    with pytest.raises(Stop):
        fit(build(get_search_space("seed").baseline_spec()), data, TrainConfig(epochs=5, batch_size=50), on_epoch=stop)


class NaNNet(nn.Module):
    """Logits that are NaN from the first step: a run that diverges at once."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.full((x.shape[0], 10), float("nan")) * self.w


def test_nan_loss_raises_diverged(synthetic_root):
    data = load_splits(synthetic_root, val_size=100)

    with pytest.raises(DivergedError, match="nan"):
        fit(NaNNet(), data, TrainConfig(epochs=2, batch_size=50))


def test_fit_with_a_single_step_per_epoch(synthetic_root):
    """Tiny data and a big batch: OneCycleLR must not divide by a zero-length phase."""
    from harness.config import TrainConfig
    from harness.data import load_splits
    from harness.model import build
    from harness.train import fit
    from search_spaces import baseline_spec

    data = load_splits(synthetic_root, "cpu", val_size=100, train_limit=200)
    result = fit(build(baseline_spec(), seed=0), data, TrainConfig(epochs=2, batch_size=256), seed=0)
    assert result.epochs_run == 2 and len(result.train_loss) == 2


def _bias_corrected_average(steps: list[list[torch.Tensor]], decay: float) -> list[torch.Tensor | None]:
    """sum_k decay**(n - k) * w_k / sum_k decay**(n - k), k = 1..n, per float tensor (None otherwise)."""
    n = len(steps)
    norm = sum(decay ** (n - k) for k in range(1, n + 1))
    return [sum(decay ** (n - k) * step[i] for k, step in enumerate(steps, 1)) / norm
            if steps[0][i].is_floating_point() else None for i in range(len(steps[0]))]  # fmt: skip


def test_weight_averaging_scores_and_keeps_the_average_without_changing_training(synthetic_root):
    """train.ema_decay: training is the same run as without it (same losses, the trained weights'
    scores in raw_history, seen by on_raw_epoch with them in the model), each epoch's score and
    on_epoch see the averaged weights in the model, and the model ends holding them: the
    bias-corrected exponential average of the weights after every step, BN statistics included
    (their batch counter copied), recomputed here from the run without averaging; a run stopped
    by on_epoch (pruned) ends holding that epoch's average."""
    data = load_splits(synthetic_root, val_size=100)
    spec = get_search_space("seed").baseline_spec()
    cfg = TrainConfig(epochs=2, batch_size=50, lr=0.05)
    decay = 0.8

    plain_model = build(spec, seed=5)
    after_step: list[list[torch.Tensor]] = []

    def snapshot(_opt, _args, _kwargs) -> None:
        after_step.append([t.detach().clone() for t in (*plain_model.parameters(), *plain_model.buffers())])

    hook = register_optimizer_step_post_hook(snapshot)
    try:
        plain = fit(plain_model, data, cfg, seed=5)
    finally:
        hook.remove()
    assert plain.raw_history == [] and len(after_step) > 2

    def scorer(into):  # what the model holds when the callback runs
        return lambda e, a: into.append((e, a, evaluate(model, data.val_x, data.val_y)))

    model = build(spec, seed=5)
    seen, raw_seen = [], []
    averaged = fit(model, data, dataclasses.replace(cfg, ema_decay=decay), seed=5,
                   on_epoch=scorer(seen), on_raw_epoch=scorer(raw_seen))  # fmt: skip
    assert averaged.train_loss == plain.train_loss  # training went on from the trained weights each epoch
    assert averaged.raw_history == plain.history
    assert raw_seen == [(e, a, a) for e, a in enumerate(plain.history, 1)]  # the trained weights in the model
    assert seen == [(e, a, a) for e, a in enumerate(averaged.history, 1)]  # the averaged ones
    assert averaged.val_acc == averaged.history[-1] == evaluate(model, data.val_x, data.val_y)

    final = [*model.parameters(), *model.buffers()]
    trained = after_step[-1]
    checked = 0
    for got, want, last in zip(final, _bias_corrected_average(after_step, decay), trained, strict=True):
        if want is None:  # an integer buffer (BN's batch counter): the trained one, not averaged
            assert torch.equal(got, last)
        else:
            assert torch.allclose(got, want, atol=1e-6), "the model does not hold the bias-corrected average"
            checked += not torch.allclose(want, last, atol=1e-4)  # and that average is not the last weights
    assert checked >= len(final) // 2
    mine, theirs = dict(model.named_buffers()), dict(plain_model.named_buffers())
    means = [n for n in mine if n.endswith("running_mean")]
    assert means and not torch.equal(mine[means[0]], theirs[means[0]])  # BN statistics are averaged too

    class Stop(Exception):
        pass

    def stop(_epoch, _acc):
        raise Stop

    stopped = build(spec, seed=5)
    with pytest.raises(Stop):
        fit(stopped, data, dataclasses.replace(cfg, ema_decay=decay), seed=5, on_epoch=stop)
    first_epoch = after_step[: len(after_step) // cfg.epochs]
    for got, want in zip([*stopped.parameters(), *stopped.buffers()], _bias_corrected_average(first_epoch, decay)):
        assert want is None or torch.allclose(got, want, atol=1e-6), "a stopped run must hold its average"


def test_weight_averaging_decay_is_checked(tmp_path):
    from harness.config import load_study_config
    from harness.errors import ConfigError

    for bad in ("1.0", "-0.1"):
        path = tmp_path / "s.toml"
        path.write_text(f'[study]\nname = "s"\n[train]\nema_decay = {bad}\n')
        with pytest.raises(ConfigError, match=r"train\.ema_decay.*\[0, 1\)"):
            load_study_config(path)


def test_clean_epochs_train_the_last_epochs_on_the_images_as_they_are(synthetic_root):
    """train.clean_epochs = 2 of 4: every image the network trains on in epochs 3 and 4 is a
    training image exactly as stored (normalised), each once per epoch; in epochs 1 and 2 none
    is, and those epochs are the very run without clean epochs (same losses and scores)."""
    data = load_splits(synthetic_root, val_size=100)
    as_stored = {normalize(data.train_x[i : i + 1])[0].numpy().tobytes() for i in range(len(data.train_x))}
    cfg = TrainConfig(epochs=4, batch_size=50, lr=0.05, rotation=10, translate=0.1, scale=0.1)
    seen: dict[int, list[bytes]] = {}
    epoch = [1]

    def record(module, args):
        if module.training:  # not the validation passes
            seen.setdefault(epoch[0], []).extend(x.numpy().tobytes() for x in args[0])

    def next_epoch(e, acc):
        epoch[0] = e + 1

    model = build(baseline_spec(), seed=2)
    model.register_forward_pre_hook(record)
    clean = fit(model, data, dataclasses.replace(cfg, clean_epochs=2), seed=3, on_epoch=next_epoch)
    steps = len(data.train_x) // cfg.batch_size
    assert sorted(seen) == [1, 2, 3, 4] and all(len(v) == steps * cfg.batch_size for v in seen.values())
    for e in (1, 2):
        assert not any(x in as_stored for x in seen[e]), e
    for e in (3, 4):
        assert all(x in as_stored for x in seen[e]) and len(set(seen[e])) == len(seen[e]), e
    plain = fit(build(baseline_spec(), seed=2), data, cfg, seed=3)
    assert clean.train_loss[:2] == plain.train_loss[:2] and clean.history[:2] == plain.history[:2]
    assert clean.train_loss[2:] != plain.train_loss[2:]
    # more clean epochs than epochs (a retrain with fewer epochs): every epoch is clean
    seen.clear()
    epoch[0] = 1
    fit(model, data, dataclasses.replace(cfg, epochs=1, clean_epochs=4), seed=3, on_epoch=next_epoch)
    assert sorted(seen) == [1] and all(x in as_stored for x in seen[1])


def test_clean_epochs_are_checked(tmp_path):
    from harness.config import load_study_config
    from harness.errors import ConfigError

    for bad, message in (("-1", r"must be 0 \(off\) to train\.epochs = 4, got -1"),
                         ("5", r"must be 0 \(off\) to train\.epochs = 4, got 5"),
                         ("1.5", "must be an integer"), ('"2"', "must be an integer")):  # fmt: skip
        path = tmp_path / "s.toml"
        path.write_text(f'[study]\nname = "s"\n[train]\nepochs = 4\nclean_epochs = {bad}\n')
        with pytest.raises(ConfigError, match=r"train\.clean_epochs.*" + message):
            load_study_config(path)


@pytest.mark.slow
def test_compiled_step_trains_and_recompiles_for_each_new_architecture(synthetic_root):
    """train.compile: the step is really compiled (a dynamo graph per trial), learns like
    eager, and a second architecture in the same process is compiled too, not sent back to
    eager mode by dynamo's cache limit."""
    import optuna
    from torch._dynamo.utils import counters

    data = load_splits(synthetic_root, val_size=100)
    # clean_epochs: the last two epochs' step is a second compiled graph
    cfg = TrainConfig(epochs=8, batch_size=50, lr=0.05, rotation=5, translate=0.05, scale=0.05, compile="default",
                      clean_epochs=2)  # fmt: skip
    modern = get_search_space("modern")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    for spec in (get_search_space("seed").baseline_spec(), modern.suggest(trial)):  # two different graphs
        counters.clear()
        model = build(spec)
        result = fit(model, data, cfg, seed=1)
        assert counters["stats"]["unique_graphs"] >= 2, spec.describe()  # both steps went through dynamo
        assert result.val_acc > 0.5 and all(math.isfinite(v) for v in result.train_loss), spec.describe()
        assert evaluate(model, data.test_x, data.test_y) > 0.5


def test_precision_defaults_and_scoring_is_ieee_float32():
    """amp is off by default; evaluation pins IEEE float32 and puts the previous setting back."""
    from harness.train import fp32_precision, precision_settings

    assert TrainConfig().amp == "off" and TrainConfig().fp32_precision == "ieee"
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    with fp32_precision("tf32"):
        assert (conv.fp32_precision, matmul.fp32_precision) == ("tf32", "tf32")
        seen = []
        model = build(baseline_spec())
        orig = model.forward
        model.forward = lambda x: (seen.append((conv.fp32_precision, matmul.fp32_precision)), orig(x))[1]
        evaluate(model, torch.zeros(3, 28, 28, dtype=torch.uint8), torch.zeros(3, dtype=torch.long))
        assert seen == [("ieee", "ieee")]  # scoring ran in IEEE float32...
        assert (conv.fp32_precision, matmul.fp32_precision) == ("tf32", "tf32")  # ...and gave tf32 back
    assert (conv.fp32_precision, matmul.fp32_precision) == before
    cpu = precision_settings(TrainConfig(amp="auto", fp32_precision="tf32"), torch.device("cpu"))
    assert cpu == {"train_autocast": "off", "train_fp32": "ieee", "scoring": "float32 (ieee), no autocast"}
    cuda = precision_settings(TrainConfig(amp="auto", fp32_precision="tf32"), torch.device("cuda"))
    assert cuda["train_autocast"] == "bf16" and cuda["train_fp32"] == "tf32"


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_lockstep_trains_each_seed_exactly_as_fit_alone_and_reports_their_mean(synthetic_root):
    """study.repeats' engine: runs interleaved epoch by epoch keep their own random streams
    (augmentation, dropout, batch order), so each ends bit for bit where fit() alone ends with
    its seed; on_epoch and on_raw_epoch see the means. Augmentation, the seed network's dropout,
    weight averaging and a clean last epoch all draw or switch inside the interleaving."""
    from harness.train import fit_lockstep

    from harness.objective import repeat_seeds

    data = load_splits(synthetic_root, val_size=100, train_limit=200)
    spec = get_search_space("seed").baseline_spec()
    # epoch 2 augments after the other run's epoch 1: the restored streams are what it draws from
    cfg = TrainConfig(epochs=3, batch_size=50, rotation=10, translate=0.1, scale=0.1, ema_decay=0.9, clean_epochs=1)
    seeds = repeat_seeds(7, 2)
    alone = []
    for s in seeds:
        model = build(spec, seed=s)
        alone.append((fit(model, data, cfg, seed=s), _state(model)))
    models = [build(spec, seed=s) for s in seeds]
    seen, raw_seen = [], []
    together = fit_lockstep(models, data, cfg, seeds=seeds, on_epoch=lambda e, a: seen.append((e, a)),
                            on_raw_epoch=lambda e, a: raw_seen.append((e, a)))  # fmt: skip
    for (single, weights), run, model in zip(alone, together, models, strict=True):
        assert run.train_loss == single.train_loss and run.history == single.history
        assert run.raw_history == single.raw_history
        state = _state(model)
        assert all(torch.equal(state[k], weights[k]) for k in weights)
    assert together[0].train_loss != together[1].train_loss  # two seeds, two runs
    assert [e for e, _ in seen] == [1, 2, 3] == [e for e, _ in raw_seen]
    for e in range(3):
        assert seen[e][1] == pytest.approx(sum(r.history[e] for r in together) / 2, abs=1e-12)
        assert raw_seen[e][1] == pytest.approx(sum(r.raw_history[e] for r in together) / 2, abs=1e-12)


def test_lockstep_stops_every_run_at_the_epoch_on_epoch_raises(synthetic_root):
    from harness.train import fit_lockstep

    data = load_splits(synthetic_root, val_size=100, train_limit=200)
    spec = get_search_space("seed").baseline_spec()
    models = [build(spec, seed=s) for s in (1, 2)]
    steps = []
    register = [register_optimizer_step_post_hook(lambda opt, args, kwargs: steps.append(1))]

    class Stop(Exception):
        pass

    def stop_at_2(epoch, acc):
        if epoch == 2:
            raise Stop

    try:
        with pytest.raises(Stop):
            fit_lockstep(models, data, TrainConfig(epochs=5, batch_size=50), seeds=[1, 2], on_epoch=stop_at_2)
    finally:
        for handle in register:
            handle.remove()
    assert len(steps) == 2 * 2 * (200 // 50)  # two runs, two epochs, four steps each: none after the stop


def test_lockstep_fails_when_any_run_diverges_and_names_its_seed(synthetic_root):
    from harness.train import fit_lockstep

    data = load_splits(synthetic_root, val_size=100, train_limit=100)
    models = [build(get_search_space("seed").baseline_spec(), seed=1), NaNNet()]
    with pytest.raises(DivergedError, match=r"in epoch 1 \(seed 99\)"):
        fit_lockstep(models, data, TrainConfig(epochs=2, batch_size=50), seeds=[1, 99])


def test_a_cpu_device_label_names_the_cpu_model(monkeypatch):
    """Trials, retrain runs and benchmark files record this label: speeds differ between CPUs
    of one architecture (an AMD EPYC, an Intel Xeon with AMX), so "cpu (x86_64)" says too little.
    Where the system names no model (no "model name" in /proc/cpuinfo), none is made up; an
    Apple GPU is never labelled a CPU (export holds a CPU-scored trial to exact agreement)."""
    import platform

    import harness.train
    from harness.train import device_name

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(harness.train, "cpu_model", lambda: "AMD EPYC 7B13")
        assert device_name(torch.device("cpu")) == f"cpu (AMD EPYC 7B13, {platform.machine()}, 2 threads)"
        monkeypatch.setattr(harness.train, "cpu_model", lambda: platform.machine())  # what cpu_model falls back to
        assert device_name(torch.device("cpu")) == f"cpu ({platform.machine()}, 2 threads)"
        torch.set_num_threads(1)  # a --jobs worker's share of two cores
        assert device_name(torch.device("cpu")) == f"cpu ({platform.machine()}, 1 thread)"
    finally:
        torch.set_num_threads(threads)
    assert device_name(torch.device("mps")).startswith("mps (")


def test_validation_is_the_last_val_size_training_images_and_never_trained_on(synthetic_root):
    """The search selects on validation: the last ``val_size`` of the training images, disjoint
    from what it trains on; ``train_limit`` keeps the first N of the rest; the test set is the
    test file's own images, in order."""
    from harness.data import load_mnist

    train_x, train_y, test_x, test_y = load_mnist(synthetic_root)
    n = len(train_x)
    s = load_splits(synthetic_root, "cpu", val_size=100)
    assert torch.equal(s.val_x, train_x[n - 100:]) and torch.equal(s.val_y, train_y[n - 100:])
    assert torch.equal(s.train_x, train_x[: n - 100]) and torch.equal(s.train_y, train_y[: n - 100])
    assert torch.equal(s.test_x, test_x) and torch.equal(s.test_y, test_y)
    assert len({bytes(img.numpy()) for img in train_x}) == n  # the synthetic images are all distinct, so:
    trained = {bytes(img.numpy()) for img in s.train_x}
    assert not any(bytes(img.numpy()) in trained for img in s.val_x)
    limited = load_splits(synthetic_root, "cpu", val_size=100, train_limit=50, test_limit=30)
    assert torch.equal(limited.train_x, train_x[:50]) and torch.equal(limited.val_x, train_x[n - 100:])
    assert torch.equal(limited.test_x, test_x[:30])


# ---- properties pinned by the second mutation review --------------------------------------


def test_augment_rotation_is_in_degrees_and_bounded():
    """rotation=10 turns a 20-pixel vertical bar by up to 10 degrees, no more (radians would
    turn it anywhere), no less (half the range would leave it under 5 columns)."""
    x = torch.zeros(256, 1, 28, 28)
    x[:, 0, 4:24, 14] = 1.0
    torch.manual_seed(0)
    y = augment(x, 10.0, 0.0, 0.0)
    columns = (y[:, 0] > 0.1).any(1).sum(1)  # columns the bar touches, per image
    # 5 columns from a 6.8° turn on, 7 from 13°: the largest of 256 draws up to 10° is 5
    assert columns.max() == 5, columns.tolist()


def test_augment_translation_reaches_its_full_range_and_no_further():
    """translate=0.2 shifts by up to 0.2 * 28 = 5.6 pixels each way: over 512 images a dot's
    column spreads over about 11 pixels, never beyond the range."""
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 14, 14] = 1.0
    torch.manual_seed(0)
    y = augment(x.repeat(512, 1, 1, 1), 0.0, 0.2, 0.0)
    cols = (y[:, 0].sum(1)).argmax(1)  # the column holding most of the dot per image
    assert cols.max() - cols.min() >= 9 and (cols - 14).abs().max() <= 6, (cols.min(), cols.max())


def test_the_learning_rate_follows_the_schedule_every_step(synthetic_root):
    """One-cycle: the rate rises to train.lr and falls to nearly 0 by the last step, moved once
    per optimizer step (a schedule never stepped trains at its starting rate throughout)."""
    data = load_splits(synthetic_root, "cpu", val_size=100, train_limit=200)
    cfg = TrainConfig(epochs=3, batch_size=50, lr=0.05, schedule="onecycle", eval_batch_size=100)
    rates: list[float] = []
    hook = register_optimizer_step_post_hook(lambda opt, _a, _k: rates.append(opt.param_groups[0]["lr"]))
    try:
        fit(build(baseline_spec(), seed=1), data, cfg, seed=1)
    finally:
        hook.remove()
    assert len(rates) == 3 * 4  # 200 images / 50 per batch, 3 epochs
    assert max(rates) == pytest.approx(0.05, rel=0.05) and rates[-1] < 0.05 / 100
    assert rates.index(max(rates)) not in (0, len(rates) - 1)


def test_an_infinite_loss_is_divergence_too(synthetic_root):
    """A loss of +inf, not only NaN, stops the run as diverged: logits 3e38 apart overflow
    float32 in the log-softmax, so every image not of class 0 has an infinite loss."""
    data = load_splits(synthetic_root, "cpu", val_size=100, train_limit=100)

    class Huge(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            logits = torch.zeros(len(x), 10, device=x.device) + self.w
            logits[:, 0] = 3e38
            logits[:, 1:] = logits[:, 1:] - 3e38  # 3e38 - (-3e38) overflows to inf
            return logits

    with pytest.raises(DivergedError, match="inf"):
        fit(Huge(), data, TrainConfig(epochs=1, batch_size=100, rotation=0, translate=0, scale=0), seed=0)


def test_evaluate_puts_a_training_model_back_in_training_mode(synthetic_root):
    """Scoring switches to eval mode (batch-norm statistics, no dropout) and back: a model
    left in eval mode would train every later epoch without dropout or BN updates."""
    data = load_splits(synthetic_root, "cpu", val_size=100)
    model = build(baseline_spec(), seed=0)
    model.train()
    evaluate(model, data.val_x, data.val_y)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    evaluate(model, data.val_x, data.val_y)
    assert not model.training
