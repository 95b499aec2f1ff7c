"""Sample artefacts: PNG grids, denoising GIFs, progressive-x0 strips. numpy + PIL only.

All images are uint8 (N, H, W, C) with C = 1 or 3 (bench.datasets.from_model_range makes them
from model outputs).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _check(images, what="images") -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{what}: expected uint8 (N, H, W, C) with C = 1 or 3; "
                         f"got {images.dtype} {images.shape}")
    return images


def make_grid(images, nrow: int | None = None, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """Tile N images into one uint8 (H', W', C) picture, `nrow` images per row (default ~sqrt(N))."""
    images = _check(images)
    n, h, w, c = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    if nrow < 1:
        raise ValueError(f"nrow={nrow} is invalid; valid: a positive integer")
    ncol_images, nrow_images = min(nrow, n), math.ceil(n / nrow)
    grid = np.full((padding + nrow_images * (h + padding), padding + ncol_images * (w + padding), c),
                   pad_value, np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top:top + h, left:left + w] = im
    return grid


def _to_pil(picture: np.ndarray):
    from PIL import Image  # only when writing a file: keeps the import of this module light

    return Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture)


def save_grid(images, path, nrow: int | None = None, padding: int = 2, scale: int = 1) -> Path:
    """Write a PNG grid of uint8 (N, H, W, C) images; scale > 1 enlarges (nearest) tiny images."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _enlarge(_to_pil(make_grid(images, nrow, padding)), scale).save(path, format="PNG")
    return path


def _enlarge(im, scale: int):
    from PIL import Image  # only when writing a file: keeps the import of this module light

    if scale < 1:
        raise ValueError(f"scale={scale} is invalid; valid: a positive integer")
    return im if scale == 1 else im.resize((im.width * scale, im.height * scale), Image.NEAREST)


def denoise_frame_indices(num_steps: int, num_frames: int) -> list[int]:
    """Which of the sampler's steps (0 = pure noise x_T ... num_steps-1 = the final x_0) to show
    in a denoising GIF. The picture only emerges in the last part of the chain, so frames are
    spread quadratically: sparse early, dense late (index = last * (1 - (1 - u)^2), u uniform in
    [0, 1]). Strictly increasing, first and last step always included."""
    if num_steps < 1 or num_frames < 1:
        raise ValueError(f"num_steps={num_steps}, num_frames={num_frames}: both must be >= 1")
    last = num_steps - 1
    if num_frames >= num_steps:
        return list(range(num_steps))
    if num_frames == 1:
        return [last]
    u = np.linspace(0.0, 1.0, num_frames)
    wanted = np.rint(last * (1.0 - (1.0 - u) ** 2)).astype(int)
    # Rounding can repeat an index where frames are dense; push repeats forward, and keep room
    # so the k-th frame from the end is at most last - k.
    out = []
    for k, idx in enumerate(wanted):
        lo = out[-1] + 1 if out else 0
        hi = last - (num_frames - 1 - k)
        out.append(int(min(max(idx, lo), hi)))
    return out


def save_gif(frames, path, duration_ms: int = 80, last_frame_ms: int | None = 1500,
             scale: int = 1, loop: int = 0) -> Path:
    """Animated GIF from a list of uint8 pictures (H, W, C) or (H, W) (e.g. make_grid outputs of
    x_t at the steps from denoise_frame_indices). The last frame is held for last_frame_ms so
    the result can be seen before the loop restarts."""
    if len(frames) == 0:
        raise ValueError("save_gif: no frames")
    pictures, frames_shape = [], None
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.ndim == 2:
            f = f[..., None]
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] not in (1, 3):
            raise ValueError(f"frame {i}: expected uint8 (H, W[, C]); got {f.dtype} {f.shape}")
        if pictures and f.shape != frames_shape:
            raise ValueError(f"frame {i}: shape {f.shape} differs from frame 0 {frames_shape}")
        frames_shape = f.shape
        pictures.append(_enlarge(_to_pil(f), scale))
    durations = [duration_ms] * len(pictures)
    if last_frame_ms is not None:
        durations[-1] = last_frame_ms
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # PIL merges identical consecutive frames into one (adding their durations): the timing
    # is kept, the stored frame count can be lower than len(frames).
    pictures[0].save(path, format="GIF", save_all=True, append_images=pictures[1:],
                     duration=durations, loop=loop, optimize=False)
    return path


def save_strip(x0_predictions, path, padding: int = 2, scale: int = 1) -> Path:
    """PNG of progressive x0 predictions: uint8 (T, H, W, C) -> one row of T images, or
    (T, B, H, W, C) -> B rows (one per sample), T columns (steps, left = noisiest)."""
    x = np.asarray(x0_predictions)
    if x.ndim == 4:
        x = x[:, None]
    if x.ndim != 5:
        raise ValueError(f"x0_predictions: expected (T, H, W, C) or (T, B, H, W, C); got {x.shape}")
    steps, batch = x.shape[:2]
    rows_first = x.transpose(1, 0, 2, 3, 4).reshape(steps * batch, *x.shape[2:])
    return save_grid(rows_first, path, nrow=steps, padding=padding, scale=scale)
