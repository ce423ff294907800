"""Reading inputs: images, prompt masks and video frames from paths, PIL images, arrays or tensors, with
one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageSequence

from seggpt_lab.canvas import IMAGE_SUFFIXES
from seggpt_lab.palette import build_palette, decode

ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor
MaskKind = Literal["auto", "binary", "index", "color"]


def open_image(path: str | Path) -> Image.Image:
    """An image file, fully read; a one-line error names a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        image = Image.open(path)
        image.load()
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not an image this program can read ({e})") from None
    return image


def _as_array(image: ImageLike) -> np.ndarray:
    """Any image-like input -> (H, W) or (H, W, C) numpy array (a PIL "P" image keeps its indices)."""
    if isinstance(image, str | Path):
        image = open_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGBA") if image.mode in ("LA", "PA") else image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        return (image.permute(1, 2, 0) if image.ndim == 3 and image.shape[0] in (1, 3, 4) else image).numpy()
    if isinstance(image, np.ndarray):
        return image
    raise TypeError(f"expected an image path, PIL image, array or tensor, got {type(image).__name__}")


def load_rgb(image: ImageLike) -> Image.Image:
    """An RGB PIL image from a path, PIL image, (H, W[, 3 | 4]) array or (3, H, W) tensor.

    Alpha is dropped, grey is repeated, and 16-bit or float images are scaled to 8 bits (16-bit by 1/257,
    float in [0, 1] by 255) instead of being clipped, as PIL's own conversion would.
    """
    if isinstance(image, str | Path):
        image = open_image(image)
    if isinstance(image, Image.Image) and image.mode in ("RGB", "L", "P", "RGBA", "1", "CMYK", "LA", "YCbCr"):
        return image.convert("RGB")
    array = _as_array(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {tuple(array.shape)}")
    if array.dtype == np.uint16 or (array.dtype.kind in "iu" and array.max(initial=0) > 255):
        array = array.astype(np.float64) / 257
    elif array.dtype.kind == "f":
        array = array * 255 if array.max(initial=0) <= 1 else array
    elif array.dtype == bool:
        array = array * 255
    array = np.clip(np.round(array), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(array[..., :3]))


def to_tensor(image: Image.Image, size: tuple[int, int], resample: Image.Resampling) -> torch.Tensor:
    """PIL image -> (3, h, w) float in [0, 1], resized to size = (h, w) with PIL (as the official demo does)."""
    image = image.convert("RGB").resize((size[1], size[0]), resample)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


MAX_INDEX_LABEL = 255  # an 8-bit palette PNG's indices: every label an 8-bit mask can hold


def prompt_masks(masks: list[ImageLike], kind: MaskKind = "auto"
                 ) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """Prompt masks -> their label maps (H_i, W_i) int64, the palette (K + 1, 3) uint8 that decodes predictions,
    and the masks as they go on the canvas, (H_i, W_i, 3) uint8: an RGB mask as given (the official demo uses
    the user's colours and anti-aliasing unchanged), a one-channel mask painted with the palette (as
    transformers' processor does with `num_labels`).

    Kinds ("auto" decides per the first mask):
    - "binary": foreground 1 (non-zero; above half of white, 127 or 32767, when other values than 0 and 1
      occur), painted white.
    - "index": each value is a label (a palette PNG's indices, a class-index map), painted with `build_palette`.
    - "color": each colour that covers at least 1% of the coloured pixels of all masks is a label (black is
      background); other pixels (anti-aliased edges) take the nearest of these colours.

    "auto": a palette ("P") image -> index; an RGB(A) image whose channels differ -> color; otherwise one grey
    channel -> binary when it is bool, {0, 1}, or 8-bit reaching 255 or 16-bit reaching 65535 (white on black,
    anti-aliased or not: the official examples), and index otherwise. A class map that uses 255 (void) needs
    kind="index" or a palette PNG. Index masks hold at most MAX_INDEX_LABEL labels (what colours can tell apart).
    """
    if not masks:
        raise ValueError("no prompt masks given")
    arrays, names = [], [str(m) if isinstance(m, str | Path) else "a prompt mask" for m in masks]
    for mask in masks:
        mask = open_image(mask) if isinstance(mask, str | Path) else mask
        is_palette = isinstance(mask, Image.Image) and mask.mode == "P"
        array = _as_array(mask)
        if array.ndim == 3 and array.shape[-1] == 4:
            array = array[..., :3]
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim == 3 and array.shape[-1] == 3 and (array == array[..., :1]).all():
            array = array[..., 0]  # grey stored as RGB
        if array.ndim not in (2, 3) or 0 in array.shape:
            raise ValueError(f"expected an (H, W) or (H, W, 3) mask, got shape {tuple(array.shape)}")
        arrays.append((array, is_palette))
    if kind == "auto":
        first, is_palette = arrays[0]
        if is_palette:
            kind = "index"
        elif first.ndim == 3:
            kind = "color"
        else:
            white = first.dtype in (np.uint8, np.uint16) and first.max(initial=0) == np.iinfo(first.dtype).max
            kind = "binary" if first.dtype == bool or white or first.max(initial=0) <= 1 else "index"
    if kind == "color":
        pixels = np.concatenate([_rgb(a).reshape(-1, 3) for a, _ in arrays])
        colours, counts = np.unique(pixels[pixels.any(1)], axis=0, return_counts=True)
        order = np.argsort(-counts, kind="stable")  # the most frequent colour is label 1
        keep = colours[order][counts[order] >= 0.01 * counts.sum()]
        palette = np.concatenate([np.zeros((1, 3), np.uint8), keep.astype(np.uint8)])
        labels = []
        for array, _ in arrays:
            rgb = torch.from_numpy(_rgb(array).astype(np.float32) / 255).permute(2, 0, 1)
            labels.append(decode(rgb, torch.from_numpy(palette)).numpy())
        return labels, palette, [_rgb(a) for a, _ in arrays]
    labels = []
    for (array, _), name in zip(arrays, names, strict=True):
        if array.ndim == 3:
            raise ValueError(f"a {kind} mask has one channel; got a colour image (use kind='color')")
        if kind == "binary":
            half = 32767 if array.dtype == np.uint16 else 127  # of white: 65535 for 16-bit masks, 255 otherwise
            threshold = half if array.dtype != bool and array.max(initial=0) > 1 else 0
            labels.append((array > threshold).astype(np.int64))
        else:
            if array.dtype.kind not in "biu" or array.min(initial=0) < 0:
                raise ValueError("an index mask holds non-negative integers")
            if array.max(initial=0) > MAX_INDEX_LABEL:  # a palette that large is colours no one can tell apart
                raise ValueError(f"{name}: an index mask with labels up to {array.max()}, more than "
                                 f"{MAX_INDEX_LABEL}: give a binary mask (white on black) or a palette PNG")
            labels.append(array.astype(np.int64))
    palette = build_palette(max(max(int(label.max(initial=0)) for label in labels), 1)).numpy()
    canvas = [_rgb(a) if a.ndim == 3 or a.dtype == np.uint8 and kind == "binary" and not a.max(initial=0) <= 1
              else palette[lab] for (a, _), lab in zip(arrays, labels, strict=True)]
    return labels, palette, canvas


def _rgb(mask: np.ndarray) -> np.ndarray:
    """A mask array as RGB uint8, grey repeated."""
    return np.ascontiguousarray(np.repeat(mask[..., None], 3, -1) if mask.ndim == 2 else mask).astype(np.uint8)


def read_frames(frames: str | Path | list[ImageLike], max_frames: int | None = None) -> list[torch.Tensor]:
    """A folder of frames (sorted by name), a list of frames or a video file -> (3, H, W) uint8 tensors."""
    path = None
    if isinstance(frames, str | Path):
        path = Path(frames)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"{path}: the folder holds no frames ({', '.join(IMAGE_SUFFIXES)})")
            frames = files
        elif not path.is_file():
            raise FileNotFoundError(f"{path}: no such video file or frame folder")
        elif path.suffix.lower() == ".gif":
            frames = [f.convert("RGB") for f in ImageSequence.Iterator(open_image(path))]
        else:
            frames = _decode_video(path)
    frames = list(frames)[:max_frames]
    if not frames:
        raise ValueError(f"{path or 'the frame list'}: the video has no frames")
    tensors = [torch.from_numpy(np.asarray(load_rgb(f)).copy()).permute(2, 0, 1) for f in frames]
    if len({tuple(t.shape) for t in tensors}) > 1:
        raise ValueError(f"frames differ in size: {sorted({tuple(t.shape[1:]) for t in tensors})}")
    return tensors


def _decode_video(path: Path) -> list[Image.Image]:
    try:
        import av
    except ImportError:
        raise ValueError(f"{path}: reading {path.suffix} videos needs PyAV (pip install av); or give a folder of "
                         "frames or a GIF") from None
    try:
        with av.open(str(path)) as container:
            video = container.streams.video  # none in an audio-only file: no frames, not an IndexError
            return [frame.to_image() for frame in container.decode(video[0])] if video else []
    except (av.error.FFmpegError, ValueError) as e:
        raise ValueError(f"{path}: not a video PyAV can read ({e})") from None
