"""One training loop for the baseline and DLB, resumable to the bit.

A DLB step (Shen et al., CVPR 2022, Algorithm 1): take the batch from :class:`~dlb_edu.sampling.DLBBatchSampler`
(repeated half first, then the fresh half), augment it anew, forward it (``joint``: one call, the paper's wording;
``split``: the two halves in two calls, as the original code, so BatchNorm normalizes each half with its own
statistics), compute :func:`~dlb_edu.losses.dlb_loss` against the cached logits of the repeated half, step, and
cache the detached logits of the fresh half. The baseline is the same loop with plain batches and plain
cross-entropy; the methods DLB is compared with (label smoothing, Tf-KD, CS-KD, PS-KD) are the same loop with their
own loss object and batch sampler from :mod:`~dlb_edu.methods`.

Everything random in a step (crop offsets, flips) comes from a generator seeded by ``(seed, epoch, step)``, and the
checkpoint holds the model, optimizer, scheduler, sampler position, cache, running sums and history, so a run that
is stopped and resumed ends exactly where an uninterrupted run ends.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from . import metrics
from .augment import Augmenter, check_augment
from .cache import SoftTargetCache
from .data import ImageData, load_dataset, normalize, random_crop_flip
from .errors import ConfigError, TrainingDiverged
from .losses import check_alpha, check_temperature
from .methods import METHODS, build_method, check_method_options
from .models import ARCHS, build_model, count_parameters
from .noise import check_label_noise, realized_rate, with_label_noise
from .sampling import step_seed

FORWARD_MODES = ("joint", "split")
PRECISIONS = ("bf16", "fp32")

# The authors' recipe (their `base.py` and `dlb.py`, the paper's Sec. 4.1) and a short one for CPUs. The learning rate
# drops x0.1 at the same *fractions* of the run as the authors' 150/180/210 of 240 epochs, so a shorter run keeps the
# schedule's shape. `paper` also takes the authors' step: the fresh half and the repeated half forwarded in two calls,
# fresh first, so BatchNorm sees each half alone (`forward="split"`), in float32 (`precision="fp32"`). T = 3 and
# alpha = 1 are our defaults: the authors' `dlb.py` has none (both must be given on its command line).
PRESETS = {
    "paper": dict(arch="resnet32", epochs=240, batch_size=64, lr=0.05, momentum=0.9, nesterov=True,
                  weight_decay=5e-4, milestones=(0.625, 0.75, 0.875), temperature=3.0, alpha=1.0,
                  forward="split", precision="fp32"),
    "quick": dict(arch="small_cnn", epochs=15, batch_size=64, lr=0.05, momentum=0.9, nesterov=True,
                  weight_decay=5e-4, milestones=(0.625, 0.75, 0.875), temperature=3.0, alpha=1.0,
                  forward="joint", precision="bf16"),
}

# Fields that may differ when a run is resumed: they do not change what is computed.
RESUMABLE_FIELDS = ("epochs", "device", "checkpoint_every", "download", "data_root")

HISTORY_COLUMNS = ("epoch", "train_loss", "train_ce", "train_consistency", "train_acc", "step_loss_std",
                   "test_loss", "test_acc", "ece", "probe_flip_rate", "probe_kl", "lr", "epoch_time_s")


@dataclass
class TrainConfig:
    """Everything that defines a run. ``TrainConfig.from_preset("paper", method="dlb")`` gives the paper's."""
    method: str = "dlb"
    dataset: str = "cifar10-mini"
    arch: str = "small_cnn"
    epochs: int = 15
    batch_size: int = 64              # B: fresh samples per step (DLB forwards B repeated + B fresh)
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    milestones: tuple = (0.625, 0.75, 0.875)  # fractions of `epochs` where the lr is multiplied by 0.1
    temperature: float = 3.0          # T
    alpha: float = 1.0                # weight of the consistency term
    forward: str = "joint"            # "joint": one forward of both halves; "split": two, fresh first, as the authors
    carry_over: bool = True           # repeat the last fresh half of an epoch at the start of the next
    seed: int = 0
    device: str = "auto"              # "auto", "cpu", "cuda", "cuda:1", ...
    fast: str = "auto"                # "auto": on CUDA use channels_last and fused SGD; "off": never
    precision: str = "bf16"           # "bf16": autocast the forward on CUDA (never on a CPU); "fp32": never
    compile: bool = False             # torch.compile the model (CUDA; pays off on long runs)
    train_subset: int | None = None   # use only the first N training images (fast modes)
    test_subset: int | None = None
    probe_size: int = 500             # training images whose predictions are tracked for the stability metrics
    checkpoint_every: int = 0         # also checkpoint every K steps (0: only at epoch ends)
    data_root: str | None = None
    download: bool = False
    # Beyond DLB: the other methods' settings (methods.py, defaults from their papers), label noise, augmentation.
    ls_epsilon: float = 0.1           # label_smoothing: eps (Szegedy et al., 2016)
    tfkd_alpha: float = 0.1           # tf_kd: weight of the KL to the virtual teacher (Yuan et al., 2020)
    tfkd_temperature: float = 20.0    # tf_kd: T softening the virtual teacher
    tfkd_correct_prob: float = 0.99   # tf_kd: the virtual teacher's probability of the true class
    cskd_temperature: float = 4.0     # cs_kd: T (Yun et al., 2020)
    cskd_lambda: float = 1.0          # cs_kd: weight of the class-wise consistency term
    pskd_alpha_T: float = 0.8         # ps_kd: alpha at the last epoch (Kim et al., 2021)
    label_noise: float = 0.0          # fraction of training labels to corrupt (noise.py)
    label_noise_type: str = "symmetric"  # or "asymmetric": CIFAR-10's class flips
    augment: str = "none"             # on top of crop + flip: none, cutout, mixup, cutmix (augment.py)
    cutout_size: int = 16             # Cutout's square side in pixels (DeVries & Taylor: 16 on CIFAR-10)
    mix_alpha: float = 1.0            # lam ~ Beta(mix_alpha, mix_alpha) for mixup and CutMix
    cutmix_prob: float = 0.5          # probability that CutMix mixes a batch (part)

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "TrainConfig":
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[preset], **overrides})

    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the first bad field; return self."""
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown arch {self.arch!r}: choose one of {', '.join(ARCHS)}")
        if self.forward not in FORWARD_MODES:
            raise ConfigError(f"forward must be one of {', '.join(FORWARD_MODES)}, got {self.forward!r}")
        check_temperature(self.temperature)
        check_alpha(self.alpha)
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1 or not self.weight_decay >= 0:
            raise ConfigError("momentum must be in [0, 1) and weight_decay >= 0")
        if any(not 0 < m <= 1 for m in self.milestones):
            raise ConfigError(f"milestones are fractions of the run in (0, 1], got {self.milestones}")
        for name in ("train_subset", "test_subset"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be an integer >= 1 or None, got {value!r}")
        if self.fast not in ("auto", "off"):
            raise ConfigError(f"fast must be auto or off, got {self.fast!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}")
        resolve_device(self.device)
        check_method_options(self)
        check_label_noise(self.label_noise, self.label_noise_type)
        check_augment(self.augment, self.cutout_size, self.mix_alpha, self.cutmix_prob)
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here: use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return dev


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless torch.distributed has been initialized (see cli)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist
        dist.barrier()


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp_path)`` then rename over ``path``: a kill mid-write leaves the old file whole."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2) + "\n"))


def read_history_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (float(v) if k != "epoch" else int(v)) for k, v in row.items()} for row in csv.DictReader(f)]


class Trainer:
    """Trains one run. ``for row in trainer.epochs(): ...`` yields each finished epoch's history row.

    ``out_dir`` (optional) receives config.json, history.csv, summary.json and checkpoint.pt. With ``resume=True``
    the run continues from ``out_dir/checkpoint.pt``. A folder that holds a different run is refused unless
    ``force=True``.
    """

    def __init__(self, config: TrainConfig, data: ImageData | None = None, out_dir: str | Path | None = None,
                 resume: bool = False, force: bool = False, progress: bool = True):
        self.config = config.validate()
        self.device = resolve_device(config.device)
        self.rank, self.world_size = rank_and_world_size()
        self.progress = progress and self.rank == 0
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.world_size > 1 and config.method == "ps_kd":
            raise ConfigError("ps_kd is not supported with several processes (each would hold only its own "
                              "samples' predictions): train it in one process")
        if self.world_size > 1 and config.forward == "split":
            raise ConfigError("forward split is not supported with several processes (DDP needs one forward per "
                              "backward): use --forward joint")
        # The GPU fast path: channels_last activations and a fused optimizer step, and bf16 autocast unless fp32.
        self.fast = self.device.type == "cuda" and config.fast == "auto"
        self.autocast = self.fast and config.precision == "bf16"
        self.memory_format = torch.channels_last if self.fast else torch.contiguous_format
        if resume and self.out_dir is None:
            raise ConfigError("resume needs an output folder (--out DIR) that holds a checkpoint")

        data = data if data is not None else load_dataset(config.dataset, config.data_root, config.download)
        data = data.subset(config.train_subset, config.test_subset)
        clean_y_train = data.y_train
        data = with_label_noise(data, config.label_noise, config.label_noise_type, config.seed)  # test labels stay
        self.label_noise_realized = realized_rate(clean_y_train, data.y_train)
        n_train = len(data.x_train)
        if config.batch_size > n_train:
            raise ConfigError(f"batch_size must be at most the training set size {n_train}, got {config.batch_size}")
        self.data = data
        # Resident data: uint8 on the training device, augmented there batch by batch.
        self.x_train, self.y_train = data.x_train.to(self.device), data.y_train.to(self.device)
        self.x_test, self.y_test = data.x_test.to(self.device), data.y_test.to(self.device)
        self.mean, self.std = data.mean.to(self.device), data.std.to(self.device)

        torch.manual_seed(config.seed)
        self.model = build_model(config.arch, data.num_classes).to(self.device, memory_format=self.memory_format)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                                         nesterov=config.nesterov, weight_decay=config.weight_decay,
                                         **({"fused": True} if self.fast else {}))
        # `self.net` is what the step calls: the model, maybe compiled, maybe wrapped for several processes.
        self.net = self.model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.net = DistributedDataParallel(self.model, device_ids=[self.device] if self.fast else None)
        if config.compile:
            self.net = torch.compile(self.net)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=self._milestone_epochs(),
                                                              gamma=0.1)
        self.cache = SoftTargetCache()
        self.method = build_method(config, self.y_train, data.num_classes, cache=self.cache)
        sampler_cls = self.method.batch_sampler  # plain batches, DLB's overlapping ones, or CS-KD's class pairs
        if config.batch_size * self.world_size > n_train:
            raise ConfigError(f"batch_size x processes = {config.batch_size * self.world_size} exceeds the training "
                              f"set size {n_train}")
        self.sampler = sampler_cls(n_train, config.batch_size, shuffle=True, seed=config.seed,
                                   carry_over=config.carry_over, rank=self.rank, world_size=self.world_size)
        self.augment = Augmenter(config.augment, config.cutout_size, config.mix_alpha, config.cutmix_prob)
        g = torch.Generator().manual_seed(config.seed)
        self.probe_idx = torch.randperm(n_train, generator=g)[: min(config.probe_size, n_train)].to(self.device)
        self.prev_probe_probs: torch.Tensor | None = None
        self.history: list[dict] = []
        self.running = self._fresh_running()
        self.train_time_s = 0.0

        if self.out_dir is not None:
            self._prepare_out_dir(resume, force)

    # -----------------------------------------------------------------------------------------------------------
    # The loop
    # -----------------------------------------------------------------------------------------------------------

    def epochs(self, on_step: Callable[["Trainer", torch.Tensor], None] | None = None) -> Iterator[dict]:
        """Train until ``config.epochs``; yield each epoch's history row as it finishes. See ``train_epoch``."""
        while self.sampler.epoch < self.config.epochs:
            yield self.train_epoch(on_step)
        if self.out_dir is not None and self.rank == 0:
            self._write_outputs()  # also after a resume that found the run already finished

    def run(self) -> dict:
        """Train to the end; return the summary."""
        for _ in self.epochs():
            pass
        return self.summary()

    def train_epoch(self, on_step: Callable[["Trainer", torch.Tensor], None] | None = None) -> dict:
        """Train the rest of the current epoch; return its history row.

        ``on_step(trainer, loss)`` runs after every optimizer step, with the run in a consistent state: it may read
        or change ``trainer.method``'s settings, save a checkpoint, or raise to stop (a later ``train_epoch``
        continues from the next step).
        """
        cfg, epoch = self.config, self.sampler.epoch
        self.model.train()
        start = time.perf_counter()
        steps = len(self.sampler)
        bar = _progress_bar(total=steps, initial=self.sampler.step, disable=not self.progress,
                            desc=f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}")
        try:
            for batch in self.sampler:
                loss = self.train_step(batch, epoch, self.sampler.step - 1)
                bar.update(1)
                if on_step is not None:
                    on_step(self, loss)
                if (cfg.checkpoint_every and self.out_dir is not None
                        and self.sampler.step % cfg.checkpoint_every == 0 and self.sampler.step < steps):
                    self.running["time_s"] += time.perf_counter() - start
                    start = time.perf_counter()
                    self._check_finite(epoch)
                    self.save_checkpoint()
        finally:
            bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # once per epoch, so the epoch time covers the queued GPU work
        self.running["time_s"] += time.perf_counter() - start
        self._check_finite(epoch)
        row = self._finish_epoch(epoch)
        self.history.append(row)
        self.scheduler.step()
        self.running = self._fresh_running()
        if self.out_dir is not None:
            self.save_checkpoint()
            if self.rank == 0:
                self._write_outputs()
        return row

    def train_step(self, batch, epoch: int, step: int) -> torch.Tensor:
        """One optimizer step on a DLB batch (or a plain batch: ``num_repeated == 0``). Returns the loss, detached."""
        cfg = self.config
        r = batch.num_repeated
        idx = torch.as_tensor(batch)
        # A pinned, non-blocking copy: the host queues the step without waiting for the GPU.
        idx = idx.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else idx
        gen = torch.Generator(self.device).manual_seed(step_seed(cfg.seed + 7919 * self.rank, epoch, step))
        x = normalize(random_crop_flip(self.x_train[idx], generator=gen), self.mean, self.std)
        x, mix = self.augment(x, batch, gen)  # cutout, mixup or CutMix, each part of the batch on its own
        x = x.contiguous(memory_format=self.memory_format)
        y = self.y_train[idx]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            if cfg.forward == "split" and r > 0:
                # The authors' step: the fresh half first, then the repeated half, in two calls, so BatchNorm
                # normalizes each half with its own statistics and updates its running averages twice, fresh first.
                fresh = self.net(x[r:])
                logits = torch.cat([self.net(x[:r]), fresh])
            else:
                logits = self.net(x)
        loss, ce, kd = self.method.loss(logits, y, batch, epoch, mix)  # methods.py: DLB's or a rival's loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.method.after_step(batch, logits)  # DLB caches the fresh half's logits, PS-KD stores the predictions
        # Running sums stay on the device: nothing here waits for the GPU.
        run = self.running
        loss = loss.detach()
        run["step_losses"].append(loss)
        run["ce_sum"] += ce.detach()
        run["kd_sum"] += kd.detach()
        run["correct"] += (logits[r:].argmax(1) == y[r:]).sum()
        run["seen"] += len(batch) - r
        return loss

    def _fresh_running(self) -> dict:
        zero = torch.zeros((), device=self.device)
        return {"step_losses": [], "ce_sum": zero.clone(), "kd_sum": zero.clone(), "correct": zero.clone(),
                "seen": 0, "time_s": 0.0}

    def _check_finite(self, epoch: int) -> None:
        losses = self.running["step_losses"]
        if losses:
            finite = torch.isfinite(torch.stack(losses))
            if not finite.all():
                bad = int((~finite).nonzero()[0])
                where = f"epoch {epoch + 1}, step {bad + 1}"
                kept = (f"; the last good checkpoint is kept in {self.checkpoint_path}"
                        if self.out_dir is not None and self.checkpoint_path.exists() else "")
                raise TrainingDiverged(f"the loss became {losses[bad].item()} at {where}{kept}: lower --lr or "
                                       f"--alpha")

    def _finish_epoch(self, epoch: int) -> dict:
        run = self.running
        losses = torch.stack(run["step_losses"]).float()
        if self.world_size > 1:  # every rank ran the same number of steps: average the sums over ranks
            import torch.distributed as dist
            sums = torch.stack([run["ce_sum"], run["kd_sum"], run["correct"],
                                torch.tensor(float(run["seen"]), device=self.device)])
            for t in (losses, sums):
                dist.all_reduce(t)
            losses, sums = losses / self.world_size, sums / self.world_size
            run = {**run, "ce_sum": sums[0], "kd_sum": sums[1], "correct": sums[2], "seen": sums[3].item()}
        n_steps = len(losses)
        test = self.evaluate()
        probe_probs = self.predict(self.x_train[self.probe_idx])
        if self.prev_probe_probs is None:
            flip, kl = float("nan"), float("nan")
        else:
            flip = metrics.flip_rate(self.prev_probe_probs, probe_probs)
            kl = metrics.mean_kl(self.prev_probe_probs, probe_probs)
        self.prev_probe_probs = probe_probs
        self.train_time_s += run["time_s"]
        return {
            "epoch": epoch + 1,
            "train_loss": losses.mean().item(),
            "train_ce": (run["ce_sum"] / n_steps).item(),
            "train_consistency": (run["kd_sum"] / n_steps).item(),
            "train_acc": (run["correct"] / max(run["seen"], 1)).item(),
            "step_loss_std": losses.std().item() if n_steps > 1 else 0.0,
            "test_loss": test["loss"], "test_acc": test["acc"], "ece": test["ece"],
            "probe_flip_rate": flip, "probe_kl": kl,
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": run["time_s"],
        }

    @torch.no_grad()
    def predict(self, x_uint8: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Softmax probabilities of un-augmented images, in eval mode."""
        was_training = self.model.training
        self.model.eval()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            out = torch.cat([F.softmax(self.model(normalize(x_uint8[i:i + batch_size], self.mean, self.std)
                                                  .contiguous(memory_format=self.memory_format)).float(), 1)
                             for i in range(0, len(x_uint8), batch_size)])
        self.model.train(was_training)
        return out

    def evaluate(self) -> dict:
        """Test loss (NLL), accuracy and expected calibration error."""
        probs = self.predict(self.x_test)
        nll = F.nll_loss(probs.clamp_min(1e-12).log(), self.y_test).item()
        acc = (probs.argmax(1) == self.y_test).float().mean().item()
        return {"loss": nll, "acc": acc, "ece": metrics.expected_calibration_error(probs.cpu(), self.y_test.cpu())}

    def summary(self) -> dict:
        last = self.history[-1] if self.history else {}
        return {
            "method": self.config.method, "dataset": self.config.dataset, "arch": self.config.arch,
            "epochs": len(self.history), "forward": self.config.forward, "seed": self.config.seed,
            "final_test_acc": last.get("test_acc"),
            "best_test_acc": max((h["test_acc"] for h in self.history), default=None),
            "train_time_s": self.train_time_s,
            "device": str(self.device) if self.device.type == "cpu" else torch.cuda.get_device_name(self.device),
            "processes": self.world_size,
            "params": count_parameters(self.model),
            "cache_bytes": self.method.nbytes,  # what the method keeps between steps: DLB's cache, PS-KD's table
            "label_noise_realized": self.label_noise_realized,
            "torch": torch.__version__, "git_rev": git_revision(),
        }

    # -----------------------------------------------------------------------------------------------------------
    # Outputs and checkpoints
    # -----------------------------------------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def _prepare_out_dir(self, resume: bool, force: bool) -> None:
        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a folder")
        config_file = out / "config.json"
        if config_file.exists() and not force:
            try:
                saved = json.loads(config_file.read_text())
            except (OSError, json.JSONDecodeError):
                raise ConfigError(f"{config_file} is unreadable: pass --force to start a new run there") from None
            diff = _config_diff(saved, self.config.to_dict())
            if diff:
                raise ConfigError(f"{out} holds a different run ({diff}): choose another --out or pass --force")
            if not resume and self.checkpoint_path.exists():
                raise ConfigError(f"{out} already holds this run: pass --resume to continue it or --force to "
                                  f"start over")
        # A folder with this run's config.json but no checkpoint was stopped before its first checkpoint: there is
        # nothing to lose, so it simply starts again, with or without --resume.
        if resume and not force:
            if self.checkpoint_path.exists():
                self.load_checkpoint(self.checkpoint_path)
            elif not config_file.exists():
                raise ConfigError(f"nothing to resume: {self.checkpoint_path} does not exist")
        _barrier(self.world_size)  # every rank has read the folder before rank 0 writes to it
        if self.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            write_json(config_file, self.config.to_dict())

    def _milestone_epochs(self) -> list[int]:
        return [max(1, round(f * self.config.epochs)) for f in self.config.milestones]

    def rank_state_dict(self) -> dict:
        """What differs between processes: the sampler's position and overlap, the cache, the running sums."""
        run = self.running
        return {
            "sampler": self.sampler.state_dict(),
            "cache": self.cache.state_dict(),
            "method": self.method.state_dict(),
            "running": _running_to(run, "cpu"),
        }

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue bit for bit; with several processes, every rank's part."""
        ranks = [self.rank_state_dict()]
        if self.world_size > 1:
            import torch.distributed as dist
            ranks = [None] * self.world_size
            dist.all_gather_object(ranks, self.rank_state_dict())
        return {
            "config": self.config.to_dict(),
            "world_size": self.world_size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ranks": ranks,
            "prev_probe_probs": None if self.prev_probe_probs is None else self.prev_probe_probs.cpu(),
            "history": self.history,
            "train_time_s": self.train_time_s,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        diff = _config_diff(state["config"], self.config.to_dict())
        if diff:
            raise ConfigError(f"the checkpoint belongs to a different configuration ({diff})")
        if state["world_size"] != self.world_size:
            raise ConfigError(f"the checkpoint was written by {state['world_size']} processes, this run has "
                              f"{self.world_size}")
        mine = state["ranks"][self.rank]
        if mine["sampler"]["epoch"] > self.config.epochs:
            raise ConfigError(f"the checkpoint is at epoch {mine['sampler']['epoch']}, past --epochs "
                              f"{self.config.epochs}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # A resume may extend the run (more epochs): follow the new schedule from here on.
        milestones = self._milestone_epochs()
        self.scheduler.milestones = Counter(milestones)
        decays = sum(m <= self.scheduler.last_epoch for m in milestones)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * 0.1 ** decays
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        self.sampler.load_state_dict(mine["sampler"])
        self.cache.load_state_dict(mine["cache"], self.device)
        self.method.load_state_dict(mine["method"], self.device)
        self.running = _running_to(mine["running"], self.device)
        probs = state["prev_probe_probs"]
        self.prev_probe_probs = None if probs is None else probs.to(self.device)
        self.history = list(state["history"])
        self.train_time_s = state["train_time_s"]
        torch.set_rng_state(state["torch_rng"])

    def save_checkpoint(self, path: Path | None = None) -> None:
        """Write the checkpoint atomically (temporary file + rename). Collective when several processes train."""
        path = Path(path) if path is not None else self.checkpoint_path
        state = self.state_dict()
        if self.rank == 0:
            atomic_write(path, lambda p: torch.save(state, p))

    def load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a truncated or foreign file
            raise ConfigError(f"checkpoint {path} is corrupt or not a dlb_edu checkpoint "
                              f"({type(e).__name__}): delete it or pass --force") from None
        if not isinstance(state, dict) or "ranks" not in state:
            raise ConfigError(f"checkpoint {path} is not a dlb_edu checkpoint")
        self.load_state_dict(state)

    def _write_outputs(self) -> None:
        def write_csv(p: Path):
            with open(p, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
                w.writeheader()
                w.writerows(self.history)
        atomic_write(self.out_dir / "history.csv", write_csv)
        write_json(self.out_dir / "summary.json", self.summary())


def _running_to(run: dict, device) -> dict:
    """The epoch's running sums with their tensors on ``device`` (the checkpoint keeps them on the CPU)."""
    return {**run, "step_losses": [t.to(device) for t in run["step_losses"]],
            **{k: run[k].to(device) for k in ("ce_sum", "kd_sum", "correct")}}


def _config_diff(saved: dict, current: dict) -> str:
    """The fields (other than those a resume may change) in which two configs differ, as 'name: a -> b'."""
    keys = sorted((set(saved) | set(current)) - set(RESUMABLE_FIELDS))
    diffs = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
    return ", ".join(diffs)


def _progress_bar(**kwargs):
    from tqdm.auto import tqdm
    return tqdm(leave=False, **kwargs)


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
    rank 0 only when several processes train). Keyword arguments go to :class:`Trainer`.
    """
    data = data if data is not None else load_dataset(config.dataset, config.data_root, config.download)
    results = {}
    for method in methods:
        cfg = dataclasses.replace(config, method=method)
        trainer = Trainer(cfg, data=data, out_dir=None if out_dir is None else Path(out_dir) / method, **kwargs)
        for row in trainer.epochs():
            if on_epoch is not None and trainer.rank == 0:
                on_epoch(method, row)
        results[method] = (trainer.history, trainer.summary())
    return results
