r"""Generative adversarial networks and the games they play (chapter 1, *Before diffusion*).

The GAN game (Goodfellow et al., 2014): a generator :math:`G` maps noise :math:`z\sim\mathcal N(0, I)` to samples,
a discriminator :math:`D(x) = \mathrm{sigmoid}(\ell(x))` says how likely :math:`x` is real, and

.. math:: \min_G \max_D\ V(D, G) = \mathbb E_{x\sim p_\mathrm{data}}[\log D(x)] + \mathbb E_{z}[\log(1 - D(G(z)))].

* :func:`optimal_discriminator`, :func:`value_function`, :func:`js_divergence` — the closed forms of chapter 1:
  :math:`D^* = p_\mathrm{data}/(p_\mathrm{data} + p_g)` and :math:`V(D^*, G) = 2\,\mathrm{JS}(p_\mathrm{data}\,\|\,p_g)
  - \log 4`, for densities given on a grid (or probability vectors);
* :func:`bend_gaps` — how much :math:`V` drops when a discriminator's logit is bent by small bumps placed over the
  whole grid, beside the drop a maximum predicts to second order: the check that :math:`D^*` is the maximiser;
* :func:`discriminator_loss`, :func:`generator_loss` — the losses on the discriminator's *logits* :math:`\ell`,
  written with ``softplus`` so they stay finite however confident :math:`D` is; the generator's loss is the
  ``"saturating"`` :math:`\mathbb E\log(1 - D(G(z)))` of the minimax game or the ``"non_saturating"``
  :math:`-\mathbb E\log D(G(z))` used in practice;
* :class:`Generator`, :class:`Discriminator`, :class:`GANConfig`, :func:`train_gan` — small MLPs for 2-D data and
  a seeded training loop with ``"simultaneous"`` or ``"alternating"`` updates and a step or time budget;
* :func:`bilinear_game`, :func:`bilinear_update_matrix`, :func:`bilinear_invariant` — gradient descent–ascent on
  :math:`\min_x\max_y\ xy`, the smallest game on which simultaneous steps spiral out and alternating steps cycle
  (Mescheder et al., 2018);
* :func:`mode_coverage` — how many modes of a mixture a set of samples covers, and how many samples land on one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_choice, check_finite, check_number, check_positive_int, check_tensor

__all__ = [
    "Generator", "Discriminator", "discriminator_loss", "generator_loss", "GENERATOR_LOSSES", "UPDATES",
    "optimal_discriminator", "value_function", "js_divergence", "bend_gaps", "GANConfig", "GANRun", "train_gan",
    "bilinear_update_matrix", "bilinear_game", "bilinear_invariant", "ModeCoverage", "mode_coverage",
]

#: The generator losses :func:`generator_loss` knows.
GENERATOR_LOSSES = ("non_saturating", "saturating")
#: How :func:`train_gan` and :func:`bilinear_game` interleave the two players' steps.
UPDATES = ("simultaneous", "alternating")


# --- the two networks ---------------------------------------------------------------------------------------------
def _mlp(d_in: int, d_out: int, hidden: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else hidden, hidden), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.Linear(hidden, d_out))


class Generator(nn.Module):
    r"""``Generator(latent_dim, dim, hidden, depth)``: :math:`G(z)`, (B, latent_dim) -> (B, dim); an MLP with
    ``depth`` hidden layers of width ``hidden`` and LeakyReLU(0.2) activations (chapter 1)."""

    def __init__(self, latent_dim: int = 2, dim: int = 2, hidden: int = 128, depth: int = 3):
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.dim = check_positive_int("dim", dim)
        self.net = _mlp(latent_dim, dim, check_positive_int("hidden", hidden), check_positive_int("depth", depth))

    def forward(self, z: Tensor) -> Tensor:
        check_tensor("z", z, ndim=2)
        if z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.net(z)  # (B, dim)


class Discriminator(nn.Module):
    r"""``Discriminator(dim, hidden, depth)``: the logit :math:`\ell(x)` of :math:`D(x) = \mathrm{sigmoid}(\ell(x))`,
    (B, dim) -> (B,); an MLP like :class:`Generator`'s (chapter 1)."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.net = _mlp(dim, 1, check_positive_int("hidden", hidden), check_positive_int("depth", depth))

    def forward(self, x: Tensor) -> Tensor:
        check_tensor("x", x, ndim=2)
        if x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        return self.net(x).squeeze(-1)  # (B,) logits


# --- losses --------------------------------------------------------------------------------------------------------
def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    r"""The discriminator's loss :math:`-\mathbb E\log D(x) - \mathbb E\log(1 - D(G(z)))`, i.e. :math:`-V(D, G)`,
    from the logits of real and generated samples: :math:`-\log\mathrm{sigmoid}(\ell) = \mathrm{softplus}(-\ell)`
    and :math:`-\log(1 - \mathrm{sigmoid}(\ell)) = \mathrm{softplus}(\ell)` (chapter 1)."""
    check_tensor("real_logits", real_logits)
    check_tensor("fake_logits", fake_logits)
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor, kind: str = "non_saturating") -> Tensor:
    r"""The generator's loss from the logits of generated samples (chapter 1):

    * ``"saturating"``: :math:`\mathbb E\log(1 - D(G(z))) = -\mathbb E\,\mathrm{softplus}(\ell)`, the minimax game's;
      its gradient :math:`-\mathrm{sigmoid}(\ell)` per logit vanishes where :math:`D` confidently rejects fakes;
    * ``"non_saturating"``: :math:`-\mathbb E\log D(G(z)) = \mathbb E\,\mathrm{softplus}(-\ell)`; its gradient
      :math:`-(1 - \mathrm{sigmoid}(\ell))` tends to :math:`-1` there.
    """
    check_tensor("fake_logits", fake_logits)
    check_choice("kind", kind, GENERATOR_LOSSES)
    if kind == "saturating":
        return -F.softplus(fake_logits).mean()
    return F.softplus(-fake_logits).mean()


# --- closed forms --------------------------------------------------------------------------------------------------
def _densities(p_data: Tensor, p_g: Tensor) -> tuple[Tensor, Tensor]:
    for name, p in (("p_data", p_data), ("p_g", p_g)):
        check_finite(name, check_tensor(name, p))
        if (p < 0).any():
            raise ValueError(f"{name} must be a density (values >= 0), got a minimum of {p.min().item():.3g}")
    if p_data.shape != p_g.shape:
        raise ValueError(f"p_data and p_g must have the same shape, got {tuple(p_data.shape)} and {tuple(p_g.shape)}")
    return p_data, p_g


def optimal_discriminator(p_data: Tensor, p_g: Tensor) -> Tensor:
    r""":math:`D^*(x) = p_\mathrm{data}(x) / (p_\mathrm{data}(x) + p_g(x))`, the discriminator that maximises
    :math:`V(D, G)` for a fixed generator, from the two densities at the same points (chapter 1).  Where both are
    0 any value is optimal; this returns 1/2 there."""
    p_data, p_g = _densities(p_data, p_g)
    total = p_data + p_g
    return torch.where(total > 0, p_data / total.clamp_min(torch.finfo(total.dtype).tiny), torch.full_like(total, 0.5))


def value_function(p_data: Tensor, p_g: Tensor, d: Tensor, dx: float = 1.0) -> Tensor:
    r""":math:`V(D, G) = \int p_\mathrm{data}\log D + p_g\log(1 - D)\,dx` by a Riemann sum over grid points spaced
    ``dx`` (``dx = 1`` for probability vectors), with :math:`0\log 0 = 0` (chapter 1).  ``d`` is a probability;
    where :math:`p_g` has lighter tails than :math:`p_\mathrm{data}`, :math:`D^*` rounds to exactly 1 in float64 and
    :math:`\log(1 - D^*)` to :math:`-\infty`, so give the wider density the role of :math:`p_g` in such checks."""
    p_data, p_g = _densities(p_data, p_g)
    check_tensor("d", d)
    if d.shape != p_data.shape:
        raise ValueError(f"d must have the shape of p_data, {tuple(p_data.shape)}, got {tuple(d.shape)}")
    if ((d < 0) | (d > 1)).any():
        raise ValueError("d must be a probability (values in [0, 1]): pass sigmoid(logits), not the logits")
    check_number("dx", dx, low=0.0, low_open=True)
    fake_term = torch.where(p_g > 0, p_g * torch.log1p(-d), torch.zeros_like(p_g))  # log1p: exact for small d
    return (torch.xlogy(p_data, d) + fake_term).sum() * dx


def js_divergence(p: Tensor, q: Tensor, dx: float = 1.0) -> Tensor:
    r""":math:`\mathrm{JS}(p\,\|\,q) = \tfrac12\mathrm{KL}(p\,\|\,m) + \tfrac12\mathrm{KL}(q\,\|\,m)`,
    :math:`m = (p+q)/2`, in nats, by a Riemann sum (``dx = 1`` for probability vectors); between 0 and :math:`\log 2` (chapter 1)."""
    p, q = _densities(p, q)
    check_number("dx", dx, low=0.0, low_open=True)
    m = (p + q) / 2
    safe_m = m.clamp_min(torch.finfo(m.dtype).tiny)

    def kl(a: Tensor) -> Tensor:
        return (torch.xlogy(a, a) - torch.xlogy(a, safe_m)).sum() * dx

    return (kl(p) + kl(q)) / 2


def bend_gaps(p_data: Tensor, p_g: Tensor, d: Tensor, x: Tensor, dx: float, centres: Tensor | list[float],
              sizes: Tensor | list[float], *, width: float = 1.0) -> tuple[Tensor, Tensor]:
    r"""Bend the discriminator ``d`` and measure how much :math:`V` drops (chapter 1).

    For each centre :math:`c` and size :math:`\delta`, the bent discriminator is
    :math:`d_\delta = \mathrm{sigmoid}(\mathrm{logit}(d) + \delta\,e^{-(x - c)^2/w^2})` (``w`` = ``width``), and the
    first tensor holds the gaps :math:`V(d) - V(d_\delta)` of :func:`value_function`.  The second holds the drop
    that a maximum predicts to second order,

    .. math:: \frac{\delta^2}{2}\int \frac{p_\mathrm{data}\,p_g}{p_\mathrm{data} + p_g}\,e^{-2(x - c)^2/w^2}\,dx,

    since :math:`\partial^2_\ell\,[a\log\mathrm{sigmoid}(\ell) + b\log(1 - \mathrm{sigmoid}(\ell))] =
    -(a + b)D(1 - D) = -ab/(a + b)` at :math:`D = D^*`.  For ``d`` = :math:`D^*` every gap is positive and
    gap / prediction tends to 1 as :math:`\delta \to 0`; a ``d`` that is wrong where a bump reaches changes
    :math:`V` to first order in :math:`\delta` there, so one sign of :math:`\delta` gives a negative gap.  Where the
    prediction is below the rounding of the sum (about :math:`10^{-15}` for :math:`V` near 1), neither says anything:
    :math:`V` cannot tell discriminators apart where either density vanishes.  Both tensors are
    (len(centres), len(sizes)), float64; ``x`` holds the grid points (spaced ``dx``) of the densities."""
    p_data, p_g = _densities(p_data, p_g)
    check_tensor("x", x)
    check_tensor("d", d)
    if x.shape != p_data.shape or d.shape != p_data.shape:
        raise ValueError(f"x and d must have the shape of p_data, {tuple(p_data.shape)}, got {tuple(x.shape)} and "
                         f"{tuple(d.shape)}")
    check_number("dx", dx, low=0.0, low_open=True)
    width = check_number("width", width, low=0.0, low_open=True)
    centres = torch.as_tensor(centres, dtype=torch.float64).flatten()
    sizes = torch.as_tensor(sizes, dtype=torch.float64).flatten()
    if centres.numel() == 0 or sizes.numel() == 0:
        raise ValueError("centres and sizes must each hold at least one value")
    x, d = x.double(), d.double()
    logit = torch.logit(d)
    v0 = value_function(p_data, p_g, d, dx)
    total = p_data + p_g
    weight = torch.where(total > 0, p_data * p_g / total.clamp_min(torch.finfo(total.dtype).tiny),
                         torch.zeros_like(total))  # -d^2 V / d logit^2 at D*
    gaps = torch.empty(centres.numel(), sizes.numel(), dtype=torch.float64)
    predicted = torch.empty_like(gaps)
    for i, c in enumerate(centres):
        bump = torch.exp(-(((x - c) / width) ** 2))
        curvature = (weight * bump**2).sum() * dx
        for j, size in enumerate(sizes):
            gaps[i, j] = v0 - value_function(p_data, p_g, torch.sigmoid(logit + size * bump), dx)
            predicted[i, j] = 0.5 * size**2 * curvature
    return gaps, predicted


# --- training ------------------------------------------------------------------------------------------------------
@dataclass
class GANConfig:
    """Everything that determines a :func:`train_gan` run (chapter 1).

    Adam with ``betas = (0.5, 0.999)`` as in DCGAN; one discriminator step per generator step; ``snapshot_every``
    > 0 records ``n_snapshot`` samples from a fixed noise batch every that many steps (for a slider)."""

    steps: int
    batch_size: int = 256
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    latent_dim: int = 2
    hidden: int = 128
    depth: int = 3
    loss: str = "non_saturating"
    updates: str = "alternating"
    seed: int = 0
    snapshot_every: int = 0
    n_snapshot: int = 1000

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("batch_size", self.batch_size)
        check_number("lr_g", self.lr_g, low=0.0, low_open=True)
        check_number("lr_d", self.lr_d, low=0.0, low_open=True)
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be a pair of Adam decay rates in [0, 1), got {self.betas!r}")
        check_positive_int("latent_dim", self.latent_dim)
        check_positive_int("hidden", self.hidden)
        check_positive_int("depth", self.depth)
        check_choice("loss", self.loss, GENERATOR_LOSSES)
        check_choice("updates", self.updates, UPDATES)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")
        check_positive_int("snapshot_every", self.snapshot_every, minimum=0)
        check_positive_int("n_snapshot", self.n_snapshot)


@dataclass
class GANRun:
    """The outcome of :func:`train_gan`: the two networks and, per step, the losses and the mean of
    :math:`D(x)` on real and :math:`D(G(z))` on generated samples; ``snapshots`` are ``(step, samples)`` pairs."""

    generator: Generator
    discriminator: Discriminator
    config: GANConfig
    steps: int = 0
    seconds: float = 0.0
    d_loss: list[float] = field(default_factory=list)
    g_loss: list[float] = field(default_factory=list)
    d_real: list[float] = field(default_factory=list)
    d_fake: list[float] = field(default_factory=list)
    snapshots: list[tuple[int, Tensor]] = field(default_factory=list)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples :math:`G(z)`, :math:`z\\sim\\mathcal N(0, I)` (float32, (n, dim))."""
        check_positive_int("n", n)
        z = torch.randn(n, self.config.latent_dim, generator=generator)
        return self.generator.eval()(z)


def _data_fn(data: Tensor | Callable) -> Callable[[int, torch.Generator], Tensor]:
    if isinstance(data, Tensor):
        check_tensor("data", data, ndim=2)
        if data.shape[0] == 0:
            raise ValueError("data is empty")
        return lambda n, g: data[torch.randint(data.shape[0], (n,), generator=g)]
    if not callable(data):
        raise TypeError(f"data must be an (N, D) tensor or a function data(n, generator), got {type(data).__name__}")

    def draw(n: int, g: torch.Generator) -> Tensor:
        out = data(n, g)
        x = out[0] if isinstance(out, tuple) else out
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"data(n, generator) must return an (n, D) tensor (or a pair whose first entry is one), "
                             f"got {tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        return x.float()

    return draw


def train_gan(data: Tensor | Callable, config: GANConfig, *, max_seconds: float | None = None) -> GANRun:
    r"""Train a :class:`Generator` against a :class:`Discriminator` on ``data`` (an (N, D) tensor, or a function
    ``data(n, generator)`` returning an (n, D) tensor or an ``(x, y)`` pair) for ``config.steps`` steps, or until
    ``max_seconds`` of wall time have passed (chapter 1).

    Each step draws a real batch :math:`x` and noise :math:`z`, and:

    * ``"simultaneous"``: both gradients are taken at the current parameters, then both players step;
    * ``"alternating"``: the discriminator steps first, then the generator's gradient is taken against the
      *updated* discriminator (on the same :math:`z`).

    The discriminator minimises :func:`discriminator_loss`, the generator :func:`generator_loss` of kind
    ``config.loss``.  Reproducible: the initial weights, the batches and the noise all come from ``config.seed``."""
    if not isinstance(config, GANConfig):
        raise TypeError(f"config must be a diffkit.gan.GANConfig, got {type(config).__name__}")
    if max_seconds is not None:
        check_number("max_seconds", max_seconds, low=0.0, low_open=True)
    draw = _data_fn(data)
    g = torch.Generator().manual_seed(config.seed)
    dim = draw(2, torch.Generator().manual_seed(config.seed)).shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the initial weights are part of the run
        gen = Generator(config.latent_dim, dim, config.hidden, config.depth)
        disc = Discriminator(dim, config.hidden, config.depth)
    opt_g = torch.optim.Adam(gen.parameters(), lr=config.lr_g, betas=config.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr_d, betas=config.betas)
    run = GANRun(gen, disc, config)
    g_fixed = torch.Generator().manual_seed(config.seed + 1)  # the snapshots' noise, the same at every snapshot
    z_fixed = torch.randn(config.n_snapshot, config.latent_dim, generator=g_fixed)

    def snapshot() -> None:
        with torch.no_grad():
            run.snapshots.append((run.steps, gen(z_fixed)))

    if config.snapshot_every:
        snapshot()
    t0 = time.perf_counter()
    while run.steps < config.steps and (max_seconds is None or time.perf_counter() - t0 < max_seconds):
        x = draw(config.batch_size, g)
        z = torch.randn(config.batch_size, config.latent_dim, generator=g)
        fake = gen(z)
        real_logits, fake_logits = disc(x), disc(fake.detach())
        d_loss = discriminator_loss(real_logits, fake_logits)
        if config.updates == "simultaneous":  # both gradients at the current point, then both steps
            g_loss = generator_loss(disc(fake), config.loss)
            grads_d = torch.autograd.grad(d_loss, list(disc.parameters()))
            grads_g = torch.autograd.grad(g_loss, list(gen.parameters()))
            for p, gr in [*zip(disc.parameters(), grads_d), *zip(gen.parameters(), grads_g)]:
                p.grad = gr
            opt_d.step()
            opt_g.step()
        else:  # the discriminator first, then the generator against the updated discriminator
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = generator_loss(disc(fake), config.loss)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
        if not (math.isfinite(d_loss.item()) and math.isfinite(g_loss.item())):
            raise FloatingPointError(f"the GAN losses became NaN or infinite at step {run.steps + 1}: lower the lrs")
        run.steps += 1
        run.d_loss.append(d_loss.item())
        run.g_loss.append(g_loss.item())
        run.d_real.append(torch.sigmoid(real_logits).mean().item())
        run.d_fake.append(torch.sigmoid(fake_logits).mean().item())
        if config.snapshot_every and run.steps % config.snapshot_every == 0:
            snapshot()
    run.seconds = time.perf_counter() - t0
    return run


# --- the bilinear game ---------------------------------------------------------------------------------------------
def bilinear_update_matrix(lr: float, updates: str = "simultaneous") -> Tensor:
    r"""The matrix :math:`M` of one gradient descent–ascent step :math:`(x, y) \mapsto M (x, y)` on
    :math:`\min_x\max_y\ xy` with step size :math:`\eta` = ``lr`` (chapter 1), float64:

    * ``"simultaneous"``: :math:`x' = x - \eta y`, :math:`y' = y + \eta x`, so
      :math:`M = \begin{pmatrix}1 & -\eta\\ \eta & 1\end{pmatrix}`, eigenvalues :math:`1 \pm i\eta` of modulus
      :math:`\sqrt{1+\eta^2}`: every step multiplies the distance to the equilibrium by exactly that;
    * ``"alternating"``: :math:`x' = x - \eta y`, :math:`y' = y + \eta x'`, so
      :math:`M = \begin{pmatrix}1 & -\eta\\ \eta & 1-\eta^2\end{pmatrix}`, :math:`\det M = 1`; for :math:`\eta < 2`
      its eigenvalues have modulus 1 and the iterates cycle on an ellipse (see :func:`bilinear_invariant`).
    """
    lr = check_number("lr", lr, low=0.0, low_open=True)
    check_choice("updates", updates, UPDATES)
    corner = 1.0 - lr**2 if updates == "alternating" else 1.0
    return torch.tensor([[1.0, -lr], [lr, corner]], dtype=torch.float64)


def bilinear_game(x0: float, y0: float, lr: float, steps: int, updates: str = "simultaneous") -> Tensor:
    r"""The iterates :math:`(x_k, y_k)`, :math:`k = 0..` ``steps``, of gradient descent on :math:`x` and ascent on
    :math:`y` for :math:`f(x, y) = xy` (:math:`\partial_x f = y`, :math:`\partial_y f = x`), as a (steps + 1, 2)
    float64 tensor; each step is the one of :func:`bilinear_update_matrix` (chapter 1)."""
    x, y = check_number("x0", x0), check_number("y0", y0)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    check_positive_int("steps", steps)
    check_choice("updates", updates, UPDATES)
    out = [(x, y)]
    for _ in range(steps):
        x_new = x - lr * y  # x descends along df/dx = y
        y = y + lr * (x_new if updates == "alternating" else x)  # y ascends along df/dy = x
        x = x_new
        out.append((x, y))
    return torch.tensor(out, dtype=torch.float64)


def bilinear_invariant(xy: Tensor, lr: float) -> Tensor:
    r""":math:`Q(x, y) = x^2 + y^2 - \eta\,xy`, which alternating steps on :math:`\min_x\max_y\ xy` leave exactly
    unchanged (chapter 1); ``xy`` is (..., 2).  For :math:`\eta < 2`, :math:`Q` is positive definite, so the
    iterates stay on one ellipse: they neither converge nor diverge."""
    check_tensor("xy", xy)
    if xy.shape[-1] != 2:
        raise ValueError(f"xy must have shape (..., 2), got {tuple(xy.shape)}")
    lr = check_number("lr", lr, low=0.0, low_open=True)
    x, y = xy[..., 0], xy[..., 1]
    return x**2 + y**2 - lr * x * y


# --- evaluation ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModeCoverage:
    """``counts[k]``: samples nearer than ``radius`` to centre ``k``; a mode is ``covered`` when it holds at least
    ``min_share`` of the samples it would get if all modes were equally likely; ``share_near``: the fraction of
    samples within ``radius`` of some centre (the rest land between modes)."""

    counts: tuple[int, ...]
    covered: int
    n_modes: int
    share_near: float

    def __str__(self) -> str:
        return f"{self.covered} of {self.n_modes} modes covered, {self.share_near:.0%} of samples on a mode"


def mode_coverage(samples: Tensor, centres: Tensor, radius: float, *, min_share: float = 0.25) -> ModeCoverage:
    r"""How many modes of a mixture with ``centres`` (K, D) the ``samples`` (N, D) cover (chapter 1): each sample
    is assigned to its nearest centre if it lies within ``radius`` (e.g. 3 standard deviations); mode :math:`k` is
    covered when it receives at least ``min_share`` :math:`\cdot N/K` samples."""
    check_finite("samples", check_tensor("samples", samples, ndim=2))
    check_tensor("centres", centres, ndim=2)
    if samples.shape[1] != centres.shape[1]:
        raise ValueError(f"samples and centres must have the same number of columns, got {samples.shape[1]} and "
                         f"{centres.shape[1]}")
    radius = check_number("radius", radius, low=0.0, low_open=True)
    min_share = check_number("min_share", min_share, low=0.0, low_open=True)
    dist = torch.cdist(samples.double(), centres.double())  # (N, K)
    nearest, k = dist.min(dim=1)
    near = nearest < radius
    counts = torch.bincount(k[near], minlength=centres.shape[0])
    need = min_share * samples.shape[0] / centres.shape[0]
    return ModeCoverage(tuple(int(c) for c in counts), int((counts >= need).sum()), centres.shape[0],
                        float(near.double().mean()))
