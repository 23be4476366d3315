"""``import diffkit``: light enough for an exercise cell, with every module listed in the package docstring."""

import subprocess
import sys

import diffkit

HEAVY = ("scipy", "datasets", "matplotlib", "pandas", "sklearn", "mlxtend", "IPython", "torchdiffeq")


def test_import_leaves_the_heavy_libraries_unloaded():
    """scipy, datasets, matplotlib ... load when a function first needs them, not at ``import diffkit``
    (scipy alone cost 0.5 s of 1.8 s when coupling imported it at the top)."""
    code = f"import sys, diffkit; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"import diffkit loaded {loaded}: import them inside the functions that use them"


def test_the_docstring_lists_every_module():
    listed = {line.split("`")[1].split(".")[-1] for line in diffkit.__doc__.splitlines() if ":mod:`diffkit." in line}
    assert listed == {m for m in diffkit.__all__ if getattr(diffkit, m, None).__class__.__name__ == "module"}
