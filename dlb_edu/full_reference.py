"""The full-size reference results: the ``cpu`` preset on all of the CIFAR-10 JPEG copy, committed under
``results/full/`` by ``benchmarks/full_reference_runs.py`` (commands, machine, load and revision in
``manifest.json``). This module reads them for the notebooks and the README; no number is typed in anywhere.

Three groups of runs, several seeds each: ``clean`` (baseline and DLB), ``alpha0`` (DLB with alpha = 0: the
compute-matched control, which makes DLB's 2B forwards per step, sees each image under two augmentations and counts
its cross-entropy twice, but has no consistency term) and ``noise40`` (baseline and DLB with 40% of the training
labels replaced by uniformly drawn classes). Differences are taken seed by seed: a seed gives both runs the same
initialisation and data order, so the paired difference removes most of the seed-to-seed spread.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .reference import mean_std, read_history
from .viz import paired_interval

DEFAULT_DIR = Path("results") / "full"
FIGURE_NAME = "full_cifar10_jpeg.png"
DATA_LABEL = "CIFAR-10 (JPEG copy)"

# group -> the methods its compare trains, the options beyond the preset, and how it is named in tables
GROUPS = {
    "clean": {"methods": ["baseline", "dlb"], "args": [], "label": "clean labels"},
    "alpha0": {"methods": ["dlb"], "args": ["--alpha", "0"], "label": "DLB with alpha = 0 (control)"},
    "noise40": {"methods": ["baseline", "dlb"], "args": ["--label-noise", "0.4"], "label": "40% symmetric noise"},
}
# The comparisons the notebooks and README report: (name, (group, method) minus (group, method)).
CONTRASTS = [
    ("DLB - baseline, clean", ("clean", "dlb"), ("clean", "baseline")),
    ("DLB - DLB(alpha=0), clean", ("clean", "dlb"), ("alpha0", "dlb")),
    ("DLB(alpha=0) - baseline, clean", ("alpha0", "dlb"), ("clean", "baseline")),
    ("DLB - baseline, 40% noise", ("noise40", "dlb"), ("noise40", "baseline")),
]


def default_root() -> Path:
    return Path(__file__).resolve().parent.parent / DEFAULT_DIR


@dataclass(frozen=True)
class FullRun:
    group: str
    method: str
    seed: int
    history: list
    summary: dict

    @property
    def final(self) -> float:
        return self.history[-1]["test_acc"]

    @property
    def best(self) -> float:
        return max(r["test_acc"] for r in self.history)


@dataclass
class FullReference:
    root: Path
    manifest: dict
    runs: list

    def of(self, group: str, method: str) -> list[FullRun]:
        return [r for r in self.runs if r.group == group and r.method == method]

    def stats(self, group: str, method: str, which: str = "final") -> tuple[float, float, int]:
        values = [getattr(r, which) for r in self.of(group, method)]
        return (*mean_std(values), len(values)) if values else (math.nan, math.nan, 0)

    def paired(self, a: tuple[str, str], b: tuple[str, str], which: str = "final") -> dict:
        """``a`` minus ``b`` seed by seed, with the mean, the std of the differences and the seeds' own spread."""
        acc_b = {r.seed: getattr(r, which) for r in self.of(*b)}
        pairs = [(r.seed, getattr(r, which) - acc_b[r.seed]) for r in self.of(*a) if r.seed in acc_b]
        diffs = [d for _, d in pairs]
        m, s = mean_std(diffs) if diffs else (math.nan, math.nan)
        spread = max((self.stats(*a, which)[1], self.stats(*b, which)[1]), default=math.nan)
        return {"seeds": [p for p, _ in pairs], "diffs": diffs, "mean": m, "std": s, "seed_spread": spread}

    def provenance(self) -> str:
        m = self.manifest
        mach = m.get("machine", {})
        jobs = m.get("jobs", [])
        loads = [j["loadavg_start"][0] for j in jobs] + [j["loadavg_end"][0] for j in jobs]
        load = f"load average {min(loads):.1f}-{max(loads):.1f} during the runs" if loads else "load not recorded"
        revs = m.get("git_revs_recorded") or [m.get("git_rev")]  # of the code that trained, from the summaries
        cpus = {}  # the CPU each run trained on
        for run in m.get("runs", []):
            cpus.setdefault(run.get("cpu", mach.get("cpu")), []).append(f"{run['group']} seed {run['seed']}")
        cpu = "; ".join(f"{c}: {', '.join(runs)}" for c, runs in cpus.items()) if len(cpus) > 1 else next(iter(cpus), mach.get("cpu"))
        return (f"small_cnn, preset cpu, on {DATA_LABEL}: 50,000 training and 10,000 test images\n"
                f"machine: {mach.get('cpu_cores')}-core CPU ({cpu}), no GPU, "
                f"{', '.join(map(str, m.get('threads', [])))} threads, precision "
                f"{', '.join(map(str, m.get('precision', [])))}; {load}; one run at a time; torch {mach.get('torch')}\n"
                f"date: {m.get('date')}, git revision{'s' * (len(revs) > 1)}: {', '.join(revs)}; commands in "
                f"{DEFAULT_DIR / 'manifest.json'}")


def load(root: str | Path | None = None) -> FullReference:
    root = Path(root) if root is not None else default_root()
    path = root / "manifest.json"
    if not path.is_file():
        raise DataError(f"no full-size reference results in {root} (no manifest.json): run "
                        f"python benchmarks/full_reference_runs.py")
    manifest = json.loads(path.read_text())
    runs = []
    for entry in manifest["runs"]:
        for method in GROUPS[entry["group"]]["methods"]:
            d = root / entry["dir"] / method
            runs.append(FullRun(entry["group"], method, entry["seed"], read_history(d / "history.csv"),
                                json.loads((d / "summary.json").read_text())))
    return FullReference(root, manifest, runs)


def _pm(m: float, s: float, n: int) -> str:
    return f"{m:.4f} ± {s:.4f}" if n > 1 else f"{m:.4f}"


def markdown_tables(ref: FullReference) -> str:
    """Final and best test accuracy per group and method (mean ± std over seeds, and each seed), then the paired
    differences, each with a sentence on whether it exceeds the seed spread. The epoch times are wall times on a
    shared machine: the fastest epoch is the best estimate of what an epoch costs when the machine is quiet."""
    lines = ["| setting | method | seeds | final test acc | best test acc | per seed (final) | fastest / median epoch | "
             "training time per run |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for group, spec in GROUPS.items():
        for method in spec["methods"]:
            runs = ref.of(group, method)
            if not runs:
                continue
            minutes = sum(r.summary["train_time_s"] for r in runs) / len(runs) / 60
            epoch_times = [row["epoch_time_s"] for r in runs for row in r.history]
            lines.append(f"| {spec['label']} | {method} | {len(runs)} | {_pm(*ref.stats(group, method))} | "
                         f"{_pm(*ref.stats(group, method, 'best'))} | "
                         f"{', '.join(f'{r.final:.4f}' for r in runs)} | {min(epoch_times):.1f} / "
                         f"{statistics.median(epoch_times):.1f} s | {minutes:.1f} min |")
    lines += ["", "| paired difference (final test acc) | per seed | mean | 95% t interval of the mean | "
                  "std of the differences | the seeds' own spread (std) | reading |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, a, b in CONTRASTS:
        d = ref.paired(a, b)
        if not d["diffs"]:
            continue
        _, low, high = paired_interval(d["diffs"])
        interval = "-" if len(d["diffs"]) < 2 else f"[{low:+.4f}, {high:+.4f}]"
        lines.append(f"| {name} | {', '.join(f'{x:+.4f}' for x in d['diffs'])} | {d['mean']:+.4f} | {interval} | "
                     f"{d['std']:.4f} | {d['seed_spread']:.4f} | {verdict(d)} |")
    return "\n".join(lines)


def verdict(d: dict) -> str:
    """Plain words: does the paired difference stand out of the seed-to-seed spread?"""
    n = len(d["diffs"])
    if n < 2:
        return "one seed: no spread to compare with"
    same_sign = all(x > 0 for x in d["diffs"]) or all(x < 0 for x in d["diffs"])
    _, low, high = paired_interval(d["diffs"])
    interval = "its 95% interval excludes 0" if low > 0 or high < 0 else "but its 95% interval includes 0"
    if same_sign and abs(d["mean"]) > d["seed_spread"]:
        return f"same sign on all {n} seeds and larger than the seed spread; {interval}"
    if same_sign:
        return f"same sign on all {n} seeds, but within the seed spread; {interval}"
    return f"the sign changes between seeds: not distinguishable with {n} seeds"


def format_tables(ref: FullReference) -> str:
    return markdown_tables(ref)


def figure(ref: FullReference):
    """Left: test accuracy per epoch, mean over seeds. Right: the paired differences (``viz.plot_paired_differences``:
    a dot per seed, their mean and its interval, on an axis that includes 0); a contrast not run yet says so."""
    import matplotlib.pyplot as plt

    from . import viz
    fig = plt.figure(figsize=(13, 4.2))
    left, right = fig.subplots(1, 2, width_ratios=[1.3, 1])
    styles = {"clean": "-", "alpha0": "--", "noise40": ":"}
    for group, spec in GROUPS.items():
        for method in spec["methods"]:
            runs = ref.of(group, method)
            if not runs:
                continue
            epochs = [row["epoch"] for row in runs[0].history]
            mean = [sum(r.history[i]["test_acc"] for r in runs) / len(runs) for i in range(len(epochs))]
            left.plot(epochs, mean, styles[group], color=viz.METHOD_COLORS.get(method),
                      label=f"{method}, {spec['label']} ({len(runs)} seeds)")
    left.set(xlabel="epoch", ylabel="test accuracy", title=f"{DATA_LABEL}, small_cnn, cpu preset")
    left.legend(fontsize=8, loc="lower right")
    viz.plot_paired_differences({name: ref.paired(a, b)["diffs"] for name, a, b in CONTRASTS}, ax=right)
    return fig


def readme(ref: FullReference) -> str:
    return (f"# Full-size reference runs: {DATA_LABEL}\n\nMade by `benchmarks/full_reference_runs.py`; "
            f"every run's command, the machine's load and the revisions are in `manifest.json`.\n\n"
            f"{ref.provenance()}\n\n{markdown_tables(ref)}\n\n![curves and paired differences]({FIGURE_NAME})\n")


def show(root: str | Path | None = None):
    """For notebooks: the marker line, the provenance and the tables as text, and the figure."""
    from .reference import MARKER
    ref = load(root)
    runs = ref.manifest.get("runs", [])
    print(f"{MARKER}: full size\n{ref.provenance()}\ncommand: {runs[0]['command'] if runs else '-'} (one per run)"
          f"\n\n{markdown_tables(ref)}")
    return figure(ref)
