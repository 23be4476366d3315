"""Compute budgets: the one place that reads ``DIFFKIT_QUICK`` (chapter 0, *How to use this book*).

Full mode is the default and produces the results shown in the book.  ``DIFFKIT_QUICK=1`` (used by CI)
shrinks every training and sampling budget so that each notebook runs in about a minute on two CPU cores.
Notebooks never test the variable themselves; they write ``n_iters = budget(full=4000, quick=200)``.
"""

from __future__ import annotations

import os
from typing import TypeVar

__all__ = ["is_quick", "budget", "mode", "report_cost"]

T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def is_quick() -> bool:
    """True when the environment variable ``DIFFKIT_QUICK`` is set to 1 / true / yes / on."""
    value = os.environ.get("DIFFKIT_QUICK", "").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(f"DIFFKIT_QUICK must be one of 1/0, true/false, yes/no, on/off; got {value!r}")
    return value in _TRUE


def mode() -> str:
    """``"quick"`` or ``"full"``."""
    return "quick" if is_quick() else "full"


def budget(full: T, quick: T) -> T:
    """Return ``quick`` in quick mode and ``full`` otherwise; both must be of the same type."""
    if type(full) is not type(quick):
        raise TypeError(f"full and quick must have the same type, got {type(full).__name__} and {type(quick).__name__}")
    return quick if is_quick() else full


def report_cost(start: float) -> dict[str, float]:
    """Print and glue what a chapter cost, for its *Cost* line: the seconds since ``start`` (a
    ``time.perf_counter()`` taken at the top of the chapter), the training it loaded from the cache instead of
    running (:func:`diffkit.cache.seconds_saved`, as recorded on the machine that trained it), and their sum,
    the cost from an empty cache.  Glued as ``run_minutes``, ``saved_minutes`` and ``cold_minutes``."""
    import time

    from .cache import seconds_saved
    from .widgets import glue

    if not isinstance(start, (int, float)) or isinstance(start, bool):
        raise TypeError(f"start must be the time.perf_counter() taken when the chapter began, got {start!r}")
    run = time.perf_counter() - start
    if run < 0:
        raise ValueError(f"start must be a time.perf_counter() reading from the past, got {start!r}")
    saved = seconds_saved()
    print(f"this chapter ran in {run:.0f} s ({mode()} mode); it loaded {saved:.0f} s of training from the cache,\n"
          f"so from an empty cache it takes about {run + saved:.0f} s ({(run + saved) / 60:.1f} min)")
    cost = {"run_minutes": run / 60, "saved_minutes": saved / 60, "cold_minutes": (run + saved) / 60}
    for name, value in cost.items():
        glue(name, value)
    return cost
