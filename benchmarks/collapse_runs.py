"""The collapse of DLB on He et al.'s option-A ResNet-32, and its absence on the authors' ResNet-32, as a record.

The first steps of DLB with the `paper` preset (lr 0.05, T = 3, alpha = 1, B = 64) on 2,048 bundled images, seeds
0-2 on each network, and two controls on the option-A network (alpha = 0, and lr = 0.01). Every step's loss is
recorded; every PROBE_EVERY steps the predictions on PROBE test images (eval mode, so training is not touched)
give their mean entropy (ln 10 = 2.30 nats is uniform guessing) and accuracy. `tests/test_collapse.py` checks the
same two networks with bounds; this script keeps the curves for notebook 05's section on the networks.

    python benchmarks/collapse_runs.py            # writes results/collapse/collapse.json and collapse.png

About five minutes on the 2-core development CPU.
"""
import argparse
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dlb_edu import viz  # noqa: E402
from dlb_edu.config import TrainConfig  # noqa: E402
from dlb_edu.data import load_dataset  # noqa: E402
from dlb_edu.project import cpu_name  # noqa: E402
from dlb_edu.train import Trainer, git_revision  # noqa: E402

STEPS = 48          # 2,048 images at B = 64 are 32 steps an epoch: the run crosses one epoch boundary
PROBE, PROBE_EVERY = 128, 4
RUNS = [("resnet32", s, {}) for s in (0, 1, 2)] + [("resnet32_option_a", s, {}) for s in (0, 1, 2)] + [
    ("resnet32_option_a", 0, {"alpha": 0.0}), ("resnet32_option_a", 0, {"lr": 0.01})]


class _Enough(Exception):
    pass


def first_steps(data, arch: str, seed: int, overrides: dict) -> dict:
    cfg = TrainConfig.from_preset("paper", method="dlb", arch=arch, epochs=2, device="cpu", seed=seed,
                                  train_subset=2048, test_subset=PROBE, probe_size=16, **overrides)
    losses, probes = [], []
    with Trainer(cfg, data=data, progress=False) as trainer:
        def on_step(trainer, record):
            losses.append(record.loss.item())
            if len(losses) % PROBE_EVERY == 0:
                p = trainer.predict(trainer.x_test)
                entropy = -(p * p.clamp_min(1e-12).log()).sum(1).mean().item()
                acc = (p.argmax(1) == trainer.y_test).float().mean().item()
                probes.append({"step": len(losses), "entropy": entropy, "acc": acc})
            if len(losses) >= STEPS:
                raise _Enough

        try:
            for _ in range(cfg.epochs):
                trainer.train_epoch(on_step=on_step)
        except _Enough:
            pass
    return {"arch": arch, "seed": seed, "overrides": overrides, "losses": losses, "probes": probes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "collapse"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("cifar10-mini")
    start, runs = time.time(), []
    for arch, seed, overrides in RUNS:
        t = time.time()
        runs.append(first_steps(data, arch, seed, overrides))
        r = runs[-1]
        print(f"{arch} seed {seed} {overrides or ''}: max step loss {max(r['losses']):.1f}, final probe entropy "
              f"{r['probes'][-1]['entropy']:.2f} nats (uniform {math.log(10):.2f}), {time.time() - t:.0f} s",
              flush=True)
    record = {
        "what": __doc__.split("\n\n")[0],
        "command": "python benchmarks/collapse_runs.py",
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, no GPU used",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "git_rev": git_revision(),
        "date": datetime.date.today().isoformat(), "wall_s": round(time.time() - start, 1),
        "loadavg_end": os.getloadavg(), "steps": STEPS, "probe": PROBE, "probe_every": PROBE_EVERY,
        "runs": runs,
    }
    (out / "collapse.json").write_text(json.dumps(record, indent=1) + "\n")
    viz.plot_collapse(record).savefig(out / "collapse.png", dpi=120, bbox_inches="tight")
    print(f"wrote {out / 'collapse.json'} and collapse.png in {record['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
