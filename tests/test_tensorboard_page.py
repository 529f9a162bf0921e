"""TensorBoard's web page, as a person opens it: a short real run logs to TensorBoard, `tensorboard`
serves its event files, and headless Chromium (Debian's package; `make setup` installs it) renders
the page: the evaluation accuracy scalars (metrics.jsonl's eval acc_t1/acc_t2, shown as eval/acc_t1
and eval/acc_t2) are listed in the rendered page, and a screenshot of it is a real, non-blank image."""
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from common.ports import free_port
from learner.tracking.loggers.base import scalars
from test_pipeline import config
from test_trackers import tracked_run

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium")
WIDTH, HEIGHT = 1400, 1000


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tensorboard-page")
    return tracked_run(config(f"output_dir={out}", "eval.every_steps=3", "tracking.loggers=[tensorboard]"), tiny_model_dir)


def serve(logdir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`tensorboard --logdir` on a free local port, answering. The data is read once, before the server
    starts (--reload_interval 0 --reload_task blocking), so the first page already has every scalar;
    --load_fast false: the Python reader, in this one process (no Rust data server as a child to outlive it)."""
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
             "--port", str(port), "--load_fast", "false", "--reload_interval", "0", "--reload_task", "blocking"],
            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None:
            raise AssertionError(f"tensorboard exited ({server.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "data/logdir", timeout=5) as answer:
                if answer.status == 200:
                    return server, url
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            stop(server)
            raise AssertionError(f"tensorboard did not answer at {url} within 60 s:\n{log.read_text()}")
        time.sleep(0.3)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def chromium(profile: Path, url: str, screenshot: Path) -> str:
    """Headless Chromium renders `url`: returns the page as rendered (--dump-dom) and writes a screenshot.
    --no-sandbox: root (CI, this machine) cannot use Chromium's sandbox. --virtual-time-budget: page time
    runs ahead (fast while the page is idle) until 10 s of it have passed, so TensorBoard's JavaScript has
    fetched the tags and drawn the cards. --run-all-compositor-stages-before-draw: frames are drawn before page
    time moves on; TensorBoard builds a card when an IntersectionObserver sees it on screen, which needs drawn
    frames (without the flag the cards of a filtered view, below, stayed unbuilt in about half the tries).
    --disable-webgl: with software WebGL some chart lines were not drawn yet; TensorBoard then draws SVG."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-webgl", "--disable-dev-shm-usage",
           "--run-all-compositor-stages-before-draw", "--virtual-time-budget=10000", f"--window-size={WIDTH},{HEIGHT}",
           f"--user-data-dir={profile}", "--no-first-run", f"--screenshot={screenshot}", "--dump-dom", url]
    browser = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = browser.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(browser.pid, signal.SIGKILL)  # its own session: the renderer and GPU processes too
        browser.communicate()
        raise AssertionError(f"chromium did not finish within 90 s: {' '.join(cmd)}")
    assert browser.returncode == 0, f"chromium exited {browser.returncode}:\n{err[-3000:]}"
    return out


def png_size_and_colours(path: Path) -> tuple[tuple[int, int], int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    from PIL import Image  # Pillow: a dependency of matplotlib and tensorboard

    with Image.open(path) as image:
        image.load()
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    return struct.unpack(">II", data[16:24]), len(colours)


@pytest.mark.skipif(CHROMIUM is None, reason="the chromium binary is missing (Debian's package `chromium`; "
                    "`make setup` installs it: scripts/setup.sh APT_PACKAGES)")
def test_the_tensorboard_page_lists_the_accuracy_scalars_and_renders(run, tmp_path):
    run_dir, _, _ = run
    accuracy = sorted({key for record in run_dir.records() if record["kind"] == "eval"
                       for key in scalars(record) if key.startswith("eval/acc_")})
    assert accuracy == ["eval/acc_t1", "eval/acc_t2"]  # metrics.jsonl's eval acc_t1, acc_t2

    server, url = serve(run_dir.path / "tensorboard", tmp_path / "tensorboard.log")
    try:
        # The time-series dashboard, TensorBoard's first page (#timeseries; the legacy #scalars one renders its
        # tags inside shadow roots, which --dump-dom leaves out), shows a card per tag in groups sorted by
        # name, each card named in its heading (`<tb-truncated-path title="eval/acc_t1">`). It builds only
        # the cards on screen (and 200 px around): here the eval group's first six, acc_t1 and acc_t2 first.
        # Narrowing the page with the tagFilter query parameter (`/?tagFilter=^eval/acc_#timeseries`; in the
        # fragment it is ignored) found the two cards but left them unbuilt, without their names, in about
        # one headless try in seven even with the flags above; the page as it first opens had them in 40 of 40.
        shot = tmp_path / "tensorboard.png"
        dom = chromium(tmp_path / "profile", url + "#timeseries", shot)
        missing = [tag for tag in accuracy if f'title="{tag}"' not in dom]
        cards = re.findall(r'<tb-truncated-path[^>]* title="([^"]*)"', dom)
        assert not missing, f"TensorBoard's page does not list {missing}; its cards: {cards}"
        size, colours = png_size_and_colours(shot)
        assert size == (WIDTH, HEIGHT)
        assert colours > 50, f"the screenshot has {colours} colours: blank"  # the page had about 900
    finally:
        stop(server)
