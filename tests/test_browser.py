"""The dashboard end to end in a real browser: a Streamlit server on a loopback port, headless Chromium
driven by Selenium. Screenshots, page sources and the server log go to ``test-artifacts/browser/``.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``); the
module skips, with the reason, when either is missing. Test tools that download their own browser build do
not work on the project's machines, hence Debian's browser and the driver path given explicitly.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import KAGGLE, ROOT, synthetic_slice

ARTIFACTS = ROOT / "test-artifacts" / "browser"
SERVER_START_TIMEOUT = 90   # seconds until /_stcore/health answers "ok"
PAGE_TIMEOUT = 90           # first page load: the model is loaded into the server on the first session
RESULT_TIMEOUT = 60         # upload to prediction and heatmap; charts on the runs page
CLASS_NAMES = ("Glioma", "Meningioma", "No tumour", "Pituitary")


def _first_existing(*candidates: str | None) -> str | None:
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


CHROMIUM = _first_existing(shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium",
                           "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium")
CHROMEDRIVER = _first_existing(shutil.which("chromedriver"), "/usr/bin/chromedriver",
                               "/usr/lib/chromium/chromedriver")

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium "
                       "chromium-driver); looked on PATH, in /usr/bin and /usr/lib/chromium"),
    pytest.mark.skipif(CHROMEDRIVER is None, reason="chromedriver is not installed (apt-get install "
                       "chromium-driver); looked on PATH, in /usr/bin and /usr/lib/chromium"),
]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-dev.txt)")
# After importorskip: without selenium the module skips, with the reason, instead of failing to import.
from selenium.common.exceptions import ElementNotInteractableException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# Streamlit re-renders elements on every script run; a reference taken a moment ago may be gone.
FLAKY_REFERENCES = (StaleElementReferenceException,)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def health_is_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200 and response.read().decode().strip() == "ok"
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group, then SIGKILL whatever is left after 10 s."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def crafted_runs(tmp_path_factory) -> Path:
    """A folder the server may read runs from (BRAIN_MRI_ALLOWED_ROOTS), for runs a test crafts."""
    return tmp_path_factory.mktemp("crafted-runs")


@pytest.fixture(scope="module")
def server_url(crafted_runs):
    """``streamlit run dashboard/app.py`` on a free loopback port, in its own process group."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    base = f"http://127.0.0.1:{port}"
    log_path = ARTIFACTS / "streamlit-server.log"
    command = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
               # nobody edits the app during the test; no watcher threads competing for the 2 cores
               "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "BRAIN_MRI_ALLOWED_ROOTS": str(crafted_runs)})
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while not health_is_ok(f"{base}/_stcore/health"):
                if process.poll() is not None:
                    pytest.fail(f"streamlit exited with code {process.returncode} before answering; "
                                f"log {log_path}:\n{tail(log_path)}")
                if time.monotonic() > deadline:
                    pytest.fail(f"streamlit did not answer {base}/_stcore/health within "
                                f"{SERVER_START_TIMEOUT} s; log {log_path}:\n{tail(log_path)}")
                time.sleep(0.5)
            yield base
        finally:
            stop_process_group(process)


@pytest.fixture
def browser(request):
    """Headless Chromium; after the test, a screenshot and the page source named after the test."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        try:
            driver.save_screenshot(str(ARTIFACTS / f"{request.node.name}.png"))
            (ARTIFACTS / f"{request.node.name}.html").write_text(driver.page_source)
        finally:
            driver.quit()


def wait(driver, seconds: float) -> WebDriverWait:
    return WebDriverWait(driver, seconds, poll_frequency=0.25, ignored_exceptions=FLAKY_REFERENCES)


def script_is_idle(driver) -> bool:
    """Streamlit marks its root element with the state of the script run."""
    apps = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stApp']")
    return bool(apps) and apps[0].get_attribute("data-test-script-state") == "notRunning"


def exception_texts(driver) -> list[str]:
    return [block.text for block in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stException']")]


def upload_input(driver):
    """The file input of the uploader labelled 'Add MRI slices', once the page has rendered it."""
    for uploader in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stFileUploader']"):
        labels = uploader.find_elements(By.CSS_SELECTOR, "[data-testid='stWidgetLabel']")
        if labels and labels[0].text.strip() == "Add MRI slices":
            inputs = uploader.find_elements(By.CSS_SELECTOR, "input[type='file']")
            if inputs:
                return inputs[0]
    return False


def prediction_heading(driver):
    headings = [h for h in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMain'] h3") if "%" in h.text]
    return headings[0] if headings else False


def loaded_gradcam_image(driver):
    """The st.image whose caption starts with 'Grad-CAM', once its picture has actually loaded."""
    for image in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stImage']"):
        captions = image.find_elements(By.CSS_SELECTOR, "[data-testid='stImageCaption']")
        if captions and captions[0].text.strip().startswith("Grad-CAM"):
            pictures = image.find_elements(By.TAG_NAME, "img")
            if pictures and driver.execute_script(
                    "return arguments[0].complete && arguments[0].naturalWidth > 0;", pictures[0]):
                return image
    return False


def scan_png(tmp_path: Path) -> Path:
    """A real glioma slice from the Kaggle test set when it is there, else a synthetic one; as PNG."""
    target = tmp_path / "glioma-scan.png"
    folder = KAGGLE / "Testing" / "glioma"
    scans = sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
    if scans:
        Image.open(scans[0]).save(target, "PNG")
    else:
        pixels = np.kron(synthetic_slice(0, seed=11, size=112), np.ones((2, 2), np.uint8))  # 224 px
        Image.fromarray(pixels, "L").save(target, "PNG")
    return target


def test_predict_page_shows_prediction_and_gradcam(server_url, browser, tmp_path):
    scan = scan_png(tmp_path)
    browser.get(server_url + "/")
    file_input = wait(browser, PAGE_TIMEOUT).until(
        upload_input, "no file input for the 'Add MRI slices' uploader on the Predict page")

    file_input.send_keys(str(scan))
    uploaded = time.monotonic()

    heading = WebDriverWait(browser, RESULT_TIMEOUT, poll_frequency=0.02, ignored_exceptions=FLAKY_REFERENCES).until(
        prediction_heading, "no subheader with a percentage (the prediction) after the upload")
    heading_text = heading.text
    WebDriverWait(browser, RESULT_TIMEOUT, poll_frequency=0.02, ignored_exceptions=FLAKY_REFERENCES).until(
        loaded_gradcam_image, "no image captioned 'Grad-CAM…' (the heatmap) after the upload")
    seconds = time.monotonic() - uploaded
    print(f"\n[browser] upload of {scan.name} to Grad-CAM heatmap on screen: {seconds:.2f} s "
          f"(prediction: {heading_text!r})")

    assert heading_text.startswith(CLASS_NAMES), heading_text
    # the probability bars: plotly is loaded lazily, a grey skeleton stands in until it has drawn
    wait(browser, RESULT_TIMEOUT).until(
        lambda driver: driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMain'] "
                                            "[data-testid='stPlotlyChart'] svg.main-svg"),
        "the probability chart did not render")
    wait(browser, RESULT_TIMEOUT).until(script_is_idle, "the script run did not finish")
    assert not exception_texts(browser), exception_texts(browser)


def test_runs_page_renders_its_charts(server_url, browser):
    browser.get(server_url + "/runs")

    def three_rendered_charts(driver):
        dialogs = driver.find_elements(By.CSS_SELECTOR, "[role='dialog'], [data-testid='stDialog']")
        if any("Page not found" in dialog.text for dialog in dialogs):
            raise AssertionError("Streamlit says 'Page not found' for /runs")
        charts = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stPlotlyChart']")
        rendered = [chart for chart in charts if chart.find_elements(By.CSS_SELECTOR, "svg.main-svg")]
        return rendered if len(rendered) >= 3 else False

    charts = wait(browser, PAGE_TIMEOUT).until(three_rendered_charts, "fewer than 3 plotly charts rendered on /runs")
    wait(browser, RESULT_TIMEOUT).until(script_is_idle, "the script run did not finish")

    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", charts[0])  # for the screenshot
    assert len(charts) >= 3
    assert not exception_texts(browser), exception_texts(browser)


def test_clicking_a_confusion_matrix_cell_lists_its_cases(server_url, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get(server_url + "/runs")

    def cell_points(driver):
        charts = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMain'] [data-testid='stPlotlyChart']")
        if not charts:
            return False
        points = charts[0].find_elements(By.CSS_SELECTOR, "g.trace.scatter path.point")
        if len(points) != 16:  # 4 x 4 cells, true class by row
            return False
        # plotly draws the points before it lays them out: wait until the cell to click has a size
        width = driver.execute_script("return arguments[0].getBoundingClientRect().width;", points[1])
        return points if width and width > 0 else False

    def listed(driver, wanted: str):
        return any(wanted in p.text for p in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMain'] p"))

    points = wait(browser, PAGE_TIMEOUT).until(cell_points, "the confusion matrix has no clickable cells")
    wait(browser, RESULT_TIMEOUT).until(script_is_idle, "the script run did not finish")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", points[1])

    def click_cell(driver):  # true glioma, predicted meningioma; a re-render may replace the point meanwhile
        try:
            ActionChains(driver).move_to_element(cell_points(driver)[1]).click().perform()
            return True
        except (ElementNotInteractableException, StaleElementReferenceException, TypeError):
            return False

    wait(browser, RESULT_TIMEOUT).until(click_cell, "the confusion-matrix cell could not be clicked")
    wait(browser, RESULT_TIMEOUT).until(lambda d: listed(d, "true Glioma, predicted Meningioma"),
                                        "clicking the cell did not list its cases")
    wait(browser, RESULT_TIMEOUT).until(script_is_idle, "the script run did not finish")
    assert not exception_texts(browser), exception_texts(browser)


class _Beacon:
    """A web server on a loopback port that counts the requests it gets: what a markdown image in a run's name
    would make every viewer's browser fetch."""

    def __init__(self):
        import http.server
        import threading

        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # the name http.server calls
                hits.append(self.path)
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_markdown_in_a_run_is_shown_as_text_and_fetches_nothing(server_url, browser, crafted_runs):
    import json

    from selenium.webdriver.common.keys import Keys

    beacon = _Beacon()
    try:
        url = f"http://127.0.0.1:{beacon.port}"
        markup = f"![x]({url}/beacon.png) [click]({url}/link)"
        run = crafted_runs / "markdown-run"
        shutil.copytree(ROOT / "assets/runs/brain-tumor-mri-testing", run)
        info = json.loads((run / "run.json").read_text())
        info["name"] = markup
        info["dataset"]["name"] = markup
        info["model"]["path"] = markup
        (run / "run.json").write_text(json.dumps(info))

        browser.get(server_url + "/runs")
        field = wait(browser, PAGE_TIMEOUT).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "input[aria-label='Another run directory']"),
            "no 'Another run directory' box on /runs")[0]
        field.send_keys(str(run) + Keys.ENTER)
        def shown_as_text(driver):  # as the characters it holds (an invisible word joiner breaks each address)
            paragraphs = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMain'] p")
            return any(markup in p.text.replace("\u2060", "") for p in paragraphs)

        wait(browser, RESULT_TIMEOUT).until(shown_as_text, "the run's markup is not shown as text")
        wait(browser, RESULT_TIMEOUT).until(script_is_idle, "the script run did not finish")
        time.sleep(1.0)  # time for any image request to arrive
        images = [i.get_attribute("src") or "" for i in browser.find_elements(By.TAG_NAME, "img")]
        links = [a.get_attribute("href") or "" for a in browser.find_elements(By.TAG_NAME, "a")]
        assert beacon.hits == [], beacon.hits
        assert not any(str(beacon.port) in src for src in images + links)
        assert not exception_texts(browser), exception_texts(browser)
    finally:
        beacon.close()


# --------------------------------------------------------------------------------------------------
# What a reviewer meets: a page at its own address, work kept across pages, warnings, review of errors


def page_not_found(driver) -> bool:
    return any("Page not found" in d.text for d in driver.find_elements(By.CSS_SELECTOR, "[role='dialog']"))


def alert_saying(text: str):
    def find(driver):
        alerts = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMain'] [data-testid='stAlert']")
        return next((a for a in alerts if text in a.text), False)
    return find


def upload_and_wait(browser, path: Path):
    wait(browser, PAGE_TIMEOUT).until(upload_input, "no file input for the 'Add MRI slices' uploader")
    upload_input(browser).send_keys(str(path))
    heading = wait(browser, RESULT_TIMEOUT).until(prediction_heading, "no result card after the upload")
    wait(browser, RESULT_TIMEOUT).until(script_is_idle, "the script run did not finish")
    return heading


def test_predict_opens_at_its_own_address_and_keeps_uploads_across_pages(server_url, browser, tmp_path):
    browser.get(server_url + "/predict")
    wait(browser, PAGE_TIMEOUT).until(upload_input, "no uploader at /predict")
    assert not page_not_found(browser)
    heading = upload_and_wait(browser, scan_png(tmp_path)).text

    def go_to(title: str):
        def click(driver):
            for link in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stSidebarNav'] a"):
                if link.text.strip().endswith(title):  # after the page's icon
                    link.click()
                    return True
            return False
        wait(browser, PAGE_TIMEOUT).until(click, f"no link to {title} in the sidebar")

    go_to("Evaluation runs")
    wait(browser, PAGE_TIMEOUT).until(lambda d: "/runs" in d.current_url and d.find_elements(
        By.CSS_SELECTOR, "[data-testid='stMain'] [data-testid='stPlotlyChart']"), "the runs page did not open")
    go_to("Predict")
    kept = wait(browser, PAGE_TIMEOUT).until(prediction_heading, "the upload was lost on the way back to Predict")
    assert kept.text == heading and "/predict" in browser.current_url
    assert not exception_texts(browser), exception_texts(browser)


def default_model_knows_familiarity() -> bool:
    from core.checkpoint import read_metadata

    return bool((read_metadata(ROOT / "assets/models/default").get("familiarity") or {}).get("threshold"))


@pytest.mark.skipif(not default_model_knows_familiarity(), reason="the default model has no familiarity threshold")
def test_a_blank_image_gets_the_familiarity_warning_not_an_answer(server_url, browser, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("L", (256, 256), 255).save(blank)
    browser.get(server_url + "/predict")
    heading = upload_and_wait(browser, blank)
    assert heading.text.startswith("Not answered"), heading.text
    wait(browser, RESULT_TIMEOUT).until(alert_saying("Not a brain MRI slice like those the model was trained on?"),
                                        "no familiarity warning for a blank image")


@pytest.mark.skipif(not KAGGLE.is_dir(), reason=f"{KAGGLE} is absent (real MRI data lives in ../shared)")
def test_an_uncertain_scan_gets_the_refer_badge(server_url, browser, tmp_path):
    import pandas as pd

    table = pd.read_csv(ROOT / "assets/runs/brain-tumor-mri-testing/predictions.csv")
    unsure = table[table["confidence"] < 0.9].sort_values("confidence")
    assert len(unsure), "the bundled Testing run has no answer under 90%"
    target = tmp_path / "unsure.png"
    Image.open(KAGGLE / unsure["path"].iloc[0]).save(target, "PNG")
    browser.get(server_url + "/predict")
    heading = upload_and_wait(browser, target)
    assert heading.text.startswith("Uncertain"), heading.text
    badges = [b.text
              for b in browser.find_elements(By.CSS_SELECTOR, "[data-testid='stMain'] [data-testid='stMarkdown']")
              if "Uncertain: refer" in b.text]
    assert badges, "no 'Uncertain: refer' badge"


def test_the_reliability_diagram_counts_images_on_its_own_axis(server_url, browser):
    browser.get(server_url + "/runs")

    def open_tab(driver):
        for tab in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMain'] [role='tab']"):
            if tab.text.strip() == "Calibration":
                tab.click()
                return True
        return False

    wait(browser, PAGE_TIMEOUT).until(open_tab, "no Calibration tab on /runs")

    def count_axis(driver):
        for chart in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stPlotlyChart']"):
            titles = [t.text for t in chart.find_elements(By.CSS_SELECTOR, "text.y2title")]
            if titles and titles[0]:
                return chart
        return False

    chart = wait(browser, RESULT_TIMEOUT).until(count_axis, "no chart with a second y axis after opening the tab")
    assert chart.find_elements(By.CSS_SELECTOR, "text.y2title")[0].text.startswith("images in bin")
    assert chart.find_elements(By.CSS_SELECTOR, "text.ytitle")[0].text.startswith("accuracy")
    ticks = [t.text for t in chart.find_elements(By.CSS_SELECTOR, "g.y2tick text") if t.text]
    assert ticks and all(t.replace(",", "").isdigit() for t in ticks), ticks  # whole counts, never "9."


@pytest.mark.skipif(not KAGGLE.is_dir(), reason=f"{KAGGLE} is absent (real MRI data lives in ../shared)")
def test_a_case_opens_from_a_clicked_thumbnail(server_url, browser):
    browser.get(server_url + "/runs")

    def open_button(driver):
        buttons = [b for b in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMain'] button")
                   if b.text.strip().endswith("Open")]
        return buttons[0] if buttons else False

    button = wait(browser, PAGE_TIMEOUT).until(open_button, "no thumbnail with an Open button on /runs")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()
    wait(browser, RESULT_TIMEOUT).until(loaded_gradcam_image, "clicking the thumbnail opened no case heatmap")
    assert "case=" in browser.current_url  # the address links to the case
    wait(browser, RESULT_TIMEOUT).until(script_is_idle, "the script run did not finish")
    assert not exception_texts(browser), exception_texts(browser)


def test_clearing_a_bad_checkpoint_path_returns_to_the_default_model(server_url, browser):
    from selenium.webdriver.common.keys import Keys

    browser.get(server_url + "/predict")
    field = wait(browser, PAGE_TIMEOUT).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "input[aria-label='…or a checkpoint path']"),
        "no checkpoint path box in the sidebar")[0]
    field.send_keys("assets/models/no-such-model" + Keys.ENTER)

    def sidebar_errors(driver):
        return [e.text
                for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stSidebar'] [data-testid='stAlert']")]

    wait(browser, RESULT_TIMEOUT).until(lambda d: sidebar_errors(d), "no error in the sidebar for a bad path")
    wait(browser, RESULT_TIMEOUT).until(script_is_idle, "the script run did not finish")
    main_errors = [e.text
                   for e in browser.find_elements(By.CSS_SELECTOR, "[data-testid='stMain'] [data-testid='stAlert']")]
    assert len(sidebar_errors(browser)) == 1 and not any("no-such-model" in e for e in main_errors)  # said once
    field = browser.find_elements(By.CSS_SELECTOR, "input[aria-label='…or a checkpoint path']")[0]
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(Keys.ENTER)
    wait(browser, RESULT_TIMEOUT).until(lambda d: not sidebar_errors(d) and upload_input(d),
                                        "clearing the path did not bring the default model back")
    captions = " ".join(c.text for c in browser.find_elements(
        By.CSS_SELECTOR, "[data-testid='stSidebar'] [data-testid='stCaptionContainer']"))
    assert "Learned from" in captions


def image_captions(driver) -> list[str]:
    return [c.text for c in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stImageCaption']")]


def test_a_dicom_series_and_a_nifti_volume_are_uploaded_scrolled_and_explained(server_url, browser, tmp_path):
    """Three DICOM files of one series (no extension, as scanners write them) and a .nii.gz volume, uploaded
    together: each opens at its middle slice with a slider, moving the slider moves the explained slice, and no
    identifying value from the files appears on the page."""
    from selenium.webdriver.common.keys import Keys

    from test_volumes import SECRETS, dicom_bytes, nifti_bytes

    brain = np.kron(synthetic_slice(0, seed=4, size=112), np.ones((2, 2), np.uint8)).astype(np.int16)
    paths = []
    for k in range(3):
        path = tmp_path / f"IM{k:04d}"
        path.write_bytes(dicom_bytes(brain + 7 * k, position=float(k), instance=k + 1))
        paths.append(path)
    nifti = tmp_path / "brain.nii.gz"
    nifti.write_bytes(nifti_bytes(np.repeat(brain.T[:, ::-1, None], 5, axis=2).astype(np.float32), np.eye(4),
                                  gz=True))
    browser.get(server_url + "/predict")
    wait(browser, PAGE_TIMEOUT).until(upload_input, "no uploader at /predict")
    upload_input(browser).send_keys("\n".join(str(p) for p in [*paths, nifti]))
    wait(browser, RESULT_TIMEOUT).until(lambda d: script_is_idle(d) and any(
        "slice 2 of 3" in c for c in image_captions(d)) and any("slice 3 of 5" in c for c in image_captions(d)),
        "the series and the volume were not shown at their middle slices")
    assert len([h for h in browser.find_elements(By.CSS_SELECTOR, "[data-testid='stMain'] h3") if "%" in h.text]) == 2
    wait(browser, RESULT_TIMEOUT).until(loaded_gradcam_image, "no heatmap for the slices")
    series_slider = next(s for s in browser.find_elements(By.CSS_SELECTOR, "[data-testid='stSlider']")
                         if s.find_elements(By.CSS_SELECTOR, "[data-testid='stWidgetLabel']")
                         and s.find_element(By.CSS_SELECTOR, "[data-testid='stWidgetLabel']").text.strip() == "Slice")
    series_slider.find_element(By.CSS_SELECTOR, "input[type='range']").send_keys(Keys.RIGHT)
    wait(browser, RESULT_TIMEOUT).until(lambda d: script_is_idle(d) and any(
        "slice 3 of 3" in c for c in image_captions(d)), "moving the slider did not move the slice")
    wait(browser, RESULT_TIMEOUT).until(loaded_gradcam_image, "no heatmap for the new slice")
    text = browser.find_element(By.CSS_SELECTOR, "[data-testid='stMain']").text
    assert "Not shown, not kept, not logged: patient's name" in text
    for secret in [*SECRETS.values(), "PRIVATE-SECRET-VALUE"]:
        assert secret not in browser.page_source and secret.replace("^", " ") not in text
    assert not exception_texts(browser), exception_texts(browser)
