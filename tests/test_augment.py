import pytest
import torch
import torch.nn.functional as F

from dlb_edu.augment import Augmenter, cutout, mix_batch, normalize, random_crop_flip
from dlb_edu.data import make_synthetic
from dlb_edu.errors import ConfigError
from dlb_edu.pairs import ClassPairBatch
from dlb_edu.sampling import Batch


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_random_crop_flip_is_a_shifted_padded_window_maybe_flipped():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1  # no zeros inside the image
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, padding=2, generator=g)
    g = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 5, (2, 2), generator=g)
    flips = torch.rand(2, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        oy, ox = offsets[0, i].item(), offsets[1, i].item()
        window = padded[i, :, oy:oy + 8, ox:ox + 8]
        expected = window.flip(2) if flips[i] else window
        assert torch.equal(out[i], expected)


def test_random_crop_flip_is_reproducible_and_varies():
    x = make_synthetic().x_train[:16]
    a = random_crop_flip(x, generator=torch.Generator().manual_seed(1))
    b = random_crop_flip(x, generator=torch.Generator().manual_seed(1))
    c = random_crop_flip(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.uint8


def test_normalize_standardizes_training_data():
    data = make_synthetic()
    z = normalize(data.x_train, data.mean, data.std)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)


def numbered_images(n, size=8):
    """Image i is filled with the value i + 1: a pixel tells which image it came from."""
    return (torch.arange(n, dtype=torch.float32) + 1).view(n, 1, 1, 1).expand(n, 3, size, size).clone()


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixed_label_weights_sum_to_one(kind):
    x = numbered_images(10)
    for seed in range(20):
        _, mix = mix_batch(x, kind, [4, 6], gen(seed), cutmix_prob=1.0)
        assert ((mix.lam >= 0) & (mix.lam <= 1)).all()
        targets = mix.targets(F.one_hot(torch.arange(10) % 3, 3).double())
        torch.testing.assert_close(targets.sum(1), torch.ones(10, dtype=torch.float64))


def test_mixup_image_is_the_lambda_combination_of_its_pair():
    x = torch.randn(6, 3, 8, 8, generator=gen(1))
    out, mix = mix_batch(x, "mixup", [6], gen(2))
    lam = mix.lam.float()[:, None, None, None]
    torch.testing.assert_close(out, lam * x + (1 - lam) * x[mix.perm])


def test_cutmix_lambda_is_the_area_kept():
    x = numbered_images(8, size=16)
    for seed in range(10):
        out, mix = mix_batch(x, "cutmix", [8], gen(seed), cutmix_prob=1.0)
        for i in range(8):
            own = (out[i, 0] == i + 1).double().mean().item()
            if mix.perm[i] != i:
                assert own == pytest.approx(mix.lam[i].item())
            else:
                assert own == 1.0


def test_cutmix_probability_zero_leaves_the_batch_unmixed():
    x = numbered_images(5)
    out, mix = mix_batch(x, "cutmix", [5], gen(0), cutmix_prob=0.0)
    assert torch.equal(out, x) and (mix.lam == 1).all() and torch.equal(mix.perm, torch.arange(5))


def test_dlb_halves_are_mixed_separately():
    x = numbered_images(8)
    batch = Batch([0, 1, 2], [3, 4, 5, 6, 7])
    _, mix = Augmenter("mixup")(x, batch, gen(4))
    assert set(mix.perm[:3].tolist()) == {0, 1, 2} and set(mix.perm[3:].tolist()) == {3, 4, 5, 6, 7}
    assert mix.lam[:3].unique().numel() == 1 and mix.lam[3:].unique().numel() == 1
    assert mix.lam[0] != mix.lam[3]  # each half has its own lambda


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_cs_kd_pairs_are_mixed_exactly_like_their_anchors(kind):
    x = numbered_images(8)
    batch = ClassPairBatch([10, 11, 12, 13], [0, 1, 2, 3])
    aug = Augmenter(kind, cutmix_prob=1.0)
    out, mix = aug(x, batch, gen(5))
    assert torch.equal(mix.perm[:4] + 4, mix.perm[4:]) and torch.equal(mix.lam[:4], mix.lam[4:])
    # Same box, same weights: pair k's mixed image is anchor k's with every source image number shifted by 4.
    torch.testing.assert_close(out[:4] + 4, out[4:])


def test_augmentation_is_a_function_of_the_step_generator():
    x = torch.randn(6, 3, 8, 8, generator=gen(0))
    batch = Batch([0, 1], [2, 3, 4, 5])
    for kind in ("cutout", "mixup", "cutmix"):
        aug = Augmenter(kind, cutout_size=4, cutmix_prob=1.0)
        a, b, c = aug(x, batch, gen(3))[0], aug(x, batch, gen(3))[0], aug(x, batch, gen(4))[0]
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_cutout_zeroes_one_clipped_square_per_image():
    x = torch.ones(50, 3, 16, 16)
    out = cutout(x, 8, gen(0))
    for img in out[:, 0]:
        rows, cols = (img == 0).nonzero(as_tuple=True)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert 4 <= h <= 8 and 4 <= w <= 8 and len(rows) == h * w  # a rectangle, at least the quarter inside
    assert (out == 0).any(dim=(1, 2, 3)).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="blur"), "augment"),
    (dict(kind="cutout", cutout_size=0), "cutout_size"),
    (dict(kind="mixup", mix_alpha=0.0), "mix_alpha"),
    (dict(kind="cutmix", cutmix_prob=1.5), "cutmix_prob"),
])
def test_bad_augment_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Augmenter(**kwargs)
