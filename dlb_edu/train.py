"""One training loop for the baseline, DLB and the methods DLB is compared with, resumable to the bit.

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
stopped and resumed ends exactly where an uninterrupted run ends. The run folder's rules live in
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
from .config import FORWARD_MODES, PRECISIONS, PRESETS, TrainConfig, resolve_device, resolve_precision
from .data import ImageData, check_trainable, load_dataset, normalize, random_crop_flip
from .epoch_stats import EpochStats
from .errors import ConfigError, TrainingDiverged
from .methods import METHODS, build_method
from .models import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, build_model, count_parameters
from .noise import realized_rate, with_label_noise
from .run_dir import CHECKPOINT, HISTORY_COLUMNS, RunDir, atomic_write, position, read_history_csv
from .sampling import step_seed
from .seeds import derive_seed

__all__ = ["Trainer", "TrainConfig", "PRESETS", "FORWARD_MODES", "PRECISIONS", "METHODS", "HISTORY_COLUMNS",
           "read_history_csv", "resolve_device", "train", "compare", "prepare_data", "git_revision"]

OnStep = Callable[["Trainer", torch.Tensor], None]


class Trainer:
    """Trains one run. ``for row in trainer.epochs(): ...`` yields each finished epoch's history row.

    ``out_dir`` (optional) receives config.json, history.csv, summary.json and checkpoint.pt. With ``resume=True``
    the run continues from ``out_dir/checkpoint.pt``. A folder that holds a different run is refused unless
    ``force=True`` (see :mod:`~dlb_edu.run_dir` for the rules).
    """

    def __init__(self, config: TrainConfig, data: ImageData | None = None, out_dir: str | Path | None = None,
                 resume: bool = False, force: bool = False, progress: bool = True):
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
            state = self.run_dir.open(cfg.to_dict(), resume, force)
            if state is not None:
                self.load_state_dict(state)
                self.run_dir.write_outputs(self.history, self.summary())  # replace any stale ones

    # -----------------------------------------------------------------------------------------------------------
    # The loop
    # -----------------------------------------------------------------------------------------------------------

    def epochs(self, on_step: OnStep | None = None) -> Iterator[dict]:
        """Train until ``config.epochs``; yield each epoch's history row as it finishes. See ``train_epoch``."""
        while self.sampler.epoch < self.config.epochs:
            yield self.train_epoch(on_step)
        if self.run_dir is not None:
            self.run_dir.write_outputs(self.history, self.summary())  # also after a resume of a finished run

    def train_epoch(self, on_step: OnStep | None = None) -> dict:
        """Train the rest of the current epoch; return its history row.

        ``on_step(trainer, loss)`` runs after every optimizer step, with the run in a consistent state: it may read
        or change ``trainer.method``'s settings, save a checkpoint, or raise to stop (a later ``train_epoch``
        continues from the next step).
        """
        cfg, epoch = self.config, self.sampler.epoch
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr_at(epoch)  # a function of the epoch: a resumed run needs nothing more
        self.model.train()
        start, steps = time.perf_counter(), len(self.sampler)
        bar = _progress_bar(total=steps, initial=self.sampler.step, disable=not self.progress,
                            desc=f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}")
        try:
            for batch in self.sampler:
                loss = self.train_step(batch, epoch, self.sampler.step - 1)
                bar.update(1)
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
        raise TrainingDiverged(f"{what}: lower --lr or --alpha{kept}")

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue bit for bit; with several processes, every rank's part."""
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


def prepare_data(config: TrainConfig, data: ImageData | None) -> tuple[ImageData, float]:
    """The run's data: loaded unless given, cut to the subsets, training labels corrupted as asked; and the realized
    fraction of corrupted labels."""
    data = data if data is not None else load_dataset(config.dataset, config.data_root, config.download)
    data = data.subset(config.train_subset, config.test_subset)
    check_trainable(data, config.arch, MIN_IMAGE_SIZE.get(config.arch, 1), MAX_IMAGE_SIZE.get(config.arch))
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
        torch.use_deterministic_algorithms(True)


def _backend_flags(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"tf32_matmul": None, "tf32_cudnn": None, "cudnn_benchmark": None, "deterministic_algorithms":
                torch.are_deterministic_algorithms_enabled()}
    return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}


def _classes_text(classes) -> str:
    classes = list(classes)
    return f"{len(classes)} ({', '.join(map(str, classes[:8]))}{', ...' if len(classes) > 8 else ''})"


def _progress_bar(**kwargs):
    from tqdm.auto import tqdm
    return tqdm(leave=False, **kwargs)


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
            **kwargs) -> dict[str, tuple[list[dict], dict]]:
    """Train each method with the same seed, data and schedule; return ``{method: (history, summary)}``.

    ``out_dir/<method>`` receives each run's outputs; ``on_epoch(method, row)`` is called as each epoch ends (on
    rank 0 only when several processes train). Every run is set up (settings, data, folders) before the first one
    trains, so a bad one is refused before any training. Keyword arguments go to :class:`Trainer`.
    """
    methods = list(methods)
    duplicates = sorted({m for m in methods if methods.count(m) > 1})
    if not methods or duplicates:
        raise ConfigError(f"methods must be distinct and at least one, got {', '.join(methods) or 'none'}")
    configs = [dataclasses.replace(config, method=m) for m in methods]  # each one validated
    data = data if data is not None else load_dataset(config.dataset, config.data_root, config.download)
    resume = kwargs.pop("resume", False)

    def folder(cfg):
        return None if out_dir is None else Path(out_dir) / cfg.method

    # `resume` continues the methods that have a checkpoint and starts the others (a method added to a comparison,
    # or one a kill stopped before its first checkpoint).
    trainers = [Trainer(cfg, data=data, out_dir=folder(cfg),
                        resume=resume and folder(cfg) is not None and (folder(cfg) / CHECKPOINT).exists(), **kwargs)
                for cfg in configs]
    results = {}
    for trainer in trainers:
        for row in trainer.epochs():
            if on_epoch is not None and trainer.rank == 0:
                on_epoch(trainer.config.method, row)
        results[trainer.config.method] = (trainer.history, trainer.summary())
    return results
