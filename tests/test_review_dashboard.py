"""The review pages, driven headless with Streamlit's AppTest: a session started from the page, read blinded by two
readers, and summarised for the organiser; with a SQLite database in tmp_path."""

from __future__ import annotations

import html

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT, needs_shared
from core.review.store import RATINGS
from test_dashboard import scan_png

APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture(autouse=True)
def review_data(tmp_path, monkeypatch):
    """Each test gets its own data folder, and with it its own SQLite database."""
    monkeypatch.setenv("BRAIN_MRI_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("BRAIN_MRI_DB", raising=False)
    yield tmp_path / "data"
    from core.review.schema import close_databases

    close_databases()


def review_page(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for name, value in params.items():
        at.query_params[name] = value
    at.run()
    return at.switch_page("app_pages/review.py").run()


def problems(at) -> list[str]:
    return [e.value for e in at.exception] + [e.value for e in at.error]


def texts(at) -> str:
    parts = ([m.value for m in at.markdown] + [c.value for c in at.caption] + [s.value for s in at.success]
             + [i.value for i in at.info])
    return html.unescape(" ".join(parts))


def revealed(text: str) -> bool:
    """Whether the page shows the model's answer (or says it gives none, for a scan it does not recognise)."""
    return "The model says" in text or "The model **does not answer**" in text


def caption(image) -> str:
    return html.unescape(image.captions[0])


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


def create_session(at, name: str, readers: str, **choices) -> tuple[str, list[str]]:
    """Fill in the start page and create the session; returns the organiser's key and the readers' keys."""
    at.text_input(key="review.new.name").set_value(name)
    at.text_area(key="review.new.readers").set_value(readers)
    for key, value in choices.items():
        widget = next(w for kind in (at.radio, at.selectbox, at.number_input) for w in kind if w.key == key)
        widget.set_value(value)
        at.run()  # a choice can enable the next widget
    assert not problems(at)
    button(at, "Create the session").click().run()
    assert not problems(at), problems(at)
    organiser = at.query_params["organiser"]
    links = [c.value for c in at.code]
    return (organiser[0] if isinstance(organiser, list) else organiser,
            [link.split("reader=")[1] for link in links if "reader=" in link])


def pick(at, chosen: str, confidence: int) -> None:
    """Choose a class and a confidence with the answer form's buttons (each also has its key: 1-4, then 1-5)."""
    from core.data import CLASS_LABELS
    from dashboard.reading import confidence_label

    button(at, CLASS_LABELS[chosen]).click().run()
    button(at, confidence_label(confidence)).click().run()


def read_every_case(at, answers: list[tuple[str, int]], rating: str = "right", note: str = "note") -> None:
    """Answer the cases in order: blinded until committed, then revealed; rate the heatmap and go on."""
    for number, (chosen, confidence) in enumerate(answers, start=1):
        assert f"Case {number} of {len(answers)}" in texts(at)
        assert not revealed(texts(at)) and not at.get("plotly_chart")  # nothing of the model's yet
        assert len(at.image) == 1 and at.image[0].captions == [f"Case {number}"]  # the scan alone, unnamed
        assert button(at, "Next ▶").disabled  # never ahead of the first unanswered case
        assert not any(b.label.startswith("Prepare the case report") for b in at.button)
        pick(at, chosen, confidence)
        at.text_area[0].set_value(f"{note} {number}")
        button(at, "Commit answer").click().run()
        assert not problems(at), problems(at)
        assert revealed(texts(at)) and len(at.image) == 2  # revealed: the heatmap beside the scan
        rate = [r for r in at.segmented_control if r.label.startswith("Does the heatmap")]  # not of a no-tumour case
        if rate:
            rate[0].set_value(rating).run()
            if number % 2:  # saved with its button; on the other cases, with the move to the next one
                button(at, "Save the rating").click().run()
                assert "Saved." in texts(at)
            else:
                assert "Not saved yet" in texts(at)
        if number < len(answers):
            button(at, "Next case ▶").click().run()
            assert not problems(at), problems(at)
            if rate and not number % 2:
                assert [t.value for t in at.toast] == [f"Heatmap rating saved: {RATINGS[rating]}"]


def test_a_blinded_session_of_uploaded_scans_from_start_to_summary(review_data):
    at = review_page()
    assert at.title[0].value == "Review sessions and quizzes"
    at.radio(key="review.new.source").set_value("uploads").run()
    files = [(f"scan{k}.png", scan_png(label, seed=k), "image/png") for k, label in enumerate([0, 1, 3])]
    at.file_uploader(key="review.new.uploads").set_value(files).run()
    organiser, keys = create_session(at, "Uploads review", "Ann\nBob")
    assert len(keys) == 2
    assert sorted(p.name for p in (review_data / "uploads").iterdir()) == sorted(
        f"{__import__('hashlib').sha256(blob).hexdigest()}.png" for _, blob, _ in files)  # stored once, by hash

    ann = review_page(reader=keys[0])
    read_every_case(ann, [("glioma", 4), ("meningioma", 3), ("pituitary", 5)])
    # Coming back later (a new browser session) goes on where it stopped: here, the reader's summary.
    again = review_page(reader=keys[0])
    assert "You have answered every case" in texts(again)
    bob = review_page(reader=keys[1])
    read_every_case(bob, [("glioma", 2)] * 3, rating="wrong", note="Bob's private note on case")
    assert not problems(bob)
    ann = review_page(reader=keys[0])
    ann.selectbox(key="review.revisit").set_value(0).run()  # back to case 1, answered by both
    assert "note 1" in texts(ann) and "Bob's private note" not in texts(ann)  # only one's own answers

    view = review_page(organiser=organiser)
    assert not problems(view)
    grid = next(t.value for t in view.dataframe if "reader-1" in t.value.columns)  # the teacher's view
    assert list(grid.columns) == ["case", "title", "reference", "model", "reader-1", "reader-2"]  # labelled by name
    assert list(grid["reader-1"]) == ["Glioma", "Meningioma", "Pituitary tumour"]
    assert list(grid["reader-2"]) == ["Glioma"] * 3
    readers = next(t.value for t in view.dataframe if "κ with model" in t.value.columns)
    assert list(readers["reader"]) == ["Ann", "Bob"] and list(readers["answered"]) == [3, 3]
    assert "Fleiss" in texts(view)
    ratings = next(t.value for t in view.dataframe if "no reference" in t.value.columns)
    assert ratings["no reference"].tolist() == [3, 0, 3]  # right, partly, wrong


@needs_shared()
def test_a_quiz_of_a_run_sample_scores_readers_against_the_reference(review_data):
    at = review_page()
    at.radio(key="review.new.kind").set_value("quiz").run()
    organiser, keys = create_session(at, "Teaching quiz", "Student A", **{
        "review.new.run": str(ROOT / "assets/runs/brain-tumor-mri-testing"), "review.new.selection": "sample",
        "review.new.count": 4, "review.new.seed": 3})
    student = review_page(reader=keys[0])
    from core.review import open_database, store
    from dashboard.common import database_url

    engine = open_database(database_url())
    cases = store.session_cases(engine, store.session_for_organiser(engine, organiser).id)
    references = [c.reference for c in cases]
    assert len(cases) == 4 and all(references)
    # Right on all but the first case.
    wrong_first = ["notumor" if references[0] != "notumor" else "glioma"] + references[1:]
    read_every_case(student, [(r, 3) for r in wrong_first])
    assert [p.proto.text for p in student.get("progress")] == ["4 of 4 cases answered · your score: 3 of 4"]
    done = review_page(reader=keys[0])
    assert any(m.label == "Your accuracy" and m.value.startswith("75.0% (95% CI ") for m in done.metric)
    assert "Cases you missed (1)" in [s.value for s in done.subheader]
    # A quiz hides its answers on the organiser's page until the end: who has answered, not what.
    view = review_page(organiser=organiser)
    grid = next(t.value for t in view.dataframe if "reader-1" in t.value.columns)
    assert list(grid.columns) == ["case", "reader-1"] and list(grid["reader-1"]) == ["✓"] * 4
    assert "The summary shows the answers once the session has ended" in texts(view)
    assert "The export shows the answers once the session has ended" in texts(view)
    assert not [b for b in view.get("download_button")]
    session_id = store.session_for_organiser(engine, organiser).id
    view.toggle(key=f"review.hide.{session_id}").set_value(False).run()
    board = next(t.value for t in view.dataframe if list(t.value.columns) == ["place", "reader", "right", "answered"])
    assert board.values.tolist() == [[1, "Student A", 3, 4]]


def test_a_reader_joins_by_the_link_with_a_name_shown_as_typed():
    from core.review import open_database, store
    from dashboard.common import database_url

    engine = open_database(database_url())
    cases = [store.NewCase(image="uploads/x.png", image_sha256="0" * 64, title="x.png")]
    session, organiser, _ = store.create_session(engine, "Open quiz", cases, ["glioma", "notumor"], kind="quiz")
    at = review_page(session=session.code)
    at.text_input[0].set_value("**Eve** [site](http://example.com)")
    next(b for b in at.button if b.label == "Join").click().run()
    key = at.query_params["reader"]
    key = key[0] if isinstance(key, list) else key
    assert store.reader_by_key(engine, key).name == "**Eve** [site](http://example.com)"
    page = review_page(reader=key)
    shown = " ".join(c.value for c in page.caption)
    assert "**Eve**" not in shown and "**Eve** [site](http" in html.unescape(shown)  # shown as text, not as markup
    again = review_page(session=session.code)
    again.text_input[0].set_value("eve")  # not the same name as "**Eve** …", so it is taken as a new reader
    next(b for b in again.button if b.label == "Join").click().run()
    assert not problems(again)


def test_a_reader_cannot_open_another_session_or_the_organisers_view_with_a_made_up_key():
    at = review_page(reader="not-a-key")
    assert any("not valid" in e.value for e in at.error)
    at = review_page(organiser="not-a-key")
    assert any("not valid" in e.value for e in at.error)
    at = review_page(session="no-such-code")
    assert any("No review session has this code" in e.value for e in at.error)


def test_a_reader_sees_the_review_alone_and_a_reader_server_can_serve_nothing_else(monkeypatch):
    at = review_page(reader="not-a-key")
    assert not at.sidebar.caption and not at.sidebar.selectbox  # no model panel, no page list, no test figures
    at = review_page()
    assert at.sidebar.selectbox  # the organiser's start page keeps the model panel (uploads are answered by it)
    monkeypatch.setenv("BRAIN_MRI_PAGES", "review")
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert at.title[0].value == "Review sessions and quizzes" and not problems(at)


def test_a_pasted_join_link_is_read_for_its_code():
    from dashboard.organising import session_code

    assert session_code(" http://10.0.0.5:8501/review?session=Ab_c-12 ") == "Ab_c-12"
    assert session_code("Ab_c-12") == "Ab_c-12"


def test_references_given_to_uploaded_scans_reach_their_cases():
    import pandas as pd

    from core.review.store import NewCase
    from dashboard.organising import with_references

    cases = [NewCase(image=f"uploads/{k}.png", image_sha256="0" * 64, title=f"{k}.png") for k in range(3)]
    edited = pd.DataFrame({"scan": ["0.png", "1.png", "2.png"], "reference": ["No tumour", None, "Glioma"]})
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    assert [c.reference for c in with_references(cases, edited, classes)] == ["notumor", None, "glioma"]


def test_readers_links_can_point_at_a_server_of_their_own(monkeypatch):
    from dashboard.sessions import page_link

    monkeypatch.setenv("BRAIN_MRI_READER_URL", "http://review.example:8502/")
    assert page_link(reader="k") == "http://review.example:8502/review?reader=k"
    assert page_link(session="c") == "http://review.example:8502/review?session=c"
    assert page_link(organiser="o").endswith("/review?organiser=o") and "review.example" not in page_link(organiser="o")


def test_a_dicom_series_and_a_nifti_volume_are_read_by_scrolling_their_slices(review_data):
    """Uploaded volumes are one case each: the reader scrolls through the slices while blinded, and after the reveal
    the heatmap follows the slice, saying which slice the model answered."""
    import numpy as np

    from conftest import synthetic_slice
    from test_volumes import dicom_bytes, nifti_bytes

    pixels = np.kron(synthetic_slice(0, seed=4, size=56), np.ones((2, 2), np.uint8)).astype(np.int16)
    series = [(f"IM{k:04d}", dicom_bytes(pixels // (k + 1), position=4.0 * k, instance=k + 1), "application/dicom")
              for k in range(3)]
    volume = np.stack([np.kron(synthetic_slice(3, seed=s, size=48), np.ones((2, 2))) for s in range(5)], axis=2)
    nifti = ("brain.nii.gz", nifti_bytes(volume, np.diag([0.9, 0.9, 4.0, 1.0]), gz=True), "application/gzip")
    at = review_page()
    at.radio(key="review.new.source").set_value("uploads").run()
    at.radio(key="review.new.uploaded.order").set_value("listed").run()
    at.file_uploader(key="review.new.uploads").set_value([*series, nifti]).run()
    assert not problems(at), problems(at)
    _, keys = create_session(at, "Volumes", "Ann")
    stored = sorted(p.suffix for p in (review_data / "uploads").iterdir())
    assert stored == [".npz", ".npz", ".png", ".png"]  # each volume: its answered slice and its slices, no file

    ann = review_page(reader=keys[0])
    slider = ann.slider(key=next(s.key for s in ann.slider))
    assert (slider.min, slider.max, slider.value) == (1, 3, 2)  # the series' middle slice to start with
    assert slider.label == "Slice (the case's own slice, which the model answered, is 2)"
    assert caption(ann.image[0]) == "Case 1 · slice 2 of 3 (the case's slice)"
    slider.set_value(3).run()
    assert caption(ann.image[0]) == "Case 1 · slice 3 of 3"
    assert not revealed(texts(ann)) and len(ann.image) == 1 and "IM0000" not in texts(ann)  # still blinded
    pick(ann, "glioma", 4)
    button(ann, "Commit answer").click().run()
    assert not problems(ann), problems(ann)
    assert revealed(texts(ann)) and len(ann.image) == 2
    assert ann.slider(key=slider.key).value == 3  # the reveal leaves the reader where they were
    assert ("slice 3 (the model answered slice 2); colours on one scale across the scan's slices (a slice without "
            "evidence stays cold)") in caption(ann.image[1])
    explained = caption(ann.image[1]).split(" for ", 1)[1].split(";")[0]  # on every slice, the model's answer
    assert f"The model says **{explained}**" in texts(ann) or f"its guess, not an answer: {explained}" in texts(ann)
    ann.slider(key=slider.key).set_value(2).run()
    assert caption(ann.image[1]).endswith(f"for {explained}; slice 2, the case's; colours on one scale across the "
                                          "scan's slices (a slice without evidence stays cold)")
    assert caption(ann.image[0]) == "Case 1 (DICOM series) · slice 2 of 3 (the case's slice)"
    ann.slider(key=slider.key).set_value(1).run()

    button(ann, "Next ▶").click().run()
    nifti_slider = ann.slider(key=next(s.key for s in ann.slider))
    assert (nifti_slider.max, nifti_slider.value) == (5, 3)
    assert caption(ann.image[0]) == "Case 2 · slice 3 of 5 (the case's slice)"
    button(ann, "◀ Previous").click().run()  # back to the series: where the reader left it, not its middle
    assert ann.slider(key=slider.key).value == 1 and caption(ann.image[0]).endswith("· slice 1 of 3")


def test_an_answer_to_a_case_without_a_reference_is_not_marked_right_or_wrong(review_data):
    """The organiser's grid marks an answer ✓ or ✗ only against a reference: a case without one, beside cases with
    one, was marked ✗ (pandas made its missing reference NaN), on the screen a room may be watching."""
    from core.data import CLASSES
    from core.review import open_database, store
    from core.review.store import NewCase
    from dashboard.common import database_url

    engine = open_database(database_url())
    cases = [NewCase(image=f"uploads/{k}.png", image_sha256=f"{k}" * 64, title=f"Case {k + 1} (picture)",
                     reference=reference) for k, reference in enumerate(["glioma", None, "notumor"])]
    session, organiser, keys = store.create_session(engine, "References on some cases", cases, CLASSES,
                                                    readers=["Ann"])
    ann = store.reader_by_key(engine, keys["Ann"])
    for case, answer in zip(store.session_cases(engine, session.id), ["glioma", "notumor", "glioma"]):
        store.commit_answer(engine, ann, case.id, answer, 3)
    view = review_page(organiser=organiser)
    grid = next(t.value for t in view.dataframe if "reader-1" in t.value.columns)
    assert list(grid["reader-1"]) == ["Glioma ✓", "No tumour", "Glioma ✗"]


def test_a_teacher_paced_quiz_on_the_presenter_page_shows_who_answered_until_the_reveal(review_data):
    """The projected page has a key of its own (never the organiser's), shows that a student answered and not what,
    and at the teacher's reveal the class's spread beside the reference; the student's page waits for the teacher,
    and goes with the class when the teacher moves on without revealing the case the student answered. The
    presenter's link is on the organiser's page again after a reload; ending takes a second click."""
    from core.review import open_database, store
    from dashboard.common import database_url

    at = review_page()
    at.radio(key="review.new.kind").set_value("quiz").run()
    at.radio(key="review.new.source").set_value("uploads").run()
    files = [(f"scan{k}.png", scan_png(label, seed=k), "image/png") for k, label in enumerate([0, 3, 1])]
    at.file_uploader(key="review.new.uploads").set_value(files).run()
    at.radio(key="review.new.paced").set_value(True).run()
    organiser, keys = create_session(at, "Paced quiz", "Ann\nBob")
    engine = open_database(database_url())
    session = store.session_for_organiser(engine, organiser)
    assert session.paced and session.answers_hidden
    assert any(session.display_code in c.value for c in at.markdown)  # the join code, and its QR code beside it
    assert any(i.captions == ["The join link as a QR code"] for i in at.image)
    button(at, "Present to the class").click().run()
    link = next(c.value for c in at.code if "present=" in c.value)
    presenter = link.split("present=")[1]
    assert organiser not in link and presenter != organiser
    reloaded = review_page(**at.query_params)  # the page's address, as the browser reloads it
    assert [c.value for c in reloaded.code if "present=" in c.value] == [link]
    assert any(b.label == "Your sessions" for b in reloaded.button)

    ann = review_page(reader=keys[0])
    assert "The quiz has not begun" in texts(ann) and not ann.image  # not begun: nothing to read
    front = review_page(present=presenter)
    assert not problems(front) and not front.sidebar.button  # no model panel on the projector
    button(front, "Begin: show case 1 to the class").click().run()
    assert "Case 1 of 3" in [s.value for s in front.subheader]

    ann = review_page(reader=keys[0])
    assert "Case 1 of 3" in texts(ann)
    pick(ann, "glioma", 4)
    button(ann, "Commit answer").click().run()
    assert not problems(ann) and not revealed(texts(ann)) and "Your answer is in" in texts(ann)
    assert not any(b.label == "Next case ▶" for b in ann.button)  # the class moves on together

    front.run()
    shown = texts(front) + " ".join(m.value for m in front.metric)
    assert "✓ Ann" in shown and "Still reading: Bob" in shown and "Glioma" not in shown  # who, never what
    assert not front.get("plotly_chart")
    button(front, "Reveal the answers").click().run()
    assert "The class's answers** (1)" in texts(front) and front.get("plotly_chart")  # the spread, and the model
    assert "The model: **" in texts(front)
    ann = review_page(reader=keys[0])
    assert revealed(texts(ann))
    bob = review_page(reader=keys[1])
    assert "The teacher opens the next case" in texts(bob)  # case 1 was revealed before Bob answered: closed
    button(front, "Next case ▶").click().run()
    bob = review_page(reader=keys[1])
    assert "Case 2 of 3" in texts(bob)
    pick(bob, "pituitary", 3)
    button(bob, "Commit answer").click().run()
    assert "Your answer is in" in texts(bob)
    button(front, "Next case ▶").click().run()  # on, without revealing case 2
    bob.run()  # Bob's page, as it looks again: with the class on case 3, not waiting on case 2's reveal
    assert "Case 3 of 3" in texts(bob) and "Your answer is in" not in texts(bob)
    assert [t.value for t in bob.toast] == ["The class has moved on to case 3: case 2's answers are shown at the end "
                                            "of the quiz."]
    times = [a["reading_seconds"] for a in store.session_answers(engine, session)]
    assert len(times) == 2 and all(t is not None and 0 <= t < 600 for t in times)
    button(front, "End it").click().run()  # in the "End the quiz" popover
    assert store.session_by_id(engine, session.id).ended_at is not None


def test_an_open_session_shows_the_model_and_its_heatmap_beside_the_form_before_the_answer(review_data):
    """Open mode (everything at once): before committing, the reader sees the scan, the heatmap and the model's
    answer beside the answer form; committing then gives the rating."""
    at = review_page()
    at.radio(key="review.new.source").set_value("uploads").run()
    at.file_uploader(key="review.new.uploads").set_value([("scan.png", scan_png(1, seed=5), "image/png")]).run()
    _, keys = create_session(at, "Open review", "Ann", **{"review.new.mode": "open"})
    ann = review_page(reader=keys[0])
    assert not problems(ann) and len(ann.image) == 2 and "The model " in texts(ann)
    assert any(b.label == "Commit answer" for b in ann.button)
    pick(ann, "meningioma", 4)
    button(ann, "Commit answer").click().run()
    assert not problems(ann) and any(r.label.startswith("Does the heatmap") for r in ann.segmented_control)


def test_the_join_qr_code_reads_back_as_the_join_link():
    """The QR code shown beside the join code, read by OpenCV's QR reader, is the join link itself, with modules
    large enough to read from a projector (12 pixels each)."""
    import cv2
    import numpy as np

    from dashboard.sessions import QR_MODULE_PIXELS, join_qr_png

    for link in ("http://localhost:8501/review?session=ABCD2345",
                 "https://reading.example-hospital.org:8443/review?session=XY7K9MNP"):
        pixels = cv2.imdecode(np.frombuffer(join_qr_png(link), np.uint8), cv2.IMREAD_GRAYSCALE)
        decoded, points, _ = cv2.QRCodeDetector().detectAndDecode(pixels)
        assert decoded == link and points is not None
        assert pixels.shape[0] >= 25 * QR_MODULE_PIXELS  # version 2 or more: at least 25 modules a side


def test_every_summary_csv_uses_the_words_of_the_pages():
    """The reader summary, case difficulty, disagreements and ratings CSVs say "No tumour", "somewhere else" and
    "75.0% (95% CI 30.1–95.4%)", as the summary page and the PDF do, never the class codes."""
    from core.review.agreement import answers_table, session_summary
    from core.tables import csv_bytes
    from dashboard.organising import summary_for_people
    from test_review_reports import TWO, session_parts

    cases, answers = session_parts()
    answers[0]["heatmap_rating"] = "wrong"
    table = answers_table(cases, answers)
    summary = session_summary(table, TWO)
    written = {name: csv_bytes(summary_for_people(summary, name)).decode("utf-8")
               for name in ("readers", "difficulty", "disagreements", "ratings")}
    assert "75.0% (95% CI 30.1–95.4%)" in written["readers"]
    assert "No tumour" in written["difficulty"] and "50.0%" in written["difficulty"]
    assert "No tumour" in written["disagreements"] and "somewhere else" in written["ratings"]
    assert not any("notumor" in text for text in written.values())
