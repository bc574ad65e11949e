"""Shared browser-test helpers: headless Chromium, and a record of Content-Security-Policy
violations so every browser test can assert that the site's policy blocked nothing."""

from __future__ import annotations

import os

import pytest

CHROMIUM = os.environ.get("RAG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Runs in every page and frame before its own scripts (CDP injects it past the page's CSP).
_REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__reportCspViolation(
    `${e.effectiveDirective} blocked ${e.blockedURI || "inline"} on ${document.location.href}`
    + (e.sourceFile ? ` (${e.sourceFile}:${e.lineNumber})` : "")
  );
});
"""


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    # Playwright's Node driver inspects this to decide how to talk to the browser; the
    # Django live server runs in this process, so no event loop may be left running.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def csp_violations():
    """`watch(context)` -> a list that fills with every CSP violation in that context's pages.

    Both the DOM event and Chromium's "Refused to ..." console messages are recorded: the
    event names the directive, the console also catches what happens before any listener.
    Under the policy, pass `page.wait_for_function` a function ("() => ..."), never a bare
    expression: Playwright evals expressions inside the page, and the policy refuses eval.
    """
    violations: list[str] = []

    def watch(context) -> list[str]:
        context.expose_function("__reportCspViolation", lambda text: violations.append(text))
        context.add_init_script(_REPORT_VIOLATIONS)
        context.on("console", _on_console)
        return violations

    def _on_console(message) -> None:
        if "Content Security Policy" in message.text or message.text.startswith("Refused to"):
            violations.append(f"console: {message.text}")

    return watch
