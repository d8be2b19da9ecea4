import dataclasses
import json

import pytest
import torch

from dlb_edu.errors import ConfigError, TrainingDiverged
from dlb_edu.sampling import DLBBatchSampler, PlainBatchSampler
from dlb_edu.train import HISTORY_COLUMNS, TrainConfig, Trainer, read_history_csv

TIME_COLUMNS = {"epoch_time_s"}


def tiny(**overrides):
    base = dict(dataset="synthetic", arch="small_cnn", epochs=2, batch_size=32, lr=0.05, device="cpu",
                probe_size=64, test_subset=128)
    return TrainConfig(**{**base, **overrides})


@pytest.mark.parametrize("method,forward", [("baseline", "joint"), ("dlb", "joint"), ("dlb", "split")])
def test_two_epochs_on_synthetic_data_learn(synthetic, method, forward):
    trainer = Trainer(tiny(method=method, forward=forward), data=synthetic, progress=False)
    trainer.run()
    assert [h["epoch"] for h in trainer.history] == [1, 2]
    assert trainer.history[-1]["test_acc"] > 0.5  # chance is 0.1
    assert set(trainer.history[-1]) == set(HISTORY_COLUMNS)


def test_dlb_uses_the_dlb_sampler_and_the_baseline_plain_batches(synthetic):
    assert type(Trainer(tiny(method="dlb"), data=synthetic, progress=False).sampler) is DLBBatchSampler
    assert type(Trainer(tiny(method="baseline"), data=synthetic, progress=False).sampler) is PlainBatchSampler


def test_first_step_is_plain_ce_then_the_cache_feeds_the_second(synthetic):
    trainer = Trainer(tiny(method="dlb"), data=synthetic, progress=False)
    batches = iter(trainer.sampler)
    first = next(batches)
    assert first.num_repeated == 0
    trainer.train_step(first, 0, 0)
    assert trainer.running["kd_sum"].item() == 0.0           # no cache yet: plain cross-entropy
    assert trainer.cache.indices.tolist() == first.fresh     # the fresh half's logits are cached
    assert trainer.cache.nbytes == 32 * 10 * 4 + 32 * 8
    second = next(batches)
    assert second.repeated == first.fresh
    trainer.train_step(second, 0, 1)
    assert trainer.running["kd_sum"].item() > 0.0
    assert trainer.cache.indices.tolist() == second.fresh


def test_baseline_never_fills_the_cache(synthetic):
    trainer = Trainer(tiny(method="baseline", epochs=1), data=synthetic, progress=False)
    trainer.run()
    assert trainer.cache.nbytes == 0 and trainer.history[0]["train_consistency"] == 0.0


def test_outputs_are_written(synthetic, tmp_path):
    trainer = Trainer(tiny(), data=synthetic, out_dir=tmp_path / "run", progress=False)
    trainer.run()
    rows = read_history_csv(tmp_path / "run" / "history.csv")
    assert len(rows) == 2 and set(rows[0]) == set(HISTORY_COLUMNS)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in ("method", "dataset", "arch", "epochs", "final_test_acc", "best_test_acc", "train_time_s",
                "device", "torch", "git_rev"):
        assert key in summary
    assert summary["final_test_acc"] == rows[-1]["test_acc"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["method"] == "dlb"
    assert (tmp_path / "run" / "checkpoint.pt").exists()


def comparable(history):
    return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in history]


def assert_same_run(a: Trainer, b: Trainer):
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert json.dumps(comparable(a.history)) == json.dumps(comparable(b.history))  # NaN-safe, exact


def test_resume_between_epochs_continues_exactly(synthetic, tmp_path):
    cfg = tiny(epochs=3)
    full = Trainer(cfg, data=synthetic, progress=False)
    full.run()
    first = Trainer(dataclasses.replace(cfg, epochs=1), data=synthetic, out_dir=tmp_path, progress=False)
    first.run()
    resumed = Trainer(cfg, data=synthetic, out_dir=tmp_path, resume=True, progress=False)
    resumed.run()
    assert_same_run(full, resumed)


class Interrupt(Exception):
    pass


def test_resume_mid_epoch_continues_exactly(synthetic, tmp_path):
    cfg = tiny(epochs=2, checkpoint_every=3)
    full = Trainer(cfg, data=synthetic, progress=False)
    full.run()
    victim = Trainer(cfg, data=synthetic, out_dir=tmp_path, progress=False)
    real_step, calls = victim.train_step, []

    def step_then_die(*args):
        calls.append(1)
        if len(calls) == 22:  # epoch 2, after its mid-epoch checkpoint at step 3 (16 steps per epoch)
            raise Interrupt
        return real_step(*args)

    victim.train_step = step_then_die
    with pytest.raises(Interrupt):
        victim.run()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["ranks"][0]["sampler"]["epoch"] == 1 and state["ranks"][0]["sampler"]["step"] == 3
    resumed = Trainer(cfg, data=synthetic, out_dir=tmp_path, resume=True, progress=False)
    resumed.run()
    assert_same_run(full, resumed)


def test_out_dir_with_another_run_is_refused_unless_forced(synthetic, tmp_path):
    Trainer(tiny(epochs=1), data=synthetic, out_dir=tmp_path, progress=False).run()
    with pytest.raises(ConfigError, match="different run.*alpha"):
        Trainer(tiny(epochs=1, alpha=0.5), data=synthetic, out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="already holds this run"):
        Trainer(tiny(epochs=1), data=synthetic, out_dir=tmp_path, progress=False)
    Trainer(tiny(epochs=1, alpha=0.5), data=synthetic, out_dir=tmp_path, force=True, progress=False)


def test_corrupt_checkpoint_is_refused(synthetic, tmp_path):
    Trainer(tiny(epochs=1), data=synthetic, out_dir=tmp_path, progress=False).run()
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="corrupt"):
        Trainer(tiny(epochs=2), data=synthetic, out_dir=tmp_path, resume=True, progress=False)


def test_nan_loss_stops_names_the_step_and_keeps_the_last_good_checkpoint(synthetic, tmp_path):
    trainer = Trainer(tiny(epochs=3), data=synthetic, out_dir=tmp_path, progress=False)
    trainer.train_epoch()
    good = (tmp_path / "checkpoint.pt").read_bytes()
    for group in trainer.optimizer.param_groups:
        group["lr"] = 1e30  # the weights blow up at the next step
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, step \d+; the last good checkpoint is kept"):
        trainer.train_epoch()
    assert (tmp_path / "checkpoint.pt").read_bytes() == good
    resumed = Trainer(tiny(epochs=3), data=synthetic, out_dir=tmp_path, resume=True, progress=False)
    assert len(resumed.history) == 1 and resumed.sampler.epoch == 1


@pytest.mark.parametrize("field,value,match", [
    ("temperature", 0.0, "temperature"), ("temperature", -1.0, "temperature"), ("alpha", -0.5, "alpha"),
    ("batch_size", 0, "batch_size"), ("method", "dml", "unknown method"), ("arch", "resnet9", "unknown arch"),
    ("forward", "both", "forward"), ("epochs", 0, "epochs"), ("device", "tpu", "device"),
])
def test_bad_config_values_are_refused(field, value, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**{field: value}).validate()


def test_batch_larger_than_data_set_is_refused(synthetic):
    with pytest.raises(ConfigError, match="at most the training set size 512"):
        Trainer(tiny(batch_size=513), data=synthetic, progress=False)


def test_paper_preset_is_the_papers_recipe():
    cfg = TrainConfig.from_preset("paper", method="dlb")
    assert (cfg.arch, cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay,
            cfg.temperature, cfg.alpha) == ("resnet32", 240, 64, 0.05, 0.9, True, 5e-4, 3.0, 1.0)
    assert [round(f * cfg.epochs) for f in cfg.milestones] == [150, 180, 210]


def test_a_run_stopped_before_its_first_checkpoint_starts_again(synthetic, tmp_path):
    Trainer(tiny(), data=synthetic, out_dir=tmp_path, progress=False)  # writes config.json, then "dies"
    assert (tmp_path / "config.json").exists() and not (tmp_path / "checkpoint.pt").exists()
    for resume in (False, True):
        trainer = Trainer(tiny(), data=synthetic, out_dir=tmp_path, resume=resume, progress=False)
        assert trainer.sampler.epoch == 0 and trainer.history == []
