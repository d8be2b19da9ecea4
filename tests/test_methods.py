"""The methods DLB is compared with: losses against float64 hand-written formulas, CS-KD's pairs through their
invariants, a short run of each method and option that learns, and exact resumption."""
import dataclasses
import math
import warnings
from collections import Counter

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dlb_edu.augment import Mix
from dlb_edu.cache import SoftTargetCache
from dlb_edu.config import METHODS
from dlb_edu.data import CIFAR10_CLASSES, make_synthetic
from dlb_edu.errors import ConfigError
from dlb_edu.losses import dlb_loss
from dlb_edu.methods import BUILDERS, CSKD, DLB, PSKD, LabelSmoothing, Method, TfKD, cross_entropy
from dlb_edu.pairs import ClassPairBatch, ClassPairBatchSampler
from dlb_edu.sampling import Batch, PlainBatchSampler
from dlb_edu.config import TrainConfig
from dlb_edu.train import Trainer
from resume_checks import assert_same_weights, interrupted_then_resumed

# ---------------------------------------------------------------------------------------------------------------
# Hand-written references: plain Python floats (double precision), one sample at a time.
# ---------------------------------------------------------------------------------------------------------------


def softmax(row, T=1.0):
    z = sum(math.exp(v / T) for v in row)
    return [math.exp(v / T) / z for v in row]


def ce(row, target):
    """-sum_k t_k log p_k."""
    return -sum(t * math.log(p) for t, p in zip(target, softmax(row)))


def kl(p, q):
    """KL(p || q) = sum_k p_k log(p_k / q_k)."""
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def one_hot(c, k):
    return [1.0 if j == c else 0.0 for j in range(k)]


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


def rand_logits(n, k, seed, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, k, generator=g, dtype=torch.float64) * 2).requires_grad_(requires_grad)


def rand_labels(n, k, seed):
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------

def test_label_smoothing_loss_matches_hand_computed_reference():
    logits, y, k, eps = rand_logits(5, 7, 0), rand_labels(5, 7, 1), 7, 0.1
    loss, ce_, reg = LabelSmoothing(k, eps).loss(logits, y, Batch([], list(range(5))), epoch=0)
    expected = mean(ce(row, [(1 - eps) * t + eps / k for t in one_hot(c, k)])
                    for row, c in zip(logits.tolist(), y.tolist()))
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert reg.item() == 0.0
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, y, label_smoothing=eps).item())


def test_tf_kd_loss_matches_hand_computed_reference():
    logits, y, k = rand_logits(6, 5, 2), rand_labels(6, 5, 3), 5
    alpha, T, a, m = 0.3, 4.0, 0.9, 7.0
    loss, ce_, reg = TfKD(k, alpha, T, a, m).loss(logits, y, Batch([], list(range(6))), epoch=0)
    terms = []
    for row, c in zip(logits.tolist(), y.tolist()):
        p_d = [a if j == c else (1 - a) / (k - 1) for j in range(k)]
        teacher = softmax(p_d, T)  # the virtual teacher's distribution, softened like logits
        terms.append((1 - alpha) * ce(row, one_hot(c, k)) + alpha * m / k * kl(teacher, softmax(row)))
    assert loss.item() == pytest.approx(mean(terms), rel=1e-12)
    assert reg.item() == pytest.approx(mean(kl(softmax([a if j == c else (1 - a) / (k - 1) for j in range(k)], T),
                                               softmax(row)) for row, c in zip(logits.tolist(), y.tolist())))


def authors_tf_kd_reg(outputs, labels, reg_alpha, reg_temperature, multiplier, correct_prob):
    """``loss_kd_regularization`` (github:yuanli2333/Teacher-free-Knowledge-Distillation, my_loss_function.py:33-51),
    transcribed on the CPU; their correct_prob is the constant 0.99, a parameter here."""
    loss_ce = F.cross_entropy(outputs, labels)
    k = outputs.size(1)
    teacher_soft = torch.ones_like(outputs) * (1 - correct_prob) / (k - 1)
    for i in range(outputs.shape[0]):
        teacher_soft[i, labels[i]] = correct_prob
    with warnings.catch_warnings():  # torch warns that reduction "mean" averages over the classes too: that is theirs
        warnings.simplefilter("ignore", UserWarning)
        soft = nn.KLDivLoss()(F.log_softmax(outputs, dim=1), F.softmax(teacher_soft / reg_temperature, dim=1))
    return (1. - reg_alpha) * loss_ce + reg_alpha * soft * multiplier


@pytest.mark.parametrize("k,multiplier", [(100, 100.0), (10, 100.0), (10, 10.0)])
def test_tf_kd_loss_is_the_authors_for_their_multiplier(k, multiplier):
    logits, y = rand_logits(16, k, 13), rand_labels(16, k, 14)
    ours, _, _ = TfKD(k, 0.1, 20.0, 0.99, multiplier).loss(logits, y, Batch([], list(range(16))), epoch=0)
    theirs = authors_tf_kd_reg(logits, y, 0.1, 20.0, multiplier, 0.99)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    # Their KL weight per sample is multiplier / K: ours before tfkd_multiplier existed (weight 1) only when m = K.
    weight_one = TfKD(k, 0.1, 20.0, 0.99, float(k)).loss(logits, y, Batch([], list(range(16))), epoch=0)[0]
    assert (abs(weight_one.item() - theirs.item()) < 1e-12) == (multiplier == k)


def test_tf_kd_multiplier_defaults_to_the_authors_resnet18_cifar100_config():
    assert TrainConfig().tfkd_multiplier == 100.0


def test_tf_kd_virtual_teacher_at_paper_settings_is_almost_uniform():
    t = TfKD(10).teacher(torch.tensor([3]))[0]
    assert t[3].item() == pytest.approx(math.exp(0.99 / 20) / (math.exp(0.99 / 20) + 9 * math.exp(0.01 / 9 / 20)))
    assert 0.10 < t[3].item() < 0.11 and (t[torch.arange(10) != 3] < 0.1).all()


def test_cs_kd_loss_matches_reference_and_sends_no_gradient_to_the_pairs():
    k, T, lam = 6, 4.0, 1.5
    logits = rand_logits(8, k, 4, requires_grad=True)
    y = rand_labels(4, k, 5).repeat(2)  # pair i has anchor i's label
    batch = ClassPairBatch([0, 1, 2, 3], [10, 11, 12, 13])  # four anchors first, then their four pairs
    loss, ce_, reg = CSKD(torch.zeros(20, dtype=torch.long), T, lam).loss(logits, y, batch, epoch=0)
    rows = logits.tolist()
    expected = mean(ce(rows[i], one_hot(y[i].item(), k))
                    + lam * T * T * kl(softmax(rows[4 + i], T), softmax(rows[i], T)) for i in range(4))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert (logits.grad[4:] == 0).all() and (logits.grad[:4] != 0).any()


def test_cs_kd_split_forwards_anchors_with_gradient_then_pairs_without():
    batch = ClassPairBatch([0, 1, 2], [5, 6, 7])
    method = CSKD(torch.zeros(8, dtype=torch.long))
    assert method.forward_calls(batch, "split") == [(slice(0, 3), True), (slice(3, 6), False)]
    assert method.forward_calls(batch, "joint") == [(slice(0, 6), True)]


def test_ps_kd_targets_mix_labels_with_last_epoch_predictions():
    k, epochs = 4, 5
    labels = rand_labels(10, k, 6)
    method = PSKD(labels, k, epochs, alpha_T=0.8)
    batch = Batch([], [7, 2, 5])
    y = labels[batch]
    first = rand_logits(3, k, 7)
    # Epoch 0: the target is the one-hot label, whatever alpha_0 is.
    loss0, _, _ = method.loss(first, y, batch, epoch=0)
    assert loss0.item() == pytest.approx(mean(ce(r, one_hot(c, k)) for r, c in zip(first.tolist(), y.tolist())))
    method.after_step(batch, first)
    # Epoch 2 (the third of five): alpha_t = 0.8 * 3 / 5, the previous predictions are softmax(first).
    now = rand_logits(3, k, 8)
    loss2, _, _ = method.loss(now, y, batch, epoch=2)
    a = 0.8 * 3 / 5
    expected = mean(ce(r, [(1 - a) * t + a * p for t, p in zip(one_hot(c, k), softmax(prev))])
                    for r, c, prev in zip(now.tolist(), y.tolist(), first.tolist()))
    assert loss2.item() == pytest.approx(expected, rel=1e-6)  # the table is float32
    assert method.alpha_t(epochs - 1) == pytest.approx(0.8) and method.alpha_t(0) == pytest.approx(0.8 / epochs)


def test_ps_kd_reads_and_writes_the_rows_of_the_index_tensor_it_is_given():
    # The trainer passes its one device copy of the batch's indices; without it the method makes the same tensor.
    k, labels = 4, rand_labels(10, 4, 6)
    given, made = PSKD(labels, k, 5), PSKD(labels, k, 5)
    batch, logits = Batch([], [7, 2, 5]), rand_logits(3, k, 7)
    for epoch in (0, 1):
        with_idx = given.loss(logits, labels[batch], batch, epoch, None, torch.tensor(batch))
        without = made.loss(logits, labels[batch], batch, epoch)
        assert all(torch.equal(a, b) for a, b in zip(with_idx, without))
        given.after_step(batch, logits, torch.tensor(batch))
        made.after_step(batch, logits)
        assert torch.equal(given.predictions, made.predictions)
    other = PSKD(labels, k, 5)
    other.after_step(batch, logits, torch.tensor([0, 1, 3]))  # the tensor decides which rows are written
    assert torch.equal(other.predictions[[0, 1, 3]], torch.softmax(logits, 1).float())
    assert torch.equal(other.predictions[[7, 2, 5]], F.one_hot(labels[[7, 2, 5]], k).float())


def test_dlb_method_is_dlb_loss_bit_for_bit():
    g = torch.Generator().manual_seed(9)
    logits, y, cached = torch.randn(8, 10, generator=g), torch.randint(0, 10, (8,), generator=g), torch.randn(4, 10)
    cache = SoftTargetCache()
    cache.put([0, 1, 2, 3], cached)
    got = DLB(cache, 3.0, 0.7).loss(logits, y, Batch([0, 1, 2, 3], [4, 5, 6, 7]), epoch=0)
    for a, b in zip(got, dlb_loss(logits, y, cached, 3.0, 0.7)):
        assert torch.equal(a, b)


def test_mixed_cross_entropy_is_the_lambda_weighted_cross_entropy():
    logits, y = rand_logits(5, 4, 10), rand_labels(5, 4, 11)
    mix = Mix(torch.tensor([3, 0, 4, 1, 2]), torch.tensor([0.7, 0.7, 0.2, 0.2, 1.0], dtype=torch.float64))
    rows, lam, perm = logits.tolist(), mix.lam.tolist(), mix.perm.tolist()
    expected = mean(lam[i] * ce(rows[i], one_hot(y[i].item(), 4))
                    + (1 - lam[i]) * ce(rows[i], one_hot(y[perm[i]].item(), 4)) for i in range(5))
    assert cross_entropy(logits, y, mix).item() == pytest.approx(expected, rel=1e-12)
    # and DLB with a mixed batch: that cross-entropy plus the (unmixed) consistency term on the repeated rows
    cache = SoftTargetCache()
    cache.put([9, 8], rand_logits(2, 4, 12))
    loss, ce_, kd = DLB(cache, 3.0, 1.0).loss(logits, y, Batch([9, 8], [0, 1, 2]), 0, mix)
    cached = cache.get().tolist()
    expected_kd = mean(9 * kl(softmax(cached[i], 3.0), softmax(rows[i], 3.0)) for i in range(2))
    assert ce_.item() == pytest.approx(expected, rel=1e-12) and kd.item() == pytest.approx(expected_kd, rel=1e-6)


@pytest.mark.parametrize("field,value", [("ls_epsilon", 1.2), ("tfkd_alpha", -0.1), ("tfkd_correct_prob", 0.0),
                                         ("tfkd_correct_prob", 0.3), ("tfkd_temperature", 0.0),
                                         ("tfkd_multiplier", -1.0), ("cskd_temperature", -1.0),
                                         ("cskd_lambda", -1.0), ("pskd_alpha_T", 1.5),
                                         ("method", "mixup")])
def test_bad_method_settings_are_refused_with_their_name(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value}).validate()


# ---------------------------------------------------------------------------------------------------------------
# CS-KD's class pairs
# ---------------------------------------------------------------------------------------------------------------

def test_class_pairs_share_their_anchors_class_and_anchors_are_the_plain_stream():
    labels = torch.tensor([0, 1, 2, 0, 1, 0, 1, 3, 0, 1, 2, 0])  # class 3 has one sample
    s = ClassPairBatchSampler(12, 4, labels=labels, seed=2)
    plain = PlainBatchSampler(12, 4, seed=2)
    for _ in range(3):
        for batch, ref in zip(list(s), list(plain)):
            assert batch.anchors == ref.fresh and len(batch.pairs) == len(batch.anchors)
            assert list(batch) == batch.anchors + batch.pairs  # the authors' order: anchors, then pairs
            for a, p in zip(batch.anchors, batch.pairs):
                assert labels[p] == labels[a]
                assert p != a or a == 7 or labels[a] != 3  # the lone sample of class 3 is always its own pair
            assert all(p == 7 for a, p in zip(batch.anchors, batch.pairs) if a == 7)


def test_class_pairs_are_drawn_uniformly_from_the_whole_class_as_the_authors():
    # random.choice(classwise_indices[y]) (alinlab/cs-kd, datasets.py:29): the anchor itself is one of the choices.
    labels = torch.tensor([0] * 4 + [1] * 4)
    s = ClassPairBatchSampler(8, 8, labels=labels, seed=0)
    partners = Counter(p for _ in range(800) for b in s for a, p in zip(b.anchors, b.pairs) if a == 0)
    assert set(partners) == {0, 1, 2, 3}
    assert all(abs(c / 800 - 1 / 4) < 0.06 for c in partners.values())


def test_class_pair_sampler_resumes_mid_epoch_exactly():
    labels = torch.arange(30) % 3
    full = ClassPairBatchSampler(30, 4, labels=labels, seed=5)
    expected = [list(b) for b in full] + [list(b) for b in full]
    s = ClassPairBatchSampler(30, 4, labels=labels, seed=5)
    it = iter(s)
    got = [list(next(it)) for _ in range(3)]
    resumed = ClassPairBatchSampler(30, 4, labels=labels, seed=5)
    resumed.load_state_dict(s.state_dict())
    got += [list(b) for b in resumed] + [list(b) for b in resumed]
    assert got == expected


# ---------------------------------------------------------------------------------------------------------------
# Short runs: every method and option learns; ps_kd and cs_kd resume to the bit
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    # 16x16 images and 256 samples: 8 steps of 32 per epoch, a fraction of a second per run on two CPU cores.
    # CIFAR-10's class names, so that the asymmetric noise (defined by names) applies to it too.
    return dataclasses.replace(make_synthetic(n_train=256, n_test=200, size=16), classes=CIFAR10_CLASSES)


def short_config(**kw):
    base = dict(dataset="synthetic", arch="small_cnn", epochs=2, batch_size=32, probe_size=20, cutout_size=8)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("options", [
    *[dict(method=m) for m in METHODS],
    dict(method="cs_kd", forward="split"),
    *[dict(method="dlb", augment=a) for a in ("cutout", "mixup", "cutmix")],
    dict(method="baseline", augment="mixup"),
    dict(method="cs_kd", augment="cutmix"),
    dict(method="ps_kd", augment="mixup"),
    dict(method="dlb", label_noise=0.2),
    dict(method="cs_kd", label_noise=0.2, label_noise_type="symmetric"),
    dict(method="ps_kd", label_noise=0.2, label_noise_type="asymmetric"),
], ids=lambda o: "-".join(str(v) for v in o.values()))
def test_smoke_every_method_and_option_trains_and_learns(tiny, options):
    trainer = Trainer(short_config(**options), data=tiny, progress=False)
    trainer.run()
    assert trainer.history[-1]["test_acc"] > 0.35  # chance is 0.1
    assert all(math.isfinite(v) for v in trainer.history[-1].values())


@pytest.mark.parametrize("options", [dict(method="ps_kd"), dict(method="cs_kd"), dict(method="cs_kd", forward="split"),
                                     dict(method="dlb", augment="cutmix", label_noise=0.2)],
                         ids=["ps_kd", "cs_kd", "cs_kd-split", "dlb-cutmix-noise"])
def test_resume_mid_epoch_gives_bitwise_identical_weights(tiny, tmp_path, options):
    config = short_config(checkpoint_every=2, **options)
    # checkpoint_every may differ on resume (it changes nothing computed).
    uninterrupted = Trainer(dataclasses.replace(config, checkpoint_every=0), data=tiny, progress=False)
    uninterrupted.run()
    resumed = interrupted_then_resumed(config, tiny, tmp_path / "run", stop_after_steps=8 + 5)
    assert_same_weights(uninterrupted.model.state_dict(), resumed.model.state_dict())
    if options["method"] == "ps_kd":
        assert torch.equal(uninterrupted.method.predictions, resumed.method.predictions)
        saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
        assert saved["ranks"][0]["method"]["predictions"].shape == (256, 10)
    assert [r["test_acc"] for r in uninterrupted.history] == [r["test_acc"] for r in resumed.history]


# ---------------------------------------------------------------------------------------------------------------
# The rivals' own recipes (presets)
# ---------------------------------------------------------------------------------------------------------------

def cs_kd_authors_lr(epochs=200, lr=0.1):
    """The lr of each epoch in alinlab/cs-kd's loop (train.py:216-231): set *after* each epoch from its index."""
    lrs, current = [], lr
    for epoch in range(epochs):
        lrs.append(current)  # train(epoch) runs at the lr the previous adjust_learning_rate set
        current = lr / 10 if epoch >= 0.5 * epochs else lr
        current = current / 10 if epoch >= 0.75 * epochs else current
    return lrs


def ps_kd_authors_lr(epochs=300, lr=0.1, schedule=(150, 225), rate=0.1):
    """The lr of each epoch in lgcnsai/PS-KD-Pytorch's loop (main.py:105-112, 315): set before each epoch."""
    lrs = []
    for epoch in range(epochs):
        current = lr
        for milestone in schedule:
            current *= rate if epoch >= milestone else 1.
        lrs.append(current)
    return lrs


@pytest.mark.parametrize("preset,authors_lr", [("cs_kd_authors", cs_kd_authors_lr),
                                               ("ps_kd_authors", ps_kd_authors_lr)])
def test_authors_presets_follow_their_learning_rate_schedule_epoch_by_epoch(preset, authors_lr):
    cfg = TrainConfig.from_preset(preset)
    ours = [cfg.lr_at(e) for e in range(cfg.epochs)]
    assert ours == pytest.approx(authors_lr(), rel=1e-12)
    assert cfg.method == preset.removesuffix("_authors")


def test_authors_presets_take_their_optimizer_batch_and_step():
    cs, ps = TrainConfig.from_preset("cs_kd_authors"), TrainConfig.from_preset("ps_kd_authors")
    assert (cs.lr, cs.nesterov, cs.weight_decay, cs.batch_size, cs.epochs, cs.forward) == (0.1, False, 1e-4, 128, 200,
                                                                                           "split")
    assert (cs.cskd_temperature, cs.cskd_lambda) == (4.0, 1.0)
    assert (ps.lr, ps.nesterov, ps.weight_decay, ps.batch_size, ps.epochs, ps.pskd_alpha_T) == (0.1, True, 5e-4, 128,
                                                                                                300, 0.8)


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def test_cli_flags_reach_the_config():
    from dlb_edu.cli import build_parser, config_from_args
    args = build_parser().parse_args(
        ["train", "--method", "ps_kd", "--pskd-alpha-T", "0.6", "--ls-epsilon", "0.2", "--tfkd-alpha", "0.5",
         "--tfkd-temperature", "10", "--tfkd-correct-prob", "0.9", "--tfkd-multiplier", "10", "--cskd-temperature",
         "3", "--cskd-lambda", "2",
         "--label-noise", "0.4", "--label-noise-type", "asymmetric", "--augment", "cutmix", "--cutout-size", "8",
         "--mix-alpha", "0.5", "--cutmix-prob", "1"])
    cfg = config_from_args(args)
    assert (cfg.method, cfg.pskd_alpha_T, cfg.ls_epsilon, cfg.tfkd_alpha, cfg.tfkd_temperature) == \
        ("ps_kd", 0.6, 0.2, 0.5, 10.0)
    assert (cfg.tfkd_correct_prob, cfg.tfkd_multiplier, cfg.cskd_temperature, cfg.cskd_lambda) == (0.9, 10.0, 3.0, 2.0)
    assert (cfg.label_noise, cfg.label_noise_type, cfg.augment, cfg.cutout_size, cfg.mix_alpha, cfg.cutmix_prob) == \
        (0.4, "asymmetric", "cutmix", 8, 0.5, 1.0)


@pytest.mark.parametrize("argv,match", [
    (["train", "--method", "mixup"], "method"),
    (["train", "--augment", "blur"], "augment"),
    (["train", "--label-noise", "1.5"], "label_noise"),
    (["train", "--dataset", "synthetic", "--label-noise", "0.2", "--label-noise-type", "asymmetric"], "asymmetric"),
    (["compare", "--methods", "baseline,lsr"], "--methods"),
])
def test_cli_refuses_bad_values_with_one_line(capsys, argv, match):
    from dlb_edu.cli import main
    assert main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err


def test_cli_compare_runs_the_chosen_methods(tmp_path, capsys):
    from dlb_edu.cli import main
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "label_smoothing,ps_kd", "--dataset", "synthetic", "--epochs", "1",
                 "--train-subset", "64", "--test-subset", "32", "--batch-size", "32", "--label-noise", "0.25",
                 "--out", str(out), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "label_smoothing" in table and "ps_kd" in table
    assert (out / "ps_kd" / "history.csv").exists() and (out / "curves.png").exists()


def test_one_registry_builds_every_method_the_config_names():
    assert tuple(BUILDERS) == METHODS
    data = make_synthetic(n_train=64, n_test=32, size=8)
    for name in METHODS:
        method = BUILDERS[name](TrainConfig(method=name), data.y_train, 10)
        assert isinstance(method, {"baseline": Method, "dlb": DLB, "label_smoothing": LabelSmoothing, "tf_kd": TfKD,
                                   "cs_kd": CSKD, "ps_kd": PSKD}[name])
