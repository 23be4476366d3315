#!/usr/bin/env python3
"""Set up, build and test the course with one command each (needs only Python >= 3.10 and pip's registries).

    python3 course.py book      # build the HTML book into _build/html (index: _build/html/index.html)
    python3 course.py test      # pytest on diffkit + nbval on every notebook, in quick mode
    python3 course.py execute   # re-run notebooks in full mode and store their outputs (authors)
    python3 course.py colab     # regenerate every notebook's Colab link and install cell (authors)
    python3 course.py setup     # only create/refresh the virtual environment .venv

Every command first creates ``.venv`` (if needed) and installs diffkit with its test and book
dependencies, pinned by ``requirements/constraints.txt``; it re-installs only when those files change.
Extra arguments after ``test`` go to pytest, after ``execute`` name notebooks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".course-setup"
INPUTS = [ROOT / "pyproject.toml", ROOT / "requirements" / "constraints.txt", ROOT / "diffkit" / "__init__.py"]  # version


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(cmd: list[str], env: dict[str, str] | None = None) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)


def setup() -> Path:
    """Create .venv and install everything, unless the stamp says it is up to date."""
    if sys.version_info < (3, 10):
        sys.exit(f"Python >= 3.10 is needed, this is {sys.version.split()[0]}")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in INPUTS)).hexdigest()
    py = venv_python()
    if py.exists() and STAMP.exists() and STAMP.read_text() == digest:
        return py
    t0 = time.time()
    if not py.exists():
        print(f"Creating the virtual environment {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    code = run([py, "-m", "pip", "install", "--disable-pip-version-check", "-c", "requirements/constraints.txt",
                "-e", ".[test,book]"])
    if code != 0:
        sys.exit(f"Installing the course environment failed (pip exit code {code}); see the messages above.")
    STAMP.write_text(digest)
    print(f"Environment ready in {time.time() - t0:.0f} s.", flush=True)
    return py


def book(args: list[str]) -> int:
    py = setup()
    jb = py.parent / ("jupyter-book.exe" if os.name == "nt" else "jupyter-book")
    # An incremental build whose pages are all up to date leaves edited static files (book/assets) stale in
    # the output (seen with Jupyter Book 1 / Sphinx 7.4): write the HTML afresh (parsed pages stay cached).
    shutil.rmtree(ROOT / "_build" / "html", ignore_errors=True)
    code = run([jb, "build", ".", "--warningiserror", "--nitpick", "--keep-going", *args])
    if code == 0:
        print(f"\nThe book is at {ROOT / '_build' / 'html' / 'index.html'}")
    return code


def test(args: list[str]) -> int:
    py = setup()
    env = dict(os.environ, DIFFKIT_QUICK="1", MPLBACKEND="Agg", PYTHONHASHSEED="0")
    return run([py, "-m", "pytest", "tests", "notebooks", "--nbval-lax", "--nbval-current-env",
                "-p", "no:cacheprovider", *args], env=env)


def execute(args: list[str]) -> int:
    py = setup()
    env = {k: v for k, v in os.environ.items() if k != "DIFFKIT_QUICK"}
    return run([py, "tools/execute_notebooks.py", *args], env=env)


def colab(args: list[str]) -> int:
    return run([setup(), "tools/colab.py", *args])


COMMANDS = {"setup": lambda args: (setup(), 0)[1], "book": book, "test": test, "execute": execute, "colab": colab}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
