"""Kernel-free interactive figures: a slider (and play button) over precomputed frames.

A chapter that explores a parameter — the time t, DDIM's η, the guidance scale, the number of steps — renders
one figure per value and hands them to :func:`frame_slider`.  The slider, the play button and the stack of
images are linked *in the browser* (``ipywidgets.jslink``), so the widget state stored in the notebook keeps
working in the static HTML book, with no kernel behind it; in a live notebook it behaves the same.

ipywidgets is needed at run time all the same: the Python side builds the widgets whose state the notebook
stores.  Both major versions work: 8 (the course's environment, whose state the HTML book embeds) and 7.7 (what
Colab ships; there the frames sit in a ``Tab`` instead of a ``Stack``, which ipywidgets 7 lacks), so installing
diffkit never upgrades Colab's ipywidgets.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import ipywidgets as widgets

__all__ = ["figure_png", "frame_slider", "frame_grid", "glue", "GLUE_PREFIX"]

#: The MIME prefix under which myst-nb finds glued values in a notebook's stored outputs (``myst_nb.glue``).
GLUE_PREFIX = "application/papermill.record/"


def figure_png(fig, dpi: int = 80) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed, so it is not also shown inline)."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure (e.g. fig, ax = plt.subplots()), got {type(fig).__name__}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _image_stack(frames: Sequence[bytes], claim: str) -> widgets.Stack:
    """One ``Image`` per PNG frame, stacked: the selected one is shown.  ``claim`` opens the error message
    ("frames must be")."""
    if not all(isinstance(f, (bytes, bytearray)) for f in frames):
        raise TypeError(f"{claim} PNG bytes (use diffkit.widgets.figure_png(fig))")
    return _stack([widgets.Image(value=bytes(f), format="png") for f in frames])


def _stack(children: list) -> widgets.Widget:
    """The children stacked, the selected one shown: a ``Stack`` (ipywidgets >= 8), or on ipywidgets 7 (Colab ships
    7.7.1, and its page renders 7's widgets) a ``Tab``, whose ``selected_index`` the sliders drive the same way."""
    stack = getattr(widgets, "Stack", None) or widgets.Tab
    return stack(children=children, selected_index=0)


def _label_slider(labels: Sequence[str], description: str) -> widgets.SelectionSlider:
    return widgets.SelectionSlider(options=[str(s) for s in labels], index=0, description=description,
                                   continuous_update=True, layout=widgets.Layout(width="420px"))


def frame_slider(frames: Sequence[bytes], labels: Sequence[str], *, description: str = "t",
                 interval_ms: int = 400) -> widgets.VBox:
    """A slider over ``frames`` (PNG bytes, e.g. from :func:`figure_png`), labelled by ``labels``, with a play
    button; all links run client-side, so the exported HTML stays interactive."""
    if len(frames) == 0 or len(frames) != len(labels):
        raise ValueError(f"frames and labels must be non-empty and of equal length, got {len(frames)} and {len(labels)}")
    stack, slider = _image_stack(frames, "frames must be"), _label_slider(labels, description)
    play = widgets.Play(min=0, max=len(frames) - 1, step=1, interval=interval_ms, description="play")
    links = (widgets.jslink((play, "value"), (slider, "index")),
             widgets.jslink((slider, "index"), (stack, "selected_index")))
    box = widgets.VBox([widgets.HBox([play, slider]), stack])
    box.links = links  # keep the link widgets alive with the figure (and inspectable)
    return box


def frame_grid(frames: Sequence[Sequence[bytes]], row_labels: Sequence[str], col_labels: Sequence[str], *,
               row_description: str = "row", col_description: str = "column") -> widgets.VBox:
    """Two sliders over a grid of precomputed frames: ``frames[i][j]`` (PNG bytes, e.g. from :func:`figure_png`)
    is shown for row value ``row_labels[i]`` and column value ``col_labels[j]`` — e.g. DDIM's η by the number of
    steps (chapter 4).

    The frames sit in nested ``Stack`` widgets: an outer stack over the rows whose children are inner stacks over
    the columns.  The row slider is jslinked to the outer stack and the column slider to *every* inner stack, so
    both sliders work in the browser alone and the exported HTML stays interactive."""
    if isinstance(frames, (bytes, bytearray)) or not isinstance(frames, Sequence):
        raise TypeError("frames must be a list of rows, each a list of PNG bytes (frames[row][column])")
    n_rows, n_cols = len(row_labels), len(col_labels)
    if n_rows == 0 or n_cols == 0:
        raise ValueError(f"row_labels and col_labels must be non-empty, got {n_rows} and {n_cols} labels")
    if len(frames) != n_rows:
        raise ValueError(f"frames must have one row per row label ({n_rows}), got {len(frames)} rows")
    for i, row in enumerate(frames):
        if isinstance(row, (bytes, bytearray)) or not isinstance(row, Sequence):
            raise TypeError(f"frames[{i}] must be a list of PNG bytes (one per column), got {type(row).__name__}")
        if len(row) != n_cols:
            raise ValueError(f"frames[{i}] must have one frame per column label ({n_cols}), got {len(row)}")
    for name, labels in (("row_labels", row_labels), ("col_labels", col_labels)):
        if len({str(s) for s in labels}) != len(labels):
            raise ValueError(f"{name} must be distinct (a slider selects by label), got {list(labels)}")
    inner = [_image_stack(row, f"frames[{i}] must hold") for i, row in enumerate(frames)]
    outer = _stack(inner)
    row_slider, col_slider = _label_slider(row_labels, row_description), _label_slider(col_labels, col_description)
    links = (widgets.jslink((row_slider, "index"), (outer, "selected_index")),
             *(widgets.jslink((col_slider, "index"), (stack, "selected_index")) for stack in inner))
    box = widgets.VBox([row_slider, col_slider, outer])
    box.links = links  # keep the link widgets alive with the figure (and inspectable)
    return box


def glue(name: str, value: object) -> None:
    """Store ``value`` in the cell's output under ``name``, unseen in the notebook, so that the book's text can quote
    it: ``{glue:text}`name``` in a Markdown cell shows it (numbers: ``{glue:text}`name:.3f```).

    The same output as ``myst_nb.glue(name, value, display=False)``, written without importing myst-nb (which
    Colab lacks).  A ``str`` is stored as its ``repr``: the book reads a glued text with ``ast.literal_eval``, so an
    unquoted ``"1,600"`` would show as the tuple ``(1, 600)`` and ``"1e-3"`` as ``0.001``.  Anything else is
    stored as its plain-text display."""
    from IPython.core.formatters import format_display_data
    from IPython.display import display

    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier-like string (it is quoted in Markdown), got {name!r}")
    bundle, metadata = ({"text/plain": repr(value)}, {}) if isinstance(value, str) else format_display_data(value)
    metadata = {**metadata, "scrapbook": {"name": name, "mime_prefix": GLUE_PREFIX}}
    display({GLUE_PREFIX + k: v for k, v in bundle.items()}, raw=True, metadata=metadata)
