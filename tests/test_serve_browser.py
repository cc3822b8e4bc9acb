"""`dgm serve` in a real browser: headless Chromium (Debian's chromium and chromium-driver) through Selenium
moves a slider and sees the decoded image change, draws on the canvas and gets the reconstruction of what it
drew, and saves a screenshot (docs/serve.png with DGM_SCREENSHOT=1, else a temporary file)."""
import base64
import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dgm
from dgm.serve import Background, create_app, load_explorer

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(f"no headless browser: {CHROMIUM} or {CHROMEDRIVER} is missing "
                    "(apt-get install chromium chromium-driver; .ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def _pixels(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,"), src[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))), dtype=np.float32) / 255


def _wait(predicate, timeout: float = 30.0, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    driver = _browser()  # skips first, before any training, where there is no browser
    screenshot = os.environ.get("DGM_SCREENSHOT") == "1"
    length = {"epochs": 150} if screenshot else {"steps": 40}  # the docs' picture shows a trained model
    run = dgm.train("vae", out=tmp_path_factory.mktemp("serve") / "vae", latent_dim=4, hidden_dims=(64,),
                    quiet=True, progress=False, **length)
    explorer = load_explorer(run.path)
    explorer.name = "runs/vae-digits"  # the page's title: the folder `dgm train vae latent_dim=4 hidden_dims=64` writes
    try:
        with Background(create_app(explorer)) as url:
            yield driver, url, explorer
    finally:
        driver.quit()


def test_slider_canvas_and_screenshot(served, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver, url, explorer = served
    driver.get(url)
    _wait(lambda: driver.execute_script("return document.body.dataset.ready === '1'"), what="the first pictures")
    errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".err") if e.text]
    assert not errors, errors

    # a slider moved with the keyboard, as a person would: the decoded image changes to the new code's decode
    decoded = driver.find_element(By.ID, "decoded-img")
    before = decoded.get_attribute("src")
    slider = driver.find_element(By.ID, "slider-0")
    slider.click()
    slider.send_keys(Keys.END)  # to +3 standard deviations
    _wait(lambda: decoded.get_attribute("src") != before and
          driver.find_element(By.ID, "slider-0-value").text == "3.00", what="the decoded image to change")
    assert not np.array_equal(_pixels(before), _pixels(decoded.get_attribute("src")))
    t = torch.tensor([float(driver.find_element(By.ID, f"slider-{i}").get_attribute("value")) for i in range(4)])
    assert t.tolist() == [3.0, 0.0, 0.0, 0.0]
    with torch.no_grad():
        expected = explorer.model.decode(explorer.sliders.code(t)[None])[0, 0].numpy()

    def shows_the_code() -> bool:  # the last request, sent with the slider's final value, has landed
        after = _pixels(decoded.get_attribute("src"))
        scale = (after.shape[1] - 4) // 8
        return np.allclose(after[2:-2:scale, 2:-2:scale], expected, atol=0.5 / 255 + 1e-6)

    _wait(shows_the_code, what="the decode of the slider's code")

    # a stroke on the canvas: the page sends it, the model's view of it has ink, the reconstruction is its own
    pad = driver.find_element(By.ID, "pad")
    (ActionChains(driver).move_to_element_with_offset(pad, -20, -70).click_and_hold().move_by_offset(30, 40)
     .move_by_offset(0, 60).move_by_offset(-10, 30).release().perform())
    recon = driver.find_element(By.ID, "recon-img")
    src = _wait(lambda: recon.get_attribute("src"), what="the reconstruction")
    grid = _pixels(src)
    cell = (grid.shape[1] - 2) // 2 - 2
    scale = cell // 8
    seen = torch.from_numpy(grid[2:2 + cell:scale, 2:2 + cell:scale].copy())
    levels = explorer.cfg.levels - 1
    assert torch.allclose(seen, torch.round(seen * levels) / levels, atol=0.5 / 255)  # the model's 17 levels
    seen = torch.round(seen * levels) / levels  # exactly, not as 8-bit PNG values
    shown = grid[2:2 + cell:scale, 4 + cell:4 + 2 * cell:scale]
    assert seen.max() > 0.5 and (seen == 0).float().mean() > 0.3  # a stroke, on black
    with torch.no_grad():
        expected = explorer.model.decode(explorer.model.encode(seen[None, None]))[0, 0]
    assert np.allclose(shown, expected.numpy(), atol=0.5 / 255 + 1e-6)

    path = DOCS / "serve.png" if os.environ.get("DGM_SCREENSHOT") == "1" else tmp_path / "serve.png"
    shot = tmp_path / "shot.png"
    assert driver.save_screenshot(str(shot))
    assert Image.open(shot).size[0] >= 800
    shutil.copyfile(shot, path)
