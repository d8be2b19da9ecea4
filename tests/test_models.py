import pytest
import torch

from dlb_edu.errors import ConfigError
from dlb_edu.models import ARCHS, PUBLISHED_PARAMS, build_model, count_parameters


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_output_shape(arch):
    model = build_model(arch, num_classes=100).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("arch", [a for a, p in PUBLISHED_PARAMS.items() if p is not None])
def test_parameter_count_matches_published(arch):
    millions = count_parameters(build_model(arch, 10)) / 1e6
    assert millions == pytest.approx(PUBLISHED_PARAMS[arch], rel=0.03)


def test_resnet32_parameter_count_exactly():
    # 0.46 M in He et al. (2016); option-A shortcuts add no parameters
    assert count_parameters(build_model("resnet32", 10)) == 464_154


def test_unknown_arch_is_refused():
    with pytest.raises(ConfigError, match="unknown arch 'resnet33'"):
        build_model("resnet33")
