"""One training loop for the baseline, DLB and the methods DLB is compared with, resumable to the bit on a CPU.

A DLB step (Shen et al., CVPR 2022, Algorithm 1), in :meth:`Trainer.train_step`: take the batch from
:class:`~dlb_edu.sampling.DLBBatchSampler` (the repeated half first, then the fresh half), augment it anew, forward
it (``joint``: both halves in one call; ``split``: each half in its own call, fresh half first, as the
authors' code, so BatchNorm normalizes each half with its own statistics), compute :func:`~dlb_edu.losses.dlb_loss`
against the cached logits of the repeated half, step, and cache the detached logits of the fresh half. The baseline
is the same loop with plain batches and plain cross-entropy; the other methods (label smoothing, Tf-KD, CS-KD,
PS-KD) are the same loop with their own loss object, batch sampler and forward calls from :mod:`~dlb_edu.methods`
(CS-KD's ``split``: the anchors, then their class pairs under ``no_grad``, as its authors' code).

Everything random in a step comes from a generator seeded by ``(seed, epoch, step)`` (:mod:`~dlb_edu.seeds`), the
learning rate is a function of the epoch, and a checkpoint holds everything else that changes (model, optimizer,
sampler position, the method's state such as DLB's cache, the epoch's running statistics, history), so a run that is
stopped and resumed ends exactly where an uninterrupted run ends: bit for bit on a CPU (tested); on CUDA only with
``deterministic`` (its kernels are otherwise free to round differently run to run), and not yet measured on a GPU
(``benchmarks/gpu_check.py`` measures it when a GPU is lent). The run folder's rules live in
:mod:`~dlb_edu.run_dir`, the several-process helpers in :mod:`~dlb_edu.distributed`, the settings and their checks in
:mod:`~dlb_edu.config`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import torch
import torch.nn.functional as F

from . import checkpoint, distributed, metrics
from .augment import Augmenter, normalize, random_crop_flip
from .cache import SoftTargetCache
from .config import PRESETS, TrainConfig, resolve_device, resolve_precision
from .data import ImageData, check_trainable, load_dataset
from .epoch_stats import EpochStats
from .errors import ConfigError
from .methods import build_method
from .models import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, build_model, count_parameters
from .noise import realized_rate, with_label_noise
from .project import cpu_name
from .projection import Projection, RunCost, check_budget_minutes, duration
from .run_dir import CHECKPOINT, HISTORY_COLUMNS, RunDir, read_history_csv, replacement_pending
from .sampling import step_seed
from .seeds import derive_seed
from .tensorboard_log import TensorBoardLog

__all__ = ["Trainer", "train", "compare", "run_experiment", "measure_costs", "project", "epochs_done",
           "prepare_data", "git_revision"]  # the settings' names: dlb_edu.config



class StepRecord(NamedTuple):
    """What one training step did: :meth:`Trainer.train_step` returns it and ``on_step(trainer, record)`` receives
    it. The tensors are the step's own, detached, on the training device (no step waits to read them: a reader
    calls ``.item()`` or ``.cpu()`` when it needs a number)."""
    loss: torch.Tensor               # what the step minimized: ce + the method's weight * consistency
    ce: torch.Tensor                 # the method's cross-entropy
    consistency: torch.Tensor        # its extra term (DLB: the KL on the repeated half); zero where it has none
    logits: torch.Tensor             # the batch's logits the loss scored, before the step's update (rows as in batch)
    teacher: torch.Tensor | None     # DLB: the cached logits of the repeated half the consistency term pulled toward
    y: torch.Tensor                  # the batch's labels
    batch: list                      # the sampler's batch: its data set indices (DLB's: the repeated half first)


OnStep = Callable[["Trainer", StepRecord], None]


class Trainer:
    """Trains one run. ``for row in trainer.epochs(): ...`` yields each finished epoch's history row.

    ``out_dir`` (optional) receives config.json, history.csv, summary.json and checkpoint.pt. With ``resume=True``
    the run continues from ``out_dir/checkpoint.pt``. A folder that holds a different run is refused unless
    ``force=True`` (see :mod:`~dlb_edu.run_dir` for the rules).
    """

    def __init__(self, config: TrainConfig, data: ImageData | None = None, out_dir: str | Path | None = None,
                 resume: bool = False, force: bool = False, progress: bool = True):
        check_arguments(config, data, out_dir, resume=resume, force=force, progress=progress)
        self.config = cfg = config.validate()
        self.device = resolve_device(cfg.device)
        self.rank, self.world_size = distributed.rank_and_world_size()
        distributed.check_supported(cfg, self.world_size)
        self.progress = progress and self.rank == 0
        # Speed: a fused optimizer step on CUDA, channels_last activations, autocast by device, fp16's loss scaler.
        self.gpu_speedups, self.precision, self.amp_dtype, self.memory_format, self.scaler = speed_settings(
            cfg, self.device)
        _set_backend_flags(self.device, cfg)
        self.run_dir = RunDir(out_dir) if out_dir is not None else None
        if resume and self.run_dir is None:
            raise ConfigError("resume needs an output folder (--out DIR) that holds a checkpoint")
        self.data, self.label_noise_realized = prepare_data(cfg, data)
        # Resident data: uint8 on the training device, augmented there batch by batch.
        self.x_train, self.y_train = self.data.x_train.to(self.device), self.data.y_train.to(self.device)
        self.x_test, self.y_test = self.data.x_test.to(self.device), self.data.y_test.to(self.device)
        self.mean, self.std = self.data.mean.to(self.device), self.data.std.to(self.device)
        # `self.net` is what the step calls: the model, maybe wrapped for several processes, maybe compiled.
        self.model, self.optimizer, self.net = build_network(cfg, self.data.num_classes, self.device,
                                                             self.memory_format, self.gpu_speedups, self.world_size)
        self.method = build_method(cfg, self.y_train, self.data.num_classes)
        # Plain batches, DLB's overlapping ones, or CS-KD's class pairs; it checks the batch size against the data.
        self.sampler = self.method.batch_sampler(len(self.x_train), cfg.batch_size, seed=cfg.seed, rank=self.rank,
                                                 world_size=self.world_size)
        self.augment = Augmenter(cfg.augment, cfg.cutout_size, cfg.mix_alpha, cfg.cutmix_prob)
        self.probe_idx = metrics.probe_indices(len(self.x_train), cfg.probe_size, cfg.seed).to(self.device)
        self.prev_probe_probs, self.history = None, []  # the last epoch's probe predictions; one row per epoch
        self.stats = EpochStats(0, self.device)
        if self.run_dir is not None:
            checkpoint.open_folder(self, resume, force)  # this trainer now owns the folder, maybe resumed from it
        logged = cfg.tensorboard and self.run_dir is not None and self.rank == 0
        self.tensorboard = TensorBoardLog(self.run_dir.path, self.steps_done) if logged else None

    def close(self) -> None:
        """Give up the output folder for another owner (training to the end does it too); it writes nothing more."""
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.run_dir is not None:
            self.run_dir.close()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # The loop: epochs, steps, evaluation -----------------------------------------------------------------------

    def epochs(self, on_step: OnStep | None = None) -> Iterator[dict]:
        """Train until ``config.epochs``; yield each epoch's history row as it finishes. See ``train_epoch``."""
        while self.sampler.epoch < self.config.epochs:
            yield self.train_epoch(on_step)
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.run_dir is not None and not self.run_dir.closed:
            self.run_dir.write_outputs(self.history, self.summary())  # also after a resume of a finished run
            self.run_dir.close()  # the run is done: the folder may have a new owner

    def train_epoch(self, on_step: OnStep | None = None) -> dict:
        """Train the rest of the current epoch; return its history row.

        ``on_step(trainer, record)`` runs after every optimizer step with its :class:`StepRecord`, the run in a
        consistent state: it may read the record, change ``trainer.method``'s settings through their checks (DLB's
        ``set``), save a checkpoint, or raise to stop (a later ``train_epoch`` continues from the next step).
        """
        cfg, epoch = self.config, self.sampler.epoch
        if self.run_dir is not None:
            self.run_dir.check_owned()  # a closed trainer trains no more into the folder
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr_at(epoch)  # a function of the epoch: a resumed run needs nothing more
        self.model.train()
        start, steps = time.perf_counter(), len(self.sampler)
        bar = _progress_bar(total=steps, initial=self.sampler.step, disable=not self.progress,
                            desc=f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}")
        try:
            for batch in self.sampler:
                with _refusing_one_image_batch_norm(self, batch):
                    record = self.train_step(batch, epoch, self.sampler.step - 1)
                bar.update(1)
                if self.tensorboard is not None:
                    self.tensorboard.step(self.steps_done, record.loss.item())
                if on_step is not None:
                    on_step(self, record)
                if (self.run_dir is not None and cfg.checkpoint_every
                        and self.sampler.step % cfg.checkpoint_every == 0 and self.sampler.step < steps):
                    self.stats.time_s += time.perf_counter() - start
                    self.save_checkpoint()
                    start = time.perf_counter()
        finally:
            bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # once per epoch, so the epoch time covers the queued GPU work
        self.stats.time_s += time.perf_counter() - start
        checkpoint.stop_if_diverged(self)  # before the evaluation
        row = {"epoch": epoch + 1, **self.stats.row(), **epoch_measurements(self), "lr": cfg.lr_at(epoch)}
        row = {k: row[k] for k in HISTORY_COLUMNS}
        checkpoint.stop_if_diverged(self, row)  # before the row is kept or saved: the checkpoint below needs no other
        self.history.append(row)
        if self.tensorboard is not None:
            self.tensorboard.epoch(row, self.steps_done)
        self.stats = EpochStats(self.sampler.epoch, self.device)
        if self.run_dir is not None:
            checkpoint.save(self, checked=True)
            self.run_dir.write_outputs(self.history, self.summary())
        return row

    def train_step(self, batch, epoch: int, step: int) -> StepRecord:
        """One optimizer step on a batch of the sampler; return what it did (:class:`StepRecord`)."""
        idx = torch.as_tensor(batch)
        if self.device.type == "cuda":  # a pinned, non-blocking copy: the host queues the step without waiting
            idx = idx.pin_memory().to(self.device, non_blocking=True)
        gen = torch.Generator(self.device).manual_seed(step_seed(self.config.seed, epoch, step, self.rank))
        x, mix = self.inputs(idx, batch, gen)
        x = x.contiguous(memory_format=self.memory_format)
        y = self.y_train[idx]
        with self._autocast():
            # One call, or the authors' split, as the method says (DLB: the fresh half, then the repeated half;
            # CS-KD: the anchors, then the pairs under no_grad): BatchNorm normalizes each call's rows alone.
            out = []
            for rows, with_grad in self.method.forward_calls(batch, self.config.forward):
                with torch.set_grad_enabled(with_grad):
                    out.append((rows.start, self.net(x[rows])))
            logits = out[0][1] if len(out) == 1 else torch.cat([o for _, o in sorted(out, key=lambda o: o[0])])
        teacher = self.method.cached_logits(batch)  # DLB's teacher, read before after_step replaces them
        loss, ce, consistency = self.method.loss(logits, y, batch, epoch, mix, idx)  # DLB's loss, or a rival's
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # the identity unless fp16
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.after_step(batch, logits, idx)  # DLB caches the fresh half's logits, PS-KD stores predictions
        scored_logits, scored_y = logits[batch.scored], y[batch.scored]  # DLB: the fresh half; CS-KD: the anchors
        self.stats.add(loss, ce, consistency, (scored_logits.argmax(1) == scored_y).sum(), len(scored_y))
        return StepRecord(loss.detach(), ce.detach(), consistency.detach(), logits.detach(), teacher, y, batch)

    def inputs(self, idx: torch.Tensor, batch, generator: torch.Generator):
        """``(x, mix)``: the batch's training images as a step sees them: cropped, flipped, normalized with the
        run's channel statistics, then cutout, mixup or CutMix (each part of the batch on its own), from
        ``generator``."""
        x = normalize(random_crop_flip(self.x_train[idx], generator=generator), self.mean, self.std)
        return self.augment(x, batch, generator)

    @torch.no_grad()
    def predict(self, x_uint8: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Softmax probabilities of un-augmented images, in eval mode."""
        was_training = self.model.training
        self.model.eval()
        with self._autocast():
            out = torch.cat([F.softmax(self.model(normalize(x_uint8[i:i + batch_size], self.mean, self.std)
                                                  .contiguous(memory_format=self.memory_format)).float(), 1)
                             for i in range(0, len(x_uint8), batch_size)])
        self.model.train(was_training)
        return out

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                              enabled=self.amp_dtype is not None)

    # Bookkeeping: running to the end, the summary, the checkpoint ----------------------------------------------

    def run(self) -> dict:
        """Train to the end; return the summary."""
        for _ in self.epochs():
            pass
        return self.summary()

    @property
    def steps_done(self) -> int:
        """Optimizer steps of the run so far, over all epochs."""
        return self.sampler.epoch * len(self.sampler) + self.sampler.step

    @property
    def cache(self) -> SoftTargetCache:
        """DLB's soft-target cache (an empty one for the other methods, which keep none)."""
        return getattr(self.method, "cache", None) or SoftTargetCache()

    def summary(self) -> dict:
        """The run in one dict (summary.json): what trained, how, on what, and its final and best test accuracy."""
        return run_summary(self)

    # The checkpoint (dlb_edu.checkpoint): what a resumed run needs, and the check that nothing kept is non-finite.
    def state_dict(self) -> dict:
        return checkpoint.state_of(self)

    def load_state_dict(self, state: dict) -> None:
        checkpoint.restore(self, state)

    def save_checkpoint(self, path: str | Path | None = None) -> None:
        """Write the checkpoint (``path``: a copy elsewhere), never one with non-finite weights (TrainingDiverged)."""
        checkpoint.save(self, path)


def check_arguments(config, data=None, out_dir=None, **flags) -> None:
    """The types of the Python API's arguments, as a notebook passes them: one ConfigError line each."""
    if isinstance(config, dict):
        raise ConfigError("config must be a TrainConfig, got a dict: pass TrainConfig(**that_dict) or "
                          "TrainConfig.from_preset('quick', ...)")
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    if data is not None and not isinstance(data, ImageData):
        raise ConfigError(f"data must be an ImageData (from dlb_edu.data.load_dataset) or None, got "
                          f"{type(data).__name__}")
    if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
        raise ConfigError(f"out_dir must be a folder path (str or Path) or None, got {type(out_dir).__name__}")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")


def speed_settings(cfg: TrainConfig, device: torch.device) -> tuple:
    """``(gpu_speedups, precision, amp_dtype, memory_format, scaler)`` of a run on ``device``: a fused optimizer step
    on CUDA, the precision by device (:func:`~dlb_edu.config.resolve_precision`; ``amp_dtype`` None for fp32), the
    activations' memory format, and the gradient scaler (fp16 needs its loss scaled against underflow; the
    scaler's state is in the checkpoint, so resume is exact)."""
    precision = resolve_precision(cfg.precision, device)
    return (device.type == "cuda" and cfg.gpu_speedups == "auto", precision,
            {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision),
            torch.contiguous_format if cfg.channels_last == "off" else torch.channels_last,
            torch.amp.GradScaler(device.type, enabled=precision == "fp16"))


def build_network(cfg: TrainConfig, num_classes: int, device: torch.device, memory_format, fused: bool,
                  world_size: int):
    """``(model, optimizer, net)``: the model initialized from the run's seed, its SGD, and what the step calls (the
    model, wrapped for several processes, compiled if asked)."""
    torch.manual_seed(derive_seed(cfg.seed))
    model = build_model(cfg.arch, num_classes).to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr_at(0), momentum=cfg.momentum, nesterov=cfg.nesterov,
                                weight_decay=cfg.weight_decay, **({"fused": True} if fused else {}))
    net = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    return model, optimizer, net


def prepare_data(config: TrainConfig, data: ImageData | None) -> tuple[ImageData, float]:
    """The run's data: loaded unless given, cut to the subsets, training labels corrupted as asked; and the realized
    fraction of corrupted labels."""
    data = data if data is not None else load_dataset(config.dataset, config.data_root, config.download)
    data = data.subset(config.train_subset, config.test_subset)
    check_trainable(data, config.arch, MIN_IMAGE_SIZE.get(config.arch, 1), MAX_IMAGE_SIZE.get(config.arch),
                    cutout_size=config.cutout_size if config.augment == "cutout" else None)
    noisy = with_label_noise(data, config.label_noise, config.label_noise_type, config.seed)  # test labels stay
    return noisy, realized_rate(data.y_train, noisy.y_train)


def _set_backend_flags(device: torch.device, cfg: TrainConfig) -> None:
    """The process-wide switches a run needs: CPU threads; on CUDA, cuDNN autotuning (the authors' choice) unless
    deterministic kernels are asked for. TF32 stays at PyTorch's defaults (matmuls fp32, cuDNN convolutions TF32);
    summary.json records them."""
    if device.type == "cpu" and cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cudnn.deterministic = cfg.deterministic
    if cfg.deterministic:
        # cuBLAS needs a fixed workspace for repeatable results; it reads the variable when it first starts.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(cfg.deterministic)  # both ways: a later run of the process is not left on


def epoch_measurements(trainer: Trainer) -> dict:
    """The end-of-epoch measurements: the test set's loss (NLL), accuracy and expected calibration error, and the
    stability of the probe set's predictions since the epoch before (kept in the trainer for the next epoch)."""
    test = trainer.predict(trainer.x_test)
    probs = trainer.predict(trainer.x_train[trainer.probe_idx])
    prev, trainer.prev_probe_probs = trainer.prev_probe_probs, probs
    return {"test_loss": F.nll_loss(test.clamp_min(1e-12).log(), trainer.y_test).item(),
            "test_acc": (test.argmax(1) == trainer.y_test).float().mean().item(),
            "ece": metrics.expected_calibration_error(test.cpu(), trainer.y_test.cpu()),
            "probe_flip_rate": float("nan") if prev is None else metrics.flip_rate(prev, probs),
            "probe_kl": float("nan") if prev is None else metrics.mean_kl(prev, probs)}


def run_summary(trainer: Trainer) -> dict:
    """:meth:`Trainer.summary`."""
    dev, last = trainer.device, trainer.history[-1] if trainer.history else {}
    return {
        "method": trainer.config.method, "dataset": trainer.config.dataset, "arch": trainer.config.arch,
        "epochs": len(trainer.history), "forward": trainer.config.forward, "seed": trainer.config.seed,
        "final_test_acc": last.get("test_acc"),
        "best_test_acc": max((h["test_acc"] for h in trainer.history), default=None),
        "train_time_s": sum(h["epoch_time_s"] for h in trainer.history),
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "processes": trainer.world_size, "precision": trainer.precision,
        "channels_last": trainer.memory_format == torch.channels_last,
        "threads": torch.get_num_threads() if dev.type == "cpu" else None, "cpu": cpu_name(),
        **_backend_flags(dev),
        "params": count_parameters(trainer.model),
        "cache_bytes": trainer.method.nbytes,  # what the method keeps between steps: DLB's cache, PS-KD's table
        "label_noise_realized": trainer.label_noise_realized,
        "torch": torch.__version__, "git_rev": git_revision(),
    }


def _backend_flags(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"tf32_matmul": None, "tf32_cudnn": None, "cudnn_benchmark": None, "deterministic_algorithms":
                torch.are_deterministic_algorithms_enabled()}
    return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}


@contextlib.contextmanager
def _refusing_one_image_batch_norm(trainer: Trainer, batch):
    """A step that fails in BatchNorm on one value per channel closes the run (a setting this data cannot train
    with: the run goes no further) and raises ConfigError in one line saying why."""
    try:
        yield
    except ValueError as e:
        if "Expected more than 1 value per channel" not in str(e):
            raise
        trainer.close()
        raise ConfigError(_one_image_batch_norm_text(trainer, batch)) from None


def _one_image_batch_norm_text(trainer: Trainer, batch) -> str:
    """Why a step failed in BatchNorm: a forward call of one image whose feature map has shrunk to 1x1, so there is
    one value per channel to normalize (the smallest images an architecture takes, a last batch of one image)."""
    cfg = trainer.config
    h, w = trainer.x_train.shape[2:]
    rows = min(getattr(batch, "parts", None) or [len(batch)]) if cfg.forward == "split" else len(batch)
    return (f"step {trainer.sampler.step} of epoch {trainer.sampler.epoch + 1} forwards {rows} image(s) at once and "
            f"{cfg.arch}'s BatchNorm sees a 1x1 map on {w}x{h} images: one value per channel cannot be normalized; "
            f"choose a --batch-size that leaves no batch of one image ({len(trainer.x_train)} training images)"
            f"{', not --forward split with --batch-size 1' if cfg.forward == 'split' else ''}, or larger images")


def _progress_bar(**kwargs):
    from .progress import Progress
    return Progress(**kwargs)  # a tqdm bar that prints one plain line when it closes (dlb_edu/progress.py)


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def train(config: TrainConfig, **kwargs) -> tuple[list[dict], dict]:
    """Train one run; return ``(history, summary)``. Keyword arguments go to :class:`Trainer`."""
    trainer = Trainer(config, **kwargs)
    summary = trainer.run()
    return trainer.history, summary


def compare(config: TrainConfig, methods=("baseline", "dlb"), out_dir: str | Path | None = None,
            data: ImageData | None = None, on_epoch: Callable[[str, dict], None] | None = None,
            budget_minutes: float | None = None, **kwargs) -> dict[str, tuple[list[dict], dict]]:
    """Train each method with the same seed, data and schedule; return ``{method: (history, summary)}``.

    ``out_dir/<method>`` receives each run's outputs; ``on_epoch(method, row)`` is called as each epoch ends (on
    rank 0 only when several processes train). First the plan's time is measured and printed in one line; a plan
    over ``budget_minutes`` is refused (see :mod:`~dlb_edu.projection`). Every run is set up (settings, data,
    folders) before the first one trains, so a bad one is refused before any training. With ``resume=True`` the
    methods that have a checkpoint continue and the others start. Keyword arguments go to :class:`Trainer`.
    """
    results = run_experiment(config, methods, None, out_dir, data, on_epoch, budget_minutes,
                             _layout=lambda out, seed, method: out / method, **kwargs)
    return {method: result for (method, _), result in results.items()}


def run_experiment(config: TrainConfig, methods=("baseline", "dlb"), seeds=None, out_dir: str | Path | None = None,
                   data: ImageData | None = None, on_epoch: Callable[[str, dict], None] | None = None,
                   budget_minutes: float | None = None, _layout=None,
                   **kwargs) -> dict[tuple[str, int], tuple[list[dict], dict]]:
    """Every method for every seed (``out_dir/seed_<seed>/<method>``), one run after the other; return
    ``{(method, seed): (history, summary)}`` (``seeds`` None: the config's seed). As :func:`compare`, with the
    projection over the whole plan and one progress bar over all of it."""
    check_arguments(config, data, out_dir)
    if isinstance(methods, str) or not isinstance(methods, (list, tuple)) or \
            not all(isinstance(m, str) for m in methods):
        raise ConfigError(f"methods must be a list of method names such as ['baseline', 'dlb'], got {methods!r}")
    methods = list(methods)
    duplicates = sorted({m for m in methods if methods.count(m) > 1})
    if duplicates:  # the one check of duplicates, worded for the CLI's option, which passes its list here
        raise ConfigError(f"--methods names {', '.join(duplicates)} more than once: each method runs once")
    if not methods:
        raise ConfigError("compare needs at least one method")
    budget_minutes = check_budget_minutes(budget_minutes)
    seeds = [config.seed] if seeds is None else list(seeds)
    configs = [dataclasses.replace(config, method=m, seed=s) for s in seeds for m in methods]  # each one validated
    layout = _layout or (lambda out, seed, method: out / f"seed_{seed}" / method)
    folders = [None if out_dir is None else layout(Path(out_dir), cfg.seed, cfg.method) for cfg in configs]
    data = data if data is not None else load_dataset(config.dataset, config.data_root, config.download)
    resume = kwargs.pop("resume", False)
    progress = kwargs.get("progress", True)
    rank = distributed.rank_and_world_size()[0]
    projection = project(configs, data, [epochs_done(f) if resume else 0 for f in folders])
    if rank == 0:
        print(projection.line(), flush=True)
    projection.check_budget(budget_minutes, _cpu_preset_seconds(config, configs, data, budget_minutes, projection))

    # `resume` continues the runs that have a checkpoint and starts the others (a method added to a comparison, or
    # one a kill stopped before its first checkpoint); it replaces those a killed `force` had not reached yet.
    def resumes(folder):
        return resume and folder is not None and ((folder / CHECKPOINT).exists() or replacement_pending(folder))

    trainers = []
    try:
        for cfg, folder in zip(configs, folders):
            trainers.append(Trainer(cfg, data=data, out_dir=folder, resume=resumes(folder), **kwargs))
    except BaseException:
        for trainer in trainers:  # refused before any training: the folders are given up, unchanged
            trainer.close()
        raise
    for trainer in trainers:
        if trainer.run_dir is not None:
            trainer.run_dir.mark_for_replacement()  # each old run goes only at its method's first checkpoint
    bar = _progress_bar(total=projection.steps, desc="experiment", unit="step", leave=True,
                        disable=not (progress and rank == 0))
    start, results = time.perf_counter(), {}
    try:
        for trainer in trainers:
            for row in trainer.epochs(on_step=lambda *_: bar.update(1)):
                if on_epoch is not None and trainer.rank == 0:
                    on_epoch(trainer.config.method, row)
            results[trainer.config.method, trainer.config.seed] = (trainer.history, trainer.summary())
    finally:
        bar.close()
    if rank == 0:  # a line that stays when the bars are gone (a log, an exported notebook)
        print(f"trained {len(trainers)} run{'s' * (len(trainers) != 1)} in "
              f"{duration(time.perf_counter() - start)} ({projection.line()})", flush=True)
    return results


# -----------------------------------------------------------------------------------------------------------------
# The projected time: a few steps of each method, measured
# -----------------------------------------------------------------------------------------------------------------

def measure_costs(config: TrainConfig, data: ImageData, steps: int = 4, warmup: int = 2,
                  eval_images: int = 500) -> tuple[float, float]:
    """Seconds per training step and per evaluated image for ``config`` on its device, measured on a throwaway
    Trainer (no folder): ``warmup`` steps, then ``steps`` timed ones; then ``eval_images`` test images."""
    n = min(len(data.x_train), (warmup + steps + 2) * config.batch_size)
    small = data.subset(n, min(len(data.x_test), eval_images))
    cfg = dataclasses.replace(config, epochs=1, train_subset=None, test_subset=None, label_noise=0.0,
                              probe_size=min(config.probe_size, n), compile=False, tensorboard=False)
    trainer = Trainer(cfg, data=small, progress=False)
    sync = (lambda: torch.cuda.synchronize(trainer.device)) if trainer.device.type == "cuda" else (lambda: None)

    def endless():  # a small data set has fewer batches than the measurement needs: on into the next epochs
        while True:
            yield from trainer.sampler

    batches = endless()
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            start = time.perf_counter()
        trainer.train_step(next(batches), 0, i)
    sync()
    step_s = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    trainer.predict(trainer.x_test)
    sync()
    return step_s, (time.perf_counter() - start) / len(trainer.x_test)


def project(configs: list[TrainConfig], data: ImageData, epochs_done: list[int] | None = None):
    """The :class:`~dlb_edu.projection.Projection` of training ``configs`` one after the other on ``data``: one
    measurement per distinct method (the seed changes nothing of the cost)."""
    epochs_done = epochs_done or [0] * len(configs)
    costs, runs = {}, []
    _, world = distributed.rank_and_world_size()
    for cfg, done in zip(configs, epochs_done):
        key = repr(dataclasses.replace(cfg, seed=0))
        if key not in costs:
            costs[key] = measure_costs(cfg, data)
        step_s, image_s = costs[key]
        n_train = min(len(data.x_train), cfg.train_subset or len(data.x_train))
        n_test = min(len(data.x_test), cfg.test_subset or len(data.x_test))
        steps = -(-(n_train // world) // cfg.batch_size)
        runs.append(RunCost(cfg.method, cfg.seed, max(0, cfg.epochs - done), steps, step_s,
                            image_s * (n_test + min(cfg.probe_size, n_train))))
    device = resolve_device(configs[0].device)
    where = (f"cpu ({torch.get_num_threads()} threads)" if device.type == "cpu"
             else f"{device} ({torch.cuda.get_device_name(device)})")
    return Projection(tuple(runs), configs[0].epochs, where)


def _cpu_preset_seconds(config, configs, data, budget_minutes, projection) -> float | None:
    """What the same plan costs with the cpu preset, for the advice of an over-budget refusal (measured only then)."""
    if budget_minutes is None or projection.seconds <= 60 * budget_minutes or config.arch == PRESETS["cpu"]["arch"]:
        return None
    keep = ("dataset", "data_root", "download", "device", "train_subset", "test_subset", "probe_size", "label_noise",
            "label_noise_type")
    cpu = [TrainConfig.from_preset("cpu", method=c.method, seed=c.seed, **{k: getattr(c, k) for k in keep})
           for c in configs]
    return project(cpu, data).seconds


def epochs_done(folder: str | Path | None) -> int:
    """The epochs a run folder's history holds (where its resumed run continues), 0 if none."""
    folder = None if folder is None else Path(folder)
    if folder is None or not (folder / CHECKPOINT).exists() or replacement_pending(folder) or not (folder / "history.csv").is_file():
        return 0
    try:
        return len(read_history_csv(folder / "history.csv"))
    except (OSError, ValueError, KeyError):
        return 0  # a damaged history: the projection errs long; the run itself will say what is wrong

