"""The trainer: a DLB step does what Algorithm 1 says, runs learn, outputs are written, resumes are exact, a
diverged run stops without writing a non-finite checkpoint."""
import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from dlb_edu.config import TrainConfig
from dlb_edu.errors import ConfigError, TrainingDiverged
from dlb_edu.run_dir import HISTORY_COLUMNS, read_history_csv
from dlb_edu.train import Trainer
from resume_checks import assert_same_run, stop_after


def tiny(**overrides):
    base = dict(dataset="synthetic", arch="small_cnn", epochs=2, batch_size=32, lr=0.05, device="cpu",
                probe_size=64, test_subset=128)
    return TrainConfig(**{**base, **overrides})


@pytest.mark.parametrize("method,forward", [("baseline", "joint"), ("dlb", "joint"), ("dlb", "split")])
def test_smoke_two_epochs_on_synthetic_data_learn(synthetic, method, forward):
    trainer = Trainer(tiny(method=method, forward=forward), data=synthetic, progress=False)
    trainer.run()
    assert [h["epoch"] for h in trainer.history] == [1, 2]
    assert trainer.history[-1]["test_acc"] > 0.5  # chance is 0.1
    assert list(trainer.history[-1]) == list(HISTORY_COLUMNS)


def test_first_step_is_plain_ce_then_the_cache_feeds_the_second(synthetic):
    trainer = Trainer(tiny(method="dlb"), data=synthetic, progress=False)
    batches = iter(trainer.sampler)
    first = next(batches)
    assert first.num_repeated == 0
    trainer.train_step(first, 0, 0)
    assert trainer.stats.consistency_sum.item() == 0.0       # no cache yet: plain cross-entropy
    assert trainer.cache.indices.tolist() == first.fresh     # the fresh half's logits are cached
    assert trainer.cache.nbytes == 32 * 10 * 4 + 32 * 8
    second = next(batches)
    assert second.repeated == first.fresh
    trainer.train_step(second, 0, 1)
    assert trainer.stats.consistency_sum.item() > 0.0
    assert trainer.cache.indices.tolist() == second.fresh


@pytest.mark.parametrize("method", ["baseline", "dlb"])
def test_the_step_record_holds_what_the_step_computed(synthetic, method):
    """The record against an independent computation: the logits of the step's inputs through the weights before the
    update, the labels, DLB's teacher (the step before's fresh half) and the loss terms by hand."""
    trainer = Trainer(tiny(method=method, forward="joint", precision="fp32"), data=synthetic, progress=False)
    inputs, before, T, alpha = [], None, 3.0, 1.0
    trainer.model.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach().clone()))
    for step, batch in zip(range(3), trainer.sampler):
        weights, inputs[:] = copy.deepcopy(trainer.model), []
        rec = trainer.train_step(batch, 0, step)
        r, y = batch.num_repeated, trainer.y_train[torch.as_tensor(batch)]
        assert rec.batch is batch and torch.equal(rec.y, y) and len(inputs) == 1
        assert not any(t.requires_grad for t in (rec.loss, rec.ce, rec.consistency, rec.logits))
        torch.testing.assert_close(rec.logits, weights(inputs[0]).detach(), rtol=1e-6, atol=1e-6)
        ce = -torch.log_softmax(rec.logits, 1)[torch.arange(len(y)), y].mean()
        if method == "baseline" or step == 0:
            assert rec.teacher is None and rec.consistency == 0
            consistency = torch.zeros(())
        else:
            assert torch.equal(rec.teacher, before.logits[before.batch.num_repeated:])
            p_teacher = torch.softmax(rec.teacher / T, 1)
            log_p_student = torch.log_softmax(rec.logits[:r] / T, 1)
            consistency = T ** 2 * (p_teacher * (p_teacher.log() - log_p_student)).sum(1).mean()
            assert consistency > 0
        torch.testing.assert_close(rec.ce, ce)
        torch.testing.assert_close(rec.consistency, consistency)
        torch.testing.assert_close(rec.loss, ce + alpha * consistency)
        before = rec


@pytest.mark.parametrize("forward,calls", [("split", [32, 16, 32]), ("joint", [32, 48])])
def test_split_forward_calls_the_network_on_the_fresh_half_first(synthetic, forward, calls):
    # 48 images in batches of 32: the second step repeats 32 and has 16 fresh, so the halves differ in size.
    trainer = Trainer(tiny(method="dlb", forward=forward, train_subset=48, probe_size=8), data=synthetic,
                      progress=False)
    seen, net = [], trainer.net
    trainer.net = lambda x: seen.append(len(x)) or net(x)
    for step, batch in enumerate(trainer.sampler):
        trainer.train_step(batch, 0, step)
    assert seen == calls  # split: the first step has no repeated half (one call), then fresh first, then repeated


def test_learning_rate_is_a_function_of_the_epoch(synthetic):
    cfg = tiny(epochs=4, milestones=(0.5, 0.75))  # x0.1 from epoch 2 (0-based) and again from epoch 3
    assert [cfg.lr_at(e) for e in range(4)] == pytest.approx([0.05, 0.05, 0.005, 0.0005], rel=1e-12)
    trainer = Trainer(dataclasses.replace(cfg, train_subset=64), data=synthetic, progress=False)
    assert [row["lr"] for row in trainer.epochs()] == [cfg.lr_at(e) for e in range(4)]
    assert TrainConfig.from_preset("paper").milestone_epochs() == [150, 180, 210]


def test_outputs_are_written(synthetic, tmp_path):
    trainer = Trainer(tiny(), data=synthetic, out_dir=tmp_path / "run", progress=False)
    trainer.run()
    rows = read_history_csv(tmp_path / "run" / "history.csv")
    assert len(rows) == 2 and list(rows[0]) == list(HISTORY_COLUMNS)
    for row, kept in zip(rows, trainer.history):
        assert all(row[k] == pytest.approx(kept[k], nan_ok=True) for k in HISTORY_COLUMNS)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["final_test_acc"] == rows[-1]["test_acc"]
    assert summary["best_test_acc"] == max(r["test_acc"] for r in rows)
    assert summary["train_time_s"] == pytest.approx(sum(r["epoch_time_s"] for r in rows))
    assert summary["epochs"] == 2 and summary["method"] == "dlb" and summary["params"] > 0
    # where it trained: the CPU's model name, as the system reports it (records from two machines must differ)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "model name" in cpuinfo.read_text():
        model = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("model name"))
        assert summary["cpu"] == model.split(":", 1)[1].strip()
    assert summary["cpu"]
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == trainer.config.to_dict()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    # DLB's cache travels in DLB's own state: the last fresh half's indices and logits.
    cache = state["ranks"][0]["method"]["cache"]
    assert cache["indices"].tolist() == state["ranks"][0]["sampler"]["last_fresh"]
    assert cache["logits"].shape == (len(cache["indices"]), 10)


def test_resume_between_epochs_continues_exactly(synthetic, tmp_path):
    cfg = tiny(epochs=3)  # the resumed run crosses the lr milestones of its 3 epochs
    full = Trainer(cfg, data=synthetic, progress=False)
    full.run()
    Trainer(dataclasses.replace(cfg, epochs=1), data=synthetic, out_dir=tmp_path, progress=False).run()
    resumed = Trainer(cfg, data=synthetic, out_dir=tmp_path, resume=True, progress=False)
    resumed.run()
    assert_same_run(full, resumed)


def test_resume_mid_epoch_continues_exactly(synthetic, tmp_path):
    cfg = tiny(epochs=2, checkpoint_every=3)
    full = Trainer(cfg, data=synthetic, progress=False)
    full.run()
    stop_after(Trainer(cfg, data=synthetic, out_dir=tmp_path, progress=False), 8 + 5)  # 8 steps per epoch
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["ranks"][0]["sampler"]["epoch"] == 1 and state["ranks"][0]["sampler"]["step"] == 3
    resumed = Trainer(cfg, data=synthetic, out_dir=tmp_path, resume=True, progress=False)
    assert resumed.sampler.step == 3 and len(resumed.stats.step_losses) == 3
    resumed.run()
    assert_same_run(full, resumed)


def test_nan_loss_stops_names_the_step_and_keeps_the_last_finite_checkpoint(synthetic, tmp_path):
    trainer = Trainer(tiny(epochs=3), data=synthetic, out_dir=tmp_path, progress=False)
    trainer.train_epoch()
    good = (tmp_path / "checkpoint.pt").read_bytes()

    def blow_up(t, _loss):
        for group in t.optimizer.param_groups:
            group["lr"] = 1e30  # the weights blow up at the next step

    with pytest.raises(TrainingDiverged, match=r"at epoch 2, step \d+: lower --lr or --alpha; the last finite "
                                               r"checkpoint is .*checkpoint.pt \(after epoch 1\)"):
        trainer.train_epoch(on_step=blow_up)
    assert (tmp_path / "checkpoint.pt").read_bytes() == good
    resumed = Trainer(tiny(epochs=3), data=synthetic, out_dir=tmp_path, resume=True, progress=False)
    assert len(resumed.history) == 1 and resumed.sampler.epoch == 1


def test_no_checkpoint_is_written_with_non_finite_weights(synthetic, tmp_path):
    # The loss of a step is computed before its update: a step can leave NaN weights behind a finite loss.
    trainer = Trainer(tiny(epochs=2, checkpoint_every=2), data=synthetic, out_dir=tmp_path, progress=False)

    def poison(t, _loss):
        if t.sampler.step == 4:  # after the step's update, before the checkpoint at step 4
            with torch.no_grad():
                next(t.model.parameters()).fill_(float("inf"))

    with pytest.raises(TrainingDiverged, match=r"the weights are no longer finite \(epoch 1, step 4\).*the last "
                                               r"finite checkpoint is .* \(epoch 1, step 2\)"):
        trainer.train_epoch(on_step=poison)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["ranks"][0]["sampler"]["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_a_run_stopped_before_its_first_checkpoint_starts_again(synthetic, tmp_path):
    Trainer(tiny(), data=synthetic, out_dir=tmp_path, progress=False)  # writes config.json, then "dies"
    assert (tmp_path / "config.json").exists() and not (tmp_path / "checkpoint.pt").exists()
    for resume in (False, True):
        trainer = Trainer(tiny(), data=synthetic, out_dir=tmp_path, resume=resume, progress=False)
        assert trainer.sampler.epoch == 0 and trainer.history == []
        trainer.close()  # one owner at a time: the next one may open the folder


def test_batch_larger_than_data_set_is_refused(synthetic):
    with pytest.raises(ConfigError, match=r"batch_size must be in \[1, 256\] \(the training set of 256 images\)"):
        Trainer(tiny(batch_size=257), data=synthetic, progress=False)


def test_paper_preset_is_the_papers_recipe():
    cfg = TrainConfig.from_preset("paper", method="dlb")
    assert (cfg.arch, cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay,
            cfg.temperature, cfg.alpha, cfg.forward, cfg.precision) == \
        ("resnet32", 240, 64, 0.05, 0.9, True, 5e-4, 3.0, 1.0, "split", "fp32")
    assert [cfg.lr_at(e) for e in (149, 150, 180, 210)] == pytest.approx([0.05, 5e-3, 5e-4, 5e-5])


def test_history_has_no_nan_beyond_the_first_epochs_stability_columns(synthetic):
    trainer = Trainer(tiny(), data=synthetic, progress=False)
    trainer.run()
    first, second = trainer.history
    assert math.isnan(first["probe_flip_rate"]) and math.isnan(first["probe_kl"])  # nothing to compare with yet
    assert all(math.isfinite(v) for v in second.values())


def test_compare_refuses_a_method_named_twice_with_the_clis_line(tmp_path):
    from dlb_edu.train import compare

    with pytest.raises(ConfigError) as caught:
        compare(TrainConfig(dataset="synthetic"), ["dlb", "baseline", "dlb"], tmp_path / "cmp")
    assert str(caught.value) == "--methods names dlb more than once: each method runs once"
    assert not (tmp_path / "cmp").exists()


def test_progress_bars_leave_a_plain_line_per_epoch(synthetic, capsys):
    """A static view of a notebook keeps a bar's first text (0%| 0/8): the closing line says what ran."""
    Trainer(tiny(method="baseline", epochs=2), data=synthetic, progress=True).run()
    lines = [line for line in capsys.readouterr().out.splitlines() if " steps in " in line]
    assert [line.split(":")[0] for line in lines] == ["baseline epoch 1/2", "baseline epoch 2/2"]
    assert all(": 8/8 steps in " in line for line in lines)
