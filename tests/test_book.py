"""The book as readers get it: versions in step, every notebook with a Colab entry point, a GPU workflow."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest
import yaml

import diffkit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import colab  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


# --- versions and Colab entry points ----------------------------------------------------------------------------
def test_book_diffkit_and_colab_cells_name_the_same_version():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    version = diffkit.__version__
    assert importlib.metadata.version("diffkit") == version, "the installed diffkit is not this checkout's"
    assert str(config["sphinx"]["config"]["release"]) == version, "_config.yml release != diffkit.__version__"
    for path in NOTEBOOKS:
        installs = [c.source for c in nbformat.read(path, 4).cells if colab.INSTALL_TAG in c.metadata.get("tags", [])]
        assert len(installs) == 1, f"{path.name} has no Colab install cell"
        pinned = set(re.findall(r"diffkit (\d+\.\d+\.\d+)|@v(\d+\.\d+\.\d+)|\"(\d+\.\d+\.\d+)\"", installs[0]))
        assert {v for groups in pinned for v in groups if v} == {version}, f"{path.name} pins another version"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_opens_in_colab(path):
    s = colab.settings()
    nb = nbformat.read(path, 4)
    expected = colab.expected_cells(path, s)
    assert [c.source for c in nb.cells[1:3]] == [c.source for c in expected], \
        f"{path.name}: run `python3 course.py colab` (then re-execute it)"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    link = re.search(r"href=\"(https://colab\.research\.google\.com/github/[^\"]+)\"", nb.cells[1].source).group(1)
    assert link.endswith(f"/blob/{s['branch']}/notebooks/{path.name}")
    assert urlparse(s["url"]).path.strip("/") in link
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert colab.INSTALL_TAG in first_code.metadata.get("tags", []), "the install cell must be the first code cell"
    assert "except ImportError:" in first_code.source  # installs only when missing


def _run_install_cell(tmp_path, prelude: str, source: str) -> subprocess.CompletedProcess:
    """Run the install cell's source in a fresh interpreter where this checkout's diffkit cannot be imported (as
    on Colab), after ``prelude`` (which stands in for pip)."""
    script = tmp_path / "cell.py"
    script.write_text("import sys\n"  # drop the editable install's finder, so that only pip's install is found
                      "sys.meta_path[:] = [f for f in sys.meta_path\n"
                      "                    if 'editable' not in getattr(f, '__module__', '')]\n"
                      f"sys.path[:] = [p for p in sys.path if p and p != {str(ROOT)!r} and '__editable__' not in p]\n"
                      + prelude + "\n" + source + "\nprint('diffkit from', diffkit.__file__)\n")
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_install_cell_fits_a_notebook_column():
    lines = colab.install_source(colab.settings()).splitlines()
    assert len(lines) <= 16 and max(map(len, lines)) <= 88


def test_a_failed_install_says_which_url_and_tag_it_tried_and_what_to_do(tmp_path):
    """pip failing (no repository, or no such tag) ends in one ImportError that shows pip's message, names the URL
    and the tag, and says how to install from a clone, not in a ModuleNotFoundError at every later cell."""
    s = colab.settings()
    fake_pip = ("import subprocess\n"
                "class Failed:\n"
                "    returncode, stdout = 1, ''\n"
                "    stderr = \"error: pathspec 'v0.1.0' did not match any file(s) known to git\"\n"
                "subprocess.run = lambda cmd, **kwargs: Failed()\n")
    result = _run_install_cell(tmp_path, fake_pip, colab.install_source(s))
    assert result.returncode != 0 and result.stderr.count("Traceback") == 1, result.stderr
    last = result.stderr.strip().splitlines()
    assert last[-2].startswith("ImportError: error: pathspec 'v0.1.0' did not match"), result.stderr
    assert f"Could not install diffkit from {s['url']} at tag v{diffkit.__version__}" in last[-1]
    assert "clone the repository and run `pip install -e .` in it" in last[-1]
    assert "ModuleNotFoundError" not in result.stderr


def test_install_cell_installs_the_pinned_version_from_git(tmp_path):
    """The install cell itself, pointed at a tagged clone of this repository (``git+file://``), installs this
    diffkit and imports it.

    On Colab the same cell fetches tag ``v<version>`` of ``repository.url``; publishing a release therefore
    means pushing that tag (README, *Publishing the book*).
    """
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    s = colab.settings()
    source = colab.install_source(s)
    assert f'URL, TAG = "{s["url"]}", "v{diffkit.__version__}"' in source
    assert 'f"diffkit @ git+{URL}@{TAG}"' in source
    clone = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "tag", f"v{diffkit.__version__}"], check=True)
    site = tmp_path / "site"
    # pip without the dependencies (they are installed here) into a folder of its own; file://localhost/...:
    # older pip (23.x) refuses a git+file:/// URL with no host
    offline_pip = ("import subprocess, sys\n"
                   "_run = subprocess.run\n"
                   "def run(cmd, **kwargs):\n"
                   "    extra = ['--no-deps', '--no-build-isolation', '--disable-pip-version-check', "
                   f"'--target', {str(site)!r}]\n"
                   "    out = _run(cmd[:-1] + extra + cmd[-1:], **kwargs)\n"
                   f"    sys.path.insert(0, {str(site)!r})\n"
                   "    return out\n"
                   "subprocess.run = run\n")
    result = _run_install_cell(tmp_path, offline_pip, source.replace(s["url"], f"file://localhost{clone.as_posix()}"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"diffkit from {site / 'diffkit' / '__init__.py'}" in result.stdout and "note:" not in result.stdout
    installed = {p.relative_to(site / "diffkit").as_posix() for p in (site / "diffkit").rglob("*.py")}
    shipped = {p.relative_to(clone / "diffkit").as_posix() for p in (clone / "diffkit").rglob("*.py")}
    assert installed == shipped, f"modules missing from the installed package: {sorted(shipped - installed)}"
    (dist,) = site.glob("diffkit-*.dist-info")
    assert dist.name == f"diffkit-{diffkit.__version__}.dist-info"


def test_gpu_workflow_runs_every_notebook_in_full_mode():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "gpu-notebooks.yml").read_text())
    steps = [s.get("run", "") for job in wf["jobs"].values() for s in job["steps"]]
    assert any("--nbval-lax" in s and "notebooks" in s for s in steps)
    assert not any("DIFFKIT_QUICK" in s for s in steps), "the GPU workflow runs the full budgets"
    assert any("gpu" in str(job.get("runs-on", "")).lower() for job in wf["jobs"].values())


def _stored_cold_minutes(path):
    """The cold-cache minutes a chapter's last cell glued, or (chapters that cache nothing) its stored run time."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("metadata", {}).get("scrapbook", {}).get("name") == "cold_minutes":
                return float(out["data"]["application/papermill.record/text/plain"])
    return nb.metadata["diffkit"]["seconds"] / 60


def test_front_page_lists_every_chapter_with_the_cost_its_notebook_measured():
    rows = re.findall(r"^\| (\d+[a-z]?) \| \{doc\}`[^<`]*<\.\./notebooks/([\w]+)>` \|[^|]*\| ([^|]*) \|$",
                      (ROOT / "book" / "intro.md").read_text(), flags=re.M)
    listed = {name: cost.strip() for _, name, cost in rows}
    assert set(listed) == {p.stem for p in NOTEBOOKS}, "book/intro.md must list every chapter in notebooks/"
    for path in NOTEBOOKS:
        minutes = _stored_cold_minutes(path)
        expected = "< 1 min" if minutes < 1 else f"{round(minutes)} min"
        assert listed[path.stem] == expected, (
            f"{path.name}: the front page says {listed[path.stem]}, the notebook measured {minutes:.1f} min")
