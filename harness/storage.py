"""Optuna storages that many worker processes can share safely.

* URLs are checked before anything is created (:func:`check_storage_url`).
* SQLite: every transaction starts with ``BEGIN IMMEDIATE`` and connections wait up to
  ``SQLITE_BUSY_TIMEOUT_S`` for the write lock. SQLite's default deferred transactions take
  the write lock only at their first write, and a reader that tries to upgrade while another
  process writes gets SQLITE_BUSY at once, without waiting: that is Optuna's "database is
  locked" with several workers (optuna#820, #4994). Taking the lock up front makes the busy
  timeout apply to every write, and also makes "pop a WAITING trial" atomic, so an enqueued
  trial runs once (optuna#2925). Trials last seconds, so serialising writes costs nothing.
* Heartbeats: a worker that dies (SIGKILL, power loss) leaves a RUNNING trial; with a
  heartbeat interval set, the next worker to start a trial marks it FAIL and re-enqueues the
  same parameters (:class:`RetryStaleTrial`).
* :func:`study_lock` serialises study creation and the baseline enqueue across processes
  (a file lock beside a SQLite database; an advisory lock on PostgreSQL; both taken by
  polling, so that a stop can end the wait), since Optuna's own "enqueue unless present"
  check is not atomic.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import re
import threading
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy import event

from harness.errors import StorageError, innermost_message

__all__ = [
    "SQLITE_BUSY_TIMEOUT_S", "STALE_RETRIES", "RetryStaleTrial", "check_can_write_in", "check_optuna_sqlite", "check_outputs", "check_storage_url",
    "check_study_storage",
    "heartbeat_ages", "make_storage", "redact", "safe_url",
    "sqlalchemy_backend", "sqlite_files", "sqlite_path", "storage_beside", "study_lock",
]  # fmt: skip

SQLITE_BUSY_TIMEOUT_S = 600.0  # seconds a SQLite connection waits for the write lock
SQLITE_READ_TIMEOUT_S = 5.0  # seconds a read-only command waits for a writer's commit


_PASSWORDS: set[str] = set()  # of every storage URL checked in this process: never printed


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages and files: everything between "user:"
    and the authority's last "@" (a password holding an unescaped "@" reads so to a person),
    a password SQLAlchemy parses (one holding "/"), and a ``password=`` query value."""
    masked = re.sub(r"(://[^/:@]*:)[^/]*@", r"\1***@", url)
    try:
        password = sqlalchemy.engine.make_url(url).password
    except sqlalchemy.exc.ArgumentError:
        password = None
    if password and masked == url:  # one the pattern missed (it holds "/"): SQLAlchemy renders it masked
        masked = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", masked)


def redact(text: str) -> str:
    """``text`` with the password of every storage URL seen so far masked (driver messages may
    echo it). Passwords under 4 characters are left: masking them would garble any message."""
    for password in sorted(_PASSWORDS, key=len, reverse=True):
        if len(password) >= 4:
            text = text.replace(password, "***")
    return text


def _remember_password(url: str) -> None:
    match = re.search(r"://[^/:@]*:([^/]*)@", url)  # as typed, percent-encoded or not
    if match and match.group(1):
        typed = match.group(1)
        _PASSWORDS.update({typed, urllib.parse.unquote(typed)})
        # an unescaped "@" splits it for the driver, whose messages may then name a piece as a host
        _PASSWORDS.update(typed.split("@"))
    _PASSWORDS.update(urllib.parse.unquote(m) for m in re.findall(r"[?&]password=([^&]*)", url))
    try:
        password = sqlalchemy.engine.make_url(url).password
    except sqlalchemy.exc.ArgumentError:
        return
    if password:
        _PASSWORDS.add(str(password))
    _PASSWORDS.discard("")


def sqlalchemy_backend(url: str, known: bool = False) -> str:
    """The database of a storage URL: "sqlite", "postgresql", "mysql", ... With ``known``, one
    SQLAlchemy has a dialect for (else it raises, as for a URL that does not parse)."""
    parsed = sqlalchemy.engine.make_url(url)
    if known:
        parsed.get_dialect()
    return parsed.get_backend_name()


def storage_beside(url: str, folder: Path) -> str:
    """``study.storage`` with a relative SQLite file made relative to the study file's folder,
    like every other path in a study file (it had been the working directory's: two working
    directories, two studies). Other URLs unchanged."""
    try:
        parsed = sqlalchemy.engine.make_url(url) if url else None
    except sqlalchemy.exc.ArgumentError:
        return url  # refused with its own message where the storage is opened
    if parsed is None or parsed.get_backend_name() != "sqlite" or not parsed.database:
        return url
    db = parsed.database
    if db == ":memory:" or db.startswith("file:") or Path(db).expanduser().is_absolute():
        return url
    return parsed.set(database=str((folder / db).resolve())).render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for other URLs and in-memory SQLite."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser().resolve()


def check_study_storage(url: str, study_file: str | Path, from_study_file: bool) -> None:
    """:func:`check_storage_url`; an error names the study file and its ``study.storage`` when
    the URL came from there (not from --storage)."""
    try:
        check_storage_url(url)
    except StorageError as exc:
        if not from_study_file:
            raise
        raise StorageError(f"{study_file}: study.storage: {exc}") from None


def check_storage_url(url: str) -> None:
    """Reject a storage URL that cannot work, before anything is created.

    Raises:
        StorageError: the URL does not parse, names an unknown database scheme or a missing
            driver, gives SQLite query arguments, or points at a SQLite file in a folder that
            does not exist.
    """
    _remember_password(url)
    shown = safe_url(url)
    authority = url.split("://", 1)[1].split("/", 1)[0] if "://" in url else ""
    if authority.count("@") > 1:
        raise StorageError(f"storage URL {shown!r}: its password holds an '@'; write it as %40")
    try:
        parsed = sqlalchemy.engine.make_url(url)
        parsed.get_dialect().import_dbapi()  # the driver module itself (psycopg2, MySQLdb, ...)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(f"storage URL {shown!r} is not a valid database URL (e.g. sqlite:///study.db)") from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise StorageError(f"storage URL {shown!r}: unknown database scheme {url.split(':', 1)[0]!r}") from None
    except ImportError as exc:
        raise StorageError(f"storage URL {shown!r}: database driver not installed ({exc})") from None
    if parsed.get_backend_name() == "sqlite" and parsed.query:
        # the harness sets SQLite's timeout, read-only mode and locking itself; the driver would
        # ignore the others with a warning (or, with uri=true, open another file): a typo like
        # ?timout=30 would look as if it took effect
        raise StorageError(f"storage URL {shown!r}: SQLite URLs take no query arguments here "
                           f"(got {', '.join(sorted(parsed.query))}); write sqlite:///path/to/file.db")  # fmt: skip
    path = sqlite_path(url)
    if path is not None and not path.parent.is_dir():
        raise StorageError(f"storage URL {shown!r}: folder {path.parent} does not exist")


_OPTUNA_TABLES = {"studies", "trials", "alembic_version"}
# Every table of an Optuna RDB storage (schema v3): a proper subset is one being created.
_OPTUNA_ALL_TABLES = _OPTUNA_TABLES | {
    "study_directions", "study_system_attributes", "study_user_attributes", "trial_heartbeats",
    "trial_intermediate_values", "trial_params", "trial_system_attributes", "trial_user_attributes",
    "trial_values", "version_info",
}  # fmt: skip


def _sqlite_tables(path: Path) -> set[str] | None:
    """The table names of the SQLite file at ``path``, read without writing; None if it is not SQLite."""
    import sqlite3

    with open(path, "rb") as f:  # not _is_sqlite_file: an unreadable file is said so by the caller
        if f.read(16) != b"SQLite format 3\x00":
            return None
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=SQLITE_READ_TIMEOUT_S)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise StorageError(f"{path}: database is locked by another process's write "
                               f"(waited {SQLITE_READ_TIMEOUT_S:.0f} s); try again") from None  # fmt: skip
        if "readonly" in str(exc):  # a hot journal: a writer crashed mid-transaction
            raise StorageError(f"{path}: a crashed writer left an unfinished transaction "
                               "(`harness run` rolls it back)") from None  # fmt: skip
        return None
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()


def _tables_once_created(path: Path) -> set[str] | None:
    """Some of Optuna's tables and not yet the rest: another process may be creating the storage
    (SQLite commits each CREATE TABLE alone), holding :func:`study_lock`'s file while it does.
    Wait for that lock (opened read-only: nothing written) and read the tables again; None when
    there is no lock file (not a harness process's creation)."""
    lock_file = path.with_name(path.name + ".lock")
    try:
        f = open(lock_file, "rb")
    except OSError:
        return None
    with f:
        fcntl.flock(f, fcntl.LOCK_SH)
        try:
            return _sqlite_tables(path)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_optuna_sqlite(url: str, *, for_writing: bool) -> None:
    """A SQLite file must be an Optuna storage before anything opens it (reading or writing).

    Reading (``for_writing=False``): the file must exist and hold Optuna's tables; opening an
    empty or foreign file through Optuna would create its tables there. Writing (``harness
    run``): a missing or 0-byte file is fine (it becomes the storage); a file that is not SQLite,
    or a SQLite database holding other tables, is refused rather than having 13 tables added.

    Raises:
        StorageError: naming the file and what it holds.
    """
    path = sqlite_path(url)
    if path is None:
        if not for_writing and sqlalchemy_backend(url) == "sqlite":
            raise StorageError(f"storage {url!r}: in-memory SQLite holds no study between commands; "
                               "give the study's database file (sqlite:///path.db)")  # fmt: skip
        return
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        if for_writing:
            return
        raise StorageError(f"{path}: no study database here (empty or missing; run `harness run` first)")
    if not path.is_file():
        raise StorageError(f"{path} is not a file")
    try:
        tables = _sqlite_tables(path)
    except StorageError:
        if for_writing and any(path.with_name(path.name + x).exists() for x in ("-journal", "-wal")):
            return  # a writer crashed mid-transaction: the read-write open below rolls it back first
        raise
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None
    if tables is None:
        raise StorageError(f"{path} is not a SQLite database: refusing to use it as a study storage")
    if tables and tables < _OPTUNA_ALL_TABLES and not _OPTUNA_TABLES <= tables:
        tables = _tables_once_created(path) or tables
    if not tables and for_writing:  # an empty database: nothing of anyone's to damage
        return
    if not _OPTUNA_TABLES <= tables:
        what = f"other tables ({', '.join(sorted(tables)[:3])}{', ...' if len(tables) > 3 else ''})" if tables else "no tables"
        raise StorageError(f"{path} is a SQLite database with {what}, not an Optuna study storage: refusing to "
                           f"{'add tables to' if for_writing else 'read'} it")  # fmt: skip


def check_outputs(outputs: dict[str, Path], protected: list[Path], *, models: bool = False) -> None:
    """Output files of a command (flag -> path) must differ from each other and from the
    study's own files (``protected``: the study file, the database with its lock, journal and
    WAL files, the artifact folder and anything in it, a distillation teacher and its card), and
    must not be an existing file of a kind no output is (another study's file, a database,
    code, MNIST's files, and unless ``models`` (an export's files) a model file).

    Raises:
        StorageError: naming the flag, the path and what it would overwrite.
    """
    seen: dict[Path, str] = {}
    guarded = []
    for p in protected:
        r = p.resolve()
        guarded.append(r)
        if r.suffix in _DATABASE_SUFFIXES or _is_sqlite_file(r):  # not there yet, or any name
            guarded += sqlite_files(r)[1:]
    for flag, path in outputs.items():
        r = path.resolve()
        for g in guarded:
            if r == g or g in r.parents:
                what = "folder" if r != g or g.is_dir() else "file"  # the artifact folder itself is a folder
                raise StorageError(f"{flag} {path} would overwrite the study's {what} {g}")
        if r in seen:
            raise StorageError(f"{flag} {path} is also given to {seen[r]}: one output would overwrite the other")
        seen[r] = flag
        # A database's lock, journal, WAL and shared-memory files, there or not yet: SQLite would
        # take a file written there for its own (and delete it, or roll the database back from it)
        base = next((r.with_name(r.name[: -len(x)]) for x in _SQLITE_SIBLINGS if r.name.endswith(x)), None)
        if base is not None and _is_database(base):
            raise StorageError(f"{flag} {path}: refusing to write over the {r.name[len(base.name):]} file of the "
                               f"database {base}")  # fmt: skip
        if not r.is_file():
            continue
        kind = _kind_never_overwritten(r, models)
        if kind is not None:  # never a report's, table's or export's
            raise StorageError(f"{flag} {path}: refusing to overwrite an existing {kind}")
        if _is_sqlite_file(r):  # a database under any name (storage = "sqlite:///studydb")
            raise StorageError(f"{flag} {path}: refusing to overwrite an existing SQLite database")


_DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
#: File kinds no output is, never overwritten where they exist (suffix -> what it is).
_NEVER_OVERWRITTEN = {".toml": "study file (.toml)", **{s: f"database ({s})" for s in _DATABASE_SUFFIXES},
                      ".py": "Python file (.py)", ".gz": "compressed data file (.gz)"}  # fmt: skip
#: Written only by `harness export`, into its --out folder: no report or table goes there.
_MODEL_SUFFIXES = {".pt2": "model file (.pt2), which only `harness export` writes",
                   ".onnx": "model file (.onnx), which only `harness export` writes"}  # fmt: skip
#: Files beside a SQLite database: the study lock's (study_lock) and SQLite's own.
_SQLITE_SIBLINGS = (".lock", "-journal", "-wal", "-shm")


def sqlite_files(path: Path) -> list[Path]:
    """A SQLite database ``path`` and the files beside it (lock, journal, WAL, shared memory)."""
    return [path, *(path.with_name(path.name + x) for x in _SQLITE_SIBLINGS)]


def _kind_never_overwritten(path: Path, models: bool) -> str | None:
    """What an existing file is, when it is of a kind no output of this command is, else None."""
    from harness.data import MNIST_FILES

    suffix = path.suffix.lower()  # M.PT2 is a model too
    if suffix in _NEVER_OVERWRITTEN:
        return _NEVER_OVERWRITTEN[suffix]
    if not models and suffix in _MODEL_SUFFIXES:
        return _MODEL_SUFFIXES[suffix]
    if not models and suffix == ".json" and any(path.with_suffix(s).is_file() for s in _MODEL_SUFFIXES):
        # an export's model card: a study distilling from the model beside it reads it
        return "model card (.json) of the exported model beside it, which only `harness export` writes"
    if path.name in MNIST_FILES:
        return f"MNIST file ({path.name})"
    return None


def _is_sqlite_file(path: Path) -> bool:
    """Whether ``path`` is a regular file that starts with SQLite's header (whatever its name).
    Reads 16 bytes; never opens anything else (a named pipe would block the read)."""
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:  # unreadable
        return False


def _is_database(path: Path) -> bool:
    """An existing SQLite database: a file with its header, or any file with a database suffix
    (an empty one is a database SQLite has not written its header to yet)."""
    return _is_sqlite_file(path) or (path.is_file() and path.suffix in _DATABASE_SUFFIXES)


def heartbeat_ages(study: optuna.Study) -> dict[int, float]:
    """Seconds since the last heartbeat of each RUNNING trial that has one (trial number ->
    age), measured by the database's own clock, as Optuna's stale-trial check does. Reads only.
    Empty for storages that are not relational."""
    storage = getattr(study._storage, "_backend", study._storage)  # Optuna wraps RDB storages in a cache
    engine = getattr(storage, "engine", None)
    if engine is None:
        return {}
    query = sqlalchemy.text(
        "SELECT t.number, h.heartbeat FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
        "WHERE t.study_id = :sid AND t.state = 'RUNNING'"
    )
    with engine.connect() as conn:
        now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
        rows = conn.execute(query, {"sid": study._study_id}).all()
    if isinstance(now, str):  # SQLite returns text
        now = datetime.datetime.fromisoformat(now)
    ages = {}
    for number, beat in rows:
        beat = datetime.datetime.fromisoformat(beat) if isinstance(beat, str) else beat
        ages[int(number)] = (now.replace(tzinfo=None) - beat.replace(tzinfo=None)).total_seconds()
    return ages


def _sqlite_immediate(engine: sqlalchemy.engine.Engine) -> None:
    """SQLAlchemy's documented recipe: let SQLAlchemy, not pysqlite, emit BEGIN, as IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):  # pragma: no cover - exercised through every test
        dbapi_conn.isolation_level = None  # pysqlite must not emit its own deferred BEGIN
        dbapi_conn.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")

    @event.listens_for(engine, "begin")
    def _begin(conn):  # pragma: no cover
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the hooks were attached are dropped


STALE_RETRIES = 3  # a dead trial (its worker killed) is retried up to this many times, retries of retries included


class RetryStaleTrial:
    """Heartbeat-stale trial callback: enqueue the dead trial's parameters again, up to
    ``max_retry`` times, as a fresh trial.

    Unlike Optuna's ``RetryFailedTrialCallback``, the retry does not inherit the dead trial's
    state: its pruner rungs (``completed_rung_*``: the retry must pass them itself), its
    results, failure reason or sampler stream. It keeps what says *what* to train (the
    parameters, and whether it is the baseline or an enqueued architecture) and links back
    with ``failed_trial`` (the trial it retries) and ``retry_history``.

    A trial gets one retry, whoever enqueues it: Optuna marks a stale trial FAIL before it calls
    this back, so a process starting meanwhile can retry the same trial
    (:func:`harness.study.retry_interrupted`). Both check for an existing retry under the study
    lock of ``lock_url`` (given: the heartbeat callback; None: the caller holds the lock).
    """

    KEEP_USER_ATTRS = ("baseline", "enqueued")

    @staticmethod
    def proposal_whole(trial: optuna.trial.FrozenTrial) -> bool:
        """Whether ``trial`` does not hold a part of a proposal: one whose objective began
        (``origin`` recorded) and was stopped while the space drew its parameters (no
        ``spec`` built), unless they were given (the baseline, an enqueued table). A "retry"
        of such a part drew the rest afresh, another network under the retry's name; the next
        run proposes anew instead. One stopped before its objective began drew nothing: its
        retry proposes."""
        ua = trial.user_attrs
        drawing = "origin" in ua and "spec" not in ua
        return not drawing or bool(ua.get("baseline")) or "fixed_params" in trial.system_attrs

    def __init__(self, max_retry: float = STALE_RETRIES, lock_url: str | None = None):
        self.max_retry = max_retry
        self.lock_url = lock_url

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.lock_url is None:
            self.enqueue_once(study, trial)
            return
        with study_lock(self.lock_url, study.study_name):
            self.enqueue_once(study, trial)

    def enqueue_once(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """Enqueue the retry unless the trial has one already, ran out of retries, or stopped
        before its proposal was whole (call it under the study lock). Returns whether it
        enqueued one."""
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > self.max_retry:
            return False
        if not self.proposal_whole(trial):
            return False
        if any(t.system_attrs.get("failed_trial") == trial.number for t in study.get_trials(deepcopy=False)):
            return False
        system_attrs = {"failed_trial": trial.number, "retry_history": history}
        if "fixed_params" in trial.system_attrs:
            system_attrs["fixed_params"] = trial.system_attrs["fixed_params"]
        study.add_trial(
            optuna.create_trial(
                state=optuna.trial.TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs={k: v for k, v in trial.user_attrs.items() if k in self.KEEP_USER_ATTRS},
                system_attrs=system_attrs,
            )
        )
        return True


def make_storage(url: str, heartbeat_interval: int = 0, grace_period: int = 0, *,
                 read_only: bool = False) -> optuna.storages.RDBStorage:  # fmt: skip
    """An RDB storage for ``url``; with ``heartbeat_interval`` (s), stale trials are retried.

    ``read_only`` (status, report, export, results, dashboard): the database itself refuses
    writes (a SQLite file opened ``mode=ro``; PostgreSQL sessions with
    ``default_transaction_read_only``), so nothing, optuna-dashboard's delete and edit buttons
    included, can change the study. SQLite transactions stay deferred, so a read never queues
    for the write lock another process holds (it waits only while a writer commits), and gives
    up after ``SQLITE_READ_TIMEOUT_S`` instead of 600 s.

    Raises:
        StorageError: invalid URL, unreachable server, or a file that is not a database.
    """
    check_storage_url(url)
    kwargs: dict = {}
    _remember_password(url)  # a worker process has not checked the URL itself
    parsed = sqlalchemy.engine.make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite:
        timeout = SQLITE_READ_TIMEOUT_S if read_only else SQLITE_BUSY_TIMEOUT_S
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": timeout}}
        path = sqlite_path(url)
        if read_only and path is not None:
            import sqlite3

            # the URL stays as given (messages, artifact paths); the connections are read-only
            kwargs["engine_kwargs"]["creator"] = lambda: sqlite3.connect(
                f"{path.as_uri()}?mode=ro", uri=True, timeout=timeout, check_same_thread=False)
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
        if read_only and parsed.get_backend_name() == "postgresql":
            # added to the URL's own libpq options (connect_args would replace them)
            given = parsed.query.get("options", "")
            given = " ".join(given) if isinstance(given, tuple) else given
            kwargs["engine_kwargs"]["connect_args"] = {"options": f"{given} -c default_transaction_read_only=on".strip()}
    # In-memory SQLite lives in one connection per thread: the heartbeat thread would not see
    # it, and one process cannot crash half-way anyway.
    if heartbeat_interval and not read_only and (not is_sqlite or sqlite_path(url) is not None):
        kwargs.update(
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period or 2 * heartbeat_interval,
            heartbeat_stale_trial_callback=RetryStaleTrial(max_retry=STALE_RETRIES, lock_url=url),
        )
    try:
        with warnings.catch_warnings():
            # heartbeat_interval is an experimental Optuna argument, used knowingly (crash
            # recovery); its notice is not a deprecation and would print once per worker.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(url, skip_table_creation=read_only, **kwargs)
    except RuntimeError as exc:  # Optuna's schema check: tables of an older (or newer) Optuna
        raise StorageError(redact(f"cannot open storage {safe_url(url)!r}: {str(exc).strip().splitlines()[0]}")) from None
    except (sqlalchemy.exc.SQLAlchemyError, OSError, optuna.exceptions.StorageInternalError) as exc:
        raise StorageError(redact(f"cannot open storage {safe_url(url)!r}: {innermost_message(exc)}")) from None
    if sqlite_path(url) is not None and not read_only:  # a file shared by processes (in-memory: one process)
        _sqlite_immediate(storage.engine)
    return storage


_LOCK_WAITS = [0]  # study_lock waits under way in this process's main thread


def waiting_for_study_lock() -> bool:
    """Whether this process's main thread, where signal handlers run, is waiting for a study
    lock now: a stop that runner's handler would hold for later (while Optuna creates or tells
    a trial) ends the wait instead, since it could last as long as another process holds the
    lock. (Another thread's wait does not count: the stop would land wherever the main thread is.)"""
    return _LOCK_WAITS[0] > 0


def _wait_for_lock(acquire, wait: bool = True) -> bool:
    """Call ``acquire`` (non-blocking: True once the lock is taken) until it takes the lock, in
    Python, where a signal handler can end the wait (a blocking flock or pg_advisory_lock would
    be resumed after each signal). ``wait`` False: one try. Returns whether the lock is taken."""
    if acquire():
        return True
    if not wait:
        return False
    counted = int(threading.current_thread() is threading.main_thread())
    _LOCK_WAITS[0] += counted
    try:
        pause = 0.005
        while not acquire():
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
    finally:
        _LOCK_WAITS[0] -= counted
    return True


def _try_flock(f) -> bool:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def study_lock(url: str, study_name: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold an inter-process lock for ``study_name`` in ``url``; yields True. ``wait`` False:
    yields False at once, holding nothing, when another process holds it.

    Held while the storage's tables, the study and its baseline are created; a file lock
    beside a SQLite database, a PostgreSQL advisory lock, nothing elsewhere.
    """
    _remember_password(url)
    path = sqlite_path(url)
    if path is not None:
        lock_file = path.with_name(path.name + ".lock")
        with open(lock_file, "a+") as f:
            if not _wait_for_lock(lambda: _try_flock(f), wait):
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"harness:{study_name}".encode()).digest()[:8], "big", signed=True)
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                if not _wait_for_lock(lambda: conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"),
                                                           {"k": key}).scalar(), wait):  # fmt: skip
                    yield False
                    return
                try:
                    yield True
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        except sqlalchemy.exc.OperationalError as exc:
            raise StorageError(redact(f"cannot reach storage {safe_url(url)!r}: {innermost_message(exc)}")) from None
        finally:
            engine.dispose()
        return
    yield True  # in-memory SQLite and other databases: one process, or no portable lock


def check_can_write_in(folder: Path, what: str) -> None:
    """Refuse a folder that cannot be made, or written in, before the study's database exists
    (a trial would only find out after training). Probes with a temporary folder, removed."""
    import tempfile

    base = folder
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise StorageError(f"{what} {folder}: {base} is not a folder")
    try:
        Path(tempfile.mkdtemp(prefix=".harness-probe-", dir=base)).rmdir()
    except OSError as exc:
        raise StorageError(f"{what} {folder}: cannot write in {base} ({exc.strerror or exc})") from None
