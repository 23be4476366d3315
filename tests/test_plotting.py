import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from diffkit.plotting import grid_pixels, image_grid

matplotlib.use("Agg")


def _expected_tile(u):
    """round(255 u) for u in [0, 1], computed independently of the module (numpy, float64)."""
    return np.floor(255 * np.clip(u, 0, 1) + 0.5).astype(np.uint8)


def test_saved_png_holds_the_input_pixels_grey_in_pm1(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 4, 3, generator=g) * 2.4 - 1.2  # [-1.2, 1.2]: some values to clip
    x[0, 0, 0, 0] = -1.0
    x[0, 0, 0, 1] = 0.0
    pixels = image_grid(x, nrow=3, path=tmp_path / "grid.png", padding=1)
    png = np.asarray(Image.open(tmp_path / "grid.png"))
    assert png.dtype == np.uint8 and png.shape == (1 + 2 * (4 + 1), 1 + 3 * (3 + 1)) and np.array_equal(png, pixels)
    for i in range(5):
        r, k = divmod(i, 3)
        tile = png[1 + r * 5: 1 + r * 5 + 4, 1 + k * 4: 1 + k * 4 + 3]
        assert np.array_equal(tile, _expected_tile((x[i, 0].double().numpy() + 1) / 2))
    assert png[1, 1] == 0 and png[1, 2] == 128  # -1 is black, 0 is mid grey (127.5 rounds up)
    assert (png[0, :] == 255).all() and (png[:, 0] == 255).all()  # white padding
    assert (png[6:, 9:] == 255).all()  # the empty sixth cell


def test_rgb_in_unit_range(tmp_path):
    x = torch.rand(2, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    image_grid(x, nrow=2, path=tmp_path / "rgb.png", padding=0)
    png = np.asarray(Image.open(tmp_path / "rgb.png"))
    assert png.shape == (2, 4, 3)
    assert np.array_equal(png[:, 2:], _expected_tile(x[1].permute(1, 2, 0).double().numpy()))


def test_draws_on_the_given_axis():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    x = -torch.ones(4, 1, 2, 2)
    pixels = image_grid(x, nrow=2, ax=ax, title="samples")
    assert np.array_equal(ax.images[0].get_array(), pixels) and ax.get_title() == "samples"
    plt.close(fig)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        grid_pixels(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3 \\(RGB\\) channels"):
        grid_pixels(torch.zeros(3, 2, 8, 8))
    with pytest.raises(ValueError, match="nrow must be an integer >= 1"):
        grid_pixels(torch.zeros(3, 1, 8, 8), nrow=0)
    with pytest.raises(ValueError, match="is a directory"):
        image_grid(torch.zeros(1, 1, 2, 2), path=tmp_path)
