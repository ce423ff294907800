"""What `seggpt-lab predict` segments: query images with their prompts, or one video with its first-frame mask.

Inputs are checked when the data module is built, before the model loads, each problem in one line; a folder
gives its image files, sorted (others are counted in a log line). Items are plain records (paths, output names).
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import TypedDict

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from seggpt_lab.canvas import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


class PredictItem(TypedDict):
    """One unit of prediction: an image query, or a whole video (frames as a folder or a file)."""

    kind: str  # "image" or "video"
    path: str  # the query image, the video file or the frame folder
    name: str  # output name, unique within the run (the file stem; a counter is added on clashes)


def expand(entries: list[str], what: str) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image files, in the given order."""
    files: list[Path] = []
    for entry in entries:
        path = Path(entry)
        if any(c in entry for c in "*?[") and not path.exists():
            matches = sorted(Path(p) for p in glob.glob(entry, recursive=True) if Path(p).is_file())
            if not matches:
                raise FileNotFoundError(f"{what}: the pattern {entry} matches no file")
            files += matches
        elif path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file())
            images = [p for p in inside if p.suffix.lower() in IMAGE_SUFFIXES]
            if len(images) < len(inside):
                log.warning("%s: skipped %d files without an image suffix (%s)", path, len(inside) - len(images),
                            ", ".join(IMAGE_SUFFIXES))
            if not images:
                raise ValueError(f"{what}: the folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += images
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{what}: {path}: no such file or folder")
    return files


class PredictDataModule(LightningDataModule):
    """Queries and prompts for `seggpt-lab predict`; see the module docstring.

    Args:
        queries: query images: files, folders or glob patterns.
        prompts: prompt images (files, folders or patterns), each with its mask in `prompt_masks` (same order).
        prompt_masks: the prompts' masks: binary, class-index or colour images (`seggpt_lab.images.prompt_masks`).

        prompt_file: a tuned prompt file instead of prompts (labels are then its class ids).
        video: a video file or a folder of frames, instead of queries; `first_mask` gives its objects.
        first_mask: the first frame's mask (a DAVIS-style palette PNG for several objects).
        max_frames: read at most this many frames of the video.
    """

    def __init__(self, queries: list[str] | None = None, prompts: list[str] | None = None,
                 prompt_masks: list[str] | None = None, prompt_file: str | None = None, video: str | None = None,
                 first_mask: str | None = None, max_frames: int | None = None) -> None:
        super().__init__()
        if bool(queries) == bool(video):
            raise ValueError("data: give query images (data.queries) or a video (data.video), not both or neither")
        self.items: list[PredictItem] = []
        self.prompts: list[Path] = []
        self.prompt_masks: list[Path] = []
        self.prompt_file, self.first_mask, self.max_frames = prompt_file, first_mask, max_frames
        if video:
            path = Path(video)
            if not path.exists():
                raise FileNotFoundError(f"data.video: {path}: no such video file or frame folder")
            if first_mask is None or not Path(first_mask).is_file():
                raise FileNotFoundError(f"data.first_mask: {first_mask}: a video needs its first frame's mask file")
            self.items = [PredictItem(kind="video", path=str(path), name=path.stem)]
            return
        if (prompt_file is None) == (not prompts):
            raise ValueError("data: give prompt images with masks (data.prompts, data.prompt_masks) or a tuned prompt "
                             "file (data.prompt_file), not both or neither")
        if prompt_file is not None and not Path(prompt_file).is_file():
            raise FileNotFoundError(f"data.prompt_file: {prompt_file}: no such prompt file")
        if prompts:
            self.prompts = expand(prompts, "data.prompts")
            self.prompt_masks = expand(prompt_masks or [], "data.prompt_masks") if prompt_masks else []
            if len(self.prompts) != len(self.prompt_masks):
                raise ValueError(f"data: {len(self.prompts)} prompt images but {len(self.prompt_masks)} prompt masks; "
                                 "give one mask per prompt image, in the same order")
        names: dict[str, int] = {}
        for path in expand(queries, "data.queries"):
            count = names.get(path.stem, 0)
            names[path.stem] = count + 1
            self.items.append(PredictItem(kind="image", path=str(path),
                                          name=path.stem if count == 0 else f"{path.stem}-{count}"))

    def predict_dataloader(self) -> DataLoader:
        # batches of one, unwrapped: the prediction writer then knows each item's index
        return DataLoader(self.items, batch_size=1, shuffle=False, collate_fn=_only)


def _only(batch: list[PredictItem]) -> PredictItem:
    return batch[0]
