"""Compute budgets: the one place that reads ``DIFFKIT_QUICK`` (chapter 0, *How to use this book*).

Full mode is the default and produces the results shown in the book.  ``DIFFKIT_QUICK=1`` (used by CI)
shrinks every training and sampling budget so that each notebook runs in about a minute on two CPU cores.
Notebooks never test the variable themselves; they write ``n_iters = budget(full=4000, quick=200)``.
"""

from __future__ import annotations

import os
from typing import TypeVar

__all__ = ["is_quick", "budget", "mode"]

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
