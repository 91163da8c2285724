"""A two-reader review session in a real browser (headless Chromium, Selenium), with the server killed mid-way
(SIGKILL) and started again: every answer a reader saw committed is still there, and each reader goes on where
they stopped. The screenshots it takes (test-artifacts/browser/review-*.png; with BRAIN_MRI_UPDATE_DOCS=1 also
docs/, the README's pictures of the workflow) show synthetic scans only.

Needs Debian's chromium and chromium-driver, like tests/test_browser.py; skips with the reason otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, synthetic_slice
from test_browser import (
    ARTIFACTS,
    CHROMEDRIVER,
    CHROMIUM,
    PAGE_TIMEOUT,
    SERVER_START_TIMEOUT,
    exception_texts,
    free_loopback_port,
    health_is_ok,
    script_is_idle,
    stop_process_group,
    tail,
    wait,
)

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium chromium-driver)"),
    pytest.mark.skipif(CHROMEDRIVER is None, reason="chromedriver is not installed (apt-get install chromium-driver)"),
]

from selenium import webdriver  # noqa: E402 - after the skip marks, as in test_browser.py
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

DOCS = ROOT / "docs"
UPDATE_DOCS = os.environ.get("BRAIN_MRI_UPDATE_DOCS") == "1"  # copy the screenshots into docs/ for the README
CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
LABELS = {"glioma": "Glioma", "meningioma": "Meningioma", "notumor": "No tumour", "pituitary": "Pituitary tumour"}


class Server:
    """``streamlit run dashboard/app.py`` on one loopback port with one data folder, which can be killed outright
    and started again on the same port."""

    def __init__(self, data: Path):
        self.data, self.port = data, free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = ARTIFACTS / "review-server.log"

    def start(self) -> None:
        command = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(self.port),
                   "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
                   "--browser.gatherUsageStats", "false"]
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, "BRAIN_MRI_DATA": str(self.data)})
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not health_is_ok(f"{self.url}/_stcore/health"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the review server did not start; log {self.log}:\n{tail(self.log)}")
            time.sleep(0.3)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)


def make_session(data: Path, name: str = "Thursday neuro-oncology review", readers=("Dr Ada", "Dr Ben"),
                 **options) -> tuple[str, dict[str, str], list]:
    """A blinded session of four synthetic scans with references, answered by the default model, in the server's
    database; returns the organiser's key, the readers' keys and the cases. ``options`` go to create_session (a
    quiz, teacher-paced)."""
    from core import load_classifier
    from core.review import open_database, store
    from core.review.cases import cases_from_uploads, keep_uploads

    blobs = []
    for k, label in enumerate([0, 1, 3, 2]):
        pixels = np.kron(synthetic_slice(label, seed=40 + k, size=112), np.ones((2, 2), np.uint8))
        path = data / f"scan{k}-{abs(hash(name)) % 1000}.png"
        Image.fromarray(pixels, "L").save(path)
        blobs.append((f"scan{k}.png", path.read_bytes()))
    model = ROOT / "assets/models/default/model.safetensors"
    cases, kept, problems = cases_from_uploads(load_classifier(model), blobs)
    assert not problems
    keep_uploads(data, kept)
    cases = [dataclasses.replace(c, reference=CLASSES[label]) for c, label in zip(cases, [0, 1, 3, 2])]
    from core.weights import sha256_of_file

    engine = open_database(f"sqlite:///{data / 'review.sqlite'}")
    session, owner, keys = store.create_session(
        engine, name, cases, CLASSES, readers=list(readers), source={"type": "uploads", "files": 4},
        model={"path": "assets/models/default/model.safetensors", "file_sha256": sha256_of_file(model)}, **options)
    return owner, keys, store.session_cases(engine, session.id)


def open_browser(downloads: Path | None = None, size: str = "1400,1200"):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={size}",
                     "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(argument)
    if downloads is not None:
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                                  "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    if downloads is not None:
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


def page_text(driver) -> str:
    mains = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMain']")
    return mains[0].text if mains else ""


def settled(driver, saying: str, seconds: float = PAGE_TIMEOUT) -> None:
    """Wait until the script is idle and the page holds ``saying``; fail with what it shows otherwise."""
    try:
        wait(driver, seconds).until(lambda d: script_is_idle(d) and saying in page_text(d))
    except Exception:
        pytest.fail(f"the page never said {saying!r}; it shows:\n{page_text(driver)[:1500]}\n"
                    f"exceptions: {exception_texts(driver)}")


def choose(driver, group: str, option: str) -> None:
    """Click one option of the radio group or button group (segmented control) whose label starts with ``group``,
    once the page shows it (a loaded machine can draw the case's heading a moment before its form)."""
    def found(d):
        for widget in d.find_elements(By.CSS_SELECTOR, "[data-testid='stRadio'], [data-testid='stButtonGroup']"):
            labels = widget.find_elements(By.CSS_SELECTOR, "[data-testid='stWidgetLabel']")
            if labels and labels[0].text.strip().startswith(group):
                return next((c for c in widget.find_elements(By.CSS_SELECTOR, "label, button")
                             if c.text.strip() == option), None)
        return None

    try:
        choice = wait(driver, PAGE_TIMEOUT).until(found)
    except Exception:
        pytest.fail(f"no option {option!r} in a radio group {group!r}; the page shows:\n{page_text(driver)[:1500]}")
    choice.click()


def click(driver, text: str) -> None:
    """Click the button saying ``text``, finding it again if a re-run of the script replaces it meanwhile (the wait
    ignores stale references and tries again)."""
    def clicked(d):
        for button in d.find_elements(By.TAG_NAME, "button"):
            if text in button.text.strip().split("\n"):  # beside an icon's name, above a keyboard shortcut
                button.click()
                return True
        return False

    try:
        wait(driver, PAGE_TIMEOUT).until(clicked)
    except Exception:
        pytest.fail(f"no button {text!r} could be clicked; the page shows:\n{page_text(driver)[:1500]}")


def answer(driver, number: int, total: int, label: str, confidence: str) -> None:
    settled(driver, f"Case {number} of {total}")
    assert "The model " not in page_text(driver)  # blinded until committed
    click(driver, label)
    click(driver, confidence)
    click(driver, "Commit answer")
    settled(driver, "The model ")


def press(driver, key: str, then: str) -> None:
    """Press one key on the page (nothing focused but the page itself), and wait until the page says ``then``."""
    from selenium.webdriver.common.action_chains import ActionChains

    wait(driver, PAGE_TIMEOUT).until(script_is_idle)
    ActionChains(driver).send_keys(key).perform()
    settled(driver, then)


def answer_by_keys(driver, number: int, total: int, label: str, confidence: int) -> None:
    """A case read with the keyboard alone: the class's number, the confidence's, Enter; N for the next case."""
    from selenium.webdriver.common.keys import Keys

    settled(driver, f"Case {number} of {total}")
    assert "The model " not in page_text(driver)
    press(driver, str(CLASSES.index(next(c for c, name in LABELS.items() if name == label)) + 1),
          "1–5 pick the confidence")
    press(driver, str(confidence), "Commit answer")
    press(driver, Keys.ENTER, "The model ")
    assert f"Your answer: {label}" in page_text(driver)


def go_on(driver) -> None:
    click(driver, "Next ▶")
    wait(driver, PAGE_TIMEOUT).until(lambda d: script_is_idle(d) and "Commit answer" in page_text(d))


def picture(driver, name: str) -> None:
    """A screenshot in test-artifacts/browser/, and in docs/ (the README's) with BRAIN_MRI_UPDATE_DOCS=1."""
    driver.save_screenshot(str(ARTIFACTS / name))
    if UPDATE_DOCS:
        (DOCS / name).write_bytes((ARTIFACTS / name).read_bytes())


def test_two_readers_a_killed_server_and_every_committed_answer_kept(tmp_path):
    from core.review import open_database, store
    from core.review.schema import close_databases

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "data"
    data.mkdir()
    organiser, keys, cases = make_session(data)
    server = Server(data)
    ada, ben = open_browser(), open_browser()
    try:
        server.start()
        ada.get(f"{server.url}/review?reader={keys['Dr Ada']}")
        ben.get(f"{server.url}/review?reader={keys['Dr Ben']}")
        answer(ada, 1, 4, "Glioma", "sure")
        answer_by_keys(ben, 1, 4, "Meningioma", 2)  # Dr Ben reads with the keyboard alone
        choose(ada, "Does the heatmap point at the right place?", "on the tumour")
        click(ada, "Save the rating")
        wait(ada, 30).until(lambda d: script_is_idle(d) and "Heatmap rating saved" in d.page_source)
        picture(ada, "review-reveal.png")
        go_on(ada)
        answer(ada, 2, 4, "Meningioma", "fairly sure")
        go_on(ada)
        click(ada, "Pituitary tumour")  # chosen, not committed, when the server dies

        server.kill()
        server.start()
        close_databases()
        engine = open_database(f"sqlite:///{data / 'review.sqlite'}")
        kept = {name: store.answers_of(engine, store.reader_by_key(engine, key)) for name, key in keys.items()}
        by_position = {c.id: c.position for c in cases}
        assert sorted((by_position[i], a.label) for i, a in kept["Dr Ada"].items()) == [(0, "glioma"),
                                                                                        (1, "meningioma")]
        assert [(by_position[i], a.label, a.confidence) for i, a in kept["Dr Ben"].items()] == [(0, "meningioma", 2)]
        assert kept["Dr Ada"][cases[0].id].heatmap_rating == "right"

        # Each reader, back on their own link, goes on exactly where they stopped.
        ada.get(f"{server.url}/review?reader={keys['Dr Ada']}")
        ben.get(f"{server.url}/review?reader={keys['Dr Ben']}")
        answer(ada, 3, 4, "Pituitary tumour", "certain")
        answer_by_keys(ben, 2, 4, "Meningioma", 4)
        press(ben, "n", "Case 3 of 4")
        answer_by_keys(ben, 3, 4, "Pituitary tumour", 5)
        picture(ben, "review-keyboard.png")
        assert not exception_texts(ada) and not exception_texts(ben)

        viewer = ada
        viewer.get(f"{server.url}/review?organiser={organiser}")
        settled(viewer, "Answers as they come")
        wait(viewer, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-testid='stDataFrame']")) >= 2)
        time.sleep(1)  # the tables draw on a canvas a moment after they are placed
        picture(viewer, "review-organiser.png")
        assert not exception_texts(viewer)
        assert len(store.answers_of(engine, store.reader_by_key(engine, keys["Dr Ada"]))) == 3
        assert len(store.answers_of(engine, store.reader_by_key(engine, keys["Dr Ben"]))) == 3
    finally:
        close_all(server, {"review-ada": ada, "review-ben": ben})


def close_all(server: Server, drivers: dict) -> None:
    """The end of a browser test, however it went: each window's last screenshot (``name.png`` in the artifacts),
    every window closed, the server stopped and the test's database connections closed."""
    from core.review.schema import close_databases

    for name, driver in drivers.items():
        try:
            driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
        finally:
            driver.quit()
    server.stop()
    close_databases()


def click_matching(driver, selector: str, matches) -> None:
    """Click the first element of ``selector`` whose text ``matches``, once the page shows one."""
    def clicked(d):
        for element in d.find_elements(By.CSS_SELECTOR, selector):
            if matches(element.text):
                element.click()
                return True
        return False

    wait(driver, PAGE_TIMEOUT).until(clicked)


def open_tab(driver, name: str) -> None:
    click_matching(driver, "[data-testid='stTab']", lambda text: text.strip() == name)


def expand(driver, heading: str) -> None:
    click_matching(driver, "[data-testid='stExpander'] summary", lambda text: heading in text)


def downloaded(folder: Path, seconds: float = 30) -> Path:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if not p.name.endswith(".crdownload")]
        if done:
            return done[0]
        time.sleep(0.3)
    pytest.fail(f"nothing was downloaded into {folder}")


def test_the_organisers_views_fill_in_live_a_projected_quiz_shows_who_not_what_and_the_qr_code_reads(tmp_path):
    """In Chromium: the organiser's Summary and CSV fill in while a reader answers in another window, with no reload;
    a rating chosen and not saved is kept when the reader moves on; the join QR code on the screen reads back as the
    join link; in a teacher-paced quiz the projected page shows a student's answer only as answered until the
    teacher's reveal, and the student's page follows the reveal by itself."""
    import cv2

    from core.review import open_database, store
    from core.review.schema import close_databases

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    data, downloads = tmp_path / "data", tmp_path / "downloads"
    data.mkdir()
    downloads.mkdir()
    organiser, keys, cases = make_session(data)
    quiz_organiser, students, _ = make_session(data, "Friday quiz", readers=("Ann", "Bo"), kind="quiz", paced=True)
    server = Server(data)
    teacher, ada, front = open_browser(downloads), open_browser(), open_browser(size="1280,800")
    try:
        server.start()
        teacher.get(f"{server.url}/review?organiser={organiser}")
        settled(teacher, "Answers as they come")
        open_tab(teacher, "Summary")
        settled(teacher, "No answers yet: the summary fills in")

        ada.get(f"{server.url}/review?reader={keys['Dr Ada']}")
        answer(ada, 1, 4, "Glioma", "sure")
        settled(teacher, "Readers (accuracy against the reference", seconds=30)  # no reload: the tab re-read it
        settled(teacher, "Where reader and model disagree")
        time.sleep(1)  # the tables draw on a canvas a moment after they are placed
        picture(teacher, "review-summary-live.png")
        open_tab(teacher, "Export and report")
        settled(teacher, "1 answer from 1 reader so far")
        click(teacher, "Every answer (CSV)")
        rows = downloaded(downloads).read_text(encoding="utf-8").strip().splitlines()
        assert len(rows) == 2 and "Dr Ada" in rows[1] and "Glioma" in rows[1] and "4 - sure" in rows[1]

        # A rating chosen and not saved goes with the reader to the next case.
        choose(ada, "Does the heatmap point at the right place?", "somewhere else")
        settled(ada, "Not saved yet")
        click(ada, "Next case ▶")
        settled(ada, "Case 2 of 4")
        wait(ada, 30).until(lambda d: "Heatmap rating saved: somewhere else" in d.page_source)
        close_databases()
        engine = open_database(f"sqlite:///{data / 'review.sqlite'}")
        ada_answers = store.answers_of(engine, store.reader_by_key(engine, keys["Dr Ada"]))
        assert ada_answers[cases[0].id].heatmap_rating == "wrong"

        # The quiz: the join QR code, read off the organiser's screen, is the join link.
        teacher.get(f"{server.url}/review?organiser={quiz_organiser}")
        settled(teacher, "Answers as they come")
        expand(teacher, "Join code")
        quiz = store.session_for_organiser(engine, quiz_organiser)
        link = f"{server.url}/review?session={quiz.code}"
        settled(teacher, link)
        code_image = next(i for i in teacher.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img")
                          if i.size["width"] > 100)
        shot = cv2.imdecode(np.frombuffer(code_image.screenshot_as_png, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert cv2.QRCodeDetector().detectAndDecode(shot)[0] == link
        picture(teacher, "review-join-code.png")
        click(teacher, "Present to the class")
        settled(teacher, "present=")
        presenter = next(e.text for e in teacher.find_elements(By.CSS_SELECTOR, "code") if "present=" in e.text)
        assert quiz_organiser not in presenter

        front.get(presenter.strip())
        settled(front, "Begin: show case 1 to the class")
        click(front, "Begin: show case 1 to the class")
        settled(front, "Case 1 of 4")
        ada.get(f"{server.url}/review?reader={students['Ann']}")
        settled(ada, "Case 1 of 4")
        click(ada, "Meningioma")
        click(ada, "fairly sure")
        click(ada, "Commit answer")
        settled(ada, "Your answer is in")
        assert "The model " not in page_text(ada)  # paced: the reveal waits for the teacher
        settled(front, "✓ Ann", seconds=30)  # the projected page: who has answered...
        shown = page_text(front)
        assert "Still reading: Bo" in shown and "Meningioma" not in shown  # ...and never what
        picture(front, "review-presenter-answered.png")
        click(front, "Reveal the answers")
        settled(front, "The class's answers (1)")
        wait(front, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid='stPlotlyChart'] .main-svg"))
        time.sleep(1)
        picture(front, "review-presenter-reveal.png")
        settled(ada, "The model ", seconds=30)  # the student's page follows the reveal, without a reload
        # A rating the student chose and did not save goes with them when the teacher moves the class on.
        choose(ada, "Does the heatmap point at the right place?", "partly on it")
        click(front, "Next case ▶")
        settled(ada, "Case 2 of 4", seconds=30)
        quiz_cases = store.session_cases(engine, quiz.id)
        ann = next(r for r in store.session_readers(engine, quiz.id) if r.name == "Ann")
        assert store.answers_of(engine, ann)[quiz_cases[0].id].heatmap_rating == "partly"
        for driver in (teacher, ada, front):
            assert not exception_texts(driver)
    finally:
        close_all(server, {"review-live-teacher": teacher, "review-live-student": ada, "review-live-presenter": front})
