"""Where an image lands on the network's square input grid: the one placement that preprocessing, tumour outlines,
boxes and heatmaps all follow (the slice centred on a black square of its longer side, then resized)."""

from __future__ import annotations


def square_geometry(width: int, height: int, size: int) -> tuple[float, int, int]:
    """How :func:`core.data.preprocess_uint8` places an image on the network grid: ``(scale, dx, dy)`` such that
    original pixel (x, y) lands at ``((x + dx) * scale, (y + dy) * scale)``."""
    side = max(width, height)
    return size / side, (side - width) // 2, (side - height) // 2
