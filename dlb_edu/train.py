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

import dataclasses
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from . import distributed, metrics
from .augment import Augmenter
from .config import PRESETS, TrainConfig, resolve_device, resolve_precision
from .data import ImageData, check_trainable, load_dataset, normalize, random_crop_flip
from .epoch_stats import EpochStats
from .errors import ConfigError, TrainingDiverged
from .methods import build_method
from .models import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, build_model, count_parameters
from .noise import realized_rate, with_label_noise
from .projection import Projection, RunCost, check_budget_minutes, duration
from .run_dir import (CHECKPOINT, HISTORY_COLUMNS, RunDir, atomic_write, position, read_history_csv,
                      replacement_pending)
from .sampling import step_seed
from .seeds import derive_seed
from .tensorboard_log import TensorBoardLog

__all__ = ["Trainer", "train", "compare", "run_experiment", "measure_costs", "project", "epochs_done",
           "prepare_data", "git_revision"]  # the settings' names: dlb_edu.config

OnStep = Callable[["Trainer", torch.Tensor], None]


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
        # Speed: a fused optimizer step on CUDA, channels_last activations, autocast by device (config.resolve_precision)
        self.gpu_speedups = self.device.type == "cuda" and cfg.gpu_speedups == "auto"
        self.precision = resolve_precision(cfg.precision, self.device)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.memory_format = torch.contiguous_format if cfg.channels_last == "off" else torch.channels_last
        # fp16 needs its loss scaled against underflow; the scaler's state is in the checkpoint, so resume is exact.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        _set_backend_flags(self.device, cfg)
        self.run_dir = RunDir(out_dir) if out_dir is not None else None
        if resume and self.run_dir is None:
            raise ConfigError("resume needs an output folder (--out DIR) that holds a checkpoint")
        self.data, self.label_noise_realized = prepare_data(cfg, data)
        # Resident data: uint8 on the training device, augmented there batch by batch.
        self.x_train, self.y_train = self.data.x_train.to(self.device), self.data.y_train.to(self.device)
        self.x_test, self.y_test = self.data.x_test.to(self.device), self.data.y_test.to(self.device)
        self.mean, self.std = self.data.mean.to(self.device), self.data.std.to(self.device)
        torch.manual_seed(derive_seed(cfg.seed))
        self.model = build_model(cfg.arch, self.data.num_classes).to(self.device, memory_format=self.memory_format)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr_at(0), momentum=cfg.momentum,
                                         nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
                                         **({"fused": True} if self.gpu_speedups else {}))
        # `self.net` is what the step calls: the model, maybe wrapped for several processes, maybe compiled.
        self.net = self.model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel
            cuda = self.device.type == "cuda"
            self.net = DistributedDataParallel(self.model, device_ids=[self.device] if cuda else None)
        if cfg.compile:
            self.net = torch.compile(self.net)
        self.method = build_method(cfg, self.y_train, self.data.num_classes)
        # Plain batches, DLB's overlapping ones, or CS-KD's class pairs; it checks the batch size against the data.
        self.sampler = self.method.batch_sampler(len(self.x_train), cfg.batch_size, seed=cfg.seed,
                                                 carry_over=cfg.carry_over, rank=self.rank, world_size=self.world_size)
        self.augment = Augmenter(cfg.augment, cfg.cutout_size, cfg.mix_alpha, cfg.cutmix_prob)
        g = torch.Generator().manual_seed(derive_seed(cfg.seed))
        self.probe_idx = torch.randperm(len(self.x_train), generator=g)[: cfg.probe_size].to(self.device)
        self.prev_probe_probs: torch.Tensor | None = None
        self.history: list[dict] = []
        self.stats = EpochStats(0, self.device)

        if self.run_dir is not None:
            state = self.run_dir.open(cfg.to_dict(), resume, force)  # this trainer now owns the folder
            try:
                if state is not None:
                    self.load_state_dict(state)  # may refuse: nothing in the folder is written before this
                self.run_dir.start(cfg.to_dict())
                if state is not None:
                    self.run_dir.write_outputs(self.history, self.summary())  # replace any stale ones
            except BaseException:
                self.run_dir.close()  # a refused trainer does not keep the folder (a notebook keeps the traceback)
                raise
        self.tensorboard = None
        if cfg.tensorboard and self.run_dir is not None and self.rank == 0:
            self.tensorboard = TensorBoardLog(self.run_dir.path, self.steps_done)

    def close(self) -> None:
        """Give up the output folder, so that another Trainer (or LiveLab) may use it. Training to the end does this
        too, and so does garbage collection; a closed trainer writes nothing more there."""
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.run_dir is not None:
            self.run_dir.close()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -----------------------------------------------------------------------------------------------------------
    # The loop
    # -----------------------------------------------------------------------------------------------------------

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

        ``on_step(trainer, loss)`` runs after every optimizer step, with the run in a consistent state: it may read
        or change ``trainer.method``'s settings, save a checkpoint, or raise to stop (a later ``train_epoch``
        continues from the next step).
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
                try:
                    loss = self.train_step(batch, epoch, self.sampler.step - 1)
                except ValueError as e:
                    if "Expected more than 1 value per channel" not in str(e):
                        raise
                    self.close()  # a setting this data cannot train with: the run goes no further
                    raise ConfigError(_one_image_batch_norm_text(self, batch)) from None
                bar.update(1)
                if self.tensorboard is not None:
                    self.tensorboard.step(self.steps_done, loss.item())
                if on_step is not None:
                    on_step(self, loss)
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
        self._stop_if_diverged()
        row = {"epoch": epoch + 1, **self.stats.row(), **self._evaluate_epoch(), "lr": cfg.lr_at(epoch)}
        row = {k: row[k] for k in HISTORY_COLUMNS}
        self._stop_if_diverged(row)  # before the row is kept or saved
        self.history.append(row)
        if self.tensorboard is not None:
            self.tensorboard.epoch(row, self.steps_done)
        self.stats = EpochStats(self.sampler.epoch, self.device)
        if self.run_dir is not None:
            self.save_checkpoint()
            self.run_dir.write_outputs(self.history, self.summary())
        return row

    def train_step(self, batch, epoch: int, step: int) -> torch.Tensor:
        """One optimizer step on a batch of the sampler; return its loss, detached."""
        idx = torch.as_tensor(batch)
        if self.device.type == "cuda":  # a pinned, non-blocking copy: the host queues the step without waiting
            idx = idx.pin_memory().to(self.device, non_blocking=True)
        gen = torch.Generator(self.device).manual_seed(step_seed(self.config.seed, epoch, step, self.rank))
        x = normalize(random_crop_flip(self.x_train[idx], generator=gen), self.mean, self.std)
        x, mix = self.augment(x, batch, gen)  # cutout, mixup or CutMix, each part of the batch on its own
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
        loss, ce, consistency = self.method.loss(logits, y, batch, epoch, mix, idx)  # DLB's loss, or a rival's
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # the identity unless fp16
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.after_step(batch, logits, idx)  # DLB caches the fresh half's logits, PS-KD stores predictions
        scored_logits, scored_y = logits[batch.scored], y[batch.scored]  # DLB: the fresh half; CS-KD: the anchors
        self.stats.add(loss, ce, consistency, (scored_logits.argmax(1) == scored_y).sum(), len(scored_y))
        return loss.detach()

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

    def evaluate(self) -> dict:
        """Test loss (NLL), accuracy and expected calibration error."""
        probs = self.predict(self.x_test)
        nll = F.nll_loss(probs.clamp_min(1e-12).log(), self.y_test).item()
        acc = (probs.argmax(1) == self.y_test).float().mean().item()
        return {"loss": nll, "acc": acc, "ece": metrics.expected_calibration_error(probs.cpu(), self.y_test.cpu())}

    def _evaluate_epoch(self) -> dict:
        """The end-of-epoch measurements: the test set, and the stability of the probe set's predictions."""
        test = self.evaluate()
        probs = self.predict(self.x_train[self.probe_idx])
        prev, self.prev_probe_probs = self.prev_probe_probs, probs
        return {"test_loss": test["loss"], "test_acc": test["acc"], "ece": test["ece"],
                "probe_flip_rate": float("nan") if prev is None else metrics.flip_rate(prev, probs),
                "probe_kl": float("nan") if prev is None else metrics.mean_kl(prev, probs)}

    # -----------------------------------------------------------------------------------------------------------
    # Bookkeeping: running to the end, summary, divergence, checkpoints
    # -----------------------------------------------------------------------------------------------------------

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
    def cache(self):
        """DLB's soft-target cache (an empty one for the other methods, which keep none)."""
        from .cache import SoftTargetCache
        cache = getattr(self.method, "cache", None)
        return cache if cache is not None else SoftTargetCache()

    def summary(self) -> dict:
        last = self.history[-1] if self.history else {}
        return {
            "method": self.config.method, "dataset": self.config.dataset, "arch": self.config.arch,
            "epochs": len(self.history), "forward": self.config.forward, "seed": self.config.seed,
            "final_test_acc": last.get("test_acc"),
            "best_test_acc": max((h["test_acc"] for h in self.history), default=None),
            "train_time_s": sum(h["epoch_time_s"] for h in self.history),
            "device": str(self.device) if self.device.type == "cpu" else torch.cuda.get_device_name(self.device),
            "processes": self.world_size, "precision": self.precision,
            "channels_last": self.memory_format == torch.channels_last,
            "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
            **_backend_flags(self.device),
            "params": count_parameters(self.model),
            "cache_bytes": self.method.nbytes,  # what the method keeps between steps: DLB's cache, PS-KD's table
            "label_noise_realized": self.label_noise_realized,
            "torch": torch.__version__, "git_rev": git_revision(),
        }

    def _stop_if_diverged(self, row: dict | None = None) -> None:
        """Raise TrainingDiverged if a loss, a weight or the epoch's evaluation is not finite (on every process)."""
        bad_step = self.stats.first_non_finite_step()
        weights = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        weights_finite = bool(torch.stack([torch.isfinite(t).all() for t in weights]).all())
        bad_eval = [k for k in ("test_loss", "ece") if row is not None and not math.isfinite(row[k])]
        if not distributed.any_process(bad_step is not None or not weights_finite or bool(bad_eval), self.device):
            return
        where = position(self.sampler.state_dict())
        if bad_step is not None:
            what = (f"the loss became {self.stats.step_losses[bad_step].item()} at epoch {self.stats.epoch + 1}, "
                    f"step {bad_step + 1}")
        elif not weights_finite:
            what = f"the weights are no longer finite ({where})"
        else:
            what = f"the evaluation is not finite ({', '.join(bad_eval)}, {where})"
        kept = "" if self.run_dir is None else "; " + self.run_dir.where_the_last_checkpoint_is()
        self.close()  # the run cannot go on: a new Trainer (resume=True) continues from the last finite checkpoint
        raise TrainingDiverged(f"{what}: lower --lr or --alpha{kept}")

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue bit for bit (on a CPU; on CUDA with ``deterministic``); with
        several processes, every rank's part."""
        ranks = distributed.gather({"sampler": self.sampler.state_dict(), "method": self.method.state_dict(),
                                    "stats": self.stats.state_dict()})
        return {
            "config": self.config.to_dict(),
            "classes": list(self.data.classes),
            "world_size": self.world_size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ranks": ranks,
            "prev_probe_probs": None if self.prev_probe_probs is None else self.prev_probe_probs.cpu(),
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
            "scaler": self.scaler.state_dict(),  # empty unless fp16
        }

    def load_state_dict(self, state: dict) -> None:
        if list(state["classes"]) != list(self.data.classes):
            raise ConfigError(f"the data set's classes changed since the checkpoint was written: it had "
                              f"{_classes_text(state['classes'])}, it now has {_classes_text(self.data.classes)}; "
                              f"restore them or pass --force to start a new run")
        if state["world_size"] != self.world_size:
            raise ConfigError(f"the checkpoint was written by {state['world_size']} processes, this run has "
                              f"{self.world_size}")
        mine = state["ranks"][self.rank]
        if mine["sampler"]["epoch"] > self.config.epochs:
            raise ConfigError(f"the checkpoint is at epoch {mine['sampler']['epoch']}, past --epochs "
                              f"{self.config.epochs}")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.sampler.load_state_dict(mine["sampler"])
            self.method.load_state_dict(mine["method"], self.device)
            self.stats.load_state_dict(mine["stats"], self.device)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"the checkpoint does not fit this run ({type(e).__name__}): delete it or pass "
                              f"--force") from None
        probs = state["prev_probe_probs"]
        self.prev_probe_probs = None if probs is None else probs.to(self.device)
        self.history = list(state["history"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("scaler"):  # absent from checkpoints written before fp16 existed
            self.scaler.load_state_dict(state["scaler"])

    def save_checkpoint(self, path: str | Path | None = None) -> None:
        """Write the checkpoint atomically, never one with non-finite weights (TrainingDiverged then). Collective when
        several processes train; ``path`` (optional) writes a copy elsewhere, outside the run folder's bookkeeping."""
        self._stop_if_diverged()
        state = self.state_dict()
        if path is not None:
            if self.rank == 0:
                atomic_write(Path(path), lambda p: torch.save(state, p))
        elif self.run_dir is None:
            raise ConfigError("save_checkpoint needs an output folder (out_dir) or a path")
        else:
            self.run_dir.save_checkpoint(state)


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


def _backend_flags(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"tf32_matmul": None, "tf32_cudnn": None, "cudnn_benchmark": None, "deterministic_algorithms":
                torch.are_deterministic_algorithms_enabled()}
    return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}


def _one_image_batch_norm_text(trainer: "Trainer", batch) -> str:
    """Why a step failed in BatchNorm: a forward call of one image whose feature map has shrunk to 1x1, so there is
    one value per channel to normalize (the smallest images an architecture takes, a last batch of one image)."""
    cfg = trainer.config
    h, w = trainer.x_train.shape[2:]
    rows = min(getattr(batch, "parts", None) or [len(batch)]) if cfg.forward == "split" else len(batch)
    return (f"step {trainer.sampler.step} of epoch {trainer.sampler.epoch + 1} forwards {rows} image(s) at once and "
            f"{cfg.arch}'s BatchNorm sees a 1x1 map on {w}x{h} images: one value per channel cannot be normalized; "
            f"choose a --batch-size that leaves no batch of one image ({len(trainer.x_train)} training images)"
            f"{', not --forward split with --batch-size 1' if cfg.forward == 'split' else ''}, or larger images")


def _classes_text(classes) -> str:
    classes = list(classes)
    return f"{len(classes)} ({', '.join(map(str, classes[:8]))}{', ...' if len(classes) > 8 else ''})"


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

