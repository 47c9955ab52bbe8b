"""`bench report --html DIR`, opened in a real browser: headless Chromium, driven over the DevTools protocol.

The store is made here (`bench run` and `bench kernel` on small synthetic data), the page written by the
command, then Chromium loads it from file:// with every request logged (Network.requestWillBeSent: also the
ones a Content-Security-Policy or a missing network refuses) and the network made unreachable (host names
resolve nowhere, the proxy is a closed port). The browser's own DOM gives the rendered tables and the images'
decoded sizes; its screenshots of each image show they were painted. `BENCH_SCREENSHOT=docs/img/report.png`
also writes the page's screenshot there (for the README).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SYNTH

from bench.cli import main
from bench.results.card import FACTORS
from bench.results.store import ResultStore
from bench.text import printable


def missing(reason: str) -> None:
    """A skip saying how to get what is missing, except under CI (the CI variable set), where it is a failure:
    CI never silently loses these tests (as tests/conftest.py require_ml100k)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the HTML report's browser tests: {reason}")
    pytest.skip(reason, allow_module_level=True)


try:
    import matplotlib  # noqa: F401  (the figures)
    from PIL import Image  # comes with matplotlib
except ImportError:
    missing("the HTML report draws with matplotlib: pip install 'deepfm-bench[plot]'")

from bench.results import figures, html  # noqa: E402

BROWSERS = ("chromium", "chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--remote-debugging-pipe")
VIEWPORT = (1280, 2000)
MODELS = ("deepfm", "fm", "mostpop")
HOSTILE = 'fm $x^$ </th><script>document.title="owned"</script><img src=x onerror=alert(1)>\x1b[2J\x00\x07 é "&'


def chromium() -> str:
    """The Chromium binary (BENCH_CHROMIUM, else on PATH); missing: `missing`, naming how to install it."""
    found = os.environ.get("BENCH_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if not found:
        missing("headless Chromium is not installed: `apt-get install chromium` (Debian/Ubuntu), or point "
                "BENCH_CHROMIUM at a Chromium or Chrome binary")
    return found


class Browser:
    """Chromium over --remote-debugging-pipe (commands on fd 3, answers on fd 4, NUL-terminated JSON): no port
    and no websocket library. Events are kept per page session."""

    def __init__(self, binary: str, profile: Path):
        commands_r, commands_w = os.pipe()
        answers_r, answers_w = os.pipe()
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_r, answers_w)]

        def as_fds_3_and_4() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        preexec_fn=as_fds_3_and_4, close_fds=False, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (commands_r, answers_w, *high):
            os.close(fd)
        self.writer, self.reader = commands_w, answers_r
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            if not select.select([self.reader], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.reader, 1 << 20)
            if not chunk:
                raise EOFError(f"Chromium closed the pipe (exit status {self.process.poll()})")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        command = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self.writer, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._message(deadline)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def open(self, url: str) -> Page:
        """A new tab of VIEWPORT logging its requests, navigated to `url` and loaded (images included)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Network.enable", {}, session)
        self.send("Page.enable", {}, session)
        self.send("Emulation.setDeviceMetricsOverride", {"width": VIEWPORT[0], "height": VIEWPORT[1],
                                                         "deviceScaleFactor": 1, "mobile": False}, session)
        self.send("Page.navigate", {"url": url}, session)
        deadline = time.monotonic() + 30
        while not any(e.get("method") == "Page.loadEventFired" and e.get("sessionId") == session
                      for e in self.events):
            self.events.append(self._message(deadline))
        return Page(self, session, url)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.writer)
        os.close(self.reader)


@dataclasses.dataclass
class Page:
    browser: Browser
    session: str
    url: str

    def evaluate(self, expression: str):
        result = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                   self.session)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def requests(self) -> list[str]:
        """Every URL the page asked for, refused ones included."""
        return [e["params"]["request"]["url"] for e in self.browser.events
                if e.get("sessionId") == self.session and e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, clip: dict | None = None) -> Image.Image:
        """What the browser paints (within `clip`, page coordinates); the tab brought to the front first, as a
        hidden tab paints no new frame."""
        self.browser.send("Page.bringToFront", {}, self.session)
        params: dict = {"format": "png", "captureBeyondViewport": True}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = self.browser.send("Page.captureScreenshot", params, self.session)["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def painted(image: Image.Image) -> float:
    """The share of the image's pixels that are not its background (the colour of its top-left corner)."""
    pixels = np.asarray(image)
    return float((pixels != pixels[0, 0]).any(axis=2).mean())


def colours(image: Image.Image) -> int:
    return len(np.unique(np.asarray(image).reshape(-1, 3), axis=0))


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Three models over two seeds (deepfm and fm train per epoch; mostpop is fitted), and one kernel batch."""
    folder = tmp_path_factory.mktemp("store")
    invoke("run", "--models", ",".join(MODELS), "--seeds", "1,2", *SYNTH, "--epochs", "2", "--batch-size", "512",
           "--fm-dim", "8", "--no-progress", "--threads", "1", "--baseline", "mostpop", "--results-dir", str(folder))
    invoke("kernel", "--impl", "sumsq", "--batch", "64", "--dtype", "float32", "--devices", "cpu", "--no-backward",
           "--repeat", "1", "--warmup", "0", "--check-rows", "64", "--copy-mb", "1", "--threads", "1",
           "--fresh-memory", "--results-dir", str(folder))
    return folder


@pytest.fixture(scope="module")
def page_file(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report"
    base = out.parent.parent
    with contextlib.chdir(base):  # the page's command line, seen in the screenshot, shows short relative paths
        result = invoke("report", "--results-dir", str(store.relative_to(base)), "--baseline", "mostpop", "--html",
                        str(out.relative_to(base)))
    assert f"wrote {out.relative_to(base) / 'index.html'}" in result.stderr
    return out / "index.html"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    made = Browser(chromium(), tmp_path_factory.mktemp("chromium-profile"))
    yield made
    made.close()


@pytest.fixture(scope="module")
def page(browser, page_file) -> Page:
    return browser.open(page_file.as_uri())


def test_every_model_of_the_store_is_in_the_rendered_leaderboard(page, store):
    stored = {r.model for r in ResultStore(store, readonly=True).runs()}
    shown = page.evaluate("[...document.querySelectorAll('#leaderboard tbody th.model')].map(th => th.textContent)")
    assert stored == set(MODELS) and sorted(shown) == sorted(stored)
    comparison = page.evaluate("[...document.querySelectorAll('#comparison tbody tr')].map(tr => "
                               "[...tr.cells].map(c => c.textContent))")
    assert {(row[0], row[1]) for row in comparison} == {(m, k) for m in ("deepfm", "fm")
                                                        for k in ("HR@10", "NDCG@10", "MRR")}
    assert all(re.fullmatch(r"[01]\.\d{4}", row[6]) and re.fullmatch(r"[01]\.\d{4}( \*)?", row[7])
               for row in comparison)  # p and Holm's p
    card = page.evaluate("[...document.querySelectorAll('#card dt')].map(dt => dt.textContent)")
    assert card == list(FACTORS.values())
    kernel = page.evaluate("[...document.querySelectorAll('#kernel tbody tr')].map(tr => tr.cells[0].textContent)")
    assert kernel == ["sumsq"]


def test_the_plots_render_as_non_blank_images_of_their_expected_size(page):
    images = page.evaluate("[...document.images].map(i => { const r = i.getBoundingClientRect(); return {id: i.id, "
                           "src: i.src, complete: i.complete, natural: [i.naturalWidth, i.naturalHeight], "
                           "rect: {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}}; })")
    expected = {"forest": figures.forest_size(len(MODELS), 3), "curves": figures.curves_size(4)}  # 3 metrics, loss
    assert {i["id"]: tuple(i["natural"]) for i in images} == expected and all(i["complete"] for i in images)
    for image in images:
        own = Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1]))).convert("RGB")
        assert painted(own) > 0.05 and colours(own) > 16, image["id"]  # the figure holds a drawing
        shot = page.screenshot(image["rect"])  # what the browser painted where the image is: the figure, pixel for
        assert shot.size == own.size  # pixel (a broken image shows its alt text in an empty box)
        assert np.abs(np.asarray(shot, dtype=int) - np.asarray(own, dtype=int)).mean() < 2, image["id"]


def test_the_page_makes_no_network_request(browser, page, tmp_path):
    assert page.requests()[0] == page.url
    assert all(url == page.url or url.startswith("data:") for url in page.requests()), page.requests()
    # the log is live: a page that fetches something shows it, even where the fetch fails
    fetching = tmp_path / "fetching.html"
    fetching.write_text('<!DOCTYPE html><img src="https://cdn.example.org/plot.png">')
    assert "https://cdn.example.org/plot.png" in browser.open(fetching.as_uri()).requests()


def test_the_screenshot_shows_the_page(page):
    height = min(VIEWPORT[1], page.evaluate("document.documentElement.scrollHeight"))
    shot = page.screenshot({"x": 0, "y": 0, "width": VIEWPORT[0], "height": height})
    assert shot.size == (VIEWPORT[0], height) and painted(shot) > 0.02
    if os.environ.get("BENCH_SCREENSHOT"):  # e.g. docs/img/report.png, shown by the README
        target = Path(os.environ["BENCH_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shot.quantize(256).save(target, optimize=True)  # a palette: a third of the size, the same to the eye


def test_a_label_with_markup_and_control_characters_is_shown_as_text(browser, store, tmp_path):
    runs = [dataclasses.replace(r, model=HOSTILE) if r.model == "fm" else r
            for r in ResultStore(store, readonly=True).runs()]
    path = tmp_path / "index.html"
    html.write_report(tmp_path, runs, "mostpop")
    assert path.read_bytes().isascii()  # any other character as a reference: no file encoding can break it
    shown = browser.open(path.as_uri())
    assert shown.evaluate("document.scripts.length") == 0 and shown.evaluate("document.title").endswith("leaderboard")
    assert shown.evaluate("document.images.length") == 2
    cells = shown.evaluate("[...document.querySelectorAll('#leaderboard tbody th.model')].map(th => th.textContent)")
    assert sorted(cells) == sorted(["deepfm", "mostpop", printable(HOSTILE)])
    assert "\\x1b[2J\\x00\\x07" in printable(HOSTILE) and "é" in printable(HOSTILE)


def test_without_matplotlib_html_is_one_line_before_any_work(store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    result = CliRunner().invoke(main, ["report", "--results-dir", str(store), "--html", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.output.strip().splitlines()[-1] == \
        "Error: --html needs matplotlib: pip install 'deepfm-bench[plot]'"
    assert not (tmp_path / "out").exists()


def test_html_onto_a_file_is_refused_before_any_work(store, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    result = CliRunner().invoke(main, ["report", "--results-dir", str(store), "--html", str(taken)])
    assert result.exit_code == 2 and result.stdout == "" and taken.read_text() == "mine"
    assert "--html" in result.output and str(taken) in result.output


def test_a_store_without_kernel_rows_has_no_kernel_table(store, tmp_path):
    assert html.kernel_batch(ResultStore(store, readonly=True)).rows[0]["impl"] == "sumsq"
    assert html.kernel_batch(ResultStore(tmp_path)) is None
