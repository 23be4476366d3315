import pytest
import torch

from diffkit import grids


@pytest.mark.parametrize("spacing", grids.SPACINGS)
@pytest.mark.parametrize("n", [1, 7, 10, 50, 1000])
def test_grids_decrease_and_end_at_clean_data(spacing, n):
    ts = grids.ddpm_grid(n, 1000, spacing)
    assert len(ts) == n + 1 and ts[-1].item() == 0.0
    assert (ts[1:] < ts[:-1]).all()
    steps = ts[:-1] * 1000
    assert torch.allclose(steps, steps.round()) and steps.min() >= 1  # on the training grid


def test_only_leading_misses_the_noisiest_step():
    assert grids.ddpm_grid(10, 1000, "trailing")[0].item() == 1.0
    assert grids.ddpm_grid(10, 1000, "linspace")[0].item() == 1.0
    assert grids.ddpm_grid(10, 1000, "leading")[0].item() == pytest.approx(0.901)


def test_full_grid_is_every_step():
    for spacing in grids.SPACINGS:
        expected = torch.cat([torch.arange(1000, 0, -1, dtype=torch.float64) / 1000, torch.zeros(1, dtype=torch.float64)])
        torch.testing.assert_close(grids.ddpm_grid(1000, 1000, spacing), expected)


def test_uniform():
    ts = grids.uniform(4)
    torch.testing.assert_close(ts, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))


def test_bad_input():
    with pytest.raises(ValueError, match="n_steps must be <= n_train"):
        grids.ddpm_grid(20, 10)
    with pytest.raises(ValueError, match="spacing must be one of"):
        grids.ddpm_grid(5, 10, "karras")
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        grids.ddpm_grid(0, 10)
