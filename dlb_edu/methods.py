"""DLB and the regularizers it is compared with, as loss objects on one training loop.

The DLB paper's claims are comparative: Shen et al. (CVPR 2022) set DLB beside other ways of training a network on
soft targets without a pre-trained teacher. Each method here is one small class with the same calls from the trainer:

    calls = method.forward_calls(batch, forward)          # which rows each forward call takes, with gradient or not
    teacher = method.cached_logits(batch)                 # what the step records: DLB's teacher logits, else None
    loss, ce, consistency = method.loss(logits, y, batch, epoch, mix, idx)   # before backward
    method.after_step(batch, logits, idx)                 # remember what this step teaches a later one

``ce`` is the cross-entropy the method uses, ``consistency`` its extra term, a KL divergence toward soft targets
(logged as ``train_consistency``; zero where the method folds everything into the targets). ``batch`` is the
sampler's batch (a :class:`~dlb_edu.sampling.Batch`, or CS-KD's :class:`~dlb_edu.pairs.ClassPairBatch`), ``idx``
the same indices as a tensor on the training device (the trainer's one copy per step), ``mix`` the augmentation's
:class:`~dlb_edu.augment.Mix` or None: with mixup or CutMix every target, hard or soft, is mixed the way the images
were. The settings are checked once, by :class:`~dlb_edu.config.TrainConfig`.

    method           loss                                                  defaults (paper)
    baseline         CE(y)                                                 -
    dlb              CE(y) + alpha T^2 KL(p_T(last step) || p_T), repeated T = 3, alpha = 1 (Shen et al., 2022)
    label_smoothing  CE((1 - eps) one_hot(y) + eps / K)                    eps = 0.1 (Szegedy et al., 2016)
    tf_kd            (1 - alpha) CE(y) + alpha m / K KL(softmax(p^d / T) || p)
                                                                           alpha 0.1, T 20, a 0.99, m 100 (Yuan et al.)
    cs_kd            CE(y) + lambda T^2 KL(p_T(same-class pair) || p_T)    T = 4, lambda = 1 (Yun et al., 2020)
    ps_kd            CE((1 - alpha_t) one_hot(y) + alpha_t p(last epoch))  alpha_T = 0.8 (Kim et al., 2021)

Each method trains on the recipe of the run's config (DLB's by default); README, "The rival methods' own recipes",
lists how each paper's own recipe differs.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from . import distributed
from .augment import Mix
from .cache import SoftTargetCache
from .config import check_value
from .errors import ConfigError
from .losses import consistency_loss, dlb_loss, loss_precision
from .pairs import ClassPairBatchSampler
from .sampling import DLBBatchSampler, PlainBatchSampler


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mix: Mix | None = None) -> torch.Tensor:
    """Mean over the batch of ``-sum_k t_k log softmax(logits)_k``.

    ``targets`` are class indices (n,) or distributions (n, K). With a ``mix``, row i's target is
    ``lam_i t_i + (1 - lam_i) t_perm(i)``, which for hard labels is mixup's ``lam CE(y_i) + (1 - lam) CE(y_j)``.
    """
    logits = loss_precision(logits)
    if targets.dim() == 1:
        if mix is None:
            return F.cross_entropy(logits, targets)
        targets = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    if mix is not None:
        targets = mix.targets(targets)
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def _indices(batch, idx: torch.Tensor | None, device) -> torch.Tensor:
    """The batch's indices as a tensor on ``device``: the trainer's copy when it passes one, else made here."""
    return torch.as_tensor(batch, device=device) if idx is None else idx


def _rows(mix: Mix | None, rows: slice) -> Mix | None:
    """The mix restricted to ``rows`` (whose partners lie inside them, as the augmenter guarantees)."""
    if mix is None:
        return None
    return Mix(mix.perm[rows] - (rows.start or 0), mix.lam[rows])


class Method:
    """Plain cross-entropy: the baseline. Subclasses change the targets or add a term."""
    # Called as batch_sampler(num_samples, batch_size, shuffle=, seed=, rank=, world_size=); a method binds its own
    # sampler's other settings (DLB's carry_over, CS-KD's labels).
    batch_sampler = PlainBatchSampler

    def forward_calls(self, batch, forward: str) -> list[tuple[slice, bool]]:
        """The step's forward calls in the order they run: ``(rows of the batch, with gradient)``. Here one call with
        the whole batch, whatever ``forward`` says: a plain batch is one part."""
        return [(slice(0, len(batch)), True)]

    def loss(self, logits, y, batch, epoch: int, mix: Mix | None = None, idx: torch.Tensor | None = None):
        """``(loss, ce, consistency)`` of one batch; ``loss`` is what is minimized."""
        ce = cross_entropy(logits, y, mix)
        return ce, ce, ce.new_zeros(())

    def cached_logits(self, batch) -> torch.Tensor | None:
        """The logits kept from an earlier step that this batch's loss pulls toward (None here)."""
        return None

    def after_step(self, batch, logits: torch.Tensor, idx: torch.Tensor | None = None) -> None:
        pass

    @property
    def nbytes(self) -> int:
        """Bytes the method keeps between steps (DLB: one half-batch of logits; PS-KD: a prediction per sample)."""
        return 0

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, device="cpu") -> None:
        pass


class DLB(Method):
    """Self-distillation from the last mini-batch (Shen et al., CVPR 2022, Eq. 4-5; T = 3, alpha = 1).

    ``CE(all rows) + alpha T^2 KL(softmax(cached / T) || softmax(logits[:r] / T))`` over the ``r`` repeated rows,
    whose cached logits the previous step stored; this step stores its fresh rows' logits in the same cache. See
    :func:`~dlb_edu.losses.dlb_loss`, which this calls, with mixed targets when the batch was mixed. With mixup
    or CutMix the repeated half is mixed anew, like it is cropped anew: its teacher is the logits the last step gave
    the same samples under another crop and another mix. ``carry_over`` is its sampler's
    (:class:`~dlb_edu.sampling.DLBBatchSampler`): whether an epoch's last fresh half is repeated in the next epoch.
    """

    def __init__(self, cache: SoftTargetCache | None = None, temperature: float = 3.0, alpha: float = 1.0,
                 carry_over: bool = True):
        self.cache = cache if cache is not None else SoftTargetCache()
        self.temperature, self.alpha = temperature, alpha
        self.batch_sampler = functools.partial(DLBBatchSampler, carry_over=carry_over)

    def set(self, **knobs: float) -> None:
        """``dlb.set(temperature=..., alpha=...)``: change T or alpha from the next loss call on (the live lab, between
        two steps), each value checked by the rule of TrainConfig's field of that name; a bad one changes nothing."""
        unknown = sorted(set(knobs) - {"temperature", "alpha"})
        if unknown:
            raise ConfigError(f"only temperature and alpha can change mid-run, not {', '.join(unknown)}")
        checked = {name: check_value(name, value) for name, value in knobs.items()}
        for name, value in checked.items():
            setattr(self, name, value)

    def forward_calls(self, batch, forward):
        """``joint``: one call. ``split``, the authors' step (``dlb.py``): the fresh half first, then the repeated
        half (a second, independent augmentation of the previous step's fresh images) in a call of its own, so
        BatchNorm normalizes each half alone and updates its running averages twice, fresh half first."""
        r = batch.num_repeated
        if forward == "joint" or r == 0:
            return super().forward_calls(batch, forward)
        return [(slice(r, len(batch)), True), (slice(0, r), True)]

    def cached_logits(self, batch):
        """The cached logits of the repeated half (the last step's fresh half). None at the first step of a run, or
        of an epoch without carry-over: the loss is plain cross-entropy then."""
        return self.cache.get() if batch.num_repeated > 0 else None

    def loss(self, logits, y, batch, epoch, mix=None, idx=None):
        cached = self.cache.get(batch.repeated) if batch.num_repeated > 0 else None  # checked: the same samples
        return dlb_loss(logits, y, cached, self.temperature, self.alpha, ce=cross_entropy(logits, y, mix))

    def after_step(self, batch, logits, idx=None):
        self.cache.put(batch.fresh, logits[batch.num_repeated:])

    @property
    def nbytes(self):
        return self.cache.nbytes

    def state_dict(self):
        return {"cache": self.cache.state_dict()}

    def load_state_dict(self, state, device="cpu"):
        self.cache.load_state_dict(state["cache"], device)


class LabelSmoothing(Method):
    """Label smoothing regularization (Szegedy et al., CVPR 2016, Sec. 7; eps = 0.1).

    The target is ``q'(k) = (1 - eps) [k = y] + eps / K``: the uniform prior includes the true class, as in the
    paper (``F.cross_entropy(..., label_smoothing=eps)`` computes the same).
    """

    def __init__(self, num_classes: int, epsilon: float = 0.1):
        self.num_classes, self.epsilon = num_classes, epsilon

    def targets(self, y: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        return (1 - self.epsilon) * F.one_hot(y, self.num_classes).to(dtype) + self.epsilon / self.num_classes

    def loss(self, logits, y, batch, epoch, mix=None, idx=None):
        ce = cross_entropy(logits, self.targets(y, loss_precision(logits).dtype), mix)
        return ce, ce, ce.new_zeros(())


class TfKD(Method):
    """Teacher-free KD with a hand-designed virtual teacher, Tf-KD_reg (Yuan et al., CVPR 2020, Sec. 5).

    The virtual teacher puts ``a`` on the true class and ``(1 - a) / (K - 1)`` on every other; it is softened with
    the temperature, ``p^d_T = softmax(p^d / T)``, and the loss is the authors' ``loss_kd_regularization``
    (github:yuanli2333/Teacher-free-Knowledge-Distillation, ``my_loss_function.py:33-51``):

        (1 - alpha) CE(y) + alpha (multiplier / K) KL(p^d_T || softmax(logits)),

    the KL summed over classes and averaged over the batch. Their KL term is ``nn.KLDivLoss()(...) * multiplier``
    (line 47), and ``nn.KLDivLoss()`` averages over all N x K elements, so the weight of one sample's KL is
    ``multiplier / K``: 1 in their ResNet-18 CIFAR-100 config (multiplier 100, K = 100,
    ``experiments/base_experiments/base_resnet18/params.json``), 10 on CIFAR-10 with the same multiplier. As in
    their code the student side is not softened and ``a = 0.99`` (line 39); ``T = 20`` and ``alpha = 0.1`` are that
    config's. With ``T = 20`` the softened teacher is almost uniform (0.105 on the true class for K = 10): Tf-KD_reg
    is label smoothing toward a slightly peaked prior, which is the paper's point.

    Their label-smoothing baseline (``loss_label_smoothing``, line 61) spreads ``eps / (K - 1)`` over the wrong
    classes only; our :class:`LabelSmoothing` keeps Szegedy et al.'s ``eps / K`` over all classes, the usual
    definition (and ``F.cross_entropy``'s). The two differ by ``eps / (K (K - 1))`` per class.
    """

    def __init__(self, num_classes: int, alpha: float = 0.1, temperature: float = 20.0, correct_prob: float = 0.99,
                 multiplier: float = 100.0):
        self.num_classes, self.alpha, self.temperature = num_classes, alpha, temperature
        self.correct_prob, self.multiplier = correct_prob, multiplier

    def teacher(self, y: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """``softmax(p^d / T)`` for each label: the softened virtual teacher, one row per sample."""
        k = self.num_classes
        p_d = torch.full((len(y), k), (1 - self.correct_prob) / max(k - 1, 1), dtype=dtype, device=y.device)
        p_d[torch.arange(len(y), device=y.device), y] = self.correct_prob
        return F.softmax(p_d / self.temperature, dim=1)

    def loss(self, logits, y, batch, epoch, mix=None, idx=None):
        logits = loss_precision(logits)
        ce = cross_entropy(logits, y, mix)
        t = self.teacher(y, logits.dtype)
        if mix is not None:
            t = mix.targets(t)
        kl = (t * (t.log() - F.log_softmax(logits, dim=1))).sum(1).mean()
        return (1 - self.alpha) * ce + self.alpha * (self.multiplier / self.num_classes) * kl, ce, kl


class CSKD(Method):
    """Class-wise self-knowledge distillation (Yun et al., CVPR 2020; T = 4, lambda = 1).

    Each batch (:class:`~dlb_edu.pairs.ClassPairBatchSampler`) is ``B`` anchor rows then ``B`` pair rows, pair ``i``
    drawn from anchor ``i``'s class. The loss is the authors' (github:alinlab/cs-kd, ``train.py:95-105, 131-139``):

        CE(anchors) + lambda T^2 KL(softmax(pair / T) || softmax(anchor / T)),

    the pair's logits detached, the KL summed over classes and averaged over anchors. Only anchors get the
    cross-entropy, and only anchors count for the training accuracy.

    With ``forward="split"`` the step is theirs (``train.py:132-137``): the anchors are forwarded with gradient, then
    the pairs in a second call under ``no_grad``, so BatchNorm normalizes each group with its own statistics and
    updates its running averages twice per step, anchors first, and no graph is built for the pairs. With
    ``forward="joint"`` both go through one call (one BatchNorm statistic for both groups, and the anchors' gradient
    then flows through the pairs' share of it).
    """

    def __init__(self, labels: torch.Tensor, temperature: float = 4.0, lam: float = 1.0):
        self.temperature, self.lam = temperature, lam
        self.batch_sampler = functools.partial(ClassPairBatchSampler, labels=labels.cpu())

    def forward_calls(self, batch, forward):
        if forward == "joint":
            return super().forward_calls(batch, forward)
        return [(batch.anchor_rows, True), (batch.pair_rows, False)]

    def loss(self, logits, y, batch, epoch, mix=None, idx=None):
        anchors, pairs = batch.anchor_rows, batch.pair_rows
        ce = cross_entropy(logits[anchors], y[anchors], _rows(mix, anchors))
        consistency = consistency_loss(logits[anchors], logits[pairs].detach(), self.temperature)
        return ce + self.lam * consistency, ce, consistency


class PSKD(Method):
    """Progressive self-knowledge distillation (Kim et al., ICCV 2021; alpha_T = 0.8).

    At epoch ``t`` (1-based, of ``T``) the target of sample ``i`` is ``(1 - alpha_t) one_hot(y_i) + alpha_t P_i``,
    with ``alpha_t = alpha_T t / T`` and ``P_i`` the softmax the model gave sample ``i`` when it last trained on it,
    one epoch ago (in the first epoch, ``P_i`` is the one-hot label). As in the authors' code the predictions are
    those of the training forward pass (train mode, augmented inputs), kept in a table of ``N x K`` floats that
    is part of the checkpoint. With mixup or CutMix the stored prediction is the one on the mixed image.

    With several processes (DDP) each rank trains on its own share of every epoch; after each step every rank
    gathers all ranks' predictions and indices and writes them into its table, as the authors' code does
    (github:lgcnsai/PS-KD-Pytorch, ``main.py:435-442, 462-465``), so every rank holds the same whole table.
    """

    def __init__(self, labels: torch.Tensor, num_classes: int, epochs: int, alpha_T: float = 0.8):
        self.alpha_T, self.epochs, self.num_classes = alpha_T, epochs, num_classes
        # Before a sample's first visit its "previous prediction" is its label, so the first epoch's target is one-hot.
        self.predictions = F.one_hot(labels, num_classes).float()

    def alpha_t(self, epoch: int) -> float:
        """alpha_T (epoch + 1) / T for the 0-based ``epoch``: alpha_T / T in the first epoch, alpha_T in the last."""
        return self.alpha_T * (epoch + 1) / self.epochs

    def targets(self, y: torch.Tensor, idx: torch.Tensor, epoch: int, dtype=torch.float32) -> torch.Tensor:
        a = self.alpha_t(epoch)
        return (1 - a) * F.one_hot(y, self.num_classes).to(dtype) + a * self.predictions[idx].to(dtype)

    def loss(self, logits, y, batch, epoch, mix=None, idx=None):
        idx = _indices(batch, idx, logits.device)
        ce = cross_entropy(logits, self.targets(y, idx, epoch, loss_precision(logits).dtype), mix)
        return ce, ce, ce.new_zeros(())

    def after_step(self, batch, logits, idx=None):
        idx = _indices(batch, idx, logits.device)
        probs = F.softmax(loss_precision(logits).detach(), dim=1).to(self.predictions.dtype)
        # Every rank's rows, in rank order (this rank's alone in one process); the ranks' shares are disjoint.
        self.predictions[distributed.gather_rows(idx)] = distributed.gather_rows(probs)

    @property
    def nbytes(self):
        return self.predictions.numel() * self.predictions.element_size()

    def state_dict(self):
        return {"predictions": self.predictions.cpu()}

    def load_state_dict(self, state, device="cpu"):
        if state["predictions"].shape != self.predictions.shape:
            raise ConfigError(f"the PS-KD prediction table was saved with shape {tuple(state['predictions'].shape)}, "
                              f"this run has {tuple(self.predictions.shape)}")
        self.predictions = state["predictions"].to(device)


# The one registry of methods: config's METHODS names them (its rule refuses any other), this builds each from a
# validated TrainConfig and the (possibly noisy) training labels.
BUILDERS = {
    "baseline": lambda config, labels, num_classes: Method(),
    "dlb": lambda config, labels, num_classes: DLB(SoftTargetCache(), config.temperature, config.alpha,
                                                   config.carry_over),
    "label_smoothing": lambda config, labels, num_classes: LabelSmoothing(num_classes, config.ls_epsilon),
    "tf_kd": lambda config, labels, num_classes: TfKD(num_classes, config.tfkd_alpha, config.tfkd_temperature,
                                                     config.tfkd_correct_prob, config.tfkd_multiplier),
    "cs_kd": lambda config, labels, num_classes: CSKD(labels, config.cskd_temperature, config.cskd_lambda),
    "ps_kd": lambda config, labels, num_classes: PSKD(labels, num_classes, config.epochs, config.pskd_alpha_T),
}


def build_method(config, labels: torch.Tensor, num_classes: int) -> Method:
    """The method object for ``config.method`` (a validated TrainConfig); ``labels`` are the (possibly noisy)
    training labels."""
    return BUILDERS[config.method](config, labels, num_classes)
