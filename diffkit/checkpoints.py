"""Checkpoints in safetensors, written atomically (used by :mod:`diffkit.training` and :mod:`diffkit.cache`).

A checkpoint is one ``.safetensors`` file: tensors under prefixes (``model.``, ``ema.``, ``optim.``, ``rng.``)
plus string metadata (JSON).  :func:`save` writes to a temporary file in the same folder, flushes it to disk
and renames it over the target, so a crash mid-write leaves either the old file or the new one — never a
truncated file.

**A trained model in one file** (every chapter that trains; like ``from_pretrained``)::

    checkpoints.save_model("mnist-dit.safetensors", trainer)      # EMA + raw weights, architecture, path, target
    model, info = checkpoints.load_model("mnist-dit.safetensors")  # the EMA weights, in eval mode
    samplers.ddim(model, x, ts, info.path, target=info.target)

The file holds the EMA and raw weights, the model's class and constructor arguments (``model.config``, recorded
by every diffkit model: :class:`diffkit.models.RecordsConfig`), the objective it was trained on (path, target,
options: :class:`diffkit.losses.Objective`), the TrainConfig and step, and diffkit's version.  A Trainer's
resumable checkpoint holds all of that too, so :func:`load_model` reads it as well.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor, nn

if TYPE_CHECKING:
    from .losses import Objective
    from .paths import GaussianPath

__all__ = ["save", "load", "read_metadata", "flatten_optimizer", "unflatten_optimizer", "CheckpointError",
           "save_model", "load_model", "load_weights", "ModelInfo", "check_writable", "differences",
           "record_objective"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not match what it is loaded into."""


def check_writable(path: str | os.PathLike, name: str = "path") -> Path:
    """Return ``path`` as a Path after checking that a file can be written there (its folder is created), so
    that a long training never ends in a failed write.  A directory is a ``ValueError``; a folder that cannot be
    created or written to is a :class:`CheckpointError`."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or pathlib.Path), got {type(path).__name__}")
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{name} {path} is a directory: give a file name in it, e.g. {path / 'model.safetensors'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.remove(tmp)
    except OSError as exc:
        raise CheckpointError(f"{name} {path}: cannot write to {path.parent} ({exc}); choose a writable folder"
                              ) from exc
    return path


def save(path: str | os.PathLike, tensors: dict[str, Tensor], metadata: dict[str, Any] | None = None) -> Path:
    """Write ``tensors`` (and JSON-serialisable ``metadata``) to ``path`` atomically."""
    if not isinstance(tensors, dict):
        raise TypeError(f"tensors must be a dict of name -> torch.Tensor, got {type(tensors).__name__}")
    bad = [k for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise TypeError(f"tensors must map names (str) to torch.Tensor values; not so for {bad[:5]!r}")
    path = check_writable(path, "path")  # a file name in a writable folder (created if missing)
    try:
        meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    except TypeError as exc:
        raise TypeError(f"metadata must be JSON-serialisable (numbers, strings, lists, dicts): {exc}") from None
    # safetensors wants contiguous CPU tensors that do not share memory
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(flat, tmp, metadata=meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata stored by :func:`save` (decoded from JSON)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    return {k: json.loads(v) for k, v in meta.items()}


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Return ``(tensors, metadata)`` of a checkpoint."""
    if not Path(path).exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        tensors = load_file(str(path), device=str(device))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    return tensors, read_metadata(path)


def prefixed(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (per-parameter state) and JSON (hyper-parameters, scalars)."""
    tensors, scalars = {}, {}
    for idx, pstate in state["state"].items():
        for name, value in pstate.items():
            if isinstance(value, Tensor):
                tensors[f"{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def load_state(module: nn.Module, state: dict[str, Tensor], path: str | os.PathLike) -> None:
    """``module.load_state_dict(state)``, with a mismatch reported as a :class:`CheckpointError`."""
    if not state:
        raise CheckpointError(f"checkpoint {path} holds no weights for a {type(module).__name__}")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} holds weights of another architecture than this "
                              f"{type(module).__name__}: {str(exc).splitlines()[0]}") from exc


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(saved: dict[str, Any], now: dict[str, Any], *, prefix: str = "") -> list[str]:
    """One line ``"key: <saved> in the checkpoint, <now> now"`` per field that differs (nested dicts by
    ``a.b`` keys), for error messages that show only what changed."""
    out = []
    for key in sorted(set(saved) | set(now), key=str):
        a, b = saved.get(key, "<absent>"), now.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, prefix=f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {_short(a)} in the checkpoint, {_short(b)} now")
    return out


# --- a trained model in one file ----------------------------------------------------------------------------
FORMAT = "diffkit.model/1"


def model_record(model: nn.Module) -> dict[str, Any]:
    """``{"class": "module.QualName", "model_config": {...}}`` for a model that records its constructor arguments
    (:class:`diffkit.models.RecordsConfig`); a TypeError that says how to fix it otherwise."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or not hasattr(model, "_config"):
        raise TypeError(f"model: a {type(model).__name__} does not record its constructor arguments, so a file cannot "
                        "rebuild it; subclass diffkit.models.RecordsConfig (every diffkit model does)")
    try:
        json.dumps(config)
    except TypeError as exc:
        raise TypeError(f"model: the constructor arguments of {type(model).__name__} must be numbers, strings, "
                        f"booleans, None, lists or dicts to be saved ({exc})") from None
    return {"class": f"{type(model).__module__}.{type(model).__qualname__}", "model_config": config}


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`load_model` read besides the weights: ``path`` and ``target`` are what the sampler needs."""

    model_class: str
    model_config: dict[str, Any]
    objective: Objective | None  # None: saved without one
    weights: str  # "ema" or "raw": which weights were loaded
    train_config: dict[str, Any] | None = None
    step: int | None = None
    version: str | None = None  # diffkit's version that wrote the file

    @property
    def path(self) -> GaussianPath | None:
        return self.objective.path if self.objective is not None else None

    @property
    def target(self) -> str | None:
        return self.objective.target if self.objective is not None else None


def record_objective(model: nn.Module, objective: Objective | None) -> nn.Module:
    """Record on ``model`` the objective it is trained on, as ``model.diffkit_objective`` (its ``path`` and
    ``target``), so that the samplers take the target from the model and refuse a wrong one
    (:func:`diffkit.samplers.resolve_target`).  ``None`` (a loss of one's own) removes a stale record."""
    if objective is not None:
        model.diffkit_objective = objective
    elif "diffkit_objective" in vars(model):
        del model.diffkit_objective
    return model


def save_model(path: str | os.PathLike, source: Any, *, objective: Objective | None = None,
               extra_metadata: dict[str, Any] | None = None) -> Path:
    """Save a trained model to one safetensors file that alone rebuilds it (see the module docstring).

    ``source`` is a :class:`~diffkit.training.Trainer` (its raw and EMA weights, its objective, TrainConfig and
    step) or a model (its weights, stored as the raw ones).  ``objective`` (a
    :class:`~diffkit.losses.Objective`) records the path and target; a Trainer built with one needs none.
    ``extra_metadata`` (JSON) is stored beside, without overriding any of those records."""
    from . import __version__
    from .losses import Objective

    trainer = source if hasattr(source, "ema_model") and hasattr(source, "model") else None
    model = trainer.model if trainer is not None else source
    if not isinstance(model, nn.Module):
        raise TypeError(f"source must be a diffkit.training.Trainer or a torch.nn.Module, got {type(source).__name__}")
    if objective is None:  # the Trainer's, or the one the model records (checkpoints.record_objective)
        objective = trainer.objective if trainer is not None else getattr(model, "diffkit_objective", None)
    if objective is not None and not isinstance(objective, Objective):
        raise TypeError(f"objective must be a diffkit.losses.Objective (losses.objective(...)), got "
                        f"{type(objective).__name__}")
    tensors = prefixed("model", model.state_dict())
    meta: dict[str, Any] = {"format": FORMAT, "diffkit": __version__, **model_record(model),
                            "objective": objective.to_dict() if objective is not None else None}
    if trainer is not None:
        tensors.update(prefixed("ema", trainer.ema_model.state_dict()))
        meta.update(config=trainer.config.to_dict(), step=trainer.step)
    return save(path, tensors, {**(extra_metadata or {}), **meta})


def _resolve_class(name: str, classes: Iterable[type]) -> type:
    for cls in classes:
        if f"{cls.__module__}.{cls.__qualname__}" == name or cls.__qualname__ == name.rsplit(".", 1)[-1]:
            return cls
    module, _, qualname = name.rpartition(".")
    if module == "diffkit" or module.startswith("diffkit."):  # only diffkit's own modules are imported by name
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, type):
            return obj
    raise CheckpointError(f"the file was saved from class {name}, which is not one of diffkit's: pass it as "
                          f"classes=[{qualname}] to rebuild it")


def _info(meta: dict[str, Any], path: str | os.PathLike, weights: str, *, need_class: bool = True) -> ModelInfo:
    from .losses import Objective

    if need_class and ("class" not in meta or "model_config" not in meta):
        raise CheckpointError(f"{path} does not say which model it holds (no class and constructor arguments): "
                              "write it with checkpoints.save_model or a Trainer checkpoint")
    record = meta.get("objective")
    objective = Objective.from_dict(record) if record else None
    return ModelInfo(meta.get("class", "?"), meta.get("model_config", {}), objective, weights,
                     meta.get("config"), meta.get("step"), meta.get("diffkit"))


def _weights(tensors: dict[str, Tensor], path: str | os.PathLike, weights: str | None) -> tuple[str, dict]:
    if weights not in (None, "ema", "raw"):
        raise ValueError(f"weights must be 'ema', 'raw' or None (EMA if the file has them), got {weights!r}")
    ema, raw = unprefixed("ema", tensors), unprefixed("model", tensors)
    if weights == "ema" and not ema:
        raise CheckpointError(f"{path} holds no EMA weights (saved from a model, not a Trainer): use weights='raw'")
    if weights == "raw" or (weights is None and not ema):
        return "raw", raw
    return "ema", ema


def load_model(path: str | os.PathLike, *, weights: str | None = None, device: str | torch.device = "cpu",
               classes: Iterable[type] = ()) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the model saved by :func:`save_model` (or a Trainer checkpoint) and load its weights: the EMA
    ones when the file has them (``weights="raw"`` for the others).  Returns ``(model in eval mode, info)``.
    Only diffkit's classes are imported by name; a model class of your own is passed in ``classes``."""
    tensors, meta = load(path, device)
    which, state = _weights(tensors, path, weights)
    info = _info(meta, path, which)
    cls = _resolve_class(info.model_class, classes)
    try:
        model = cls(**info.model_config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild {info.model_class} from its saved arguments ({exc})") from exc
    load_state(model, state, path)
    record_objective(model, info.objective)  # the samplers take the target from the model
    return model.to(device).eval(), info


def load_weights(path: str | os.PathLike, model: nn.Module, *, weights: str | None = None) -> ModelInfo:
    """Load the weights in ``path`` into an existing ``model``; a file written for another class or other
    constructor arguments is a :class:`CheckpointError` that names what differs."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    tensors, meta = load(path)
    which, state = _weights(tensors, path, weights)
    info = _info(meta, path, which, need_class=False)
    mine = model_record(model) if hasattr(model, "_config") else None
    if mine is not None and "class" in meta:
        if mine["class"].rsplit(".", 1)[-1] != info.model_class.rsplit(".", 1)[-1]:
            raise CheckpointError(f"{path} holds a {info.model_class}, not a {mine['class']}: another architecture")
        differ = differences(info.model_config, mine["model_config"])
        if differ:
            raise CheckpointError(f"{path} holds a {info.model_class} of another architecture:\n  "
                                  + "\n  ".join(differ))
    load_state(model, state, path)
    if info.objective is not None:  # the weights were trained on it: the samplers take the target from the model
        record_objective(model, info.objective)
    return info
