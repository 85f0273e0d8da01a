"""Backbones the models plug in: a compact conv encoder-decoder (the default) and, when
torchvision is installed, a randomly initialised ResNet-18 encoder under the same decoder.

A backbone maps images (B, in_channels, H, W) to features (B, channels, H, W) at the input's
resolution (`forward`), and exposes its coarsest features (`encode` -> list, finest first;
`bottleneck_channels`) for the models that act there (co-segmentation's mutual gating).
GroupNorm, never BatchNorm: a step's result must not depend on how the batch is split between
DDP processes (see :doc:`/guide/models`), and GroupNorm's statistics are per image.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
    )


class _Decoder(nn.Module):
    """U-Net decoder: from the coarsest level up, upsample (bilinear), concatenate the skip,
    a conv block; `levels` returns every level's output (coarsest first) for multi-scale heads."""

    def __init__(self, skip_channels: list[int]):
        super().__init__()
        self.ups = nn.ModuleList()
        cin = skip_channels[-1]
        for skip in reversed(skip_channels[:-1]):
            self.ups.append(_block(cin + skip, skip))
            cin = skip
        self.level_channels = [skip_channels[-1]] + list(reversed(skip_channels[:-1]))
        self.channels = cin

    def levels(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x, out = feats[-1], [feats[-1]]
        for up, skip in zip(self.ups, reversed(feats[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = up(torch.cat([x, skip], 1))
            out.append(x)
        return out

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.levels(feats)[-1]


class _EncoderDecoder(nn.Module):
    """A subclass's `encode` (image -> levels, finest first, with `chans` channels) under a
    _Decoder; `channels` (the output's), `bottleneck_channels`, `level_channels` (coarsest first)."""

    def _decoder(self, chans: list[int]) -> None:
        self.decoder = _Decoder(chans)
        self.channels, self.bottleneck_channels = chans[0], chans[-1]
        self.level_channels = self.decoder.level_channels

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.decoder(feats)

    def levels(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.decoder.levels(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class ConvEncoderDecoder(_EncoderDecoder):
    """A small U-Net: `depth` stride-2 stages doubling `width`; features at full resolution
    with `width` channels. Any H, W (odd sizes too: the decoder resizes to each skip)."""

    def __init__(self, in_channels: int = 3, width: int = 32, depth: int = 4):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"ConvEncoderDecoder needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        chans = [width * 2**i for i in range(depth + 1)]
        self.stem = _block(in_channels, chans[0])
        self.down = nn.ModuleList(_block(chans[i], chans[i + 1], stride=2) for i in range(depth))
        self._decoder(chans)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for d in self.down:
            feats.append(d(feats[-1]))
        return feats



class TorchvisionBackbone(_EncoderDecoder):
    """torchvision's ResNet-18 (random init, no download) as the encoder: the stem and its four
    stages give five levels (strides 2..32), widened to `width`·2^i by 1x1 convs, under the same
    decoder; the output is resized to the input. ResNet keeps its BatchNorm: under DDP its
    statistics are per process (torch.nn.SyncBatchNorm.convert_sync_batchnorm makes them global)."""

    def __init__(self, in_channels: int = 3, width: int = 32, arch: str = "resnet18"):
        super().__init__()
        try:
            import torchvision
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("backbone='resnet18' needs torchvision (pip install torchvision)") from e
        net = getattr(torchvision.models, arch)(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.stages = nn.ModuleList([nn.Sequential(net.maxpool, net.layer1), net.layer2, net.layer3, net.layer4])
        src = [64, 64, 128, 256, 512]
        chans = [width * 2**i for i in range(5)]
        self.proj = nn.ModuleList(nn.Conv2d(s, c, 1) for s, c in zip(src, chans))
        self._decoder(chans)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = x.shape[-2:]
        feats = [self.stem(x)]
        for s in self.stages:
            feats.append(s(feats[-1]))
        out = [p(f) for p, f in zip(self.proj, feats)]
        out[0] = F.interpolate(out[0], size=size, mode="bilinear", align_corners=False)
        return out



def make_backbone(name: str = "unet", in_channels: int = 3, width: int = 32, depth: int = 4) -> nn.Module:
    """`name`: "unet" (ConvEncoderDecoder) or a torchvision ResNet ("resnet18", "resnet34")."""
    if name == "unet":
        return ConvEncoderDecoder(in_channels, width, depth)
    if name in ("resnet18", "resnet34"):
        return TorchvisionBackbone(in_channels, width, name)
    raise ValueError(f"backbone must be 'unet', 'resnet18' or 'resnet34', got {name!r}")
