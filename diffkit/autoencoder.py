r"""Latent diffusion's autoencoder (chapter 11): a small KL-regularised autoencoder, its loss, latent scaling.

* :func:`gaussian_kl` — the closed form :math:`\mathrm{KL}(\mathcal N(\mu, \mathrm{diag}\,\sigma^2)\,\|\,\mathcal N(0, I))
  = \tfrac12\sum_j(\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2)` (chapter 11's ``eq-kl-prior``).
* :func:`reparameterize` — :math:`z = \mu + \sigma\odot\varepsilon`, :math:`\varepsilon\sim\mathcal N(0, I)`.
* :class:`KLAutoencoder` — convolutional encoder :math:`x \mapsto (\mu, \log\sigma^2)` on a :math:`H/4\times W/4`
  grid and a decoder back to pixels, as in latent diffusion (Rombach et al., 2022), at MNIST size.
* :func:`ae_loss` — :math:`\lVert x - D(z)\rVert^2 + \beta\,\mathrm{KL}`, per image, averaged over the batch
  (chapter 11's ``eq-ae-loss``).
* :func:`encode_dataset`, :func:`latent_scale`, :func:`decode` — latents for diffusion, LDM's scale factor
  :math:`1/\mathrm{std}(z)`, and the way back to pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_finite, check_number, check_positive_int, check_tensor

__all__ = ["gaussian_kl", "reparameterize", "KLAutoencoder", "ae_loss", "encode_dataset", "latent_scale",
           "decode"]


def _check_pair(mean: Tensor, logvar: Tensor) -> None:
    check_tensor("mean", mean, min_ndim=2)
    check_tensor("logvar", logvar, min_ndim=2)
    if mean.shape != logvar.shape:
        raise ValueError(f"mean and logvar must have the same shape, got {tuple(mean.shape)} and "
                         f"{tuple(logvar.shape)}")


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    r"""KL(N(mean, diag exp(logvar)) || N(0, I)) for each row (chapter 11, ``eq-kl-prior``):
    :math:`\tfrac12\sum_j(\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2)`, summed over every dimension but the first.

    ``mean`` and ``logvar`` have the same shape (B, ...); returns (B,).  ``logvar`` is :math:`\log\sigma^2`, the log
    of the *variance*: the commonest slip is to treat it as :math:`\log\sigma`."""
    _check_pair(mean, logvar)
    per_dim = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)
    return per_dim.flatten(1).sum(1)


def reparameterize(mean: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r""":math:`z = \mu + \sigma\odot\varepsilon` with :math:`\sigma = \exp(\tfrac12\log\sigma^2)` and
    :math:`\varepsilon\sim\mathcal N(0, I)` drawn from ``generator`` (chapter 11, ``eq-reparam``): a sample of
    :math:`\mathcal N(\mu, \mathrm{diag}\,\sigma^2)` that is differentiable in :math:`\mu` and :math:`\log\sigma^2`."""
    _check_pair(mean, logvar)
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + (0.5 * logvar).exp() * eps


class KLAutoencoder(nn.Module):
    r"""A KL-regularised convolutional autoencoder (chapter 11; Rombach et al., 2022, at MNIST size).

    The encoder maps a (B, C, H, W) image through two stride-2 convolutions to a (B, 2k, H/4, W/4) grid, split
    into the posterior's mean :math:`\mu` and log-variance :math:`\log\sigma^2` (k = ``latent_channels``); the
    decoder mirrors it back to (B, C, H, W).  A 28x28x1 digit becomes a 7x7x4 latent (196 numbers for 784)."""

    def __init__(self, in_channels: int = 1, latent_channels: int = 4, channels: tuple[int, int] = (16, 32),
                 logvar_range: tuple[float, float] = (-30.0, 20.0)):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.latent_channels = check_positive_int("latent_channels", latent_channels)
        if len(channels) != 2:
            raise ValueError(f"channels must be a pair (c1, c2), got {channels!r}")
        c1, c2 = (check_positive_int(f"channels[{i}]", c) for i, c in enumerate(channels))
        self.logvar_range = (float(logvar_range[0]), float(logvar_range[1]))
        self._config = {"in_channels": in_channels, "latent_channels": latent_channels,
                        "channels": [c1, c2], "logvar_range": list(self.logvar_range)}
        act = nn.SiLU
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), act(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), act(),  # H/2
            nn.Conv2d(c2, c2, 4, stride=2, padding=1), act(),  # H/4
            nn.Conv2d(c2, 2 * latent_channels, 3, padding=1))
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, c2, 3, padding=1), act(),
            nn.ConvTranspose2d(c2, c2, 4, stride=2, padding=1), act(),  # H/2
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), act(),  # H
            nn.Conv2d(c1, in_channels, 3, padding=1))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) images -> the posterior's ``(mean, logvar)``, each (B, k, H/4, W/4)."""
        check_tensor("x", x, ndim=4)
        if x.shape[1] != self.in_channels or x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W) with H and W divisible by 4, got "
                             f"{tuple(x.shape)}")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(*self.logvar_range)

    def decode(self, z: Tensor) -> Tensor:
        """(B, k, h, w) latents -> (B, C, 4h, 4w) images (unclamped)."""
        check_tensor("z", z, ndim=4)
        if z.shape[1] != self.latent_channels:
            raise ValueError(f"z must have {self.latent_channels} channels (B, {self.latent_channels}, h, w), got "
                             f"shape {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Encode, draw :math:`z` by :func:`reparameterize`, decode."""
        mean, logvar = self.encode(x)
        return self.decode(reparameterize(mean, logvar, generator))


def ae_loss(model: KLAutoencoder, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None,
            *, beta: float = 1e-3) -> Tensor:
    r"""The KL-autoencoder's loss (chapter 11, ``eq-ae-loss``), per image and averaged over the batch:
    :math:`\lVert x - D(\mu + \sigma\odot\varepsilon)\rVert^2 + \beta\,\mathrm{KL}(q(z\mid x)\,\|\,\mathcal N(0, I))`.

    The squared error is summed over pixels (a Gaussian decoder of unit variance, up to constants), so
    ``beta = 1`` is a plain VAE's negative ELBO and a small ``beta`` is latent diffusion's weak KL.  ``y`` is
    ignored (the signature of :class:`diffkit.training.Trainer`'s ``loss_fn``)."""
    check_number("beta", beta, low=0.0)
    check_tensor("x", x, ndim=4)
    mean, logvar = model.encode(x)
    recon = model.decode(reparameterize(mean, logvar, generator))
    return (recon - x).square().flatten(1).sum(1).mean() + beta * gaussian_kl(mean, logvar).mean()


@torch.no_grad()
def encode_dataset(model: KLAutoencoder, x: Tensor, *, batch_size: int = 500, sample: bool = False,
                   generator: torch.Generator | None = None) -> Tensor:
    """The latents of a data set, in batches: the posterior means, or draws from the posterior if ``sample``."""
    check_tensor("x", x, ndim=4)
    check_positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    out = []
    for batch in x.split(batch_size):
        mean, logvar = model.encode(batch)
        out.append(reparameterize(mean, logvar, generator) if sample else mean)
    model.train(was_training)
    return torch.cat(out)


def latent_scale(latents: Tensor) -> float:
    r"""Latent diffusion's scale factor :math:`s = 1/\mathrm{std}(z)` over every entry of ``latents``
    (chapter 11, ``eq-scale-factor``): diffusion runs on :math:`s z`, whose entries have unit variance, the
    variance chapter 3's path assumes of its data."""
    check_tensor("latents", latents, min_ndim=2)
    check_finite("latents", latents)
    if latents.numel() < 2:
        raise ValueError(f"latents must hold at least two numbers to have a spread, got shape {tuple(latents.shape)}")
    std = latents.double().std().item()
    if std == 0:
        raise ValueError("latents are all equal: their standard deviation is 0, so no scale factor exists")
    return 1.0 / std


@torch.no_grad()
def decode(model: KLAutoencoder, z_scaled: Tensor, scale: float, *, batch_size: int = 500,
           clamp: float | None = 1.0) -> Tensor:
    r"""Pixels from scaled latents: :math:`D(z/s)`, in batches, clamped to ``[-clamp, clamp]`` (None: not)."""
    check_tensor("z_scaled", z_scaled, ndim=4)
    check_number("scale", scale, low=0.0, low_open=True)
    check_positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    out = torch.cat([model.decode(z / scale) for z in z_scaled.split(batch_size)])
    model.train(was_training)
    return out if clamp is None else out.clamp(-clamp, clamp)
