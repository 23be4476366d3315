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


def test_install_cell_installs_the_pinned_version_from_git(tmp_path):
    """The install cell's pip spec, pointed at a tagged clone of this repository, installs this diffkit.

    On Colab the same spec fetches tag ``v<version>`` of ``repository.url``; publishing a release therefore
    means pushing that tag.
    """
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    s = colab.settings()
    spec = re.search(r'%pip install -q "(.+)"', colab.install_source(s)).group(1)
    name, _, url = spec.partition(" @ git+")
    repo, _, tag = url.rpartition("@")
    assert (name, repo, tag) == ("diffkit", s["url"], f"v{diffkit.__version__}")
    clone = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "tag", tag], check=True)
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                             "--disable-pip-version-check", "--target", str(site),
                             # file://localhost/...: older pip (23.x) refuses a git+file:/// URL with no host
                             f"{name} @ git+file://localhost{clone.as_posix()}@{tag}"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
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
