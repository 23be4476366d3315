"""The built book as readers get it, opened in headless Chromium with every request off localhost refused.

The book is built from scratch (warnings are errors), served on 127.0.0.1, and every page in ``_toc.yml`` is
checked: the math rendered (no raw TeX outside code), every display equation fits the text column at 1280 px,
every figure loaded, nothing failed to load, nothing was fetched from the network, no console error, every
stored widget rendered, and every widget slider changes what the reader sees, and every exercise's reference
solution stays hidden until its toggle is clicked. The
search page must find the chapters. A full-page screenshot of each page and a short report
(``browser-report.json``) go to ``$DIFFKIT_SCREENSHOTS`` (default ``_build/screenshots``).

Needs Debian's ``chromium`` (``.ci/run`` installs it with apt-get); without it the test is skipped, except
under CI, where it fails.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
# TeX left in the text once MathJax is done: a command (\alpha), display delimiters, or inline $...$
RAW_TEX = re.compile(r"\\[A-Za-z]+|\$\$|\\[(\[]|\$[^$\s][^$\n]*\$")


def _toc_pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("chapters") or entry.get("sections"))
            for part in entry.get("parts") or []:
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts") or []:
        walk(part.get("chapters"))
    return [str(Path(f).with_suffix("")) + ".html" for f in files]


PAGES = _toc_pages()


def _chromium() -> str:
    path = os.environ.get("DIFFKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    message = "Debian's chromium is needed for the browser test: apt-get install chromium"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    """Build the book from scratch into a temporary folder, with warnings as errors."""
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    started = time.perf_counter()
    result = subprocess.run([str(jupyter_book), "build", str(ROOT), "--path-output", str(out),
                             "--warningiserror", "--nitpick", "--keep-going"],
                            cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, f"jupyter-book build failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    html = out / "_build" / "html"
    (html / ".build-seconds").write_text(f"{seconds:.1f}")
    return html


@pytest.fixture(scope="module")
def server(book):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(book)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = Path(os.environ.get("DIFFKIT_SCREENSHOTS", ROOT / "_build" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Visit:
    """One page in a fresh browser context, with everything that went wrong on the way recorded."""

    def __init__(self, browser, base: str):
        self.base = base
        self.problems: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route("**/*", self._only_localhost)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"JavaScript exception: {e}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        self.page.on("requestfailed", lambda r: r.url.startswith(base) and
                     self.problems.append(f"failed to load: {r.url} ({r.failure})"))

    def _only_localhost(self, route):
        url = route.request.url
        if url.startswith(self.base) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.problems.append(f"network request off localhost (blocked): {url}")
            route.abort()

    def close(self):
        self.context.close()


def _wait_for_math(page) -> str | None:
    """Wait until MathJax has typeset the page; its error (e.g. an extension that failed to load), if any."""
    return page.evaluate("""async () => {
        try {
            if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
            return null;
        } catch (error) { return String(error); }
    }""")


def _math_report(page) -> dict:
    return page.evaluate("""() => {
        const math = [...document.querySelectorAll('.math')];
        const unrendered = math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80));
        const errors = [...document.querySelectorAll('mjx-merror')].map(e => e.textContent.slice(0, 80));
        const body = document.querySelector('main') || document.body;
        const copy = body.cloneNode(true);
        copy.querySelectorAll('pre, code, script, style, textarea, mjx-container, .highlight')
            .forEach(e => e.remove());
        return {count: math.length, unrendered, errors, text: copy.textContent};
    }""")


def _overflowing_equations(page) -> list[str]:
    """Display equations wider than their container (the viewport is 1280 px wide): their right side is cut off
    or hidden behind a scroll bar.  Each is named by the start of its TeX and its width against the column's."""
    return page.evaluate("""() => {
        const out = [];
        document.querySelectorAll('mjx-container[display="true"]').forEach(el => {
            const host = el.closest('.math') || el.parentElement;
            const width = el.getBoundingClientRect().width, column = host.getBoundingClientRect().width;
            if (el.scrollWidth > el.clientWidth + 2 || width > column + 2) {
                const items = (window.MathJax && MathJax.startup && MathJax.startup.document)
                    ? MathJax.startup.document.getMathItemsWithin(host) : [];
                const tex = (items.length ? items[0].math : host.textContent).trim().slice(0, 60);
                out.push(`${Math.round(Math.max(el.scrollWidth, width))} px in a ${Math.round(column)} px column: ${tex}`);
            }
        });
        return out;
    }""")


def _image_report(page) -> list[str]:
    """Sources of the images that did not load (after forcing lazy ones to load)."""
    return page.evaluate("""async () => {
        const images = [...document.images];
        images.forEach(i => { i.loading = 'eager'; });
        await Promise.all(images.map(i => i.decode().catch(() => null)));
        return images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 120));
    }""")


def _widget_views(page) -> int:
    return page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()


def _view_state(subarea) -> dict:
    """What the reader sees of one widget: its visible images and its text (outside the slider handle)."""
    return subarea.evaluate("""(root) => ({
        images: [...root.querySelectorAll('img')].filter(i => i.offsetParent !== null).map(i => i.src),
        text: root.innerText,
    })""")


def _check_widgets(page, views: int) -> list[str]:
    problems = []
    subareas = page.locator(".widget-subarea")
    try:
        page.wait_for_function(f"document.querySelectorAll('.widget-subarea').length >= {views}", timeout=20_000)
    except Exception:
        return [f"only {subareas.count()} of {views} stored widgets rendered"]
    for i in range(subareas.count()):
        subarea = subareas.nth(i)
        if not subarea.inner_text().strip() and subarea.locator("img").count() == 0:
            problems.append(f"widget {i} rendered empty")
        handles = subarea.locator(".noUi-handle")
        for j in range(handles.count()):
            before = _view_state(subarea)
            handles.nth(j).focus()
            page.keyboard.press("End")
            try:
                page.wait_for_function("([root, before]) => { const imgs = [...root.querySelectorAll('img')]"
                                       ".filter(i => i.offsetParent !== null).map(i => i.src);"
                                       " return JSON.stringify(imgs) !== JSON.stringify(before.images)"
                                       " || root.innerText !== before.text; }",
                                       arg=[subarea.element_handle(), before], timeout=5_000)
            except Exception:
                problems.append(f"widget {i}: moving slider {j} changed nothing on the page (a dead slider)")
                continue
            after = _view_state(subarea)
            if after["images"] == before["images"] and any(before["images"]):
                problems.append(f"widget {i}: slider {j} moved but the picture did not change")
    return problems


def _check_hidden_solutions(page) -> list[str]:
    """A chapter with auto-checked exercises shows each reference solution only on demand: the output of each
    ``exercises.solution(name)`` cell is one closed ``<details class="diffkit-solution">`` block (stored in the
    notebook, so Jupyter and Colab show it closed too), whose code is invisible until its summary is clicked, and
    visible after."""
    problems = []
    cells = page.locator(".cell", has=page.locator(".cell_input", has_text="exercises.solution("))
    if page.locator("text=exercises.check(").count() and cells.count() == 0:
        return ["exercises but no solution cell (a bare exercises.solution(name) after each check)"]
    for i in range(cells.count()):
        cell, label = cells.nth(i), f"solution {i}"
        toggle = cell.locator(".cell_output details.diffkit-solution")
        if toggle.count() != 1:
            problems.append(f"{label}: its output is not one collapsed solution block (found {toggle.count()})")
            continue
        code, summary = toggle.locator("pre").first, toggle.locator("summary").first
        if toggle.evaluate("d => d.open") or code.is_visible():
            problems.append(f"{label}: shown before the reader asks for it")
        if not summary.is_visible():  # e.g. inside another toggle that is closed: the reader cannot open it
            problems.append(f"{label}: its summary is not visible, so it cannot be opened")
            continue
        summary.click()
        if not code.is_visible() or not code.inner_text().strip():
            problems.append(f"{label}: clicking its summary does not show it")
    return problems


def _check_colab_entry(page) -> list[str]:
    """A chapter opens in Colab from its badge and from the launch button, both for this very notebook."""
    found = page.evaluate("""() => {
        const colab = [...document.querySelectorAll('a[href^="https://colab.research.google.com/github/"]')];
        return {badges: colab.filter(a => a.closest('article') && a.querySelector('img')).map(a => a.href),
                buttons: colab.filter(a => a.classList.contains('btn')).map(a => a.href),
                page: location.pathname.split('/').pop().replace(/\\.html$/, '.ipynb')};
    }""")
    problems = []
    for kind in ("badges", "buttons"):
        if not any(href.endswith("/notebooks/" + found["page"]) for href in found[kind]):
            problems.append(f"no Colab {kind[:-1]} for {found['page']} (found {found[kind]})")
    return problems


def _visit_page(browser, server, screenshots, name: str) -> dict:
    visit = Visit(browser, server)
    page = visit.page
    try:
        page.goto(server + name, wait_until="load")
        page.wait_for_load_state("networkidle")
        mathjax_error = _wait_for_math(page)
        math = _math_report(page)
        problems = list(visit.problems)
        if mathjax_error:
            problems.append(f"MathJax failed: {mathjax_error}")
        if math["unrendered"]:
            problems.append(f"{len(math['unrendered'])} math elements not rendered, e.g. {math['unrendered'][:3]}")
        if math["errors"]:
            problems.append(f"MathJax errors: {math['errors'][:3]}")
        raw = RAW_TEX.search(math["text"])
        if raw:
            start = max(0, raw.start() - 60)
            problems.append(f"raw TeX in the page text: ...{math['text'][start:raw.end() + 60]!r}")
        wide = _overflowing_equations(page)
        if wide:
            problems.append(f"{len(wide)} display equations wider than the column at 1280 px: {wide}")
        broken = _image_report(page)
        if broken:
            problems.append(f"images that did not load: {broken}")
        if name.startswith("notebooks/"):
            problems += _check_colab_entry(page)
            problems += _check_hidden_solutions(page)
        views = _widget_views(page)
        if views:
            problems += _check_widgets(page, views)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(screenshots / (name.replace("/", "__").removesuffix(".html") + ".png")),
                        full_page=True)
        problems += [p for p in visit.problems if p not in problems]
        return {"page": name, "math": math["count"], "images": page.evaluate("document.images.length"),
                "widgets": views, "problems": problems}
    finally:
        visit.close()


def test_toc_pages_were_built(book):
    missing = [p for p in PAGES if not (book / p).is_file()]
    assert not missing, f"pages in _toc.yml with no HTML: {missing}"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in ("img", "script") and attrs.get("src"):
            self.links.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.links.append(attrs["href"])


def test_no_broken_internal_links(book):
    pages = {}
    for path in book.rglob("*.html"):
        if {"_sources", "_static"} & set(path.relative_to(book).parts):  # theme templates, not pages
            continue
        parser = _Links()
        parser.feed(path.read_text(encoding="utf-8"))
        pages[path.resolve()] = parser
    broken = []
    for path, parser in pages.items():
        for link in parser.links:
            url = urlparse(link)
            if url.scheme or url.netloc or link.startswith(("mailto:", "javascript:", "data:")):
                continue
            target = (path.parent / unquote(url.path)).resolve() if url.path else path
            if not target.exists():
                broken.append(f"{path.relative_to(book.resolve())}: {link}")
            elif url.fragment and target in pages and unquote(url.fragment) not in pages[target].ids:
                broken.append(f"{path.relative_to(book.resolve())}: {link} (no such anchor)")
    assert not broken, "broken internal links:\n" + "\n".join(broken)


def test_every_page_renders_offline(book, server, browser, screenshots):
    started = time.perf_counter()
    reports = [_visit_page(browser, server, screenshots, name) for name in PAGES]
    seconds = time.perf_counter() - started
    summary = {"pages": len(reports), "browser_seconds": round(seconds, 1),
               "build_seconds": float((book / ".build-seconds").read_text()), "reports": reports}
    (screenshots / "browser-report.json").write_text(json.dumps(summary, indent=2))
    print(f"\nbrowser test: {len(reports)} pages in {seconds:.1f} s (build {summary['build_seconds']} s), "
          f"screenshots in {screenshots}")
    failures = [f"{r['page']}:\n  " + "\n  ".join(r["problems"]) for r in reports if r["problems"]]
    assert not failures, "pages with problems:\n" + "\n".join(failures)
    # the checks saw something: the book has math, figures and at least one widget to explore
    assert sum(r["math"] for r in reports) > 0 and sum(r["images"] for r in reports) > 0
    assert sum(r["widgets"] for r in reports) > 0


def test_search_finds_the_chapters(server, browser):
    visit = Visit(browser, server)
    try:
        visit.page.goto(urljoin(server, "search.html?q=diffkit"), wait_until="load")
        results = visit.page.locator("#search-results ul.search li")
        results.first.wait_for(timeout=15_000)
        hrefs = [results.nth(i).locator("a").first.get_attribute("href") for i in range(results.count())]
        assert any("00_how_to_use_this_book" in (h or "") for h in hrefs), hrefs
        assert not visit.problems, visit.problems
    finally:
        visit.close()
