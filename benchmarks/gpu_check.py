"""One command for a lent GPU: in at most 8 minutes on one GPU, everything the CUDA path has never shown.

No GPU has run this code yet. When one is lent it is for minutes, so this script does in a single call what issues 11,
12 and 22 ask of a GPU, and writes what it measured as JSON records (device, torch, git revision, command in each):

    python benchmarks/gpu_check.py --dataset gpu_data/cifar10-jpeg.tar.gz --authors gpu_data/DLB --out $OUT
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check   # the same steps on a CPU, tiny, in seconds
    python benchmarks/gpu_check.py --prepare                         # here, before: fills gpu_data/ (README.md)

The parts, in this order, each in its own process under its own time cap (``PARTS``). A part that fails or runs
over its cap writes its error into its record, and the next part starts; the records finished before are kept.

- ``data``: the CIFAR-10 JPEG copy (50,000 + 10,000 images) decoded once, in a shuffled order (the folder is
  sorted by class, and the short runs below take the first images); the authors' pickles written from it.
- ``epoch_times``: ResNet-32, median epoch time after a warm-up epoch and peak memory (``epoch_time.time_one``):
  the baseline at B = 64 and 128, DLB at B = 64 with the split and the joint forward, eager.
- ``authors``: the authors' ``dlb.py``, unchanged, on the same images, if their code is in ``--authors``.
- ``resume``: a ``paper``-preset DLB run with ``--deterministic``, SIGKILLed mid-epoch and resumed, against the same
  run uninterrupted: bitwise equal weights and history expected. Then the same without ``--deterministic``, where
  the difference is reported, not judged (nothing promises equality there).
- ``paper_runs``: a short ``paper``-preset run of every method on 5,000 images (joint forward for CS-KD).
- ``precision``: DLB, B = 64, joint, in float32 and in fp16, beside the bf16 of ``epoch_times``.
- ``compiled``: DLB, B = 64, joint and split, with ``torch.compile`` (warm-up epochs include the compilation).
- ``notebooks``: notebooks 04 and 04b executed in smoke mode on the GPU, as ``tests/test_notebooks.py`` does.

Written under ``--out``: ``gpu_check.json`` (every part's status, time, error and records, rewritten after each
part), ``gpu_check.log`` (what the parts printed) and, from the notebooks part, the two executed notebooks. With
``--dry-run`` the notebooks and the compilation are skipped (minutes on a CPU; ``tests/test_notebooks.py`` runs the
notebooks) and every other part runs on the CPU with ``small_cnn`` on a few hundred bundled images.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

SELF = Path(__file__).resolve()
ROOT = SELF.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from dlb_edu.config import TrainConfig  # noqa: E402
from dlb_edu.data import ImageData, load_image_folder, make_synthetic  # noqa: E402
from dlb_edu.config import METHODS  # noqa: E402
from dlb_edu.project import cpu_name  # noqa: E402
from dlb_edu.run_dir import write_json  # noqa: E402
from dlb_edu.train import Trainer, git_revision  # noqa: E402

BUDGET_S = 450  # the whole call: with the wheels' install before it, the device command stays under 8 minutes
GPU_DATA = ROOT / "gpu_data"  # ignored by git (.gitignore): the data, the authors' code and wheels for the GPU

# (name, seconds on a GPU, seconds with --dry-run). Each part must end by the sum of its own and the earlier parts'
# seconds, counted from the start of the call: what a part leaves unused goes to the next ones.
PARTS = [("data", 45, 30), ("epoch_times", 110, 60), ("authors", 50, 60), ("resume", 65, 60),
         ("paper_runs", 35, 60), ("precision", 35, 60), ("compiled", 60, 10), ("notebooks", 50, 10)]
SKIPPED_IN_DRY_RUN = {"compiled": "torch.compile takes tens of seconds on a CPU (27 to 73 s measured here)",
                      "notebooks": "minutes on a CPU; tests/test_notebooks.py runs them there"}

# The sizes of each part: on the GPU, and on the CPU with --dry-run.
SIZES = {
    "gpu": dict(device="cuda", arch="resnet32", epochs=3, warmup=1, train=None, test=None, short_train=5000,
                short_test=2000, batch_sizes=(64, 128), b=64, authors_epochs=3, authors_workers=12,
                resume_batch=64, resume_every=25, resume_kill_step=79 + 60),
    # 8x8 synthetic images (small_cnn's smallest): fp16 convolutions are slow on a CPU. The authors' loader takes
    # only 32x32 images, so their pickles get 32x32 synthetic ones.
    "dry": dict(device="cpu", arch="small_cnn", epochs=2, warmup=1, train=64, test=32, size=8, short_train=64,
                short_test=32, batch_sizes=(16, 32), b=16, authors_epochs=2, authors_workers=0,
                resume_batch=16, resume_every=2, resume_kill_step=4 + 3),
}


# ---------------------------------------------------------------------------------------------------------------
# Records: every one says where, with what and from which revision it was measured
# ---------------------------------------------------------------------------------------------------------------

def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({cpu_name()}, {os.cpu_count()} cores)"


def revision() -> str:
    """The checkout's git revision; on a machine that got the files without .git, the one --prepare wrote."""
    rev = git_revision()
    if rev == "unknown" and (GPU_DATA / "REVISION").is_file():
        rev = (GPU_DATA / "REVISION").read_text().strip() + " (from gpu_data/REVISION)"
    return rev


class Records:
    """The records of one part, in ``path`` (a JSON list, rewritten atomically after each record)."""

    def __init__(self, path: Path, header: dict):
        self.path, self.header, self.items = path, header, []

    def add(self, kind: str, **fields) -> dict:
        rec = {"kind": kind, **self.header, **fields}
        self.items.append(rec)
        write_json(self.path, self.items)
        return rec

    def attempt(self, kind: str, fn, **fields) -> dict | None:
        """``fn()``'s fields as a record of ``kind``; its error in the record instead, and the part goes on."""
        start = time.perf_counter()
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - whatever broke, the next measurement still runs
            traceback.print_exc()
            return self.add(kind, **fields, error=f"{type(e).__name__}: {e}", wall_s=time.perf_counter() - start)
        return self.add(kind, **fields, **out, wall_s=time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------------------
# The data: decoded once, shuffled, cached for the other parts' processes
# ---------------------------------------------------------------------------------------------------------------

def image_folder_in(path: Path, work: Path) -> Path:
    """The image folder (with train/ and test/) that ``path`` is or, for a .tar.gz, holds once extracted."""
    if path.is_file():
        target = work / "extracted"
        with tarfile.open(path) as tar:
            tar.extractall(target, filter="data")
        path = target
    found = [p.parent for p in sorted(path.rglob("train")) if (p.parent / "test").is_dir()]
    if not found:
        raise FileNotFoundError(f"no folder with train/ and test/ in {path}")
    return found[0]


def shuffled(data: ImageData, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    tr, te = torch.randperm(len(data.x_train), generator=g), torch.randperm(len(data.x_test), generator=g)
    return ImageData(data.name, data.classes, data.x_train[tr], data.y_train[tr], data.x_test[te], data.y_test[te])


def load_cached(work: Path) -> ImageData:
    d = torch.load(work / "data.pt")
    return ImageData(d["name"], tuple(d["classes"]), d["x_train"], d["y_train"], d["x_test"], d["y_test"])


def write_authors_pickles(data: ImageData, root: Path) -> None:
    """The layout the authors' loader reads (``cifar-10-batches-py``, as torchvision's CIFAR-10): rows of 3,072
    bytes, the red plane, then green, then blue."""
    out = root / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    flat_train, flat_test = data.x_train.reshape(len(data.x_train), -1).numpy(), data.x_test.reshape(
        len(data.x_test), -1).numpy()
    chunks = torch.arange(len(flat_train)).tensor_split(5)
    for i, rows in enumerate(chunks):
        with open(out / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump({"data": flat_train[rows.numpy()], "labels": data.y_train[rows].tolist()}, f)
    with open(out / "test_batch", "wb") as f:
        pickle.dump({"data": flat_test, "labels": data.y_test.tolist()}, f)
    with open(out / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(data.classes)}, f)


def part_data(ctx) -> None:
    s = ctx.sizes

    def load():
        start = time.perf_counter()
        if ctx.dry_run:
            data = make_synthetic(n_train=s["train"], n_test=s["test"], size=s["size"])
            label = "synthetic (--dry-run)"
        else:
            folder = image_folder_in(Path(ctx.args.dataset), ctx.work)
            data = load_image_folder(folder)
            label = "CIFAR-10 (JPEG copy)"
        decode_s = time.perf_counter() - start
        data = shuffled(data)
        torch.save({"name": data.name, "classes": list(data.classes), "x_train": data.x_train,
                    "y_train": data.y_train, "x_test": data.x_test, "y_test": data.y_test}, ctx.work / "data.pt")
        authors = authors_script(ctx) is not None
        if authors:
            write_authors_pickles(make_synthetic(n_train=s["train"], n_test=s["test"]) if ctx.dry_run else data,
                                  ctx.work / "authors_data")
        return {"dataset": label, "train_images": len(data.x_train), "test_images": len(data.x_test),
                "decode_s": decode_s, "order": "shuffled with torch.randperm, seed 0 (train, then test)",
                "authors_pickles": authors}

    ctx.records.attempt("data", load)


# ---------------------------------------------------------------------------------------------------------------
# Epoch times: ours (epoch_time.time_one), the authors'
# ---------------------------------------------------------------------------------------------------------------

def timed(ctx, method: str, batch_size: int, forward: str, compile_model: bool = False, **overrides) -> None:
    from epoch_time import time_one
    s = ctx.sizes
    data = ctx.data()

    def measure():
        gc.collect()  # the previous measurement's trainer, so that its memory is not counted in this one's peak
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        rec = time_one(data, ctx.dataset_label, s["arch"], method, batch_size, forward, s["epochs"], s["warmup"],
                       s["device"], compile_model, **overrides)
        rec.pop("command")  # the header holds the command of this whole call
        return rec

    rec = ctx.records.attempt("epoch_time", measure, requested=dict(method=method, batch_size=batch_size,
                                                                    forward=forward, compile=compile_model,
                                                                    **overrides))
    mem = rec.get("peak_mem_bytes")
    print(f"  {method:<8} B={batch_size:<4} {forward:<5} compile={compile_model!s:<5} {overrides or ''} "
          f"{rec.get('epoch_time_s_median', rec.get('error'))} s"
          + ("" if mem is None else f", peak {mem / 2 ** 20:.0f} MiB"), flush=True)


def part_epoch_times(ctx) -> None:
    b = ctx.sizes["b"]
    for batch_size in ctx.sizes["batch_sizes"]:
        timed(ctx, "baseline", batch_size, "joint")
    timed(ctx, "dlb", b, "split")
    timed(ctx, "dlb", b, "joint")


def part_precision(ctx) -> None:
    for precision in ("fp32", "fp16"):
        timed(ctx, "dlb", ctx.sizes["b"], "joint", precision=precision)


def part_compiled(ctx) -> None:
    for forward in ("joint", "split"):
        timed(ctx, "dlb", ctx.sizes["b"], forward, compile_model=True)


def authors_script(ctx) -> Path | None:
    script = Path(ctx.args.authors) / "dlb.py" if ctx.args.authors else None
    return script if script is not None and script.is_file() else None


def part_authors(ctx) -> None:
    script = authors_script(ctx)
    if script is None:
        ctx.records.add("skipped", reason=f"no dlb.py in --authors {ctx.args.authors} (benchmarks/README.md says "
                                          f"how to put the authors' code there)")
        return
    s = ctx.sizes
    args = ["--model_names", "resnet32", "--root", str(ctx.work / "authors_data"), "--dataset", "cifar10",
            "--classes_num", "10", "--T", "3", "--alpha", "1", "--batch_size", str(s["b"]),
            "--epoch", str(s["authors_epochs"]), "--lr", "0.05", "--milestones", "150", "180", "210",
            "--print_freq", "1", "--num_workers", str(s["authors_workers"])]

    def run():
        run_dir = ctx.work / "authors_run"
        run_dir.mkdir(exist_ok=True)
        out = subprocess.run([sys.executable, str(SELF), "--worker", "authors", str(script.resolve()), *args],
                             cwd=run_dir, capture_output=True, text=True, check=False)
        print(out.stdout[-3000:], out.stderr[-3000:], flush=True)
        if out.returncode != 0:
            raise RuntimeError(f"dlb.py exited with {out.returncode}: {out.stderr.strip().splitlines()[-1:]}")
        # Each epoch ends with one "epoch:N ..." line, stamped by the worker with its time since the start.
        ends = [float(line.split("]")[0].strip("[ s")) for line in out.stdout.splitlines() if "] epoch:" in line]
        if len(ends) < 2:
            raise RuntimeError(f"found {len(ends)} epoch lines in dlb.py's output")
        epochs = [b - a for a, b in zip(ends, ends[1:])]
        return {"arch": "resnet32", "method": "dlb (authors' dlb.py)", "batch_size": s["b"], "forward": "split",
                "epoch_time_s_median": statistics.median(epochs), "epoch_times_s": epochs,
                "first_epoch_end_s": ends[0], "num_workers": s["authors_workers"],
                "script_args": shlex.join(args),
                "note": "time from one epoch's end to the next: training and the evaluation of every test image "
                        "(their loop evaluates each epoch); our epoch times exclude evaluation",
                "best_acc_line": next((ln for ln in out.stdout.splitlines() if "best acc" in ln), None)}

    ctx.records.attempt("authors_epoch_time", run)


def authors_worker(script: str, args: list[str]) -> None:
    """Run the authors' script unchanged on torch >= 2 (it imports ``torch._six``, gone since torch 2.0), each
    print stamped with the seconds since the start."""
    import builtins
    import runpy
    import types
    torch._six = types.SimpleNamespace(string_classes=(str, bytes))
    start, real_print = time.perf_counter(), builtins.print
    builtins.print = lambda *a, **k: real_print(f"[{time.perf_counter() - start:9.2f}s]", *a, **{**k, "flush": True})
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).parent))
    runpy.run_path(script, run_name="__main__")


# ---------------------------------------------------------------------------------------------------------------
# Resume on CUDA: killed, resumed, compared with the uninterrupted run
# ---------------------------------------------------------------------------------------------------------------

def resume_config(ctx, deterministic: bool) -> TrainConfig:
    s = ctx.sizes
    overrides = dict(arch=s["arch"]) if ctx.dry_run else {}
    return TrainConfig.from_preset("paper", method="dlb", epochs=2, batch_size=s["resume_batch"],
                                   train_subset=s["short_train"], test_subset=s["short_test"], probe_size=100,
                                   checkpoint_every=s["resume_every"], deterministic=deterministic,
                                   device=s["device"], dataset=ctx.dataset_label, **overrides)


def train_worker(work: Path, config_json: str, run_dir: str, kill_after: int, resume: bool) -> None:
    """Train a run in ``run_dir``; with ``kill_after``, SIGKILL this process after that many steps (its last
    ``checkpoint_every`` checkpoint is then all that survives, as after a crash)."""
    cfg = TrainConfig.from_dict(json.loads(config_json))
    trainer = Trainer(cfg, data=load_cached(work), out_dir=run_dir, resume=resume, progress=False)
    steps = []

    def on_step(_trainer, _loss):
        steps.append(1)
        if kill_after and len(steps) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    for _ in trainer.epochs(on_step):
        pass


def compare_runs(a: Path, b: Path) -> dict:
    sa, sb = (torch.load(p / "checkpoint.pt", map_location="cpu", weights_only=False) for p in (a, b))
    diffs = {k: (sa["model"][k].double() - sb["model"][k].double()).abs().max().item()
             for k in sa["model"] if sa["model"][k].is_floating_point()}
    strip = [[{k: v for k, v in row.items() if k != "epoch_time_s"} for row in s["history"]] for s in (sa, sb)]
    return {"weights_bitwise_equal": all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"]),
            "history_equal": json.dumps(strip[0]) == json.dumps(strip[1]),
            "max_abs_weight_diff": max(diffs.values()),
            "tensors_that_differ": sum(v > 0 for v in diffs.values()),
            "final_test_acc": [s["history"][-1]["test_acc"] for s in (sa, sb)]}


def part_resume(ctx) -> None:
    # With --dry-run only the deterministic pair: on a CPU both are bitwise, and each run is a process start.
    for deterministic in (True,) if ctx.dry_run else (True, False):
        cfg = resume_config(ctx, deterministic)
        base = ctx.work / f"resume_{'det' if deterministic else 'default'}"
        shutil.rmtree(base, ignore_errors=True)

        def worker(run_dir: Path, kill_after: int = 0, resume: bool = False) -> int:
            cmd = [sys.executable, str(SELF), "--worker", "train", "--work", str(ctx.work), "--config",
                   json.dumps(cfg.to_dict()), "--run-dir", str(run_dir), "--kill-after", str(kill_after)]
            return subprocess.run(cmd + (["--resume"] if resume else []), check=False).returncode

        def run():
            if worker(base / "whole") != 0:
                raise RuntimeError("the uninterrupted run failed (see the log)")
            killed = worker(base / "resumed", kill_after=ctx.sizes["resume_kill_step"])
            if killed != -signal.SIGKILL:
                raise RuntimeError(f"the run to kill exited with {killed}, not by SIGKILL")
            at = torch.load(base / "resumed" / "checkpoint.pt", map_location="cpu", weights_only=False)
            position = at["ranks"][0]["sampler"]
            if worker(base / "resumed", resume=True) != 0:
                raise RuntimeError("the resumed run failed (see the log)")
            out = compare_runs(base / "whole", base / "resumed")
            out["resumed_from"] = {"epoch": position["epoch"], "step": position["step"]}
            out["expected"] = ("bitwise equal (deterministic kernels)" if deterministic else
                               "no promise: default CUDA kernels may round differently from run to run")
            return out

        rec = ctx.records.attempt("resume", run, deterministic=deterministic, config=cfg.to_dict())
        print(f"  resume deterministic={deterministic}: bitwise {rec.get('weights_bitwise_equal')}, max diff "
              f"{rec.get('max_abs_weight_diff')}, {rec.get('error', '')}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Short paper-preset runs of every method; the notebooks
# ---------------------------------------------------------------------------------------------------------------

def part_paper_runs(ctx) -> None:
    s, data = ctx.sizes, ctx.data()
    for method in METHODS:
        overrides = dict(arch=s["arch"]) if ctx.dry_run else {}
        if method == "cs_kd":
            overrides["forward"] = "joint"  # CS-KD's pairs need one forward (config refuses split)

        def run(method=method, overrides=overrides):
            cfg = TrainConfig.from_preset("paper", method=method, epochs=2, train_subset=s["short_train"],
                                          test_subset=s["short_test"], probe_size=100, device=s["device"],
                                          dataset=ctx.dataset_label, **overrides)
            trainer = Trainer(cfg, data=data, progress=False)
            summary = trainer.run()
            return {"summary": summary, "history": trainer.history}

        rec = ctx.records.attempt("paper_run", run, method=method)
        print(f"  paper {method:<16} {rec.get('summary', {}).get('final_test_acc', rec.get('error'))}", flush=True)


def part_notebooks(ctx) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import nbformat
    from test_notebooks import NOTEBOOK_DIR, check_what_a_reader_sees, printed, run_notebook
    for name in ("04_training_stability", "04b_live_lab"):
        def run(name=name):
            path = NOTEBOOK_DIR / f"{name}.ipynb"
            nb = run_notebook(path)
            check_what_a_reader_sees(path, nb)
            nbformat.write(nb, ctx.out / f"{name}.gpu.ipynb")
            text = printed(nb)
            return {"device_line": next((ln for ln in text.splitlines() if "cuda" in ln.lower()
                                         or "gpu" in ln.lower()), None), "printed_tail": text[-1500:]}

        rec = ctx.records.attempt("notebook", run, notebook=name)
        print(f"  notebook {name}: {rec.get('error', 'ran')}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Running the parts: each in its own process, under its cap and the whole call's budget
# ---------------------------------------------------------------------------------------------------------------

PART_FUNCTIONS = {"data": part_data, "epoch_times": part_epoch_times, "authors": part_authors,
                  "resume": part_resume, "paper_runs": part_paper_runs, "precision": part_precision,
                  "compiled": part_compiled, "notebooks": part_notebooks}


class Context:
    def __init__(self, args, records: Records):
        self.args, self.records, self.dry_run = args, records, args.dry_run
        self.work, self.out = Path(args.work), Path(args.out)
        self.sizes = SIZES["dry" if args.dry_run else "gpu"]
        self.dataset_label = "synthetic" if args.dry_run else "cifar10-jpeg"
        self._data = None

    def data(self) -> ImageData:
        if self._data is None:
            self._data = load_cached(self.work)
        return self._data


def header(args, command: str) -> dict:
    sizes = SIZES["dry" if args.dry_run else "gpu"]
    return {"device": device_name(sizes["device"]), "torch": torch.__version__, "cuda": torch.version.cuda,
            "git_rev": revision(), "command": command, "dry_run": args.dry_run}


def run_part(args, name: str, command: str) -> None:
    """In the part's own process: run it, its records into work/<name>.json."""
    work = Path(args.work)
    records = Records(work / f"{name}.json", {"part": name, **header(args, command)})
    PART_FUNCTIONS[name](Context(args, records))


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["--worker", "authors"]:  # their options are theirs: none of ours are parsed
        return authors_worker(argv[2], argv[3:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--out", help="folder for gpu_check.json, gpu_check.log and the executed notebooks")
    p.add_argument("--dataset", default=str(GPU_DATA / "cifar10-jpeg.tar.gz"),
                   help="the CIFAR-10 JPEG copy: its .tar.gz or the extracted folder")
    p.add_argument("--authors", default=str(GPU_DATA / "DLB"), help="a folder with the authors' dlb.py")
    p.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny")
    p.add_argument("--only", nargs="+", choices=[n for n, _, _ in PARTS], help="run only these parts (and data)")
    p.add_argument("--budget-s", type=float, default=BUDGET_S, help="seconds for the whole call")
    p.add_argument("--prepare", action="store_true", help="fill gpu_data/ here (see benchmarks/README.md)")
    p.add_argument("--shared", default=str(ROOT.parent / "shared"), help="--prepare: where the data copy is")
    p.add_argument("--authors-from", help="--prepare: the authors' repository (a git folder) to copy from")
    # Internal: one part, or one worker process of a part.
    p.add_argument("--part", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--command", help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--kill-after", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "train":
        return train_worker(Path(args.work), args.config, args.run_dir, args.kill_after, args.resume)
    if args.part:
        return run_part(args, args.part, args.command)
    if args.prepare:
        return prepare(args)
    if not args.out:
        p.error("--out DIR is required")
    return run_all(args, "python " + shlex.join(["benchmarks/gpu_check.py", *argv]))


def run_all(args, command: str) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep), "PYTHONUNBUFFERED": "1"}
    report = {"meta": {**header(args, command), "budget_s": args.budget_s, "work": str(work)}, "parts": []}
    start, deadline = time.perf_counter(), 0.0
    log = open(out / "gpu_check.log", "a")
    try:
        for name, cap_gpu, cap_dry in PARTS:
            if args.only and name != "data" and name not in args.only:
                continue
            deadline += cap_dry if args.dry_run else cap_gpu
            elapsed = time.perf_counter() - start
            cap = min(deadline, args.budget_s) - elapsed
            entry = {"part": name, "cap_s": round(cap, 1)}
            if args.dry_run and name in SKIPPED_IN_DRY_RUN:
                entry.update(status="skipped", error=f"--dry-run: {SKIPPED_IN_DRY_RUN[name]}")
            elif cap < 5:
                entry.update(status="skipped", error="out of time: the call's budget is spent")
            else:
                entry.update(run_capped(args, name, command, work, cap, env, log))
                records = work / f"{name}.json"
                entry["records"] = json.loads(records.read_text()) if records.exists() else []
                if entry["status"] == "ok" and any("error" in r for r in entry["records"]):
                    entry["status"] = "partly failed"
            report["parts"].append(entry)
            report["meta"]["wall_s"] = time.perf_counter() - start
            write_json(out / "gpu_check.json", report)
            print(f"{name:<12} {entry['status']:<14} {entry.get('wall_s', 0):6.1f} s of {cap:.0f}"
                  + (f"  {entry['error']}" if entry.get("error") else ""), flush=True)
            if name == "data" and entry["status"] != "ok":
                print("no data: the other parts cannot run", flush=True)
                break
    finally:
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return report


def run_capped(args, name: str, command: str, work: Path, cap: float, env: dict, log) -> dict:
    """Run one part in its own process group; kill the whole group at the cap."""
    cmd = [sys.executable, str(SELF), "--part", name, "--work", str(work), "--out", args.out, "--command", command,
           "--dataset", args.dataset, "--authors", args.authors] + (["--dry-run"] if args.dry_run else [])
    log.write(f"\n===== {name} (cap {cap:.0f} s) =====\n")
    log.flush()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        rc = proc.wait(timeout=cap)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return {"status": "timeout", "wall_s": time.perf_counter() - start,
                "error": f"over its cap of {cap:.0f} s: killed; the records finished before are kept"}
    wall = time.perf_counter() - start
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind (a data loader's workers, a kernel)
    except ProcessLookupError:
        pass
    if rc != 0:
        return {"status": "error", "wall_s": wall, "error": f"exited with {rc}: see gpu_check.log"}
    return {"status": "ok", "wall_s": wall}


# ---------------------------------------------------------------------------------------------------------------
# --prepare: what the GPU machine needs beside the checkout, in gpu_data/ (ignored by git)
# ---------------------------------------------------------------------------------------------------------------

NOTEBOOK_PACKAGES = ["nbclient", "nbformat", "ipykernel", "ipywidgets"]  # what the GPU image lacks for notebooks


def prepare(args) -> None:
    GPU_DATA.mkdir(exist_ok=True)
    src = Path(args.shared) / "data" / "cifar10-jpeg.tar.gz"
    if not (GPU_DATA / src.name).exists():
        shutil.copy(src, GPU_DATA / src.name)
    if args.authors_from:  # a folder holding dlb.py, or a git repository (bare or not) whose HEAD holds it
        target = GPU_DATA / "DLB"
        shutil.rmtree(target, ignore_errors=True)
        if (Path(args.authors_from) / "dlb.py").is_file():
            shutil.copytree(args.authors_from, target, ignore=shutil.ignore_patterns(".git"))
        else:
            target.mkdir()
            archive = subprocess.run(["git", "-C", args.authors_from, "archive", "HEAD"], capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    wheels = GPU_DATA / "whl"
    if not wheels.exists():
        # Python 3.12 on x86-64 Linux, as the GPU image; dependencies too (pip skips there what is installed).
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version",
                        "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform",
                        "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "-d", str(wheels),
                        *NOTEBOOK_PACKAGES], check=True)
    rev = git_revision()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=ROOT).stdout.strip()
    (GPU_DATA / "REVISION").write_text(rev + (" with uncommitted changes" if dirty else "") + "\n")
    size = sum(f.stat().st_size for f in GPU_DATA.rglob("*") if f.is_file())
    print(f"gpu_data/: {size / 2 ** 20:.1f} MiB (the device tool carries at most 64 MiB with the checkout); "
          f"authors' code: {'yes' if (GPU_DATA / 'DLB' / 'dlb.py').exists() else 'no'}; revision {rev}")


if __name__ == "__main__":
    main()
