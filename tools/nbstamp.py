"""The stamp that ties a notebook's stored outputs to the code that produced them.

``tools/execute_notebooks.py`` runs a notebook in full mode and writes ``metadata["diffkit"]`` with the
SHA-256 of its code cells; ``tests/test_notebooks.py`` fails when the code cells no longer match the stamp
(the stored outputs, which the HTML book shows, would be stale).
"""

from __future__ import annotations

import hashlib

import nbformat


def code_hash(nb: nbformat.NotebookNode) -> str:
    """SHA-256 of the code cells' sources (line endings normalised; markdown edits do not count)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            src = cell.source if isinstance(cell.source, str) else "".join(cell.source)
            h.update(src.replace("\r\n", "\n").rstrip().encode())
            h.update(b"\n\x00")
    return h.hexdigest()
