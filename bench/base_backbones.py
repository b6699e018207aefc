"""Base-space P@5 of the bases `mammosearch train` can start from, at a few input sizes.

    MAMMOSEARCH_DATA_DIR=DIR python bench/base_backbones.py [--sizes 224,320]

DIR's database must hold the dev archive (`mammosearch ingest cdd-cesm`). For every base
(efficientnet-lite0/1/2, real ImageNet weights) and input size (the given ones plus the
base's native size), embeds every labelled image with the pooled ImageNet features,
averaged with its mirror as trained models serve, and prints same-BIRADS P@5 over the
whole archive, each query's own patient excluded. No training: it says whether a larger
base starts from a better space before a cross-validation run is spent on it.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import torch
from tqdm import tqdm

from mammosearch.config import get_settings
from mammosearch.db.session import make_session_factory
from mammosearch.embed.backbones import get_backbone
from mammosearch.evaluate.evaluator import evaluate_vectors
from mammosearch.train.augment import normalise, to_unit
from mammosearch.train.bases import BASE_BACKBONES
from mammosearch.train.dataset import load_labelled_images, load_pixels
from mammosearch.train.network import load_base

BATCH = 32


def pooled_flip_averaged(extractor: torch.nn.Module, pixels: np.ndarray, desc: str) -> np.ndarray:
    """(n, s, s) uint8 -> (n, dim): the backbone's pooled vector of the image plus its mirror."""
    vectors = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(pixels), BATCH), desc=desc, unit="batch", leave=False):
            images = normalise(to_unit(pixels[start : start + BATCH]))
            pooled = extractor(torch.cat([images, torch.flip(images, dims=[3])]))
            vectors.append((pooled[: len(images)] + pooled[len(images) :]).numpy())
    return np.concatenate(vectors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="224,320", help="Input sizes besides the native one")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",") if size]
    with make_session_factory(get_settings().database_url)() as session:
        data = load_labelled_images(session, ["birads"])
    labels = data.label_values("birads")
    ids = list(range(len(data)))
    print(f"{len(data)} labelled images; P@5 same BIRADS, patient-excluded, cosine, with mirror")
    pixels_at = functools.cache(lambda size: load_pixels(data.paths, data.names, size))
    for base in BASE_BACKBONES:
        net, _weights = load_base(base)
        native_size = int(net._global_params.image_size)
        extractor = get_backbone(base).to_feature_extractor(net).eval()
        for size in sorted({*sizes, native_size}):
            started = time.perf_counter()
            vectors = pooled_flip_averaged(extractor, pixels_at(size), f"{base} {size}px")
            result = evaluate_vectors(
                vectors, ids, labels, data.patient_ids, ks=(5,), label_name="birads"
            )
            print(
                f"{base:20s} {size:4d} px  P@5 {result.metrics['precision@5']:.3f}  "
                f"[{time.perf_counter() - started:.0f} s]",
                flush=True,
            )


if __name__ == "__main__":
    main()
