"""Converters from each dataset's native layout to the shard schema, one module per dataset family.

`SOURCES` maps the `seggpt-lab-data convert SOURCE` names to "module:Class"; classes are imported on
first use, so a converter's optional dependencies never slow the others down.
"""

from __future__ import annotations

from importlib import import_module

from datamodules.sources.base import Source

SOURCES: dict[str, str] = {
    # the paper's training sources (SegGPT, Wang et al. 2023, §4.1)

    "coco-instance": "coco:CocoInstance",
    "coco-panoptic": "coco:CocoPanoptic",
    "coco-stuff": "coco:CocoStuff",
    "ade20k": "ade20k:ADE20K",
    "voc": "voc:VOC",
    "cityscapes": "cityscapes:Cityscapes",
    "lip": "lip:LIP",
    "paco": "paco:PACO",
    "chase": "retina:CHASE",
    "drive": "retina:DRIVE",
    "hrf": "retina:HRF",
    "stare": "retina:STARE",
    "isaid": "isaid:ISAID",
    "loveda": "loveda:LoveDA",
    # evaluation sources
    "fss1000": "fewshot:FSS1000",
    "pascal5i": "fewshot:Pascal5i",
    "coco20i": "fewshot:Coco20i",
    "davis": "video:DAVIS",
    "youtube-vos": "video:YouTubeVOS",
    "mose": "video:MOSE",
    # a user's own data, and the embedded default data
    "folder": "folder:Folder",
    "synthetic": "synthetic:Synthetic",
}


def get_source(name: str) -> type[Source]:
    """The Source class for a `seggpt-lab-data convert` name."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; choose one of: {', '.join(SOURCES)}")
    module, cls = SOURCES[name].split(":")
    return getattr(import_module(f"datamodules.sources.{module}"), cls)
