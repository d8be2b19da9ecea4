"""The projected time of an experiment (dlb_edu.projection, train.measure_costs / project / run_experiment): the
arithmetic against hand-computed sums, the one line, the budget refusal and what it advises, and that a refused plan
writes nothing."""
import pytest

from dlb_edu.config import TrainConfig
from dlb_edu.errors import ConfigError
from dlb_edu.projection import Projection, RunCost, check_budget_minutes, duration
from dlb_edu.train import compare, measure_costs, project, run_experiment


def plan(seeds=(0, 1), methods=("baseline", "dlb"), epochs=20, left=None):
    step = {"baseline": 0.02, "dlb": 0.04}
    runs = tuple(RunCost(m, s, epochs if left is None else left, 782, step[m], 2.0) for s in seeds for m in methods)
    return Projection(runs, epochs, "cpu (2 threads)")


def test_the_projection_adds_up_steps_and_evaluations():
    p = plan()
    # per seed: 20 x (782 x 0.02 + 2) + 20 x (782 x 0.04 + 2) = 352.8 + 665.6 = 1018.4 s
    assert p.seconds == pytest.approx(2 * 1018.4)
    assert p.steps == 2 * 2 * 20 * 782
    assert p.line() == "projected: 2 seeds x 2 methods x 20 epochs on cpu (2 threads): about 34 min"


def test_resumed_runs_count_only_what_is_left():
    p = plan(left=5)
    assert p.seconds == pytest.approx(2 * 1018.4 / 4)
    assert "(20 of 80 run-epochs left)" in p.line()


def test_over_budget_is_one_line_naming_the_ways_to_fit_and_how_to_run_it_anyway():
    p = plan()
    p.check_budget(None)
    p.check_budget(34)  # 33.9 min fits
    with pytest.raises(ConfigError) as e:
        p.check_budget(20, cpu_preset_s=600)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(p.line())
    assert "over the budget of 20 min" in msg
    assert "1 seed (about 17 min)" in msg              # 1018.4 s
    assert "--epochs 11 (about 19 min)" in msg         # 1200 s // (2 x 50.92 s) = 11 epochs: 11 x 101.84 s
    assert "the cpu preset (about 10 min)" in msg
    assert "budget_minutes" in msg and "to run it anyway" in msg


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "60", True])
def test_a_bad_budget_is_refused(bad):
    with pytest.raises(ConfigError, match="budget_minutes must be a positive number"):
        check_budget_minutes(bad)


def test_durations_read_as_people_say_them():
    assert [duration(s) for s in (0.2, 40, 600, 3 * 3600, 5 * 86400)] == ["1 s", "40 s", "10 min", "3.0 h",
                                                                         "5.0 days"]


def test_measured_costs_are_positive_and_dlb_costs_more_than_the_baseline(synthetic):
    base = measure_costs(TrainConfig(method="baseline", dataset="synthetic", batch_size=16), synthetic, steps=6)
    dlb = measure_costs(TrainConfig(method="dlb", dataset="synthetic", batch_size=16), synthetic, steps=6)
    assert all(x > 0 for x in base + dlb)


def test_project_counts_the_steps_of_every_run(synthetic):
    cfgs = [TrainConfig(method=m, seed=s, dataset="synthetic", batch_size=32, epochs=3, test_subset=100)
            for s in (0, 1) for m in ("baseline", "dlb")]
    p = project(cfgs, synthetic, [0, 1, 0, 0])
    assert [r.steps_per_epoch for r in p.runs] == [8] * 4  # 256 images / 32
    assert [r.epochs_left for r in p.runs] == [3, 2, 3, 3]
    assert p.seeds == [0, 1] and p.methods == ["baseline", "dlb"]


def test_a_plan_over_budget_is_refused_before_any_file_is_written(synthetic, tmp_path, capsys):
    cfg = TrainConfig(dataset="synthetic", batch_size=32, epochs=10_000)
    with pytest.raises(ConfigError, match="over the budget of 0.01 min"):
        compare(cfg, ["baseline", "dlb"], tmp_path / "cmp", data=synthetic, budget_minutes=0.01, progress=False)
    assert not (tmp_path / "cmp").exists()
    assert capsys.readouterr().out.startswith("projected: 1 seed x 2 methods x 10000 epochs on cpu")


def test_an_experiment_prints_its_projection_then_a_closing_line(synthetic, tmp_path, capsys):
    cfg = TrainConfig(dataset="synthetic", batch_size=32, epochs=1, test_subset=64, probe_size=32)
    results = run_experiment(cfg, ["baseline"], [0, 1], tmp_path, data=synthetic, progress=False)
    assert sorted(results) == [("baseline", 0), ("baseline", 1)]
    assert (tmp_path / "seed_1" / "baseline" / "checkpoint.pt").is_file()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("projected: 2 seeds x 1 method x 1 epochs")
    assert out[-1].startswith("trained 2 runs in ")


@pytest.mark.parametrize("methods, message", [("dlb", "methods must be a list"), ([1, 2], "methods must be a list"),
                                              (("dlb", "dlb"), "--methods names dlb more than once"),
                                              ([], "at least one method")])
def test_methods_must_be_a_list_of_distinct_names(synthetic, methods, message):
    with pytest.raises(ConfigError, match=message):
        compare(TrainConfig(dataset="synthetic"), methods, data=synthetic, progress=False)
