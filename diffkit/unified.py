r"""The unified view (chapter 14): every framework of the course is one Gaussian path
:math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon` and one of five equivalent prediction targets.

* :data:`FRAMEWORKS` names each framework's :math:`\alpha_t`, :math:`\sigma_t` as formulas (sympy), the
  :mod:`diffkit.paths` class that implements it, what its network learns and its own sampler;
  :func:`framework_table` prints them and :func:`path_formula_error` checks each formula against the path.
* :func:`target_coefficients` writes each target as :math:`a\,x_0 + b\,\varepsilon`;
  :func:`conversion_coefficients` solves the :math:`2\times2` system for any conversion
  :math:`\text{dest} = c_x\,x_t + c_p\,\text{pred}`.  Both are plain arithmetic, so they run on floats, tensors
  and sympy symbols alike: :func:`conversion_table` prints the conversion map from them, symbolically, and the
  same coefficients evaluated on a path are checked against :func:`diffkit.targets.convert`.
* :func:`matched_time` and :class:`Reparameterised` move a model from one path to another at equal
  signal-to-noise ratio (:math:`x' = k\,x`, :math:`k = \alpha'_{s}/\alpha_t`), so one network is sampled with
  any framework's sampler: DDIM on any path is exactly Euler on the rectified-flow path re-timed this way.
* :func:`posterior_step` is DDPM's ancestral step written with :math:`\alpha, \sigma` on any path, and the
  ``check_*`` functions are the tests that catch four mistakes common in published code (a wrong
  :math:`v \to \varepsilon` conversion, a time-direction flip, a variance used as a standard deviation,
  :math:`\sigma` vs :math:`\sigma^2` in the score); ``tests/test_unified.py`` runs them on diffkit's functions
  (they pass) and on the planted bugs (they fail).

Time runs from :math:`t = 0` (data) to :math:`t = 1` (noise), as everywhere in diffkit.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from ._checks import as_time, broadcast_like, call_network, check_choice, check_tensor
from .paths import (CosinePath, DiscretePath, GaussianPath, LinearPath, SubVPPath, Time, VEPath, VPPath,
                    check_path, flip_time, flip_velocity)
from .targets import TARGETS, from_x0_eps, to_x0_eps

__all__ = [
    "Framework", "FRAMEWORKS", "target_coefficients", "conversion_coefficients", "conversion_table",
    "framework_table", "path_formula_error", "matched_time", "Reparameterised", "posterior_step",
    "check_v_to_eps", "check_flow_time", "check_posterior_step", "check_score_from_eps", "format_table",
    "flow_time_adapter",
]


# --- the map of targets --------------------------------------------------------------------------------------
def target_coefficients(target: str, alpha: Any, sigma: Any, d_alpha: Any = 0, d_sigma: Any = 0) -> tuple[Any, Any]:
    r"""``(a, b)`` with :math:`\text{target} = a\,x_0 + b\,\varepsilon` on a path with coefficients
    :math:`\alpha_t, \sigma_t` and derivatives :math:`\dot\alpha_t, \dot\sigma_t` (chapter 14):
    :math:`\varepsilon \to (0, 1)`, :math:`x_0 \to (1, 0)`, :math:`v \to (-\sigma, \alpha)`,
    score :math:`\to (0, -1/\sigma)` (Tweedie), velocity :math:`\to (\dot\alpha, \dot\sigma)`.  Plain
    arithmetic: numbers, tensors or sympy symbols."""
    check_choice("target", target, TARGETS)
    return {"eps": (0, 1), "x0": (1, 0), "v": (-sigma, alpha), "score": (0, -1 / sigma),
            "velocity": (d_alpha, d_sigma)}[target]


def conversion_coefficients(source: str, dest: str, alpha: Any, sigma: Any, d_alpha: Any = 0,
                            d_sigma: Any = 0) -> tuple[Any, Any]:
    r"""``(c_x, c_p)`` with :math:`\text{dest} = c_x\,x_t + c_p\,\text{pred}` for a prediction ``pred`` of kind
    ``source`` (chapter 14).  With ``source`` :math:`= a_s x_0 + b_s\varepsilon` and
    :math:`x_t = \alpha x_0 + \sigma\varepsilon`, inverting the :math:`2\times2` system
    (determinant :math:`\Delta = \alpha b_s - \sigma a_s`) gives
    :math:`x_0 = (b_s x_t - \sigma\,\text{pred})/\Delta`, :math:`\varepsilon = (\alpha\,\text{pred} - a_s x_t)/\Delta`,
    and ``dest`` :math:`= a_d x_0 + b_d \varepsilon`.  Plain arithmetic (numbers, tensors, sympy)."""
    check_choice("source", source, TARGETS)
    check_choice("dest", dest, TARGETS)
    a_s, b_s = target_coefficients(source, alpha, sigma, d_alpha, d_sigma)
    a_d, b_d = target_coefficients(dest, alpha, sigma, d_alpha, d_sigma)
    det = alpha * b_s - sigma * a_s
    return (a_d * b_s - b_d * a_s) / det, (b_d * alpha - a_d * sigma) / det


_NAMES = {"eps": "ε", "x0": "x0", "v": "v", "score": "s", "velocity": "u"}


def _symbols() -> tuple[Any, ...]:
    import sympy as sp

    return sp.symbols("α σ α̇ σ̇", positive=True)


def _pretty(expr: Any) -> str:
    """A sympy expression as one readable line: ``α·x``, ``σ²``, ``−``."""
    import sympy as sp

    text = sp.sstr(expr, order="grlex")
    for a, b in (("**2", "²"), ("*", "·"), ("-", "−")):
        text = text.replace(a, b)
    return text


def _linear(first: Any, first_name: str, second: Any, second_name: str) -> str:
    """``first·first_name + second·second_name`` over a common denominator, zero terms dropped, signs pulled
    out: ``(σ·x + α·v)/(α² + σ²)``."""
    import sympy as sp

    a, b = sp.Symbol(first_name), sp.Symbol(second_name)
    num, den = sp.fraction(sp.factor(sp.together(first * a + second * b)))
    num = sp.expand(num)
    terms = []
    for name, sym in ((first_name, a), (second_name, b)):
        c = sp.factor(num.coeff(sym))
        if c == 0:
            continue
        negative = c.could_extract_minus_sign()
        c = -c if negative else c
        body = name if c == 1 else (f"({_pretty(c)})" if isinstance(c, sp.Add) else _pretty(c)) + "·" + name
        terms.append(("−" if negative else "+", body))
    if not terms:
        return "0"
    if len(terms) == 2 and terms[0][0] == "−" and terms[1][0] == "+":  # lead with the positive term
        terms = [("+", terms[1][1]), ("−", terms[0][1])]
    text = ("−" if terms[0][0] == "−" else "") + terms[0][1]
    text += "".join(f" {sign} {body}" for sign, body in terms[1:])
    if den == 1:
        return text
    den_text = f"({_pretty(den)})" if isinstance(den, sp.Add) else _pretty(den)
    return f"({text})/{den_text}" if len(terms) > 1 else f"{text}/{den_text}"


def conversion_table(vp: bool = False) -> list[tuple[str, str, str, str]]:
    r"""The map of targets, generated (chapter 14): one row per target, ``(name, definition in x0 and ε,
    x̂0 from it, ε̂ from it)``, written by sympy from :func:`target_coefficients` and
    :func:`conversion_coefficients` with :math:`x` for :math:`x_t` (``s`` the score, ``u`` the velocity).  Any
    conversion goes through the last two columns.  ``vp=True`` uses :math:`\alpha^2 + \sigma^2 = 1` (DDPM, VP,
    cosine paths)."""
    import sympy as sp

    alpha, sigma, d_alpha, d_sigma = _symbols()
    rows = []
    for target in TARGETS:
        a, b = target_coefficients(target, alpha, sigma, d_alpha, d_sigma)
        cells = [_linear(a, "x0", b, "ε")]
        for dest in ("x0", "eps"):
            cx, cp = conversion_coefficients(target, dest, alpha, sigma, d_alpha, d_sigma)
            if vp:
                cx, cp = (sp.factor(c).subs(alpha**2 + sigma**2, 1) for c in (cx, cp))
            cells.append(_linear(cx, "x", cp, _NAMES[target]))
        rows.append((target, *cells))
    return rows


def format_table(rows: list[tuple], header: tuple[str, ...]) -> str:
    """``rows`` under ``header`` as aligned plain-text columns (two spaces apart), one string."""
    table = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    if len({len(r) for r in table}) != 1:
        raise ValueError("rows must all have as many cells as header")
    widths = [max(_width(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(c + " " * (w - _width(c)) for c, w in zip(r, widths)).rstrip() for r in table)


def _width(text: str) -> int:
    """Printed width: combining marks (the dot of α̇, the hat of x̂) take no column."""
    return sum(not unicodedata.combining(c) for c in text)


# --- the frameworks as paths ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Framework:
    r"""One framework of the course as a Gaussian path: its name, the :mod:`diffkit.paths` object, its
    :math:`\alpha_t`, :math:`\sigma_t` as sympy-readable formulas in ``t`` and the path's parameters (``None``
    for DDPM's product :math:`\sqrt{\bar\alpha_{tN}}`, which has no closed form), what its network learns, its
    own sampler and the chapter that derives it."""

    name: str
    path: GaussianPath
    alpha: str | None
    sigma: str | None
    learns: str
    sampler: str
    chapter: str

    def parameters(self) -> dict[str, float]:
        """The path's numeric parameters by the names the formulas use."""
        return {k: float(v) for k, v in vars(self.path).items() if isinstance(v, (int, float))}


_B = "(beta_min*t + (beta_max - beta_min)*t**2/2)"  # B(t), the integral of the VP-SDE's beta
FRAMEWORKS: tuple[Framework, ...] = (
    Framework("DDPM", DiscretePath.from_schedule("linear", 1000), None, None, "eps", "ddpm", "3"),
    Framework("DDIM", DiscretePath.from_schedule("linear", 1000), None, None, "eps", "ddim", "4"),
    Framework("VP-SDE", VPPath(), f"exp(-{_B}/2)", f"sqrt(1 - exp(-{_B}))", "score", "euler_maruyama", "6"),
    Framework("sub-VP SDE", SubVPPath(), f"exp(-{_B}/2)", f"1 - exp(-{_B})", "score", "euler_maruyama", "6"),
    Framework("VE-SDE / NCSN", VEPath(), "1", "sigma_min*sqrt((sigma_max/sigma_min)**(2*t) - 1)", "score",
              "annealed_langevin", "5, 6"),
    Framework("cosine (iDDPM)", CosinePath(), "cos(pi*t/2)", "sin(pi*t/2)", "v", "ddim", "4"),
    Framework("rectified flow", LinearPath(), "1 - t", "t", "velocity", "euler", "7"),
)


def _formula(framework: Framework, which: str) -> Any:
    import sympy as sp

    text = getattr(framework, which)
    return None if text is None else sp.sympify(text, locals={"beta": sp.Symbol("beta")})


def _display(text: str) -> str:
    """A formula string of :data:`FRAMEWORKS` as printed: ``B(t)`` for the VP integral, Greek letters, ``√``."""
    text = text.replace(_B, "B(t)")
    for a, b in (("sqrt(", "√("), ("**(2*t)", "^(2t)"), ("**2", "²"), ("*", "·"), ("pi", "π"), ("-", "−"),
                 ("beta_", "β_"), ("sigma_", "σ_")):
        text = text.replace(a, b)
    return text


def framework_table() -> list[tuple[str, str, str, str]]:
    r"""One row per framework of :data:`FRAMEWORKS`: ``(name, alpha_t, sigma_t, diffkit path)``, printed from
    the very strings that :func:`path_formula_error` evaluates (``B(t)`` is the VP-SDE's
    :math:`\int_0^t\beta`; chapter 14)."""
    rows = []
    for fw in FRAMEWORKS:
        alpha = "√ᾱ(tN)" if fw.alpha is None else _display(fw.alpha)
        sigma = "√(1 − ᾱ(tN))" if fw.sigma is None else _display(fw.sigma)
        rows.append((fw.name, alpha, sigma, type(fw.path).__name__))
    return rows


def path_formula_error(framework: Framework, ts: Tensor) -> float:
    r"""The largest :math:`|\alpha_t - \alpha^{\text{formula}}_t|` and :math:`|\sigma_t - \sigma^{\text{formula}}_t|`
    over the times ``ts``, the formula evaluated by sympy (independently of :mod:`diffkit.paths`) with the path's
    parameters.  For DDPM (no closed form) the formula is :math:`\sqrt{\prod_{k \le tN}(1 - \beta_k)}` computed
    by a float64 loop over the betas (chapter 14)."""
    import sympy as sp

    ts = check_tensor("ts", ts, ndim=1).to(torch.float64)
    if ((ts < 0) | (ts > 1)).any():
        raise ValueError("ts must lie in [0, 1]")
    path = framework.path
    if framework.alpha is None:
        if not isinstance(path, DiscretePath):
            raise ValueError(f"framework {framework.name!r} has no formula and its path is not a DiscretePath")
        n = (ts * path.n_steps).round().long()
        if ((ts * path.n_steps - n).abs() > 1e-9).any():
            raise ValueError("ts must lie on the DDPM grid n / N for a discrete framework")
        errors = []
        for t, k in zip(ts.tolist(), n.tolist()):
            prod = 1.0
            for beta in path.betas[:k].tolist():
                prod *= 1.0 - beta
            tt = torch.tensor(t, dtype=torch.float64)
            errors += [abs(float(path.alpha(tt)) - prod**0.5), abs(float(path.sigma(tt)) - (1 - prod) ** 0.5)]
        return max(errors)
    t = sp.Symbol("t")
    params = {sp.Symbol(k): v for k, v in framework.parameters().items()}
    worst = 0.0
    for which, exact in (("alpha", path.alpha), ("sigma", path.sigma)):
        f = sp.lambdify(t, _formula(framework, which).subs(params), "math")
        worst = max(worst, max(abs(float(f(v)) - float(exact(torch.tensor(v, dtype=torch.float64))))
                               for v in ts.tolist()))
    return worst


# --- one model, any path -------------------------------------------------------------------------------------
def matched_time(path_from: GaussianPath, t: Time, path_to: GaussianPath) -> tuple[Tensor, Tensor]:
    r"""The time :math:`s` on ``path_to`` with the signal-to-noise ratio of ``t`` on ``path_from``, and the
    scale :math:`k = \alpha'_s/\alpha_t = \sigma'_s/\sigma_t` that carries :math:`x_t` to
    :math:`x'_s = k\,x_t` (chapter 14; float64).  On the rectified-flow path it is closed-form,
    :math:`s = \sigma_t/(\alpha_t + \sigma_t)`, :math:`k = 1/(\alpha_t + \sigma_t)`; elsewhere :math:`s` is found
    by bisection on the log-SNR."""
    check_path(path_from)
    check_path(path_to)
    t = torch.as_tensor(t, dtype=torch.float64)
    a, s = path_from.alpha(t).double(), path_from.sigma(t).double()
    if isinstance(path_to, LinearPath) and path_to.sigma_min == 0.0:
        s_to = s / (a + s)
    else:
        from .grids import time_at_log_snr

        s_to = time_at_log_snr(path_to, path_from.log_snr(t).double())
    k = (path_to.alpha(s_to).double() + path_to.sigma(s_to).double()) / (a + s)
    return s_to, k



class Reparameterised:
    r"""A model trained on ``path_from`` to predict ``source``, seen as a model on ``path_to`` predicting
    ``dest`` (chapter 14): at :math:`(x', s)` it finds the time :math:`t` on ``path_from`` with the same SNR
    (:func:`matched_time`, run backwards), evaluates the network at :math:`x_t = x'/k`, converts its output to
    :math:`(\hat x_0, \hat\varepsilon)` — the same pair on both paths, since
    :math:`x'/\alpha'_s = x_t/\alpha_t = x_0 + (\sigma_t/\alpha_t)\varepsilon` — and returns ``dest`` on
    ``path_to``.  It records ``path_to`` and ``dest`` (``diffkit_objective``), so any sampler runs it on
    ``path_to`` unchanged, guidance included (``null_label`` passes through)."""

    def __init__(self, model: Callable[..., Tensor], path_from: GaussianPath, path_to: GaussianPath,
                 source: str | None = None, dest: str = "velocity"):
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, t, y=None), got {type(model).__name__}")
        check_path(path_from)
        check_path(path_to)
        record = getattr(model, "diffkit_objective", None)
        source = source if source is not None else getattr(record, "target", None)
        if source is None:
            raise ValueError("source must name what model predicts ('eps', 'x0', 'v', 'score' or 'velocity'); "
                             "the model records no target")
        self.model, self.path_from, self.path_to = model, path_from, path_to
        self.source, self.dest = check_choice("source", source, TARGETS), check_choice("dest", dest, TARGETS)
        self.diffkit_objective = SimpleNamespace(path=path_to, target=dest)
        self.null_label = getattr(model, "null_label", None)
        self.label_dropout = getattr(model, "label_dropout", None)
        self._times: dict[float, tuple[float, float]] = {}

    def source_time(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """``(t, k)``: the time on ``path_from`` matching ``s`` on ``path_to`` and the scale ``x' = k x_t``
        (remembered per value of ``s``: a sampler asks for the same grid times again and again)."""
        values, index = torch.unique(s.detach().to(torch.float64).cpu(), return_inverse=True)
        new = [v for v in values.tolist() if v not in self._times]
        if new:
            t, _ = matched_time(self.path_to, torch.tensor(new, dtype=torch.float64), self.path_from)
            _, k = matched_time(self.path_from, t, self.path_to)
            self._times.update(zip(new, zip(t.tolist(), k.tolist())))
        t, k = (torch.tensor([self._times[v][i] for v in values.tolist()], dtype=torch.float64) for i in (0, 1))
        return t[index].to(s.device), k[index].to(s.device)

    def __call__(self, x: Tensor, s: Tensor, y: Tensor | None = None) -> Tensor:
        s = as_time("s", s, x.shape[0], x)
        t, k = self.source_time(s)
        x_from = x / broadcast_like(k.to(x.dtype), x)
        t = t.to(x.dtype)
        pred = call_network(self.model, x_from, t, y)
        x0, eps = to_x0_eps(pred, self.source, x_from, t, self.path_from)
        return from_x0_eps(x0, eps, self.dest, x, s, self.path_to)


# --- the ancestral step on any path --------------------------------------------------------------------------
def posterior_step(x_t: Tensor, x0: Tensor, t: float, s: float, path: GaussianPath, z: Tensor) -> Tensor:
    r"""DDPM's ancestral step from ``t`` to ``s < t`` on any Gaussian path (chapters 3 and 14): a draw of
    :math:`q(x_s\mid x_t, x_0) = \mathcal N(\tilde\mu, \tilde\sigma^2 I)` with
    :math:`\alpha_{t|s} = \alpha_t/\alpha_s`, :math:`\sigma_{t|s}^2 = \sigma_t^2 - \alpha_{t|s}^2\sigma_s^2`,

    .. math:: \tilde\mu = \frac{\alpha_{t|s}\sigma_s^2}{\sigma_t^2}\,x_t
              + \frac{\alpha_s\sigma_{t|s}^2}{\sigma_t^2}\,x_0,
              \qquad \tilde\sigma = \frac{\sigma_{t|s}\,\sigma_s}{\sigma_t},

    returned as :math:`\tilde\mu + \tilde\sigma z` for the standard normal ``z`` — the *standard deviation*
    multiplies ``z``.  For one step of :math:`N` on the DDPM path :math:`\tilde\sigma^2 = \tilde\beta_n`."""
    check_path(path)
    for name, value in (("x_t", x_t), ("x0", x0), ("z", z)):
        check_tensor(name, value)
        if value.shape != x_t.shape:
            raise ValueError(f"{name} must have the shape of x_t {tuple(x_t.shape)}, got {tuple(value.shape)}")
    if not 0 <= s < t <= 1:
        raise ValueError(f"t and s must satisfy 0 <= s < t <= 1, got t={t}, s={s}")
    a_t, s_t, a_s, s_s = (float(f(torch.tensor(v, dtype=torch.float64)))
                          for f, v in ((path.alpha, t), (path.sigma, t), (path.alpha, s), (path.sigma, s)))
    a_ts = a_t / a_s
    var_ts = max(s_t**2 - a_ts**2 * s_s**2, 0.0)
    mean = (a_ts * s_s**2 / s_t**2) * x_t + (a_s * var_ts / s_t**2) * x0
    return mean + (var_ts**0.5 * s_s / s_t) * z


# --- the tests that catch four mistakes ------------------------------------------------------------------------
def _mixture() -> Any:
    from .oracles import GaussianMixture

    means = torch.tensor([[-2.0, 0.5], [1.5, -1.0], [0.5, 2.0]], dtype=torch.float64)
    return GaussianMixture(means, stds=torch.tensor([0.4, 0.7, 0.5]), weights=torch.tensor([0.3, 0.5, 0.2]))


def _worst(name: str, got: Tensor, want: Tensor, tol: float, what: str) -> float:
    if not isinstance(got, Tensor) or got.shape != want.shape:
        raise AssertionError(f"{name}: expected a tensor of shape {tuple(want.shape)}, got "
                             f"{tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__}")
    err = float(((got - want).abs() / (1 + want.abs())).max())
    if not err <= tol:
        raise AssertionError(f"{name}: {what} off by up to {err:.3g} (relative; limit {tol:g})")
    return err


def check_v_to_eps(fn: Callable[[Tensor, Tensor, Tensor, GaussianPath], Tensor], n: int = 500) -> float:
    r"""The test of a :math:`v \to \varepsilon` conversion ``fn(v, x_t, t, path)`` (chapter 14): on DDPM's,
    the cosine and the VP path at random :math:`t \in (0.02, 0.98)`, with :math:`v = \alpha\varepsilon - \sigma x_0`
    built from known :math:`(x_0, \varepsilon)`, ``fn`` must return :math:`\varepsilon` (relative error below
    1e-9).  Returns the largest error; raises ``AssertionError`` naming the path otherwise."""
    g = torch.Generator().manual_seed(14)
    worst = 0.0
    for path in (DiscretePath.from_schedule("linear", 1000), CosinePath(), VPPath()):
        x0, eps = (torch.randn(n, 3, generator=g, dtype=torch.float64) for _ in range(2))
        t = 0.02 + 0.96 * torch.rand(n, generator=g, dtype=torch.float64)
        a, s = broadcast_like(path.alpha(t), x0), broadcast_like(path.sigma(t), x0)
        got = fn(a * eps - s * x0, a * x0 + s * eps, t, path)
        worst = max(worst, _worst("v -> eps", got, eps, 1e-9, f"on {type(path).__name__}, eps"))
    return worst


def check_flow_time(wrap: Callable[[Callable], Callable], n: int = 500) -> float:
    r"""The test of a time-convention adapter (chapter 14): ``wrap(model_fm)`` must turn a velocity model in
    the flow-matching convention (:math:`\tau = 0` noise, :math:`\tau = 1` data, :math:`u = dx/d\tau`) into a
    diffkit model (:math:`t = 1 - \tau`, velocity :math:`dx/dt = -u`).  Checked against the exact rectified-flow
    velocity of a Gaussian mixture at random :math:`t`; returns the largest relative error."""
    mix, path, g = _mixture(), LinearPath(), torch.Generator().manual_seed(15)

    def model_fm(x: Tensor, tau: Tensor, y: Tensor | None = None) -> Tensor:  # exact, other convention
        return -mix.velocity(x, 1 - tau, path)

    x = 2 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    return _worst("time convention", wrap(model_fm)(x, t), mix.velocity(x, t, path), 1e-9,
                  "the velocity (t = 0 data)")


def check_posterior_step(step: Callable[..., Tensor], n: int = 20000, max_z: float = 5.0) -> float:
    r"""The test of an ancestral step ``step(x_t, x0, t, s, path, z)`` (chapter 14): fed the true :math:`x_0`,
    a step that samples :math:`q(x_s\mid x_t, x_0)` must reproduce the forward marginal
    :math:`\mathcal N(\alpha_s x_0, \sigma_s^2 I)` at :math:`s`.  Coarse steps (0.6 → 0.3, 0.9 → 0.5 on the
    cosine path) keep the posterior variance large, where a variance used as a standard deviation shows.  The
    sample mean and variance are compared within ``max_z`` standard errors (:func:`diffkit.stats.check_close`);
    returns the largest :math:`|z|`."""
    from .stats import check_close

    path, g, worst = CosinePath(), torch.Generator().manual_seed(16), 0.0
    for t, s in ((0.6, 0.3), (0.9, 0.5)):
        x0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64).expand(n, 2)
        x_t = path.sample(x0, t, generator=g).x_t
        z = torch.randn(n, 2, generator=g, dtype=torch.float64)
        out = step(x_t, x0, t, s, path, z)
        a_s, s_s = float(path.alpha(torch.tensor(s))), float(path.sigma(torch.tensor(s)))
        mean, var = out.mean(0), out.var(0)
        worst = max(worst, check_close(mean, a_s * x0[0], (var / n).sqrt(), max_z=max_z,
                                       name=f"step {t} -> {s}, mean"))
        worst = max(worst, check_close(var, torch.full_like(var, s_s**2), s_s**2 * (2 / (n - 1)) ** 0.5,
                                       max_z=max_z, name=f"step {t} -> {s}, variance"))
    return worst


def check_score_from_eps(fn: Callable[[Tensor, Tensor, Tensor, GaussianPath], Tensor], n: int = 500) -> float:
    r"""The test of an :math:`\varepsilon \to` score conversion ``fn(eps, x_t, t, path)`` (chapter 14): fed a
    Gaussian mixture's exact :math:`\mathbb E[\varepsilon\mid x_t]` on the cosine and the VE path, ``fn`` must
    return the mixture's exact score :math:`\nabla\log p_t` (computed by the oracle from the densities, not from
    :math:`\varepsilon`).  Returns the largest relative error."""
    mix, g, worst = _mixture(), torch.Generator().manual_seed(17), 0.0
    for path in (CosinePath(), VEPath(sigma_min=0.01, sigma_max=10.0)):
        t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
        x_t = path.sample(mix.sample(n, generator=g).double(), t, generator=g).x_t
        got = fn(mix.eps(x_t, t, path), x_t, t, path)
        worst = max(worst, _worst("eps -> score", got, mix.score(x_t, t, path), 1e-8,
                                  f"on {type(path).__name__}, the score"))
    return worst


def flow_time_adapter(model_fm: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """diffkit's adapter for a velocity model in the flow-matching convention (t = 0 noise): time flipped with
    :func:`diffkit.paths.flip_time` and velocity with :func:`diffkit.paths.flip_velocity` (chapters 1, 7, 14)."""

    def model(x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return flip_velocity(call_network(model_fm, x, flip_time(t), y))

    return model
