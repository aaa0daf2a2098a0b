"""Accessibility checks with axe-core, run inside the browser tests' real Chromium.

axe-core comes from npm, never from a copy in this repository. The tests look for its
``axe.min.js`` at ``$FEEDBACK_AXE_CORE`` or, by default, in ``node_modules/`` at the top of
the repository, where this puts it::

    npm install --no-save --prefix . axe-core@~4.14

``.ci/run`` installs it into a folder of its own and sets FEEDBACK_AXE_CORE. Like a missing
Chromium, a missing axe-core fails where FEEDBACK_BROWSER_TESTS_REQUIRED=1 (CI) and skips
the accessibility tests elsewhere, so the README's test command works with nothing but Python.

Usage, with an async Playwright page (as tests/test_browser_form.py drives) and the ``axe``
fixture below (import it into the test module, as tests/test_accessibility.py does)::

    async def test_a_page(browser, axe):
        ...
        await assert_no_serious_violations(page, axe, "the form, vi, 390 px")

``violations`` gives all of axe's findings for the WCAG 2.0/2.1 A and AA rules, ``describe``
formats them for a message, ``judge`` keeps the serious and critical ones and prints the rest.

The script is evaluated through the DevTools protocol, which the pages'
Content-Security-Policy (no scripts at all) does not stop, so the pages are checked as
citizens get them. The browser context needs JavaScript on (the default): axe.run waits on
timers, which do not fire in a context with ``java_script_enabled=False``. The pages carry
no script and their policy allows none, so they render the same either way.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

# The version range .ci/run installs and the skip message names (README.md and the docstring
# above repeat it): a new minor version of axe-core brings new rules, so it is taken on purpose.
AXE_CORE_RANGE = "~4.14"
REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_PATH = REPOSITORY / "node_modules" / "axe-core" / "axe.min.js"
# WCAG 2.0 and 2.1, levels A and AA: the rules the issue asks for (no "best-practice" rules).
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")
FAILING_IMPACTS = ("serious", "critical")
RUN_SECONDS = 60

_RUN = """async (tags) => {
  const results = await axe.run(document, {runOnly: {type: "tag", values: tags},
                                           resultTypes: ["violations"]});
  return results.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl, tags: v.tags,
    nodes: v.nodes.map(n => ({target: n.target, html: n.html, impact: n.impact,
                              failureSummary: n.failureSummary})),
  }));
}"""


def axe_path() -> Path:
    """Where axe.min.js should be: $FEEDBACK_AXE_CORE, else node_modules/ in the repository."""
    configured = os.environ.get("FEEDBACK_AXE_CORE")
    return Path(configured) if configured else DEFAULT_PATH


def axe_source() -> str:
    """axe.min.js's text; missing, it fails where required (CI) and is skipped elsewhere."""
    path = axe_path()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    install = f"npm install --no-save --prefix . axe-core@{AXE_CORE_RANGE}"
    if os.environ.get("FEEDBACK_BROWSER_TESTS_REQUIRED") == "1":
        pytest.fail(f"axe-core is not installed at {path}: {install} (.ci/run does it)")
    pytest.skip(f"accessibility tests need axe-core from npm at {path}: run `{install}` in the repository "
                "or set FEEDBACK_AXE_CORE to an axe.min.js")


@pytest.fixture(scope="session")
def axe() -> str:
    """The axe-core script, read once per session (skips or fails like ``axe_source``)."""
    return axe_source()


async def axe_version(page, source: str) -> str:
    """The version of axe-core the source is, injected into the page."""
    await _inject(page, source)
    return await page.evaluate("axe.version")


async def _inject(page, source: str) -> None:
    if not await page.evaluate("typeof window.axe === 'object'"):
        # A plain script evaluated in the page's main world: axe defines window.axe.
        await page.evaluate(f"(() => {{ {source}\n}})()")


async def violations(page, source: str, tags: tuple[str, ...] = WCAG_TAGS) -> list[dict]:
    """Inject axe-core into the page and run it with the given rule tags; the violations found."""
    await _inject(page, source)
    try:
        return await asyncio.wait_for(page.evaluate(_RUN, list(tags)), RUN_SECONDS)
    except TimeoutError:
        raise AssertionError(f"axe.run did not finish in {RUN_SECONDS} s on {page.url}: "
                             "is JavaScript turned off in the browser context?") from None


def serious(found: list[dict]) -> list[dict]:
    """Only the violations whose impact is serious or critical."""
    return [violation for violation in found if violation["impact"] in FAILING_IMPACTS]


def describe(found: list[dict]) -> str:
    """The violations for an assertion message: rule, impact, help, then each node's target and HTML."""
    lines = []
    for violation in found:
        lines.append(f"- {violation['id']} ({violation['impact']}): {violation['help']} <{violation['helpUrl']}>")
        for node in violation["nodes"]:
            # One selector per frame, from the top; a list of selectors for an element in a shadow root.
            target = " in frame ".join(reversed([" >> ".join(part) if isinstance(part, list) else part
                                                 for part in node["target"]]))
            lines.append(f"    at {target}: {node['html']}")
            summary = (node.get("failureSummary") or "").strip().replace("\n", "\n      ")
            if summary:
                lines.append(f"      {summary}")
    return "\n".join(lines)


def judge(found: list[dict], where: str) -> str | None:
    """Print the minor and moderate violations; the serious and critical ones described, or None."""
    failing = serious(found)
    rest = [violation for violation in found if violation not in failing]
    if rest:
        print(f"axe, {where}: minor or moderate (not failing):\n{describe(rest)}")
    return f"{where}:\n{describe(failing)}" if failing else None


async def assert_no_serious_violations(page, source: str, where: str = "") -> None:
    """Run axe on the page; fail on serious or critical violations only (the rest are printed)."""
    failure = judge(await violations(page, source), where or page.url)
    assert failure is None, f"axe found serious or critical violations on {failure}"
