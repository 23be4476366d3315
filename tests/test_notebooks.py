"""The book's structure and the freshness of the outputs stored in its notebooks."""

import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from nbstamp import code_hash  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _toc_files(entries):
    for entry in entries:
        if "file" in entry:
            yield entry["file"]
        yield from _toc_files(entry.get("chapters", []) + entry.get("sections", []))
        for part in entry.get("parts", []):
            yield from _toc_files(part.get("chapters", []))


def test_toc_lists_exactly_the_chapters_that_exist():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"], *_toc_files(toc.get("chapters", []) + toc.get("parts", []))]
    for f in files:
        assert any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb")), f"_toc.yml lists missing {f}"
    listed = {str(Path(f).with_suffix("")) for f in files}
    for nb in NOTEBOOKS:
        assert str(nb.relative_to(ROOT).with_suffix("")) in listed, f"{nb.name} is not in _toc.yml"
    assert NOTEBOOKS, "there must be at least one chapter notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_are_fresh(path):
    nb = nbformat.read(path, as_version=4)
    stamp = nb.metadata.get("diffkit")
    assert stamp, f"{path.name} was never executed with `python3 course.py execute`"
    assert stamp["mode"] == "full", f"{path.name}'s stored outputs come from a {stamp['mode']} run"
    assert stamp["code_sha256"] == code_hash(nb), (
        f"{path.name}'s code cells changed since it was last executed in full mode: "
        f"run `python3 course.py execute notebooks/{path.name}`")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{path.name} has code cells without stored execution"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name} stores an error output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_test_markers_are_cell_tags_not_visible_comments(path):
    """What a reader sees is the book: nbval's markers live in cell tags, never as comments in the code, and
    no stored output shows a warning."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        assert "NBVAL_" not in cell.source, f"{path.name}, code cell {i}: use the nbval-* cell tag, not a comment"
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stderr":
                assert "Warning" not in out.text, f"{path.name}, code cell {i} stores a warning: {out.text[:200]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_and_printed_lines_fit_the_column(path):
    """The HTML column shows about 90 characters: a longer code line (> 88) or printed line (> 90) scrolls
    sideways and hides its end."""
    nb = nbformat.read(path, as_version=4)
    long_code, long_out = [], []
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        long_code += [f"cell {i}: {line[:60]}…" for line in cell.source.splitlines() if len(line) > 88]
        for out in cell.outputs:
            text = out.get("text", "") if out.output_type == "stream" else out.get("data", {}).get("text/plain", "")
            shown = {"text/html", "application/vnd.jupyter.widget-view+json", "image/png"}
            if out.output_type != "stream" and shown & set(out.get("data", {})):
                continue  # rendered HTML wraps, widgets and figures draw: their text/plain is never shown
            text = "".join(text) if isinstance(text, list) else text
            long_out += [f"cell {i}: {line[:60]}…" for line in text.splitlines() if len(line) > 90]
    assert not long_code, f"{path.name}: code lines over 88 characters: {long_code}"
    assert not long_out, f"{path.name}: printed lines over 90 characters: {long_out}"


def _glued_texts(nb):
    prefix = "application/papermill.record/text/plain"
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if prefix in out.get("data", {}):
                yield out.metadata["scrapbook"]["name"], out.data[prefix]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_glued_values_show_in_the_book_as_stored(path):
    """The book shows a glued text as ``str(ast.literal_eval(text))``: a glued number must be a plain int or float
    and a glued string must be stored quoted, or "1,600" shows as "(1, 600)" and "np.float64(2.0)" as itself."""
    import ast

    bad = []
    for name, text in _glued_texts(nbformat.read(path, as_version=4)):
        try:
            value = ast.literal_eval(text)
        except (SyntaxError, ValueError):
            bad.append(f"{name} = {text!r} (not a literal)")
            continue
        if isinstance(value, str):
            continue
        if type(value) not in (int, float) or str(value) != text:
            bad.append(f"{name} = {text!r} shows as {str(value)!r}")
    assert not bad, f"{path.name}: glued values the book would show wrongly: {bad}"
