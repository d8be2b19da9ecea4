"""Steady-state epoch time and peak GPU memory of the baseline and DLB, measured side by side in one run.

For each (arch, batch size, forward mode, method) it trains ``--epochs`` epochs with the package's Trainer, drops the
first ``--warmup`` epochs (CUDA start-up, cuDNN autotuning, compilation) and records the median of the rest. Peak
memory is ``torch.cuda.max_memory_allocated`` over the timed epochs (None on a CPU). With ``--same-forward`` it
also times the baseline at 2B, which forwards as many samples per step as DLB does at B: the fair memory reference.

    python benchmarks/epoch_time.py --dataset data/cifar10-jpeg --archs resnet32 vgg16 --batch-sizes 64 \\
        --forward joint split --epochs 5 --same-forward --out results/bench_h100.json

Each JSON record holds: arch, method, batch_size, forward, samples_per_step, epoch_time_s_median, epoch_times_s,
peak_mem_bytes, device, torch, git_rev, command, dataset, train_images.
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

import torch

from dlb_edu.config import TrainConfig
from dlb_edu.data import load_dataset
from dlb_edu.run_dir import write_json
from dlb_edu.train import Trainer, git_revision


def time_one(data, dataset: str, arch: str, method: str, batch_size: int, forward: str, epochs: int, warmup: int,
             device: str, compile_model: bool) -> dict:
    cfg = TrainConfig(method=method, dataset=dataset, arch=arch, batch_size=batch_size, forward=forward,
                      epochs=epochs, device=device, compile=compile_model, probe_size=100, test_subset=1000)
    trainer = Trainer(cfg, data=data, progress=False)
    cuda = trainer.device.type == "cuda"
    times = []
    for epoch in range(epochs):
        if cuda and epoch == warmup:
            torch.cuda.reset_peak_memory_stats(trainer.device)
        times.append(trainer.train_epoch()["epoch_time_s"])
    timed = times[warmup:]
    return {
        "arch": arch, "method": method, "batch_size": batch_size, "forward": forward,
        "samples_per_step": 2 * batch_size if method == "dlb" else batch_size,
        "epoch_time_s_median": statistics.median(timed), "epoch_times_s": timed,
        "peak_mem_bytes": torch.cuda.max_memory_allocated(trainer.device) if cuda else None,
        "device": trainer.summary()["device"], "torch": torch.__version__, "git_rev": git_revision(),
        "command": "python " + shlex.join(sys.argv), "dataset": dataset, "train_images": len(data.x_train),
    }


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10-mini")
    p.add_argument("--archs", nargs="+", default=["resnet32"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[64])
    p.add_argument("--forward", nargs="+", default=["joint"], choices=["joint", "split"])
    p.add_argument("--epochs", type=int, default=4, help="epochs per measurement, warm-up included")
    p.add_argument("--warmup", type=int, default=1, help="epochs dropped before timing")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--same-forward", action="store_true",
                   help="also time the baseline at 2B (as many samples per step as DLB at B)")
    p.add_argument("--train-subset", type=int, help="time on the first N training images only")
    p.add_argument("--out", help="write the records as JSON here")
    args = p.parse_args(argv)
    if args.epochs <= args.warmup:
        p.error("--epochs must exceed --warmup")
    data = load_dataset(args.dataset).subset(args.train_subset)
    records = []
    for arch in args.archs:
        for b in args.batch_sizes:
            runs = [("baseline", b, "joint")] + [("dlb", b, fwd) for fwd in args.forward]
            if args.same_forward:
                runs.append(("baseline", 2 * b, "joint"))
            for method, batch_size, forward in runs:
                r = time_one(data, args.dataset, arch, method, batch_size, forward, args.epochs, args.warmup,
                             args.device, args.compile)
                records.append(r)
                mem = "" if r["peak_mem_bytes"] is None else f", peak {r['peak_mem_bytes'] / 2**20:.0f} MiB"
                print(f"{arch:<10} {method:<8} B={batch_size:<4} {forward:<5} "
                      f"median epoch {r['epoch_time_s_median']:.3f} s{mem}", flush=True)
            base = next(r for r in records if r["arch"] == arch and r["method"] == "baseline"
                        and r["batch_size"] == b)
            for r in records:
                if r["arch"] == arch and r["method"] == "dlb" and r["batch_size"] == b:
                    print(f"  DLB ({r['forward']}) / baseline epoch time at B={b}: "
                          f"{r['epoch_time_s_median'] / base['epoch_time_s_median']:.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(args.out), records)
    return records


if __name__ == "__main__":
    main()
