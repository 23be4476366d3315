"""Execute notebooks in full mode, store their outputs and stamp them (``python3 course.py execute``).

    python3 course.py execute                      # every notebook in notebooks/
    python3 course.py execute notebooks/00_*.ipynb # some of them

Each notebook runs in a fresh kernel from the repository's ``notebooks/`` folder, with ``DIFFKIT_QUICK``
unset.  A notebook that fails is left untouched on disk (nothing is lost) and the command exits non-zero.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbstamp import code_hash  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 30 * 60  # per cell


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    os.environ.pop("DIFFKIT_QUICK", None)
    t0 = time.time()
    NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.time() - t0
    import diffkit

    nb.metadata["diffkit"] = {"mode": "full", "code_sha256": code_hash(nb), "seconds": round(seconds, 1),
                              "diffkit_version": diffkit.__version__}
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written notebook
    return seconds


def main(args: list[str]) -> int:
    paths = [Path(a).resolve() for a in args] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    failed = []
    for p in paths:
        print(f"executing {p.relative_to(ROOT)} (full mode) ...", flush=True)
        try:
            print(f"  done in {execute(p):.0f} s", flush=True)
        except Exception as exc:  # keep going, report at the end
            print(f"  FAILED: {exc}", flush=True)
            failed.append(p)
    if failed:
        print("failed:", *[str(p.relative_to(ROOT)) for p in failed], sep="\n  ")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
