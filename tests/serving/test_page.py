"""The page at ``/`` in a real headless browser (Debian's chromium + chromedriver through selenium; nothing
is downloaded): upload an image, type classes with a synonym, see the boxes and the table; the slider
filters them; a folded model shows its fixed vocabulary. Skips where no browser is installed
(``tests/serving/setup_browser.sh`` installs one; ``make test`` runs it). ``YW_SCREENSHOT=path``
saves the page after the detection (the README's picture)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import httpx
import pytest

WAIT_S = 60


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no chromium + chromedriver here (tests/serving/setup_browser.sh installs them with apt)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the [dev] extra) is not installed")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,820"):
        options.add_argument(arg)
    try:
        drv = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    except Exception as e:  # a browser that cannot start here (no display libraries, sandbox): say why
        pytest.skip(f"chromium did not start: {str(e).splitlines()[0]}")
    yield drv
    drv.quit()


def wait(drv, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, WAIT_S).until(lambda d: condition(d), message=f"the page never showed {what}")


def rows(drv) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in drv.find_elements(By.CSS_SELECTOR, "#detections tbody tr")]


@pytest.mark.slow
def test_page_draws_the_boxes(browser, serve_models, start_server, tmp_path):
    from selenium.webdriver.common.by import By

    classes = ",".join(serve_models.classes)
    server = start_server([serve_models.open_vocab, "--classes", classes, "--backend", "onnxruntime"])
    image = tmp_path / "shapes.png"  # larger than the 128 px validation image: a readable screenshot
    cv2.imwrite(str(image), cv2.resize(cv2.imread(serve_models.images[0]), (480, 480)))
    typed = "red circle/red disk, green square, blue triangle, yellow star"
    class_texts = [["red circle", "red disk"], ["green square"], ["blue triangle"], ["yellow star"]]
    api = httpx.post(f"{server.url}/v1/detect", files={"image": image.read_bytes()},
                     data={"classes": json.dumps(class_texts), "conf": "0.25"}, timeout=60).json()["detections"]
    assert api, "the model finds no shape in the image: the page test would be vacuous"

    browser.get(server.url + "/")
    wait(browser, lambda d: "onnxruntime" in d.find_element(By.ID, "model").text, "the model line")
    browser.find_element(By.ID, "classes").send_keys(typed)
    browser.find_element(By.ID, "image-input").send_keys(str(image))
    wait(browser, lambda d: rows(d), "a table of detections")
    canvas = browser.find_element(By.ID, "canvas")
    assert canvas.get_attribute("width") == "480" and canvas.get_attribute("data-boxes") == str(len(api))
    table = rows(browser)
    assert [r[1] for r in table] == [d["class_name"] for d in api]
    assert [float(r[2]) for r in table] == pytest.approx([d["score"] for d in api], abs=1e-3)
    # the boxes are drawn: the canvas differs from the image where a box's edge runs
    pixel = browser.execute_script("const [x, y] = arguments[0]; return Array.from(document.getElementById"
                                   "('canvas').getContext('2d').getImageData(x, y, 1, 1).data);",
                                   [round(api[0]["box"][0]), round((api[0]["box"][1] + api[0]["box"][3]) / 2)])
    assert pixel[:3] != list(cv2.imread(str(image))[round((api[0]["box"][1] + api[0]["box"][3]) / 2),
                                                         round(api[0]["box"][0])][::-1])
    if os.environ.get("YW_SCREENSHOT"):
        Path(os.environ["YW_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(os.environ["YW_SCREENSHOT"])
    # the slider filters what came back
    browser.execute_script("const s = document.getElementById('conf'); s.value = '0.9';"
                           "s.dispatchEvent(new Event('input'));")
    assert len(rows(browser)) == sum(d["score"] >= 0.9 for d in api)


@pytest.mark.slow
def test_page_shows_a_folded_vocabulary(browser, serve_models, folded_server):
    from selenium.webdriver.common.by import By

    browser.get(folded_server.url + "/")
    fixed = wait(browser, lambda d: d.find_element(By.ID, "fixed-classes").text, "the folded vocabulary")
    assert fixed == ", ".join(serve_models.classes)
    assert not browser.find_element(By.ID, "classes").is_displayed()
