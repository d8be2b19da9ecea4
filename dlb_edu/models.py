"""The networks DLB was measured on, as the authors' code defines them, plus a small CNN for CPUs.

Shen et al. (CVPR 2022, Sec. 4.1) evaluate DLB on VGG-16, ResNet-32, ResNet-110, WRN-20-8 and DenseNet-40-12. The
names here mean the networks of the authors' repository (github:Meta-knowledge-Lab/DLB, ``models/``), rebuilt from
a description of them so that every parameter count matches theirs exactly (``AUTHORS_PARAMS``, checked by the
tests). Those are not always the networks the names mean elsewhere: their ResNet-110 and WRN-20-8 use bottleneck
blocks, their DenseNet-40-12 is a DenseNet-BC, their ResNet-32 projects its shortcut (1x1 conv + BN) where the shape
changes. He et al.'s original CIFAR ResNet-32, whose shortcuts zero-pad instead ("option A"), is kept under its own
name, ``resnet32_option_a``: notebook 04 and ``tests/test_collapse.py`` use it to show what it does to DLB.

Initialization as theirs: Kaiming-normal convolutions (``fan_out``; DenseNet's ``fan_in``), BatchNorm weight 1 and
bias 0, PyTorch's default Linear layers except VGG's (N(0, 0.01), bias 0) and DenseNet's (bias 0).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ARCHS
from .errors import ConfigError

# Parameter counts of the authors' definitions at (10, 100) classes.
AUTHORS_PARAMS = {
    "resnet32": (466_906, 472_756),
    "resnet110": (1_147_738, 1_170_868),
    "wrn20_8": (6_848_090, 6_871_220),
    "densenet40_12": (176_122, 188_092),
    "vgg16": (15_253_578, 15_299_748),
}


def _init_conv_bn(module: nn.Module, mode: str = "fan_out") -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """The mean of each feature map, (N, C, H, W) -> (N, C, 1, 1).

    On CUDA an average pool whose kernel is the map itself, as the authors' DenseNet pools (``avg_pool2d(out, 8)``):
    its backward has a deterministic CUDA kernel, ``adaptive_avg_pool2d``'s has none (so ``--deterministic`` would
    stop there). Elsewhere ``adaptive_avg_pool2d``: on a CPU the two differ in the last bit of float32 (the order of
    the sums), and the CPU results in ``results/`` were computed with it."""
    return fixed_kernel_avg_pool(x) if x.is_cuda else F.adaptive_avg_pool2d(x, 1)


def fixed_kernel_avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=x.shape[-2:])


class GlobalAvgPool(nn.Module):
    """:func:`global_avg_pool` as a layer."""

    def forward(self, x):
        return global_avg_pool(x)


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out)]


# ---------------------------------------------------------------------------------------------------------------
# ResNets (He et al., 2016) as the authors build them: a 3x3 stem with 16 channels, three stages at 32x32, 16x16 and
# 8x8 with 16/32/64 "planes", and a projection shortcut (1x1 conv + BN) wherever a block changes the shape.
# Basic blocks output `planes` channels; bottleneck blocks (1x1, 3x3, 1x1) output 4 x planes, and their inner width
# is planes x width_per_group / 64: 64 for ResNet-110, 512 (eight times wider) for WRN-20-8.
# ---------------------------------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, width_per_group: int = 64):
        super().__init__()
        self.branch = nn.Sequential(*_conv_bn(c_in, planes, 3, stride), nn.ReLU(inplace=True),
                                    *_conv_bn(planes, planes, 3))
        self.shortcut = (nn.Sequential(*_conv_bn(c_in, planes, 1, stride))
                         if stride != 1 or c_in != planes else nn.Identity())

    def forward(self, x):
        return F.relu(self.branch(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, width_per_group: int = 64):
        super().__init__()
        width, c_out = planes * width_per_group // 64, planes * self.expansion
        self.branch = nn.Sequential(*_conv_bn(c_in, width, 1), nn.ReLU(inplace=True),
                                    *_conv_bn(width, width, 3, stride), nn.ReLU(inplace=True),
                                    *_conv_bn(width, c_out, 1))
        self.shortcut = (nn.Sequential(*_conv_bn(c_in, c_out, 1, stride))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        return F.relu(self.branch(x) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, block: type, blocks_per_stage: int, num_classes: int = 10, width_per_group: int = 64):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 16, 3), nn.ReLU(inplace=True))
        layers, c_in = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks_per_stage):
                layers.append(block(c_in, planes, stride if i == 0 else 1, width_per_group))
                c_in = planes * block.expansion
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)
        _init_conv_bn(self)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(global_avg_pool(x), 1))


# ---------------------------------------------------------------------------------------------------------------
# He et al.'s own CIFAR ResNet (2016, Sec. 4.2): the same stages, but the shortcut subsamples and zero-pads the new
# channels ("option A"), so it adds no parameters and no BatchNorm: the residual stream is never renormalized.
# ---------------------------------------------------------------------------------------------------------------

class OptionABlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.branch = nn.Sequential(*_conv_bn(c_in, c_out, 3, stride), nn.ReLU(inplace=True),
                                    *_conv_bn(c_out, c_out, 3))
        self.stride, self.pad = stride, c_out - c_in

    def shortcut(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2)) if self.pad else x

    def forward(self, x):
        return F.relu(self.branch(x) + self.shortcut(x))


class OptionAResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        n = (depth - 2) // 6
        self.stem = nn.Sequential(*_conv_bn(3, 16, 3), nn.ReLU(inplace=True))
        layers, c_in = [], 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(OptionABlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        _init_conv_bn(self)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(global_avg_pool(x), 1))


# ---------------------------------------------------------------------------------------------------------------
# DenseNet-BC (Huang et al., 2017) as the authors build DenseNet-40-12: a 3x3 stem with 24 channels, three dense
# blocks of 6 layers (BN-ReLU-1x1 conv to 4k, BN-ReLU-3x3 conv to k = 12, concatenated), transitions that halve the
# channels (BN-ReLU-1x1 conv, 2x2 average pool), a final BN-ReLU and a linear classifier.
# ---------------------------------------------------------------------------------------------------------------

class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int, bottleneck: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=True),
                                  nn.Conv2d(c_in, bottleneck * growth, 1, bias=False),
                                  nn.BatchNorm2d(bottleneck * growth), nn.ReLU(inplace=True),
                                  nn.Conv2d(bottleneck * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


class DenseNetBC(nn.Module):
    def __init__(self, layers_per_block: int = 6, growth: int = 12, num_classes: int = 10, c_init: int = 24,
                 compression: float = 0.5):
        super().__init__()
        c = c_init
        parts: list[nn.Module] = [nn.Conv2d(3, c, 3, 1, 1, bias=False)]
        for b in range(3):
            for _ in range(layers_per_block):
                parts.append(DenseLayer(c, growth))
                c += growth
            if b < 2:
                c_out = int(c * compression)
                parts += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c_out, 1, bias=False),
                          nn.AvgPool2d(2)]
                c = c_out
        parts += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*parts)
        self.fc = nn.Linear(c, num_classes)
        _init_conv_bn(self, mode="fan_in")
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        return self.fc(torch.flatten(global_avg_pool(self.features(x)), 1))


# ---------------------------------------------------------------------------------------------------------------
# VGG-16 (Simonyan & Zisserman, 2015, configuration D) as the authors build it for 32x32 inputs: 13 convolutions
# with bias, each followed by BN and ReLU, five 2x2 max pools (leaving 512 x 1 x 1), and a 512-512-512-K classifier.
# ---------------------------------------------------------------------------------------------------------------

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, cfg=VGG16_CFG, num_classes: int = 10):
        super().__init__()
        layers, c_in = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c_in, v, 3, 1, 1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c_in = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(c_in, 512), nn.ReLU(inplace=True), nn.Linear(512, 512),
                                        nn.ReLU(inplace=True), nn.Linear(512, num_classes))
        _init_conv_bn(self)
        for m in self.classifier:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


# ---------------------------------------------------------------------------------------------------------------
# A small CNN that trains in seconds per epoch on a laptop CPU: for demos, notebooks and tests (ours).
# ---------------------------------------------------------------------------------------------------------------

def small_cnn(num_classes: int = 10) -> nn.Module:
    def block(c_in, c_out):
        return [*_conv_bn(c_in, c_out, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    return nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), GlobalAvgPool(), nn.Flatten(),
                         nn.Linear(128, num_classes))


ARCHS.update({  # the registry that config's arch rule reads
    "resnet32": lambda num_classes: ResNet(BasicBlock, 5, num_classes),
    "resnet110": lambda num_classes: ResNet(Bottleneck, 12, num_classes),
    "wrn20_8": lambda num_classes: ResNet(Bottleneck, 2, num_classes, width_per_group=512),
    "densenet40_12": lambda num_classes: DenseNetBC(6, 12, num_classes),
    "vgg16": lambda num_classes: VGG(VGG16_CFG, num_classes),
    "resnet32_option_a": lambda num_classes: OptionAResNet(32, num_classes),
    "small_cnn": small_cnn,
})

# The image sides each network accepts. VGG-16's five 2x2 max pools must leave a 1x1 map for its 512-wide classifier
# (sides 32 to 63); small_cnn's three pools need 8; the others end in global pooling after two stride-2 stages.
MIN_IMAGE_SIZE = {"vgg16": 32, "small_cnn": 8, "resnet32": 4, "resnet110": 4, "wrn20_8": 4, "densenet40_12": 4,
                  "resnet32_option_a": 4}
MAX_IMAGE_SIZE = {"vgg16": 63}


def build_model(arch: str, num_classes: int = 10) -> nn.Module:
    """A fresh model by name; see ``ARCHS``."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHS)}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return ARCHS[arch](num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors one training-mode forward pass of ``x`` saves for backward: the activations autograd
    keeps until the backward pass, parameters excluded, each storage counted once. Measured on a copy of ``model``,
    so its BatchNorm statistics stay as they were."""
    net = copy.deepcopy(model).train()
    weights = {p.data_ptr() for p in net.parameters()}
    saved: dict[int, int] = {}

    def keep(tensor):  # autograd calls it for every tensor it saves for backward
        if tensor.data_ptr() not in weights:
            saved[tensor.data_ptr()] = max(saved.get(tensor.data_ptr(), 0), tensor.numel() * tensor.element_size())
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        net(x)
    return sum(saved.values())
