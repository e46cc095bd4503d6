"""Networks with a d-dimensional feature layer whose features come out of the same forward pass as the
logits (chapter "Deep networks").

* :func:`resnet18_cifar`: torchvision's ResNet18 with the CIFAR stem (3×3 stride-1 first convolution,
  no max-pool) and, as in the paper, a last residual block that outputs d channels, with a 1×1
  convolution + BatchNorm shortcut when d ≠ 512.  The features are the pooled output of that block.
* :class:`SmallCNN` and :class:`MLP`: cheap models for the ``cpu`` profile with the same interface.

``feature_relu``: the paper's ResNet ends its last block with a ReLU, so features are non-negative;
at small d that lets MSE training kill feature units (chapter "Deep networks", its section on ReLU
and linear features).  ``feature_relu=False`` drops that final nonlinearity (a linear feature layer)
so the effect can be shown, not hidden.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from .checks import as_int

__all__ = ["FeatureClassifier", "resnet18_cifar", "SmallCNN", "MLP", "build_model", "MODELS"]


class FeatureClassifier(nn.Module):
    """A feature extractor ``body`` (input → (B, d)) followed by a linear classifier ``fc`` (d → K).

    ``forward(x)`` returns the logits; ``forward(x, return_features=True)`` returns (logits, features)
    from one pass.  ``W`` and ``b`` expose the classifier in the book's notation: W (K, d), b (K,).
    """

    def __init__(self, body: nn.Module, d: int, num_classes: int):
        super().__init__()
        self.body, self.d, self.num_classes = body, d, num_classes
        self.fc = nn.Linear(d, num_classes)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        h = self.body(x)
        z = self.fc(h)
        return (z, h) if return_features else z

    @property
    def W(self) -> torch.Tensor:
        return self.fc.weight

    @property
    def b(self) -> torch.Tensor:
        return self.fc.bias


class _LastBlock(nn.Module):
    """ResNet's BasicBlock with ``planes`` → d output channels and, optionally, no final ReLU."""

    def __init__(self, inplanes: int, d: int, feature_relu: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, inplanes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv2 = nn.Conv2d(inplanes, d, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(d)
        self.shortcut = nn.Identity() if d == inplanes else nn.Sequential(
            nn.Conv2d(inplanes, d, 1, bias=False), nn.BatchNorm2d(d))
        self.relu = nn.ReLU(inplace=True)
        self.feature_relu = feature_relu

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return self.relu(out) if self.feature_relu else out


def resnet18_cifar(num_classes: int = 10, d: int = 512, *, in_channels: int = 3,
                   feature_relu: bool = True) -> FeatureClassifier:
    """ResNet18 for 32×32 inputs with a d-dimensional feature layer (module docstring)."""
    d = _check_d(d)
    net = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.layer4[-1] = _LastBlock(512, d, feature_relu)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                         net.layer4, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return FeatureClassifier(body, d, num_classes)


class SmallCNN(FeatureClassifier):
    """Two conv blocks (32, 64 channels, 3×3, max-pool) and a d-dimensional linear feature layer."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, d: int, *, feature_relu: bool = True):
        d = _check_d(d)
        c, h, w = in_shape
        layers = [nn.Conv2d(c, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), d), nn.BatchNorm1d(d)]
        if feature_relu:
            layers.append(nn.ReLU())
        super().__init__(nn.Sequential(*layers), d, num_classes)


class MLP(FeatureClassifier):
    """Flatten → hidden layers (ReLU, BatchNorm) → a d-dimensional feature layer."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, d: int, *, hidden: tuple[int, ...] = (256, 256),
                 feature_relu: bool = True):
        d = _check_d(d)
        n_in = 1
        for s in in_shape:
            n_in *= s
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(n_in, width), nn.BatchNorm1d(width), nn.ReLU()]
            n_in = width
        layers += [nn.Linear(n_in, d), nn.BatchNorm1d(d)]
        if feature_relu:
            layers.append(nn.ReLU())
        super().__init__(nn.Sequential(*layers), d, num_classes)


#: the names :func:`build_model` accepts
MODELS = ("resnet18", "cnn", "mlp")


def build_model(name: str, in_shape: tuple[int, int, int], num_classes: int, d: int, *,
                feature_relu: bool = True) -> FeatureClassifier:
    """The model called ``name`` (one of :data:`MODELS`) for inputs of shape (C, H, W)."""
    if name == "resnet18":
        return resnet18_cifar(num_classes, d, in_channels=in_shape[0], feature_relu=feature_relu)
    if name == "cnn":
        return SmallCNN(in_shape, num_classes, d, feature_relu=feature_relu)
    if name == "mlp":
        return MLP(in_shape, num_classes, d, feature_relu=feature_relu)
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")


def _check_d(d: int) -> int:
    try:
        return as_int("the feature dimension d", d, minimum=1)
    except ValueError:
        raise ValueError(f"the feature dimension d must be a positive integer, got {d!r}") from None
