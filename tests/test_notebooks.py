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
