"""Training speed, side by side in one process: the standard approach vs the harness engine.

Rows (all train the seed 19,290-parameter network on the same 55,000-image training split,
batch 128 unless said, and score the 10,000 test images at the end):

1. reference: ``torchvision.datasets.MNIST`` + ``DataLoader`` (batch 128, shuffle,
   ``num_workers`` = min(4, cores), ``persistent_workers`` as a careful user sets it) +
   per-sample ``RandomRotation(7)``, ``ToTensor``, ``Normalize`` + SGD(lr 0.01, momentum
   0.9), as in the seed's notebook;
1b. the same reference with the model in ``channels_last``: the one-line memory-format
   change on its own, so that the engine's data-pipeline gain is the ratio of row 2 to 1b;
2. harness: the engine (`harness.train.fit`), same network, epochs, batch size and
   augmentation strength (rotation 7 degrees, no shift or zoom), default settings otherwise;
3. harness at its best batch size (among --batch-sizes);
3b. (--compile default,reduce-overhead) the engine with ``train.compile``, batch 128, compiled
   from a cold cache as every new architecture is: compile seconds and break-even epochs;
3c. (--ema DECAY) the engine at batch 128 with weight averaging (``train.ema_decay``): the
   per-step average update and the second validation pass (the trained weights) it adds;
4. raw compute: forward + backward + SGD step over pre-normalised tensors already on the
   device, no augmentation, no indexing: the ceiling for this hardware.

Optionally (--e2e-epochs) the wall time of one full baseline trial through `harness run`
(a subprocess: start-up, data loading, training, test scoring, storage included), and
(--accuracy-seeds) the baseline's test accuracy trained by the engine with the study
recipe, for several seeds and training precisions (--accuracy-amp off,bf16), and (--jobs
1,2,4,8) trials per hour of `harness run --jobs K`.

Usage::

    python benchmarks/train_speed.py --data-dir DIR [--epochs 2] [--compile default] [--ema 0.999] [--e2e-epochs 15]
        [--accuracy-seeds 3 --accuracy-epochs 15 --accuracy-amp off] [--jobs 1,2]
        [--only-accuracy] [--out results/train_speed-cpu]

Every timed row runs ``--repeats`` times (default 3): the table gives the median seconds
per epoch and the spread (min-max) over the repeats. The machine's own ceiling is measured in
the same run: float32 GEMM GFLOP/s (a 1024 x 1024 matmul); each row reports the training
FLOP/s it achieves (FLOPs of one training step counted by ``torch.utils.flop_counter``) and
its share of that ceiling.

Writes OUT.json and OUT.md (device, CPU model, torch version, date) and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.config import TrainConfig  # noqa: E402
from harness.data import load_mnist, load_splits  # noqa: E402
from harness.model import build  # noqa: E402
from harness.train import MNIST_MEAN, MNIST_STD, cpu_model, device_name, evaluate, fit, resolve_device  # noqa: E402
from search_spaces import get_search_space  # noqa: E402

SPEC = get_search_space("seed").baseline_spec()
VAL_SIZE = 5000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference(root: Path, device: torch.device, epochs: int, batch_size: int, seed: int,
              channels_last: bool = False) -> dict:  # fmt: skip
    """The standard approach: torchvision dataset + DataLoader + per-sample transforms."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    torch.manual_seed(seed)
    tf = transforms.Compose(
        [transforms.RandomRotation((-7.0, 7.0), fill=(0,)), transforms.ToTensor(),
         transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    )  # fmt: skip
    train = Subset(datasets.MNIST(str(root), train=True, transform=tf), range(60_000 - VAL_SIZE))
    workers = min(4, os.cpu_count() or 1)
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=True)  # fmt: skip
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build(SPEC, seed=seed).to(device=device, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    epoch_s = []
    for _ in range(epochs):
        model.train()
        _sync(device)
        t = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        _sync(device)
        epoch_s.append(time.perf_counter() - t)
    test = load_splits(root, device, val_size=VAL_SIZE)
    acc = evaluate(model, test.test_x, test.test_y)
    name = "reference (DataLoader, per-sample transforms)" + (" + channels_last" if channels_last else "")
    return _row(name, len(train), batch_size, epoch_s, acc, num_workers=workers, channels_last=channels_last)


def engine(root: Path, device: torch.device, epochs: int, batch_size: int, seed: int, label: str, **cfg) -> dict:
    """The harness engine (`fit`) with rotation-only augmentation of the reference's strength."""
    data = load_splits(root, device, val_size=VAL_SIZE)
    tc = TrainConfig(epochs=epochs, batch_size=batch_size, rotation=7.0, translate=0.0, scale=0.0, **cfg)
    model = build(SPEC, seed=seed)
    marks = []
    _sync(device)
    start = time.perf_counter()

    def on_epoch(epoch, acc):  # fit's per-epoch time includes its validation pass, like a trial
        _sync(device)
        marks.append(time.perf_counter())

    fit(model, data, tc, seed=seed, on_epoch=on_epoch)
    epoch_s = [b - a for a, b in zip([start, *marks[:-1]], marks)]
    acc = evaluate(model, data.test_x, data.test_y)
    return _row(label, len(data.train_x), batch_size, epoch_s, acc, lr=tc.lr, amp=tc.amp,
                channels_last=tc.channels_last)  # fmt: skip


def compiled_engine(root: Path, device: torch.device, epochs: int, seed: int, mode: str, eager: dict) -> dict:
    """The engine at batch 128 with ``train.compile = mode``, compiled from a cold cache.

    Every trial of a study is a new architecture, so each pays a fresh compile: the on-disk
    inductor caches are disabled to measure that, not a re-run of a graph compiled before.
    ``compile_seconds`` = first epoch - steady epoch (compile + autotuning + warm-up);
    ``break_even_epochs`` = compile_seconds / (eager s/epoch - compiled s/epoch): a trial
    shorter than that is slower compiled (``null`` when compiling never pays).
    """
    import torch._inductor.config as inductor_config

    if epochs < 2:
        raise SystemExit("--compile needs --epochs >= 2 (the first epoch carries the compile)")
    inductor_config.force_disable_caches = True
    try:
        r = engine(root, device, epochs, 128, seed, f"harness engine + torch.compile ({mode})", compile=mode)
    finally:
        inductor_config.force_disable_caches = False
    r["compile_seconds"] = round(r["epoch_seconds"][0] - r["seconds_per_epoch"], 2)
    gain = eager["seconds_per_epoch"] - r["seconds_per_epoch"]
    r["break_even_epochs"] = round(r["compile_seconds"] / gain, 1) if gain > 0 else None
    r["compile"] = mode
    return r


def raw_compute(root: Path, device: torch.device, epochs: int, batch_size: int, seed: int) -> dict:
    """Forward + backward + step on pre-made, pre-normalised device tensors (the ceiling)."""
    data = load_splits(root, device, val_size=VAL_SIZE)
    x_all = ((data.train_x.float() / 255 - MNIST_MEAN) / MNIST_STD).unsqueeze(1)
    y_all = data.train_y
    model = build(SPEC, seed=seed).to(device=device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    steps = len(x_all) // batch_size
    epoch_s = []
    amp = device.type == "cuda"
    for _ in range(epochs):
        _sync(device)
        t = time.perf_counter()
        for i in range(steps):
            sl = slice(i * batch_size, (i + 1) * batch_size)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model(x_all[sl]), y_all[sl])
            loss.backward()
            opt.step()
        _sync(device)
        epoch_s.append(time.perf_counter() - t)
    acc = evaluate(model, data.test_x, data.test_y)
    return _row("raw compute (pre-made tensors, no augmentation)", steps * batch_size, batch_size, epoch_s, acc)


def _row(name: str, images: int, batch_size: int, epoch_s: list[float], test_acc: float, **extra) -> dict:
    # The first epoch carries one-off costs (worker start, allocator warm-up, kernel choice);
    # the steady-state rate is the median of later epochs when there are any.
    steady = statistics.median(epoch_s[1:]) if len(epoch_s) > 1 else epoch_s[0]
    return {
        "name": name,
        "batch_size": batch_size,
        "epochs": len(epoch_s),
        "train_images": images,
        "epoch_seconds": [round(s, 3) for s in epoch_s],
        "seconds_per_epoch": round(steady, 3),
        "images_per_second": round(images / steady, 1),
        "test_acc": round(test_acc, 4),
        **extra,
    }


def e2e_trial(root: Path, device: torch.device, epochs: int) -> dict:
    """Wall time of `harness run` for one baseline trial with the default study recipe."""
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "bench.toml"
        study.write_text(
            f'[study]\nname = "bench"\nn_trials = 1\ndevice = "{device}"\n[train]\nepochs = {epochs}\n'
        )
        exe = [sys.executable, "-m", "harness.cli"]
        t = time.perf_counter()
        proc = subprocess.run([*exe, "run", str(study), "--data-dir", str(root), "--quiet"],
                              capture_output=True, text=True, cwd=REPO)  # fmt: skip
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"harness run failed: {proc.stderr.strip()}")
        import optuna

        trial = optuna.load_study(study_name="bench", storage=f"sqlite:///{Path(tmp) / 'bench.db'}").trials[0]
    return {
        "epochs": epochs,
        "wall_seconds": round(wall, 2),
        "train_seconds": trial.user_attrs["train_seconds"],
        "val_acc": round(trial.value, 4),
        "test_acc": round(trial.user_attrs["test_acc"], 4),
    }


def jobs_throughput(root: Path, device: torch.device, jobs: list[int], trials: int, epochs: int,
                    train_limit: int) -> list[dict]:  # fmt: skip
    """Trials per hour of `harness run --jobs K` (a fresh study per K, start-up included).

    Each study samples the seed space at random (seed 0, no pruner), so the work per trial
    varies; the aggregate training throughput (images x epochs of trained trials per wall
    second) is reported next to trials/hour for that reason.
    """
    rows = []
    for k in jobs:
        with tempfile.TemporaryDirectory() as tmp:
            study = Path(tmp) / "jobs.toml"
            study.write_text(
                f'[study]\nname = "jobs"\nn_trials = {trials}\nseed = 0\ndevice = "{device}"\n'
                f'[sampler]\nname = "random"\n[pruner]\nname = "none"\n'
                f"[data]\ntrain_limit = {train_limit}\n[train]\nepochs = {epochs}\n"
            )
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(study), "--data-dir", str(root),
                                   "--quiet", "--jobs", str(k)], capture_output=True, text=True, cwd=REPO)  # fmt: skip
            wall = time.perf_counter() - t
            if proc.returncode != 0:
                raise SystemExit(f"harness run --jobs {k} failed: {proc.stderr.strip()}")
            import optuna

            done = [t for t in optuna.load_study(study_name="jobs", storage=f"sqlite:///{Path(tmp) / 'jobs.db'}").trials
                    if "train_seconds" in t.user_attrs]  # fmt: skip
        images = sum(t.user_attrs["epochs_run"] for t in done) * (train_limit or 55_000)
        rows.append({"jobs": k, "trained_trials": len(done), "wall_seconds": round(wall, 1),
                     "trials_per_hour": round(len(done) / wall * 3600, 1),
                     "images_per_second": round(images / wall, 1), "epochs": epochs, "train_images": train_limit or 55_000})  # fmt: skip
    base = rows[0]["images_per_second"]
    for r in rows:
        r["vs_jobs1"] = round(r["images_per_second"] / base, 2)
    return rows


def accuracy(root: Path, device: torch.device, epochs: int, seeds: int, amp: str = "auto") -> dict:
    """Baseline test accuracy with the default study recipe (as `harness run` trains it),
    training precision ``amp``; scored in float32 like a trial."""
    data = load_splits(root, device, val_size=VAL_SIZE)
    accs, seconds = [], []
    cfg = TrainConfig(epochs=epochs, amp=amp)
    for seed in range(seeds):
        model = build(SPEC, seed=seed)
        seconds.append(fit(model, data, cfg, seed=seed).seconds)
        accs.append(evaluate(model, data.test_x, data.test_y))
    return {
        "epochs": epochs,
        "seeds": seeds,
        "amp": amp,
        "test_acc": [round(a, 4) for a in accs],
        "mean": round(statistics.mean(accs), 4),
        "std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
        "train_seconds": [round(t, 1) for t in seconds],
        "recipe": dataclasses.asdict(cfg),
    }


def markdown(result: dict) -> str:
    m = result["meta"]
    model = m.get("cpu_model", m["cpu"])
    machine = f"{m['cores']} cores" if model in m["device"] else f"{model}, {m['cores']} cores"  # older labels lack it
    lines = [
        f"# Training speed: {m['device']}",
        "",
        f"{machine}; torch {m['torch']}, {m['date']}, `{m['command']}`",
    ]
    if result["rows"]:
        c = m.get("ceiling", {})
        lines += [
            "",
            f"Ceiling measured in the same run: float32 GEMM {c.get('gemm_gflops_fp32', float('nan')):.0f} GFLOP/s; "
            f"one training step of the baseline costs {c.get('training_flops_per_image', 0) / 1e6:.1f} MFLOP per image "
            "(forward + backward). s/epoch: median over the repeats (min-max); × reference: images/s against "
            "row 1; × raw: against the last row.",
            "",
            "| run | batch | s/epoch (min-max) | images/s | × reference | × raw | GFLOP/s | % of GEMM peak "
            "| test acc (after {} ep) |".format(m["epochs"]),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
    for r in result["rows"]:
        spread = (f" ({r['seconds_per_epoch_min']:.2f}-{r['seconds_per_epoch_max']:.2f}, {r['repeats']} runs)"
                  if r.get("repeats") else " (1 run)")  # fmt: skip
        gf = r.get("achieved_gflops")
        flops = "| |" if gf is None else f"| {gf:.1f} | {r['share_of_gemm_peak']:.0%} |"
        lines.append(
            f"| {r['name']} | {r['batch_size']} | {r['seconds_per_epoch']:.2f}{spread} | {r['images_per_second']:,.0f} "
            f"| {r['vs_reference']:.2f} | {r['vs_raw']:.2f} {flops} {r['test_acc']:.4f} |"
        )
    if len(result["rows"]) > 2 and result["rows"][1].get("channels_last"):
        ref, ref_cl, eng = result["rows"][0], result["rows"][1], result["rows"][2]
        lines += ["", f"Attribution: channels_last alone is {ref_cl['images_per_second'] / ref['images_per_second']:.2f}× "
                  f"the plain reference; the engine's data pipeline (on-device batches, whole-batch augmentation, "
                  f"no DataLoader) is a further {eng['images_per_second'] / ref_cl['images_per_second']:.2f}× over "
                  "the reference with channels_last."]  # fmt: skip
    for r in [r for r in result["rows"] if "compile" in r]:
        be = r["break_even_epochs"]
        lines += ["", f"torch.compile ({r['compile']}), cold cache: {r['compile_seconds']:.1f} s of compile in the first "
                  f"epoch, then {r['seconds_per_epoch']:.2f} s/epoch; "
                  + (f"pays for itself after {be:.1f} epochs of a trial." if be is not None
                     else "never pays for itself (no faster than eager per epoch).")]  # fmt: skip
    for r in [r for r in result["rows"] if "weight averaging" in r["name"]]:
        eng = result["rows"][2]
        lines += ["", f"Weight averaging ({r['name'].split('(')[1].rstrip(')')}): {r['seconds_per_epoch'] / eng['seconds_per_epoch']:.2f}× "
                  f"the seconds per epoch of the 'harness engine' row (the same training without averaging), for the "
                  "per-step update of the average and a second validation pass per epoch."]  # fmt: skip
    if "e2e" in result:
        e = result["e2e"]
        lines += ["", f"One {e['epochs']}-epoch baseline trial through `harness run`, end to end: "
                  f"{e['wall_seconds']:.1f} s wall ({e['train_seconds']:.1f} s training), test acc {e['test_acc']:.4f}."]  # fmt: skip
    if result.get("jobs"):
        j = result["jobs"][0]
        lines += ["", f"`harness run --jobs K`: seed space sampled at random, {j['epochs']} epochs on "
                  f"{j['train_images']:,} images per trial, start-up included:", "",
                  "| K | trained trials | wall s | trials/hour | training images/s | × K=1 |", "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for j in result["jobs"]:
            lines.append(f"| {j['jobs']} | {j['trained_trials']} | {j['wall_seconds']:.1f} | {j['trials_per_hour']:.0f} "
                         f"| {j['images_per_second']:,.0f} | {j['vs_jobs1']:.2f} |")  # fmt: skip
    for a in result.get("accuracy_runs", [result["accuracy"]] if "accuracy" in result else []):
        lines += ["", f"Baseline, engine, {a['epochs']} epochs, default recipe, train.amp = {a.get('amp', 'auto')!r}: "
                  f"test accuracy {a['mean']:.4f} ± {a['std']:.4f} over {a['seeds']} seeds "
                  f"({', '.join(map(str, a['test_acc']))})"
                  + (f"; training {statistics.mean(a['train_seconds']):.1f} s per trial (mean)." if "train_seconds" in a else ".")]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR", ""), help="MNIST root (harness data import)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per speed row (first one is warm-up)")
    ap.add_argument("--batch-sizes", default="128,256,512", help="candidates for the engine's best batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", default="", help="comma list of train.compile modes to add as engine rows (cold cache)")
    ap.add_argument("--ema", type=float, default=0.0, help="add an engine row with train.ema_decay = DECAY (weight averaging)")
    ap.add_argument("--e2e-epochs", type=int, default=0, help="also time one baseline trial of N epochs via harness run")
    ap.add_argument("--accuracy-seeds", type=int, default=0, help="also train the baseline with S seeds")
    ap.add_argument("--accuracy-epochs", type=int, default=15)
    ap.add_argument("--accuracy-amp", default="off", help="comma list of train.amp values for the accuracy runs")
    ap.add_argument("--only-accuracy", action="store_true", help="skip the speed rows (reference, engine, raw)")
    ap.add_argument("--jobs", default="", help="comma list of K: trials/hour of `harness run --jobs K`")
    ap.add_argument("--jobs-trials", type=int, default=8, help="trials per --jobs study")
    ap.add_argument("--jobs-epochs", type=int, default=2, help="epochs per trial in the --jobs studies")
    ap.add_argument("--jobs-train-limit", type=int, default=10_000, help="training images per trial (0 = all)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--out", default="", help="write OUT.json and OUT.md")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each timed speed row (median and spread)")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.data_dir or Path.home() / ".cache" / "harness" / "data")
    load_mnist(root)  # clear error if missing
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    result = {"meta": _meta(device, args), "rows": []}

    def save() -> str:
        """Write what is measured so far: a run stopped at its time limit keeps its finished parts."""
        text = markdown(result)
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
            out.with_suffix(".md").write_text(text)
        return text

    if not args.only_accuracy:
        result["rows"] = speed_rows(root, device, args)
        result["meta"]["ceiling"] = args.ceiling
        save()
    if args.e2e_epochs:
        result["e2e"] = e2e_trial(root, device, args.e2e_epochs)
        save()
    if args.jobs:
        result["jobs"] = jobs_throughput(root, device, [int(k) for k in args.jobs.split(",")], args.jobs_trials,
                                         args.jobs_epochs, args.jobs_train_limit)  # fmt: skip
        save()
    if args.accuracy_seeds:
        result["accuracy_runs"] = []
        for amp in args.accuracy_amp.split(","):
            result["accuracy_runs"].append(accuracy(root, device, args.accuracy_epochs, args.accuracy_seeds, amp))
            save()
    print(save())


def _meta(device: torch.device, args: argparse.Namespace) -> dict:
    argv0 = Path(sys.argv[0])
    return {
        "device": device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "date": dt.date.today().isoformat(),
        "epochs": args.epochs,
        "command": "python " + " ".join([str(argv0.relative_to(REPO)) if argv0.is_absolute() else sys.argv[0], *sys.argv[1:]]),
    }


def repeated(runs: int, fn, *args, **kwargs) -> dict:
    """``fn`` run ``runs`` times: the first run's row with the median steady seconds per epoch
    over the runs, their spread, and every run's epoch times."""
    rows = [fn(*args, **kwargs) for _ in range(runs)]
    steady = [r["seconds_per_epoch"] for r in rows]
    row = dict(rows[0])
    med = statistics.median(steady)
    row.update(seconds_per_epoch=round(med, 3), images_per_second=round(row["train_images"] / med, 1),
               repeats=runs, seconds_per_epoch_min=min(steady), seconds_per_epoch_max=max(steady),
               epoch_seconds=[r["epoch_seconds"] for r in rows])  # fmt: skip
    return row


def gemm_gflops(device: torch.device, n: int = 1024, reps: int = 20) -> float:
    """float32 matmul GFLOP/s on ``device`` (median of 5 timings of ``reps`` n x n products)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(5):
        _sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 * reps / statistics.median(times) / 1e9


def training_flops_per_image(device: torch.device, batch_size: int = 128) -> float:
    """FLOPs of one training step (forward + backward) of the baseline network, per image."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(SPEC).to(device=device, memory_format=torch.channels_last)
    x = torch.randn(batch_size, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch_size


def speed_rows(root: Path, device: torch.device, args: argparse.Namespace) -> list[dict]:
    """Reference (plain, then channels_last), engine (batch 128, then its best batch size)
    and raw compute, one process, each repeated ``args.repeats`` times."""
    n = args.repeats
    rows = [repeated(n, reference, root, device, args.epochs, 128, args.seed),
            repeated(n, reference, root, device, args.epochs, 128, args.seed, channels_last=True)]  # fmt: skip
    rows.append(repeated(n, engine, root, device, args.epochs, 128, args.seed, "harness engine"))
    best = rows[-1]
    for bs in [int(b) for b in args.batch_sizes.split(",") if int(b) != 128]:
        # Larger batches take a proportionally larger peak learning rate (linear scaling).
        r = repeated(n, engine, root, device, args.epochs, bs, args.seed, f"harness engine, batch {bs}",
                     lr=0.05 * bs / 128)  # fmt: skip
        if r["images_per_second"] > best["images_per_second"]:
            best = r
    if best is not rows[-1]:
        rows.append(best)
    eager = rows[2]
    for mode in [m for m in args.compile.split(",") if m]:  # cold compiles: not repeated
        rows.append(compiled_engine(root, device, args.epochs, args.seed, mode, eager))
    if args.ema:
        rows.append(repeated(n, engine, root, device, args.epochs, 128, args.seed,
                             f"harness engine, weight averaging (ema_decay {args.ema})", ema_decay=args.ema))  # fmt: skip
    rows.append(repeated(n, raw_compute, root, device, args.epochs, 128, args.seed))
    ref, raw = rows[0]["images_per_second"], rows[-1]["images_per_second"]
    flops, peak = training_flops_per_image(device), gemm_gflops(device)
    for r in rows:
        r["vs_reference"] = round(r["images_per_second"] / ref, 2)
        r["vs_raw"] = round(r["images_per_second"] / raw, 2)
        r["achieved_gflops"] = round(r["images_per_second"] * flops / 1e9, 1)
        r["share_of_gemm_peak"] = round(r["achieved_gflops"] / peak, 3)
    args.ceiling = {"gemm_gflops_fp32": round(peak, 1), "training_flops_per_image": round(flops)}
    return rows


if __name__ == "__main__":
    main()
