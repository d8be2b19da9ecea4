"""Steps per second of the live lab with and without its live view, measured side by side in one run.

The lab (``dlb_edu.lab.LiveLab``) trains the baseline and DLB in background threads, one step each in turn; its view
(``LiveView``) redraws the four-panel figure from a thread of its own, at most ``--max-fps`` times a second, as the
notebook's widget does (a real matplotlib figure, encoded to PNG and handed to a sink). On a CPU both share the
cores, so drawing can slow training: this measures by how much. Runs alternate, without the view then with it,
``--repeats`` times, so a change in the machine's load hits both; each run is a fresh lab with the same seed, paused
after ``--steps`` steps and timed from step ``--warmup`` on (one step = one DLB step and one baseline step).

    python benchmarks/live_view.py --steps 100 --warmup 20 --repeats 3 --threads 1 --out results/live_view_cpu.json

Each JSON record holds: view, steps_per_s, steps, warmup, seconds (the timed part), frames, draw_s_median (wall
clock per frame), draw_cpu_s (the view thread's CPU time in all), view_cpu_share (that over the wall clock up to the view's last frame:
the share of one core drawing took), max_fps, every, arch, dataset, train_images, device, threads, torch,
git_rev, command.
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from dlb_edu.data import load_dataset
from dlb_edu.lab import LiveLab, LiveView, lab_config
from dlb_edu.run_dir import write_json
from dlb_edu.train import git_revision


def one_run(config, data, args, view: bool) -> dict:
    lab = LiveLab(config, data=data, every=args.every)
    lab.pause(at_step=args.steps)
    frames: list[bytes] = []
    live = LiveView(lab, lambda png, snap: frames.append(png), max_fps=args.max_fps) if view else None
    start = time.perf_counter()
    lab.start()
    if live is not None:
        live.start()
    lab.wait_paused()
    rate = lab.steps_per_second(since_step=args.warmup)
    lab.stop()
    if live is not None:
        live.wait()
    view_wall = time.perf_counter() - start  # the view draws its last frame after the pause: count that time too
    timed = [t for s, t in lab.step_times if s >= args.warmup]
    record = {
        "view": view, "steps_per_s": rate, "steps": args.steps, "warmup": args.warmup,
        "seconds": timed[-1] - timed[0], "frames": len(frames),
        "draw_s_median": statistics.median(live.draw_seconds) if live else None,
        "draw_cpu_s": sum(live.draw_cpu_seconds) if live else None,
        "view_cpu_share": sum(live.draw_cpu_seconds) / view_wall if live else None,
        "max_fps": args.max_fps if view else None, "every": lab.every, "arch": config.arch,
        "dataset": config.dataset, "train_images": len(lab.trainers["dlb"].x_train),
        "device": lab.trainers["dlb"].summary()["device"], "threads": torch.get_num_threads(),
        "torch": torch.__version__, "git_rev": git_revision(), "command": "python " + shlex.join(sys.argv),
    }
    return record


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10-mini")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=120, help="steps per run (one DLB and one baseline step each)")
    p.add_argument("--warmup", type=int, default=20, help="steps not timed at the start of each run")
    p.add_argument("--repeats", type=int, default=2, help="pairs of runs (without the view, with it)")
    p.add_argument("--every", type=int, help="K, steps between stability points (default: the lab's)")
    p.add_argument("--max-fps", type=float, default=2.0, help="the view's redraws per second at most")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--out", help="write the records as JSON here")
    args = p.parse_args(argv)
    if not 0 <= args.warmup < args.steps - 1:
        p.error("--warmup must be below --steps - 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = lab_config(args.dataset, device=args.device)
    data = load_dataset(args.dataset)
    records = []
    for _ in range(args.repeats):
        for view in (False, True):
            record = one_run(config, data, args, view)
            records.append(record)
            draw = (f", {record['frames']} frames, median draw {record['draw_s_median']:.3f} s, drawing took "
                    f"{100 * record['view_cpu_share']:.1f}% of a core") if view else ""
            print(f"{'with' if view else 'without':<7} live view: {record['steps_per_s']:.3f} steps/s{draw}",
                  flush=True)
    for view in (False, True):
        rates = [r["steps_per_s"] for r in records if r["view"] == view]
        print(f"median {'with' if view else 'without':<7} live view: {statistics.median(rates):.3f} steps/s "
              f"over {len(rates)} runs")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(args.out), records)
    return records


if __name__ == "__main__":
    main()
