"""Running a study: plan (validate everything first), run trials here or in K worker processes, progress.

:func:`plan_run` checks the study file, options, device and data and creates nothing;
:func:`run_study` then runs the trials, in this process or in ``--jobs`` spawned workers,
each of which claims its own sampler stream (:func:`harness.study.claim_sampler_stream`),
and prints the study's summary at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import sys
import time
from dataclasses import dataclass

from harness.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, HarnessError

__all__ = [
    "Progress", "ProgressEvent", "RunOutcome", "RunPlan", "exit_status_after_stop", "forget_stop", "interrupts_held",
    "plan_run", "raise_if_stop_was_lost", "restore_signals", "run_study", "run_trials", "stop_on_signals", "stops_on_signals",
]


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
    study_trials: int = 0  # study.n_trials when this run fills the study up to it (0: --trials, or no limit)
    finished: int | None = None  # the study's finished trials when the run was planned (None: no study yet)
    changed: tuple[str, ...] = ()  # the study file's seed, sampler or pruner settings changed since the study began
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
    """Validate the study file, options, device and data; create nothing (run_study makes the
    database's folder once there are trials to run).

    Raises:
        HarnessError: any bad input (the message names the file, key or option).
    """
    import torch

    from harness.config import check_enqueued_once, load_study_config, with_overrides
    from harness.data import check_mnist_files, load_mnist
    from harness.storage import check_can_write_in, sqlite_path
    from harness.study import check_resumable, storage_to_write
    from harness.train import resolve_device

    cfg = load_study_config(study_file)
    check_enqueued_once(cfg)
    for flag, value in (("--trials", trials), ("--timeout", timeout)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise HarnessError(f"{flag} must be a number >= 0, got {value}")
    if jobs < 1:
        raise HarnessError(f"--jobs (--workers) must be >= 1, got {jobs}")
    cfg = with_overrides(cfg, device=device)
    url = storage_to_write(study_file, cfg, storage)  # its folder is made by run_study, once there are trials to run
    if jobs > 1 and url.startswith("sqlite") and sqlite_path(url) is None:
        raise HarnessError("--jobs > 1 needs a storage the worker processes share: in-memory SQLite is one process's")
    if url.startswith("sqlite") and sqlite_path(url) is None:
        raise HarnessError(f"storage {url!r}: in-memory SQLite keeps nothing after the run; give a file (sqlite:///study.db)")
    try:
        dev = resolve_device(cfg.device)
    except RuntimeError as exc:
        raise HarnessError(f"device {cfg.device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HarnessError(f"device {cfg.device!r} requested but CUDA is not available")
    # A mismatch with the stored study: refused before anything prints, downloads or runs.
    stored = check_resumable(cfg, url, dev)
    finished = stored.finished if stored is not None else None
    if cfg.train.teacher:  # a missing, broken or leaking teacher: refused before the study exists
        from harness.teacher import check_search_teacher, load_teacher

        load_teacher(cfg.teacher_path())
        check_search_teacher(cfg.teacher_path(), cfg.data.val_size)
    # study.n_trials is the study's total, so a run resumed after an interruption runs only
    # what is missing; --trials N runs N more now.
    n_trials, study_trials = trials, 0
    if trials is None and cfg.n_trials:
        n_trials, study_trials = max(cfg.n_trials - (finished or 0), 0), cfg.n_trials
    timeout = timeout if timeout is not None else (cfg.timeout or None)
    root = cfg.data_root(data_dir)
    download = download or cfg.data.download
    artifacts = cfg.artifact_root(url)
    if artifacts.exists() and not artifacts.is_dir():
        raise HarnessError(f"{study_file}: artifact folder {artifacts} exists but is not a folder")
    if n_trials != 0 and timeout != 0:  # a full study (or --trials 0) needs no data: it says so and summarizes
        # The probe writes (and removes) a folder in the artifact folder: before a download (bad
        # input downloads nothing), else after the read-only data check (bad data touches nothing).
        if download:  # last of the checks that need no data
            check_can_write_in(artifacts, f"{study_file}: artifact folder")
            load_mnist(root, download=True)  # fetch up front: a failed download writes no study
        n_train = check_mnist_files(root)["train"]  # missing, truncated or bad labels: refused before the study exists
        if cfg.data.val_size >= n_train:
            raise HarnessError(f"{study_file}: data.val_size = {cfg.data.val_size} must be below the {n_train:,} "
                               f"training images in {root}")  # fmt: skip
        if not download:
            check_can_write_in(artifacts, f"{study_file}: artifact folder")
    return RunPlan(study_file, url, str(dev) if cfg.device != "auto" else "auto", str(root), download,
                   n_trials, timeout, quiet, jobs=jobs, study_trials=study_trials, finished=finished,
                   changed=stored.changed if stored is not None else ())  # fmt: skip


def run_trials(plan: RunPlan, forward=None) -> bool:
    """Open (or join) the study and run trials in this process. Returns True if interrupted.

    ``forward``: a queue for this process's progress events (a ``--jobs`` worker); without
    it the progress is drawn here.
    """
    import optuna

    from harness.artifacts import open_artifact_store
    from harness.config import load_study_config
    from harness.data import load_splits
    from harness.objective import TRAINING_FAILURES, Objective
    from harness.storage import safe_url
    from harness.study import FINISHED_STATES, claim_sampler_stream, open_study
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

    progress = Progress(plan.n_trials, cfg.train.epochs, quiet=plan.quiet, tag=plan.tag, timeout=plan.timeout,
                        forward=forward)  # fmt: skip
    taught = f", distilling from {cfg.teacher_path()}" if cfg.train.teacher else ""  # the result depends on it too
    if "ema_decay" in cfg.recipe_fields:  # each trial samples its own; the baseline keeps [train]'s
        averaged = f", weight averaging searched (ema_decay per trial; the baseline {cfg.train.ema_decay})"
    else:
        averaged = f", scoring averaged weights (ema_decay {cfg.train.ema_decay})" if cfg.train.ema_decay else ""
    if "clean_epochs" in cfg.recipe_fields:
        clean = f", un-augmented last epochs searched (clean_epochs per trial; the baseline {cfg.train.clean_epochs})"
    else:
        n = cfg.train.clean_epochs
        clean = f", the last {'epoch' if n == 1 else f'{n} epochs'} un-augmented" if n else ""
    repeats = f", {cfg.repeats} seeds per candidate (val: their mean)" if cfg.repeats > 1 else ""
    progress.note(f"{plan.tag}study {cfg.name!r} on {device_name(device)}, storage {safe_url(plan.url)}, "
                  f"sampler stream {stream.index}{repeats}{taught}{averaged}{clean}")  # fmt: skip
    store = open_artifact_store(cfg.artifact_root(plan.url))
    objective = Objective(
        cfg, load_data, device_label=device_name(device), on_epoch=progress.epoch, artifact_store=store, stream=stream
    )
    callbacks = [progress.trial_done]
    if plan.study_trials:  # other processes (--jobs, harness worker) fill the same study
        callbacks.append(optuna.study.MaxTrialsCallback(plan.study_trials, states=FINISHED_STATES))
    publisher = None
    if forward is None:  # the process that draws progress also keeps the dashboard's view current
        from harness.dashboard import Publisher

        publisher = Publisher(study, plan.url)
        callbacks.append(lambda study, trial: publisher())
    callbacks.append(_STOP_GATE.raise_if_stopped)  # after the others: the told trial is counted and shown

    def in_trial(trial):
        try:
            with _STOP_GATE.open() as stopped:
                if stopped:  # while Optuna created this trial: it fails as interrupted, retried on resume
                    raise KeyboardInterrupt
                return objective(trial)
        except KeyboardInterrupt:  # also one landing just outside the objective's own handler
            objective.mark_interrupted(trial)
            raise

    try:
        with _STOP_GATE.holding():
            study.optimize(in_trial, n_trials=plan.n_trials, timeout=plan.timeout, callbacks=callbacks,
                           catch=TRAINING_FAILURES)  # fmt: skip
    except KeyboardInterrupt:
        return True
    finally:
        progress.close()
        if publisher is not None:  # once stopped, not waiting (a stop more is ignored) for another process's lock
            publisher(force=True, wait=not _STOPPED_BY)
    return _STOP_GATE.pending or _stop_lost()  # a stop after the last trial was told: the run still ends as stopped


class _StopGate:
    """Where a stop signal may raise KeyboardInterrupt in a run's study.optimize. Inside a trial's
    objective it raises at once (Optuna marks the trial FAIL, the objective marks it
    interrupted, a resumed run retries it unless it stopped while its space drew). Outside
    one, while Optuna creates a trial (the sampler's proposal, the storage's writes) or tells
    one, the exception would leave a trial RUNNING that no heartbeat ever recorded: never
    failed as stale, never retried, and counted as the retry of the trial it was retrying.
    There the stop is held: the objective raises it at its start (that trial fails as
    interrupted, retried on resume), or the next callback after a trial is told. A stop whose
    KeyboardInterrupt was lost (:func:`raise_if_stop_was_lost`) is raised at the same two points."""

    def __init__(self) -> None:
        self.held = False  # inside study.optimize, outside a trial's objective
        self.pending = False  # a stop arrived while held

    @contextlib.contextmanager
    def holding(self):
        self.pending = False  # cleared before holding starts: a stop from here on is kept
        self.held = True
        try:
            yield
        finally:
            self.held = False

    @contextlib.contextmanager
    def open(self):
        """A trial's objective: a stop raises at once. Yields whether one is pending already."""
        self.held = False
        try:
            yield self.pending or _stop_lost()
        finally:
            self.held = True

    def hold_stop(self) -> bool:
        """Called by the signal handler: True if the stop is held for later."""
        if self.held:
            self.pending = True
        return self.held

    def raise_if_stopped(self, study, trial) -> None:
        if self.pending or _stop_lost():
            raise KeyboardInterrupt


_STOP_GATE = _StopGate()
_STOPPED_BY: list[int] = []  # the signal that stopped this run, once stop_on_signals' handler ran


def forget_stop() -> None:
    """Start a command with no stop recorded (a process may run several: tests, library callers)."""
    _STOPPED_BY.clear()


def exit_status_after_stop() -> int:
    """The exit status of a process stopped by a signal, by the shells' convention of 128 + its
    number: 143 after SIGTERM (a scheduler's stop, `kill`), else 130 (Ctrl-C's, also when no
    handler of :func:`stop_on_signals` saw the stop)."""
    import signal

    return EXIT_TERMINATED if _STOPPED_BY == [signal.SIGTERM] else EXIT_INTERRUPTED


def stop_on_signals(children=lambda: ()):
    """SIGTERM (a job scheduler's stop, `kill`) stops this process as Ctrl-C does (a
    KeyboardInterrupt; in a run's study.optimize, at the next point :class:`_StopGate` allows):
    a run's trial is marked FAIL, interrupted, and retried on resume,
    instead of staying RUNNING until its heartbeat goes stale; a retrain keeps its finished
    runs. ``children``: the --jobs workers, sent SIGTERM in turn (not SIGINT: a worker started
    from `cmd &` or nohup ignores SIGINT). After the first signal,
    SIGINT and SIGTERM are ignored (by :func:`_ignore_signal`, not SIG_IGN): a scheduler signals
    the whole process group, Ctrl-C reaches every process, and a second interrupt must not land
    in the trial's clean-up. Returns the handlers it replaced (for :func:`restore_signals`)."""
    import os
    import signal

    def stop(signum, frame):
        _STOPPED_BY[:] = [signum]
        signal.signal(signal.SIGINT, _ignore_signal)
        signal.signal(signal.SIGTERM, _ignore_signal)
        for p in children():
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        if not _STOP_GATE.hold_stop():  # held while Optuna creates or tells a trial (_StopGate)
            raise KeyboardInterrupt
        from harness.storage import waiting_for_study_lock  # imported by then: the study is open

        if waiting_for_study_lock():  # held, but in a wait another process's lock may make long:
            raise KeyboardInterrupt  # the stale-trial check or a callback, before a trial or after it

    _STOPPED_BY.clear()
    if sys.unraisablehook is not _quiet_lost_stop:
        _quiet_lost_stop.previous = sys.unraisablehook  # type: ignore[attr-defined]
        sys.unraisablehook = _quiet_lost_stop
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, stop)
    return previous


def raise_if_stop_was_lost() -> None:
    """Raise the KeyboardInterrupt of a stop :func:`stop_on_signals`' handler saw while its
    command still runs. The handler's exception is lost where it lands inside a callback of the
    garbage collector (Python prints "Exception ignored" and goes on), and the handler ignores
    later signals: the run trained to its end, exit 0, and no Ctrl-C or SIGTERM could stop it.
    Called at each epoch of a trial and of a retrain run, and at the end of a command that
    writes files (export, results, report); a run's trials check it between trials too."""
    if _stop_lost():
        raise KeyboardInterrupt


def _stop_lost() -> bool:
    """Whether :func:`stop_on_signals`' handler saw a stop while its command still runs (it
    ignores later signals until the handlers are restored): a stop not acted on yet, such as
    one whose KeyboardInterrupt was lost (:func:`raise_if_stop_was_lost`)."""
    import signal

    return bool(_STOPPED_BY) and signal.getsignal(signal.SIGINT) is _ignore_signal


def _quiet_lost_stop(unraisable) -> None:
    """``sys.unraisablehook``: the stop handler's KeyboardInterrupt lost inside a callback is
    not shown as an error (:func:`raise_if_stop_was_lost` raises it again); anything else is."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _STOPPED_BY:
        return
    _quiet_lost_stop.previous(unraisable)  # type: ignore[attr-defined]


def _ignore_signal(signum, frame) -> None:
    """A handler that does nothing, installed where SIG_IGN would be: a signal that had already
    arrived when it was installed (a process group's SIGINT and the parent's SIGTERM landing
    together, both pending until a long kernel returns) runs it, where under SIG_IGN Python raises
    "OSError: Signal 15 ignored due to race condition" in whatever clean-up runs next."""


def restore_signals(previous) -> None:
    import signal

    for sig, handler in previous.items():
        signal.signal(sig, handler)


@contextlib.contextmanager
def stops_on_signals(children=lambda: ()):
    """:func:`stop_on_signals` for the block, the replaced handlers restored after it."""
    previous = stop_on_signals(children)
    try:
        yield
    finally:
        restore_signals(previous)


@contextlib.contextmanager
def interrupts_held():
    """Ctrl-C and SIGTERM wait until the block ends, then interrupt as usual (sent again to
    this process): what the block writes lands whole, such as a retrain's weights file and the
    record that names it, or an export's files and their card. Keep the block to writes that
    end in moments. Yields the list of stops held so far (signal numbers). (Not a signal mask:
    torch's threads would take the signal.)"""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # handlers can be set there only
        yield []
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    try:
        yield pending  # the stops held so far: a block may undo its writes when there are any
    finally:
        restore_signals(previous)
        if pending:
            os.kill(os.getpid(), pending[0])


def discard_output(stream) -> None:
    """Point ``stream``'s file descriptor at /dev/null: what is still buffered, and Python's own
    flush at exit, go nowhere instead of failing again once a pipe's reader has left."""
    import os

    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, stream.fileno())
    finally:
        os.close(null)


class _OutputTheReaderMayLeave:
    """``sys.stdout`` or ``sys.stderr`` for a long command: once its reader has left (a closed
    pipe, as in `harness run ... | head`, or `2>&1 | head`), the command goes on with those
    lines discarded, and a closed stdout says so once on stderr (where that is still read). A
    write raised BrokenPipeError out of whatever printed, a trial's callback included, which
    ended the run there with exit status 0."""

    def __init__(self, stream, name: str = "") -> None:
        self._stream = stream
        self._name = name  # said on stderr when it goes ("": nothing said)
        self._gone = False
        self.error: OSError | None = None  # the write's error that ended the output

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except OSError as exc:  # a pipe's reader gone; or a full disk, /dev/full
                self._reader_left(exc)
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except OSError as exc:
                self._reader_left(exc)

    def _reader_left(self, exc: OSError) -> None:
        self._gone, self.error = True, exc
        discard_output(self._stream)
        if self._name:  # stderr is guarded too: a closed one says nothing
            why = "was closed (its reader left)" if isinstance(exc, BrokenPipeError) else f"cannot be written ({exc.strerror or exc})"
            print(f"harness: note: {self._name} {why}; going on without it", file=sys.stderr, flush=True)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def output_the_reader_may_leave():
    """Within the block, ``sys.stdout`` and ``sys.stderr`` outlive their readers
    (:class:`_OutputTheReaderMayLeave`)."""
    import os

    streams = sys.stdout, sys.stderr
    with contextlib.ExitStack() as closed:  # a stream closed from the start (`>&-`) is None: nowhere
        usable = [s if s is not None else closed.enter_context(open(os.devnull, "w")) for s in streams]
        sys.stderr = _OutputTheReaderMayLeave(usable[1])
        sys.stdout = _OutputTheReaderMayLeave(usable[0], "standard output")
        try:
            yield
        finally:
            sys.stdout.flush()  # what is still buffered (--quiet: all of it) fails here, with the note
            sys.stdout, sys.stderr = streams


@contextlib.contextmanager
def output_lost(guarded: bool = True):
    """Within the block, a write to ``sys.stdout`` that fails (a full disk, /dev/full; a pipe
    whose reader left) does not end the command: the rest of its output is discarded, and the
    error is yielded (a list, empty while none) for the caller to report once the work is
    done. It was an OSError traceback out of print (exit 1), or at the end a failed result after
    the work was done. ``guarded`` False: the block as it is (run and retrain guard their own,
    :func:`output_the_reader_may_leave`)."""
    lost: list[OSError] = []
    stdout = sys.stdout
    if not guarded or stdout is None:  # None: closed from the start (`>&-`): print() writes nothing
        yield lost
        return
    sys.stdout = guard = _OutputTheReaderMayLeave(stdout)
    try:
        yield lost
        guard.flush()  # what is still buffered fails here, not in Python's flush at exit
    finally:
        sys.stdout = stdout
        if guard.error is not None:
            lost.append(guard.error)


def _worker_process(plan: RunPlan, forward) -> None:  # entry point of a --jobs child (spawned)
    stop_on_signals()
    try:
        interrupted = run_trials(plan, forward)
    except HarnessError as exc:
        from harness.storage import redact

        print(redact(f"harness: error: {plan.tag}{exc}"), file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:  # Ctrl-C before its first trial (start-up, opening the study)
        interrupted = True
    sys.exit(exit_status_after_stop() if interrupted else 0)


def _split(total: int | None, parts: int) -> list[int | None]:
    if total is None:
        return [None] * parts
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _say_what_waits(study, cfg) -> None:
    """A note on stderr when trials wait in a full study: [[enqueue]] tables added to the study
    file since, and trials enqueued in it (tables, retries) that no run has taken yet."""
    from optuna.trial import TrialState

    from harness.study import counted, not_yet_enqueued

    added = len(not_yet_enqueued(study, cfg))
    queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    parts = ([f"{added} of the study file's [[enqueue]] not in it yet"] if added else []) + (
        [f"{queued} enqueued in it"] if queued else [])  # fmt: skip
    if parts:
        total = added + queued
        print(f"note: {counted(total, 'trial')} {'waits' if total == 1 else 'wait'} to run ({'; '.join(parts)}): "
              f"--trials {total} runs {'it' if total == 1 else 'them'} first", file=sys.stderr)  # fmt: skip


def run_study(plan: RunPlan) -> RunOutcome:
    """Run the plan's trials (in ``plan.jobs`` processes) and print the study's summary."""
    import optuna

    from harness.config import load_study_config
    from harness.storage import sqlite_path
    from harness.study import summarize

    # Our own lines say what happens; Optuna's info lines ("A new study created ...") would
    # interleave with them.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cfg = load_study_config(plan.study_file)
    if plan.changed:  # allowed (they steer the search, not how a trial is measured), but said
        print(f"note: study {cfg.name!r} resumes with {'; '.join(plan.changed)}: the trials from here on "
              "follow the study file", file=sys.stderr, flush=True)  # fmt: skip
    if plan.n_trials == 0 or plan.timeout == 0:  # nothing to run: nothing is written either
        from harness.storage import make_storage, safe_url

        if plan.n_trials == 0 and plan.study_trials:  # the study's total is reached, not a --trials 0
            print(f"study {cfg.name!r} holds {plan.finished or 0} finished trials, study.n_trials = "
                  f"{plan.study_trials}: nothing to run (--trials N runs N more)")  # fmt: skip
        else:
            print(f"{'--trials 0' if plan.n_trials == 0 else 'a timeout of 0 s'}: nothing to run")
        if plan.finished is None:
            print(f"no study {cfg.name!r} in {safe_url(plan.url)} yet: none created")
            return RunOutcome(interrupted=False)
        storage = make_storage(plan.url, read_only=True)
        try:
            stored = optuna.load_study(study_name=cfg.name, storage=storage)
            for line in summarize(stored, cfg.stale_after, cfg.n_trials).lines():
                print(line)
            if plan.n_trials == 0 and plan.study_trials:  # a full study: what waits is never run unless asked
                _say_what_waits(stored, cfg)
        finally:
            storage.engine.dispose()
        return RunOutcome(interrupted=False)
    path = sqlite_path(plan.url)
    if path is not None:  # the database's folder (study.results_dir): made once there is something to run
        path.parent.mkdir(parents=True, exist_ok=True)
    if plan.n_trials is None and not plan.timeout:  # said even with --quiet: nothing else will end it
        print(f"note: study {cfg.name!r} has study.n_trials = 0 and no timeout: the run goes on until it is "
              "stopped (Ctrl-C keeps every finished trial; --trials N or --timeout S bound it)", file=sys.stderr, flush=True)  # fmt: skip
    if not plan.quiet:
        estimate = cpu_time_estimate(cfg, plan)
        if estimate:
            print(estimate, flush=True)
    procs: list = []  # the --jobs workers, once started
    with stops_on_signals(lambda: procs):
        return _run_and_summarize(plan, cfg, procs)


def _run_and_summarize(plan: RunPlan, cfg, procs: list) -> RunOutcome:
    """run_study's trials, in this process or ``plan.jobs`` workers (appended to ``procs``)."""
    import multiprocessing

    import torch

    from harness.study import open_study, summarize

    outcome = RunOutcome(interrupted=False)
    if plan.jobs == 1:
        outcome = RunOutcome(interrupted=run_trials(plan))
    else:
        # K processes on one study: the study and baseline are created here first, so the
        # workers only join. Each runs its share of the trials from its own sampler stream;
        # on several GPUs, worker i uses GPU i mod count.
        from harness.dashboard import Publisher

        publisher = Publisher(open_study(cfg, plan.url), plan.url)
        gpus = torch.cuda.device_count() if plan.device in ("auto", "cuda") else 0
        # K CPU workers with torch's default of one thread per core each would oversubscribe
        # the cores K times over (measured 0.43x the throughput of one worker with K=2 on 2
        # cores): give each worker its share of the cores instead.
        threads = 0 if gpus else _worker_threads(_workers_started(plan))
        ctx = multiprocessing.get_context("spawn")  # no CUDA state or sqlite handles inherited
        # The workers' progress, drawn here as one view. One queue per worker: a queue's writers
        # share a lock, and a worker killed while holding it would block every other one.
        events = []
        for i, share in enumerate(_split(plan.n_trials, plan.jobs)):
            if share == 0:
                continue
            device = f"cuda:{i % gpus}" if gpus > 1 else plan.device
            child = dataclasses.replace(plan, n_trials=share, device=device, tag=f"[w{i}] ", threads=threads, jobs=1)
            events.append(ctx.Queue())
            procs.append(ctx.Process(target=_worker_process, args=(child, events[-1]), name=f"harness-w{i}"))
        progress = Progress(plan.n_trials, cfg.train.epochs, quiet=plan.quiet, timeout=plan.timeout,
                            workers=len(procs))  # fmt: skip
        interrupted = False
        try:
            for p in procs:
                p.start()
            _follow(procs, events, progress, publisher)
        except KeyboardInterrupt:  # the children got the same signal (or were sent SIGTERM): let them finish cleanly
            interrupted = True
            _follow(procs, events, progress, publisher, interruptible=False)
        finally:
            progress.close()
            publisher(force=True, wait=not _STOPPED_BY)
        outcome = _workers_outcome([p.exitcode for p in procs], stopped_here=interrupted)
    for line in summarize(open_study(cfg, plan.url, create=False), cfg.stale_after, cfg.n_trials).lines():
        print(line)
    return outcome


@dataclass(frozen=True)
class ProgressEvent:
    """One thing a trial did, sent from a ``--jobs`` worker to the parent's progress view."""

    tag: str
    trial: int
    epoch: int = 0  # an epoch event when outcome == ""
    val_acc: float = math.nan
    seconds: float = 0.0  # since the trial started
    outcome: str = ""  # a finished trial: harness.study.classify()
    line: str = ""
    trained_val: float = math.nan  # with weight averaging: the trained weights' score (what the pruner sees)


def _workers_outcome(codes: list[int | None], stopped_here: bool) -> RunOutcome:
    """The run's outcome from its --jobs workers' exit codes (None: never started; -N: ended by
    signal N). Stopped here (this process's Ctrl-C or SIGTERM, passed on as SIGTERM): a worker
    the signal ended before its handler was installed, or one never started, was stopped, not
    failed. Not stopped here but a worker was (a `kill` of its own): the run is stopped too, and
    ends with that worker's status (:func:`exit_status_after_stop`)."""
    import signal

    stopped = {EXIT_INTERRUPTED, EXIT_TERMINATED}
    if stopped_here:
        stopped |= {-signal.SIGINT, -signal.SIGTERM, None}
    elif any(c in stopped for c in codes):
        _STOPPED_BY[:] = [signal.SIGTERM if EXIT_TERMINATED in codes else signal.SIGINT]
    return RunOutcome(interrupted=stopped_here or any(c in stopped for c in codes), workers=len(codes),
                      bad_codes=tuple(c for c in codes if c != 0 and c not in stopped))  # fmt: skip


def _follow(procs, events: list, progress: Progress, publisher, interruptible: bool = True) -> None:
    """Draw the workers' progress events until every worker has exited; keep the dashboard's
    view current meanwhile."""
    import queue
    import signal

    def drain(timeout: float) -> None:
        time.sleep(timeout)
        for q in events:
            try:
                while True:
                    progress.show(q.get_nowait())
            except queue.Empty:
                pass

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    if not interruptible:  # a second Ctrl-C (or SIGTERM) must not leave the workers unjoined
        for sig in previous:
            signal.signal(sig, _ignore_signal)
    try:
        while any(p.is_alive() for p in procs):
            drain(0.5)
            if interruptible:
                publisher()
        for p in procs:
            if p.pid is not None:  # started
                p.join()
        drain(0.1)
    finally:
        restore_signals(previous)


def _worker_threads(jobs: int) -> int:
    """torch threads of each of ``jobs`` worker processes training on one CPU: its share of the cores."""
    import os

    return max(1, (os.cpu_count() or 1) // jobs)


def _workers_started(plan: RunPlan) -> int:
    """How many of ``--jobs K`` worker processes get trials: fewer trials than K start fewer
    (and the cores are shared among those that start)."""
    return sum(share != 0 for share in _split(plan.n_trials, plan.jobs))


def _training_images(cfg, data_root: str) -> int:
    """Training images per epoch: the IDX header's count (60,000 for MNIST) less the validation split."""
    import struct

    from harness.data import raw_folder

    try:
        with open(raw_folder(data_root) / "train-images-idx3-ubyte", "rb") as f:
            total = struct.unpack(">II", f.read(8))[1]
    except (OSError, struct.error):
        total = 60_000
    images = max(total - cfg.data.val_size, 1)
    return min(images, cfg.data.train_limit) if cfg.data.train_limit else images


ESTIMATE_BATCH_CAP = 1024  # images per batch the CPU estimate times at most (a larger batch: scaled per image)


def cpu_time_estimate(cfg, plan: RunPlan) -> str:
    """On a CPU, a rough duration of the run, timed on this machine: a few training steps of
    the baseline network with the study's batch size. Points to ``<name>-cpu.toml`` beside the
    study file when the run would take hours. "" on a GPU."""
    from pathlib import Path

    import torch

    from harness.study import counted
    from harness.study import format_duration as _fmt_duration
    from harness.train import DivergedError, resolve_device, seconds_per_step
    from search_spaces import baseline_spec

    device = resolve_device(plan.device)
    if device.type != "cpu":
        return ""
    teacher = None
    if cfg.train.teacher:  # checked by plan_run; its forward pass is part of every step
        from harness.teacher import load_teacher

        teacher = load_teacher(cfg.teacher_path(), device)
    images = _training_images(cfg, plan.data_root)
    # Training caps a batch at the training images (one batch per epoch). The timing caps it
    # lower still and counts per image: batches of the raw batch_size (100,000) were killed for
    # memory before any output, and a 55,000-image batch timed 14 epochs' work before the first line.
    batch = min(cfg.train.batch_size, images)
    timed = min(batch, ESTIMATE_BATCH_CAP)
    try:
        # timed with the threads each process trains with: a --jobs worker gets its share of the cores
        threads = plan.threads or (_worker_threads(_workers_started(plan)) if plan.jobs > 1 else torch.get_num_threads())
        step = seconds_per_step(baseline_spec(), dataclasses.replace(cfg.train, batch_size=timed), device,
                                threads=threads, teacher=teacher) * batch / timed  # fmt: skip
    except DivergedError:  # a recipe that diverges on random images gets no estimate; its trials say why
        return ""
    per_trial = step * (images // batch) * cfg.train.epochs * cfg.repeats
    seeds = f" with {cfg.repeats} seeds" if cfg.repeats > 1 else ""
    text = (f"estimate on this CPU: ~{_fmt_duration(per_trial)} per {cfg.train.epochs}-epoch trial{seeds} of the "
            f"{batch}-image-batch baseline on {images:,} images (timed over a few steps here)")  # fmt: skip
    # K workers take the trials in rounds: one trial takes a whole trial's time, however many workers
    total = per_trial * math.ceil(plan.n_trials / max(plan.jobs, 1)) if plan.n_trials else None
    if plan.timeout and (total is None or total > plan.timeout):
        total = plan.timeout
        text += f"; the run stops after {_fmt_duration(plan.timeout)} (timeout)"
    elif total is not None:
        text += (f"; {counted(plan.n_trials, 'trial')}: ~{_fmt_duration(total)} of training (rejections and "
                 "pruning make it less; start-up and scoring add to it)")  # fmt: skip
    if total is None or total > 3600:
        stem = Path(plan.study_file)
        smaller = stem.with_name(f"{stem.stem}-cpu.toml")
        text += (f". For a CPU-sized search: harness run {smaller}" if smaller.is_file() and not stem.stem.endswith("-cpu")
                 else ". Fewer trials (--trials), epochs or train_limit shorten it")  # fmt: skip
    return text


class Progress:
    """One line per finished trial, and (unless quiet) a status bar for the whole run: on a
    terminal a live bar; elsewhere (a log file, a pipe) the bar's text as one plain line on
    stderr after each finished trial, and after an epoch at most once a minute (a CPU trial
    can take an hour), without the bar's redraws (carriage returns).

    The bar counts trained trials and rejections separately (a rejection takes milliseconds)
    and shows the time left (:meth:`eta_seconds`). A ``--jobs`` worker is built with
    ``forward`` (a queue): its events go to the parent's Progress (:meth:`show`), which alone
    draws.
    """

    TRAINED = ("complete", "pruned", "failed")
    PLAIN_EVERY = 60.0  # seconds between plain status lines written at an epoch

    def __init__(self, total: int | None, epochs: int, quiet: bool, *, tag: str = "", timeout: float | None = None,
                 workers: int = 1, forward=None) -> None:  # fmt: skip
        self.quiet, self.epochs, self.tag, self.forward = quiet, epochs, tag, forward
        self.total, self.timeout, self.workers = total, timeout, workers
        self.start = time.monotonic()
        self.counts: dict[str, int] = {}
        self.trained_seconds = 0.0
        self.running: dict[tuple[str, int], ProgressEvent] = {}
        self.bar = None
        drawn_here = not quiet and forward is None
        self.plain = drawn_here and not _is_terminal(sys.stderr)
        self.plain_at = -math.inf  # when the last plain status line was written
        if drawn_here and not self.plain:
            from tqdm import tqdm

            # tqdm's own rate and ETA would count millisecond rejections like trainings: ours is in desc
            # (no total: the count is in desc, where "1 trial" can be spelled)
            fmt = "|{bar:20}| {n_fmt}/{total_fmt} trials, {desc}" if total else "{desc}"
            self.bar = tqdm(total=total, dynamic_ncols=True, file=sys.stderr, bar_format=fmt)
            if not total:  # not a blank line until the first event
                self.bar.set_description_str(self._bar_text(), refresh=True)

    # --- events, where the trials run -------------------------------------------------------
    def epoch(self, trial, epoch: int, val_acc: float, trained_val: float = math.nan) -> None:
        """``val_acc``: the score selected on; ``trained_val``: with weight averaging, the trained
        weights' score (the pruner's), else NaN."""
        self._emit(ProgressEvent(self.tag, trial.number, epoch, val_acc, _since(trial), trained_val=trained_val))

    def trial_done(self, study, trial) -> None:
        from harness.study import classify, outcome_text, param_count, val_acc

        kind, ua = classify(trial), trial.user_attrs
        origin = ua.get("origin", "")
        if origin == "retry" and ua.get("retry_of") is not None:
            origin = f"retry of trial {ua['retry_of']}"
        base = f" ({origin})" if origin and origin != "sampler" else ""
        if kind == "complete":
            vals = ua.get("repeat_val_accs") or []  # with repeats: val is their mean, test the first seed's
            spread = f" (seeds {' '.join(f'{v:.4f}' for v in vals)})" if len(vals) > 1 else ""
            msg = (f"val {val_acc(trial):.4f}{spread} test {ua.get('test_acc', float('nan')):.4f} "
                   f"{param_count(ua, 0):,} params {ua.get('train_seconds', 0):.1f}s")  # fmt: skip
        elif kind in ("over_budget", "invalid", "duplicate"):
            msg = outcome_text(trial)
        elif kind == "pruned":
            msg = f"{outcome_text(trial)} ({param_count(ua, 0):,} params)"
        else:
            msg = f"{kind}: {ua.get('fail_reason', '')}"
        seconds = trial.duration.total_seconds() if trial.duration is not None else _since(trial)
        self._emit(ProgressEvent(self.tag, trial.number, seconds=seconds, outcome=kind,
                                 line=f"{self.tag}trial {trial.number}{base}: {msg}"))  # fmt: skip

    def note(self, line: str) -> None:
        """A line of text (not a trial), shown even when quiet."""
        self._emit(ProgressEvent(self.tag, -1, outcome="note", line=line))

    def _emit(self, event: ProgressEvent) -> None:
        if self.forward is not None:
            self.forward.put(event)
        else:
            self.show(event)

    # --- the view, in the process that draws ------------------------------------------------
    def show(self, event: ProgressEvent) -> None:
        key = (event.tag, event.trial)
        if event.outcome == "note":
            if self.bar is None:
                print(event.line, flush=True)
            else:
                self.bar.write(event.line)
            return
        if not event.outcome:
            self.running[key] = event
            if self.bar is not None:
                self.bar.set_description_str(self._bar_text(), refresh=True)
            elif self.plain and time.monotonic() - self.plain_at >= self.PLAIN_EVERY:
                self._plain_status()
            return
        self.running.pop(key, None)
        self.counts[event.outcome] = self.counts.get(event.outcome, 0) + 1
        if event.outcome in self.TRAINED:
            self.trained_seconds += event.seconds
        if self.quiet:
            return
        if self.bar is None:
            print(event.line, flush=True)
            if self.plain:
                self._plain_status()
        else:
            self.bar.write(event.line)
            self.bar.set_description_str(self._bar_text(), refresh=False)
            self.bar.update(1)

    def _plain_status(self) -> None:
        print(self.counted_status(), file=sys.stderr, flush=True)
        self.plain_at = time.monotonic()

    def _bar_text(self) -> str:  # the bar shows "n/total trials" itself
        return self.status() if self.total else self.counted_status()

    def counted_status(self) -> str:
        """``2/3 trials, `` (no total: ``1 trial, ``) and :meth:`status`."""
        from harness.study import counted

        done = sum(self.counts.values())
        return (f"{done}/{self.total} trials, " if self.total else f"{counted(done, 'trial')}, ") + self.status()

    def status(self) -> str:
        """``trained 3, rejected 9 | trial 12 epoch 4/15 val 0.9812, ~1 min left | ETA ~25 min``."""
        from harness.study import format_duration as _fmt_duration

        trained = sum(self.counts.get(k, 0) for k in self.TRAINED)
        rejected = self.counts.get("over_budget", 0) + self.counts.get("invalid", 0)
        parts = [f"trained {trained}, rejected {rejected}"
                 + (f", repeats {self.counts['duplicate']}" if self.counts.get("duplicate") else "")]  # fmt: skip
        for ev in sorted(self.running.values(), key=lambda e: e.trial):
            left = ev.seconds / ev.epoch * (self.epochs - ev.epoch) if ev.epoch else math.nan
            parts.append(f"{ev.tag}trial {ev.trial} epoch {ev.epoch}/{self.epochs} val {ev.val_acc:.4f}"
                         + (f" (averaged; trained weights {ev.trained_val:.4f})" if math.isfinite(ev.trained_val) else "")
                         + (f", ~{_fmt_duration(left)} left" if math.isfinite(left) else ""))  # fmt: skip
        eta = self.eta_seconds()
        if eta is not None and not (self.total and sum(self.counts.values()) >= self.total):  # not "~0 s" at the end
            parts.append(f"ETA ~{_fmt_duration(eta)}")
        return " | ".join(parts)

    def eta_seconds(self) -> float | None:
        """Seconds left: the trials not started yet, times the share of proposals that trained,
        times the mean trained trial's time (none yet: the running trials' pace), plus what the
        running trials have left, over the workers; capped by the timeout."""
        trained = sum(self.counts.get(k, 0) for k in self.TRAINED)
        finished = sum(self.counts.values())
        per_trial = self.trained_seconds / trained if trained else None
        running = [ev for ev in self.running.values() if ev.epoch]
        if per_trial is None:  # nothing trained yet: a running trial's pace
            paces = [ev.seconds / ev.epoch * self.epochs for ev in running]
            per_trial = sum(paces) / len(paces) if paces else None
        eta = None
        if self.total and per_trial is not None:
            share = trained / finished if trained else 1.0
            waiting = max(self.total - finished - len(self.running), 0)
            left = sum(ev.seconds / ev.epoch * (self.epochs - ev.epoch) for ev in running)
            eta = (waiting * share * per_trial + left) / max(self.workers, 1)
        if self.timeout:
            left = max(self.timeout - (time.monotonic() - self.start), 0.0)
            eta = left if eta is None else min(eta, left)
        return eta

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced by a test's capture, or closed
        return False


def _since(trial) -> float:
    start = trial.datetime_start
    return (datetime.datetime.now() - start).total_seconds() if start is not None else 0.0
