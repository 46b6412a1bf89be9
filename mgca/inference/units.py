"""Adaptive semantic units (paper 3.3): meta-points sampled on a grid, pixels join their most similar one.

Shapes: an embedding map is (C, h, w), L2-normalised along C; L = h*w. See
docs/inference-contract.md, "Adaptive semantic units", for the exact definition shared with runtime/.
"""
from __future__ import annotations

from math import isqrt

import torch
import torch.nn.functional as F

# Elements of one (M x columns) similarity block; bounds memory at M, L in the tens of thousands.
DEFAULT_CHUNK_ELEMENTS = 1 << 22


def uses_pixel_units(num_points: int, height: int, width: int) -> bool:
    """M = 0 or M >= L: every pixel is its own unit (the plain pixel-wise baseline)."""
    return num_points == 0 or num_points >= height * width


def meta_grid(height: int, width: int, num_points: int) -> tuple[int, int]:
    """(gy, gx) with gy*gx = M: sqrt(M) each for a square M, else the factor pair closest to square,
    the larger factor along the longer side (along x when the map is square)."""
    if num_points <= 0:
        raise ValueError(f"number of meta-points must be positive, got {num_points}")
    root = isqrt(num_points)
    small = max(d for d in range(1, root + 1) if num_points % d == 0)
    large = num_points // small
    return (large, small) if height > width else (small, large)


def meta_point_indices(height: int, width: int, num_points: int) -> torch.Tensor:
    """Flat indices (M,) of the meta-points: pixel (floor((i+.5)h/gy), floor((j+.5)w/gx)), row-major."""
    grid_y, grid_x = meta_grid(height, width, num_points)
    ys = [((2 * i + 1) * height) // (2 * grid_y) for i in range(grid_y)]
    xs = [((2 * j + 1) * width) // (2 * grid_x) for j in range(grid_x)]
    return torch.tensor([y * width + x for y in ys for x in xs], dtype=torch.long)


def assign_pixels(flat: torch.Tensor, point_index: torch.Tensor, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """(L,) index of each pixel's most cosine-similar meta-point (ties: lowest index).

    `flat` is the (C, L) normalised map; the M x L similarity is computed in column chunks so
    memory stays bounded.
    """
    points = flat[:, point_index.to(flat.device)].T.contiguous()
    cols = max(1, chunk_elements // max(1, points.shape[0]))
    out = torch.empty(flat.shape[1], dtype=torch.long, device=flat.device)
    for start in range(0, flat.shape[1], cols):
        out[start:start + cols] = (points @ flat[:, start:start + cols]).max(dim=0).indices  # first maximum, as argmax
    return out


def pool_units(flat: torch.Tensor, assignment: torch.Tensor, num_units: int) -> torch.Tensor:
    """(M, C) unit embeddings: mean of each unit's pixels of the (C, L) map, L2-normalised (empty units stay zero)."""
    sums = torch.zeros(flat.shape[0], num_units, dtype=flat.dtype, device=flat.device)
    sums.index_add_(1, assignment, flat)
    counts = torch.bincount(assignment, minlength=num_units).clamp_min(1).to(flat.dtype)
    return F.normalize((sums / counts).T, dim=1)


def semantic_units(embeddings: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(assignment (L,), unit embeddings (M, C)) of a (C, h, w) map with M meta-points (M < L)."""
    _, height, width = embeddings.shape
    flat = embeddings.reshape(embeddings.shape[0], -1)
    assignment = assign_pixels(flat, meta_point_indices(height, width, num_points))
    return assignment, pool_units(flat, assignment, num_points)


def unit_embedding_map(embeddings: torch.Tensor, num_points: int) -> torch.Tensor:
    """The (C, h, w) map with every pixel replaced by its unit's embedding (scope "window")."""
    channels, height, width = embeddings.shape
    if uses_pixel_units(num_points, height, width):
        return embeddings
    assignment, units = semantic_units(embeddings, num_points)
    return units.T[:, assignment].reshape(channels, height, width)


def unit_scores(embeddings: torch.Tensor, class_embeddings: torch.Tensor, num_points: int) -> torch.Tensor:
    """(K, h, w) cosine scores: each pixel takes its unit's scores against the (K, C) class embeddings."""
    channels, height, width = embeddings.shape
    if uses_pixel_units(num_points, height, width):
        return (class_embeddings @ embeddings.reshape(channels, -1)).reshape(-1, height, width)
    assignment, units = semantic_units(embeddings, num_points)
    return (class_embeddings @ units.T)[:, assignment].reshape(-1, height, width)
