"""Running a study: plan (validate everything first), run trials here or in K worker processes, progress.

:func:`plan_run` checks the study file, options, device and data and creates nothing;
:func:`run_study` then runs the trials, in this process or in ``--jobs`` spawned workers,
each of which claims its own sampler stream (:func:`harness.study.claim_sampler_stream`),
and prints the study's summary at the end.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

from harness.errors import EXIT_INTERRUPTED, EXIT_USAGE, HarnessError

__all__ = ["Progress", "RunOutcome", "RunPlan", "plan_run", "run_study", "run_trials"]

@dataclass(frozen=True)
class RunPlan:
    """Everything a worker process needs, validated once by the parent (picklable)."""

    study_file: str
    url: str
    device: str
    data_root: str
    download: bool
    n_trials: int | None
    timeout: float | None
    quiet: bool
    jobs: int = 1  # worker processes on this machine
    tag: str = ""  # "[w2] " prefix of a worker's lines when several run at once
    threads: int = 0  # torch CPU threads for this process (0 = torch's default)


@dataclass(frozen=True)
class RunOutcome:
    interrupted: bool
    workers: int = 1
    bad_codes: tuple[int | None, ...] = ()  # exit codes of workers that failed

    @property
    def failed_workers(self) -> int:
        return len(self.bad_codes)


def plan_run(
    study_file: str,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = False,
    jobs: int = 1,
    quiet: bool = False,
) -> RunPlan:
    """Validate the study file, options, device and data; create nothing but the database folder.

    Raises:
        HarnessError: any bad input (the message names the file, key or option).
    """
    import torch

    from harness.config import load_study_config, with_overrides
    from harness.data import MNIST_FILES, load_mnist, raw_folder
    from harness.storage import check_storage_url, sqlite_path
    from harness.train import resolve_device

    cfg = load_study_config(study_file)
    for flag, value in (("--trials", trials), ("--timeout", timeout)):
        if value is not None and value < 0:
            raise HarnessError(f"{flag} must be >= 0, got {value}")
    if jobs < 1:
        raise HarnessError(f"--jobs must be >= 1, got {jobs}")
    cfg = with_overrides(cfg, device=device)
    url = storage or cfg.storage
    if url:
        check_storage_url(url)
    else:  # the default file: its folder is created below, once everything else is valid
        url = cfg.default_storage()
    if jobs > 1 and url.startswith("sqlite") and sqlite_path(url) is None:
        raise HarnessError("--jobs > 1 needs a storage the worker processes share: in-memory SQLite is one process's")
    try:
        dev = resolve_device(cfg.device)
    except RuntimeError as exc:
        raise HarnessError(f"device {cfg.device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HarnessError(f"device {cfg.device!r} requested but CUDA is not available")
    root = cfg.data_root(data_dir)
    download = download or cfg.data.download
    if download:
        load_mnist(root, download=True)  # fetch up front: a failed download writes no study
    elif not all((raw_folder(root) / n).is_file() for n in MNIST_FILES):
        load_mnist(root)  # raises DataError naming the folder and how to provide the files
    artifacts = cfg.artifact_root(url)
    if artifacts.exists() and not artifacts.is_dir():
        raise HarnessError(f"{study_file}: artifact folder {artifacts} exists but is not a folder")
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    n_trials = trials if trials is not None else (cfg.n_trials or None)
    timeout = timeout if timeout is not None else (cfg.timeout or None)
    return RunPlan(study_file, url, str(dev) if cfg.device != "auto" else "auto", str(root), download,
                   n_trials, timeout, quiet, jobs=jobs)  # fmt: skip


def run_trials(plan: RunPlan) -> bool:
    """Open (or join) the study and run trials in this process. Returns True if interrupted."""
    import optuna

    from harness.artifacts import open_artifact_store
    from harness.config import load_study_config
    from harness.data import load_splits
    from harness.objective import TRAINING_FAILURES, Objective
    from harness.study import claim_sampler_stream, open_study
    from harness.train import device_name, resolve_device

    cfg = load_study_config(plan.study_file)
    device = resolve_device(plan.device)
    if plan.threads:
        import torch

        torch.set_num_threads(plan.threads)
    # Our per-trial lines report failures; Optuna would add a traceback for each one.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = open_study(cfg, plan.url)
    stream = claim_sampler_stream(study, cfg, plan.url)

    def load_data():
        return load_splits(
            plan.data_root, device, val_size=cfg.data.val_size, train_limit=cfg.data.train_limit,
            test_limit=cfg.data.test_limit, download=plan.download,
        )  # fmt: skip

    print(f"{plan.tag}study {cfg.name!r} on {device_name(device)}, storage {plan.url}, "
          f"sampler stream {stream.index}", flush=True)  # fmt: skip
    progress = Progress(plan.n_trials, cfg.train.epochs, quiet=plan.quiet, tag=plan.tag, bar=not plan.tag)
    store = open_artifact_store(cfg.artifact_root(plan.url))
    objective = Objective(
        cfg, load_data, device_label=device_name(device), on_epoch=progress.epoch, artifact_store=store, stream=stream
    )
    try:
        study.optimize(
            objective,
            n_trials=plan.n_trials,
            timeout=plan.timeout,
            callbacks=[progress.trial_done],
            catch=TRAINING_FAILURES,
        )
    except KeyboardInterrupt:
        return True
    finally:
        progress.close()
    return False


def _worker_process(plan: RunPlan) -> None:  # entry point of a --jobs child (spawned)
    try:
        interrupted = run_trials(plan)
    except HarnessError as exc:
        print(f"harness: error: {plan.tag}{exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_INTERRUPTED if interrupted else 0)


def _split(total: int | None, parts: int) -> list[int | None]:
    if total is None:
        return [None] * parts
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_study(plan: RunPlan) -> RunOutcome:
    """Run the plan's trials (in ``plan.jobs`` processes) and print the study's summary."""
    import multiprocessing
    import os

    import torch

    from harness.config import load_study_config
    from harness.study import open_study, summarize

    cfg = load_study_config(plan.study_file)
    outcome = RunOutcome(interrupted=False)
    if plan.jobs == 1:
        outcome = RunOutcome(interrupted=run_trials(plan))
    else:
        # K processes on one study: the study and baseline are created here first, so the
        # workers only join. Each runs its share of the trials from its own sampler stream;
        # on several GPUs, worker i uses GPU i mod count.
        open_study(cfg, plan.url)
        gpus = torch.cuda.device_count() if plan.device in ("auto", "cuda") else 0
        # K CPU workers with torch's default of one thread per core each would oversubscribe
        # the cores K times over (measured 0.43x the throughput of one worker with K=2 on 2
        # cores): give each worker its share of the cores instead.
        threads = 0 if gpus else max(1, (os.cpu_count() or 1) // plan.jobs)
        ctx = multiprocessing.get_context("spawn")  # no CUDA state or sqlite handles inherited
        procs = []
        for i, share in enumerate(_split(plan.n_trials, plan.jobs)):
            if share == 0:
                continue
            device = f"cuda:{i % gpus}" if gpus > 1 else plan.device
            child = dataclasses.replace(plan, n_trials=share, device=device, tag=f"[w{i}] ", threads=threads, jobs=1)
            procs.append(ctx.Process(target=_worker_process, args=(child,), name=f"harness-w{i}"))
        for p in procs:
            p.start()
        interrupted = False
        try:
            for p in procs:
                p.join()
        except KeyboardInterrupt:  # the children got the same SIGINT: let them finish cleanly
            interrupted = True
            for p in procs:
                p.join()
        codes = [p.exitcode for p in procs]
        outcome = RunOutcome(
            interrupted=interrupted or EXIT_INTERRUPTED in codes,
            workers=len(procs),
            bad_codes=tuple(c for c in codes if c not in (0, EXIT_INTERRUPTED)),
        )
    for line in summarize(open_study(cfg, plan.url, create=False)).lines():
        print(line)
    return outcome


class Progress:
    """A tqdm bar over trials plus one line per finished trial."""

    def __init__(self, total: int | None, epochs: int, quiet: bool, tag: str = "", bar: bool = True):
        from tqdm import tqdm

        self.quiet, self.epochs, self.tag = quiet, epochs, tag
        self.bar = tqdm(total=total, unit="trial", dynamic_ncols=True, file=sys.stderr) if bar and not quiet else None

    def epoch(self, trial, epoch: int, val_acc: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"trial {trial.number} epoch {epoch}/{self.epochs} val {val_acc:.4f}")

    def trial_done(self, study, trial) -> None:
        from harness.study import classify, val_acc

        if self.quiet:
            return
        kind, ua = classify(trial), trial.user_attrs
        origin = ua.get("origin", "")
        base = f" ({origin})" if origin and origin != "sampler" else ""
        if kind == "complete":
            msg = (f"val {val_acc(trial):.4f} test {ua.get('test_acc', float('nan')):.4f} "
                   f"{ua.get('params', 0):,} params {ua.get('train_seconds', 0):.1f}s")  # fmt: skip
        elif kind in ("over_budget", "invalid"):
            msg = f"rejected: {ua.get('reject_reason', kind)}"
        elif kind == "duplicate":
            msg = f"duplicate of trial {ua.get('duplicate_of')}: not trained again"
        elif kind == "pruned":
            msg = f"pruned after epoch {ua.get('epochs_run', '?')} ({ua.get('params', 0):,} params)"
        else:
            msg = f"{kind}: {ua.get('fail_reason', '')}"
        line = f"{self.tag}trial {trial.number}{base}: {msg}"
        if self.bar is None:
            print(line, flush=True)
        else:
            self.bar.write(line)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
