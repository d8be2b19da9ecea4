"""The full-size reference runs: the `cpu` preset on all 50,000 + 10,000 images of the CIFAR-10 JPEG copy.

Three groups, each one ``python -m dlb_edu compare`` process per seed, one process at a time (a 2-core machine):

* ``clean``: baseline and DLB on clean labels;
* ``alpha0``: DLB with alpha = 0, the compute-matched control: the same 2B forwards per step, each image seen under
  two augmentations and its cross-entropy counted twice, but no consistency term;
* ``noise40``: baseline and DLB with 40% symmetric label noise (the paper's robustness claim).

Jobs go seed by seed (clean, alpha0, noise40 for seed 0, then seed 1, ...), so an early stop leaves whole seeds.
Run the same command again to continue: finished runs are skipped, the others resumed (``compare --resume``
continues the methods with a checkpoint and starts the others). Each job's output, with its start and end time and
the machine's load average, goes to ``<run>/compare.log`` and ``jobs.jsonl``; checkpoints are not committed.

    tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C data/        # once: data/cifar10-jpeg/{train,test}/<class>/
    nohup python benchmarks/full_reference_runs.py --seeds 0 1 > runs/full_reference.log 2>&1 &
    python benchmarks/full_reference_runs.py --report-only      # manifest.json, README.md and the figure

Every run's command is in ``manifest.json``; ``python -m dlb_edu compare --preset cpu --dataset data/cifar10-jpeg
--seed S ...`` reproduces a run bit for bit on the same CPU with the same number of threads (2 here: the rounding of
a CPU's kernels depends on it).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.reference_runs import machine, revisions  # noqa: E402
from dlb_edu import full_reference  # noqa: E402
from dlb_edu.run_dir import write_json  # noqa: E402
from dlb_edu.train import git_revision  # noqa: E402

OUT = full_reference.DEFAULT_DIR
DATASET = "data/cifar10-jpeg"


def jobs(seeds: list[int], groups: list[str], dataset: str) -> list[dict]:
    out = []
    for seed in seeds:
        for group in groups:
            spec = full_reference.GROUPS[group]
            d = ROOT / OUT / group / f"seed{seed}"
            argv = ["python", "-m", "dlb_edu", "compare", "--preset", "cpu", "--dataset", dataset, "--seed",
                    str(seed), "--methods", ",".join(spec["methods"]), *spec["args"], "--no-progress",
                    "--out", str(d.relative_to(ROOT))]
            out.append(dict(group=group, seed=seed, dir=d, argv=argv, methods=spec["methods"]))
    return out


def finished(job: dict) -> bool:
    for m in job["methods"]:
        s, c = job["dir"] / m / "summary.json", job["dir"] / m / "config.json"
        if not (s.exists() and c.exists()):
            return False
        if json.loads(s.read_text())["epochs"] < json.loads(c.read_text())["epochs"]:
            return False
    return True


def run_one(job: dict) -> str:
    d: Path = job["dir"]
    if finished(job):
        return f"done already: {d.relative_to(ROOT)}"
    argv = list(job["argv"])
    if any((d / m / "checkpoint.pt").exists() for m in job["methods"]):
        argv.append("--resume")
    d.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start, load0 = time.time(), os.getloadavg()
    with open(d / "compare.log", "a") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        rc = subprocess.run([sys.executable] + argv[1:], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    record = {"group": job["group"], "seed": job["seed"], "command": shlex.join(argv), "exit": rc,
              "start": datetime.datetime.fromtimestamp(start).isoformat(timespec="seconds"),
              "wall_s": round(time.time() - start, 1), "loadavg_start": load0, "loadavg_end": os.getloadavg(),
              "git_rev": git_revision(), "cpu": machine()["cpu"]}
    with open(ROOT / OUT / "jobs.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    status = "ok" if rc == 0 else f"FAILED (exit {rc}, see {d.relative_to(ROOT)}/compare.log)"
    return f"{status}: {d.relative_to(ROOT)} in {record['wall_s']:.0f} s"


def trained_on(job: dict, records: list[dict]) -> str:
    """The CPU a finished run trained on: its job record's, else what an earlier manifest said of it (runs
    reported before job records named their CPU), else this machine's."""
    for r in reversed(records):
        if r["group"] == job["group"] and r["seed"] == job["seed"] and r["exit"] == 0 and "cpu" in r:
            return r["cpu"]
    path = ROOT / OUT / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        for run in old.get("runs", []):
            if run["group"] == job["group"] and run["seed"] == job["seed"]:
                return run.get("cpu", old["machine"]["cpu"])
    return machine()["cpu"]


def report(all_jobs: list[dict]) -> None:
    done = [j for j in all_jobs if finished(j)]
    summaries = [json.loads((j["dir"] / m / "summary.json").read_text()) for j in done for m in j["methods"]]
    if not summaries:
        print("no finished run yet", file=sys.stderr)
        return
    revs = revisions([s["git_rev"] for s in summaries])
    log = ROOT / OUT / "jobs.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    manifest = {
        "data": "CIFAR-10 (JPEG copy): 50,000 training and 10,000 test images, JPEG quality 75 re-encodings of "
                "CIFAR-10 (about 30 dB PSNR); not CIFAR-10's own pixels",
        "dataset_path": DATASET, "preset": "cpu",
        "runs": [{"group": j["group"], "seed": j["seed"], "dir": str(j["dir"].relative_to(ROOT / OUT)),
                  "command": shlex.join(j["argv"]), "cpu": trained_on(j, records)} for j in done],
        "jobs": [r for r in records if r["exit"] == 0],
        "machine": machine(), "threads": sorted({s.get("threads") for s in summaries}, key=str),
        "precision": sorted({s.get("precision") for s in summaries}, key=str),
        "processes_at_a_time": 1,
        "date": datetime.date.today().isoformat(),
        "git_rev": revs[0], "git_revs_recorded": revs, "report_written_at_rev": git_revision(),
    }
    write_json(ROOT / OUT / "manifest.json", manifest)
    ref = full_reference.load(ROOT / OUT)
    full_reference.figure(ref).savefig(ROOT / OUT / full_reference.FIGURE_NAME, dpi=110)
    (ROOT / OUT / "README.md").write_text(full_reference.readme(ref))
    update_project_readme(ref)
    print(full_reference.format_tables(ref))


BEGIN, END = "<!-- full-reference:begin -->", "<!-- full-reference:end -->"


def update_project_readme(ref) -> None:
    """Rewrite the block between BEGIN and END in the project's README.md from the same results, so its numbers are
    the files' numbers; the sentences around the block are written by hand."""
    path = ROOT / "README.md"
    text = path.read_text()
    if BEGIN not in text or END not in text:
        print(f"README.md has no {BEGIN} ... {END} block: not updated", file=sys.stderr)
        return
    block = (f"{BEGIN}\nWhat the committed runs show (`{OUT}/`, {full_reference.DATA_LABEL}; made by "
             f"`benchmarks/full_reference_runs.py`):\n\n```\n{ref.provenance()}\n```\n\n"
             f"{full_reference.markdown_tables(ref)}\n\n![curves and paired differences]"
             f"({OUT}/{full_reference.FIGURE_NAME})\n{END}")
    head, rest = text.split(BEGIN, 1)
    path.write_text(head + block + rest.split(END, 1)[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--groups", nargs="+", default=list(full_reference.GROUPS), choices=list(full_reference.GROUPS))
    p.add_argument("--dataset", default=DATASET, help="the CIFAR-10 JPEG copy as an image folder")
    p.add_argument("--report-only", action="store_true", help="only rewrite manifest, README tables (results/full/ and the project's) and figure")
    args = p.parse_args(argv)
    all_jobs = jobs(args.seeds, args.groups, args.dataset)
    if not args.report_only:
        (ROOT / OUT).mkdir(parents=True, exist_ok=True)
        for i, job in enumerate(all_jobs, 1):
            print(f"[{i}/{len(all_jobs)}] {run_one(job)}", flush=True)
    report(all_jobs)
    return 0 if all(finished(j) for j in all_jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
