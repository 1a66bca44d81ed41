"""Retrain the search's winners on all 60,000 training images with several seeds.

The honest protocol: the search selects on the validation split; the claims are the mean
(± std) over seeds of the final-epoch test accuracy of the selected architectures, retrained
on the full training set (no validation split: nothing is selected any more). Results go in
the study storage as a study user attribute per trial, ``retrain:trial<N>``:

    {"trial", "params", "arch", "epochs", "train_images", "test_images", "recipe",
     "runs": {"<seed>": {"test_acc", "train_seconds", "device", "weights",
                         "train_loss": [per epoch], "test_curve": [test accuracy per epoch],
                         "raw_test_curve": [with train.ema_decay: the trained weights' test accuracy]}},
     "seeds", "test_acc", "mean", "std", "torch_version", "harness_version"}

``test_curve`` is a diagnostic (under- or over-fitting at the last epoch?), never a
selection: the claim is the final epoch's ``test_acc``.

Runs already stored (same trial, same epochs, same seed) are kept and not repeated, so an
interrupted retrain resumes where it stopped. Each run's weights are a study artifact, so a
retrained model can be exported (``harness export --trial N --seed S``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

import harness
from harness.config import StudyConfig, TrainConfig
from harness.errors import HarnessError
from harness.runner import interrupts_held, raise_if_stop_was_lost, stops_on_signals
from harness.study import counted, param_count, plus_minus

__all__ = [
    "RETRAIN_SEED_BASE", "retrain_key", "retrain_seed", "retrain_trials", "retrained_weights", "run_retrain",
    "select_for_retrain", "spread_over_params", "stored_retrains",
]  # fmt: skip

RETRAIN_SEED_BASE = 10_000  # retrain seed s trains with torch seed 10_000 + s (see retrain_seed)
EPOCH_LINE_EVERY = 60.0  # seconds between a run's epoch lines: a 20-epoch run on a CPU takes minutes


def retrain_seed(trial: FrozenTrial, s: int) -> int:
    """The torch seed of retrain seed ``s`` of ``trial``: RETRAIN_SEED_BASE + s, unless that is
    one of the seeds the trial trained with in the search (study.seed + trial number, and its
    ``repeat_seeds``; a study seed near 10,000 makes them meet; compared in torch's low 32
    bits). Then a seed derived from (RETRAIN_SEED_BASE + s, the trial's search seeds): a retrain
    must not repeat the initialisation the search selected the trial with, or the selection's
    luck would carry into the claim."""
    seed = RETRAIN_SEED_BASE + s
    searched = [int(t) for t in [trial.user_attrs.get("seed"), *(trial.user_attrs.get("repeat_seeds") or [])]
                if t is not None]  # fmt: skip
    # torch's CPU generator keeps a seed's low 32 bits: seeds equal there are the same seed
    while seed % 2**32 in {t % 2**32 for t in searched}:
        seed = int(np.random.SeedSequence([seed, *searched]).generate_state(1)[0])
    return seed


def retrain_key(number: int) -> str:
    return f"retrain:trial{number}"


def stored_retrains(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """trial number -> its retrain record, for every trial retrained so far."""
    return {int(v["trial"]): v for k, v in study.user_attrs.items() if k.startswith("retrain:trial")}


def retrained_weights(study: optuna.Study, number: int, seed: int, store) -> tuple[dict, dict[str, Any]]:
    """(state dict, retrain info for the model card) of trial ``number`` retrained with ``seed``.

    Raises:
        HarnessError: that trial has no retrained run with that seed.
    """
    from harness.artifacts import load_state_dict

    record = stored_retrains(study).get(number)
    if record is None or str(seed) not in record["runs"]:
        runs = record["runs"] if record else {}
        have = ", ".join(str(s) for s in sorted(map(int, runs))) or "none"
        # --seed S is the retrain's seed number; the torch seed it trained with is another number
        torch_seeds = {run.get("seed"): s for s, run in runs.items()}
        hint = (f"; {seed} is the torch seed of retrain seed {torch_seeds[seed]}: --seed takes that number"
                if seed in torch_seeds else "")
        raise HarnessError(f"trial {number} has no retrained model with seed {seed} (retrained seeds: {have}){hint}")
    run = record["runs"][str(seed)]
    info = {"seed": seed, "test_acc": run["test_acc"], "test_images": record["test_images"],
            "epochs": record["epochs"], "train_images": record["train_images"], "device": run["device"],
            "recipe": record.get("recipe"), "precision": record.get("precision"),
            "teacher": record.get("teacher")}  # fmt: skip
    return load_state_dict(store, run["weights"], f"trial {number} seed {seed}"), info


def select_for_retrain(
    study: optuna.Study, top: int | None, include_baseline: bool = True, spread: int | None = None
) -> list[FrozenTrial]:
    """The trials to retrain, best first.

    Single-objective study: the ``top`` feasible completed trials by validation accuracy
    (ties: fewer parameters), one per distinct architecture + recipe. Pareto study: the
    feasible Pareto front of (validation accuracy, parameters), all of it unless ``top``
    limits it to the ``top`` most accurate points, or ``spread`` to that many points spread
    evenly over the front's log parameter count (its most accurate and its smallest point
    included). The baseline is added when asked.

    Raises:
        HarnessError: no completed trial within the budget; ``spread`` on a single-objective study.
    """
    from harness.study import feasible_trials, pareto_front, rank_key, val_acc

    feasible = all_feasible = feasible_trials(study)
    if not feasible:
        budget = int(study.user_attrs.get("budget", 0))
        raise HarnessError(f"study {study.study_name!r} has no completed trial within the budget of {budget:,} params")
    if study.user_attrs.get("mode") == "pareto":
        feasible = [feasible[i] for i in pareto_front([(param_count(t.user_attrs), val_acc(t)) for t in feasible])]
    elif spread is not None:
        raise HarnessError(f"--spread needs a Pareto study; {study.study_name!r} is single-objective (use --top)")
    ranked = sorted(feasible, key=rank_key)
    chosen, seen = [], set()
    for t in ranked:
        # the same network trained the same way, whichever keys its record predates
        recipe = _learning_recipe(t.user_attrs.get("recipe") or study.user_attrs.get("train") or {})
        key = (t.user_attrs.get("spec"), repr(sorted(recipe.items())))
        if key in seen:
            continue
        seen.add(key)
        chosen.append(t)
        if top is not None and spread is None and len(chosen) >= top:
            break
    if spread is not None:
        chosen = spread_over_params(chosen, spread)
    if include_baseline and not any(t.user_attrs.get("baseline") for t in chosen):
        chosen += [t for t in all_feasible if t.user_attrs.get("baseline")][:1]  # on the front or not
    return chosen


def named_for_retrain(study: optuna.Study, numbers: list[int]) -> list[FrozenTrial]:
    """The trials ``numbers`` (--trial), in the order given, each once.

    Raises:
        HarnessError: a number that is no trial, or a trial that is not trained within the
            budget (a rejected, pruned, failed or waiting one, or a repeat: its original is named).
    """
    from harness.study import classify, feasible_trials, outcome_text

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    feasible = {t.number for t in feasible_trials(study)}
    chosen = []
    for n in dict.fromkeys(numbers):
        if n not in trials:
            last = f"its trials are 0 to {max(trials)}" if trials else "it has no trials"
            raise HarnessError(f"--trial {n}: study {study.study_name!r} has no trial {n} ({last})")
        if n not in feasible:
            t = trials[n]
            why = (f"{counted(param_count(t.user_attrs), 'parameter')}, over the budget"
                   if classify(t) == "complete" else outcome_text(t))  # fmt: skip
            retry = [r.number for r in trials.values() if r.system_attrs.get("failed_trial") == n]
            if retry:
                why += f"; it was retried as trial {retry[0]}"
            raise HarnessError(f"--trial {n}: trial {n} is not a trained trial within the budget ({why})")
        chosen.append(trials[n])
    return chosen


def spread_over_params(trials: list[FrozenTrial], k: int) -> list[FrozenTrial]:
    """``k`` of ``trials`` (all of them if fewer) nearest to ``k`` parameter counts evenly
    spaced in log scale from the smallest to the largest; the result keeps the input order."""
    if len(trials) <= k:
        return list(trials)
    logs = [math.log(param_count(t.user_attrs)) for t in trials]
    lo, hi = min(logs), max(logs)
    picked: set[int] = set()
    for j in range(k):
        goal = lo + (hi - lo) * j / (k - 1) if k > 1 else hi
        i = min((i for i in range(len(trials)) if i not in picked), key=lambda i: (abs(logs[i] - goal), i))
        picked.add(i)
    return [t for i, t in enumerate(trials) if i in picked]


_LEARNING_KEYS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
                  "label_smoothing", "rotation", "translate", "scale", "teacher", "distill_weight",
                  "distill_temperature", "ema_decay", "clean_epochs")  # fmt: skip
_DEFAULT_RECIPE = dataclasses.asdict(TrainConfig())


def _learning_recipe(recipe) -> dict[str, Any]:
    """What changes the learned weights (precision is compared separately, speed options not).
    A key that a record made before it existed lacks had its default value then."""
    d = recipe if isinstance(recipe, dict) else dataclasses.asdict(recipe)
    return {k: d.get(k, _DEFAULT_RECIPE[k]) for k in _LEARNING_KEYS}


def _recipe(cfg: StudyConfig, trial: FrozenTrial, epochs: int | None) -> TrainConfig:
    recipe = cfg.train
    if trial.user_attrs.get("recipe"):
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        recipe = TrainConfig(**{k: v for k, v in trial.user_attrs["recipe"].items() if k in fields})
    return dataclasses.replace(recipe, epochs=epochs) if epochs else recipe


def _sha(record: dict[str, Any] | None) -> str | None:
    """The sha256 of the teacher file a trial or retrain record names, or None."""
    return ((record or {}).get("teacher") or {}).get("sha256")


def load_retrain_teachers(
    cfg: StudyConfig, trials: list[FrozenTrial], epochs: int | None, device
) -> dict[str, tuple[Any, dict[str, Any]]]:
    """The distillation teachers the trials' recipes name (name -> (network on ``device``, record)),
    each checked to be the very file the trial was trained with in the search (sha256): a
    retrain trains what the search selected. No held-out check: a retrain learns from every
    training image and is scored on the test set, which no harness network learns from.

    Raises:
        HarnessError: a teacher is missing or unusable, or is not the trial's.
    """
    from harness.teacher import load_teacher, teacher_record

    teachers: dict[str, tuple[Any, dict[str, Any]]] = {}
    for t in trials:
        name = _recipe(cfg, t, epochs).teacher
        if name and name not in teachers:
            path = cfg.teacher_path(name)
            teachers[name] = (load_teacher(path, device), teacher_record(path))
            if _sha(t.user_attrs) == teachers[name][1]["sha256"]:  # the same file: what the search knew of it
                known = {k: v for k, v in t.user_attrs["teacher"].items() if k != "path"}
                teachers[name][1].update({k: v for k, v in known.items() if teachers[name][1].get(k) is None})
        now = teachers[name][1]["sha256"] if name else None
        if now != _sha(t.user_attrs):
            searched = f"teacher sha256 {_sha(t.user_attrs)[:12]}..." if _sha(t.user_attrs) else "no teacher"
            raise HarnessError(f"trial {t.number} was trained in the search with {searched}, but its recipe now "
                               f"names {('teacher ' + str(cfg.teacher_path(name))) if name else 'none'}"
                               f"{f' (sha256 {now[:12]}...)' if now else ''}: a retrain trains what the search "
                               "selected (restore that teacher file, or use a copy of the study)")  # fmt: skip
    return teachers


def check_retrain_protocol(study: optuna.Study, trials: list[FrozenTrial], cfg: StudyConfig, epochs: int | None,
                           train_images: int, device, teachers: dict[str, tuple[Any, dict[str, Any]]]):
    """Refuse, for every trial before any training, a retrain whose protocol (epochs, training
    images, learning recipe, teacher file, device precision) differs from the runs stored for
    it: those are results, never silently replaced. Returns ``same_protocol(record, recipe)``.

    Raises:
        HarnessError: a trial with stored runs of another protocol.
    """
    from harness.train import precision_settings

    def teacher_sha(recipe: TrainConfig) -> str | None:
        return teachers[recipe.teacher][1]["sha256"] if recipe.teacher else None

    def same_protocol(record: dict | None, recipe: TrainConfig) -> bool:
        return bool(record and record.get("epochs") == recipe.epochs and record.get("train_images") == train_images
                    and _learning_recipe(record.get("recipe") or dataclasses.asdict(recipe)) == _learning_recipe(recipe)
                    and (record.get("teacher") or {}).get("sha256") == teacher_sha(recipe)
                    and record.get("precision", precision_settings(recipe, device))
                    == precision_settings(recipe, device))  # fmt: skip

    for t in trials:
        record, recipe = study.user_attrs.get(retrain_key(t.number)), _recipe(cfg, t, epochs)
        if record and record.get("runs") and not same_protocol(record, recipe):
            raise HarnessError(
                f"trial {t.number} is already retrained with another protocol ({counted(record.get('epochs') or 0, 'epoch')} "
                f"on {record.get('train_images'):,} images, {counted(len(record['runs']), 'seed')}); this retrain "
                f"({counted(recipe.epochs, 'epoch')} on {train_images:,} images) would replace those runs: "
                "use the same --epochs, device precision and teacher file, or a copy of the study"
            )
    return same_protocol


def retrain_trials(
    study: optuna.Study,
    trials: list[FrozenTrial],
    cfg: StudyConfig,
    *,
    seeds: int,
    data,
    store,
    device_label: str,
    epochs: int | None = None,
    say: Callable[[str], None] = print,
    lock: Callable[[], Any] = contextlib.nullcontext,
    teachers: dict[str, tuple[Any, dict[str, Any]]] | None = None,
) -> dict[int, dict[str, Any]]:
    """Retrain each trial's architecture (with its recipe) ``seeds`` times on ``data``.

    ``data`` are MnistSplits with every training image in ``train_*`` (no validation split).
    ``teachers``: :func:`load_retrain_teachers` (loaded here when not given).
    Returns trial number -> retrain record (also stored in the study). Each finished run is
    merged into the record as stored at that moment, under ``lock()`` (the study lock), so
    two retrains of one study at once lose none of each other's runs.
    """
    import torch

    from harness.artifacts import upload_state_dict
    from harness.model import build
    from harness.spec import ArchSpec
    from harness.train import DivergedError, cpu_out_of_memory, evaluate, fit, precision_settings

    if teachers is None:
        teachers = load_retrain_teachers(cfg, trials, epochs, data.device)
    same_protocol = check_retrain_protocol(study, trials, cfg, epochs, len(data.train_x), data.device, teachers)
    out = {}
    for t in trials:
        spec = ArchSpec.from_json(t.user_attrs["spec"])
        recipe = _recipe(cfg, t, epochs)
        teacher, teacher_rec = teachers.get(recipe.teacher, (None, None))
        key = retrain_key(t.number)
        record = study.user_attrs.get(key)
        same = same_protocol(record, recipe)
        if not same:  # no runs yet (a protocol left with no runs is replaced)
            record = {
                "trial": t.number, "params": param_count(t.user_attrs), "arch": spec.describe(),
                "baseline": bool(t.user_attrs.get("baseline")), "epochs": recipe.epochs,
                "train_images": len(data.train_x), "test_images": len(data.test_x),
                "recipe": dataclasses.asdict(recipe), "precision": precision_settings(recipe, data.device), "runs": {},
            }  # fmt: skip
            if teacher_rec is not None:
                record["teacher"] = teacher_rec
        for s in range(seeds):
            if str(s) in record["runs"]:
                continue
            seed = retrain_seed(t, s)
            model = build(spec, seed=seed)
            curve: list[float] = []
            raw_curve: list[float] = []  # with weight averaging: the trained weights' test accuracy

            def test_scorer(into: list[float], model=model, recipe=recipe) -> Callable[[int, float], None]:
                return lambda _epoch, _val: into.append(
                    round(evaluate(model, data.test_x, data.test_y, recipe.eval_batch_size), 6))

            said_at = time.monotonic()

            def on_epoch(epoch: int, val: float, score=test_scorer(curve), number=t.number, s=s, total=recipe.epochs):
                nonlocal said_at
                raise_if_stop_was_lost()
                score(epoch, val)
                if time.monotonic() - said_at >= EPOCH_LINE_EVERY:  # a sign of life, at most once a minute
                    say(f"trial {number} seed {s}: epoch {epoch}/{total}, test {curve[-1]:.4f}")
                    said_at = time.monotonic()

            try:
                result = fit(model, data, recipe, seed=seed, on_epoch=on_epoch, teacher=teacher,
                             on_raw_epoch=test_scorer(raw_curve))  # fmt: skip
                acc = evaluate(model, data.test_x, data.test_y, recipe.eval_batch_size)
            except DivergedError as exc:  # this seed, not the search's, made the loss blow up
                # Seeds are fixed (retrain_seed): run again, it diverges again.
                way_out = (f"--seeds {s} keeps the seeds before it" if s else
                           "its recipe diverges on all training images with the first seed; the trial cannot be retrained")  # fmt: skip
                raise HarnessError(f"retrain of trial {t.number}, seed {s}: {exc}; the finished runs are kept "
                                   f"({way_out})") from None  # fmt: skip
            except (RuntimeError, torch.OutOfMemoryError) as exc:
                oom = cpu_out_of_memory(exc) or (exc if isinstance(exc, torch.OutOfMemoryError) else None)
                if oom is None:
                    raise
                raise HarnessError(f"retrain of trial {t.number}, seed {s}: {str(oom).splitlines()[0]} "
                                   "(finished runs are kept; retry with a smaller batch or on a larger machine)") from None  # fmt: skip
            run = {
                "test_acc": acc, "seed": seed, "train_seconds": round(result.seconds, 2), "device": device_label,
                "train_loss": [round(x, 6) for x in result.train_loss], "test_curve": curve,
            }  # fmt: skip
            if raw_curve:
                run["raw_test_curve"] = raw_curve
            with lock(), interrupts_held():  # read-merge-write: another retrain may have stored runs meanwhile
                stored = study.user_attrs.get(key)
                # the same protocol merges, whatever speed-only options (eval batch, compile) differ
                if same_protocol(stored, recipe):
                    record["runs"] = {**stored["runs"], **record["runs"]}
                elif stored and stored.get("runs"):
                    raise HarnessError(
                        f"retrain of trial {t.number}, seed {s}: another retrain stored runs of another protocol "
                        f"({counted(stored.get('epochs') or 0, 'epoch')} on {stored.get('train_images') or 0:,} images) meanwhile; "
                        "this run is not recorded over them (use a copy of the study)")  # fmt: skip
                # uploaded only once the run will be recorded: a refused run leaves no weights file
                run["weights"] = upload_state_dict(model, study, store, f"retrain-trial-{t.number}-seed-{s}-weights.pt")
                record["runs"][str(s)] = run
                accs = [r["test_acc"] for _, r in sorted(record["runs"].items(), key=lambda kv: int(kv[0]))]
                record.update(
                    seeds=len(accs), test_acc=accs, mean=statistics.mean(accs),
                    std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
                    torch_version=torch.__version__, harness_version=harness.__version__,
                )  # fmt: skip
                study.set_user_attr(key, record)  # after every run: an interruption loses one run at most
            say(f"trial {t.number} seed {s}: test {acc:.4f} ({result.seconds:.1f} s) "
                f"-> mean {record['mean']:.4f} {plus_minus(record['std'], len(accs), '.4f')} over {len(accs)}")  # fmt: skip
        out[t.number] = record
    return out


def run_retrain(
    study_file: str,
    *,
    storage: str | None = None,
    top: int | None = None,
    spread: int | None = None,
    numbers: list[int] | None = None,
    seeds: int = 3,
    epochs: int | None = None,
    include_baseline: bool = True,
    device: str | None = None,
    data_dir: str | None = None,
    say: Callable[[str], None] = print,
) -> dict[int, dict[str, Any]]:
    """``harness retrain``: open the study, choose its trials (the ``top`` best by validation,
    or ``spread`` points of a Pareto study's front, or the trial ``numbers`` given, those only;
    none of them: the 3 best, a Pareto study's whole front), retrain each ``seeds`` times on
    all training images on ``device`` (else the study file's), store the runs, and ``say`` what it does and each trial's result. SIGTERM
    (a scheduler's stop) ends it as Ctrl-C does, from its start: a KeyboardInterrupt, the
    finished runs kept. Returns :func:`retrain_trials`' records.

    Raises:
        HarnessError: a bad option, study file, storage, device, teacher or data; a run that
            diverged.
    """
    from harness.artifacts import open_artifact_store
    from harness.data import load_splits
    from harness.storage import study_lock
    from harness.study import open_existing_study
    from harness.train import device_name, resolve_device

    for flag, value in (("--top", top), ("--spread", spread), ("--seeds", seeds), ("--epochs", epochs)):
        if value is not None and value < 1:
            raise HarnessError(f"{flag} must be >= 1, got {value}")
    ways = [flag for flag, value in (("--top", top), ("--spread", spread), ("--trial", numbers)) if value is not None]
    if len(ways) > 1:
        raise HarnessError(f"{ways[0]} and {ways[1]} choose the trials in two different ways: give one")
    if numbers is not None and not include_baseline:
        raise HarnessError("--no-baseline leaves out the baseline --top and --spread add; --trial retrains the trials "
                           "named and no other: leave --no-baseline out")  # fmt: skip
    with stops_on_signals():
        cfg, url, study = open_existing_study(study_file, storage, writable=True)
        try:
            torch_device = resolve_device(device or cfg.device)
        except RuntimeError as exc:  # named as given: --device, else the study file's
            raise HarnessError(f"device {device or cfg.device!r}: {exc}") from None
        if numbers is not None:
            trials = named_for_retrain(study, numbers)
        else:
            if top is None and cfg.mode != "pareto":
                top = 3
            trials = select_for_retrain(study, top, include_baseline=include_baseline, spread=spread)
        # All 60,000 training images, no validation split: nothing is selected any more.
        teachers = load_retrain_teachers(cfg, trials, epochs, torch_device)  # refused before anything is said
        data = load_splits(cfg.data_root(data_dir), torch_device, val_size=0, download=cfg.data.download)
        same_protocol = check_retrain_protocol(study, trials, cfg, epochs, len(data.train_x), torch_device,
                                               teachers)  # before a word  # fmt: skip
        stored = sum(str(s) in record["runs"] for t in trials
                     if same_protocol(record := study.user_attrs.get(retrain_key(t.number)), _recipe(cfg, t, epochs))
                     for s in range(seeds))  # fmt: skip
        runs = len(trials) * seeds
        kept = ("" if not stored else "; every run is stored already, none is trained" if stored == runs
                else f"; {stored} of the {runs} runs {'is' if stored == 1 else 'are'} stored already and kept")  # fmt: skip
        say(f"retraining {counted(len(trials), 'architecture')} x {counted(seeds, 'seed')} on "
            f"{len(data.train_x):,} training images ({device_name(torch_device)}): trials "
            f"{', '.join(str(t.number) + (' (baseline)' if t.user_attrs.get('baseline') else '') for t in trials)}{kept}")  # fmt: skip
        records = retrain_trials(study, trials, cfg, seeds=seeds, data=data,
                                 store=open_artifact_store(cfg.artifact_root(url)),
                                 lock=lambda: study_lock(url, cfg.name), device_label=device_name(torch_device),
                                 epochs=epochs, teachers=teachers, say=say)  # fmt: skip
    for number, r in records.items():
        say(f"trial {number}{' (baseline)' if r['baseline'] else ''}: {r['params']:,} params, test "
            f"{r['mean']:.4%} {plus_minus(r['std'], r['seeds'], '.4%')} over {counted(r['seeds'], 'seed')}, {counted(r['epochs'], 'epoch')}  "
            f"{r['arch']}")  # fmt: skip
    return records
