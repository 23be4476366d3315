"""Give every notebook its Colab entry point, generated from the one place that names the repository.

    python3 course.py colab          # write the cells (then re-execute the changed notebooks)
    python3 course.py colab --check  # exit 1 if any notebook's cells differ from what they should be

Each notebook gets, right after its title cell, a markdown cell with an "Open in Colab" link and a code cell
that installs diffkit — pinned to the version the book was built with — only where it is missing.  The
repository URL and branch come from ``_config.yml`` (``repository``), the version from ``diffkit.__version__``,
which ``_config.yml``'s ``sphinx.config.release`` must equal.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
BADGE_TAG, INSTALL_TAG = "colab-link", "colab-install"
# The badge is drawn here and embedded as a data URI, so that it shows in Jupyter, in Colab and in the offline
# HTML book alike (the usual badge image lives on a server the book must not depend on).
BADGE_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="118" height="20" role="img" aria-label="Open in Colab">'
             '<rect width="118" height="20" rx="3" fill="#555"/><rect x="38" width="80" height="20" rx="3" fill="#f9ab00"/>'
             '<rect x="38" width="4" height="20" fill="#f9ab00"/><g font-family="Verdana,DejaVu Sans,sans-serif" '
             'font-size="11"><text x="6" y="14" fill="#fff">Open</text><text x="45" y="14" fill="#222">in Colab</text>'
             '<path d="M103 6 L110 10 L103 14 Z" fill="#222"/></g></svg>')


def settings() -> dict[str, str]:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    sys.path.insert(0, str(ROOT))
    import diffkit

    url = config["repository"]["url"].rstrip("/")
    if not url.startswith("https://github.com/"):
        raise ValueError(f"_config.yml repository.url must be a GitHub URL (Colab opens notebooks from GitHub), got {url}")
    return {"url": url, "branch": config["repository"].get("branch", "main"), "version": diffkit.__version__,
            "release": str(config["sphinx"]["config"]["release"])}


def badge_source(nb_path: Path, s: dict[str, str]) -> str:
    slug = s["url"].removeprefix("https://github.com/")
    rel = nb_path.resolve().relative_to(ROOT).as_posix()
    link = f"https://colab.research.google.com/github/{slug}/blob/{s['branch']}/{rel}"
    badge = "data:image/svg+xml;base64," + base64.b64encode(BADGE_SVG.encode()).decode()
    # an HTML <img>: Markdown image syntax does not accept SVG data URIs (markdown-it refuses them)
    return (f'<a href="{link}"><img src="{badge}" alt="Open in Colab" width="118" height="20"></a> '
            "· this chapter runs as is in Colab, on a GPU when Colab gives you one.")


def install_source(s: dict[str, str]) -> str:
    """The install cell: plain Python (no ``%pip``, so that its failure is caught), because diffkit is not installed
    yet when it runs.  When pip fails it raises one ImportError with pip's message, the URL and tag it tried and
    what to do; "Run all" stops there instead of failing again at every ``import diffkit``."""
    v = s["version"]
    return (f"# Installs diffkit {v} (the book's version) only where it is missing, e.g. on Colab.\n"
            "try:\n"
            "    import diffkit\n"
            "except ImportError:\n"
            "    import subprocess, sys\n"
            f"    URL, TAG = \"{s['url']}\", \"v{v}\"\n"
            "    pip = subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\",\n"
            "                          f\"diffkit @ git+{URL}@{TAG}\"], capture_output=True, text=True)\n"
            "    if pip.returncode != 0:  # one clear error, instead of one at every import diffkit\n"
            "        raise ImportError(\n"
            "            f\"{pip.stderr[-2000:]}\\nCould not install diffkit from {URL} at tag {TAG}. \"\n"
            "            \"Set URL to a repository that has the tag, or clone the repository and \"\n"
            "            \"run `pip install -e .` in it.\") from None\n"
            "    import diffkit\n"
            f"if diffkit.__version__ != \"{v}\":\n"
            f"    print(f\"note: written for diffkit {v}; you have {{diffkit.__version__}}\")")


def expected_cells(nb_path: Path, s: dict[str, str]) -> list[nbformat.NotebookNode]:
    badge = nbformat.v4.new_markdown_cell(badge_source(nb_path, s), metadata={"tags": [BADGE_TAG]})
    install = nbformat.v4.new_code_cell(install_source(s), metadata={"tags": [INSTALL_TAG]})
    return [badge, install]


def _tagged(cell: nbformat.NotebookNode, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def sync(nb_path: Path, s: dict[str, str], write: bool) -> bool:
    """Put the Colab cells in place; return True if the notebook had to change."""
    nb = nbformat.read(nb_path, as_version=4)
    want = expected_cells(nb_path, s)
    cells = [c for c in nb.cells if not (_tagged(c, BADGE_TAG) or _tagged(c, INSTALL_TAG))]
    old = [c for c in nb.cells if _tagged(c, BADGE_TAG) or _tagged(c, INSTALL_TAG)]
    same = len(old) == 2 and nb.cells[1:3] == old and all(o.source == w.source for o, w in zip(old, want))
    if same:
        return False
    if write:
        for w, o in zip(want, old):  # keep stored outputs of an unchanged install cell
            if w.cell_type == "code" and o.cell_type == "code" and o.source == w.source:
                w.outputs, w.execution_count = o.outputs, o.execution_count
        nb.cells = cells[:1] + want + cells[1:]
        nbformat.write(nb, nb_path)
    return True


def main(args: list[str]) -> int:
    check = "--check" in args
    s = settings()
    if s["release"] != s["version"]:
        print(f"_config.yml sphinx.config.release is {s['release']} but diffkit.__version__ is {s['version']}")
        return 1
    changed = [p for p in sorted((ROOT / "notebooks").glob("*.ipynb")) if sync(p, s, write=not check)]
    for p in changed:
        print(f"{'out of date' if check else 'updated'}: {p.relative_to(ROOT)}")
    if changed and not check:
        print("re-execute the updated notebooks: python3 course.py execute " + " ".join(str(p.relative_to(ROOT))
                                                                                      for p in changed))
    return 1 if (check and changed) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
