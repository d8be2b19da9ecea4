"""Notebook 04b's experiment, headless: the live lab's default run with alpha raised from 1 to 4 a quarter of the way
in and set to 0 later (before the first learning-rate drop), with a live view drawing as the notebook's widget does.

It records what notebook 04b says about that run: the steps per second and the wall-clock time of the whole run
(one step = one DLB step and one baseline step), the lab's record (every K steps and every step), and summaries of
DLB's step-to-step KL and loss around each change, then draws the lab's figure.

    python benchmarks/lab_experiment.py --out results/live_lab_cpu.json --figure results/live_lab_cpu.png

``--draw-only`` recomputes the summaries from a saved record's history and redraws the figure, without training. The JSON holds: command, git_rev, torch,
threads, device, config (arch, dataset, epochs, batch size, T, alpha), every, total_steps, changes, steps_per_s
(from step 20 on), wall_s (Start to the end), frames (drawn by the view), final test accuracies, windows (means of
the step-to-step KL, CE and loss in windows before and after each change), peak (the largest per-step loss and the
largest step-to-step KL point after the 1 -> 4 change, with their steps), and the lab's history and snapshot.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch


def window(points: dict, key: str, first: int, last: int) -> float:
    """Mean of ``points[key]`` over the points taken at steps first..last (NaN points left out)."""
    values = [v for s, v in zip(points["step"], points[key]) if first <= s <= last and v == v]
    return sum(values) / len(values) if values else math.nan


def summarize(history: dict, changes: list, lr_drop: int) -> dict:
    """Windows of DLB's and the baseline's step-to-step KL, CE and total loss before and after each change."""
    up, off = changes[0]["step"], changes[1]["step"]
    spans = {"before alpha 1->4": (up - 60, up - 1), "first 10 steps at alpha 4": (up, up + 9),
             "alpha 4, leaving out the first 10 steps": (up + 10, off - 1),
             "first 10 steps at alpha 0": (off, off + 9), "alpha 0, leaving out the first 10 steps": (off + 10, lr_drop - 1)}
    out = {}
    for name, (a, b) in spans.items():
        out[name] = {"steps": [a, b], **{f"{m} {k}": window(history["points"][m], k, a, b)
                                         for m in ("baseline", "dlb")
                                         for k in ("step_kl", "ce", "loss", "flip_rate")}}
    return out


def peaks(history: dict, changes: list) -> dict:
    """After the 1 -> 4 change: DLB's largest per-step loss and consistency term, and largest step-KL point."""
    up, off = changes[0]["step"], changes[1]["step"]
    steps = history["steps"]["dlb"]
    rows = [(s, l, c, ce) for s, l, c, ce in zip(steps["step"], steps["loss"], steps["consistency"], steps["ce"])
            if up <= s < off]
    s_loss, loss, cons, ce = max(rows, key=lambda r: r[1])
    pts = history["points"]["dlb"]
    kl_rows = [(s, v) for s, v in zip(pts["step"], pts["step_kl"]) if up <= s < off]
    s_kl, kl = max(kl_rows, key=lambda r: r[1])
    per_step = [{"step": s, "loss": l, "consistency": c, "ce": e} for s, l, c, e in
                zip(steps["step"], steps["loss"], steps["consistency"], steps["ce"]) if up - 3 <= s <= up + 25]
    return {"largest loss": {"step": s_loss, "loss": loss, "consistency": cons, "ce": ce},
            "largest step_kl point": {"step": s_kl, "step_kl": kl}, "dlb per step around the change": per_step}


def draw(record: dict, figure: Path, dpi: int) -> None:
    from matplotlib.figure import Figure

    from dlb_edu import viz
    fig = viz.plot_lab(record["snapshot"], fig=Figure(figsize=(12, 6.5)))
    fig.savefig(figure, dpi=dpi)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("results/live_lab_cpu.json"))
    p.add_argument("--figure", type=Path, default=Path("results/live_lab_cpu.png"))
    p.add_argument("--dpi", type=int, default=110)
    p.add_argument("--draw-only", action="store_true", help="redraw --figure from --out, without training")
    args = p.parse_args(argv)
    if args.draw_only:
        record = json.loads(args.out.read_text())
        record["windows"] = summarize(record["history"], record["changes"], record["lr_drops"][0])
        record["peak"] = peaks(record["history"], record["changes"])
        args.out.write_text(json.dumps(record, indent=1))
        draw(record, args.figure, args.dpi)
        return

    from dlb_edu.lab import LiveLab, LiveView, lab_config
    from dlb_edu.lab_status import status_line
    from dlb_edu.train import git_revision

    config = lab_config()
    lab = LiveLab(config)
    up, off = lab.total_steps // 4 + 1, lab.total_steps * 7 // 16 + 1
    lab.set("alpha", 4.0, at_step=up)  # scheduled before start: exactly at that step
    lab.set("alpha", 0.0, at_step=off)
    frames = []
    view = LiveView(lab, lambda png, snap: frames.append(len(png)), max_fps=2.0)  # the widget's view: 2 fps
    start = time.perf_counter()
    lab.start()
    view.start()
    lab.wait()
    wall = time.perf_counter() - start
    view.wait()
    assert lab.state == "finished", lab.error
    history, snapshot = lab.record.as_dict(), lab.view_state()
    lr_drop = snapshot["lr_drops"][0]
    accs = {m: t.history[-1]["test_acc"] for m, t in lab.trainers.items()}
    record = {
        "command": "python " + shlex.join(sys.argv), "git_rev": git_revision(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "device": str(lab.trainers["dlb"].device),
        "config": {k: getattr(config, k) for k in ("arch", "dataset", "epochs", "batch_size", "temperature", "alpha")},
        "every": lab.every, "total_steps": lab.total_steps, "changes": history["changes"],
        "steps_per_s": lab.steps_per_second(since_step=20), "wall_s": wall, "frames": len(frames),
        "final_test_acc": accs, "lr_drops": snapshot["lr_drops"],
        "windows": summarize(history, history["changes"], lr_drop), "peak": peaks(history, history["changes"]),
        "status": status_line(lab), "history": history, "snapshot": snapshot,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    draw(record, args.figure, args.dpi)
    print(json.dumps({k: record[k] for k in ("steps_per_s", "wall_s", "final_test_acc", "changes", "windows")},
                     indent=1))
    print(json.dumps(record["peak"]["largest loss"]), json.dumps(record["peak"]["largest step_kl point"]))


if __name__ == "__main__":
    main()
