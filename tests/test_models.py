import pytest
import torch

from dlb_edu.errors import ConfigError
from dlb_edu.models import ARCHS, AUTHORS_PARAMS, build_model, count_parameters


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_output_shape(arch):
    model = build_model(arch, num_classes=100).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("arch", sorted(AUTHORS_PARAMS))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_parameter_count_equals_the_authors_network(arch, num_classes):
    # Counted on the authors' models/ (github:Meta-knowledge-Lab/DLB) at 10 and 100 classes.
    expected = AUTHORS_PARAMS[arch][0 if num_classes == 10 else 1]
    assert count_parameters(build_model(arch, num_classes)) == expected


def test_option_a_resnet32_is_he_et_al_with_parameter_free_shortcuts():
    # He et al. (2016), Sec. 4.2: 0.46 M; zero-padded shortcuts, so 1x1 projections' 2,752 parameters are absent
    assert count_parameters(build_model("resnet32_option_a", 10)) == 464_154
    assert 466_906 - 464_154 == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_resnet_shortcut_projects_only_where_the_shape_changes():
    model = build_model("resnet32", 10)
    projections = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [(p.in_channels, p.out_channels, p.stride) for p in projections] == [(16, 32, (2, 2)), (32, 64, (2, 2))]


@torch.no_grad()
def test_authors_initialization():
    torch.manual_seed(0)
    vgg = build_model("vgg16", 10)
    linears = [m for m in vgg.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 and all(float(m.bias.abs().max()) == 0 for m in linears)
    assert float(linears[1].weight.std()) == pytest.approx(0.01, rel=0.05)
    conv = next(m for m in build_model("resnet32", 10).modules() if isinstance(m, torch.nn.Conv2d))
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert float(conv.weight.std()) == pytest.approx((2 / fan_out) ** 0.5, rel=0.15)
    bns = [m for m in build_model("densenet40_12", 10).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bool((m.weight == 1).all()) and bool((m.bias == 0).all()) for m in bns)


def test_unknown_arch_is_refused():
    with pytest.raises(ConfigError, match="unknown arch 'resnet33'"):
        build_model("resnet33")
