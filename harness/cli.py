"""Command line: ``harness run | worker | status | export | dashboard | retrain | results | report |
restore | data import``.

Every user error (bad study file, missing data, bad storage) is one line on stderr and exit
status 2, checked before anything is written.
"""

from __future__ import annotations

import argparse
import codecs
import os
import re
import shlex
import sys
from collections.abc import Sequence

from harness.errors import EXIT_USAGE, HarnessError, exception_chain, innermost_message

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        # options spelled in full only: "--sto URL" would pass for --storage (and escape the
        # masking of the command results writes into its file), "--no" for --note
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage + line)
        # the prefix every other error has ("harness retrain: error:" is argparse's); the
        # command is named in the hint
        self.exit(EXIT_USAGE, f"harness: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        # argparse reports unknown arguments from the top parser ("see harness --help"): the
        # hint names the command whose options they were meant for
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            from harness.storage import safe_url

            command = [getattr(parsed, key) for key in ("command", "data_command") if getattr(parsed, key, None)]
            shown = " ".join(safe_url(a) if "://" in a else a for a in extras)  # a URL's password stays unsaid
            self.exit(EXIT_USAGE, f"harness: error: unrecognized arguments: {shown} "
                                  f"(see {' '.join([self.prog, *command])} --help)\n")  # fmt: skip
        return parsed


def _nonempty(value: str) -> str:
    """A path, URL or name argument: an empty one would silently mean the default."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    if "\0" in value:
        raise argparse.ArgumentTypeError("must not contain a NUL character")
    return value


class _Once(argparse.Action):
    """An option that names one thing, refused when given twice: argparse keeps the last, and
    `export --trial 2 --trial 0` (as `retrain --trial` repeats) exported trial 0 alone without
    a word about trial 2."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        earlier = getattr(namespace, self.dest, None)
        if earlier is not None:
            parser.error(f"argument {option_string}: given twice ({earlier}, then {values}): "
                         f"{parser.prog} takes one; run it once for each")  # fmt: skip
        setattr(namespace, self.dest, values)


def _integer(value: str) -> int:
    """A whole-number option: ASCII digits with an optional sign, within 64 bits (what a study
    file and the database hold). Python's int() also took other scripts' digits ("３"),
    underscores ("1_0") and numbers of any size (--epochs 10**20 trained for ever)."""
    text = value.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise argparse.ArgumentTypeError(f"invalid int value: {value!r}")
    number = int(text)
    if abs(number) >= 2**63:
        raise argparse.ArgumentTypeError(f"{value} is out of range (a 64-bit whole number)")
    return number


STORAGE_HELP = ("Optuna storage URL (default: the study file's study.storage, else "
                "sqlite:///<results_dir>/<study name>.db beside the study file)")  # fmt: skip
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps (default: the study file's study.device, else auto)"
DATA_DIR_HELP = ("MNIST root, torchvision layout (default: the study file's data.dir, else $HARNESS_DATA_DIR, "
                 "else ~/.cache/harness/data)")  # fmt: skip


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", type=_nonempty, metavar="URL", help=STORAGE_HELP)


def _add_run_args(run: argparse.ArgumentParser, storage_required: bool = False) -> None:
    run.add_argument("study_file", type=_nonempty, metavar="STUDY.toml")
    run.add_argument("--trials", type=_integer, metavar="N",
                     help="trials to run now, rejections included (default: until the study holds study.n_trials "
                          "finished trials)")  # fmt: skip
    run.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds")
    run.add_argument("--storage", type=_nonempty, metavar="URL", required=storage_required,
                     help="required: the Optuna storage URL every worker shares (e.g. postgresql://...)"
                     if storage_required else STORAGE_HELP)  # fmt: skip
    run.add_argument("--device", type=_nonempty, metavar="D", help=DEVICE_HELP)
    run.add_argument("--data-dir", type=_nonempty, metavar="DIR", help=DATA_DIR_HELP)
    run.add_argument("--download", action="store_true", help="let torchvision download MNIST if it is missing")
    run.add_argument("--jobs", "--workers", type=_integer, default=1, metavar="K",
                     help="run K worker processes on this machine against the same study (default 1)")
    run.add_argument("--quiet", action="store_true", help="no progress bar or per-trial lines")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="harness", description="Parameter-budgeted architecture search for MNIST.")
    parser.add_argument("--version", action="version", version=f"harness {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="create or resume a study and run trials")
    _add_run_args(run)
    worker = sub.add_parser("worker", help="join a study in a shared storage (e.g. PostgreSQL) and run trials")
    _add_run_args(worker, storage_required=True)

    status = sub.add_parser("status", help="print a study's summary without running anything")
    status.add_argument("study_file", type=_nonempty, metavar="STUDY.toml")
    _add_storage(status)

    export = sub.add_parser(
        "export",
        help="write a trial's network as frozen torch.export program (.pt2) + ONNX + a JSON model card, and verify them",
        description="Rebuild a trial's network from its stored spec and weights, write frozen files that "
        "run without the harness, and check them on the MNIST test images.",
    )
    export.add_argument("study_file", type=_nonempty, metavar="STUDY.toml")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--trial", type=_integer, action=_Once, metavar="N", help="export trial number N (must be COMPLETE)")
    which.add_argument("--best", action="store_true",
                       help="export the best feasible trial: completed, within the budget, highest "
                            "VALIDATION accuracy (ties: fewer parameters). The default")  # fmt: skip
    export.add_argument("--seed", type=_integer, action=_Once, metavar="S",
                        help="with --trial: export the model of retrain seed S (0 to --seeds - 1) of `harness retrain`, "
                             "as its lines number them (not the torch seed it trained with)")  # fmt: skip
    export.add_argument("--out", type=_nonempty, metavar="DIR", help="output folder (default: exports/<study name>)")
    export.add_argument("--format", choices=("pt2", "onnx", "torchscript"), action="append",
                        help="a frozen format to write; repeat for several (default: pt2 and onnx). "
                             "torchscript is for older runtimes and deprecated upstream")  # fmt: skip
    export.add_argument("--data-dir", type=_nonempty, metavar="DIR", help="MNIST root for the verification (default as for run)")
    _add_storage(export)

    dash = sub.add_parser("dashboard", help="browse the study (trials, attributes, weights) in optuna-dashboard")
    dash.add_argument("study_file", type=_nonempty, metavar="STUDY.toml")
    dash.add_argument("--port", type=_integer, default=8080, metavar="P", help="TCP port (default 8080)")
    dash.add_argument("--host", default="127.0.0.1", type=_nonempty, metavar="H",
                      help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for all)")  # fmt: skip
    _add_storage(dash)

    retrain = sub.add_parser(
        "retrain",
        help="retrain the best architectures on all 60,000 training images with several seeds",
        description="Retrain the top trials (Pareto study: its front) on the full training set, S seeds "
        "each, and record per-seed test accuracy, mean and std in the study storage.",
    )
    retrain.add_argument("study_file", type=_nonempty, metavar="STUDY.toml")
    retrain.add_argument("--top", type=_integer, metavar="K",
                         help="the K best feasible trials by validation accuracy (default 3); Pareto study: the "
                              "K most accurate points of its front (default: the whole front)")  # fmt: skip
    retrain.add_argument("--spread", type=_integer, metavar="K",
                         help="Pareto study: K points of the front spread evenly over log parameter count, "
                              "its most accurate and its smallest included")  # fmt: skip
    retrain.add_argument("--trial", type=_integer, action="append", metavar="N",
                         help="retrain trial N (repeat for several), chosen by hand: only the trials named, the "
                              "baseline too only if named (several retrains of one study may run at once, one "
                              "per trial: a GPU runs small networks side by side)")  # fmt: skip
    retrain.add_argument("--seeds", type=_integer, default=3, metavar="S", help="seeds per architecture (default 3)")
    retrain.add_argument("--epochs", type=_integer, metavar="E", help="epochs (default: the study's train.epochs)")
    retrain.add_argument("--no-baseline", action="store_true",
                         help="do not add the baseline for comparison (retrained all the same when it is among the "
                              "trials chosen)")  # fmt: skip
    retrain.add_argument("--device", type=_nonempty, metavar="D", help=DEVICE_HELP)
    retrain.add_argument("--data-dir", type=_nonempty, metavar="DIR", help="MNIST root (default as for run)")
    _add_storage(retrain)

    results = sub.add_parser("results", help="markdown table of the retrained winners, exported and verified")
    results.add_argument("study_files", type=_nonempty, metavar="STUDY.toml", nargs="+")
    results.add_argument("--out", type=_nonempty, metavar="FILE.md", required=True, help="markdown file to write")
    results.add_argument("--exports", type=_nonempty, metavar="DIR", default="exports/results",
                         help="where the winners' frozen models go (default exports/results)")  # fmt: skip
    results.add_argument("--note", default="", help="a paragraph put under the title (e.g. 'reduced run')")
    results.add_argument("--data-dir", type=_nonempty, metavar="DIR", help="MNIST root for the verification")
    results.add_argument("--storage", type=_nonempty, metavar="URL",
                         help="Optuna storage URL holding every study given (default: each study file's "
                              "study.storage, else its SQLite file beside it)")  # fmt: skip

    report = sub.add_parser("report", help="write an HTML report (plotly) and a CSV of all trials")
    report.add_argument("study_file", type=_nonempty, metavar="STUDY.toml")
    report.add_argument("--out", type=_nonempty, metavar="FILE.html", help="HTML report (default: <study name>-report.html)")
    report.add_argument("--csv", type=_nonempty, metavar="FILE.csv", help="CSV of all trials (default: <study name>-trials.csv)")
    report.add_argument("--top", type=_integer, default=15, metavar="K", help="rows in the top-trials table (default 15)")
    _add_storage(report)

    restore = sub.add_parser(
        "restore",
        help="rebuild a study whose database is gone from the CSV of its trials (harness report --csv)",
        description="Create the study of STUDY.toml from TRIALS.csv, trial by trial under the same numbers, "
        "checked against the study file; `harness run` then resumes it. A CSV holds no trained weights and "
        "no retrains: retrain what you export.",
    )
    restore.add_argument("study_file", type=_nonempty, metavar="STUDY.toml")
    restore.add_argument("trials_csv", type=_nonempty, metavar="TRIALS.csv",
                         help="the study's trials, as `harness report --csv` wrote them")  # fmt: skip
    restore.add_argument("--storage", type=_nonempty, metavar="URL",
                         help="where to create the study (default: the study file's study.storage, else "
                              "sqlite:///<results_dir>/<study name>.db beside the study file)")  # fmt: skip

    data = sub.add_parser("data", help="manage the MNIST files")
    data_sub = data.add_subparsers(dest="data_command", metavar="{import}", required=True, parser_class=_Parser)
    imp = data_sub.add_parser("import", help="check and install the four MNIST files from DIR (*-ubyte.gz or uncompressed *-ubyte)")
    imp.add_argument("source", type=_nonempty, metavar="DIR", help="folder holding the four MNIST files, each as the "
                     "downloaded *-ubyte.gz or the uncompressed *-ubyte (the .gz where both are)")  # fmt: skip
    imp.add_argument("--data-dir", type=_nonempty, metavar="ROOT", help="where to install (default: $HARNESS_DATA_DIR or ~/.cache/harness/data)")
    return parser


def _version() -> str:
    from harness import __version__

    return __version__


def _cmd_data_import(args: argparse.Namespace) -> int:
    from harness.config import default_data_root
    from harness.data import import_mnist
    from harness.runner import stops_on_signals

    with stops_on_signals():  # SIGTERM stops it as Ctrl-C does: the import's clean-up runs
        dest = import_mnist(args.source, default_data_root(args.data_dir))
    print(f"MNIST checked (md5) and installed in {dest}")
    return 0


def _print_summary(study, stale_after: float | None = None, n_trials: int = 0) -> None:
    from harness.study import summarize

    for line in summarize(study, stale_after, n_trials).lines():
        print(line)


def _study_files(args: argparse.Namespace, cfg, url: str) -> list:
    """The files and folders a command must never write over: the study file, its SQLite
    database (with lock/journal/WAL, via check_outputs), its artifact folder, its distillation
    teacher and the teacher's model card."""
    from pathlib import Path

    from harness.storage import sqlite_path

    files = [Path(args.study_file), cfg.artifact_root(url)]
    teacher = cfg.teacher_path()
    if teacher is not None:  # a changed teacher file would end the study (its sha256 is recorded)
        files += [teacher, teacher.with_suffix(".json")]
    db = sqlite_path(url)
    return files + ([db] if db is not None else [])


def _open_existing(args: argparse.Namespace, *, writable: bool = False, cfg=None):
    """:func:`harness.study.open_existing_study` of ``args.study_file`` and ``args.storage``."""
    from harness.study import open_existing_study

    return open_existing_study(args.study_file, args.storage, writable=writable, cfg=cfg)


def _cmd_status(args: argparse.Namespace) -> int:
    cfg, _, study = _open_existing(args)
    _print_summary(study, cfg.stale_after, cfg.n_trials)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.artifacts import load_weights, open_artifact_store, weights_id
    from harness.data import load_mnist
    from harness.export import DEFAULT_FORMATS, check_formats, check_out_dir, export_trial, output_paths, select_trial
    from harness.retrain import retrained_weights
    from harness.storage import check_outputs, safe_url

    formats = list(dict.fromkeys(args.format or DEFAULT_FORMATS))
    check_formats(formats)
    if args.seed is not None and args.trial is None:
        raise HarnessError("--seed needs --trial N (the retrained trial)")
    cfg, url, study = _open_existing(args)
    out = Path(args.out) if args.out else Path("exports") / cfg.name
    protected = _study_files(args, cfg, url)
    check_outputs({"--out": out}, protected)
    trial = select_trial(study, args.trial)
    if args.seed is None:
        weights_id(trial)  # none stored: said before the artifact folder is looked for
    store = open_artifact_store(cfg.artifact_root(url), create=False)
    retrained = None
    if args.seed is None:
        weights = load_weights(trial, store)
    else:
        weights, retrained = retrained_weights(study, trial.number, args.seed, store)
    check_out_dir(out)
    # The files written inside --out, checked like --out itself (a study file or database of
    # that name, or a link to one, is never overwritten); a folder in their place is refused.
    paths = output_paths(out, cfg.name, trial.number, args.seed, formats)
    check_outputs({f"--out file {p.relative_to(out)}": p for p in paths.values()}, protected, models=True)
    for p in paths.values():
        if p.is_dir():
            raise HarnessError(f"--out {out}: {p.relative_to(out)} exists and is a folder; nothing was exported")
    _, _, test_x, test_y = load_mnist(cfg.data_root(args.data_dir), download=cfg.data.download)
    how = f"trial {trial.number}" if args.trial is not None else f"best feasible trial (by validation): {trial.number}"
    print(f"exporting {how} of study {cfg.name!r}")
    result = export_trial(study, trial, weights, test_x, test_y, out, formats, storage_label=safe_url(url),
                          retrained=retrained)  # fmt: skip
    for line in result.lines:
        print(line)
    print(f"model card: {result.card_path}")
    if not result.ok:
        print("harness: error: an exported file does not reproduce the recorded accuracy (see above)", file=sys.stderr)
        return 1
    return 0


def _cmd_retrain(args: argparse.Namespace) -> int:
    from harness.retrain import run_retrain
    from harness.runner import exit_status_after_stop, output_the_reader_may_leave

    try:
        with output_the_reader_may_leave():  # `harness retrain ... | head`: the retrain goes on
            run_retrain(args.study_file, storage=args.storage, top=args.top, spread=args.spread, numbers=args.trial,
                        seeds=args.seeds, epochs=args.epochs, include_baseline=not args.no_baseline,
                        device=args.device, data_dir=args.data_dir, say=lambda line: print(line, flush=True))  # fmt: skip
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM
        print("interrupted: the finished runs are kept; the same command goes on from them", file=sys.stderr)
        return exit_status_after_stop()
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.config import load_study_config
    from harness.restore import restore_study
    from harness.storage import safe_url, sqlite_path
    from harness.study import counted, storage_to_write

    cfg = load_study_config(args.study_file)
    url = storage_to_write(args.study_file, cfg, args.storage)
    if url.startswith("sqlite") and sqlite_path(url) is None:
        raise HarnessError(f"storage {url!r}: in-memory SQLite keeps nothing; give a file (sqlite:///study.db)")
    restored = restore_study(cfg, url, Path(args.trials_csv))
    kinds = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(restored.outcomes.items()))
    print(f"restored study {cfg.name!r} in {safe_url(url)}: {counted(restored.trials, 'trial')} from "
          f"{args.trials_csv} ({kinds})")  # fmt: skip
    if restored.not_restored:
        print(f"note: not restored (no restore reads them back): column{'s' if len(restored.not_restored) > 1 else ''} "
              f"{', '.join(restored.not_restored)}")  # fmt: skip
    if restored.left_out:
        print(f"note: {counted(restored.left_out, 'waiting trial')} at the CSV's end left out: the next run "
              "enqueues what the study file asks for again")  # fmt: skip
    print("note: a CSV holds no trained weights and no retrains: `harness retrain` what you will export; "
          "`harness run` resumes the study")  # fmt: skip
    return 0


def _same_storage(a: str, b: str) -> bool:
    """Two storage URLs of one database (a SQLite file spelled two ways counts as one)."""
    from harness.storage import sqlite_path

    return a == b or (sqlite_path(a) is not None and sqlite_path(a) == sqlite_path(b))


def _cmd_results(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.export import check_out_dir
    from harness.report import check_writable, temporary_path
    from harness.results import write_results
    from harness.storage import check_outputs, safe_url

    if "\n" in args.note or "\r" in args.note:  # the file shows it as one bold line
        raise HarnessError("--note must be one line")
    try:
        args.note.encode("utf-8")
    except UnicodeEncodeError:  # bytes the shell passed that are no text
        raise HarnessError("--note is not UTF-8 text") from None
    out = _output_file("--out", args.out)  # refused before any winner is exported
    if Path(args.exports).exists() and not Path(args.exports).is_dir():
        raise HarnessError(f"--exports {args.exports} is a file, not a folder")
    studies, protected, named = [], [], {}
    for f in args.study_files:
        ns = argparse.Namespace(study_file=f, storage=args.storage)
        cfg, url, study = _open_existing(ns)
        if cfg.name in named and _same_storage(named[cfg.name], url):  # the same study twice: its rows once
            continue
        if cfg.name in named:  # exports/<name>/ and trial numbers would mix the two
            raise HarnessError(f"{f}: study {cfg.name!r} is also the name of another study given "
                               f"({safe_url(named[cfg.name])}); give studies of one name one at a time")  # fmt: skip
        named[cfg.name] = url
        studies.append((cfg, url, study))
        protected += _study_files(ns, cfg, url)
    check_outputs({"--out": out, "--out (while written)": temporary_path(out), "--exports": Path(args.exports)},
                  protected)  # fmt: skip
    if Path(args.exports).resolve() in out.resolve().parents:  # an exported model could be --out
        raise HarnessError(f"--out {out} is inside --exports {args.exports}: an export could overwrite it, or it an export")
    check_writable(out)  # before any winner is exported
    check_out_dir(Path(args.exports))
    retrained = write_results(studies, out, Path(args.exports), note=args.note, data_dir=args.data_dir,
                              command=_results_command(sys.argv[1:]))  # fmt: skip
    print(f"results: {out}")
    if not retrained:
        print("note: nothing in these studies is retrained yet (harness retrain STUDY.toml): the file says so",
              file=sys.stderr)  # fmt: skip
    return 0


def _results_command(argv: list[str]) -> str:
    """The command line that wrote the results, shell-quoted; the note (printed below it) elided,
    a storage URL's password masked (the file is meant to be committed)."""
    from harness.storage import safe_url

    if argv[:1] != ["results"]:
        return ""

    def shown(before: str, arg: str) -> str:
        if before == "--note":
            return "…" if arg else arg  # an empty note is shown as given: nothing elided
        if arg.startswith("--note=") and arg != "--note=":
            return "--note=…"
        if before == "--storage":
            return safe_url(arg)
        return "--storage=" + safe_url(arg.split("=", 1)[1]) if arg.startswith("--storage=") else arg

    def text(arg: str) -> str:  # a file name's bytes that are no UTF-8, escaped as \xff
        return os.fsencode(arg).decode("utf-8", "backslashreplace")

    return shlex.join(["harness", *(text(shown(argv[i - 1] if i else "", a)) for i, a in enumerate(argv))])


def _cmd_dashboard(args: argparse.Namespace) -> int:
    import socket

    from harness.artifacts import ReadOnlyArtifactStore, open_artifact_store
    from harness.storage import make_storage, safe_url, sqlalchemy_backend

    import importlib.util

    if importlib.util.find_spec("optuna_dashboard") is None:
        raise HarnessError("optuna-dashboard is not installed: pip install optuna-dashboard")
    if not 0 < args.port < 65536:
        raise HarnessError(f"--port must be in 1..65535, got {args.port}")
    from harness.config import load_study_config

    cfg = load_study_config(args.study_file)
    url = args.storage or cfg.default_storage()
    try:
        backend = sqlalchemy_backend(url, known=True)
    except Exception:  # not a database URL: refused with its own message when the storage is opened
        backend = "sqlite"
    if backend not in ("sqlite", "postgresql"):  # optuna-dashboard can delete and edit studies
        raise HarnessError(f"storage {safe_url(url)!r}: harness dashboard opens SQLite and PostgreSQL storages read-only, "
                           f"not {backend}; run optuna-dashboard yourself if you accept that it can change the study")  # fmt: skip
    cfg, url, study = _open_existing(args, cfg=cfg)
    try:  # a clear error now rather than a traceback from the server
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as exc:
        raise HarnessError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    root = cfg.artifact_root(url)  # a folder that is not there is not created: reading only
    store = ReadOnlyArtifactStore(open_artifact_store(root, create=False)) if root.is_dir() else None
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    print(f"optuna-dashboard for study {cfg.name!r} ({safe_url(url)})", flush=True)
    print(f"open http://{shown}:{args.port}/dashboard/studies/{study._study_id}  (Ctrl-C stops)", flush=True)
    import bottle

    from harness.dashboard import read_only_app

    bottle.run(read_only_app(make_storage(url, read_only=True), store), host=args.host, port=args.port)
    return 0


def _output_file(option: str, value: str):
    """The Path of an output file option, refused when it names a folder (one that exists, or
    any name ending in "/": `--out r.html/` wrote a file r.html; `--out .` was a traceback) or
    its folder does not exist."""
    from pathlib import Path

    path = Path(value)
    if path.is_dir():
        raise HarnessError(f"{option} {value} is a folder, not a file")
    if value.endswith(("/", os.sep)) or os.path.basename(value) in (".", ".."):  # Path() drops a last "/" or "/."
        raise HarnessError(f"{option} {value} names a folder (it ends in {'/' if value.endswith('/') else '/.'}), "
                           "not a file")  # fmt: skip
    if not path.parent.is_dir():
        raise HarnessError(f"{option} {value}: folder {path.parent} does not exist")
    return path


def _cmd_report(args: argparse.Namespace) -> int:
    from harness.report import temporary_path, write_report
    from harness.storage import check_outputs
    from harness.study import counted

    if args.top < 1:
        raise HarnessError(f"--top must be >= 1, got {args.top}")
    cfg, url, study = _open_existing(args)
    out = _output_file("--out", args.out or f"{cfg.name}-report.html")
    csv = _output_file("--csv", args.csv or f"{cfg.name}-trials.csv")
    check_outputs({"--out": out, "--csv": csv, "--out (while written)": temporary_path(out),
                   "--csv (while written)": temporary_path(csv)}, _study_files(args, cfg, url))  # fmt: skip
    frame = write_report(study, out, csv, top=args.top, stale_after=cfg.stale_after)
    print(f"report: {out} ({counted(len(frame), 'trial')}); table: {csv}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.runner import output_the_reader_may_leave, plan_run, run_study

    plan = plan_run(
        args.study_file, trials=args.trials, timeout=args.timeout, storage=args.storage, device=args.device,
        data_dir=args.data_dir, download=args.download, jobs=args.jobs, quiet=args.quiet,
    )  # fmt: skip
    with output_the_reader_may_leave():  # `harness run ... | head`: the study goes on
        return _run_exit_status(run_study(plan))


def _run_exit_status(outcome) -> int:
    """A run's exit status from its outcome, with its last line: 1 when a worker failed other than
    on bad input ("N of K workers failed"), else 130/143 when stopped, else 2 when workers
    stopped on bad input (each said which in its own line), else 0."""
    from harness.runner import exit_status_after_stop

    bad_input_only = bool(outcome.failed_workers) and set(outcome.bad_codes) == {EXIT_USAGE}
    if outcome.failed_workers and not bad_input_only:
        print(f"harness: error: {outcome.failed_workers} of {outcome.workers} workers failed "
              f"(exit codes {outcome.bad_codes})", file=sys.stderr)  # fmt: skip
        return 1
    if outcome.interrupted:
        print("interrupted: a trial still running is marked FAIL (interrupted) and retried when the study resumes; "
              "run again to resume", file=sys.stderr)  # fmt: skip
        return exit_status_after_stop()
    return EXIT_USAGE if bad_input_only else 0


def _storage_named(args: argparse.Namespace) -> str:
    """" <the study's database>" for an error about it (its file, or its URL without a password),
    or "" where the command names no single study or its file cannot be read."""
    from harness.config import load_study_config
    from harness.storage import safe_url, sqlite_path

    files = getattr(args, "study_files", None) or [getattr(args, "study_file", None)]  # results takes several
    if len(files) != 1 or not files[0]:
        return ""
    try:
        cfg = load_study_config(files[0])
    except HarnessError:
        return ""
    url = getattr(args, "storage", None) or cfg.storage or cfg.default_storage()
    return f" {sqlite_path(url) or safe_url(url)}"


def _stopped_as_by_ctrl_c(handler):
    """``handler`` with SIGTERM raising KeyboardInterrupt, as Ctrl-C does (runner.stops_on_signals),
    so its clean-up runs (an export's temporary folder, the folders made for it, a report's
    temporary files); SIGTERM's default ends the process without it. run and retrain install
    the same themselves."""

    def handle(args: argparse.Namespace) -> int:
        from harness.runner import raise_if_stop_was_lost, stops_on_signals

        with stops_on_signals():
            status = handler(args)
            raise_if_stop_was_lost()  # one lost inside a garbage-collector callback still ends it as stopped
            return status

    return handle


def _unencodable_output(exc: UnicodeError) -> tuple[str | bytes, int]:
    """What the console cannot encode, one character at a time: a file name's bytes that are no
    UTF-8 (Python's surrogate escapes) written as they are, as ls shows them; any other
    character escaped (\\xe9 on an ASCII console), as Python's stderr does by default. (stdout
    raised UnicodeEncodeError on either, and stderr escaped the file name's bytes.)"""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    char = exc.object[exc.start]
    if 0xDC80 <= ord(char) <= 0xDCFF:
        return bytes([ord(char) - 0xDC00]), exc.start + 1
    one = UnicodeEncodeError(exc.encoding, exc.object, exc.start, exc.start + 1, exc.reason)
    return codecs.backslashreplace_errors(one)


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    # Heartbeats and the retry callback are marked experimental; their use here is deliberate.
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage.*", category=UserWarning)
    codecs.register_error("harness-output", _unencodable_output)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="harness-output")
    args = _parser().parse_args(argv)
    from harness.runner import exit_status_after_stop, forget_stop

    forget_stop()
    handlers = {
        "run": _cmd_run, "worker": _cmd_run, "status": _cmd_status, "export": _cmd_export,
        "dashboard": _cmd_dashboard, "report": _cmd_report, "data": _cmd_data_import,
        "retrain": _cmd_retrain, "results": _cmd_results, "restore": _cmd_restore,
    }  # fmt: skip
    if args.command in ("export", "results", "report"):  # they write files: SIGTERM cleans up as Ctrl-C does
        handlers[args.command] = _stopped_as_by_ctrl_c(handlers[args.command])
    import sqlalchemy

    from harness.runner import output_lost
    from harness.storage import redact  # a driver's message may echo a storage password

    stdout = sys.stdout
    try:
        with output_lost(args.command not in ("run", "worker", "retrain")) as lost:  # those go on with a note
            status = handlers[args.command](args)
        if lost and not isinstance(lost[0], BrokenPipeError):  # a pipe's reader leaving is no error of ours
            print(f"harness: error: standard output: cannot write: {lost[0].strerror or lost[0]}", file=sys.stderr)
            return status or 1
        return status
    except HarnessError as exc:
        print(redact(f"harness: error: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    except (sqlalchemy.exc.DatabaseError, optuna.exceptions.StorageInternalError) as exc:
        # Optuna wraps SQLAlchemy's errors, which wrap the driver's: look at what is inside
        inner = exception_chain(exc)
        operational = next((e for e in inner if isinstance(e, sqlalchemy.exc.OperationalError)), None)
        text = innermost_message(exc)
        if any(w in text for w in ("malformed", "not a database", "disk I/O error")):  # a damaged file
            print(redact(f"harness: error: storage{_storage_named(args)}: {text}"), file=sys.stderr)
        elif operational is not None:  # e.g. a read that waited out another process's write
            print(redact(f"harness: error: storage: {text} (another process may be writing; try again)"), file=sys.stderr)
        else:  # not the database's state: a bug of ours or the driver's, shown in full
            raise
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return exit_status_after_stop()
    except BrokenPipeError:  # `harness status ... | head`: the reader left; not an error of ours
        from harness.runner import discard_output

        discard_output(stdout)  # no second error at exit
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
