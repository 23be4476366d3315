"""Training loop: AdamW, EMA weights, gradient clipping, mixed precision on CUDA, resumable checkpoints.

Every chapter trains through :class:`Trainer` (chapters 3–13)::

    trainer = Trainer(model, loss_fn, data, TrainConfig(steps=4000, batch_size=128, lr=2e-4))
    trainer.fit()                 # progress bar with the running loss
    model = trainer.ema_model     # the exponential moving average of the weights, for sampling

``loss_fn(model, x0, y, generator)`` returns a scalar (e.g. ``lambda m, x, y, g: losses.cfm_loss(m, x, y=y,
generator=g)``).  ``data`` is a tensor of examples, a tuple ``(x, y)`` of tensors, or a callable
``data(batch_size, generator) -> (x, y)`` that draws fresh samples (2-D toy sets).  All randomness — batches,
times, noise, label dropout — flows from one seeded generator, whose state is saved in every checkpoint:
resuming from a checkpoint gives exactly the weights of an uninterrupted run (on the same device).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import checkpoints
from ._checks import check_number, check_positive_int

__all__ = ["TrainConfig", "Trainer", "EMA", "train", "default_device", "TrainingDiverged"]

LossFn = Callable[[nn.Module, Tensor, "Tensor | None", torch.Generator], Tensor]
Data = Tensor | tuple[Tensor, Tensor] | Callable[[int, torch.Generator], tuple[Tensor, "Tensor | None"]]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; training stopped instead of going on with garbage."""


def default_device() -> torch.device:
    """``cuda`` if available, else ``mps`` (Apple), else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
    mixed_precision: bool = True  # used on CUDA only
    checkpoint_every: int = 0  # steps; 0 = only at the end (when a checkpoint path is given)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, part of the cache key

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("batch_size", self.batch_size)
        check_number("lr", self.lr, low=0.0, low_open=True)
        check_number("weight_decay", self.weight_decay, low=0.0)
        check_positive_int("warmup_steps", self.warmup_steps, minimum=0)
        check_positive_int("checkpoint_every", self.checkpoint_every, minimum=0)
        check_number("ema_decay", self.ema_decay, low=0.0, high=1.0)
        if self.grad_clip is not None:
            check_number("grad_clip", self.grad_clip, low=0.0, low_open=True)
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


class EMA:
    r"""Exponential moving average of the weights, :math:`\bar\theta \leftarrow d\,\bar\theta + (1-d)\,\theta`, with
    the warm-up :math:`d_k = \min(d, (1 + k)/(10 + k))` so that early averages are not dominated by the init."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, cur in zip(self.model.parameters(), model.parameters()):
            avg.lerp_(cur.detach(), 1 - d)
        for avg, cur in zip(self.model.buffers(), model.buffers()):
            avg.copy_(cur)
        self.updates += 1


def _batches(data: Data, device: torch.device) -> Callable[[int, torch.Generator], tuple[Tensor, Tensor | None]]:
    if callable(data) and not isinstance(data, Tensor):
        def draw(n: int, g: torch.Generator) -> tuple[Tensor, Tensor | None]:
            x, y = data(n, g)
            return x.to(device), (y.to(device) if y is not None else None)
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

    def draw(n: int, g: torch.Generator) -> tuple[Tensor, Tensor | None]:
        idx = torch.randint(x_all.shape[0], (n,), generator=g)
        return x_all[idx].to(device), (y_all[idx].to(device) if y_all is not None else None)

    return draw


class Trainer:
    """Train ``model`` on ``loss_fn`` (see the module docstring).  Nothing is lost on failure: with
    ``checkpoint_path`` set, the state is saved every ``config.checkpoint_every`` steps and at the end, and an
    existing checkpoint there is resumed."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Data, config: TrainConfig, *,
                 device: str | torch.device | None = None, checkpoint_path: str | Path | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable as loss_fn(model, x0, y, generator)")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a diffkit.training.TrainConfig, got {type(config).__name__}")
        self.config = config
        self.device = torch.device(device) if device is not None else default_device()
        torch.manual_seed(config.seed)  # for anything inside the model that uses the global RNG (dropout)
        self.model = model.to(self.device).train()
        self.loss_fn = loss_fn
        self.draw = _batches(data, self.device)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.ema = EMA(self.model, config.ema_decay)
        self.step = 0
        self.losses: list[float] = []
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        use_amp = config.mixed_precision and self.device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if use_amp else None
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            self.load_checkpoint(self.checkpoint_path)

    @property
    def ema_model(self) -> nn.Module:
        """The EMA weights (in eval mode): use these for sampling."""
        return self.ema.model

    def _lr(self) -> float:
        warm = self.config.warmup_steps
        return self.config.lr * min(1.0, (self.step + 1) / warm) if warm else self.config.lr

    def train_step(self) -> float:
        x, y = self.draw(self.config.batch_size, self.generator)
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss = self.loss_fn(self.model, x, y, self.generator)
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            raise TypeError("loss_fn must return a scalar tensor")
        value = loss.item()
        if not math.isfinite(value):
            where = f"; the last checkpoint is {self.checkpoint_path}" if self.checkpoint_path else ""
            raise TrainingDiverged(f"the loss became {value} at step {self.step + 1}: stopped instead of training on "
                                   f"garbage (try a lower lr, grad_clip, or check the data){where}")
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
        self.losses.append(value)
        return value

    def fit(self, steps: int | None = None, *, max_seconds: float | None = None, progress: bool = True) -> list[float]:
        """Train until ``steps`` (default ``config.steps``) steps are done in total, or until ``max_seconds`` of
        wall time have passed in this call (a fixed compute budget); returns the loss history."""
        target = self.config.steps if steps is None else check_positive_int("steps", steps)
        if max_seconds is not None:
            check_number("max_seconds", max_seconds, low=0.0, low_open=True)
        bar = tqdm(total=None if max_seconds is not None and steps is None else target, initial=self.step,
                   disable=not progress, desc="training", unit="step")
        t0, smooth = time.perf_counter(), None
        try:
            while self.step < target:
                if max_seconds is not None and time.perf_counter() - t0 >= max_seconds:
                    break
                value = self.train_step()
                smooth = value if smooth is None else 0.98 * smooth + 0.02 * value
                bar.update(1)
                if self.step % 10 == 0 or self.step == target:
                    bar.set_postfix(loss=f"{smooth:.4f}")
                every = self.config.checkpoint_every
                if self.checkpoint_path is not None and every and self.step % every == 0:
                    self.save_checkpoint(self.checkpoint_path)
        finally:
            bar.close()
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)
        self.seconds = time.perf_counter() - t0
        return self.losses

    # --- checkpoints ---------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        optim_tensors, optim_meta = checkpoints.flatten_optimizer(self.optimizer.state_dict())
        tensors = {
            **checkpoints.prefixed("model", self.model.state_dict()),
            **checkpoints.prefixed("ema", self.ema.model.state_dict()),
            **checkpoints.prefixed("optim", optim_tensors),
            "rng.generator": self.generator.get_state(),
            "rng.torch": torch.get_rng_state(),
        }
        meta = {"step": self.step, "ema_updates": self.ema.updates, "losses": self.losses, "optim": optim_meta,
                "config": self.config.to_dict()}
        return tensors, meta

    def save_checkpoint(self, path: str | Path) -> Path:
        tensors, meta = self.state()
        return checkpoints.save(path, tensors, meta)

    def load_checkpoint(self, path: str | Path) -> None:
        tensors, meta = checkpoints.load(path)
        if meta.get("config") != self.config.to_dict():
            raise checkpoints.CheckpointError(f"checkpoint {path} was written for a different TrainConfig: "
                                              f"{meta.get('config')} != {self.config.to_dict()}")
        self.model.load_state_dict(checkpoints.unprefixed("model", tensors))
        self.ema.model.load_state_dict(checkpoints.unprefixed("ema", tensors))
        self.optimizer.load_state_dict(checkpoints.unflatten_optimizer(checkpoints.unprefixed("optim", tensors),
                                                                       meta["optim"]))
        self.generator.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
        self.step, self.ema.updates, self.losses = meta["step"], meta["ema_updates"], list(meta["losses"])


def train(model: nn.Module, loss_fn: LossFn, data: Data, config: TrainConfig, *,
          device: str | torch.device | None = None, checkpoint_path: str | Path | None = None,
          progress: bool = True) -> nn.Module:
    """Train ``model`` with a :class:`Trainer` and return its EMA weights (in eval mode)."""
    trainer = Trainer(model, loss_fn, data, config, device=device, checkpoint_path=checkpoint_path)
    trainer.fit(progress=progress)
    return trainer.ema_model
