"""The reference results: real runs, committed under ``results/reference/``, that the notebooks show beside their own.

A notebook executed in smoke mode (``DLB_EDU_SMOKE=1``, what CI does) trains a few hundred images for two epochs:
its accuracies are near chance and say nothing about DLB. The reference runs are the real thing at CPU scale: every
method with the ``quick`` preset (``small_cnn``, 15 epochs) on the bundled ``cifar10-mini``, several seeds each,
and DLB once more with ``--forward split``. ``benchmarks/reference_runs.py`` makes them with the CLI and records the
commands, the machine, the torch version, the date and the git revision in ``manifest.json``. This module reads
those files: the notebooks never type a number in.

Accuracy is reported two ways, always labelled: *final* (the last epoch's test accuracy) and *best* (the highest
test accuracy over the epochs). The best one picks its epoch by looking at the test set, so it is an optimistic
estimate; the authors' script reports it (``best acc``), which is why it is shown at all.

A run's ``history.csv`` is read by the trainer's own reader (:func:`dlb_edu.run_dir.read_history_csv`), with the
trainer's column names.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .run_dir import read_history_csv
from .smoke import SMOKE_CONFIG, smoke_mode

DEFAULT_DIR = Path("results") / "reference"
FIGURE_NAME = "reference_quick.png"
SPLIT_COLOR = "#8C3B0C"  # DLB's orange, darker: DLB with the split forward
# Printed first by show(): the notebook tests look for it in the executed outputs.
MARKER = "REFERENCE RESULTS (real runs, not smoke)"

def default_root() -> Path:
    """``results/reference`` of the project this package sits in."""
    return Path(__file__).resolve().parent.parent / DEFAULT_DIR


def run_dir(root: Path, preset: str, method: str, forward: str | None, seed: int) -> Path:
    """``root/<preset>/<method>[-<forward>]/seed<seed>``: forward None means the preset's own."""
    name = method if forward is None else f"{method}-{forward}"
    return Path(root) / preset / name / f"seed{seed}"


def read_history(path: str | Path) -> list[dict]:
    """The rows of a finished run's ``history.csv`` (:func:`~dlb_edu.run_dir.read_history_csv`); DataError if it
    has no rows or lacks ``epoch`` or ``test_acc``."""
    rows = read_history_csv(path)
    missing = [n for n in ("epoch", "test_acc") if rows and n not in rows[0]]
    if not rows or missing:
        raise DataError(f"{path} has no rows or lacks the columns {missing}: is it a dlb_edu history.csv?")
    return rows


@dataclass(frozen=True)
class Run:
    """One finished run: ``variant`` is its folder name (a method, or ``method-forward`` such as ``dlb-split``)."""
    variant: str
    seed: int
    history: list
    config: dict
    summary: dict

    @property
    def final_acc(self) -> float:
        """Test accuracy after the last epoch."""
        return self.history[-1]["test_acc"]

    @property
    def best_acc(self) -> float:
        """The highest test accuracy over the epochs: the epoch is chosen on the test set (optimistic)."""
        return max(r["test_acc"] for r in self.history)

    @property
    def best_epoch(self) -> int:
        return max(self.history, key=lambda r: r["test_acc"])["epoch"]


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    values = list(values)
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


@dataclass
class Reference:
    """The reference runs and their manifest (command, machine, torch, date, revision)."""
    root: Path
    manifest: dict
    runs: list

    @property
    def variants(self) -> list[str]:
        """Folder names in the manifest's order: the methods, then ``dlb-split``."""
        return list(dict.fromkeys(r.variant for r in self.runs))

    def of(self, variant: str) -> list[Run]:
        runs = [r for r in self.runs if r.variant == variant]
        if not runs:
            raise DataError(f"no reference runs named {variant!r}: there are {', '.join(self.variants)}")
        return runs

    def label(self, variant: str) -> str:
        """``dlb, joint forward`` / ``dlb, split forward`` for DLB (the two modes), the method's name otherwise."""
        config = self.of(variant)[0].config
        return f"dlb, {config.get('forward')} forward" if config.get("method") == "dlb" else config.get("method",
                                                                                                        variant)

    def histories(self, variant: str) -> list[list[dict]]:
        return [r.history for r in self.of(variant)]

    def stats(self, variant: str) -> dict:
        """Over the seeds: ``final`` and ``best`` test accuracy as (mean, std), the seeds, and the per-seed values."""
        runs = self.of(variant)
        return {"seeds": [r.seed for r in runs], "final": mean_std(r.final_acc for r in runs),
                "best": mean_std(r.best_acc for r in runs), "final_values": [r.final_acc for r in runs],
                "best_values": [r.best_acc for r in runs]}

    def paired_difference(self, a: str, b: str, which: str = "final") -> dict:
        """``a`` minus ``b`` seed by seed (same seed: same initialisation and data order), with mean, std and the
        standard error of the mean difference."""
        acc_b = {r.seed: getattr(r, f"{which}_acc") for r in self.of(b)}
        pairs = [(r.seed, getattr(r, f"{which}_acc") - acc_b[r.seed]) for r in self.of(a) if r.seed in acc_b]
        diffs = [d for _, d in pairs]
        m, s = mean_std(diffs)
        return {"seeds": [seed for seed, _ in pairs], "diffs": diffs, "mean": m, "std": s,
                "sem": s / math.sqrt(len(diffs))}

    def provenance(self) -> str:
        """Where the numbers come from, in a few lines: what ran, the command, the machine, date and revision."""
        m = self.manifest
        mach = m.get("machine", {})
        gpu = mach.get("gpu", "none")
        return (f"{m.get('arch')} on {m.get('dataset')}, preset {m.get('preset')} ({m.get('epochs')} epochs), "
                f"seeds {', '.join(map(str, m.get('seeds', [])))}\n"
                f"command: {m.get('command')}\n"
                f"machine: {mach.get('cpu_cores')}-core CPU ({mach.get('cpu')}), GPU: {gpu}; "
                f"{m.get('processes_at_a_time')} runs at a time, {m.get('threads_per_process')} thread each; "
                f"torch {mach.get('torch')}\n"
                f"date: {m.get('date')}, git revision: {m.get('git_rev')}; files: {_shown_path(self.root)}")


def _shown_path(root: Path) -> str:
    try:
        return str(Path(root).resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(root)


def load(root: str | Path | None = None) -> Reference:
    """Read ``manifest.json`` and every run it lists (``config.json``, ``history.csv``, ``summary.json``)."""
    root = Path(root) if root is not None else default_root()
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"no reference results in {root} (no manifest.json): run "
                        f"python benchmarks/reference_runs.py")
    manifest = json.loads(manifest_path.read_text())
    runs = []
    for entry in manifest["runs"]:
        d = root / entry["dir"]
        try:
            config = json.loads((d / "config.json").read_text())
            summary_path = d / "summary.json"
            summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"reference run {d} is incomplete ({type(e).__name__}): run "
                            f"python benchmarks/reference_runs.py again to finish it") from None
        runs.append(Run(variant=Path(entry["dir"]).parent.name, seed=int(entry["seed"]),
                        history=read_history(d / "history.csv"), config=config, summary=summary))
    return Reference(root, manifest, runs)


def format_table(ref: Reference, variants=None) -> str:
    """A plain-text table: for each variant, the seeds, final and best test accuracy as mean ± std."""
    variants = list(variants or ref.variants)
    labels = {v: ref.label(v) for v in variants}
    width = max(len(x) for x in list(labels.values()) + ["method"])
    head = f"{'method':<{width}}  seeds  {'final test acc':>15}  {'best test acc*':>15}"
    lines = [head, "-" * len(head)]
    for v in variants:
        s = ref.stats(v)
        lines.append(f"{labels[v]:<{width}}  {len(s['seeds']):>5}  {_pm(s['final']):>15}  {_pm(s['best']):>15}")
    lines.append("mean ± std over seeds (sample std). *best: the highest test accuracy over the epochs, so the epoch "
                 "is chosen on the test set: optimistic.")
    return "\n".join(lines)


def markdown_table(ref: Reference, variants=None) -> str:
    """The same table in Markdown, with the per-seed values."""
    variants = list(variants or ref.variants)
    lines = ["| method | seeds | final test acc (mean ± std) | best test acc (mean ± std)* | final, per seed |",
             "|---|---|---|---|---|"]
    for v in variants:
        s = ref.stats(v)
        per_seed = ", ".join(f"{x:.3f}" for x in s["final_values"])
        lines.append(f"| {ref.label(v)} | {', '.join(map(str, s['seeds']))} | {_pm(s['final'])} | {_pm(s['best'])} "
                     f"| {per_seed} |")
    return "\n".join(lines)


def _pm(mean_and_std: tuple[float, float]) -> str:
    return f"{mean_and_std[0]:.3f} ± {mean_and_std[1]:.3f}"


def figure(ref: Reference, variants=None, title: str | None = None):
    """Test accuracy per epoch (mean ± std band over seeds) and final / best accuracy per method."""
    from . import viz
    variants = list(variants or ref.variants)
    m = ref.manifest
    title = title or (f"reference runs: {m.get('arch')} on {m.get('dataset')}, {m.get('epochs')} epochs, "
                      f"{len(m.get('seeds', []))} seeds, {m.get('machine', {}).get('cpu_cores')}-core CPU, "
                      f"revision {m.get('git_rev')}")
    colors = {ref.label(v): viz.METHOD_COLORS.get(v, SPLIT_COLOR if v.endswith("-split") else None)
              for v in variants}
    return viz.plot_seed_summary({ref.label(v): ref.histories(v) for v in variants}, title=title, colors=colors)


def show(variants=None, root: str | Path | None = None, title: str | None = None):
    """Print :data:`MARKER`, the provenance and the table, and draw the figure (returned)."""
    ref = load(root)
    print(MARKER)
    print(ref.provenance())
    print()
    print(format_table(ref, variants))
    return figure(ref, variants, title)


def announce_smoke() -> bool:
    """In smoke mode, print the one line that says the run's numbers are not results; return whether it is on."""
    if smoke_mode():
        print(f"SMOKE RUN (DLB_EDU_SMOKE=1): {SMOKE_CONFIG['train_subset']} training images, "
              f"{SMOKE_CONFIG['epochs']} epochs; these numbers test the code, they are not results (the reference "
              f"results are)")
    return smoke_mode()


def revision_note(manifest: dict) -> str:
    """Why the summaries may name several revisions, and whether the training code differs between them."""
    revs = manifest.get("git_revs_recorded", [])
    if len(revs) < 2:
        return ""
    changed = manifest.get("training_code_changed_between_them", [])
    return (f" (commits made while the runs trained: the summaries record {', '.join(revs)}; "
            + (f"the training code differs in {', '.join(changed)})" if changed else
               "none of them changed a file that `python -m dlb_edu train` imports)"))


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` independent test images: sqrt(p (1 - p) / n)."""
    return math.sqrt(accuracy * (1 - accuracy) / n)


def binomial_note(ref: Reference, variant: str = "baseline") -> str:
    """One sentence: the binomial standard error of one run's accuracy at the variant's mean final accuracy."""
    n = ref.manifest.get("test_images")
    if not n or variant not in ref.variants:
        return ""
    p = ref.stats(variant)["final"][0]
    return (f"One accuracy on {n:,} test images has a binomial standard error of {binomial_se(p, n):.3f} at "
            f"{variant}'s mean final accuracy {p:.3f}: a gap of that size between two single runs is within noise.")


def readme(ref: Reference) -> str:
    """``results/reference/README.md``: what was run, how, where, and the tables."""
    m = ref.manifest
    mach = m.get("machine", {})
    lines = [
        "# Reference results",
        "",
        f"Every method of `dlb_edu` with the `{m.get('preset')}` preset ({m.get('arch')}, {m.get('epochs')} epochs, "
        f"batch size B = 64 fresh samples per step, T = 3, alpha = 1) on the bundled `{m.get('dataset')}` "
        f"({m.get('train_images', 0):,} training and {m.get('test_images', 0):,} test images of CIFAR-10), seeds "
        f"{', '.join(map(str, m.get('seeds', [])))}; "
        "DLB once with the preset's joint forward and once with `--forward split` (the authors' step). The notebooks "
        "read these files through `dlb_edu.reference`; nothing here is typed in by hand.",
        "",
        "Made with",
        "",
        "```bash",
        m.get("command", ""),
        "```",
        "",
        "which runs, two at a time, one CLI process per run, e.g.",
        "",
        "```bash",
        m["runs"][0]["command"] if m.get("runs") else "",
        "```",
        "",
        f"- machine: {mach.get('cpu_cores')}-core CPU ({mach.get('cpu')}), no GPU (GPU: {mach.get('gpu')}); "
        f"{mach.get('os')}, Python {mach.get('python')}",
        f"- torch {mach.get('torch')}; {m.get('processes_at_a_time')} runs at a time, "
        f"{m.get('threads_per_process')} thread each (`OMP_NUM_THREADS=1`, `nice -n 10`), on a machine shared with "
        "other work: the epoch times in the histories are not benchmarks",
        f"- date: {m.get('date')}; git revision of the code that trained: {m.get('git_rev')}{revision_note(m)}",
        "",
        "## Test accuracy, mean ± std over seeds",
        "",
        markdown_table(ref),
        "",
        "*Final*: after the last epoch. *Best*: the highest test accuracy over the epochs; that picks the epoch on the "
        "test set, so it is an optimistic estimate (the authors' script reports it). Sample standard deviation "
        f"(n - 1) over the seeds. {binomial_note(ref)}",
        "",
        "## Seed by seed: DLB against the baseline, and split against joint forward",
        "",
        "The same seed gives two runs the same initialisation and data order, so differences are taken seed by seed.",
        "",
    ]
    pairs = [(a, b) for a, b in (("dlb", "baseline"), ("dlb-split", "dlb")) if {a, b} <= set(ref.variants)]
    if pairs:
        seeds = ref.paired_difference(*pairs[0])["seeds"]
        lines += ["| final test acc | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
                  "|---|" + "---|" * (len(seeds) + 1)]
        for a, b in pairs:
            d = ref.paired_difference(a, b)
            lines.append(f"| {ref.label(a)} − {ref.label(b)} | " + " | ".join(f"{x:+.3f}" for x in d["diffs"])
                         + f" | {d['mean']:+.3f} ± {d['std']:.3f} |")
        lines.append("")
    lines += [
        f"![test accuracy of every method over the epochs]({FIGURE_NAME})",
        "",
        "Full CIFAR-10 / CIFAR-100 results with the `paper` preset (ResNet-32, 240 epochs) need a GPU; none has been "
        "made yet. Each run folder holds `config.json`, `history.csv` and `summary.json` (its `checkpoint.pt` and "
        "`train.log` are not committed). Rerun the command above to reproduce; finished runs are skipped and "
        "interrupted ones resumed.",
        "",
    ]
    return "\n".join(lines)
