"""Steady-state epoch time and peak GPU memory of the baseline and DLB, measured side by side in one run.

For each (arch, batch size, forward mode, method) it trains ``--epochs`` epochs with the package's Trainer, drops the
first ``--warmup`` epochs (CUDA start-up, cuDNN autotuning, compilation) and records the median of the rest. Peak
memory is ``torch.cuda.max_memory_allocated`` over the timed epochs (None on a CPU). With ``--same-forward`` it
also times the baseline at 2B, which forwards as many samples per step as DLB does at B: the fair memory reference.

    python benchmarks/epoch_time.py --dataset data/cifar10-jpeg --archs resnet32 vgg16 --batch-sizes 64 \\
        --forward joint split --epochs 5 --same-forward --out results/bench_h100.json

Each JSON record holds: arch, method, batch_size, forward, samples_per_step, precision, compile, epoch_time_s_median,
epoch_times_s, warmup_times_s, peak_mem_bytes, device, torch, git_rev, command, dataset, train_images.

``--variants`` measures CPU settings against each other in one A/B run: each variant
(``precision:channels_last:threads``, e.g. ``fp32:off:2`` for the trainer's CPU path before the cpu preset) gets its
own Trainer, and the variants take turns epoch by epoch (the first round is the warm-up), so that they share the
machine's load and the process's start-up:

    python benchmarks/epoch_time.py --archs small_cnn --dataset data/cifar10-jpeg --variants fp32:off:2 bf16:on:2 \
        fp32:on:2 bf16:off:2 bf16:on:1 --rounds 3 --device cpu --out results/bench_cpu_variants.json
"""
from __future__ import annotations

import argparse
import os
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
             device: str, compile_model: bool, **overrides) -> dict:
    """Train ``epochs`` epochs and time them; ``overrides`` are further TrainConfig fields (``precision="fp32"``)."""
    cfg = TrainConfig(method=method, dataset=dataset, arch=arch, batch_size=batch_size, forward=forward,
                      epochs=epochs, device=device, compile=compile_model, probe_size=100, test_subset=1000,
                      **overrides)
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
        "precision": trainer.precision, "compile": compile_model,
        "epoch_time_s_median": statistics.median(timed), "epoch_times_s": timed, "warmup_times_s": times[:warmup],
        "peak_mem_bytes": torch.cuda.max_memory_allocated(trainer.device) if cuda else None,
        "device": trainer.summary()["device"], "torch": torch.__version__, "git_rev": git_revision(),
        "command": "python " + shlex.join(sys.argv), "dataset": dataset, "train_images": len(data.x_train),
    }


def time_variants(data, dataset: str, arch: str, methods: list[str], batch_size: int, forward: str,
                  variants: list[str], rounds: int, train_subset: int | None) -> list[dict]:
    """The variants in turns, one epoch each per round; the first round is dropped (warm-up)."""
    runs = {}
    for v in variants:
        precision, channels_last, threads = v.split(":")
        for method in methods:
            cfg = TrainConfig(method=method, dataset=dataset, arch=arch, batch_size=batch_size, forward=forward,
                              epochs=rounds, device="cpu", precision=precision, channels_last=channels_last,
                              threads=int(threads), probe_size=100, test_subset=1000)
            runs[v, method] = (int(threads), Trainer(cfg, data=data, progress=False), [])
    loads = []
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        for (v, method), (threads, trainer, times) in runs.items():
            torch.set_num_threads(threads)
            times.append(trainer.train_epoch()["epoch_time_s"])
            print(f"round {r + 1}/{rounds} {arch} {method:<8} {v:<11} {times[-1]:.2f} s", flush=True)
    records = []
    for (v, method), (threads, trainer, times) in runs.items():
        precision, channels_last, _ = v.split(":")
        records.append({
            "arch": arch, "method": method, "batch_size": batch_size, "forward": forward, "variant": v,
            "precision": precision, "channels_last": channels_last, "threads": threads,
            "epoch_time_s_median": statistics.median(times[1:]), "epoch_times_s": times[1:],
            "warmup_epoch_s": times[0], "loadavg_per_round": loads, "device": "cpu", "torch": torch.__version__,
            "git_rev": git_revision(), "command": "python " + shlex.join(sys.argv), "dataset": dataset,
            "train_images": len(data.x_train)})
    return records


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
    p.add_argument("--variants", nargs="+", help="CPU A/B: precision:channels_last:threads, e.g. fp32:off:2")
    p.add_argument("--rounds", type=int, default=3, help="with --variants: epochs per variant, the first dropped")
    args = p.parse_args(argv)
    if args.epochs <= args.warmup:
        p.error("--epochs must exceed --warmup")
    data = load_dataset(args.dataset).subset(args.train_subset)
    if args.variants:
        records = [r for arch in args.archs for b in args.batch_sizes for fwd in args.forward
                   for r in time_variants(data, args.dataset, arch, ["baseline", "dlb"], b, fwd, args.variants,
                                          args.rounds, args.train_subset)]
        for arch in args.archs:
            for method in ("baseline", "dlb"):
                ref = next(r for r in records if (r["arch"], r["method"]) == (arch, method))
                for r in records:
                    if (r["arch"], r["method"]) == (arch, method):
                        print(f"{arch} {method:<8} {r['variant']:<11} median {r['epoch_time_s_median']:.2f} s, "
                              f"speed-up over {ref['variant']}: {ref['epoch_time_s_median'] / r['epoch_time_s_median']:.2f}x")
        if args.out:
            write_json(Path(args.out), records)
        return records
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
