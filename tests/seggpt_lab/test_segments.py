from __future__ import annotations

from collections import deque

import torch

from seggpt_lab.segments import connected_components, panoptic_from_classes


def reference_components(labels: torch.Tensor) -> torch.Tensor:
    """Breadth-first search, pixel by pixel: the definition connected_components must meet."""
    h, w = labels.shape
    values, out, count = labels.tolist(), [[0] * w for _ in range(h)], 0
    for y in range(h):
        for x in range(w):
            if values[y][x] > 0 and not out[y][x]:
                count += 1
                out[y][x], queue = count, deque([(y, x)])
                while queue:
                    a, b = queue.popleft()
                    for c, d in ((a + i, b + j) for i in (-1, 0, 1) for j in (-1, 0, 1)):
                        if 0 <= c < h and 0 <= d < w and not out[c][d] and values[c][d] == values[a][b]:
                            out[c][d] = count
                            queue.append((c, d))
    return torch.tensor(out, dtype=torch.long).view(h, w)


def test_connected_components_match_a_breadth_first_search():
    generator = torch.Generator().manual_seed(0)
    for h, w, k in [(1, 1, 2), (1, 17, 3), (23, 1, 3), (19, 31, 2), (40, 40, 4), (32, 48, 3)]:
        labels = torch.randint(0, k, (h, w), generator=generator)
        assert torch.equal(connected_components(labels), reference_components(labels)), (h, w, k)
    # a square spiral: one long, winding region
    spiral = torch.zeros(41, 41, dtype=torch.long)
    for r in range(0, 20, 2):
        spiral[r, r:41 - r] = spiral[r:41 - r, 40 - r] = spiral[40 - r, r:41 - r] = 1
        spiral[r + 2:41 - r, r] = 1
    assert torch.equal(connected_components(spiral), reference_components(spiral))
    # diagonal contact joins (8-connectivity); different values never join
    checker = torch.tensor([[1, 0, 2], [0, 1, 0], [2, 0, 1]])
    assert connected_components(checker).tolist() == [[1, 0, 2], [0, 1, 0], [3, 0, 1]]


def test_panoptic_from_classes_splits_things_and_keeps_one_segment_per_stuff_class():
    classes = torch.zeros(10, 12, dtype=torch.long)
    classes[:, 8:] = 9  # stuff, two separate bands below
    classes[0:3, 0:3] = 5  # a thing instance
    classes[6:9, 2:6] = 5  # a second instance of the same class
    classes[4, 0] = 5  # a one-pixel instance
    classes[5:10, 0:2] = 7  # a class neither thing nor stuff: no segment
    classes[9, 6:12] = 9
    segments, info = panoptic_from_classes(classes, things=[5], stuff=[9])
    assert info == {1: 5, 2: 5, 3: 5, 4: 9}
    assert segments[0, 0] == 1 and segments[4, 0] == 2 and segments[7, 3] == 3
    assert (segments[classes == 9] == 4).all() and (segments[classes == 7] == 0).all()
    segments, info = panoptic_from_classes(classes, things=[5], stuff=[9], min_area=2)
    assert info == {1: 5, 2: 5, 3: 9} and segments[4, 0] == 0
