"""Specs, the exact parameter counter, the builder, and every registered search space."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
import torch

from harness.config import load_study_config
from harness.model import build
from harness.spec import ArchSpec, BlockSpec, ConvSpec, InvalidSpecError, check_names, count_params
from search_spaces import SEARCH_SPACES, UnknownSearchSpaceError, enqueue_params, get_search_space

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _sampled_specs(space_name: str, n: int, seed: int = 0) -> list[ArchSpec]:
    """n valid specs drawn at random from a space (invalid layouts skipped)."""
    space = get_search_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    specs = []
    while len(specs) < n:
        trial = study.ask()
        spec = space.suggest(trial)
        study.tell(trial, 0.0)
        try:
            count_params(spec)
        except InvalidSpecError:
            continue
        specs.append(spec)
    return specs


def test_seed_network_has_19290_params_through_spec_and_builder():
    spec = get_search_space("seed").baseline_spec()
    model = build(spec)
    assert count_params(spec) == 19_290
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 19_290


def test_seed_network_layers_match_the_reference():
    spec = get_search_space("seed").baseline_spec()
    convs = [c for b in spec.blocks for c in b.convs]
    assert [(c.out_channels, c.kernel, c.stride, c.padding) for c in convs] == [
        (16, 3, 1, 1), (16, 3, 1, 0), (16, 3, 1, 1), (32, 3, 1, 1), (16, 3, 2, 1), (32, 3, 1, 1),
    ]  # fmt: skip
    assert [len(b.convs) for b in spec.blocks] == [2, 3, 1]
    assert all(b.pool and b.dropout == 0.25 for b in spec.blocks)
    assert (spec.head, spec.bn) == ("flatten", "after_relu")
    model = build(spec)
    assert model.classifier.in_features == 32 and model.classifier.out_features == 10
    unit = model.features[0]
    assert not unit.bn_first  # ReLU then BN, as in the seed network
    # dropout costs no parameters, so no count can miss it: the layers themselves
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.25] * 3


@pytest.mark.parametrize("space_name", sorted(SEARCH_SPACES))
def test_counter_equals_builder_on_many_sampled_specs(space_name):
    specs = _sampled_specs(space_name, 150)
    assert len({s.describe() for s in specs}) > 100  # the space is actually explored
    if space_name == "seed":
        assert len({s.head for s in specs}) == 2 and len({s.bn for s in specs}) >= 2
    if space_name == "modern":  # residuals, 1x1 transitions and 5x5 kernels all occur
        convs = [c for s in specs for b in s.blocks for c in b.convs]
        assert {c.kernel for c in convs} == {1, 3, 5} and any(c.residual for c in convs)
    if space_name == "compact":  # every lever occurs: drops of each kind, separable convs, residuals, 5x5
        convs = [c for s in specs for b in s.blocks for c in b.convs]
        assert any(c.separable for c in convs) and any(not c.separable for c in convs[1:])
        assert any(c.stride == 2 for c in convs) and any(b.pool for s in specs for b in s.blocks)
        assert any(not b.pool and b.convs[-1].stride == 1 for s in specs for b in s.blocks[:-1])  # "none" drops
        assert {c.kernel for c in convs} == {3, 5} and any(c.residual for c in convs)
    for spec in specs:
        assert count_params(spec) == sum(p.numel() for p in build(spec).parameters()), spec.describe()


@pytest.mark.parametrize("space_name", ["compact", "modern"])
def test_the_designed_spaces_never_propose_an_invalid_network(space_name):
    """compact and modern are built so that every draw is a valid network (the seed space's
    free layouts are not: the harness rejects those untrained); _sampled_specs skips invalid
    draws, so it cannot show this. compact's own rules: stage 1's first conv, on the
    1-channel image, is never separable; a stride-2 conv only opens a stage."""
    space = get_search_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    for _ in range(300):
        trial = study.ask()
        spec = space.suggest(trial)
        study.tell(trial, 0.0)
        count_params(spec)  # raises InvalidSpecError on an invalid one
        if space_name == "compact":
            assert not spec.blocks[0].convs[0].separable, spec.describe()
            assert all(c.stride == 1 for b in spec.blocks for c in b.convs[1:]), spec.describe()


@pytest.mark.parametrize("space_name", sorted(SEARCH_SPACES))
def test_sampled_models_forward_and_backward_on_cpu(space_name):
    torch.manual_seed(0)
    for spec in _sampled_specs(space_name, 12, seed=1) + [get_search_space(space_name).baseline_spec()]:
        model = build(spec)
        out = model(torch.randn(2, 1, 28, 28))
        assert out.shape == (2, 10)
        assert torch.isfinite(out).all()
        out.square().sum().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, f"{spec.describe()}: no gradient for {name}"


@pytest.mark.parametrize("space_name", sorted(SEARCH_SPACES))
def test_space_reaches_far_smaller_networks(space_name):
    sizes = [count_params(s) for s in _sampled_specs(space_name, 200, seed=2)]
    assert min(sizes) < 19_290 / 4
    assert max(sizes) > 20_000  # and over-budget ones, which the gate must catch


def test_spec_json_round_trip_and_frozen():
    for spec in _sampled_specs("seed", 30, seed=3):
        again = ArchSpec.from_json(spec.to_json())
        assert again == spec and again.to_json() == spec.to_json()
        assert count_params(again) == count_params(spec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.head = "gap"  # type: ignore[misc]


@pytest.mark.parametrize(
    "spec",
    [
        ArchSpec(blocks=()),
        ArchSpec(blocks=(BlockSpec(convs=()),)),
        ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(8, 3, 2, 0),) * 5),)),  # shrinks below 1 pixel
        ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(8),), dropout=1.0),)),
        ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(8),)),), head="softmax"),
        ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(8, residual=True),)),)),  # 1 -> 8 channels
        ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(8),)),), activation="tanh"),
        ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(8),)),), bn="after"),
        # the edges, each alone (a mutation review: overshooting cases hid an off-by-one)
        ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(8, 3, 2, 0),) * 4, pool=False),)),  # 28 -> 13 -> 6 -> 2 -> 0 px
        ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(8), ConvSpec(8, stride=2, residual=True))),)),  # 28 -> 14 px
        ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(8),), dropout=-0.1),)),
        ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(8, stride=0),)),)),
        ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(0),)),)),
        ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(8, padding=-1),)),)),
    ],
)
def test_invalid_specs_are_rejected_by_counter_and_builder(spec):
    with pytest.raises(InvalidSpecError):
        count_params(spec)
    with pytest.raises(InvalidSpecError):
        build(spec)


@pytest.mark.parametrize(
    "field,value,words",
    [("head", "softmax", "unknown head 'softmax'; valid: flatten, gap"),
     ("bn", "after", "unknown bn placement 'after'; valid: after_relu, before_relu, none"),
     ("activation", "tanh", "unknown activation 'tanh'; valid: relu, silu, gelu")],
)
def test_check_names_names_the_field_and_the_valid_values(field, value, words):
    """The name checks shared by feature_shapes and a user space's load-time check."""
    good = ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(8),)),), head="gap", bn="before_relu", activation="gelu")
    check_names(good)  # no error
    with pytest.raises(InvalidSpecError) as err:
        check_names(dataclasses.replace(good, **{field: value}))
    assert str(err.value) == words


def test_residual_and_bn_variants_count_exactly():
    spec = ArchSpec(
        blocks=(
            BlockSpec(convs=(ConvSpec(8), ConvSpec(8, residual=True)), pool=True),
            BlockSpec(convs=(ConvSpec(12, kernel=1, padding=0), ConvSpec(12, kernel=5, padding=2)), dropout=0.1),
        ),
        head="gap",
        bn="before_relu",
        conv_bias=False,
    )
    assert count_params(spec) == sum(p.numel() for p in build(spec).parameters())
    assert build(spec)(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def _activation_spec(activation: str, bn: str = "before_relu") -> ArchSpec:
    return ArchSpec(
        blocks=(
            BlockSpec(convs=(ConvSpec(6), ConvSpec(6, residual=True))),
            BlockSpec(convs=(ConvSpec(8, separable=True),), pool=False),
        ),
        head="gap",
        bn=bn,
        activation=activation,
    )


@pytest.mark.parametrize("bn", ["before_relu", "after_relu", "none"])
@pytest.mark.parametrize("activation", ["relu", "silu", "gelu"])
def test_activation_is_applied_after_every_conv_at_no_parameter_cost(activation, bn):
    """The network equals a hand-written forward pass with the chosen function after every conv
    (before or after BN as `bn` says); the parameters are those of the ReLU network."""
    fn = {"relu": torch.relu, "silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu}[activation]
    spec = _activation_spec(activation, bn)
    net = build(spec, seed=0).eval()
    with torch.no_grad():
        for p in net.parameters():  # away from BN's identity init, so its order matters
            p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(4, 1, 28, 28)
    h = x
    with torch.no_grad():
        for layer in net.features:  # conv units, and the max pooling after block 1
            if not hasattr(layer, "conv"):
                h = layer(h)
                continue
            y = layer.conv(h)
            y = fn(layer.bn(y)) if bn == "before_relu" else layer.bn(fn(y))
            h = h + y if layer.residual else y
        expected = net.classifier(h.mean(dim=(2, 3)))
        torch.testing.assert_close(net(x), expected)
    relu = build(_activation_spec("relu", bn), seed=0)
    assert count_params(spec) == count_params(_activation_spec("relu", bn))
    assert sum(p.numel() for p in net.parameters()) == count_params(spec)
    # the same seed gives the same initial weights whatever the activation
    for a, b in zip(build(spec, seed=0).state_dict().values(), relu.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_activation_is_in_the_json_and_the_description_unless_relu():
    """A ReLU spec serialises exactly as before the field existed (stored specs are compared as
    JSON: an old trial and a new one of the same network must match); others round-trip."""
    relu = _activation_spec("relu")
    assert "activation" not in relu.to_json() and "relu" not in relu.describe().split("|")[-1]
    assert ArchSpec.from_json(relu.to_json()) == relu
    for activation in ("silu", "gelu"):
        spec = _activation_spec(activation)
        assert f'"activation":"{activation}"' in spec.to_json()
        assert spec.describe() == relu.describe() + f" {activation}"
        assert ArchSpec.from_json(spec.to_json()) == spec != relu


def test_compact_activation_space_is_the_compact_network_with_another_activation():
    space = get_search_space("spaces/compact_activation.py:suggest", Path(__file__).parents[1] / "studies")
    compact = get_search_space("compact")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    for _ in range(20):
        trial = study.ask()
        spec = space.suggest(trial)
        study.tell(trial, 0.0)
        params = {k: v for k, v in trial.params.items() if k != "activation"}
        assert spec == dataclasses.replace(compact.suggest(optuna.trial.FixedTrial(params)), activation=trial.params["activation"])
    assert {t.params["activation"] for t in study.trials} == {"relu", "silu", "gelu"}


def test_unknown_search_space_lists_valid_names():
    with pytest.raises(UnknownSearchSpaceError, match="valid: .*seed"):
        get_search_space("nope")


def test_compact_space_suggests_no_dead_parameters():
    """Changing any suggested parameter of the compact space changes the network (TPE and the
    importance plot see no dimension that does nothing)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = get_search_space("compact")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    checked = 0
    for _ in range(40):
        trial = study.ask()
        spec = space.suggest(trial)
        study.tell(trial, 0.0)
        for name, dist in trial.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                values = list(dist.choices)
            elif isinstance(dist, IntDistribution):
                values = list(range(dist.low, dist.high + 1, dist.step))
            else:
                assert isinstance(dist, FloatDistribution) and dist.step
                values = [round(dist.low + k * dist.step, 10) for k in range(round((dist.high - dist.low) / dist.step) + 1)]
            for v in values:
                if v == trial.params[name]:
                    continue
                changed = dict(trial.params, **{name: v})
                try:
                    other = space.suggest(optuna.trial.FixedTrial(changed))
                except ValueError:  # the change opens a parameter this trial did not have
                    continue
                assert other != spec, f"{name}: {trial.params[name]} -> {v} changes nothing in {spec.describe()}"
                checked += 1
    assert checked > 500


def test_seed_network_is_not_a_point_of_the_compact_space_but_stays_its_baseline():
    space = get_search_space("compact")
    assert space.baseline_params is None
    assert count_params(space.baseline_spec()) == 19_290


def test_separable_conv_counts_depthwise_plus_pointwise():
    spec = ArchSpec(
        blocks=(BlockSpec(convs=(ConvSpec(8), ConvSpec(16, kernel=5, padding=2, stride=2, separable=True))),),
        head="gap", bn="before_relu", conv_bias=False,
    )  # fmt: skip
    # conv 1: 1*8*9 + BN 16; separable: depthwise 8*25 + pointwise 8*16 + BN 32; head 16*10 + 10
    assert count_params(spec) == 72 + 16 + 200 + 128 + 32 + 170
    model = build(spec)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("toml", sorted(p.name for p in (Path(__file__).parents[1] / "studies").glob("*.toml")))
def test_every_committed_study_file_loads_with_its_space_and_enqueues(toml):
    """A committed study file the pipelines run must pass the same checks `harness run` makes
    (its space found, every [[enqueue]] a full, allowed point), and each enqueued architecture
    must build and fit the study's budget (an over-budget one would only be rejected)."""
    cfg = load_study_config(Path(__file__).parents[1] / "studies" / toml)
    space = get_search_space(cfg.search_space, cfg.path.parent)
    for entry in cfg.enqueue:
        params = enqueue_params(space, entry, *cfg.recipe_search)
        spec = space.suggest(optuna.trial.FixedTrial(params))
        assert 0 < count_params(spec) <= cfg.budget, (toml, entry)
        assert sum(p.numel() for p in build(spec).parameters()) == count_params(spec)


def test_seed_regularisation_space_changes_only_dropout_and_bn():
    space = get_search_space("spaces/seed_regularisation.py:suggest", Path(__file__).parents[1] / "studies")
    reference = get_search_space("seed").baseline_spec()
    assert space.suggest(optuna.trial.FixedTrial({"dropout": 0.25, "bn": "after_relu"})) == reference
    spec = space.suggest(optuna.trial.FixedTrial({"dropout": 0.1, "bn": "before_relu"}))
    assert spec != reference and count_params(spec) == 19_290
    assert spec.bn == "before_relu" and {b.dropout for b in spec.blocks} == {0.1}
    assert [b.convs for b in spec.blocks] == [b.convs for b in reference.blocks]
    # what a trial samples: dropout 0-0.25 in steps of 0.05, the two BN positions, nothing else
    study = optuna.create_study()
    trial = study.ask()
    space.suggest(trial)
    assert trial.distributions == {
        "dropout": optuna.distributions.FloatDistribution(0.0, 0.25, step=0.05),
        "bn": optuna.distributions.CategoricalDistribution(("after_relu", "before_relu")),
    }


def test_recipe_fields_choose_what_is_sampled_and_lr_follows_the_batch():
    """`search_recipe = true` draws the five first recipe fields (studies stored before field
    lists resume unchanged); a list draws only its fields; the peak lr scales with a sampled
    batch size even when lr itself is not searched."""
    from harness.config import TrainConfig
    from search_spaces.recipe import DEFAULT_FIELDS, recipe_fields, suggest_recipe

    base = TrainConfig(lr=0.04, batch_size=128, weight_decay=3e-4, scale=0.07)
    assert recipe_fields(True) == DEFAULT_FIELDS and recipe_fields(False) == ()
    assert set(DEFAULT_FIELDS) == {"lr", "batch_size", "label_smoothing", "rotation", "translate"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    suggest_recipe(trial, base)
    D = optuna.distributions
    assert trial.distributions == {  # exactly the distributions of studies stored before field lists
        "batch_size": D.CategoricalDistribution((64, 128, 256)),
        "lr": D.FloatDistribution(0.04 / 3, 0.04 * 3, log=True),
        "label_smoothing": D.CategoricalDistribution((0.0, 0.05, 0.1)),
        "rotation": D.CategoricalDistribution((0.0, 5.0, 10.0, 15.0)),
        "translate": D.CategoricalDistribution((0.0, 0.05, 0.1, 0.15)),
    }
    unscaled = suggest_recipe(study.ask(), dataclasses.replace(base, batch_size=96, lr=0.03), ["scale"])
    assert unscaled.lr == 0.03 and unscaled.batch_size == 96  # no batch searched: train.lr as written

    seen = set()
    for _ in range(30):
        trial = study.ask()
        recipe = suggest_recipe(trial, base, recipe_fields(["batch_size", "weight_decay"]))
        assert set(trial.params) == {"batch_size", "weight_decay"}
        assert recipe.batch_size == trial.params["batch_size"]
        assert recipe.lr == pytest.approx(0.04 * trial.params["batch_size"] / 128)
        assert (recipe.weight_decay, recipe.scale, recipe.rotation) == (trial.params["weight_decay"], 0.07, base.rotation)
        seen.add((recipe.batch_size, recipe.weight_decay))
    assert len({b for b, _ in seen}) > 1 and len({w for _, w in seen}) > 1  # both really sampled


def test_clean_epochs_choices_stop_at_the_study_epochs():
    """`search_recipe = ["clean_epochs"]` offers 0, 1, 2 and 4 last clean epochs, those that fit
    in train.epochs; nothing else is sampled."""
    from harness.config import TrainConfig
    from search_spaces.recipe import suggest_recipe

    for epochs, choices in ((20, (0, 1, 2, 4)), (2, (0, 1, 2)), (1, (0, 1))):
        trial = optuna.create_study().ask()
        cfg = suggest_recipe(trial, TrainConfig(epochs=epochs), ["clean_epochs"])
        assert trial.distributions == {"clean_epochs": optuna.distributions.CategoricalDistribution(choices)}
        assert dataclasses.replace(cfg, clean_epochs=0) == TrainConfig(epochs=epochs)
        assert cfg.clean_epochs == trial.params["clean_epochs"]
