"""diffkit.autoencoder (chapter 11): the closed-form Gaussian KL, the reparameterised draw, the KL-autoencoder's
shapes and loss, the scale factor, and a short training run that must beat the mean digit."""

import functools

import pytest
import torch

from diffkit import autoencoder, training

F64 = torch.float64


def test_gaussian_kl_exact_values():
    zero = torch.zeros(3, 5, dtype=F64)
    torch.testing.assert_close(autoencoder.gaussian_kl(zero, zero), torch.zeros(3, dtype=F64))
    mean = torch.tensor([[1.0, 2.0]], dtype=F64)  # unit variance: KL = |mu|^2 / 2
    torch.testing.assert_close(autoencoder.gaussian_kl(mean, torch.zeros_like(mean)), torch.tensor([2.5], dtype=F64))
    logvar = torch.full((1, 1), 2.0, dtype=F64).log()  # sigma^2 = 2, mu = 0: (2 - 1 - log 2) / 2
    expected = (2.0 - 1.0 - torch.tensor(2.0, dtype=F64).log()) / 2
    torch.testing.assert_close(autoencoder.gaussian_kl(torch.zeros_like(logvar), logvar), expected.reshape(1))


def test_gaussian_kl_matches_torch_distributions_and_sums_over_grid_dimensions():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(4, 2, 3, 3, generator=g, dtype=F64), torch.randn(4, 2, 3, 3, generator=g, dtype=F64)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(autoencoder.gaussian_kl(mean, logvar), expected)


def test_gaussian_kl_against_monte_carlo_in_standard_errors():
    g = torch.Generator().manual_seed(1)
    mean, logvar = torch.randn(5, 4, generator=g, dtype=F64), torch.randn(5, 4, generator=g, dtype=F64)
    z = torch.stack([autoencoder.reparameterize(mean, logvar, g) for _ in range(20_000)])
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    ratio = (q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)).sum(-1)
    mc, se = ratio.mean(0), ratio.std(0) / 20_000**0.5
    assert ((mc - autoencoder.gaussian_kl(mean, logvar)) / se).abs().max() < 5
    slip = 0.5 * (mean**2 + (0.5 * logvar).exp() - 1 - logvar).sum(-1)  # the std where the variance belongs
    assert ((mc - slip) / se).abs().max() > 5


def test_reparameterize_has_the_asked_mean_and_variance_and_passes_gradients():
    g = torch.Generator().manual_seed(2)
    mean = torch.tensor([[0.5, -1.0]], dtype=F64).expand(50_000, 2)
    logvar = torch.tensor([[0.0, 2.0 * torch.tensor(3.0).log().item()]], dtype=F64).expand(50_000, 2)  # sd 1, 3
    z = autoencoder.reparameterize(mean, logvar, g)
    se_mean = torch.tensor([1.0, 3.0], dtype=F64) / 50_000**0.5
    assert ((z.mean(0) - mean[0]) / se_mean).abs().max() < 5
    var_se = torch.tensor([1.0, 9.0], dtype=F64) * (2 / 50_000) ** 0.5
    assert ((z.var(0) - torch.tensor([1.0, 9.0], dtype=F64)) / var_se).abs().max() < 5
    m, lv = torch.zeros(3, 2, requires_grad=True), torch.zeros(3, 2, requires_grad=True)
    autoencoder.reparameterize(m, lv).sum().backward()
    assert m.grad is not None and lv.grad is not None and lv.grad.abs().sum() > 0


def test_encode_decode_shapes():
    ae = autoencoder.KLAutoencoder()
    x = torch.randn(3, 1, 28, 28)
    mean, logvar = ae.encode(x)
    assert mean.shape == logvar.shape == (3, 4, 7, 7)
    assert ae.decode(mean).shape == (3, 1, 28, 28) and ae(x).shape == (3, 1, 28, 28)
    assert autoencoder.encode_dataset(ae, x, batch_size=2).shape == (3, 4, 7, 7)
    assert autoencoder.decode(ae, mean, 2.0).abs().max() <= 1.0


def test_latent_scale_gives_unit_variance():
    z = 3.7 * torch.randn(500, 4, 7, 7, generator=torch.Generator().manual_seed(3)) + 0.2
    s = autoencoder.latent_scale(z)
    assert abs((s * z).std().item() - 1.0) < 1e-6
    assert abs(s - 1 / 3.7) < 0.01


def test_decode_undoes_the_scale():
    ae = autoencoder.KLAutoencoder()
    z = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(autoencoder.decode(ae, 5.0 * z, 5.0, clamp=None), ae.eval().decode(z))


def test_ae_loss_is_reconstruction_plus_beta_kl():
    ae = autoencoder.KLAutoencoder().double()
    x = torch.randn(4, 1, 28, 28, dtype=F64)
    l0 = autoencoder.ae_loss(ae, x, generator=torch.Generator().manual_seed(0), beta=0.0)
    l1 = autoencoder.ae_loss(ae, x, generator=torch.Generator().manual_seed(0), beta=2.0)
    kl = autoencoder.gaussian_kl(*ae.encode(x)).mean()
    torch.testing.assert_close(l1 - l0, 2.0 * kl)


def test_a_briefly_trained_autoencoder_beats_the_mean_image():
    g = torch.Generator().manual_seed(4)
    x = (torch.rand(256, 1, 28, 28, generator=g) > 0.5).float().mul(2).sub(1)
    x = torch.nn.functional.avg_pool2d(x, 7).repeat_interleave(7, 2).repeat_interleave(7, 3)  # blocky images
    config = training.TrainConfig(steps=150, batch_size=64, lr=3e-3, ema_decay=0.0)
    ae = training.train(autoencoder.KLAutoencoder(), functools.partial(autoencoder.ae_loss, beta=1e-3), x, config,
                        progress=False)
    with torch.no_grad():
        err = (ae.decode(ae.encode(x)[0]) - x).square().mean().item()
    baseline = (x - x.mean(0)).square().mean().item()
    assert err < 0.5 * baseline, (err, baseline)


@pytest.mark.parametrize("call,error,match", [
    (lambda: autoencoder.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4)), ValueError, "same shape"),
    (lambda: autoencoder.gaussian_kl([0.0], torch.zeros(2, 4)), TypeError, "mean"),
    (lambda: autoencoder.reparameterize(torch.zeros(3), torch.zeros(3)), ValueError, "mean"),
    (lambda: autoencoder.KLAutoencoder().encode(torch.zeros(2, 3, 28, 28)), ValueError, "x must"),
    (lambda: autoencoder.KLAutoencoder().encode(torch.zeros(2, 1, 30, 30)), ValueError, "divisible by 4"),
    (lambda: autoencoder.KLAutoencoder().decode(torch.zeros(2, 3, 7, 7)), ValueError, "4 channels"),
    (lambda: autoencoder.latent_scale(torch.ones(4, 4)), ValueError, "all equal"),
    (lambda: autoencoder.latent_scale(torch.tensor([[float("nan"), 1.0]])), ValueError, "latents"),
    (lambda: autoencoder.decode(autoencoder.KLAutoencoder(), torch.zeros(1, 4, 7, 7), 0.0), ValueError, "scale"),
    (lambda: autoencoder.ae_loss(autoencoder.KLAutoencoder(), torch.zeros(2, 1, 28, 28), beta=-1.0), ValueError,
     "beta"),
    (lambda: autoencoder.KLAutoencoder(latent_channels=0), ValueError, "latent_channels"),
])
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
