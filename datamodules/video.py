"""VideoDataModule: whole videos for semi-supervised video object segmentation, one `VideoSequence` at a time."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.evaluation import EvaluationDataModule
from datamodules.schema import SEM_VOID, Sample
from datamodules.shards import ShardReader
from seggpt_lab.canvas import IGNORE_LABEL, VideoSequence


def video_frames(reader: ShardReader) -> dict[str, list[tuple[int, str]]]:
    """{video id: [(frame number, key), ...] in frame order}, videos in the shard order of their first frame."""
    videos: dict[str, list[tuple[int, str]]] = {}
    for key in reader.keys():
        video = reader.meta(key).get("video")
        if video is None:
            raise ValueError(f"{key}: sample has no video metadata; {reader.index_file} is not a video source")
        videos.setdefault(video["id"], []).append((int(video["frame"]), key))
    return {video: sorted(frames) for video, frames in videos.items()}


def object_label(sample: Sample) -> torch.Tensor:
    """(H, W) long: the instance map's object ids (0 background), IGNORE_LABEL on void; all IGNORE_LABEL on a
    frame without labels (YouTube-VOS and MOSE valid annotate only each object's first frame)."""
    height, width = sample.meta["size"]
    if sample.ins is None:
        return torch.full((height, width), IGNORE_LABEL, dtype=torch.long)
    if sample.ins.max(initial=0) >= IGNORE_LABEL:
        raise ValueError(f"{sample.key}: object id {sample.ins.max()} collides with IGNORE_LABEL {IGNORE_LABEL}")
    label = sample.ins.astype(np.int64)
    if sample.sem is not None:
        label[sample.sem == SEM_VOID] = IGNORE_LABEL
    return torch.from_numpy(label)


class Videos(Dataset):
    """Video i of `videos` ({video id: [(frame, key), ...]}), read from `reader` at native size."""

    def __init__(self, reader: ShardReader, videos: dict[str, list[tuple[int, str]]]) -> None:
        self.reader, self.ids, self.videos = reader, list(videos), videos

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> VideoSequence:
        frames = self.videos[self.ids[i]]
        samples = [self.reader.sample(key) for _, key in frames]
        return VideoSequence(key=self.ids[i], frames=[frame for frame, _ in frames],
                             images=[torch.from_numpy(s.rgb().transpose(2, 0, 1).copy()) for s in samples],
                             labels=torch.stack([object_label(s) for s in samples]))


class VideoDataModule(EvaluationDataModule):
    """The videos of one converted video split (`datamodules.sources.video`), whole: each item is one video, every
    frame in order, labelled with object ids (0 background, IGNORE_LABEL on void and on unannotated frames); the
    first frame's label is the prompt of the semi-supervised protocol (davisvideochallenge/davis2017-evaluation).

    Args:

        index: path of a converted split's `<split>-index.json`.
        max_frames: keep only the first this many frames of each video (quick runs); None: every frame.
        videos: video ids to keep, in the split's order; None: every video.
        num_workers: DataLoader worker processes.
    """

    def __init__(self, index: str, max_frames: int | None = None, videos: list[str] | None = None,
                 num_workers: int = 0) -> None:
        super().__init__()
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.save_hyperparameters()
        self.index, self.max_frames, self.videos, self.num_workers = index, max_frames, videos, num_workers
        self.dataset: Videos | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        reader = ShardReader(self.index)
        found = video_frames(reader)
        missing = [v for v in self.videos or [] if v not in found]
        if missing:
            raise ValueError(f"{self.index}: no video {missing[0]!r} ({len(missing)} of the {len(self.videos)} "
                             f"videos asked for are missing)")
        keep = found if self.videos is None else {v: frames for v, frames in found.items() if v in self.videos}
        self.dataset = Videos(reader, {v: frames[:self.max_frames] for v, frames in keep.items()})
