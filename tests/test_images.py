"""bench/quality/images.py: grids, GIFs and strips reopened with PIL; denoising frame choice."""
import numpy as np
import pytest
from PIL import Image

from bench.quality import images as im


def distinct_images(n, h=6, w=5, c=1):
    # image i is filled with the value 10 * (i + 1): each tile identifiable in the output
    return np.stack([np.full((h, w, c), 10 * (i + 1), np.uint8) for i in range(n)])


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_save_grid_places_each_image(tmp_path, channels, mode):
    images = distinct_images(5, c=channels)
    path = im.save_grid(images, tmp_path / "sub" / "grid.png", nrow=3, padding=2)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == mode
        assert png.size == (2 + 3 * (5 + 2), 2 + 2 * (6 + 2))     # (W, H): 3 columns, 2 rows
        grid = np.asarray(png)
    grid = grid if grid.ndim == 3 else grid[..., None]
    for i in range(5):
        r, c = divmod(i, 3)
        tile = grid[2 + r * 8: 2 + r * 8 + 6, 2 + c * 7: 2 + c * 7 + 5]
        assert (tile == 10 * (i + 1)).all(), i
    assert (grid[0] == 0).all()                                   # padding
    assert (grid[10:, 2 + 2 * 7:] == 0).all()                     # the empty 6th slot


def test_save_grid_scale_and_bad_input(tmp_path):
    path = im.save_grid(distinct_images(4), tmp_path / "g.png", nrow=2, padding=0, scale=3)
    with Image.open(path) as png:
        assert png.size == (2 * 5 * 3, 2 * 6 * 3)
    with pytest.raises(ValueError, match="uint8"):
        im.save_grid(np.zeros((2, 4, 4, 1), np.float32), tmp_path / "f.png")


@pytest.mark.parametrize("num_steps, num_frames", [(1000, 40), (50, 10), (10, 8), (20, 2), (7, 7), (5, 30)])
def test_denoise_frames_increasing_complete_and_denser_at_the_end(num_steps, num_frames):
    frames = im.denoise_frame_indices(num_steps, num_frames)
    assert len(frames) == min(num_steps, num_frames)
    assert frames[0] == 0 and frames[-1] == num_steps - 1
    assert all(b > a for a, b in zip(frames, frames[1:]))
    gaps = np.diff(frames)
    if num_frames < num_steps and len(gaps) >= 4:    # otherwise every step is shown
        assert gaps[0] > gaps[-1]                               # coarse early, fine late
        half = len(frames) // 2
        # more than half the frames show the last half of the chain
        assert sum(f >= (num_steps - 1) / 2 for f in frames) > half


def test_denoise_frames_bad_arguments():
    assert im.denoise_frame_indices(10, 1) == [9]
    with pytest.raises(ValueError):
        im.denoise_frame_indices(0, 5)


@pytest.mark.parametrize("channels", [1, 3])
def test_save_gif_frames_and_durations(tmp_path, channels):
    frames = [im.make_grid(distinct_images(4, c=channels) + k) for k in range(6)]
    path = im.save_gif(frames, tmp_path / "denoise.gif", duration_ms=50, last_frame_ms=700)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 6
        durations = []
        for k in range(gif.n_frames):
            gif.seek(k)
            durations.append(gif.info["duration"])
        assert durations == [50] * 5 + [700]
        gif.seek(5)
        last = np.asarray(gif.convert("L" if channels == 1 else "RGB"))
    # GIF quantises to a palette; these few grey levels survive exactly
    expected = frames[5][..., 0] if channels == 1 else frames[5]
    np.testing.assert_array_equal(last, expected)


def test_save_gif_rejects_mixed_shapes(tmp_path):
    with pytest.raises(ValueError, match="frame 1"):
        im.save_gif([np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.uint8)], tmp_path / "x.gif")
    with pytest.raises(ValueError, match="no frames"):
        im.save_gif([], tmp_path / "y.gif")


def test_save_strip_rows_are_samples_columns_are_steps(tmp_path):
    steps, batch = 4, 3
    # value encodes (step, sample)
    x0 = np.stack([np.stack([np.full((5, 5, 1), 10 * t + s + 1, np.uint8) for s in range(batch)])
                   for t in range(steps)])
    path = im.save_strip(x0, tmp_path / "progressive.png", padding=1)
    with Image.open(path) as png:
        strip = np.asarray(png)
    assert strip.shape == (1 + batch * 6, 1 + steps * 6)
    for t in range(steps):
        for s in range(batch):
            assert strip[1 + s * 6, 1 + t * 6] == 10 * t + s + 1
    single = im.save_strip(x0[:, 0], tmp_path / "one.png", padding=1)
    with Image.open(single) as png:
        assert png.size == (1 + steps * 6, 1 + 6)
