"""One fixed architecture as a search space: the 3,590-parameter point of the CPU front.

Trial 32 of studies/mnist-front-cpu.toml, proposed by its TPE sampler in the committed run
(results/front-cpu.md: 99.35 % +- 0.03 % with the study's recipe, 20 epochs, 3 seeds, training
loss still falling at epoch 20). studies/mnist-3700-recipe-cpu.toml searches only the training
recipe for it (`search_recipe = true`): this space suggests no parameter of its own.
"""

import optuna

from search_spaces.compact import suggest as compact_suggest

# The compact-space parameters of mnist-front-cpu trial 32, as its database records them.
PARAMS = {
    "dropout": 0.0,
    "s1_width": 16, "s1_convs": 2, "s1_kernel": 3, "s1_separable": True, "s1_residual": False,
    "drop1": "max",
    "s2_width": 12, "s2_convs": 3, "s2_kernel": 3, "s2_separable": True, "s2_residual": True,
    "drop2": "max",
    "s3_width": 16, "s3_convs": 3, "s3_kernel": 5, "s3_separable": True, "s3_residual": False,
}  # fmt: skip


def suggest(trial: optuna.trial.BaseTrial):
    """mnist-front-cpu trial 32 (3,590 parameters), always."""
    return compact_suggest(optuna.trial.FixedTrial(PARAMS))
