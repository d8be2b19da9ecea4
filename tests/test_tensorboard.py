"""--tensorboard: the history rows and step losses as TensorBoard scalars, read back with TensorBoard's own reader;
a resumed run appends without duplicating steps."""
import shutil

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from dlb_edu.config import TrainConfig  # noqa: E402
from dlb_edu.train import Trainer  # noqa: E402


def scalars(folder, tag):
    acc = EventAccumulator(str(folder / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def config(**kw):
    return TrainConfig(dataset="synthetic", batch_size=8, epochs=3, test_subset=64, probe_size=32,
                       tensorboard=True, **kw)


@pytest.fixture(autouse=True)
def often(monkeypatch):
    monkeypatch.setattr("dlb_edu.tensorboard_log.STEP_EVERY", 10)


def test_each_epoch_row_is_a_scalar_at_the_step_that_ends_its_epoch(synthetic, tmp_path):
    t = Trainer(config(), data=synthetic, out_dir=tmp_path / "run", progress=False)
    t.run()
    steps = len(t.sampler)  # 256 / 8 = 32
    got = scalars(tmp_path / "run", "epoch/test_acc")
    assert got == [((i + 1) * steps, pytest.approx(row["test_acc"])) for i, row in enumerate(t.history)]
    assert [s for s, _ in scalars(tmp_path / "run", "step/loss")] == list(range(10, 3 * steps + 1, 10))


def test_a_resumed_run_appends_without_duplicating_steps(synthetic, tmp_path):
    run = tmp_path / "run"
    t = Trainer(config(), data=synthetic, out_dir=run, progress=False)
    next(t.epochs())
    t.save_checkpoint(tmp_path / "after_epoch_1.pt")
    next(t.epochs())  # a second epoch is logged, then the run "dies" and its checkpoint is lost
    del t
    shutil.copy(tmp_path / "after_epoch_1.pt", run / "checkpoint.pt")
    resumed = Trainer(config(), data=synthetic, out_dir=run, resume=True, progress=False)
    resumed.run()
    got = scalars(run, "epoch/test_acc")
    assert [s for s, _ in got] == [32, 64, 96]
    assert [v for _, v in got] == [pytest.approx(r["test_acc"]) for r in resumed.history]
    assert [s for s, _ in scalars(run, "step/loss")] == list(range(10, 97, 10))  # each step once
