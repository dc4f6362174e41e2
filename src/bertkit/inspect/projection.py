"""Embeddings on a page: a 2-D PCA projection (numpy SVD) and a labelled scatter plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bertkit.files import atomic_write

MAX_LABELS = 150  # beyond this many points, text labels would hide the scatter
LABEL_CHARS = 32


def _pca(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> ((N, 2) coordinates, (2,) share of the total variance each axis explains)."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"expected a non-empty (N, D) array of vectors, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinite values")
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)  # vt: (min(N, D), D), rows are the principal directions
    axes = vt[:2]
    # An SVD direction is defined up to sign; make each axis's largest loading positive so runs agree.
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
    coords = np.zeros((x.shape[0], 2))
    coords[:, : len(axes)] = x @ axes.T
    total = float((s**2).sum())
    explained = np.zeros(2)
    explained[: len(axes)] = (s[:2] ** 2) / total if total > 0 else 0.0
    return coords, explained


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """Project (N, D) vectors onto their two principal axes: (N, 2), centred, deterministic signs.

    Fewer than two directions of variance (one vector, or D == 1) leave the missing axis at zero.
    """
    return _pca(vectors)[0]


def plot_embeddings(vectors: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "Embeddings") -> Path:
    """Scatter the (N, D) vectors on their first two principal axes, each point labelled, into a PNG.

    Vectors that are already 2-D are still centred and rotated onto their principal axes, so the
    picture does not depend on the input's orientation. Returns ``path``.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plotting embeddings needs matplotlib: pip install 'bertkit[plots]'") from None
    if len(labels) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors but {len(labels)} labels")
    coords, explained = _pca(vectors)
    fig = Figure(figsize=(8, 6.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(coords[:, 0], coords[:, 1], s=28, color="#1f5fa8", alpha=0.8, edgecolors="white", linewidths=0.5)
    if len(labels) <= MAX_LABELS:
        for (x, y), label in zip(coords, labels, strict=True):
            text = label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "\u2026"
            ax.annotate(text, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=8, color="#1d2430")
    ax.set_title(title)
    ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%} of variance)")
    ax.grid(alpha=0.3)
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path
