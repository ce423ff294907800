"""Class ids -> segments: 8-connected components, and panoptic segments (things from an instance prompt's
prediction or from connected components; stuff by class)."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import torch


def connected_components(labels: torch.Tensor) -> torch.Tensor:
    """(H, W) integer map -> (H, W) long: each 8-connected region of one value > 0 gets an id 1..N in raster order
    of its first pixel; 0 stays 0. Vectorised union-find: each round hooks the larger of two linked roots under the
    smaller and compresses paths, so a root is its region's smallest pixel index."""
    h, w = labels.shape
    index = torch.arange(h * w, device=labels.device).view(h, w)
    edges = []
    # right, down, down-right and down-left neighbours: each of the 8 directions once from one end
    for a, b in ((np.s_[:, :-1], np.s_[:, 1:]), (np.s_[:-1], np.s_[1:]), (np.s_[:-1, :-1], np.s_[1:, 1:]),
                 (np.s_[:-1, 1:], np.s_[1:, :-1])):
        linked = (labels[a] == labels[b]) & (labels[a] > 0)
        edges.append(torch.stack([index[a][linked], index[b][linked]]))
    u, v = torch.cat(edges, 1)  # (E,) each
    parent = index.flatten().clone()
    while not torch.equal(root_u := parent[u], root_v := parent[v]):
        parent.scatter_reduce_(0, torch.maximum(root_u, root_v), torch.minimum(root_u, root_v), reduce="amin")
        while not torch.equal(grand := parent[parent], parent):
            parent = grand
    inside = labels > 0
    _, inverse = torch.unique(torch.where(inside, parent.view(h, w), h * w), return_inverse=True)
    return torch.where(inside, inverse + 1, 0)


def panoptic_from_classes(classes: torch.Tensor, things: Collection[int], stuff: Collection[int], min_area: int = 0,
                          instances: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[int, int]]:
    """(H, W) class ids -> ((H, W) segment ids 1..M, 0 = none; {segment id: category}).

    Things: 8-connected regions of a thing class or, with `instances` (ids an instance prompt painted: SegGPT
    segments category and instance in parallel, its authors in baaivision/Painter#40), the pixels of one id, kept
    if more than half are thing pixels, as their most frequent thing class (tie: the smaller id); thing pixels no
    instance covers get no segment (Panoptic FPN's merge, detectron2 `combine_semantic_and_instance_outputs`).
    Stuff: one segment per class over uncovered pixels. Segments under `min_area` pixels are dropped; numbering
    is instances first (raster order; given `instances`, by id), then stuff by class id."""

    classes = classes.long()
    thing_ids = torch.tensor(sorted(things), dtype=torch.long, device=classes.device)
    is_thing = torch.isin(classes, thing_ids)
    category = classes  # of each pixel's segment
    if instances is None:
        pieces = connected_components(torch.where(is_thing, classes, 0))
    else:
        pieces = instances.long().to(classes.device)
        width = len(thing_ids) + 1  # vote column 0: not a thing; column k: thing_ids[k - 1]
        column = torch.where(is_thing, torch.searchsorted(thing_ids, classes) + 1, 0)
        votes = torch.bincount((pieces * width + column).flatten(), minlength=(int(pieces.max()) + 1) * width)
        votes = votes.view(-1, width)  # (regions + 1, things + 1)
        kept = 2 * votes[:, 1:].sum(1) > votes.sum(1)
        kept[0] = False
        majority = thing_ids[votes[:, 1:].argmax(1)] if len(thing_ids) else torch.zeros_like(kept, dtype=torch.long)
        pieces = torch.where(kept[pieces], pieces, 0)
        category = torch.where(pieces > 0, majority[pieces], classes)
    is_stuff = torch.isin(classes, torch.tensor(sorted(stuff), dtype=torch.long, device=classes.device))
    ids = torch.where(is_stuff & (pieces == 0), int(pieces.max()) + classes, pieces)  # stuff class c: N + c
    values, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    keep = (values > 0) & (counts >= min_area)
    renumber = torch.cumsum(keep.long(), 0) * keep
    category = torch.zeros_like(values).scatter_(0, inverse.flatten(), category.flatten())
    return renumber[inverse], dict(zip(renumber[keep].tolist(), category[keep].tolist(), strict=True))
