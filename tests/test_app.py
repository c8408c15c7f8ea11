"""`vos app`: the annotator and its HTTP API (always), and the page end to end in headless Chromium.

The browser test draws boxes, propagates both ways, corrects a middle frame, re-propagates and
exports; the exports must be byte-identical to what `vos segment` (before the correction) and the
Python session API (after it) write for the same prompts. Set VOS_APP_SCREENSHOTS to a folder to
keep the page's screenshots (the README's come from `VOS_APP_SCREENSHOTS=bench/results/app`), and
VOS_APP_WEIGHTS to a checkpoint to use instead of a random network.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from cli import app as cli_app  # noqa: E402
from vos.app import Annotator, Server  # noqa: E402
from vos.data.boxes import masks_to_boxes  # noqa: E402
from vos.data.export import MaskExporter  # noqa: E402
from vos.data.io import read_mask  # noqa: E402
from vos.data.synthetic import SyntheticSpec, generate  # noqa: E402
from vos.errors import VosError  # noqa: E402
from vos.memory.session import VideoPredictor  # noqa: E402
from vos.model.weights import load_model  # noqa: E402

FRAMES = 10


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A two-object synthetic video (a folder of frames) and its ground-truth masks."""
    root = tmp_path_factory.mktemp("app-video")
    generate(root, SyntheticSpec(videos=4, frames=FRAMES, height=128, width=224, seed=5, max_objects=2,
                                 object_size=(0.5, 0.8), leave_probability=0.0))
    for folder in sorted((root / "Annotations" / "480p").iterdir()):
        if len(torch.unique(read_mask(next(iter(sorted(folder.iterdir())))))) == 3:
            return root / "JPEGImages" / "480p" / folder.name, folder
    raise AssertionError("no two-object video in the synthetic set")


@pytest.fixture(scope="module")
def weights(small_weights) -> Path:
    given = os.environ.get("VOS_APP_WEIGHTS")
    return Path(given) if given else small_weights


def _predictor(weights: Path) -> VideoPredictor:
    return VideoPredictor(load_model(str(weights)).eval())


def _gt_boxes(annotations: Path, k: int) -> dict[int, list[int]]:
    mask = read_mask(sorted(annotations.iterdir())[k])
    ids = [int(i) for i in torch.unique(mask).tolist() if i != 0]
    boxes, _ = masks_to_boxes(torch.stack([mask == i for i in ids]))
    return {i: [int(v) for v in b] for i, b in zip(ids, boxes.tolist())}


def _same_files(a: Path, b: Path) -> None:
    names_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and not p.name.startswith((".vos", "vos-")))
    names_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and not p.name.startswith((".vos", "vos-")))
    assert names_a == names_b and names_a
    for name in names_a:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# ---------------------------------------------------------------------- annotator, no HTTP
def test_annotator_resumes_from_its_workspace_and_refuses_bad_input(tmp_path, video, weights):
    frames, annotations = video
    predictor = _predictor(weights)
    boxes = _gt_boxes(annotations, 0)
    with Annotator(predictor, frames, tmp_path / "ws") as a:
        assert [a.add_object()["id"], a.add_object("second", "#00ff00")["id"]] == [1, 2]
        for obj, box in boxes.items():
            a.set_box(0, obj, box)
        with pytest.raises(VosError, match="outside|inside|box"):
            a.set_box(0, 1, [-50, 0, -10, 20])
        with pytest.raises(VosError, match="does not exist"):
            a.set_box(0, 9, [0, 0, 10, 10])
        with pytest.raises(VosError, match="frames 0–9"):
            a.set_box(FRAMES, 1, [0, 0, 10, 10])
        with pytest.raises(VosError, match="neither a prompt nor a result"):
            a.propagate(5)
        a.propagate(0, "forward")
        a.wait()
        assert a.state()["status"]["done"] == FRAMES and a.state()["results"] == list(range(FRAMES))
        painted = torch.zeros(128, 224, dtype=torch.bool)
        painted[40:70, 30:90] = True
        png = _png(painted)
        a.set_mask(3, 2, png)
        expected = {k: a.session.result(k) for k in range(FRAMES)}
        prompts = {k: a.prompts(k) for k in range(FRAMES)}
    with Annotator(predictor, frames, tmp_path / "ws") as b:  # a restarted server
        assert [o["name"] for o in b.state()["objects"]] == ["object 1", "second"]
        assert {k: b.prompts(k) for k in range(FRAMES)} == prompts
        assert torch.equal(b.session.prompts[3].masks[2], painted)
        for k in range(FRAMES):
            assert torch.equal(b.session.result(k), expected[k])
        b.delete_object(1)
        assert all(not bool((b.session.result(k) == 1).any()) for k in range(FRAMES))
        assert all(p["object"] != 1 for k in range(FRAMES) for p in b.prompts(k))
    with pytest.raises(VosError, match="not empty and was not written by vos"):
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        (foreign / "notes.txt").write_text("mine")
        Annotator(predictor, frames, foreign)
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
    with pytest.raises(VosError, match="no such video"):
        Annotator(predictor, tmp_path / "missing.mp4", tmp_path / "ws2")


def _png(mask: torch.Tensor) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask.numpy().astype("uint8") * 255, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------- HTTP
class _Running:
    """The app served on a free port in a background thread."""

    def __init__(self, annotator: Annotator) -> None:
        self.server = Server(annotator, "127.0.0.1", 0)
        self.url = self.server.url
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def call(self, method: str, path: str, body=None) -> tuple[int, dict | bytes]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path.lstrip("/"), data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, payload, kind = response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, payload, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        return status, (json.loads(payload) if "json" in kind else payload)

    def wait_idle(self, timeout: float = 600) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            status = self.call("GET", "/api/state")[1]["status"]
            if not status["running"]:
                return status
            time.sleep(0.1)
        raise AssertionError("propagation did not finish")

    def close(self) -> None:
        self.server.stop()
        self.thread.join(30)


def test_http_api_reports_errors_and_keeps_serving(tmp_path, video, weights):
    frames, annotations = video
    with Annotator(_predictor(weights), frames, tmp_path / "ws") as a:
        app = _Running(a)
        try:
            status, info = app.call("GET", "/api/info")
            assert status == 200 and (info["frames"], info["width"], info["height"]) == (FRAMES, 224, 128)
            status, page = app.call("GET", "/")
            assert status == 200 and b'id="canvas"' in page
            assert app.call("GET", "/api/frames/0.jpg")[1][:2] == b"\xff\xd8"  # a JPEG
            assert app.call("GET", "/api/results/0.png")[0] == 404
            # the page's mistakes: each answers 400 with a message
            assert app.call("POST", "/api/propagate", {"frame": 0})[1]["error"].startswith("no object yet")
            assert app.call("POST", "/api/prompts/0", {"object": 1, "box": [0, 0, 5, 5]})[1]["error"].startswith("object 1 does not exist")
            assert app.call("POST", "/api/objects", {})[1]["id"] == 1
            for bad in ({"object": 1, "box": [300, 0, 400, 50]}, {"object": 1, "box": "x"}, {"object": 1},
                        {"object": 1, "mask": "data:image/png;base64,!!"}, {"object": "one", "box": [0, 0, 5, 5]}):
                status, body = app.call("POST", "/api/prompts/0", bad)
                assert status == 400 and body["error"], bad
            assert app.call("POST", "/api/prompts/0", b"not json")[0] == 400
            assert app.call("GET", "/api/frames/99.jpg")[0] == 400
            assert app.call("POST", "/api/export", {"format": "davis"})[1]["error"].startswith("nothing to export")
            # and a good session afterwards
            box = _gt_boxes(annotations, 0)[1]
            assert app.call("POST", "/api/prompts/0", {"object": 1, "box": box})[0] == 200
            assert app.call("GET", "/api/prompts/0")[1] == [{"object": 1, "box": [float(v) for v in box]}]
            assert app.call("POST", "/api/propagate", {"frame": 0, "direction": "forward"})[0] == 200
            status = app.wait_idle()
            assert (status["done"], status["error"]) == (FRAMES, None)
            png = app.call("GET", "/api/results/4.png")[1]
            assert png[:4] == b"\x89PNG"
            assert app.call("POST", "/api/export", {"format": "coco"})[1]["path"].endswith("export-coco")
        finally:
            app.close()


def test_stop_ends_a_propagation_between_frames(tmp_path, video, weights):
    frames, annotations = video
    with Annotator(_predictor(weights), frames, tmp_path / "ws") as a:
        a.add_object()
        a.set_box(0, 1, _gt_boxes(annotations, 0)[1])
        slow = threading.Event()
        original = a._write_result

        def write_and_wait(k, ids):  # hold the worker after its first frame until stop() is called
            original(k, ids)
            slow.set()
            time.sleep(0.2)

        a._write_result = write_and_wait
        a.propagate(0, "forward")
        assert slow.wait(300)
        with pytest.raises(VosError, match="a propagation is running"):
            a.add_object()
        a.stop()
        a.wait()
        state = a.state()
        assert state["status"]["stopped"] and 1 <= state["status"]["done"] < FRAMES
        assert state["results"] == list(range(state["status"]["done"]))


# ---------------------------------------------------------------------- the page, in a browser
def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (test extra)")
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("no chromium + chromedriver on this machine (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                 "--force-device-scale-factor=1"):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.slow
def test_page_end_to_end_matches_vos_segment(tmp_path, video, weights):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    frames, annotations = video
    shots = Path(os.environ.get("VOS_APP_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    driver = _browser()
    workspace = tmp_path / "ws"
    annotator = Annotator(_predictor(weights), frames, workspace)
    app = _Running(annotator)
    wait = WebDriverWait(driver, 120)
    try:
        driver.get(app.url)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        canvas = driver.find_element(By.ID, "canvas")

        def drag_box(box):
            rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
            sx, sy = rect[0] / 224, rect[1] / 128
            x0, y0 = (box[0] + 0.5) * sx - rect[0] / 2, (box[1] + 0.5) * sy - rect[1] / 2
            x1, y1 = (box[2] - 0.5) * sx - rect[0] / 2, (box[3] - 0.5) * sy - rect[1] / 2
            ActionChains(driver).move_to_element_with_offset(canvas, int(x0), int(y0)).click_and_hold() \
                .move_to_element_with_offset(canvas, int(x1), int(y1)).release().perform()

        def prompts(k):
            return app.call("GET", f"/api/prompts/{k}")[1]

        def propagate(direction, start):
            driver.find_element(By.ID, f"propagate-{direction}").click()
            wait.until(lambda d: d.find_element(By.ID, "status").text.startswith(f"done: {FRAMES if direction == 'both' else FRAMES - start}/"))
            status = app.call("GET", "/api/state")[1]["status"]
            assert (status["direction"], status["start"], status["running"], status["error"]) == (direction, start, False, None)

        def export(fmt):
            driver.find_element(By.ID, f"export-{fmt}").click()
            target = workspace / ("overlay.mp4" if fmt == "overlay" else f"export-{fmt}")
            wait.until(lambda d: d.find_element(By.ID, "export-path").text == f"written: {target}")

        def go_to(k):
            field = driver.find_element(By.ID, "frame-number")
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(str(k), Keys.TAB)
            wait.until(lambda d: d.find_element(By.ID, "frame-name").text == sorted(frames.iterdir())[k].stem)

        # 1. two objects with boxes on frame 0
        gt = _gt_boxes(annotations, 0)
        for obj in (1, 2):
            driver.find_element(By.ID, "add-object").click()
            wait.until(lambda d, n=obj: len(d.find_elements(By.CSS_SELECTOR, "#objects li")) == n)
            drag_box(gt[obj])
            wait.until(lambda d, n=obj: len(prompts(0)) == n)
        boxes = {p["object"]: p["box"] for p in prompts(0)}
        for obj in (1, 2):  # what the mouse drew, within a pixel of the intended box
            assert max(abs(a - b) for a, b in zip(boxes[obj], gt[obj])) <= 1
        driver.save_screenshot(str(shots / "1-boxes.png"))

        # 2. propagate both ways, export, compare with vos segment
        propagate("both", 0)
        driver.save_screenshot(str(shots / "2-propagated.png"))
        export("davis")
        first_export = tmp_path / "first-davis"
        shutil.copytree(workspace / "export-davis", first_export)
        argv = ["segment", str(frames), "--out", str(tmp_path / "cli"), "--weights", str(weights), "--direction", "both"]
        for obj in (1, 2):
            argv += ["--box", ",".join(f"{v:g}" for v in boxes[obj])]
        result = CliRunner().invoke(cli_app, argv)
        assert result.exit_code == 0, result.output
        _same_files(first_export, tmp_path / "cli")

        # 3. correct object 1 on a middle frame with a new box, propagate forward from there
        middle = FRAMES // 2
        go_to(middle)
        driver.find_elements(By.CSS_SELECTOR, "#objects .select-object")[0].click()
        drag_box(_gt_boxes(annotations, middle)[1])
        wait.until(lambda d: len(prompts(middle)) == 1)
        correction = prompts(middle)[0]["box"]
        driver.save_screenshot(str(shots / "3-correction.png"))
        propagate("forward", middle)
        driver.save_screenshot(str(shots / "4-repropagated.png"))
        for fmt in ("davis", "binary", "coco", "overlay"):
            export(fmt)
        assert (workspace / "overlay.mp4").stat().st_size > 0
        go_to(middle + 2)
        driver.save_screenshot(str(shots / "5-exported.png"))
        messages = driver.find_element(By.ID, "message")
        assert not messages.is_displayed(), messages.text

        # 4. the brush: a stroke for object 2 becomes its mask prompt (its current mask plus the
        # stroke), and "clear prompt" removes it again
        brushed = FRAMES - 2
        go_to(brushed)
        driver.find_elements(By.CSS_SELECTOR, "#objects .select-object")[1].click()
        driver.find_element(By.ID, "tool-brush").click()
        width = driver.execute_script("return arguments[0].getBoundingClientRect().width;", canvas)
        per_pixel = width / 224
        ActionChains(driver).move_to_element_with_offset(canvas, int(-8 * per_pixel), 0).click_and_hold() \
            .move_to_element_with_offset(canvas, int(8 * per_pixel), 0).release().perform()
        driver.find_element(By.ID, "apply-mask").click()
        wait.until(lambda d: prompts(brushed) == [{"object": 2, "mask": True}])
        painted = read_mask(workspace / "prompts" / f"{sorted(frames.iterdir())[brushed].stem}_2.png")
        assert bool(painted[62:67, 106:119].all())  # the stroke across the centre, 12 px wide
        driver.save_screenshot(str(shots / "6-brush.png"))
        driver.find_element(By.ID, "clear-prompt").click()
        wait.until(lambda d: prompts(brushed) == [])
    finally:
        driver.quit()
        app.close()
        annotator.close()

    # the same prompts through the Python API give the same files
    session = _predictor(weights).open(frames)
    session.add(0, boxes=boxes)
    results = dict(session.propagate(0, "both"))
    session.add(middle, boxes={1: correction})
    results.update(session.propagate(middle, "forward"))
    for fmt in ("davis", "binary", "coco"):
        exporter = MaskExporter(tmp_path / f"api-{fmt}", fmt, video=frames.stem)
        for k in sorted(results):
            exporter.write(session.frames.name(k), results[k])
        exporter.close()
        _same_files(workspace / f"export-{fmt}", tmp_path / f"api-{fmt}")
    for k in range(middle):  # a correction replaces the frames from it on and keeps those before
        name = f"{session.frames.name(k)}.png"
        assert (first_export / name).read_bytes() == (workspace / "export-davis" / name).read_bytes()


def test_cli_app_reports_a_missing_video_in_one_line(tmp_path, weights):
    result = CliRunner().invoke(cli_app, ["app", str(tmp_path / "missing.mp4"), "--weights", str(weights), "--port", "0",
                                          "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == f"error: {tmp_path / 'missing.mp4'}: no such video file or folder"
    assert not (tmp_path / "ws").exists()


def test_a_corrupt_frame_is_reported_and_the_annotator_keeps_working(tmp_path, video, weights):
    frames, annotations = video
    copy = tmp_path / "frames"
    shutil.copytree(frames, copy)
    broken = sorted(copy.iterdir())[3]
    broken.write_bytes(b"not an image")
    with Annotator(_predictor(weights), copy, tmp_path / "ws") as a:
        a.add_object()
        a.set_box(0, 1, _gt_boxes(annotations, 0)[1])
        a.propagate(0, "forward")
        a.wait()
        status = a.state()["status"]
        assert status["done"] == 3 and not status["running"]
        assert status["error"].startswith(f"{broken}: unreadable or corrupt image")
        with pytest.raises(VosError, match="unreadable or corrupt image"):
            a.frame_jpeg(3)
        a.set_box(5, 1, _gt_boxes(annotations, 5)[1])  # still usable: start after the bad frame
        a.propagate(5, "forward")
        a.wait()
        assert a.state()["status"]["error"] is None and a.state()["results"] == [0, 1, 2, *range(5, FRAMES)]


def test_a_video_file_is_counted_and_served(tmp_path, video, weights):
    av = pytest.importorskip("av")
    from vos.data.io import read_image

    frames, annotations = video
    path = tmp_path / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 224, 128, "yuv420p"
        for file in sorted(frames.iterdir()):
            image = read_image(file).permute(1, 2, 0).contiguous().numpy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with Annotator(_predictor(weights), path, tmp_path / "ws") as a:
        info = a.info()
        assert (info["frames"], info["width"], info["height"], info["video"]) == (FRAMES, 224, 128, "clip.mp4")
        assert a.frame_jpeg(FRAMES - 1)[:2] == b"\xff\xd8"
        a.add_object()
        a.set_box(FRAMES - 1, 1, _gt_boxes(annotations, FRAMES - 1)[1])
        a.propagate(FRAMES - 1, "backward")
        a.wait()
        assert a.state()["results"] == list(range(FRAMES)) and a.state()["status"]["error"] is None
