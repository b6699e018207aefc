"""Realistic embedding vectors at any count, generated from real embeddings of the dev images.

The real vectors are efficientnet-lite0 (ImageNet) embeddings of the CDD-CESM dev images,
computed once and cached. A generator is fitted to them: PCA to `components` dimensions, a
Gaussian mixture in that subspace (where the images' structure lives), and isotropic noise
in the remaining dimensions with the real residual variance. `check` compares the
nearest-neighbour distances of a generated sample with the real ones at the same count
(the figure an ANN index is sensitive to).

    python bench/realistic_vectors.py          # prints the check
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DEV_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cdd-cesm-dev"
CACHE = Path(__file__).resolve().parent / ".cache" / "dev-efficientnet-lite0.npy"


def real_embeddings(data_dir: Path = DEV_DATA, cache: Path = CACHE) -> np.ndarray:
    """(n, 1280) float32 embeddings of every dev image, from the product's own embedder."""
    if cache.exists():
        return np.load(cache)
    from PIL import Image

    from mammosearch.embed import load_embedder

    files = sorted((data_dir / "Subtracted images").glob("*.jpg"))
    if not files:
        sys.exit(f"{data_dir}: no dev images (the generator needs real embeddings to fit)")
    embedder = load_embedder("efficientnet-lite0", runtime="onnx")
    parts = []
    for start in range(0, len(files), 32):
        images = [Image.open(path).convert("L") for path in files[start : start + 32]]
        parts.append(embedder.embed_pil(images))
    vectors = np.concatenate(parts).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


class Generator:
    """PCA + Gaussian mixture + residual noise, fitted to real vectors."""

    def __init__(self, real: np.ndarray, components: int = 64, mixtures: int = 12, seed: int = 0):
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        self.dim = real.shape[1]
        self.pca = PCA(n_components=components, random_state=seed).fit(real)
        projected = self.pca.transform(real)
        self.mixture = GaussianMixture(
            mixtures, covariance_type="full", random_state=seed, reg_covar=1e-4
        ).fit(projected)
        residual = real - self.pca.inverse_transform(projected)
        self.residual_std = float(np.sqrt((residual**2).sum(axis=1).mean() / self.dim))

    def sample(self, count: int, seed: int, chunk: int = 100_000) -> np.ndarray:
        """(count, dim) float32 vectors, generated in chunks (1M x 1280 is 5 GB)."""
        rng = np.random.default_rng(seed)
        out = np.empty((count, self.dim), dtype=np.float32)
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            self.mixture.random_state = int(rng.integers(2**31))
            projected, _ = self.mixture.sample(size)
            block = self.pca.inverse_transform(projected).astype(np.float32)
            block += rng.normal(0, self.residual_std, block.shape).astype(np.float32)
            out[start : start + size] = block[rng.permutation(size)]
        return out


def nearest_neighbour_distances(vectors: np.ndarray, metric: str = "cosine") -> np.ndarray:
    import faiss

    vectors = np.array(vectors, dtype=np.float32)
    if metric == "cosine":
        faiss.normalize_L2(vectors)
        similarities, _ = faiss.knn(vectors, vectors, 2, metric=faiss.METRIC_INNER_PRODUCT)
        return 1.0 - similarities[:, 1]
    distances, _ = faiss.knn(vectors, vectors, 2)
    return np.sqrt(distances[:, 1])


def check(real: np.ndarray, generator: Generator, seed: int = 1) -> dict[str, float]:
    """Median and quartiles of 1-NN cosine distance, real vs generated at the same count."""
    fake = generator.sample(len(real), seed=seed)
    figures = {}
    for name, vectors in (("real", real), ("generated", fake)):
        distances = nearest_neighbour_distances(vectors)
        for q in (25, 50, 75):
            figures[f"{name} p{q}"] = float(np.percentile(distances, q))
    figures["median ratio"] = figures["generated p50"] / figures["real p50"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEV_DATA)
    args = parser.parse_args()
    real = real_embeddings(args.data)
    for name, value in check(real, Generator(real)).items():
        print(f"{name}: {value:.4f}")


if __name__ == "__main__":
    main()
