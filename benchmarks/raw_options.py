"""Raw training-step throughput of the seed network under the engine's options.

Forward + backward + SGD step on fixed random tensors (no data pipeline), for each batch
size, with and without channels_last, and with bf16 autocast on top. This is what chose the
engine's defaults: channels_last on, bf16 only on CUDA (`train.amp = "auto"`). Then the
time `harness.train.evaluate` takes to score 5,000 images (a validation pass) at each
evaluation batch size, which chose `train.eval_batch_size = 0` (auto: 256 on a CPU, 2,000
on a GPU).

Usage: python benchmarks/raw_options.py [--device auto] [--steps 30] [--out results/raw_options-cpu]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.model import build  # noqa: E402
from harness.train import device_name, evaluate, resolve_device  # noqa: E402
from search_spaces import get_search_space  # noqa: E402


def images_per_second(device: torch.device, bs: int, channels_last: bool, bf16: bool, steps: int) -> float:
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build(get_search_space("seed").baseline_spec()).to(device=device, memory_format=fmt)
    x, y = torch.randn(bs, 1, 28, 28, device=device), torch.randint(0, 10, (bs,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(5):  # warm-up: allocator, kernel selection
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return bs * steps / (time.perf_counter() - t)


def validation_seconds(device: torch.device, batch_size: int, repeats: int = 3) -> float:
    """Median wall time of one `evaluate` pass over 5,000 random uint8 images (trained-size net)."""
    torch.manual_seed(0)
    model = build(get_search_space("seed").baseline_spec()).to(device=device, memory_format=torch.channels_last)
    x = torch.randint(0, 256, (5000, 28, 28), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (5000,), device=device)
    evaluate(model, x, y, batch_size)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        evaluate(model, x, y, batch_size)  # ends with .item(): synchronised
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-sizes", default="128,256,512")
    ap.add_argument("--eval-batch-sizes", default="128,256,512,1000,2000")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    device = resolve_device(args.device)
    base = None
    lines = [f"# Raw step throughput: {device_name(device)}", "",
             f"torch {torch.__version__}, {dt.date.today().isoformat()}, `python benchmarks/raw_options.py "
             f"{' '.join(sys.argv[1:])}`", "",
             "| batch | memory format | bf16 autocast | images/s | × batch 128 contiguous fp32 |",
             "|---:|---|---|---:|---:|"]  # fmt: skip
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        for cl, bf16 in ((False, False), (True, False), (True, True)):
            ips = images_per_second(device, bs, cl, bf16, args.steps)
            base = base or ips
            lines.append(f"| {bs} | {'channels_last' if cl else 'contiguous'} | {'on' if bf16 else 'off'} "
                         f"| {ips:,.0f} | {ips / base:.2f} |")  # fmt: skip
    lines += ["", "Scoring 5,000 images (`harness.train.evaluate`, no gradients):", "",
              "| eval batch | seconds | × batch 2000 |", "|---:|---:|---:|"]  # fmt: skip
    evals = {b: validation_seconds(device, b) for b in [int(b) for b in args.eval_batch_sizes.split(",")]}
    ref = evals.get(2000, max(evals.values()))
    for b, sec in evals.items():
        lines.append(f"| {b} | {sec:.3f} | {ref / sec:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
