"""The seed network's layout, fixed, with its regularisation opened: one dropout rate and the
batch-norm position.

Every retrained candidate of the CPU pipelines fell short of the seed network itself (19,290
parameters, 99.52 % +- 0.03 %, results/front-cpu.md), whose learning curve shows no over-fitting
with three 0.25 dropouts *and* augmentation: it is regularised twice. studies/mnist-20k-recipe-cpu.toml
(stage 3) searches these two choices together with the training recipe (`search_recipe = true`),
studies/mnist-20k-recipe2-cpu.toml (stage 5) with the zoom and weight decay too.
"""

import optuna

from search_spaces.seed import REFERENCE_PARAMS
from search_spaces.seed import suggest as seed_suggest


def suggest(trial: optuna.trial.BaseTrial):
    """The seed network (19,290 parameters) with a sampled dropout rate and BN position."""
    params = dict(
        REFERENCE_PARAMS,
        dropout=trial.suggest_float("dropout", 0.0, 0.25, step=0.05),
        bn=trial.suggest_categorical("bn", ("after_relu", "before_relu")),
    )
    return seed_suggest(optuna.trial.FixedTrial(params))


# The seed network as a point of this space: a study's baseline trial is enqueued with these
# parameters, so the sampler learns from the control (studies made before this line ran it
# without parameters).
BASELINE_PARAMS = {"dropout": 0.25, "bn": "after_relu"}
