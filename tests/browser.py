"""Open an HTML file in headless Chromium (Debian's `chromium`) and report what it shows.

The page is copied with a probe script inserted at the top of its head, under a Content-Security-Policy
that allows data: images, inline style and the probe only: any attempt to load something from a
network (or the file system) is a policy violation the probe records, and the host resolver maps every
name to nowhere besides. After the load event the probe writes, for every <img>, its src, whether it
decoded (`naturalWidth`) and the width it is drawn at, into the DOM that `--dump-dom` prints.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
INSTALL_HINT = "apt-get install -y chromium (.ci/run installs it on CI)"
PROBE_NONCE = "silobridge-probe"
TEST_CSP = (
    f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'nonce-{PROBE_NONCE}'; "
    "connect-src 'none'; font-src 'none'; frame-src 'none'; base-uri 'none'"
)
PROBE = f"""<meta http-equiv="Content-Security-Policy" content="{TEST_CSP}">
<script nonce="{PROBE_NONCE}">
window.__violations = [];
document.addEventListener("securitypolicyviolation", (ev) => {{
  window.__violations.push({{blocked: ev.blockedURI, directive: ev.effectiveDirective}});
}});
window.addEventListener("load", () => {{
  const images = Array.from(document.images).map((img) => {{
    const box = img.getBoundingClientRect();
    const style = getComputedStyle(img);
    return {{
      src: (img.getAttribute("src") || "").slice(0, 40),
      complete: img.complete,
      naturalWidth: img.naturalWidth,
      naturalHeight: img.naturalHeight,
      shownWidth: box.width,
      shownHeight: box.height,
      visible: style.display !== "none" && style.visibility !== "hidden",
    }};
  }});
  const resources = performance.getEntriesByType("resource").map((r) => r.name.slice(0, 200));
  const out = document.createElement("pre");
  out.id = "silobridge-probe";
  out.textContent = JSON.stringify({{images, resources, violations: window.__violations}});
  document.body.appendChild(out);
}});
</script>
"""
RESULT = re.compile(r'<pre id="silobridge-probe">(.*?)</pre>', re.DOTALL)
PAGE_CSP = re.compile(r'<meta http-equiv="Content-Security-Policy"[^>]*>', re.IGNORECASE)


def chromium() -> str:
    """The Chromium binary; fails the test (never skips it) when none is installed."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"headless browser check needs Chromium, and none of {CHROMIUM_NAMES} is on PATH: {INSTALL_HINT}")


def probe_page(page: Path) -> dict:
    """What Chromium loaded and drew for `page`: images, network resources and blocked loads."""
    html = page.read_text(encoding="utf-8")
    html = PAGE_CSP.sub("", html)  # the page's own policy would block the probe; the test's is stricter otherwise
    head = re.search(r"<head[^>]*>", html, re.IGNORECASE)
    if head is None:
        raise AssertionError(f"{page} has no <head>")
    probed = html[: head.end()] + PROBE + html[head.end() :]
    with tempfile.TemporaryDirectory(prefix="silobridge-chromium-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(probed, encoding="utf-8")
        command = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            copy.as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = RESULT.search(done.stdout)
    if found is None:
        raise AssertionError(
            f"Chromium printed no probe result (exit {done.returncode}); stderr tail:\n{done.stderr[-2000:]}"
        )
    import html as html_lib

    return json.loads(html_lib.unescape(found.group(1)))


def page_problems(page: Path) -> list[str]:
    """Every way the page fails to be self-contained and fully drawn; empty when it passes."""
    result = probe_page(page)
    problems = []
    if not result["images"]:
        problems.append("the page has no images")
    for i, image in enumerate(result["images"]):
        where = f"image {i} ({image['src']!r})"
        if not image["src"].startswith("data:image/png;base64,"):
            problems.append(f"{where} is not an embedded PNG data URI")
        if not image["complete"] or image["naturalWidth"] <= 0 or image["naturalHeight"] <= 0:
            problems.append(f"{where} did not decode (naturalWidth {image['naturalWidth']})")
        if not image["visible"] or image["shownWidth"] <= 0 or image["shownHeight"] <= 0:
            problems.append(f"{where} is not drawn ({image['shownWidth']} x {image['shownHeight']} px)")
    for resource in result["resources"]:
        if not resource.startswith("data:"):
            problems.append(f"loaded a resource: {resource}")
    for violation in result["violations"]:
        problems.append(f"tried to load {violation['blocked']!r} ({violation['directive']})")
    return problems
