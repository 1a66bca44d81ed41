"""harness: parameter-budgeted architecture search for MNIST on Optuna."""

__version__ = "0.1.0"
