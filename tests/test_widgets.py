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
    assert shown[0] == ({"application/papermill.record/text/plain": "3 of 8"},
                        {"scrapbook": {"name": "gan_modes", "mime_prefix": "application/papermill.record/"}})
    assert shown[1][0] == {"application/papermill.record/text/plain": "0.0421"}
    with pytest.raises(ValueError, match="name must be an identifier-like string"):
        widgets.glue("two words", 1)
