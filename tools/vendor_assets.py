#!/usr/bin/env python3
"""Refresh the local copies of MathJax and the ipywidgets scripts that the HTML book serves (book/assets/).

The book must render math and stored widget states with no network, so these files are committed. This
script records where they come from: it fetches the pinned npm packages with ``npm pack`` (npm's registry
only) and copies the files the book loads. Change a version below, run it, rebuild the book and run
``tests/test_browser.py``.

    python3 tools/vendor_assets.py

``book/assets/widgets/offline-setup.js`` is the course's own file and is left alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "book" / "assets"
MATHJAX = "mathjax@3.2.2"
HTML_MANAGER = "@jupyter-widgets/html-manager@1.0.15"
REQUIREJS = "requirejs@2.3.7"


def fetch(spec: str, into: Path) -> Path:
    """Unpack an npm package into ``into`` and return its root folder."""
    result = subprocess.run(["npm", "pack", spec, "--silent"], cwd=into, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"npm pack {spec} failed:\n{result.stderr}")
    tarball = into / result.stdout.strip().splitlines()[-1]
    target = into / tarball.stem
    with tarfile.open(tarball) as archive:
        archive.extractall(target, filter="data")
    return target / "package"


def copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def main() -> None:
    if shutil.which("npm") is None:
        sys.exit("npm is needed (apt-get install npm, or Node.js from nodejs.org)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mathjax = fetch(MATHJAX, tmp)
        manager = fetch(HTML_MANAGER, tmp)
        requirejs = fetch(REQUIREJS, tmp)

        out = ASSETS / "mathjax"
        shutil.rmtree(out, ignore_errors=True)
        copy(mathjax / "es5" / "tex-mml-chtml.js", out / "tex-mml-chtml.js")
        copy(mathjax / "es5" / "output" / "chtml" / "fonts" / "woff-v2", out / "output" / "chtml" / "fonts" / "woff-v2")
        # TeX packages that MathJax's autoload fetches on first use (\cancel, \color, \bbox, ...)
        copy(mathjax / "es5" / "input" / "tex" / "extensions", out / "input" / "tex" / "extensions")
        copy(mathjax / "LICENSE", out / "LICENSE")
        (out / "README.txt").write_text(
            f"MathJax {MATHJAX.split('@')[-1]} (npm package \"mathjax\": es5/tex-mml-chtml.js, its CHTML woff-v2 "
            "fonts and the TeX extensions it autoloads), Apache-2.0.\n"
            "Served locally so that the book renders math with no network. Refreshed by tools/vendor_assets.py.\n")

        out = ASSETS / "widgets"
        for old in out.iterdir() if out.exists() else []:
            if old.name != "offline-setup.js":
                old.unlink()
        dist = manager / "dist"
        for path in [dist / "embed-amd.js", dist / "embed.js.LICENSE.txt", *dist.glob("*.woff"), *dist.glob("*.woff2")]:
            copy(path, out / path.name)
        copy(requirejs / "require.js", out / "require.js")
        (out / "README.txt").write_text(
            f"@jupyter-widgets/html-manager {HTML_MANAGER.split('@')[-1]} (dist/embed-amd.js and its fonts, "
            f"BSD-3-Clause) and RequireJS {REQUIREJS.split('@')[-1]} (MIT),\n"
            "served locally so that stored ipywidgets state renders with no network. Refreshed by "
            "tools/vendor_assets.py;\noffline-setup.js is the course's own glue (see its header).\n")
    print(f"refreshed {ASSETS.relative_to(ROOT)}: {MATHJAX}, {HTML_MANAGER}, {REQUIREJS}")


if __name__ == "__main__":
    main()
