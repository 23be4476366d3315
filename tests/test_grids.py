import pytest
import torch

from diffkit import grids, paths


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


# --- grids placed by noise level (chapter 6) -----------------------------------------------------------------------
_PATHS = [paths.VPPath(), paths.SubVPPath(), paths.VEPath(0.01, 10.0), paths.CosinePath(), paths.LinearPath(),
          paths.DiscretePath.from_schedule("linear", 1000)]
_IDS = ["vp", "subvp", "ve", "cosine", "linear", "ddpm"]


@pytest.mark.parametrize("path", _PATHS, ids=_IDS)
def test_time_at_log_snr_inverts_the_path(path):
    ts = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)
    back = grids.time_at_log_snr(path, path.log_snr(ts))
    tol = 1e-9 if not isinstance(path, paths.DiscretePath) else 1e-6  # piecewise in t between training steps
    torch.testing.assert_close(back, ts, rtol=0, atol=tol)


@pytest.mark.parametrize("path", _PATHS, ids=_IDS)
def test_log_snr_grid_is_uniform_in_log_snr(path):
    ts = grids.log_snr(12, path)
    assert ts.shape == (13,) and ts[0] == 1.0 and ts[-1] == 0.0 and ts[-2] == grids.default_t_min(path)
    assert (ts[1:] < ts[:-1]).all()
    lam = path.log_snr(ts[:-1])
    if not torch.isfinite(lam[0]):  # alpha_1 = 0: the spacing starts at the floor, the grid at t = 1
        lam = torch.cat([torch.tensor([grids.LOG_SNR_FLOOR], dtype=torch.float64), lam[1:]])
    steps = lam.diff()
    torch.testing.assert_close(steps, steps.mean().expand_as(steps), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("path", _PATHS, ids=_IDS)
def test_karras_grid_is_uniform_in_the_rho_th_root_of_the_noise_to_signal_ratio(path):
    rho = 7.0
    ts = grids.karras(12, path, rho=rho)
    assert ts.shape == (13,) and ts[0] == 1.0 and ts[-1] == 0.0
    lam = path.log_snr(ts[:-1])
    lam[0] = lam[0] if torch.isfinite(lam[0]) else grids.LOG_SNR_FLOOR
    root = torch.exp(-lam / (2 * rho))  # (sigma / alpha)^(1 / rho)
    steps = root.diff()
    torch.testing.assert_close(steps, steps.mean().expand_as(steps), rtol=1e-6, atol=1e-9)
    dense = grids.karras(12, path, rho=1e4)  # rho -> infinity: uniform in log-SNR
    torch.testing.assert_close(dense, grids.log_snr(12, path), rtol=0, atol=1e-3)
    assert (ts[1:-2] > grids.log_snr(12, path)[1:-2]).all()  # rho = 7: shorter steps at high noise


def test_noise_level_grids_bad_input():
    path = paths.VPPath()
    with pytest.raises(ValueError, match="t_min must be below t_max"):
        grids.log_snr(10, path, t_min=0.5, t_max=0.4)
    with pytest.raises(ValueError, match="rho"):
        grids.karras(10, path, rho=0.0)
    with pytest.raises(ValueError, match="n_steps"):
        grids.log_snr(0, path)
    with pytest.raises(TypeError, match="path"):
        grids.karras(10, "vp")
    assert grids.default_t_min(paths.DiscretePath.from_schedule("linear", 500)) == 1 / 500
    torch.testing.assert_close(grids.log_snr(1, path), torch.tensor([1.0, 0.0], dtype=torch.float64))
