"""What one training step of the baseline and of DLB costs on this device, side by side (notebook 05's cost section).

Each round measures every (network, method, forward) once with ``dlb_edu.train.measure_costs`` (2 warm-up steps,
then ``--steps`` timed ones, on the bundled mini set), alternating, so that a change of the machine's load hits all of
them alike; the record keeps every round and the medians.

    python benchmarks/step_cost.py --rounds 3 --out results/step_cost_cpu.json
"""
import argparse
import datetime
import json
import os
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dlb_edu.config import TrainConfig, resolve_device  # noqa: E402
from dlb_edu.data import load_dataset  # noqa: E402
from dlb_edu.project import cpu_name  # noqa: E402
from dlb_edu.train import git_revision, measure_costs  # noqa: E402

CASES = [("baseline", "joint"), ("dlb", "joint"), ("dlb", "split")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["small_cnn", "resnet32"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(ROOT / "results" / "step_cost_cpu.json"))
    args = parser.parse_args()
    data = load_dataset("cifar10-mini")
    device = resolve_device(args.device)
    times = {(a, m, f): [] for a in args.archs for m, f in CASES}
    loads = []
    for r in range(args.rounds):
        for key in times:
            arch, method, forward = key
            cfg = TrainConfig.from_preset("cpu", method=method, arch=arch, forward=forward, device=args.device)
            times[key].append(measure_costs(cfg, data, steps=args.steps)[0])
        loads.append(os.getloadavg()[0])
        print(f"round {r + 1}/{args.rounds}, load {loads[-1]:.2f}", flush=True)
    rows = []
    for (arch, method, forward), ts in times.items():
        base = statistics.median(times[arch, "baseline", "joint"])
        rows.append({"arch": arch, "method": method, "forward": forward, "step_ms_median": 1000 * statistics.median(ts),
                     "step_ms": [1000 * t for t in ts], "over_baseline": statistics.median(ts) / base})
        print(f"{arch:>10} {method:>8} {forward:>5}: {rows[-1]['step_ms_median']:7.1f} ms/step, "
              f"{rows[-1]['over_baseline']:.2f} x baseline")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    record = {"command": "python benchmarks/step_cost.py " + " ".join(sys.argv[1:]), "device": str(device),
              "machine": f"{where}, {os.cpu_count()} cores", "threads": torch.get_num_threads(),
              "torch": torch.__version__, "git_rev": git_revision(), "date": datetime.date.today().isoformat(),
              "precision": "cpu preset's (auto)", "batch_size": 64, "loadavg_per_round": loads, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
