"""Embedding throughput: eager vs channels_last vs bf16 vs ONNX Runtime fp32 and int8, one run.

    python bench/bench_embed.py --count 64 --batch-size 16 [--backbone densenet121 ...]

Uses the real CDD-CESM dev images when present, synthetic ones otherwise. Ratios are against
eager PyTorch measured in the same run, so they stay meaningful on a busy machine. A backbone
without weights runs with random weights and is labelled "untrained" (speed is the same).

"End to end" starts from the image files: the naive pipeline decodes, preprocesses and runs
eager float32 PyTorch one batch after another; the product serves ONNX Runtime fp32, its
int8 variant (calibrated on the first images) or the bf16 variant (torch autocast) through
`Embedder.embed_sources`, which decodes and preprocesses the next batch while the model
runs, as the pipeline does. The int8 model runs on both engines (ONNX Runtime and the one
served, `onnx_engines.choose_engine`: OpenVINO where installed). A variant's effect on
retrieval quality is checked on the archive itself by `mammosearch models quantize` (P@5
must move < 0.01), not here.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
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
from mammosearch.embed.cpu_features import vector_extensions
from mammosearch.embed.embedder import Embedder, spare_cpus
from mammosearch.embed.quantize import bf16_embedder, quantize_int8

DEV_IMAGES = Path(__file__).resolve().parents[2] / "shared/data/cdd-cesm-dev/Subtracted images"
CALIBRATION_COUNT = 16


def image_files(count: int, folder: Path) -> tuple[list[Path], str]:
    """`count` image files: real dev JPEGs (repeated if needed) or synthetic noise written out."""
    paths = sorted(DEV_IMAGES.glob("*.jpg"))
    if paths:
        return [paths[i % len(paths)] for i in range(count)], (
            f"real CDD-CESM dev images ({min(count, len(paths))} distinct)"
        )
    rng = np.random.default_rng(0)
    written = []
    for i in range(count):
        path = folder / f"noise-{i}.png"
        Image.fromarray(rng.integers(0, 256, (512, 512), dtype=np.uint8)).save(path)
        written.append(path)
    return written, "synthetic 512x512 noise (dev data absent)"


def opened(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("L")


def decoded(paths: list[Path]) -> list[Image.Image]:
    return [opened(path) for path in paths]


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


def naive_files(embedder: Embedder, paths: list[Path], batch: int) -> Callable[[], object]:
    """Decode, preprocess, infer; one batch after another, nothing overlapped."""

    def run() -> object:
        return [
            embedder.embed_tensors(preprocess_batch(decoded(paths[i : i + batch])))
            for i in range(0, len(paths), batch)
        ]

    return run


def product_files(embedder: Embedder, paths: list[Path]) -> Callable[[], object]:
    """As the pipeline does: `embed_sources` decodes the next batch while the model runs."""
    return lambda: embedder.embed_sources([partial(opened, path) for path in paths])


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def bench_backbone(name: str, paths: list[Path], batch_size: int, repeats: int) -> None:
    count = len(paths)
    batches = list(torch.split(preprocess_batch(decoded(paths)), batch_size))
    eager = build_torch_embedder(name, allow_random=True, channels_last=False)
    channels_last = build_torch_embedder(name, allow_random=True, channels_last=True)
    label = name if eager.pretrained else f"{name} (random weights, untrained)"
    with tempfile.TemporaryDirectory() as onnx_dir:
        onnx_path = export_onnx(channels_last, Path(onnx_dir) / f"{name}.onnx")
        onnx = OnnxEmbedder(onnx_path, batch_size=batch_size)
        int8_path = quantize_int8(onnx_path, decoded(paths[:CALIBRATION_COUNT]), onnx.input_size_px)
        int8 = OnnxEmbedder(int8_path, batch_size=batch_size)  # as served: engine "auto"
        int8_ort = OnnxEmbedder(int8_path, batch_size=batch_size, engine="onnxruntime")
        served = "OpenVINO" if int8.engine.name == "openvino" else "ONNX Runtime"
        bf16 = bf16_embedder(channels_last)
        reference = eager.embed_tensors(batches[0])
        agreement = {
            "ONNX fp32": cosine_min(onnx.embed_tensors(batches[0]), reference),
            "int8 ONNX Runtime": cosine_min(int8_ort.embed_tensors(batches[0]), reference),
            f"int8 {served}": cosine_min(int8.embed_tensors(batches[0]), reference),
            "bf16": cosine_min(bf16.embed_tensors(batches[0]), reference),
        }
        rates = {
            "eager (contiguous)": images_per_s(embed_all(eager, batches), count, repeats),
            "channels_last": images_per_s(embed_all(channels_last, batches), count, repeats),
            "channels_last bf16": images_per_s(embed_all(bf16, batches), count, repeats),
            "ONNX Runtime fp32": images_per_s(embed_all(onnx, batches), count, repeats),
            "ONNX Runtime int8": images_per_s(embed_all(int8_ort, batches), count, repeats),
        }
        if int8.engine.name != "onnxruntime":
            served_rate = images_per_s(embed_all(int8, batches), count, repeats)
            rates[f"{served} int8 (served)"] = served_rate
        end_to_end = {
            "naive: decode, preprocess, eager fp32": images_per_s(
                naive_files(eager, paths, batch_size), count, repeats
            ),
            "product ONNX fp32": images_per_s(product_files(onnx, paths), count, repeats),
            "product int8 on ONNX Runtime": images_per_s(
                product_files(int8_ort, paths), count, repeats
            ),
            f"product int8 on {served} (served)": images_per_s(
                product_files(int8, paths), count, repeats
            ),
            "product torch bf16": images_per_s(product_files(bf16, paths), count, repeats),
        }
        served_overlap = int8.overlap_decoding
        int8.overlap_decoding = not served_overlap
        other = "overlapped" if int8.overlap_decoding else "not overlapped"
        end_to_end[f"product int8 on {served}, decoding {other}"] = images_per_s(
            product_files(int8, paths), count, repeats
        )
    print(f"\n{label}: dim {eager.dim}; min cosine to eager fp32: " + ", ".join(
        f"{variant} {value:.4f}" for variant, value in agreement.items()
    ))  # fmt: skip
    eager_rate = rates["eager (contiguous)"]
    print("  model only (preprocessed tensors):")
    for variant, rate in rates.items():
        print(f"    {variant:<46} {rate:8.1f} images/s   x{rate / eager_rate:.2f} vs eager")
    naive_rate = end_to_end["naive: decode, preprocess, eager fp32"]
    overlap = "overlapped" if served_overlap else "not overlapped"
    print(f"  end to end (image files -> vectors; as served, decoding {overlap}: "
          f"{spare_cpus()} spare CPUs):")  # fmt: skip
    for variant, rate in end_to_end.items():
        print(f"    {variant:<46} {rate:8.1f} images/s   x{rate / naive_rate:.2f} vs naive")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64, help="images per timed run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs; the best counts")
    parser.add_argument(
        "--backbone", action="append", help="registry name (repeatable); efficientnet-lite0"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        paths, source = image_files(args.count, Path(folder))
        print(
            f"{args.count} images, {source}; batch {args.batch_size}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"best of {args.repeats} after a warm-up; CPU: {vector_extensions()}"
        )
        for name in args.backbone or ["efficientnet-lite0"]:
            bench_backbone(name, paths, args.batch_size, args.repeats)


if __name__ == "__main__":
    main()
