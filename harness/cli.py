"""Command line: ``harness run | status | data import``.

Every user error (bad study file, missing data, bad storage) is one line on stderr and exit
status 2, checked before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from harness.errors import HarnessError

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage + line)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: sqlite file beside the study file)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="harness", description="Parameter-budgeted architecture search for MNIST.")
    parser.add_argument("--version", action="version", version=f"harness {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="create or resume a study and run trials")
    run.add_argument("study_file", metavar="STUDY.toml")
    run.add_argument("--trials", type=int, metavar="N", help="trials to run now, rejections included (default: study.n_trials)")
    run.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds")
    _add_storage(run)
    run.add_argument("--device", metavar="D", help="auto (default), cpu, cuda, cuda:N")
    run.add_argument("--data-dir", metavar="DIR", help="MNIST root (torchvision layout; default: data.dir, $HARNESS_DATA_DIR)")
    run.add_argument("--download", action="store_true", help="let torchvision download MNIST if it is missing")
    run.add_argument("--quiet", action="store_true", help="no progress bar or per-trial lines")

    status = sub.add_parser("status", help="print a study's summary without running anything")
    status.add_argument("study_file", metavar="STUDY.toml")
    _add_storage(status)

    data = sub.add_parser("data", help="manage the MNIST files")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    imp = data_sub.add_parser("import", help="check and install the four MNIST *-ubyte.gz files from DIR")
    imp.add_argument("source", metavar="DIR")
    imp.add_argument("--data-dir", metavar="ROOT", help="where to install (default: $HARNESS_DATA_DIR or ~/.cache/harness/data)")
    return parser


def _version() -> str:
    from harness import __version__

    return __version__


def _default_data_root(override: str | None) -> str:
    from pathlib import Path

    from harness.config import DATA_DIR_ENV

    return override or os.environ.get(DATA_DIR_ENV) or str(Path.home() / ".cache" / "harness" / "data")


def _cmd_data_import(args: argparse.Namespace) -> int:
    from harness.data import import_mnist

    dest = import_mnist(args.source, _default_data_root(args.data_dir))
    print(f"MNIST checked (md5) and installed in {dest}")
    return 0


def _print_summary(study) -> None:
    from harness.study import summarize

    for line in summarize(study).lines():
        print(line)


def _cmd_status(args: argparse.Namespace) -> int:
    from harness.config import load_study_config
    from harness.study import check_storage_url, open_study

    cfg = load_study_config(args.study_file)
    url = args.storage or cfg.default_storage()
    check_storage_url(url)
    if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///") :]):
        raise HarnessError(f"{args.study_file}: no study database yet at {url[len('sqlite:///'):]} (run `harness run` first)")
    _print_summary(open_study(cfg, url, create=False))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import optuna
    import torch

    from harness.config import load_study_config, with_overrides
    from harness.data import MNIST_FILES, load_mnist, load_splits, raw_folder
    from harness.study import Objective, check_storage_url, open_study
    from harness.train import DivergedError, device_name, resolve_device

    cfg = load_study_config(args.study_file)
    if args.trials is not None and args.trials < 0:
        raise HarnessError(f"--trials must be >= 0, got {args.trials}")
    if args.timeout is not None and args.timeout < 0:
        raise HarnessError(f"--timeout must be >= 0 seconds, got {args.timeout}")
    cfg = with_overrides(cfg, device=args.device)
    url = args.storage or cfg.default_storage()
    check_storage_url(url)
    try:
        device = resolve_device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise HarnessError(f"device {cfg.device!r} requested but CUDA is not available")
        label = device_name(device)
    except (RuntimeError, AssertionError) as exc:
        raise HarnessError(f"device {cfg.device!r}: {exc}") from None
    root = cfg.data_root(args.data_dir)
    download = args.download or cfg.data.download
    if download:
        load_mnist(root, download=True)  # fetch up front: a failed download writes no study
    elif not all((raw_folder(root) / n).is_file() for n in MNIST_FILES):
        load_mnist(root)  # raises DataError naming the folder and how to provide the files

    def load_data():
        return load_splits(
            root, device, val_size=cfg.data.val_size, train_limit=cfg.data.train_limit,
            test_limit=cfg.data.test_limit, download=download,
        )  # fmt: skip

    if url.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(os.path.abspath(url[len("sqlite:///") :])), exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(cfg, url)
    n_trials = args.trials if args.trials is not None else (cfg.n_trials or None)
    timeout = args.timeout if args.timeout is not None else (cfg.timeout or None)
    progress = _Progress(n_trials, cfg.train.epochs, quiet=args.quiet)
    objective = Objective(cfg, load_data, device_label=label, on_epoch=progress.epoch)
    print(f"study {cfg.name!r} on {label}, storage {url}", flush=True)
    interrupted = False
    try:
        study.optimize(
            objective,
            n_trials=n_trials,
            timeout=timeout,
            callbacks=[progress.trial_done],
            catch=(DivergedError, torch.OutOfMemoryError),
        )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
    _print_summary(study)
    if interrupted:
        print("interrupted: the running trial was marked FAIL; run again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


class _Progress:
    """A tqdm bar over trials plus one line per finished trial."""

    def __init__(self, total: int | None, epochs: int, quiet: bool):
        from tqdm import tqdm

        self.quiet, self.epochs, self.start = quiet, epochs, time.perf_counter()
        self.bar = None if quiet else tqdm(total=total, unit="trial", dynamic_ncols=True, file=sys.stderr)

    def epoch(self, trial, epoch: int, val_acc: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"trial {trial.number} epoch {epoch}/{self.epochs} val {val_acc:.4f}")

    def trial_done(self, study, trial) -> None:
        from harness.study import classify

        if self.bar is None:
            return
        kind, ua = classify(trial), trial.user_attrs
        base = " (baseline)" if ua.get("baseline") else ""
        if kind == "complete":
            msg = (f"val {trial.value:.4f} test {ua.get('test_acc', float('nan')):.4f} "
                   f"{ua.get('params', 0):,} params {ua.get('train_seconds', 0):.1f}s")  # fmt: skip
        elif kind in ("over_budget", "invalid"):
            msg = f"rejected: {ua.get('reject_reason', kind)}"
        elif kind == "pruned":
            msg = f"pruned after epoch {ua.get('epochs_run', '?')} ({ua.get('params', 0):,} params)"
        else:
            msg = f"{kind}: {ua.get('fail_reason', '')}"
        self.bar.write(f"trial {trial.number}{base}: {msg}")
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"run": _cmd_run, "status": _cmd_status, "data": _cmd_data_import}
    try:
        return handlers[args.command](args)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
