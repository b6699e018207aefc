"""The embedder interface (identity + images -> vectors) and its PyTorch implementation."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from mammosearch.embed.preprocess import INPUT_SIZE_PX, preprocess_batch
from mammosearch.embed.space_identity import SpaceIdentity


def check_batch(batch: torch.Tensor | np.ndarray, size_px: int = INPUT_SIZE_PX) -> None:
    """Refuse anything that is not (n, 3, size, size): a wrong shape would embed silently."""
    expected = (3, size_px, size_px)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
        raise ValueError(
            f"embed_tensors: expected a batch of shape (n, {', '.join(map(str, expected))}), "
            f"got {tuple(batch.shape)}; build it with preprocess_batch()"
        )


def spare_cpus() -> int:
    """Logical CPUs beyond the threads inference uses (torch's count; ONNX Runtime's is the
    same: one per physical core). Read at run time: the machine changes."""
    return max(0, (os.cpu_count() or 1) - torch.get_num_threads())


def _given(image: Image.Image) -> Callable[[], Image.Image]:
    """A source of an image already in memory."""
    return lambda: image


class Embedder(ABC):
    """Images -> float32 vectors (n, dim) in one embedding space, whatever runs the model."""

    runtime: str = "abstract"

    def __init__(
        self, identity: SpaceIdentity, batch_size: int = 32, input_size_px: int = INPUT_SIZE_PX
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.identity = identity
        self.batch_size = batch_size
        self.input_size_px = input_size_px
        self.overlap_decoding = spare_cpus() > 0

    backbone = property(lambda self: self.identity.backbone)
    dim = property(lambda self: self.identity.dim)
    weights_sha256 = property(lambda self: self.identity.weights_sha256)
    weights_source = property(lambda self: self.identity.weights_source)
    pretrained = property(lambda self: self.identity.pretrained)
    preprocessing_version = property(lambda self: self.identity.preprocessing_version)

    @abstractmethod
    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """A preprocessed batch (n, 3, size, size) -> float32 array (n, dim)."""

    def embed_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Images -> float32 array (n, dim), run `batch_size` images at a time."""
        vectors, _failed = self.embed_sources([_given(image) for image in images])
        return vectors

    def embed_sources(
        self, sources: Sequence[Callable[[], Image.Image]]
    ) -> tuple[np.ndarray, dict[int, str]]:
        """Decode and embed: `sources[i]()` opens image i; a ValueError fails that one only.

        Where the machine has a CPU the model's threads leave free (`overlap_decoding`), the
        next batch is decoded and preprocessed on a second thread while the model runs
        (Pillow, ONNX Runtime and torch release the GIL). Where it has none, a second thread
        only steals from the model's: on 2 cores DenseNet121 int8 ran 21% slower overlapped
        (bench/bench_embed.py, docs/performance.md).
        Returns the vectors of the images that opened, in order, and {position: reason}.
        """
        failed: dict[int, str] = {}

        def prepared(start: int) -> torch.Tensor:
            images = []
            for position in range(start, min(start + self.batch_size, len(sources))):
                try:
                    images.append(sources[position]())
                except ValueError as error:
                    failed[position] = str(error)
            return preprocess_batch(images, self.input_size_px)

        def batches() -> Iterator[torch.Tensor]:
            starts = range(0, len(sources), self.batch_size)
            if not self.overlap_decoding or len(starts) < 2:
                yield from map(prepared, starts)
                return
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
                upcoming = pool.submit(prepared, starts[0])
                for following in starts[1:]:
                    batch = upcoming.result()
                    upcoming = pool.submit(prepared, following)
                    yield batch
                yield upcoming.result()

        chunks = [np.empty((0, self.dim), dtype=np.float32)]
        chunks += [self.embed_tensors(batch) for batch in batches() if len(batch)]
        return np.concatenate(chunks).astype(np.float32, copy=False), failed

    def describe(self) -> dict[str, Any]:
        """The space identity plus how it runs, for logs and `embed info`-style output."""
        return {
            **self.identity.as_dict(),
            "runtime": self.runtime,
            "input_size_px": self.input_size_px,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(backbone={self.backbone!r}, dim={self.dim}, "
            f"weights_sha256={self.weights_sha256[:16]!r}, pretrained={self.pretrained})"
        )


class TorchEmbedder(Embedder):
    """A PyTorch feature extractor in eval mode, run under inference_mode."""

    runtime = "torch"

    def __init__(
        self,
        model: nn.Module,
        identity: SpaceIdentity,
        device: str = "cpu",
        batch_size: int = 32,
        channels_last: bool = True,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        """`autocast_dtype` (e.g. torch.bfloat16) runs the model under autocast to it."""
        super().__init__(identity, batch_size)
        self.autocast_dtype = autocast_dtype
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # Module.to takes a device and a memory format together; torch's overloads do not say so
        self.model = model.eval().to(self.device, memory_format=self.memory_format)  # type: ignore[call-overload]

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        check_batch(batch, self.input_size_px)
        autocast = (
            nullcontext()  # an autocast(enabled=False) would switch off a caller's autocast
            if self.autocast_dtype is None
            else torch.autocast(self.device.type, dtype=self.autocast_dtype)
        )
        with torch.inference_mode(), autocast:
            inputs = batch.to(self.device, dtype=torch.float32)
            vectors = self.model(inputs.contiguous(memory_format=self.memory_format))
        return np.ascontiguousarray(vectors.float().cpu().numpy(), dtype=np.float32)
