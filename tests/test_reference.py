"""The reference results: the reader on hand-made run folders, and the committed results themselves."""
import json
import math

import matplotlib
import pytest

matplotlib.use("Agg")

from dlb_edu import reference  # noqa: E402
from dlb_edu.config import METHODS  # noqa: E402
from dlb_edu.errors import DataError  # noqa: E402

# test accuracy per epoch, per (variant, seed)
ACCS = {("baseline", 0): [0.30, 0.50, 0.40], ("baseline", 1): [0.20, 0.45, 0.44],
        ("dlb", 0): [0.35, 0.52, 0.50], ("dlb", 1): [0.25, 0.40, 0.48],
        ("dlb-split", 0): [0.33, 0.55, 0.53], ("dlb-split", 1): [0.30, 0.50, 0.49]}


def write_run(d, method, forward, accs):
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"method": method, "forward": forward, "arch": "small_cnn"}))
    lines = ["epoch,train_loss,train_consistency,test_acc"]
    lines += [f"{e + 1},{1.0 / (e + 1)},{0.1 * e},{acc}" for e, acc in enumerate(accs)]
    (d / "history.csv").write_text("\n".join(lines) + "\n")
    (d / "summary.json").write_text(json.dumps({"final_test_acc": accs[-1], "git_rev": "abc1234"}))


@pytest.fixture
def ref_root(tmp_path):
    runs = []
    for (variant, seed), accs in ACCS.items():
        method, _, forward = variant.partition("-")
        d = reference.run_dir(tmp_path, "quick", method, forward or None, seed)
        write_run(d, method, forward or "joint", accs)
        runs.append({"method": method, "seed": seed, "dir": str(d.relative_to(tmp_path)), "command": "python -m x"})
    manifest = {"command": "python benchmarks/reference_runs.py", "runs": runs, "preset": "quick",
                "dataset": "cifar10-mini", "arch": "small_cnn", "epochs": 3, "seeds": [0, 1],
                "train_images": 4000, "test_images": 1000, "machine": {"cpu_cores": 2, "cpu": "a CPU", "gpu": "none",
                                                                         "torch": "2.x"},
                "processes_at_a_time": 2, "threads_per_process": 1, "date": "2030-01-02", "git_rev": "abc1234"}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def test_final_and_best_accuracy_are_read_from_the_history_and_averaged_over_seeds(ref_root):
    ref = reference.load(ref_root)
    assert ref.variants == ["baseline", "dlb", "dlb-split"]
    s = ref.stats("baseline")
    assert s["seeds"] == [0, 1]
    assert s["final_values"] == [0.40, 0.44] and s["best_values"] == [0.50, 0.45]
    assert s["final"][0] == pytest.approx(0.42) and s["final"][1] == pytest.approx(math.sqrt(0.0008))  # n - 1
    assert s["best"] == (pytest.approx(0.475), pytest.approx(math.sqrt(0.00125)))
    assert [r.best_epoch for r in ref.of("baseline")] == [2, 2]


def test_histories_are_read_as_numbers_under_the_trainers_column_names(ref_root):
    ref = reference.load(ref_root)
    for run in ref.of("dlb"):
        assert [row["epoch"] for row in run.history] == [1, 2, 3]
        assert [row["train_consistency"] for row in run.history] == pytest.approx([0.0, 0.1, 0.2])


def test_paired_difference_is_taken_seed_by_seed(ref_root):
    d = reference.load(ref_root).paired_difference("dlb-split", "dlb")
    assert d["seeds"] == [0, 1] and d["diffs"] == pytest.approx([0.03, 0.01])
    assert d["mean"] == pytest.approx(0.02) and d["sem"] == pytest.approx(d["std"] / math.sqrt(2))


def test_table_labels_final_and_best_accuracy_and_the_two_forward_modes(ref_root):
    ref = reference.load(ref_root)
    table = reference.format_table(ref)
    header = table.splitlines()[0]
    assert "final test acc" in header and "best test acc" in header
    assert "dlb, joint forward" in table and "dlb, split forward" in table
    assert "0.420 ± 0.028" in table  # baseline's final accuracy
    assert "chosen on the test set" in table


def test_show_prints_the_marker_and_where_the_numbers_come_from(ref_root, capsys):
    fig = reference.show(["baseline", "dlb"], root=ref_root)
    out = capsys.readouterr().out
    assert out.startswith(reference.MARKER)
    for fact in ("python benchmarks/reference_runs.py", "2-core CPU", "2030-01-02", "abc1234", "torch 2.x"):
        assert fact in out
    curves, dots = fig.axes[:2]
    assert [line.get_label() for line in curves.lines] == ["baseline (2 seeds)", "dlb, joint forward (2 seeds)"]
    seeds = [line for line in dots.lines if line.get_marker() == "o"]
    assert [len(line.get_xdata()) for line in seeds] == [2] * 4  # final and best for each of the two, a dot per seed
    assert not dots.patches  # a dot plot, not bars


def test_a_missing_or_incomplete_reference_is_a_one_line_data_error(ref_root, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(DataError, match="no reference results"):
        reference.load(empty)
    (ref_root / "quick" / "dlb" / "seed1" / "config.json").unlink()
    with pytest.raises(DataError, match="incomplete"):
        reference.load(ref_root)


def test_smoke_mode_is_announced_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("DLB_EDU_SMOKE", "1")
    assert reference.announce_smoke()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("SMOKE RUN")
    monkeypatch.setenv("DLB_EDU_SMOKE", "0")
    assert not reference.announce_smoke() and capsys.readouterr().out == ""


# ---------------------------------------------------------------------------------------------------------------
# The committed results
# ---------------------------------------------------------------------------------------------------------------

def test_committed_reference_has_every_method_three_seeds_and_its_provenance():
    ref = reference.load()
    assert ref.variants == list(METHODS) + ["dlb-split"]
    m = ref.manifest
    for variant in ref.variants:
        runs = ref.of(variant)
        assert sorted(r.seed for r in runs) == [0, 1, 2]
        for run in runs:
            assert len(run.history) == run.config["epochs"] == m["epochs"]
            assert run.summary["final_test_acc"] == pytest.approx(run.final_acc)
            assert run.summary["best_test_acc"] == pytest.approx(run.best_acc)
            assert run.summary["git_rev"] in m["git_revs_recorded"]
            assert run.config["forward"] == ("split" if variant == "dlb-split" else "joint")
    assert m["command"].startswith("OMP_NUM_THREADS=1") and m["machine"]["gpu"] == "none"
    assert all(m[k] for k in ("date", "git_rev")) and m["machine"]["torch"]
    assert m["git_rev"] == m["git_revs_recorded"][0] and m["training_code_changed_between_them"] == []


def test_committed_readme_is_the_one_the_results_give():
    ref = reference.load()
    assert (ref.root / "README.md").read_text() == reference.readme(ref)
    assert (ref.root / reference.FIGURE_NAME).is_file()


def test_reference_script_runs_every_method_and_dlb_split_through_the_cli(tmp_path):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import reference_runs
    from dlb_edu.cli import build_parser, config_from_args

    jobs = reference_runs.run_jobs([0, 1, 2], list(METHODS), "quick")
    assert len(jobs) == 3 * (len(METHODS) + 1)
    seen = set()
    for job in jobs:
        assert job["argv"][:4] == ["python", "-m", "dlb_edu", "train"]
        config = config_from_args(build_parser().parse_args(job["argv"][3:]))
        seen.add((config.method, config.forward, config.seed, config.epochs, config.arch))
        assert job["dir"] == reference.run_dir(reference.default_root(), "quick", config.method, job["forward"],
                                               config.seed)
    assert seen == {(m, "joint", s, 15, "small_cnn") for m in METHODS for s in (0, 1, 2)} | {
        ("dlb", "split", s, 15, "small_cnn") for s in (0, 1, 2)}
    assert not reference_runs.finished(tmp_path)  # an empty folder is not a finished run


def test_a_history_that_is_not_one_is_refused_in_one_line(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,test_acc\n")
    with pytest.raises(DataError, match="has no rows"):
        reference.read_history(path)
    path.write_text("epoch,test_acc\n1,abc\n")
    with pytest.raises(DataError, match="not a number"):
        reference.read_history(path)


def test_the_committed_reruns_say_what_their_readme_says():
    """results/full/reruns/: the same machine reproduced a run bit for bit, another CPU model did not."""
    import csv
    from pathlib import Path

    full = Path(__file__).parents[1] / "results" / "full"

    def rows(path):
        with open(path) as f:
            return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in csv.DictReader(f)]

    same, other = (rows(full / "reruns" / n / "baseline" / "history.csv") for n in ("noise40_seed0", "clean_seed0"))
    assert len(same) == len(other) == 16
    assert same == rows(full / "noise40" / "seed0" / "baseline" / "history.csv")
    original = rows(full / "clean" / "seed0" / "baseline" / "history.csv")
    assert other[0]["train_loss"] != original[0]["train_loss"]
    assert round(float(other[-1]["test_acc"]), 4) == 0.7586 and round(float(original[-1]["test_acc"]), 4) == 0.7653
