"""DLB's two forward modes (joint: one call on all 2B images; split: two calls, fresh half then repeated half) timed
side by side in one run, with the baseline beside them, on the notebooks' CPU setting (the ``quick`` preset on
``cifar10-mini``).

Each run gets its own Trainer; they take turns epoch by epoch, so a change in the machine's load hits all of them,
and the first round is dropped (warm-up). Records the median epoch time of the rest and the seconds per step.

    python benchmarks/forward_time.py --rounds 4 --out results/forward_time_cpu.json

The JSON holds one record per run (method, forward, epoch_time_s_median, epoch_times_s, warmup_epoch_s,
step_ms_median, steps_per_epoch) and the shared fields: preset, arch, dataset, train_images, device, threads,
torch, git_rev, loadavg (1-minute load average before each round), command.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from dlb_edu.config import TrainConfig
from dlb_edu.data import load_dataset
from dlb_edu.train import Trainer, git_revision

RUNS = (("baseline", "joint"), ("dlb", "joint"), ("dlb", "split"))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4, help="epochs per run, the first dropped")
    p.add_argument("--dataset", default="cifar10-mini")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    data = load_dataset(args.dataset)
    trainers = {(m, f): Trainer(TrainConfig.from_preset("quick", dataset=args.dataset, method=m, forward=f,
                                                        epochs=args.rounds, device="cpu"), data=data,
                                progress=False) for m, f in RUNS}
    times = {key: [] for key in RUNS}
    loads = []
    for _ in range(args.rounds):
        loads.append(os.getloadavg()[0])
        for key, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train_epoch()
            times[key].append(time.perf_counter() - start)
    steps = len(trainers[RUNS[0]].sampler)
    records = []
    for (method, forward), t in times.items():
        median = statistics.median(t[1:])
        records.append({"method": method, "forward": forward, "epoch_time_s_median": median, "epoch_times_s": t[1:],
                        "warmup_epoch_s": t[0], "steps_per_epoch": steps, "step_ms_median": 1000 * median / steps})
    result = {"runs": records, "preset": "quick", "arch": trainers[RUNS[0]].config.arch, "dataset": args.dataset,
              "train_images": len(data.x_train), "device": "cpu", "threads": torch.get_num_threads(),
              "torch": torch.__version__, "git_rev": git_revision(), "loadavg": loads,
              "command": "python " + shlex.join(sys.argv)}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    for r in records:
        print(f"{r['method']:>8} {r['forward']:>5}: {r['epoch_time_s_median']:.2f} s per epoch "
              f"({r['step_ms_median']:.1f} ms per step), epochs {', '.join(f'{x:.2f}' for x in r['epoch_times_s'])}")
    return result


if __name__ == "__main__":
    main()
