"""Training loop: AdamW, EMA weights, gradient clipping, bf16 or mixed precision (CPU or CUDA), resumable checkpoints.

Every chapter trains through :class:`Trainer` (chapters 3–13)::

    trainer = Trainer(lambda: MLP(num_classes=8), losses.objective("cfm"), data, TrainConfig(steps=4000))
    trainer.fit()                 # progress bar with the running loss (or fit(max_seconds=60): a time budget)
    model = trainer.ema_model     # the exponential moving average of the weights, for sampling
    checkpoints.save_model("moons.safetensors", trainer)   # weights, architecture, path and target in one file

``loss_fn`` is a :class:`~diffkit.losses.Objective` (:func:`diffkit.losses.objective`: one of diffkit's losses
with its path and target, which the Trainer records for saving) or any ``loss_fn(model, x0, y, generator)``
returning a scalar tensor.  ``data`` is a tensor of examples, a tuple ``(x, y)`` of tensors, or a callable
``data(batch_size, generator) -> (x, y)`` (``y`` may be ``None``) that draws fresh samples (2-D toy sets).
Floating data is cast to the dtype of the model's parameters.  The Trainer checks all of this at construction,
on a trial batch of 2, so a wrong signature fails at once with the expected one in the message.

**Reproducibility.**  ``TrainConfig.seed`` fixes the whole run when ``model`` is a function ``build()`` that
returns the network: the Trainer seeds every generator (:func:`seed_everything`) and then builds it, so the
initial weights are part of the run.  An already built model keeps its weights: call
``seed_everything(seed)`` before building it.  All training randomness — batches, times, noise, label
dropout — flows from one seeded generator, and the global one that dropout layers use gets a seeded state of
the Trainer's own, swapped in only while :meth:`Trainer.fit` runs (so sampling between two ``fit`` calls
changes nothing).  Both states are saved in every checkpoint: resuming from a checkpoint gives exactly the
weights of an uninterrupted run (on the same device).
"""

from __future__ import annotations

import copy
import inspect
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import checkpoints, losses
from ._checks import check_number, check_positive_int, param_dtype

__all__ = ["TrainConfig", "Trainer", "EMA", "train", "default_device", "seed_everything", "TrainingDiverged",
           "LOSS_SIGNATURE", "DATA_SIGNATURE", "precision_used", "cpu_has_bf16", "MIXED_PRECISIONS"]

LOSS_SIGNATURE = "loss_fn(model, x0, y, generator) -> scalar tensor"
DATA_SIGNATURE = "data(batch_size, generator) -> (x, y), with y = None for unlabelled data"
#: The values of :attr:`TrainConfig.mixed_precision`.
MIXED_PRECISIONS = (False, True, "bf16", "fp16")
#: Steps between two reads of the loss on an accelerator (each read waits for the device); every step on a CPU.
LOSS_CHECK_EVERY = 25
#: Seconds between two progress-bar refreshes when stderr is a log file, not a terminal or a notebook.
LOG_PROGRESS_INTERVAL = 10.0

LossFn = Callable[[nn.Module, Tensor, "Tensor | None", torch.Generator], Tensor]
Data = Tensor | tuple[Tensor, Tensor] | Callable[[int, torch.Generator], tuple[Tensor, "Tensor | None"]]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; training stopped instead of going on with garbage."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CUDA included): call it before building a model
    whose initial weights must be reproducible (the :class:`Trainer` does, when given a ``build`` function)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_device() -> torch.device:
    """``cuda`` if available, else ``mps`` (Apple), else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 matrix units (``avx512_bf16`` or ``amx_bf16`` among its flags, Linux).  Without
    them bf16 autocast was slower than fp32 in every run measured (0.36x at best), although
    ``torch.backends.mkldnn`` reports bf16 support; with them it can pay (``benchmarks/throughput.py``)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def precision_used(config: TrainConfig, device: str | torch.device | None = None) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"``: what a :class:`Trainer` with ``config`` computes in on ``device``
    (default: :func:`default_device`).  Raises a ValueError for a precision the device cannot run."""
    device = torch.device(device) if device is not None else default_device()
    mode = config.mixed_precision
    if mode is False:
        return "fp32"
    if mode is True:
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mode == "fp16" and device.type != "cuda":
        raise ValueError(f"mixed_precision='fp16' needs CUDA (loss scaling), got device {device}; use 'bf16' on a CPU")
    if mode == "bf16" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"mixed_precision='bf16' runs on a CPU or CUDA, got device {device}")
    if mode == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("mixed_precision='bf16' but this GPU has no bf16 support: use 'fp16' or True")
    return mode


@dataclass
class TrainConfig:
    """Everything that determines a training run (it is also the key of :mod:`diffkit.cache`)."""

    steps: int
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    #: ``False``: fp32 everywhere (the default, the same numbers on every device); ``True``: autocast on CUDA
    #: (bf16, else fp16), fp32 elsewhere; ``"bf16"``: bf16 autocast on CPU or CUDA (pays on CPUs with bf16 units,
    #: see :func:`cpu_has_bf16`); ``"fp16"``: fp16 autocast with loss scaling, CUDA only.  The precision a run
    #: actually uses (:func:`precision_used`) joins the cache key.
    mixed_precision: bool | str = False
    checkpoint_every: int = 0  # steps; 0 = only at the end (when a checkpoint path is given)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, part of the cache key

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("batch_size", self.batch_size)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int (it seeds every generator), got {self.seed!r}")
        check_number("lr", self.lr, low=0.0, low_open=True)
        check_number("weight_decay", self.weight_decay, low=0.0)
        check_positive_int("warmup_steps", self.warmup_steps, minimum=0)
        check_positive_int("checkpoint_every", self.checkpoint_every, minimum=0)
        check_number("ema_decay", self.ema_decay, low=0.0, high=1.0)
        if self.grad_clip is not None:
            check_number("grad_clip", self.grad_clip, low=0.0, low_open=True)
        if not (isinstance(self.mixed_precision, bool) or self.mixed_precision in ("bf16", "fp16")):
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS}, got {self.mixed_precision!r}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if len(self.betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2) of Adam's decay rates, got {self.betas!r}")
        for i, b in enumerate(self.betas):
            check_number(f"betas[{i}]", b, low=0.0)
            if b >= 1:
                raise ValueError(f"betas[{i}] must be < 1 (Adam's decay rate), got {b}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


class EMA:
    r"""Exponential moving average of the weights, :math:`\bar\theta \leftarrow d\,\bar\theta + (1-d)\,\theta`, with
    the warm-up :math:`d_k = \min(d, (1 + k)/(10 + k))` so that early averages are not dominated by the init."""

    def __init__(self, model: nn.Module, decay: float):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.decay = check_number("decay", decay, low=0.0, high=1.0)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averages, current = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        if averages:
            torch._foreach_lerp_(averages, current, 1 - d)  # one fused call, the same values as p.lerp_ per tensor
        for avg, cur in zip(self.model.buffers(), model.buffers()):
            avg.copy_(cur)
        self.updates += 1


def _to(x: Tensor, device: torch.device, dtype: torch.dtype | None) -> Tensor:
    """``x`` on ``device``; floating ``x`` also cast to ``dtype`` (the model's), labels keep theirs."""
    return x.to(device=device, dtype=dtype) if dtype is not None and x.is_floating_point() else x.to(device)


def _checked_pair(out: object, n: int) -> tuple[Tensor, Tensor | None]:
    """The result of a data function, checked to be ``(x, y)`` with ``n`` rows."""
    if not (isinstance(out, tuple) and len(out) == 2):
        got = f"a {type(out).__name__}" + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
        hint = ": return x, None" if isinstance(out, Tensor) else ""
        raise TypeError(f"data must be callable as {DATA_SIGNATURE}; it returned {got}{hint}")
    x, y = out
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] != n:
        raise ValueError(f"data(batch_size={n}, generator) must return x with {n} rows, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if y is not None and (not isinstance(y, Tensor) or y.shape[:1] != (n,)):
        raise ValueError(f"data(batch_size={n}, generator) must return y = None or a tensor of {n} labels, got "
                         f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
    return x, y


def _batches(data: Data, device: torch.device,
             dtype: torch.dtype | None = None) -> Callable[[int, torch.Generator], tuple[Tensor, Tensor | None]]:
    if callable(data) and not isinstance(data, Tensor):
        def draw(n: int, g: torch.Generator) -> tuple[Tensor, Tensor | None]:
            x, y = _checked_pair(data(n, g), n)
            return _to(x, device, dtype), (y.to(device) if y is not None else None)
        return draw
    if isinstance(data, Tensor):
        x_all, y_all = data, None
    elif isinstance(data, tuple) and len(data) == 2 and all(isinstance(d, Tensor) for d in data):
        x_all, y_all = data
        if y_all.shape[0] != x_all.shape[0]:
            raise ValueError(f"data: x and y must have the same length, got {x_all.shape[0]} and {y_all.shape[0]}")
    else:
        raise TypeError("data must be a tensor, a tuple (x, y) of tensors, or a callable data(batch_size, generator)")
    if x_all.shape[0] == 0:
        raise ValueError("data is empty")
    if x_all.is_floating_point() and not torch.isfinite(x_all).all():
        raise ValueError("data contains NaN or infinite values")

    # Cast and moved once, so that a step indexes tensors already on the device (the indices are drawn on the CPU
    # generator, so a run draws the same batches on every device).
    x_dev = _to(x_all, device, dtype)
    y_dev = y_all.to(device) if y_all is not None else None

    def draw(n: int, g: torch.Generator) -> tuple[Tensor, Tensor | None]:
        idx = torch.randint(x_all.shape[0], (n,), generator=g).to(device)
        return x_dev[idx], (y_dev[idx] if y_dev is not None else None)

    return draw


def _as_loss_fn(loss_fn: object) -> LossFn:
    """``loss_fn`` itself, or a raw diffkit loss wrapped by :func:`diffkit.losses.objective` when it needs no path;
    anything that cannot be called as the Trainer calls it raises a TypeError that shows the expected signature."""
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as {LOSS_SIGNATURE}, e.g. losses.objective('cfm'); "
                        f"got {type(loss_fn).__name__}")
    if isinstance(loss_fn, losses.Objective):
        return loss_fn
    kind = next((name for name, (fn, _, _) in losses.OBJECTIVES.items() if loss_fn is fn), None)
    if kind == "cfm":  # a raw diffkit loss that needs no path: the adapter's defaults are the loss's own
        return losses.objective(loss_fn)
    if kind is not None:
        raise TypeError(f"losses.{kind}_loss needs its path and target: pass losses.objective({kind!r}, path=..., "
                        f"target=...) as loss_fn (the Trainer calls {LOSS_SIGNATURE})")
    try:
        signature = inspect.signature(loss_fn)
    except (TypeError, ValueError):  # some builtins cannot be inspected: the trial call will tell
        return loss_fn  # type: ignore[return-value]
    try:
        signature.bind(None, None, None, None)
    except TypeError:
        name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
        raise TypeError(f"loss_fn must be callable as {LOSS_SIGNATURE}, but {name}{signature} cannot take those four "
                        f"arguments; wrap a diffkit loss with losses.objective(...), e.g. losses.objective('cfm'), "
                        f"or write lambda model, x0, y, g: ...") from None
    return loss_fn  # type: ignore[return-value]


def _progress_interval() -> float:
    """tqdm's ``mininterval``: 0.1 s in a terminal or a notebook, :data:`LOG_PROGRESS_INTERVAL` in a log file."""
    notebook = any("notebook" in cls.__module__ for cls in tqdm.__mro__)
    stream = sys.stderr
    tty = bool(getattr(stream, "isatty", None) and stream.isatty())
    return 0.1 if notebook or tty else LOG_PROGRESS_INTERVAL


class Trainer:
    """Train ``model`` on ``loss_fn`` (see the module docstring).  ``model`` is an ``nn.Module``, or a function
    ``build()`` returning one, called after seeding with ``config.seed`` (a reproducible initialisation).
    Nothing is lost on failure: with ``checkpoint_path`` set (checked to be writable at once), the state is saved
    every ``config.checkpoint_every`` steps and at the end, and an existing checkpoint there is resumed; only
    ``config.steps`` may differ from the checkpoint's, so raising it trains longer from where it stopped."""

    def __init__(self, model: nn.Module | Callable[[], nn.Module], loss_fn: LossFn, data: Data,
                 config: TrainConfig, *, device: str | torch.device | None = None,
                 checkpoint_path: str | Path | None = None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a diffkit.training.TrainConfig, got {type(config).__name__}")
        if not isinstance(model, nn.Module):
            if not callable(model) or not _takes_no_arguments(model):
                raise TypeError(f"model must be a torch.nn.Module or a function build() -> nn.Module, got "
                                f"{type(model).__name__}")
            seed_everything(config.seed)  # the initial weights are part of the run
            model = model()
            if not isinstance(model, nn.Module):
                raise TypeError(f"model: build() must return a torch.nn.Module, got {type(model).__name__}")
        self.loss_fn = _as_loss_fn(loss_fn)
        #: The :class:`~diffkit.losses.Objective` trained (its ``path`` and ``target``), or ``None`` for a plain
        #: ``loss_fn`` (then pass ``objective=`` to :func:`diffkit.checkpoints.save_model`).
        self.objective = self.loss_fn if isinstance(self.loss_fn, losses.Objective) else None
        checkpoints.record_objective(model, self.objective)  # the samplers read the target (and path) from the model
        self.config = config
        self.checkpoint_path = None
        if checkpoint_path is not None:
            self.checkpoint_path = checkpoints.check_writable(checkpoint_path, "checkpoint_path")
        self.device = torch.device(device) if device is not None else default_device()
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} but CUDA is not available here: use device='cpu' or leave "
                             "device=None (the best device available)")
        if self.device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device={str(device)!r} but Apple's MPS is not available here: use device='cpu'")
        self.model = model.to(self.device).train()
        try:  # the model's class and constructor arguments, so that checkpoints.load_model can rebuild it
            self._model_record = checkpoints.model_record(self.model)
        except TypeError:
            self._model_record = {}
        self.draw = _batches(data, self.device, param_dtype(self.model))
        self._trial_run()
        # What inside the model draws from torch's global generator (dropout, label dropout) gets a state of its
        # own, seeded by config.seed and swapped in only while fit runs: code run between fit calls (sampling in
        # a notebook, another Trainer) neither disturbs this run nor is disturbed by it.
        self._rng_torch = torch.Generator().manual_seed(config.seed).get_state()
        self._fitting = False
        self.generator = torch.Generator().manual_seed(config.seed)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.ema = EMA(self.model, config.ema_decay)
        self.step = 0
        self.losses: list[float] = []
        self.seconds = 0.0
        #: ``"fp32"``, ``"bf16"`` or ``"fp16"``: the precision this run computes in (:func:`precision_used`).
        self.precision = precision_used(config, self.device)
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        #: Steps per read of the loss in :meth:`fit`.  A CPU reads each loss before its update (a loss that is not
        #: finite stops the run before it touches the weights); an accelerator would wait for the device at every
        #: read, so there losses are read :data:`LOSS_CHECK_EVERY` at a time (and always before a checkpoint).
        self.loss_check_every = 1 if self.device.type == "cpu" else LOSS_CHECK_EVERY
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            self.load_checkpoint(self.checkpoint_path)

    def _trial_run(self) -> None:
        """Draw a batch of 2 and evaluate the loss on it (eval mode, a throwaway generator), so that a data
        function or a loss with the wrong signature fails here, with the expected one in the message."""
        g = torch.Generator().manual_seed(self.config.seed)
        x, y = self.draw(2, g)
        self.model.eval()
        try:
            loss = self.loss_fn(self.model, x, y, g)
        except (TypeError, ValueError) as exc:
            if type(exc) not in (TypeError, ValueError):
                raise
            raise type(exc)(f"loss_fn failed on a trial batch of 2 (x {tuple(x.shape)}, y "
                            f"{None if y is None else tuple(y.shape)}): {exc}\n(the Trainer calls {LOSS_SIGNATURE}; "
                            f"for diffkit's losses use losses.objective(...))") from exc
        finally:
            self.model.train()
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            raise TypeError(f"loss_fn must return a scalar tensor ({LOSS_SIGNATURE}), got "
                            f"{tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__}")

    @property
    def ema_model(self) -> nn.Module:
        """The EMA weights (in eval mode): use these for sampling."""
        return self.ema.model

    def _lr(self) -> float:
        warm = self.config.warmup_steps
        return self.config.lr * min(1.0, (self.step + 1) / warm) if warm else self.config.lr

    def train_step(self) -> float:
        """One optimisation step; returns its loss (read from the device at once)."""
        loss = self._step(check=True)
        self.losses.append(loss.item())
        return self.losses[-1]

    def _step(self, check: bool) -> Tensor:
        """One optimisation step; returns the loss, detached and unread.  ``check``: read it now and stop before
        the update if it is not finite (on an accelerator :meth:`fit` reads losses in groups instead)."""
        x, y = self.draw(self.config.batch_size, self.generator)
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss = self.loss_fn(self.model, x, y, self.generator)
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            raise TypeError("loss_fn must return a scalar tensor")
        if check:
            self._check_finite([loss.item()], self.step)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        return loss.detach()

    def _check_finite(self, values: list[float], first_step: int, record: bool = False) -> None:
        """Raise :class:`TrainingDiverged` at the first value that is not finite (the loss of step
        ``first_step + i + 1``); ``record``: append the values before it to :attr:`losses`, and all if none is."""
        for i, value in enumerate(values):
            if record and math.isfinite(value):
                self.losses.append(value)
            if not math.isfinite(value):
                where = f"; the last checkpoint is {self.checkpoint_path}" if self.checkpoint_path else ""
                raise TrainingDiverged(f"the loss became {value} at step {first_step + i + 1}: stopped instead of "
                                       f"training on garbage (try a lower lr, grad_clip, or check the data){where}")

    def fit(self, steps: int | None = None, *, max_seconds: float | None = None, progress: bool = True) -> list[float]:
        """Train until ``steps`` (default ``config.steps``) steps are done in total, or until ``max_seconds`` of
        wall time have passed in this call (a fixed compute budget); returns the loss history.

        The progress bar counts steps, or seconds when ``max_seconds`` is set (with the step and the smoothed
        loss beside it).  In a log file (stderr not a terminal or a notebook) it refreshes every
        :data:`LOG_PROGRESS_INTERVAL` seconds, so logs stay readable."""
        target = self.config.steps if steps is None else check_positive_int("steps", steps)
        if max_seconds is not None:
            max_seconds = check_number("max_seconds", max_seconds, low=0.0, low_open=True)
        if self.checkpoint_path is not None:
            checkpoints.check_writable(self.checkpoint_path, "checkpoint_path")  # still writable, before the work
        timed = max_seconds is not None
        bar = tqdm(total=max_seconds if timed else target, initial=0 if timed else self.step, disable=not progress,
                   desc="training", unit="s" if timed else "step", mininterval=_progress_interval(),
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]" if timed else None)
        t0, smooth = time.perf_counter(), None
        with torch.random.fork_rng(devices=[]):  # the caller's global RNG state comes back after fit
            torch.set_rng_state(self._rng_torch)
            self._fitting = True
            try:
                group = self.loss_check_every
                pending: list[Tensor] = []
                every = self.config.checkpoint_every

                def flush() -> int:  # read the pending losses, stop at one that is not finite, record the rest
                    nonlocal smooth
                    values = torch.stack(pending).float().tolist()
                    self._check_finite(values, self.step - len(values), record=True)
                    pending.clear()
                    for value in values:
                        smooth = value if smooth is None else 0.98 * smooth + 0.02 * value
                    return len(values)

                while self.step < target:
                    if timed and time.perf_counter() - t0 >= max_seconds:
                        break
                    pending.append(self._step(check=group == 1))
                    save = self.checkpoint_path is not None and every and self.step % every == 0
                    if len(pending) < group and self.step < target and not save:
                        continue
                    n = flush()  # before a checkpoint can store a bad step
                    if self.step % 10 < n or self.step == target:
                        bar.set_postfix_str(self._status(smooth, timed), refresh=False)
                    bar.update(min(time.perf_counter() - t0, max_seconds) - bar.n if timed else n)
                    if save:
                        self.save_checkpoint(self.checkpoint_path)
                if pending:  # the time budget ran out between two reads
                    flush()
                if timed:
                    bar.update(min(time.perf_counter() - t0, max_seconds) - bar.n)
                if smooth is not None:
                    bar.set_postfix_str(self._status(smooth, timed), refresh=False)
            finally:
                self._fitting = False
                self._rng_torch = torch.get_rng_state()
                bar.close()
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)
        self.seconds = time.perf_counter() - t0
        return self.losses

    def _status(self, smooth: float, timed: bool) -> str:
        return f"step={self.step}, loss={smooth:.4f}" if timed else f"loss={smooth:.4f}"

    # --- checkpoints ---------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        optim_tensors, optim_meta = checkpoints.flatten_optimizer(self.optimizer.state_dict())
        tensors = {
            **checkpoints.prefixed("model", self.model.state_dict()),
            **checkpoints.prefixed("ema", self.ema.model.state_dict()),
            **checkpoints.prefixed("optim", optim_tensors),
            "rng.generator": self.generator.get_state(),
            "rng.torch": torch.get_rng_state() if self._fitting else self._rng_torch,
        }
        meta = {"step": self.step, "ema_updates": self.ema.updates, "losses": self.losses, "optim": optim_meta,
                "config": self.config.to_dict(), **self._model_record, "diffkit": _version(),
                "objective": self.objective.to_dict() if self.objective is not None else None}
        return tensors, meta

    def save_checkpoint(self, path: str | Path) -> Path:
        tensors, meta = self.state()
        return checkpoints.save(path, tensors, meta)

    def load_checkpoint(self, path: str | Path) -> None:
        """Resume from ``path``.  Its TrainConfig and objective must be this Trainer's, except ``steps`` (raise it
        to train longer: the first steps of a run do not depend on it) and ``checkpoint_every``."""
        tensors, meta = checkpoints.load(path)
        free = ("steps", "checkpoint_every")
        saved = {k: v for k, v in (meta.get("config") or {}).items() if k not in free}
        differ = checkpoints.differences(saved, {k: v for k, v in self.config.to_dict().items() if k not in free})
        if self.objective is not None and meta.get("objective") is not None:
            differ += checkpoints.differences(meta["objective"], self.objective.to_dict(), prefix="objective.")
        if differ:
            raise checkpoints.CheckpointError(
                f"checkpoint {path} was written for a different TrainConfig or objective:\n  "
                + "\n  ".join(differ) + "\nTo train longer on purpose, keep everything else and raise "
                f"TrainConfig.steps (or call fit(steps=<new total>)): training resumes at step {meta.get('step')}. "
                "To start over with the new settings, delete the file or pass another checkpoint_path.")
        checkpoints.load_state(self.model, checkpoints.unprefixed("model", tensors), path)
        checkpoints.load_state(self.ema.model, checkpoints.unprefixed("ema", tensors), path)
        self.optimizer.load_state_dict(checkpoints.unflatten_optimizer(checkpoints.unprefixed("optim", tensors),
                                                                       meta["optim"]))
        self.generator.set_state(tensors["rng.generator"])
        self._rng_torch = tensors["rng.torch"]
        self.step, self.ema.updates, self.losses = meta["step"], meta["ema_updates"], list(meta["losses"])


def _version() -> str:
    from . import __version__

    return __version__


def _takes_no_arguments(fn: Callable) -> bool:
    try:
        inspect.signature(fn).bind()
    except TypeError:
        return False
    except ValueError:  # not inspectable
        return True
    return True


def train(model: nn.Module | Callable[[], nn.Module], loss_fn: LossFn, data: Data, config: TrainConfig, *,
          device: str | torch.device | None = None, checkpoint_path: str | Path | None = None,
          progress: bool = True) -> nn.Module:
    """Train ``model`` (or ``build()``) with a :class:`Trainer` and return its EMA weights (in eval mode)."""
    trainer = Trainer(model, loss_fn, data, config, device=device, checkpoint_path=checkpoint_path)
    trainer.fit(progress=progress)
    return trainer.ema_model
