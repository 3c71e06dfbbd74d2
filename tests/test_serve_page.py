"""The page at / in a real headless browser (Debian's chromium and chromedriver, driven by selenium).

A real `voxfit serve` process with the embedded voice and an API key: the page asks
for the key, speaks a sentence (the audio arrives as it streams and can be replayed
and downloaded), fills the plan panel with the chosen proposal, and shows the
server's one-line error for bad input. When chromium or chromedriver is missing the
browser tests skip and say so (`.ci/run` installs both with apt-get).

`VOXFIT_UPDATE_SCREENSHOT=1` makes the speaking test save its screenshot as the README's
`docs/serve-page.png` (otherwise it stays in the test's temporary directory).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import ServerProcess, clean_env

pytestmark = pytest.mark.timeout(240)

KEY = "page-test-key"
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "serve-page.png"
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()),
                shutil.which("chromium"))
DRIVER = next((p for p in ("/usr/bin/chromedriver",) if Path(p).exists()), shutil.which("chromedriver"))
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required")
WAIT = 60  # seconds any one thing may take in the browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("page")
    proc = ServerProcess(["--port", "0", "--max-input-chars", "300"],
                         env=clean_env(VOXFIT_CACHE_DIR=str(work / "cache"), VOXFIT_API_KEY=KEY), cwd=work)
    yield proc
    assert proc.stop() == 0


def test_the_page_and_its_assets_need_no_key_but_its_data_does(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for src in ("/static/page.js", "/static/page.css"):
            assert src in page.text
            assert c.get(src).status_code == 200
        for asset in (page.text, c.get("/static/page.js").text, c.get("/static/page.css").text):
            assert "http://" not in asset and "https://" not in asset and "//cdn" not in asset  # nothing from elsewhere
        assert c.get("/static/../app.py").status_code in (401, 404)
        assert c.get("/static/other.js").status_code == 401  # not an asset: behind the key like any route
        assert c.get("/v1/requests/recent").status_code == 401
        auth = {"Authorization": f"Bearer {KEY}"}
        assert c.get("/static/other.js", headers=auth).status_code == 404
        voice = c.get("/v1/audio/voices", headers=auth).json()["default"]
        details = c.get(f"/v1/audio/voices/{voice}", headers=auth).json()
        assert details["speed"] == {"option": "length_scale", "rule": "length_scale = 1 / speed"}
        assert "length_scale" in details["options_schema"]["properties"]
        assert details["limits"]["max_input_chars"] == 300
        missing = c.get("/v1/audio/voices/nobody", headers=auth)
        assert missing.status_code == 400 and "unknown voice 'nobody'" in missing.json()["error"]["message"]
        assert c.get("/v1/requests/recent?limit=0", headers=auth).status_code == 400


def _browser(tmp_path):
    if not CHROMIUM or not DRIVER:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver): "
                    "the page's browser test cannot run here")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install --group test)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.add_argument("--window-size=1280,1500")
    return webdriver.Chrome(service=Service(executable_path=DRIVER, log_output=str(tmp_path / "chromedriver.log")),
                            options=options)


def _until(driver, script: str, what: str, timeout: float = WAIT):
    """Poll a JavaScript expression until it is truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script}")
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not seen within {timeout:g} s")


def test_speak_in_a_real_browser(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = _browser(tmp_path)
    try:
        driver.set_script_timeout(WAIT)
        driver.get(server.url + "/")
        # The page asks for the key once (the API answered 401) and keeps it in this tab.
        _until(driver, "!document.getElementById('key-form').hidden", "the API key form")
        assert driver.switch_to.active_element.get_attribute("id") == "key"
        driver.find_element(By.ID, "key").send_keys(KEY + Keys.ENTER)
        _until(driver, "window.voxfitPage.ready", "the page loaded with the key")
        assert driver.execute_script("return sessionStorage.getItem('voxfit-api-key')") == KEY

        # The plan panel: the chosen proposal with its reasons, the alternatives, the vetoed ones.
        chosen = driver.find_element(By.ID, "plan-chosen").text
        assert "Chosen: cpu_onnx: piper-onnx, cpu" in chosen
        assert driver.find_elements(By.CSS_SELECTOR, "#plan-chosen li")  # its reasons
        plan_text = driver.find_element(By.ID, "plan-body").text
        assert "Alternatives, in order" in plan_text and "Vetoed (" in plan_text
        assert "environment changes made" in plan_text
        # Alternatives are folded, each listed once; a reason every proposal gives is said once, not per proposal.
        assert driver.execute_script("return document.getElementById('plan-alternatives').open") is False
        assert driver.find_elements(By.CSS_SELECTOR, "#plan-alternatives li")
        every = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#plan-shared li")]
        assert every, "no reason shared by every proposal shown"
        body_html = driver.execute_script("return document.getElementById('plan-body').textContent")
        assert all(body_html.count(reason) == 1 for reason in every)
        # The chart: each proposal's estimated speed and peak memory against what this machine has.
        chart = driver.find_element(By.ID, "plan-chart").text
        assert "x real time" in chart and "RAM available" in chart
        assert len(driver.find_elements(By.CSS_SELECTOR, "#plan-chart tbody tr")) >= 2
        assert driver.find_element(By.ID, "plan-body").text.count(" logical CPUs") == 1  # the CPU named once
        # The options of the chosen engine, from its options model, with their ranges.
        assert driver.find_element(By.ID, "opt-length_scale").get_attribute("type") == "number"
        assert " to " in driver.find_element(By.CSS_SELECTOR, "label[for=opt-length_scale]").text  # its range
        # The live system panel.
        _until(driver, "document.querySelector('#system-body .bar') !== null", "the system panel")
        system_text = driver.find_element(By.ID, "system-body").text
        assert "CPU" in system_text and "logical CPUs" in system_text
        assert len(driver.find_elements(By.CSS_SELECTOR, "#system-cpus figcaption")) == os.cpu_count()  # labelled

        # Speak with Ctrl+Enter in the text box: audio arrives as it streams, then plays back from a WAV.
        text = driver.find_element(By.ID, "text")
        text.clear()
        text.send_keys("Hello from the browser. This second sentence streams after the first one.")
        text.send_keys(Keys.CONTROL, Keys.ENTER)
        last = _until(driver, "window.voxfitPage.last && window.voxfitPage.last.done && window.voxfitPage.last",
                      "the speech to finish")
        assert last["error"] is None and last["rate"] == 22050
        assert last["bytes"] > 22050 * 2 and last["seconds"] > 2.0
        assert 0 < last["firstAudioMs"] < 30_000
        # It played as it streamed: Web Audio was running when the first sentence's samples were scheduled,
        # and they were scheduled before the rest had arrived (the body came in several reads).
        assert last["playing"] == "running"
        assert last["reads"] >= 2 and last["firstAudioMs"] < last["doneMs"]
        duration = _until(driver, "document.getElementById('audio').readyState >= 1 && "
                          "document.getElementById('audio').duration", "the audio element's metadata")
        assert duration == pytest.approx(last["seconds"], abs=0.05)
        link = driver.find_element(By.ID, "download")
        assert link.is_displayed() and link.get_attribute("href").startswith("blob:")
        assert "Spoke" in driver.find_element(By.ID, "status").text
        # The request is in the table with its metrics.
        row = _until(driver, f"document.querySelector('#recent-table tr[data-id=\"{last['id']}\"]') && "
                     f"document.querySelector('#recent-table tr[data-id=\"{last['id']}\"]').innerText",
                     "the request in the recent table")
        assert "ok" in row and "/v1/tts" in row
        driver.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "serve-page.png"
        assert driver.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("VOXFIT_UPDATE_SCREENSHOT") == "1":  # the README's picture, made on purpose only
            shutil.copyfile(shot, SCREENSHOT)

        # Bad input: the server's one-line error, on the page.
        text.clear()
        driver.find_element(By.ID, "speak").click()
        _until(driver, "!document.getElementById('error').hidden", "the error for empty text")
        assert driver.find_element(By.ID, "error").text == "text is empty: nothing to say"
        text.send_keys("Far too long. " * 30)  # 420 characters, over --max-input-chars 300
        assert "420 / 300" in driver.find_element(By.ID, "count").text
        driver.find_element(By.ID, "speak").click()
        _until(driver, "document.getElementById('error').innerText.includes('at most 300')", "the error for long text")
        assert "text is 420 characters" in driver.find_element(By.ID, "error").text
        assert "Traceback" not in driver.page_source
        # A phone-sized window (390 px; headless windows cannot be narrower than 500, so emulate the screen):
        # one column, nothing wider than the screen.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        width = driver.execute_script("return document.documentElement.scrollWidth")
        inner = driver.execute_script("return window.innerWidth")
        assert inner == 390 and width <= inner, f"the page is {width} px wide in a {inner} px window"
        plan_box = driver.find_element(By.ID, "plan").rect
        speak_box = driver.find_element(By.ID, "speak-card").rect
        assert plan_box["y"] > speak_box["y"] and plan_box["width"] <= 390  # below it, not beside it
        height = driver.execute_script("return document.documentElement.scrollHeight")
        assert height < 4000, f"the page is {height} px tall at 390 px"
        recent = driver.find_element(By.ID, "recent-table").rect
        assert recent["x"] >= 0 and recent["x"] + recent["width"] <= 390, recent  # the table fits, nothing clipped
        phone = tmp_path / "serve-page-390.png"
        assert driver.save_screenshot(str(phone))
        logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]
                and "400" not in e["message"]]
        assert not logs, logs
    finally:
        driver.quit()


def test_queue_full_and_engine_failure_are_short_messages_on_the_page(tmp_path):
    """Stand-in engines in an in-process server: a busy voice (queue limit 0) and an engine that raises."""
    import threading

    from selenium.webdriver.common.by import By
    from serve_helpers import InProcessServer, toy_voice

    driver = _browser(tmp_path)
    voice, _ = toy_voice("toy-voice", delay=1.5)
    try:
        with InProcessServer([voice], max_queue=0) as srv:
            driver.get(srv.url + "/")
            _until(driver, "window.voxfitPage.ready", "the page loaded")
            assert "Chosen: toy: toy-toy-voice, cpu" in driver.find_element(By.ID, "plan-chosen").text
            text = driver.find_element(By.ID, "text")

            def errors_for(sentence: str, what: str) -> str:
                text.clear()
                text.send_keys(sentence)
                driver.execute_script("document.getElementById('error').hidden = true")
                driver.find_element(By.ID, "speak").click()
                _until(driver, "!document.getElementById('error').hidden", what)
                return driver.find_element(By.ID, "error").text

            busy = threading.Thread(target=httpx.post, args=(f"{srv.url}/v1/tts",),
                                    kwargs={"json": {"text": "One. Two. Three."}, "timeout": 30})
            busy.start()
            deadline = time.monotonic() + 10
            while not srv.state.pools["toy-voice"].busy:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            full = errors_for("Hello.", "the queue-full message")
            busy.join(30)
            assert full.startswith("voice toy-voice is busy") and "VOXFIT_MAX_QUEUE=0" in full
            # The engine fails after the first sentence was streamed: that audio stays, the page says why it ended.
            failed = errors_for("This one is fine. Then a crash.", "the engine failure")
            assert failed == "The request ended early: engine failed: RuntimeError: CUDA out of memory (stand-in)"
            last = driver.execute_script("return window.voxfitPage.last")
            assert last["seconds"] == pytest.approx(0.5, abs=0.01) and last["error"].startswith("engine failed")
            # Its only worker is out of service now: the next request is told so at once.
            dead = errors_for("Hello again.", "the out-of-service message")
            assert dead == "voice toy-voice is out of service: engine failed: RuntimeError: CUDA out of memory (stand-in)"
            assert "Traceback" not in driver.page_source
            _until(driver, "document.querySelector('#recent-table td.bad') !== null", "the failed request's row")
    finally:
        driver.quit()


def test_the_page_ships_in_the_wheel(tmp_path):
    """Every asset the page serves is in the built voxfit wheel (no CDN: nothing else is needed)."""
    import zipfile

    from hatchling.builders.wheel import WheelBuilder
    from voxfit.server.page import ASSETS

    built = list(WheelBuilder(str(ROOT / "core")).build(directory=str(tmp_path), versions=["standard"]))
    assert len(built) == 1
    names = set(zipfile.ZipFile(built[0]).namelist())
    for name in ASSETS:
        assert f"voxfit/server/static/{name}" in names
    assert "voxfit/server/page.py" in names and "voxfit/server/wyoming.py" in names
