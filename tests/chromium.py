"""Headless Chromium driven over the DevTools protocol on a pipe (no websocket library needed).

``--remote-debugging-pipe`` makes Chromium read NUL-terminated JSON commands on
its fd 3 and write replies and events on its fd 4.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

CALL_TIMEOUT_S = 20.0


def chromium_binary() -> str:
    """Debian's chromium; fail loudly, never skip, when it is missing (.ci/run installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise AssertionError("chromium is not installed: apt-get install chromium (.ci/run does)")
    return found


class Chromium:
    """One headless browser process, stopped by PID."""

    def __init__(self, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def fds() -> None:
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.process = subprocess.Popen(
            [
                chromium_binary(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "--window-size=1280,1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=fds,  # noqa: PLW1509 - the pipe must land on fds 3 and 4
            # 3 and 4 too: subprocess closes every other fd after preexec_fn ran.
            pass_fds=(3, 4, to_browser_r, from_browser_w),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_browser, 65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._changed:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self.events.append(message)
                self._changed.notify_all()

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its reply's result; AssertionError on an error reply."""
        with self._changed:
            self._next_id += 1
            call_id = self._next_id
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        with self._changed:
            if not self._changed.wait_for(lambda: call_id in self._replies, CALL_TIMEOUT_S):
                raise AssertionError(f"no reply to {method} in {CALL_TIMEOUT_S} s")
            reply = self._replies.pop(call_id)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    def open(self, url: str) -> str:
        """A new tab at ``url``, console and log watched; its session id once the page loaded."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.call(domain, session)
        self.call("Page.navigate", session, url=url)
        self.wait_for(
            lambda e: e.get("method") == "Page.loadEventFired" and e.get("sessionId") == session,
            "the page's load event",
        )
        return session

    def wait_for(self, match: Any, what: str, timeout_s: float = CALL_TIMEOUT_S) -> None:
        """Wait until an event satisfies ``match``."""
        with self._changed:
            if not self._changed.wait_for(lambda: any(map(match, self.events)), timeout_s):
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

    def evaluate(self, session: str, expression: str) -> Any:
        """The value of a JavaScript expression in the tab."""
        reply = self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise AssertionError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_until(self, session: str, expression: str, what: str, timeout_s: float) -> float:
        """Poll ``expression`` until truthy; the seconds it took."""
        started = time.monotonic()
        while not self.evaluate(session, expression):
            if time.monotonic() - started > timeout_s:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            time.sleep(0.02)
        return time.monotonic() - started

    def console_errors(self, session: str) -> list[str]:
        """Console errors, uncaught exceptions and error log entries of the tab so far."""
        found = []
        with self._changed:
            events = [e for e in self.events if e.get("sessionId") == session]
        for event in events:
            params = event.get("params", {})
            if event["method"] == "Runtime.consoleAPICalled" and params["type"] == "error":
                found.append(json.dumps(params["args"]))
            elif event["method"] == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"]))
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def screenshot(self, session: str, path: Path) -> Path:
        """Save the tab as a PNG at ``path``."""
        data = self.call("Page.captureScreenshot", session, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Stop the browser (asked, then by its PID) and close the pipes."""
        try:
            self.call("Browser.close")
            self.process.wait(timeout=10)
        except (AssertionError, OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self._to_browser)
        self._reader.join(timeout=10)
        os.close(self._from_browser)
