"""The live lab headless: start, pause, change alpha, resume, stop, in background threads, deterministically.

Every test pauses the lab at a chosen step (``pause(at_step=...)``) or lets it finish, so nothing races: the
threads take turns one step each and the gate before each DLB step is the only place where the lab pauses, stops
or changes T and alpha. The oracles are independent of the lab: a observer of DLB's step records that recomputes
:func:`~dlb_edu.losses.dlb_loss`, plain :class:`~dlb_edu.train.Trainer` runs, autograd, and the CLI's ``--resume``.
"""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from dlb_edu import viz  # noqa: E402
from dlb_edu.config import TrainConfig  # noqa: E402
from dlb_edu.errors import ConfigError  # noqa: E402
from dlb_edu.lab import Change, LiveLab, LiveView, consistency_gradient, step_kl  # noqa: E402
from dlb_edu.lab_status import status_line  # noqa: E402
from dlb_edu.losses import consistency_loss, dlb_loss  # noqa: E402
from dlb_edu.train import Trainer  # noqa: E402

# 256 synthetic images, B = 32: 8 steps per epoch, 16 in the run. Every field is one the CLI can set.
CONFIG = TrainConfig.from_preset("quick", dataset="synthetic", epochs=2, batch_size=32, train_subset=256,
                                 test_subset=64, device="cpu")
CLI_ARGS = ["train", "--dataset", "synthetic", "--epochs", "2", "--batch-size", "32", "--train-subset", "256",
            "--test-subset", "64", "--device", "cpu", "--no-progress"]
EVERY = 2


@pytest.fixture(scope="module")
def cli_synthetic():
    """The CLI's `--dataset synthetic` (these tests resume lab runs with the CLI, so both must see the same data)."""
    from dlb_edu.data import make_synthetic
    return make_synthetic()


def make_lab(cli_synthetic, **kwargs) -> LiveLab:
    return LiveLab(CONFIG, data=cli_synthetic, every=EVERY, probe_size=64, **kwargs)


def watching_lab(cli_synthetic, **kwargs) -> tuple[LiveLab, list[dict]]:
    """A lab with an observer of DLB's steps (``on_step``): what each step returned (its record), the alpha and T
    the method held then, and the fresh half's logits, which DLB caches for the next step's teacher."""
    calls = []

    def watch(trainer, rec):
        assert "loss" not in vars(trainer.method)  # nobody replaced the method's loss on the instance
        if trainer.config.method != "dlb":
            return
        r = rec.batch.num_repeated
        calls.append({"logits": rec.logits.clone(), "y": rec.y.clone(), "r": r,
                      "cached": None if rec.teacher is None else rec.teacher.clone(), "alpha": trainer.method.alpha,
                      "temperature": trainer.method.temperature, "loss": rec.loss.clone(),
                      "fresh": rec.logits[r:].float().clone()})

    return make_lab(cli_synthetic, on_step=watch, **kwargs), calls


def final_weights(trainer: Trainer) -> dict:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def plain_runs(cli_synthetic, alpha_from: dict[int, float]) -> dict:
    """The baseline and DLB trained by plain Trainers, no lab; DLB's alpha set from ``on_step`` so that
    ``alpha_from[s]`` is in force from step s on."""
    weights = {}
    for method in ("baseline", "dlb"):
        trainer = Trainer(dataclasses.replace(CONFIG, method=method), data=cli_synthetic, progress=False)

        def on_step(t, record):
            if t.config.method == "dlb" and t.steps_done + 1 in alpha_from:  # the baseline has no alpha
                t.method.set(alpha=alpha_from[t.steps_done + 1])

        for _ in trainer.epochs(on_step=on_step):
            pass
        weights[method] = final_weights(trainer)
    return weights


@pytest.fixture(scope="module")
def stopped(cli_synthetic, tmp_path_factory):
    """A lab paused after step 4, alpha raised to 2.5, resumed, paused after step 7 and stopped, with an output
    folder; the DLB loss calls seen by a spy; the inspector at step 7."""
    out = tmp_path_factory.mktemp("lab")
    lab, calls = watching_lab(cli_synthetic, out_dir=out)
    lab.pause(at_step=4)
    lab.start()
    assert lab.wait_paused(timeout=120) == 4
    assert lab.state == "paused" and lab.step == 4
    lab.set("alpha", 2.5)
    assert lab.changes == []  # pending: nothing changes while paused
    lab.pause(at_step=7)  # asked before Resume, so the run cannot be past step 7 when it is asked
    lab.resume()
    assert lab.wait_paused(timeout=120) == 7
    inspected = [lab.inspect(i) for i in (0, 5)]
    lab.stop(timeout=120)
    return {"lab": lab, "calls": calls, "out": out, "inspected": inspected}


# ---------------------------------------------------------------------------------------------------------------
# Start, pause, change alpha, resume, stop
# ---------------------------------------------------------------------------------------------------------------

def test_stop_joins_both_threads_at_the_same_step(stopped):
    lab = stopped["lab"]
    assert lab.state == "stopped" and lab.ended and lab.wait(timeout=0)
    assert all(not t.is_alive() for t in lab.turns.threads)
    assert [t.steps_done for t in lab.trainers.values()] == [7, 7]
    assert lab.record.as_dict()["steps"]["dlb"]["step"] == list(range(1, 8))
    assert "stopped after step 7/16" in status_line(lab)


def test_the_change_is_recorded_at_the_first_step_that_uses_it(stopped):
    lab = stopped["lab"]
    assert lab.changes == [Change(step=5, name="alpha", old=1.0, new=2.5)]
    assert lab.record.as_dict()["steps"]["dlb"]["alpha"] == [1.0] * 4 + [2.5] * 3
    assert lab.view_state()["changes"] == [{"step": 5, "name": "alpha", "old": 1.0, "new": 2.5}]
    assert json.loads((stopped["out"] / "lab.json").read_text())["changes"] == lab.view_state()["changes"]


def test_the_loss_uses_the_new_alpha_from_that_step_on(stopped):
    calls = stopped["calls"]
    assert len(calls) == 7 and calls[0]["cached"] is None and all(c["r"] == 32 for c in calls[1:])
    for before, call in zip(calls, calls[1:]):  # the teacher the step used: the step before's fresh half
        assert torch.equal(call["cached"], before["fresh"])
    for step, call in enumerate(calls, start=1):
        alpha = 1.0 if step < 5 else 2.5
        assert call["alpha"] == alpha
        expected, _, kd = dlb_loss(call["logits"], call["y"], call["cached"], call["temperature"], alpha)
        torch.testing.assert_close(call["loss"], expected)
        if step >= 5:  # and not the old value: the consistency term is there to tell them apart
            assert kd > 0
            assert not torch.allclose(call["loss"], dlb_loss(call["logits"], call["y"], call["cached"], 3.0, 1.0)[0])
    recorded = stopped["lab"].record.as_dict()["steps"]["dlb"]
    torch.testing.assert_close(torch.tensor(recorded["loss"]), torch.stack([c["loss"] for c in calls]))
    for loss, ce, kd, alpha in zip(recorded["loss"], recorded["ce"], recorded["consistency"], recorded["alpha"]):
        assert loss == pytest.approx(ce + alpha * kd, rel=1e-5)


def test_stop_leaves_checkpoints_that_the_cli_resumes(stopped, cli_synthetic, tmp_path):
    out = tmp_path / "lab"
    shutil.copytree(stopped["out"], out)
    for method in ("baseline", "dlb"):
        state = torch.load(out / method / "checkpoint.pt", weights_only=True)
        assert (state["ranks"][0]["sampler"]["epoch"], state["ranks"][0]["sampler"]["step"]) == (0, 7)
        proc = subprocess.run([sys.executable, "-m", "dlb_edu", *CLI_ARGS, "--method", method, "--out",
                               str(out / method), "--resume"], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
        assert proc.returncode == 0, proc.stderr
        assert "epoch   2/2" in proc.stdout
    # The CLI continues with the config's alpha: DLB ran steps 5-7 at 2.5 and the rest at 1. A plain run that does
    # the same (same number of threads) ends on the same weights, to the bit.
    reference = plain_runs(cli_synthetic, {5: 2.5, 8: 1.0})
    for method in ("baseline", "dlb"):
        resumed = torch.load(out / method / "checkpoint.pt", weights_only=True)
        assert len(resumed["history"]) == 2
        assert_same_weights(resumed["model"], reference[method])


def test_a_resumed_lab_reapplies_its_changes_and_ends_where_an_uninterrupted_one_ends(stopped, cli_synthetic,
                                                                                      tmp_path):
    out = tmp_path / "lab"
    shutil.copytree(stopped["out"], out)
    resumed = make_lab(cli_synthetic, out_dir=out, resume=True)
    assert resumed.step == 7 and resumed.knobs() == {"temperature": 3.0, "alpha": 2.5}
    assert resumed.changes == [Change(5, "alpha", 1.0, 2.5)]
    assert resumed.record.as_dict()["steps"]["dlb"]["step"] == list(range(1, 8))  # its record continues too
    resumed.start()
    assert resumed.wait(timeout=300) and resumed.state == "finished", resumed.error

    uninterrupted = make_lab(cli_synthetic)
    uninterrupted.set("alpha", 2.5, at_step=5)
    uninterrupted.start()
    assert uninterrupted.wait(timeout=300) and uninterrupted.state == "finished", uninterrupted.error
    for method in ("baseline", "dlb"):
        assert_same_weights(final_weights(resumed.trainers[method]), final_weights(uninterrupted.trainers[method]))
    a, b = resumed.record.as_dict(), uninterrupted.record.as_dict()
    assert a["changes"] == b["changes"] and a["steps"]["dlb"]["alpha"] == b["steps"]["dlb"]["alpha"]
    assert a["points"]["dlb"]["step"] == b["points"]["dlb"]["step"] == list(range(2, 17, 2))

    # ... and the lab trains exactly what plain trainers train: its observer, probes and second forwards change nothing.
    plain = plain_runs(cli_synthetic, {5: 2.5})
    for method in ("baseline", "dlb"):
        assert_same_weights(final_weights(uninterrupted.trainers[method]), plain[method])


# ---------------------------------------------------------------------------------------------------------------
# What the lab measures and shows
# ---------------------------------------------------------------------------------------------------------------

def test_stability_points_every_k_steps_with_dlb_step_kl_read_from_the_step(stopped):
    lab, calls = stopped["lab"], stopped["calls"]
    points = lab.record.as_dict()["points"]
    for method in ("baseline", "dlb"):
        p = points[method]
        assert p["step"] == [2, 4, 6]
        assert p["flip_rate"][0] != p["flip_rate"][0] and 0 <= p["flip_rate"][1] <= 1  # NaN: no earlier probe
        assert all(kl >= 0 for kl in p["probe_kl"][1:] + p["step_kl"])
    for k, step in enumerate(points["dlb"]["step"]):
        call = calls[step - 1]  # cached logits of the repeated half against this step's logits of them, at T = 1
        expected = step_kl(call["cached"], call["logits"][:call["r"]])
        assert points["dlb"]["step_kl"][k] == pytest.approx(expected, rel=1e-6)
        steps = lab.record.as_dict()["steps"]["dlb"]
        assert points["dlb"]["ce"][k] == pytest.approx(sum(steps["ce"][step - 2:step]) / 2)


def test_inspector_shows_the_cached_teacher_the_student_at_t_and_the_gradient_of_autograd(stopped):
    call = stopped["calls"][6]  # step 7
    # The inspector gives float32 tensors whatever the autocast dtype (bf16 on this CPU): compare in float32.
    call = {**call, "cached": call["cached"].float(), "logits": call["logits"].float()}
    for info in stopped["inspected"]:
        i, T, alpha = info["sample"], info["temperature"], info["alpha"]
        assert (info["step"], T, alpha, info["num_repeated"]) == (7, 3.0, 2.5, 32)
        torch.testing.assert_close(info["teacher_logits"], call["cached"])
        torch.testing.assert_close(info["student_logits"], call["logits"][:32])
        torch.testing.assert_close(info["p_teacher"], torch.softmax(call["cached"][i] / T, 0))
        torch.testing.assert_close(info["p_student"], torch.softmax(call["logits"][i] / T, 0))
        student = call["logits"][:32].double().requires_grad_(True)
        grad, = torch.autograd.grad(alpha * consistency_loss(student, call["cached"].double(), T), student)
        torch.testing.assert_close(info["grad"].double(), grad[i], rtol=1e-4, atol=1e-7)
        assert info["grad"].sum().abs() < 1e-6  # both distributions sum to one
    torch.testing.assert_close(consistency_gradient(call["logits"][:32], call["cached"], 3.0, 2.5)[5],
                               stopped["inspected"][1]["grad"])


def test_inspector_refuses_a_sample_outside_the_repeated_half(stopped):
    with pytest.raises(ConfigError, match=r"\[0, 32\)"):
        stopped["lab"].inspect(32)


def test_the_figure_marks_the_change_in_every_panel(stopped):
    fig = viz.plot_lab(stopped["lab"].view_state())
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 4 and all(ax.get_xlabel() and ax.get_ylabel() for ax in panels)
    for ax in panels:
        verticals = [ln for ln in ax.lines if list(ln.get_xdata()) == [5, 5]]
        assert len(verticals) == 1 and verticals[0].get_color() == viz.KNOB_COLORS["alpha"]
        assert any("α 1→2.5" in t.get_text() for t in ax.texts)
        assert {ln.get_label() for ln in ax.lines} >= {"baseline", "dlb"}
    assert fig.legends


def test_bad_values_are_refused_with_one_line(cli_synthetic):
    lab = make_lab(cli_synthetic)
    for name, value, words in (("alpha", -1.0, r"alpha must be a number >= 0, got -1\.0"),
                               ("temperature", 0.0, r"temperature must be a number in \[0\.01, 100\], got 0\.0"),
                               ("lr", 0.1, "only temperature and alpha")):
        with pytest.raises(ConfigError, match=words):
            lab.set(name, value)
    with pytest.raises(ConfigError, match="at_step"):
        lab.set("alpha", 2.0, at_step=0)
    with pytest.raises(ConfigError, match="every"):
        LiveLab(CONFIG, data=cli_synthetic, every=0)
    lab.stop()  # never started
    with pytest.raises(ConfigError, match="stopped"):
        lab.set("alpha", 2.0)
    with pytest.raises(ConfigError, match="already run"):
        lab.start()


def test_set_refuses_exactly_what_the_config_refuses_with_its_message(cli_synthetic):
    from knob_cases import KNOB_VALUES, config_verdict

    lab = make_lab(cli_synthetic)
    for name, value in KNOB_VALUES:
        verdict, what = config_verdict(name, value)
        if verdict == "refused":
            with pytest.raises(ConfigError) as caught:
                lab.set(name, value)
            assert str(caught.value) == what, (name, value)
        else:
            lab.set(name, value)  # accepted: the run's starting value
    lab.stop()


def test_set_refuses_a_temperature_of_0_005_with_the_cli_s_message(cli_synthetic, capsys):
    from dlb_edu import cli

    assert cli.main([*CLI_ARGS, "--temperature", "0.005"]) == 2
    cli_error = capsys.readouterr().err
    lab = make_lab(cli_synthetic)
    with pytest.raises(ConfigError) as caught:
        lab.set("temperature", 0.005)
    assert cli_error == f"dlb_edu: error: {caught.value}\n"
    assert str(caught.value) == "temperature must be a number in [0.01, 100], got 0.005"
    assert lab.knobs()["temperature"] == 3.0
    lab.stop()


def test_no_method_s_loss_is_replaced_on_its_instance_during_a_lab_run(cli_synthetic):
    lab, calls = watching_lab(cli_synthetic)  # the observer asserts it at every step of both runs
    lab.set("alpha", 2.0, at_step=2)
    lab.pause(at_step=3)
    lab.start()
    assert lab.wait_paused(timeout=120) == 3
    lab.stop(timeout=120)
    assert lab.error is None and len(calls) == 3
    for trainer in lab.trainers.values():
        assert "loss" not in vars(trainer.method)
        assert trainer.method.loss.__func__ is type(trainer.method).loss


def test_a_change_before_start_is_the_first_step_s_value(cli_synthetic):
    lab, calls = watching_lab(cli_synthetic)
    lab.set("temperature", 2.0)
    lab.pause(at_step=2)
    lab.start()
    assert lab.wait_paused(timeout=120) == 2
    lab.stop(timeout=120)
    assert lab.changes == [Change(1, "temperature", 3.0, 2.0)]
    assert [c["temperature"] for c in calls] == [2.0, 2.0]


def test_live_view_draws_at_most_max_fps_and_a_last_frame_of_the_ended_run(cli_synthetic):
    lab = make_lab(cli_synthetic)
    frames = []
    view = LiveView(lab, lambda png, snap: frames.append((png, snap["state"], snap["step"])), max_fps=4)
    start = time.perf_counter()
    lab.pause(at_step=6)
    lab.start()
    view.start()
    assert lab.wait_paused(timeout=120) == 6
    lab.stop(timeout=120)
    view.wait(timeout=60)
    elapsed = time.perf_counter() - start
    assert 1 <= len(frames) <= elapsed * 4 + 2
    png, state, step = frames[-1]
    assert png.startswith(b"\x89PNG") and state == "stopped" and step == 6
    assert view.error is None and view.draw() is None  # nothing new since the last frame


def test_the_lab_module_does_not_import_ipywidgets():
    code = "import sys, dlb_edu.lab; print(sorted(m for m in ('ipywidgets', 'IPython') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------------
# The widget, without a browser
# ---------------------------------------------------------------------------------------------------------------

def test_lab_app_buttons_and_alpha_slider_steer_a_run(cli_synthetic):
    from dlb_edu import widgets

    app = widgets.LabApp(config=CONFIG, data=cli_synthetic, every=EVERY)
    assert [b.disabled for b in (app.start_button, app.pause_button, app.resume_button, app.stop_button)] == \
        [False, True, True, True]
    app.alpha.value = 1.5  # before Start: the run's starting value, not a change
    app.start_button.click()
    assert app.lab.knobs()["alpha"] == 1.5 and app.start_button.disabled
    app.pause_button.click()
    paused = app.lab.wait_paused(timeout=120)
    assert paused is not None
    app.alpha.value = 3.0
    app.lab.pause(at_step=paused + 2)
    app.resume_button.click()
    assert app.lab.wait_paused(timeout=120) == paused + 2
    app.inspect_button.click()
    assert app.inspection["step"] == paused + 2 and app.inspection["alpha"] == 3.0
    assert bytes(app.inspector.value).startswith(b"\x89PNG")
    app.stop_button.click()
    app.wait(timeout=120)
    assert app.lab.changes == [Change(paused + 1, "alpha", 1.5, 3.0)]
    assert "stopped after step" in app.status.value
    assert f"step {paused + 1}: alpha 1.5 -&gt; 3" in app.change_log.value
    assert bytes(app.figure.value).startswith(b"\x89PNG")
    assert app.snapshot().data == bytes(app.figure.value)  # the last frame, the one under the sliders
    assert any(list(ln.get_xdata()) == [paused + 1] * 2 for ln in app.fig.axes[0].lines)
    assert not app.start_button.disabled and app.stop_button.disabled


def test_lab_app_snapshot_is_an_image_before_a_run(cli_synthetic):
    from IPython.display import Image

    from dlb_edu import widgets

    snapshot = widgets.LabApp(config=CONFIG, data=cli_synthetic, every=EVERY).snapshot()
    assert isinstance(snapshot, Image) and snapshot.data.startswith(b"\x89PNG\r\n\x1a\n")


def test_a_new_lab_app_stops_the_run_of_the_one_before(cli_synthetic):
    from dlb_edu import widgets

    first = widgets.LabApp(config=CONFIG, data=cli_synthetic, every=EVERY)
    first.start_button.click()
    first.pause_button.click()
    assert first.lab.wait_paused(timeout=120) is not None
    widgets.LabApp(config=CONFIG, data=cli_synthetic, every=EVERY)  # the notebook cell run again
    first.wait(timeout=120)
    assert first.lab.state == "stopped" and "stopped after step" in first.status.value


def test_lab_app_shows_a_bad_input_in_its_status_line():
    from dlb_edu import widgets

    app = widgets.LabApp(config=dataclasses.replace(CONFIG, dataset="no/such/folder"))
    app.start_button.click()
    assert "no/such/folder" in app.status.value and "color:#b00" in app.status.value
    assert app.lab is None and not app.start_button.disabled


def test_live_view_benchmark_times_runs_with_and_without_the_view(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import live_view

    out = tmp_path / "live_view.json"
    live_view.main(["--dataset", "synthetic", "--steps", "6", "--warmup", "1", "--repeats", "1", "--out", str(out)])
    records = json.loads(out.read_text())
    assert [r["view"] for r in records] == [False, True]
    for r in records:
        assert r["steps_per_s"] > 0 and r["steps"] == 6 and r["device"] == "cpu" and r["command"]
    assert records[0]["frames"] == 0 and records[1]["frames"] >= 1 and 0 < records[1]["view_cpu_share"] < 1
