"""Evaluation metrics, each a functional core in a `torchmetrics.Metric` shell whose states are sums (`PromptSwap`:
rows gathered and deduplicated), so results are exact under DDP: `FewShotIoU` (HSNet), `JandF` (DAVIS J&F),
`SemanticIoU` (detectron2), `PanopticQuality` (panopticapi), `PromptSwap` (prompt-following).
"""


from seggpt_lab.metrics.fewshot import FewShotIoU, episode_areas
from seggpt_lab.metrics.panoptic import PanopticQuality, panoptic_scores, panoptic_statistics
from seggpt_lab.metrics.prompt_swap import PromptSwap, role_areas
from seggpt_lab.metrics.semantic import SemanticIoU, confusion_matrix, semantic_scores
from seggpt_lab.metrics.video import (
    JandF,
    boundary_f_measure,
    boundary_map,
    disk_dilation,
    object_j_and_f,
    per_object_statistics,
    region_similarity,
    sequence_j_and_f,
)

__all__ = [
    "FewShotIoU",
    "JandF",
    "PanopticQuality",
    "PromptSwap",
    "SemanticIoU",
    "boundary_f_measure",
    "boundary_map",
    "confusion_matrix",
    "disk_dilation",
    "episode_areas",
    "panoptic_scores",
    "panoptic_statistics",
    "object_j_and_f",
    "per_object_statistics",
    "role_areas",
    "region_similarity",
    "semantic_scores",
    "sequence_j_and_f",
]
