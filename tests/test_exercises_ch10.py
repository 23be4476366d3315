"""Chapter 10's exercises (diffkit.exercises.ch10) against the diffkit code each one teaches: the target
conversions, the eps-loss's weight, the principal components of diffkit.pca and the paths' SNR.  (That each reference
passes its checker and each planted slip gets its own diagnosis is tested with every exercise's in
tests/test_exercises.py.)"""

import pytest
import torch

from diffkit import paths, pca, targets
from diffkit.exercises import ch10

F64 = torch.float64
EXERCISES = {e.name: e for e in ch10.EXERCISES}


def _reference(name):
    namespace = {"torch": torch, "Tensor": torch.Tensor}
    exec(EXERCISES[name].source, namespace)  # the source shown to readers
    return namespace[name]


@pytest.mark.parametrize("path", [paths.DiscretePath.from_schedule("linear", 1000), paths.LinearPath()],
                         ids=lambda p: type(p).__name__)
def test_eps_from_x0_is_diffkits_conversion(path):
    g = torch.Generator().manual_seed(0)
    x_t, x0_hat = torch.randn(50, 3, generator=g, dtype=F64), torch.randn(50, 3, generator=g, dtype=F64)
    t = 0.05 + 0.9 * torch.rand(50, generator=g, dtype=F64)
    alpha, sigma = path.alpha(t)[:, None], path.sigma(t)[:, None]
    torch.testing.assert_close(_reference("eps_from_x0")(x_t, x0_hat, alpha, sigma),
                               targets.convert(x0_hat, "x0", "eps", x_t, t, path))


def test_explained_variance_matches_the_covariance_eigenvalues():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 6, generator=g, dtype=F64) @ torch.randn(6, 6, generator=g, dtype=F64) + 3.0
    eig = torch.linalg.eigvalsh(torch.cov(x.T)).flip(0)  # independent route: eigenvalues, largest first
    torch.testing.assert_close(_reference("explained_variance")(x), eig.cumsum(0) / eig.sum())
    torch.testing.assert_close(_reference("explained_variance")(x), pca.explained_variance(x))


def test_rf_time_at_snr_inverts_the_paths_snr():
    t = torch.linspace(0.02, 0.98, 49, dtype=F64)
    torch.testing.assert_close(_reference("rf_time_at_snr")(paths.LinearPath().snr(t)), t)


def test_x0_mse_from_eps_mse_undoes_the_eps_losss_weight():
    """Chapter 4's eq-weights: the eps-loss is SNR times the x0 error, measured on a model's output."""
    from diffkit import losses

    path = paths.DiscretePath.from_schedule("linear", 1000)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(300, 4, generator=g, dtype=F64), torch.randn(300, 4, generator=g, dtype=F64)
    t = path.sample_t(300, generator=g, dtype=F64)
    net = lambda x, t, y=None: 0.3 * x  # noqa: E731  (any network)
    eps_mse = losses.diffusion_loss(net, x0, path, target="eps", t=t, eps=eps, reduce=False)
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    x_t = a * x0 + s * eps
    x0_mse = (((x_t - s * net(x_t, t)) / a - x0) ** 2).mean(1)
    torch.testing.assert_close(_reference("x0_mse_from_eps_mse")(eps_mse, path.snr(t)), x0_mse)
