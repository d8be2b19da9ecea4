"""The reference results the notebooks show: every method, several seeds, the `quick` preset on the bundled mini set.

Each run is one ``python -m dlb_edu train`` process (the same Trainer that ``compare`` drives, one method at a time,
so that an interrupted job resumes on its own with ``--resume`` and two processes share the work evenly). A run
folder holds ``config.json``, ``history.csv``, ``summary.json`` (committed) and ``checkpoint.pt`` and ``train.log``
(not committed). Finished runs are skipped, interrupted ones resumed: run the same command again to continue.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/reference_runs.py --jobs 2

Then it writes ``manifest.json`` (commands, machine, torch, date, revision), the aggregated tables (mean +- std over
seeds, final and best test accuracy) into ``README.md`` and the figure ``reference_quick.png``. ``--report-only``
rewrites those three from the runs already there. The notebooks read all of it through :mod:`dlb_edu.reference`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlb_edu import reference  # noqa: E402
from dlb_edu.config import METHODS  # noqa: E402
from dlb_edu.data import load_dataset  # noqa: E402
from dlb_edu.run_dir import write_json  # noqa: E402
from dlb_edu.train import git_revision  # noqa: E402


def run_jobs(seeds: list[int], methods: list[str], preset: str) -> list[dict]:
    """One job per (method, forward, seed), ordered seed by seed so that an early stop leaves whole seeds."""
    jobs = []
    for seed in seeds:
        for method in methods:
            jobs.append(dict(method=method, forward=None, seed=seed))
        jobs.append(dict(method="dlb", forward="split", seed=seed))
    for job in jobs:
        job["dir"] = reference.run_dir(ROOT / reference.DEFAULT_DIR, preset, job["method"], job["forward"],
                                       job["seed"])
        job["argv"] = ["python", "-m", "dlb_edu", "train", "--preset", preset, "--method", job["method"],
                       "--seed", str(job["seed"]), "--device", "cpu", "--no-progress",
                       "--out", str(job["dir"].relative_to(ROOT))]
        if job["forward"]:
            job["argv"] += ["--forward", job["forward"]]
    return jobs


def finished(run_dir: Path) -> bool:
    summary, config = run_dir / "summary.json", run_dir / "config.json"
    if not (summary.exists() and config.exists()):
        return False
    return json.loads(summary.read_text())["epochs"] >= json.loads(config.read_text())["epochs"]


def run_one(job: dict, nice: int) -> str:
    d: Path = job["dir"]
    if finished(d):
        return f"done already: {d.relative_to(ROOT)}"
    argv = list(job["argv"])
    if (d / "checkpoint.pt").exists():
        argv.append("--resume")
    d.mkdir(parents=True, exist_ok=True)
    # One thread per process: two processes share the two cores without oversubscribing them.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = ["nice", "-n", str(nice), sys.executable] + argv[1:] if nice else [sys.executable] + argv[1:]
    start = time.time()
    with open(d / "train.log", "a") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    status = "ok" if rc == 0 else f"FAILED (exit {rc}, see {d.relative_to(ROOT)}/train.log)"
    return f"{status}: {d.relative_to(ROOT)} in {time.time() - start:.0f} s"


def revisions(revs: list[str]) -> list[str]:
    """The distinct git revisions, oldest first. A summary records the checkout's HEAD when it was last written, so
    commits made while the runs train show up; the oldest is the one they started from."""
    def depth(rev):
        out = subprocess.run(["git", "rev-list", "--count", rev], cwd=ROOT, capture_output=True, text=True)
        return int(out.stdout.strip() or 0)
    return sorted(set(revs), key=depth)


def training_code_changes(old: str, new: str) -> list[str]:
    """The package files that ``python -m dlb_edu train`` imports and that differ between two revisions."""
    code = "import sys, dlb_edu.cli, dlb_edu.train; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.split()
    files = {f"dlb_edu/{m.split('.', 1)[1].replace('.', '/')}.py" for m in loaded if m.startswith("dlb_edu.")}
    files.add("dlb_edu/__init__.py")
    changed = subprocess.run(["git", "diff", "--name-only", old, new, "--", "dlb_edu"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    return sorted(set(changed) & files)


def machine() -> dict:
    import torch
    from dlb_edu.project import cpu_name

    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "cpu_cores": os.cpu_count(), "gpu": gpu, "device": "cpu",
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "torch": torch.__version__}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    p.add_argument("--nice", type=int, default=10, help="niceness of the training processes (0: none)")
    p.add_argument("--report-only", action="store_true", help="only rewrite manifest, README tables and figure")
    args = p.parse_args(argv)
    out = ROOT / reference.DEFAULT_DIR
    jobs = run_jobs(args.seeds, args.methods, args.preset)
    if not args.report_only:
        start = time.time()
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for i, line in enumerate(pool.map(lambda j: run_one(j, args.nice), jobs), 1):
                print(f"[{i}/{len(jobs)}] {line}", flush=True)
        print(f"all runs in {time.time() - start:.0f} s", flush=True)
    missing = [str(j["dir"].relative_to(ROOT)) for j in jobs if not finished(j["dir"])]
    if missing:
        print("not finished (run again to resume): " + ", ".join(missing), file=sys.stderr)
        return 1
    summaries = [json.loads((j["dir"] / "summary.json").read_text()) for j in jobs]
    revs = revisions([s["git_rev"] for s in summaries])
    data = load_dataset(summaries[0]["dataset"])
    manifest = {
        "command": "OMP_NUM_THREADS=1 nice -n 10 python benchmarks/reference_runs.py "
                   + shlex.join(["--preset", args.preset, "--seeds", *map(str, args.seeds), "--jobs",
                                 str(args.jobs)]),
        "runs": [{"method": j["method"], "forward": j["forward"] or "preset", "seed": j["seed"],
                  "dir": str(j["dir"].relative_to(out)), "command": "OMP_NUM_THREADS=1 " + shlex.join(j["argv"])}
                 for j in jobs],
        "preset": args.preset, "dataset": summaries[0]["dataset"], "arch": summaries[0]["arch"],
        "epochs": summaries[0]["epochs"], "seeds": args.seeds,
        "train_images": len(data.x_train), "test_images": len(data.x_test),
        "machine": machine(), "processes_at_a_time": args.jobs, "threads_per_process": 1,
        "date": datetime.date.fromtimestamp(max((j["dir"] / "summary.json").stat().st_mtime for j in jobs))
        .isoformat(),
        "git_rev": revs[0],  # the oldest: the revision the runs started from
        "git_revs_recorded": revs,
        "training_code_changed_between_them": training_code_changes(revs[0], revs[-1]),
        "report_written_at_rev": git_revision(),
    }
    write_json(out / "manifest.json", manifest)
    ref = reference.load(out)
    fig = reference.figure(ref)
    fig.savefig(out / reference.FIGURE_NAME, dpi=110)
    (out / "README.md").write_text(reference.readme(ref))
    print(reference.format_table(ref))
    print(f"wrote {out / 'manifest.json'}, {out / 'README.md'}, {out / reference.FIGURE_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
