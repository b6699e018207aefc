"""Embedding throughput: eager vs channels_last vs ONNX Runtime, on the same images in one run.

    python bench/bench_embed.py --count 64 --batch-size 16 [--backbone densenet121 ...]

Uses the real CDD-CESM dev images when present, synthetic ones otherwise. Ratios are against
eager PyTorch measured in the same run, so they stay meaningful on a busy machine. A backbone
without weights runs with random weights and is labelled "untrained" (speed is the same).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mammosearch.embed import (
    OnnxEmbedder,
    build_torch_embedder,
    export_onnx,
    preprocess_batch,
)
from mammosearch.embed.embedder import Embedder

DEV_IMAGES = Path(__file__).resolve().parents[2] / "shared/data/cdd-cesm-dev/Subtracted images"


def load_images(count: int) -> tuple[list[Image.Image], str]:
    """`count` decoded images: real dev JPEGs (repeated if needed) or synthetic noise."""
    paths = sorted(DEV_IMAGES.glob("*.jpg"))
    if paths:
        images = [Image.open(paths[i % len(paths)]).convert("L") for i in range(count)]
        return images, f"real CDD-CESM dev images ({min(count, len(paths))} distinct)"
    rng = np.random.default_rng(0)
    shape_px = (512, 512)
    images = [Image.fromarray(rng.integers(0, 256, shape_px, dtype=np.uint8)) for _ in range(count)]
    return images, "synthetic 512x512 noise (dev data absent)"


def images_per_s(run: Callable[[], object], count: int, repeats: int) -> float:
    """Best of `repeats` timed runs after one warm-up run."""
    run()
    best_s = min(_timed(run) for _ in range(repeats))
    return count / best_s


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def embed_all(embedder: Embedder, batches: list[torch.Tensor]) -> Callable[[], object]:
    return lambda: [embedder.embed_tensors(batch) for batch in batches]


def bench_backbone(name: str, batches: list[torch.Tensor], count: int, repeats: int) -> None:
    eager = build_torch_embedder(name, allow_random=True, channels_last=False)
    channels_last = build_torch_embedder(name, allow_random=True, channels_last=True)
    label = name if eager.pretrained else f"{name} (random weights, untrained)"
    with tempfile.TemporaryDirectory() as onnx_dir:
        onnx = OnnxEmbedder(export_onnx(channels_last, Path(onnx_dir) / f"{name}.onnx"))
        difference = np.abs(onnx.embed_tensors(batches[0]) - eager.embed_tensors(batches[0])).max()
        rates = {
            "eager (contiguous)": images_per_s(embed_all(eager, batches), count, repeats),
            "channels_last": images_per_s(embed_all(channels_last, batches), count, repeats),
            "ONNX Runtime (CPU)": images_per_s(embed_all(onnx, batches), count, repeats),
        }
    print(f"\n{label}: dim {eager.dim}, max |onnx - eager| = {difference:.2e}")
    eager_rate = rates["eager (contiguous)"]
    for variant, rate in rates.items():
        print(f"  {variant:<20} {rate:8.1f} images/s   x{rate / eager_rate:.2f} vs eager")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64, help="images per timed run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs; the best counts")
    parser.add_argument(
        "--backbone", action="append", help="registry name (repeatable); efficientnet-lite0"
    )
    args = parser.parse_args()

    images, source = load_images(args.count)
    start = time.perf_counter()
    tensors = preprocess_batch(images)
    preprocess_rate = args.count / (time.perf_counter() - start)
    batches = list(torch.split(tensors, args.batch_size))
    print(
        f"{args.count} images, {source}; batch {args.batch_size}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"best of {args.repeats} after a warm-up"
    )
    print(f"preprocessing: {preprocess_rate:.1f} images/s (decoded images -> tensors)")
    for name in args.backbone or ["efficientnet-lite0"]:
        bench_backbone(name, batches, args.count, args.repeats)


if __name__ == "__main__":
    main()
