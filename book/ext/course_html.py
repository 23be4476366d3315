"""Sphinx extension for the course's HTML: each inline script once per page.

Some extensions register inline ``<script>`` bodies (sphinx-thebe's ``const THEBE_JS_URL = ...``,
sphinx-togglebutton's selector) both through the registry and directly on the builder; Sphinx 7 then keeps
two copies that differ only in ``filename`` (``None`` vs ``""``). A ``const`` declared twice is a JavaScript
error on every page, which the browser test (tests/test_browser.py) catches. This drops the repeats.
"""

from __future__ import annotations

from typing import Any


def _key(script: Any) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    return (getattr(script, "filename", script) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))


def drop_repeated_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Any) -> dict:
    # run after the extensions that add per-page scripts (default priority 500)
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
