"""Headless Chromium driven over the Chrome DevTools Protocol (websocket-client), for the web UI tests.

Only what the tests need: open a page, evaluate JavaScript, take a screenshot. The browser gets a new empty
profile directory and every background feature that could reach the network switched off.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def find_chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Chromium:
    """One headless browser with one page; a context manager that always ends the browser."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        binary = find_chromium()
        if binary is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium)")
        self.profile = Path(tempfile.mkdtemp(prefix="connbench-chromium-"))
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._ids = itertools.count(1)
        try:
            port = self._devtools_port(30)
            pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            page = next(p for p in pages if p.get("type") == "page")
            self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
            self.call("Emulation.setDeviceMetricsOverride",
                      width=width, height=height, deviceScaleFactor=1, mobile=False)  # fmt: skip
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, timeout: float) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            try:
                return int(marker.read_text().splitlines()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.1)
        raise RuntimeError("chromium did not open its DevTools port")

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        # The browser's helper processes share its process group (its own session): end them all, then
        # remove the profile they were writing to.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _group_alive(self.proc.pid):
                time.sleep(0.1)
            if not _group_alive(self.proc.pid):
                break
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    # -- protocol --------------------------------------------------------------------------------------
    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and wait until the document has loaded."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.evaluate("document.readyState === 'complete' && location.href") == url:
                    return
            except RuntimeError:
                pass  # the old document went away mid-call
            time.sleep(0.1)
        raise AssertionError(f"{url} did not load in {timeout:.0f} s")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


# -- the Locust web UI and connbench's panel -------------------------------------------------------------
def start_with_form_defaults(browser: Chromium) -> None:
    """Press the start form's submit button, leaving every field (the class picker too) as the page set it."""
    clicked = browser.evaluate(
        "(() => { const b = document.querySelector('form button[type=submit]'); if (b) b.click(); return !!b; })()"
    )
    assert clicked, "no start form on the page: " + browser.text()[:300]


# Per chart card of the panel: the target, and per chart and series the y of each point (SVG: smaller is higher).
CHARTS_JS = """
Object.fromEntries(Array.from(document.querySelectorAll('#connbench-charts .cb-card')).map(card => [
  card.dataset.target,
  Object.fromEntries(Array.from(card.querySelectorAll('svg')).map(svg => [svg.dataset.title,
    Object.fromEntries(Array.from(svg.querySelectorAll('polyline')).map(p => [p.dataset.series,
      (p.getAttribute('points') || '').split(' ').filter(Boolean).map(xy => Number(xy.split(',')[1]))]))]))]))
"""


def charts(browser: Chromium) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{target: {chart title: {series: [y, ...]}}} as the panel's charts draw them."""
    return browser.evaluate(CHARTS_JS) or {}
