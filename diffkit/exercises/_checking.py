"""The machinery every exercise shares: its record, running the reader's function on cases with known answers,
naming a known mistake, and what the reader sees (:class:`Result`, :class:`Note`, :class:`Solution`).

A notebook shows each object through its ``_repr_html_`` (Jupyter, Colab, the HTML book); ``str()`` gives the
plain text, so ``print()`` works everywhere.
"""

from __future__ import annotations

import html
import inspect
import itertools
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Exercise", "Result", "Note", "Solution", "close", "compare", "compare_pair", "diagnose", "run_check"]


# --- what the reader sees -----------------------------------------------------------------------------------------
@dataclass
class Result:
    """The outcome of :func:`~diffkit.exercises.check`: ``passed`` and the feedback lines shown to the reader."""

    name: str
    passed: bool
    feedback: list[str] = field(default_factory=list)
    printed: bool = field(default=False, repr=False, compare=False)  # check() printed it already

    def __str__(self) -> str:
        head = f"{'✓' if self.passed else '✗'} exercise '{self.name}': {'correct' if self.passed else 'not yet'}"
        return "\n".join([head, *(f"  - {line}" for line in self.feedback)])

    def __repr__(self) -> str:
        return f"Result({self.name!r}, passed={self.passed})"

    def _repr_html_(self) -> str:
        mark, colour = ("✓", "#1a7f37") if self.passed else ("✗", "#cf222e")
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self.feedback)
        return (f'<div class="diffkit-result"><span style="color: {colour}">{mark}</span> exercise '
                f"<code>{html.escape(self.name)}</code>: {'correct' if self.passed else 'not yet'}"
                f'<ul style="margin: 0.2em 0">{items}</ul></div>')

    def _ipython_display_(self) -> None:
        """Shown once in a notebook: when :func:`check` has printed it, echoing it again shows nothing."""
        if not self.printed:
            from IPython.display import display

            display({"text/html": self._repr_html_(), "text/plain": str(self)}, raw=True)


@dataclass(frozen=True)
class Note:
    """A piece of text for the reader (a hint, a prompt, a list): plain text in ``print``, HTML in a notebook."""

    text: str

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__  # the terminal's echo reads like print()

    def _repr_html_(self) -> str:
        return f'<pre class="diffkit-note" style="white-space: pre-wrap">{html.escape(self.text)}</pre>'


@dataclass(frozen=True)
class Solution:
    """The source of a reference solution, collapsed until the reader asks for it.

    ``str()`` is the source itself (``print(solution(name))``, ``exec``); a notebook shows an HTML ``<details>``
    block, closed, whose summary names the exercise — the same in Jupyter, Colab and the HTML book, which shows
    the stored output.
    """

    name: str
    source: str

    def __str__(self) -> str:
        return self.source

    def __repr__(self) -> str:
        return f"<reference solution to {self.name}: print() it to read it>"

    @property
    def summary(self) -> str:
        return f"Show the reference solution to {self.name}"

    def _repr_html_(self) -> str:
        return (f'<details class="diffkit-solution"><summary>{html.escape(self.summary)}</summary>\n'
                f"{_highlight(self.source)}</details>")

    def _repr_markdown_(self) -> str:
        return f"<details><summary>{html.escape(self.summary)}</summary>\n\n```python\n{self.source}```\n\n</details>"


def _highlight(source: str) -> str:
    """Python source as self-contained HTML: Pygments with inline styles when it is there (it comes with
    IPython), else escaped in ``<pre><code>``."""
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
    except ImportError:
        return f"<pre><code>{html.escape(source)}</code></pre>"
    return highlight(source, PythonLexer(), HtmlFormatter(noclasses=True, nowrap=False))


# --- an exercise ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exercise:
    """One exercise: its ``solution`` is the reference (and the source shown to the reader), ``diagnose`` returns
    the problems found in a reader's function (empty = correct), ``hints`` go from a nudge to almost the answer."""

    name: str
    chapter: int
    prompt: str
    solution: Callable
    diagnose: Callable[[Callable], list[str]]
    hints: tuple[str, ...] = ()

    @property
    def parameters(self) -> tuple[str, ...]:
        """The argument names of the function to write, in order (those of the reference solution)."""
        return tuple(inspect.signature(self.solution).parameters)

    @property
    def source(self) -> str:
        return textwrap.dedent(inspect.getsource(self.solution))


# --- comparing with the reference ----------------------------------------------------------------------------------
def close(a: object, b: Tensor, tol: float = 1e-6) -> bool:
    return isinstance(a, Tensor) and a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=tol,
                                                                                rtol=tol))


def randn(g: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def uniform(g: torch.Generator, low: float, high: float, *shape: int) -> Tensor:
    return low + (high - low) * torch.rand(*shape, generator=g, dtype=torch.float64)


VALUES_OFF = "the values are off"


def _off(err: float) -> str:
    return f"{VALUES_OFF} (largest error {err:.3g}) on inputs where the answer is known"


def _matches(mistake: Callable, runs: list[tuple], same: Callable[[object, object], bool]) -> bool:
    """Whether ``mistake`` gives what the reader's function gave on every case (a mistake that crashes does not)."""
    try:
        return all(same(got, mistake(*args)) for args, got, _ in runs)
    except Exception:  # noqa: BLE001
        return False


def diagnose(runs: list[tuple], wrong: dict[str, Callable], same: Callable[[object, object], bool],
             error: Callable[[object, object], float]) -> list[str]:
    """``runs``: (args, got, want) per case. Empty if every ``got`` is right; else the known mistake that explains
    all of them, or how far off the values are."""
    if all(same(got, want) for _, got, want in runs):
        return []
    for message, mistake in wrong.items():
        if _matches(mistake, runs, same):
            return [message]
    return [_off(max(error(got, want) for _, got, want in runs))]


def _tensor_error(got: Tensor, want: Tensor) -> float:
    return (got.double() - want.double()).abs().max().item()


def compare(fn: Callable, expected: Callable, cases: list[tuple], wrong: dict[str, Callable]) -> list[str]:
    """Run ``fn`` on every case; where it disagrees with ``expected``, name the known mistake (``wrong``: message →
    the mistaken function) that gives the same output on every case."""
    runs = []
    for args in cases:
        want, got = expected(*args), fn(*args)
        if not isinstance(got, Tensor):
            return [f"return a torch.Tensor, got {type(got).__name__}"]
        if got.shape != want.shape:
            return [f"the result should have shape {tuple(want.shape)} (like the inputs), got {tuple(got.shape)}"]
        if not torch.isfinite(got).all():
            return ["the result contains NaN or inf"]
        runs.append((args, got, want))
    return diagnose(runs, wrong, close, _tensor_error)


def compare_pair(fn: Callable, expected: Callable, cases: list[tuple], wrong: dict[str, Callable],
                 names: str = "(x_new, y_new)") -> list[str]:
    """Like :func:`compare`, for a function returning a pair of tensors."""
    runs = []
    for args in cases:
        got, want = fn(*args), expected(*args)
        if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(v, Tensor) for v in got)):
            return [f"return a pair {names} of tensors"]
        if any(a.shape != b.shape for a, b in zip(got, want)):
            return [f"both parts of {names} should have the shape of the inputs, {tuple(want[0].shape)}"]
        runs.append((args, got, want))
    return diagnose(runs, wrong, lambda got, want: all(close(a, b) for a, b in zip(got, want)),
                    lambda got, want: max(_tensor_error(a, b) for a, b in zip(got, want)))


# --- checking a reader's function ----------------------------------------------------------------------------------
def _argument_problems(exercise: Exercise, fn: Callable) -> list[str]:
    """Feedback on the number and order of the reader's arguments, read from ``fn``'s signature."""
    want = exercise.parameters
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # not inspectable: the checker will tell by running it
        return []
    try:
        inspect.signature(fn).bind(*want)
    except TypeError:
        return [f"your function takes ({', '.join(params)}) but is called with {len(want)} argument(s): "
                f"{exercise.name}({', '.join(want)})"]
    names = tuple(p.name for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    if sorted(names[:len(want)]) == sorted(want) and names[:len(want)] != want:
        return [f"the arguments come in the order ({', '.join(want)}), your function takes "
                f"({', '.join(names[:len(want)])}): the checker passes them by position"]
    return []


_GENERIC = (VALUES_OFF, "the result contains NaN", "the result should have shape", "your function raised")


def _order_problem(exercise: Exercise, fn: Callable) -> list[str]:
    """If ``fn`` is right once its arguments are permuted, say which order it expects."""
    want = exercise.parameters
    if not 2 <= len(want) <= 4:
        return []
    for perm in itertools.permutations(range(len(want))):
        if perm == tuple(range(len(want))):
            continue
        try:
            if not exercise.diagnose(lambda *args, perm=perm: fn(*[args[i] for i in perm])):
                order = ", ".join(want[i] for i in perm)
                return [f"your function is right for the arguments in the order ({order}), but it is called as "
                        f"{exercise.name}({', '.join(want)})"]
        except Exception:  # noqa: BLE001  (a permutation that crashes is just not the one)
            continue
    return []


def run_check(exercise: Exercise, fn: Callable) -> Result:
    """Diagnose ``fn`` for ``exercise``; never raises for the reader's mistakes."""
    if not callable(fn):
        raise TypeError(f"fn must be the function you wrote, got {type(fn).__name__}")
    problems = _argument_problems(exercise, fn)
    if not problems:
        try:
            problems = exercise.diagnose(fn)
        except NotImplementedError:
            problems = ["not implemented yet: replace `raise NotImplementedError` with your code"]
        except Exception as exc:  # the reader's code crashed: say where, keep the notebook running
            problems = [f"your function raised {type(exc).__name__}: {exc}"]
        if problems and problems[0].startswith(_GENERIC):  # no known mistake recognised: arguments misread?
            problems = _order_problem(exercise, fn) or problems
    if problems and not problems[0].startswith("not implemented"):
        name = exercise.name
        stuck = f"stuck? exercises.hint({name!r}), then exercises.solution({name!r})"
        if len(stuck) > 80:  # printed after "  - ": keep the line inside the book's column
            stuck = stuck.replace(", then ", ",\n    then ")
        problems = [*problems, stuck]
    return Result(exercise.name, not problems, problems or ["matches the reference on every test case"])
