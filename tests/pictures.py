"""Checks that a PNG holds a picture: its size, and enough drawn pixels that it cannot be a blank canvas."""

from __future__ import annotations

import io

import numpy as np
from matplotlib import image

PNG = b"\x89PNG\r\n\x1a\n"


def assert_drawn_png(data: bytes, min_width: int, min_height: int, min_inked: float = 0.01) -> np.ndarray:
    """Decode ``data``; assert it is at least ``min_width`` x ``min_height`` and that at least ``min_inked`` of its
    pixels differ from the most common colour (the background), in more than two colours. Returns (H, W, C)."""
    assert data.startswith(PNG), data[:8]
    pixels = image.imread(io.BytesIO(data), format="png")  # (H, W, C) floats in [0, 1]
    height, width = pixels.shape[:2]
    assert width >= min_width and height >= min_height, (width, height)
    colours, counts = np.unique(pixels.reshape(height * width, -1), axis=0, return_counts=True)
    inked = 1 - counts.max() / counts.sum()
    assert inked >= min_inked and len(colours) > 2, f"blank picture: {inked:.4f} inked, {len(colours)} colours"
    return pixels
