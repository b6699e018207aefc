"""2-D maps of an embedding space: PCA (with variance explained) and t-SNE (scikit-learn)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TSNE_MAX_IMAGES = 5000
"""Above this many images t-SNE runs on an evenly spaced subsample (it grows as n log n)."""
TSNE_MIN_IMAGES = 5
PCA_BEFORE_TSNE = 50


@dataclass
class Projection:
    pca: np.ndarray  # (n, 2)
    pca_variance_ratio: tuple[float, float]  # of the first two components
    tsne: np.ndarray | None  # (m, 2), rows `tsne_rows` of the input
    tsne_rows: np.ndarray | None
    tsne_note: str

    def to_dict(self) -> dict[str, object]:
        return {
            "pca_variance_ratio": list(self.pca_variance_ratio),
            "pca_variance_ratio_sum": float(sum(self.pca_variance_ratio)),
            "tsne": self.tsne_note,
        }


def project(vectors: np.ndarray, seed: int = 0, tsne: bool = True) -> Projection:
    """PCA of the raw vectors; t-SNE of their first 50 principal components."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    matrix = np.asarray(vectors, dtype=np.float64)
    n_images = matrix.shape[0]
    components = max(1, min(2, n_images, matrix.shape[1]))
    pca = PCA(n_components=components, random_state=seed).fit(matrix)
    pca_xy = np.zeros((n_images, 2))
    pca_xy[:, :components] = pca.transform(matrix)
    ratios = list(pca.explained_variance_ratio_) + [0.0] * (2 - components)
    if not tsne or n_images < TSNE_MIN_IMAGES:
        return Projection(
            pca_xy, (float(ratios[0]), float(ratios[1])), None, None,
            f"skipped: {n_images} images (t-SNE needs {TSNE_MIN_IMAGES})" if tsne else "skipped",
        )  # fmt: skip
    rows = np.arange(n_images)
    if n_images > TSNE_MAX_IMAGES:
        rows = np.linspace(0, n_images - 1, TSNE_MAX_IMAGES).astype(np.int64)
    reduced = PCA(
        n_components=min(PCA_BEFORE_TSNE, rows.size, matrix.shape[1]), random_state=seed
    ).fit_transform(matrix[rows])
    perplexity = float(min(30.0, max(2.0, (rows.size - 1) / 3.0)))
    tsne_xy = TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed
    ).fit_transform(reduced)
    note = f"perplexity {perplexity:g}, on the first {reduced.shape[1]} principal components"
    if rows.size < n_images:
        note += f", {rows.size} of {n_images} images (evenly spaced subsample)"
    return Projection(pca_xy, (float(ratios[0]), float(ratios[1])), tsne_xy, rows, note)
