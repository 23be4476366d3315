import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from diffkit.widgets import figure_png, frame_slider  # noqa: E402


def _frames(n):
    out = []
    for i in range(n):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, i])
        out.append(figure_png(fig))
    return out


def test_slider_play_and_frames_are_linked_client_side():
    frames = _frames(3)
    assert all(f.startswith(b"\x89PNG") for f in frames) and len(set(frames)) == 3
    box = frame_slider(frames, ["0.0", "0.5", "1.0"])
    (play, slider), stack = box.children[0].children, box.children[1]
    assert [img.value for img in stack.children] == frames and stack.selected_index == 0
    pairs = {((ln.source[0].model_id, ln.source[1]), (ln.target[0].model_id, ln.target[1])) for ln in box.links}
    assert ((play.model_id, "value"), (slider.model_id, "index")) in pairs
    assert ((slider.model_id, "index"), (stack.model_id, "selected_index")) in pairs
    assert play.max == 2 and list(slider.options) == ["0.0", "0.5", "1.0"]


def test_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        frame_slider(_frames(2), ["a"])
    with pytest.raises(TypeError, match="frames must be PNG bytes"):
        frame_slider(["not png"], ["a"])


def test_glue_stores_what_myst_nb_reads(monkeypatch):
    import IPython.display

    from diffkit import widgets

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw, metadata: shown.append((obj, metadata)))
    widgets.glue("gan_modes", "3 of 8")
    widgets.glue("mmd", 0.0421)
    assert shown[0] == ({"application/papermill.record/text/plain": "'3 of 8'"},
                        {"scrapbook": {"name": "gan_modes", "mime_prefix": "application/papermill.record/"}})
    assert shown[1][0] == {"application/papermill.record/text/plain": "0.0421"}
    with pytest.raises(ValueError, match="name must be an identifier-like string"):
        widgets.glue("two words", 1)


@pytest.mark.parametrize("text", ["1,600", "1e-3", "True", "3 of 8", "(a, b)", "it's", 'say "x"', "[1]"])
def test_glued_text_reads_back_unchanged_in_the_book(monkeypatch, text):
    """The book shows a glued text as ``str(ast.literal_eval(stored))`` (myst-nb's ``format_plain_text``): a string
    that is itself a Python literal must come back as typed, not as a tuple, float or bool."""
    import ast

    import IPython.display

    from diffkit import widgets

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw, metadata: shown.append(obj))
    widgets.glue("value", text)
    stored = shown[0]["application/papermill.record/text/plain"]
    assert str(ast.literal_eval(stored)) == text
    variables = pytest.importorskip("myst_nb.core.variables")
    assert variables.format_plain_text(stored, "") == text


def test_frame_grid_links_both_sliders_and_places_every_frame_once():
    from diffkit.widgets import frame_grid

    flat = _frames(6)
    grid = [flat[0:3], flat[3:6]]  # 2 rows x 3 columns
    box = frame_grid(grid, ["0", "1"], ["5", "10", "50"], row_description="eta", col_description="steps")
    row_slider, col_slider, outer = box.children
    assert list(row_slider.options) == ["0", "1"] and list(col_slider.options) == ["5", "10", "50"]
    assert row_slider.description == "eta" and col_slider.description == "steps"
    # every frame appears exactly once, at its (row, column)
    shown = [[bytes(img.value) for img in inner.children] for inner in outer.children]
    assert shown == grid
    assert sorted(v for row in shown for v in row) == sorted(flat)
    pairs = {((ln.source[0].model_id, ln.source[1]), (ln.target[0].model_id, ln.target[1])) for ln in box.links}
    assert ((row_slider.model_id, "index"), (outer.model_id, "selected_index")) in pairs
    for inner in outer.children:  # the column slider drives every row's stack, or a row change would reset it
        assert ((col_slider.model_id, "index"), (inner.model_id, "selected_index")) in pairs
    assert len(pairs) == 1 + len(outer.children)
    assert all(ln.source[0] is not col_slider or ln.target[0] is not outer for ln in box.links)


def test_frame_grid_bad_input():
    from diffkit.widgets import frame_grid

    f = _frames(2)
    with pytest.raises(ValueError, match="one row per row label"):
        frame_grid([f], ["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match=r"frames\[0\] must have one frame per column label"):
        frame_grid([f[:1]], ["a"], ["x", "y"])
    with pytest.raises(TypeError, match=r"frames\[0\] must hold PNG bytes"):
        frame_grid([["png?", f[0]]], ["a"], ["x", "y"])
    with pytest.raises(TypeError, match="frames must be a list of rows"):
        frame_grid(f[0], ["a"], ["x"])
    with pytest.raises(ValueError, match="row_labels and col_labels must be non-empty"):
        frame_grid([], [], ["x"])
    with pytest.raises(ValueError, match="col_labels must be distinct"):
        frame_grid([f], ["a"], ["x", "x"])
