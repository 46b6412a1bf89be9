"""Adaptive semantic units (paper 3.3) in PyTorch: meta-points sampled on a grid, pixels join their most similar one.

Shapes: an embedding map is (C, h, w), L2-normalised along C; L = h*w. See
docs/inference-contract.md, "Adaptive semantic units"; the meta-point grid and positions come from
`runtime.contract`, shared with the numpy twin in `runtime.units`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from runtime.contract import meta_point_indices, uses_pixel_units

# Elements of one (M x columns) similarity block; bounds memory at M, L in the tens of thousands.
DEFAULT_CHUNK_ELEMENTS = 1 << 22


def assign_pixels(flat: torch.Tensor, point_index: torch.Tensor,
                  chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """(L,) index of each pixel's most cosine-similar meta-point (ties: lowest index).

    `flat` is the (C, L) normalised map; the M x L similarity is computed in column chunks so
    memory stays bounded.
    """
    point_index = point_index.to(flat.device)
    points = flat[:, point_index].T.contiguous()
    cols = max(1, chunk_elements // max(1, points.shape[0]))
    out = torch.empty(flat.shape[1], dtype=torch.long, device=flat.device)
    for start in range(0, flat.shape[1], cols):
        out[start:start + cols] = (points @ flat[:, start:start + cols]).max(dim=0).indices  # first maximum, as argmax
    # On a grid with fewer rows or columns than the meta-point lattice, several meta-points sit on one pixel: exact
    # ties, which a multi-threaded matmul can split in the last bit (measured: 1 vs 2 threads picked unit 5 vs 8).
    # Each goes to its first occurrence, so the lowest index wins whatever the thread count.
    same = point_index[:, None] == point_index[None, :]
    order = torch.arange(len(point_index), device=flat.device)
    first = torch.where(same, order, len(point_index)).min(dim=1).values
    return first[out]


def pool_units(flat: torch.Tensor, assignment: torch.Tensor, num_units: int) -> torch.Tensor:
    """(M, C) unit embeddings: mean of each unit's pixels of the (C, L) map, L2-normalised (empty units stay zero)."""
    sums = torch.zeros(flat.shape[0], num_units, dtype=flat.dtype, device=flat.device)
    sums.index_add_(1, assignment, flat)
    counts = torch.bincount(assignment, minlength=num_units).clamp_min(1).to(flat.dtype)
    return F.normalize((sums / counts).T, dim=1)


def semantic_units(embeddings: torch.Tensor, units: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(assignment (L,), unit embeddings (M, C)) of a (C, h, w) map with M = `units` meta-points (M < L)."""
    _, height, width = embeddings.shape
    flat = embeddings.reshape(embeddings.shape[0], -1)
    points = torch.tensor(meta_point_indices(height, width, units), dtype=torch.long)
    assignment = assign_pixels(flat, points)
    return assignment, pool_units(flat, assignment, units)


Units = tuple[torch.Tensor, torch.Tensor]  # (assignment (L,), unit embeddings (M, C)), as `semantic_units` returns


def image_units(embeddings: torch.Tensor, units: int) -> Units | None:
    """A (C, h, w) map's units for `unit_scores(..., assigned=)`, None where `units` means pixel units.

    They depend on the map only, not on the vocabulary: compute them once per image and unit count, then
    score any number of vocabularies against them."""
    _, height, width = embeddings.shape
    return None if uses_pixel_units(units, height, width) else semantic_units(embeddings, units)


def unit_embedding_map(embeddings: torch.Tensor, units: int) -> torch.Tensor:
    """The (C, h, w) map with every pixel replaced by its unit's embedding (scope "window")."""
    channels, height, width = embeddings.shape
    if uses_pixel_units(units, height, width):
        return embeddings
    assignment, unit_emb = semantic_units(embeddings, units)
    return unit_emb.T[:, assignment].reshape(channels, height, width)


def unit_scores(embeddings: torch.Tensor, class_embeddings: torch.Tensor, units: int,
                assigned: Units | None = None) -> torch.Tensor:
    """(K, h, w) cosine scores: each pixel takes its unit's scores against the (K, C) class embeddings.

    `assigned` is this map's `image_units(embeddings, units)` when already computed (the same scores, without
    assigning the pixels again)."""
    channels, height, width = embeddings.shape
    if uses_pixel_units(units, height, width):
        return (class_embeddings @ embeddings.reshape(channels, -1)).reshape(-1, height, width)
    if assigned is None:
        assigned = semantic_units(embeddings, units)
    assignment, unit_emb = assigned
    if assignment.shape != (height * width,) or unit_emb.shape != (units, channels):
        raise ValueError(f"precomputed units ({tuple(assignment.shape)}, {tuple(unit_emb.shape)}) are not {units} "
                         f"units of a {channels} x {height} x {width} map; pass image_units(embeddings, {units})")
    return (class_embeddings @ unit_emb.T)[:, assignment].reshape(-1, height, width)
