"""The paper's CIFAR architectures, written from their published descriptions, plus a small CNN for CPUs.

DLB is evaluated (Shen et al., CVPR 2022, Sec. 4.1) on VGG-16, ResNet-32, ResNet-110, WRN-20-8 and DenseNet-40-12.
Parameter counts for 10 classes, beside the published ones (``PUBLISHED_PARAMS``), are checked by the tests.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConfigError

# Published parameter counts (millions) for the CIFAR-10 versions.
PUBLISHED_PARAMS = {
    "resnet32": 0.46,       # He et al., 2016, Table 6
    "resnet110": 1.7,       # He et al., 2016, Table 6
    "densenet40_12": 1.0,   # Huang et al., 2017, Table 2 (DenseNet, L=40, k=12)
    "vgg16": 14.7,          # VGG-16 with BatchNorm and one linear classifier, the usual CIFAR variant
    "wrn20_8": None,        # no count published with the paper; ours: 3 wide blocks per stage, widths 128/256/512
}


# ---------------------------------------------------------------------------------------------------------------
# ResNet for CIFAR (He et al., 2016, Sec. 4.2): 3 stages of n basic blocks, 16/32/64 channels, depth 6n+2,
# identity shortcuts with zero-padded channels ("option A") so the shortcut adds no parameters.
# ---------------------------------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def shortcut(self, x):
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        assert (depth - 2) % 6 == 0, "CIFAR ResNet depth is 6n+2"
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        layers, c_in = [], 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(BasicBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------------------------------------------------------
# Wide ResNet (Zagoruyko & Komodakis, 2016): pre-activation wide basic blocks, widths 16k/32k/64k. WRN-20-8 as used
# by the DLB paper has 3 blocks per stage (depth 6n+2 counting the stem and classifier).
# ---------------------------------------------------------------------------------------------------------------

class WideBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride, bias=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(o))))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int = 10):
        super().__init__()
        assert (depth - 2) % 6 == 0, "this WRN depth counts 6n+2 layers"
        n = (depth - 2) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        layers, c_in = [], 16
        for c_out, stride in zip(widths, (1, 2, 2)):
            for i in range(n):
                layers.append(WideBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = F.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------------------------------------------------------
# DenseNet (Huang et al., 2017) for CIFAR, the basic version: 3 dense blocks of (L-4)/3 layers (BN-ReLU-Conv3x3,
# growth rate k, each layer sees all earlier feature maps), transitions BN-ReLU-Conv1x1-AvgPool without compression.
# ---------------------------------------------------------------------------------------------------------------

class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.conv = nn.Conv2d(c_in, growth, 3, 1, 1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class DenseNet(nn.Module):
    def __init__(self, depth: int = 40, growth: int = 12, num_classes: int = 10):
        super().__init__()
        n = (depth - 4) // 3
        c = 16  # the basic (non-bottleneck) CIFAR DenseNet's first convolution has 16 channels
        blocks = [nn.Conv2d(3, c, 3, 1, 1, bias=False)]
        for b in range(3):
            for _ in range(n):
                blocks.append(DenseLayer(c, growth))
                c += growth
            if b < 2:
                blocks += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c, 1, bias=False), nn.AvgPool2d(2)]
        blocks += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# ---------------------------------------------------------------------------------------------------------------
# VGG-16 for CIFAR (Simonyan & Zisserman, 2015, configuration D) with BatchNorm; 32x32 inputs leave a 1x1x512 map,
# so one linear layer classifies.
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
                layers += [nn.Conv2d(c_in, v, 3, 1, 1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c_in = v
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# ---------------------------------------------------------------------------------------------------------------
# A small CNN that trains in seconds per epoch on a laptop CPU: for demos, notebooks and tests.
# ---------------------------------------------------------------------------------------------------------------

def small_cnn(num_classes: int = 10) -> nn.Module:
    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                nn.MaxPool2d(2)]
    return nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(128, num_classes))


ARCHS = {
    "resnet32": lambda num_classes: CifarResNet(32, num_classes),
    "resnet110": lambda num_classes: CifarResNet(110, num_classes),
    "vgg16": lambda num_classes: VGG(VGG16_CFG, num_classes),
    "wrn20_8": lambda num_classes: WideResNet(20, 8, num_classes),
    "densenet40_12": lambda num_classes: DenseNet(40, 12, num_classes),
    "small_cnn": small_cnn,
}


def build_model(arch: str, num_classes: int = 10) -> nn.Module:
    """A fresh model by name; see ``ARCHS``."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHS)}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return ARCHS[arch](num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
