"""Auto-checked exercises: write a function in the notebook, hand it to :func:`check`, read the feedback.

    from diffkit import exercises
    def forward_sample(x0, eps, alpha_bar):
        ...
    exercises.check("forward_sample", forward_sample)

A checker runs the function on several cases with known answers and says *what* is wrong — a missing square
root, swapped coefficients, a sign, a wrong shape, arguments taken in another order or in the wrong number —
without printing the answer. It never raises for a wrong answer (the notebook keeps running); an unfinished
exercise (``raise NotImplementedError``) is reported as such.

The steps, from the prompt to the answer: :func:`list` (every exercise, by chapter), :func:`show` (the prompt
and the signature to write), :func:`check`, :func:`hint` (graded: ``hint(name)`` a nudge, ``hint(name, 2)``
more), and last :func:`solution` (the reference solution, collapsed until clicked; it passes its own checker:
tested). The exercises live one module per chapter (``ch02`` …); their reference solutions are the functions
there, named like the exercise.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable

from .._checks import check_choice
from . import ch00, ch01, ch02, ch03, ch04, ch05, ch06, ch07, ch08, ch09, ch10, ch11, ch12, ch13, ch14
from ._checking import Exercise, Note, Result, Solution, run_check

__all__ = ["check", "solution", "hint", "show", "list", "signature", "EXERCISES", "CHAPTERS_IN_BOOK", "Result",
           "Exercise", "Note", "Solution"]

CHAPTERS_IN_BOOK = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)  # the chapters of _toc.yml (tested); exercises of later ones are "coming"

EXERCISES: dict[str, Exercise] = {e.name: e for module in (ch00, ch01, ch02, ch03, ch04, ch05, ch06, ch07, ch08, ch09, ch10, ch11,
                                                 ch12, ch13, ch14)
                                  for e in module.EXERCISES}


def _exercise(name: str) -> Exercise:
    check_choice("name", name, EXERCISES)
    return EXERCISES[name]


def _coming(exercise: Exercise) -> str:
    return "" if exercise.chapter in CHAPTERS_IN_BOOK else f" (chapter {exercise.chapter} is coming)"


def signature(name: str) -> str:
    """The signature to write for exercise ``name``, e.g. ``"forward_sample(x0, eps, alpha_bar)"``."""
    return f"{name}({', '.join(_exercise(name).parameters)})"


def check(name: str, fn: Callable, *, verbose: bool = True) -> Result:
    """Check the reader's ``fn`` for exercise ``name``; print (if ``verbose``) and return the :class:`Result`.

    In a notebook the printed feedback is all that shows: echoing the returned result adds nothing."""
    result = run_check(_exercise(name), fn)
    if verbose:
        print(result)
        result.printed = True
    return result


def hint(name: str, level: int = 1) -> Note:
    """Hint number ``level`` for exercise ``name``: 1 is a nudge, each next one says more, none is the code."""
    hints = _exercise(name).hints
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise ValueError(f"level must be an integer >= 1 (1 is the first hint), got {level!r}")
    level = min(level, len(hints))
    after = (f"more: exercises.hint({name!r}, {level + 1})" if level < len(hints)
             else f"that is the last hint; the answer: exercises.solution({name!r})")
    return Note(f"hint {level} of {len(hints)} for '{name}': {hints[level - 1]}\n({after})")


def show(name: str) -> Note:
    """The prompt of exercise ``name`` and the signature of the function to write."""
    exercise = _exercise(name)
    return Note(f"exercise '{name}'{_coming(exercise) or f' (chapter {exercise.chapter})'}: {exercise.prompt}\n"
                f"write:  def {signature(name)}:\n"
                f"check:  exercises.check({name!r}, {name})   stuck? exercises.hint({name!r})")


class Listing(builtins.list):
    """The names of some exercises (a list), shown as a table by chapter."""

    def __str__(self) -> str:
        return "\n".join(f"chapter {EXERCISES[n].chapter:2d}  {signature(n)}{_coming(EXERCISES[n])}" for n in self)

    def _repr_html_(self) -> str:
        return Note(str(self))._repr_html_()


def list(chapter: int | None = None) -> Listing:  # noqa: A001  (exercises.list())
    """The exercises of the chapters in the book (of ``chapter`` only, if given — a coming chapter too), shown
    with their chapter and signature; ``print()`` it outside a notebook."""
    if chapter is None:
        return Listing(n for n, e in EXERCISES.items() if e.chapter in CHAPTERS_IN_BOOK)
    return Listing(n for n, e in EXERCISES.items() if e.chapter == chapter)


def solution(name: str) -> Solution:
    """The reference solution of exercise ``name`` (try :func:`hint` first): a notebook shows it collapsed, in
    a ``<details>`` block; ``str()`` / ``print()`` give the source."""
    exercise = _exercise(name)
    return Solution(name, exercise.source)
