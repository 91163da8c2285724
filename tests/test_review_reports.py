"""PDF reports of review sessions (core.review.reports), read back with pypdf and checked against hand-made
sessions."""

from __future__ import annotations

import datetime as dt
import io
import re

import numpy as np
import pypdf
import pytest
from PIL import Image

from core.review.agreement import answers_table, session_summary
from core.review.reports import FOOTER, case_report, session_report
from core.review.store import CONFIDENCES, AnswerView, CaseView, SessionView

TWO = ["glioma", "notumor"]
SHA = "ab" * 32
MARKUP_NOTE = "<b>x</b> & <font size=99>"
WHEN = dt.datetime(2025, 3, 4, 10, 30, tzinfo=dt.UTC)


def pdf_text(blob: bytes) -> tuple[int, str]:
    """The number of pages and all their text, whitespace collapsed to single spaces."""
    reader = pypdf.PdfReader(io.BytesIO(blob))
    text = " ".join(page.extract_text() for page in reader.pages)
    return len(reader.pages), re.sub(r"\s+", " ", text)


def make_session(mode: str = "blinded", name: str = "Friday teaching round") -> SessionView:
    return SessionView(id=1, code="abc", name=name, mode=mode, kind="review", joinable=True, classes=TWO,
                       source={"type": "run", "run_name": "test-run-7"},
                       model={"path": "assets/models/default", "file_sha256": SHA, "run": "test-run-7"},
                       created_at=WHEN)


def scan_image(size=(300, 200)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, size[::-1], dtype=np.uint8), mode="L")


def heatmap_image() -> Image.Image:
    return Image.new("RGBA", (1200, 1200), (255, 0, 0, 128))  # bigger than embedded, and transparent


def one_case() -> CaseView:
    return CaseView(7, 2, "scan-0042.png", "0" * 64, "scan-0042.png", "notumor", "glioma",
                    {"glioma": 0.8765, "notumor": 0.1235})


def an_answer(note: str = "faint rim enhancement") -> AnswerView:
    return AnswerView(case_id=7, label="notumor", confidence=4, note=note, answered_at=WHEN, heatmap_rating="partly",
                      revised_label="glioma", revised_note="the heatmap convinced me")


def test_a_case_report_is_one_page_with_the_case_the_model_and_the_reader():
    blob = case_report(session=make_session(), case=one_case(), scan=scan_image(), heatmap=heatmap_image(),
                       reader="Dr Ann", answer=an_answer(), revealed=True, created=WHEN)
    pages, text = pdf_text(blob)
    assert pages == 1
    for expected in ["Case report", "Friday teaching round", "Case 3: scan-0042.png", "Dr Ann",
                     "faint rim enhancement", SHA, "assets/models/default", "test-run-7", CONFIDENCES[4],
                     "87.6%", "12.3%", "Glioma (87.6%)", "No tumour", "partly on it", "the heatmap convinced me",
                     "2025-03-04 10:30 UTC", FOOTER]:
        assert expected in text, expected
    # Sorted: the likelier class comes first in the probability table.
    assert text.index("87.6%") < text.index("12.3%")
    assert len(blob) < 1_500_000  # the 1200-px heatmap was downscaled


def test_a_blinded_unanswered_case_hides_the_model_and_the_reference():
    blob = case_report(session=make_session(), case=one_case(), scan=scan_image(), heatmap=heatmap_image(),
                       reader="Dr Ann", answer=None, revealed=False, created=WHEN)
    pages, text = pdf_text(blob)
    assert pages == 1
    assert "hidden until the reader commits an answer" in text
    for secret in ["Glioma", "No tumour", "87.6%", "12.3%"]:
        assert secret not in text, secret
    assert "No answer committed yet" in text
    assert len(pypdf.PdfReader(io.BytesIO(blob)).pages[0].images) == 1  # the scan only, no heatmap


def test_markup_in_a_note_comes_out_literally_and_a_long_note_stays_on_one_page():
    blob = case_report(session=make_session(name="A & B <i>"), case=one_case(), scan=scan_image(), heatmap=None,
                       reader="<b>Eve</b>", answer=an_answer(MARKUP_NOTE + " word" * 390), revealed=True)
    pages, text = pdf_text(blob)
    assert pages == 1
    for literal in [MARKUP_NOTE, "A & B <i>", "<b>Eve</b>", "No heatmap for this case"]:
        assert literal in text, literal
    assert "…" in text  # the 1975-character note was shortened


def session_parts() -> tuple[list[CaseView], list[dict]]:
    """Four cases, all with references; the model is right on every one. Ann is right on 3 of 4, Bob on 2 of 4."""
    cases = [CaseView(k, k, f"img{k}.png", "0" * 64, f"img{k}.png", ref, ref, {ref: 0.9})
             for k, ref in enumerate(["glioma", "glioma", "notumor", "notumor"])]
    answers = []
    for reader, labels in [("Ann", ["glioma", "notumor", "notumor", "notumor"]),
                           ("Bob", ["glioma", "notumor", "glioma", "notumor"])]:
        for case, label in zip(cases, labels):
            answers.append({"reader": reader, "case_id": case.id, "label": label, "confidence": 3, "note": "",
                            "heatmap_rating": "right" if case.id == 0 else None, "revised_label": None,
                            "revised_note": None, "answered_at": WHEN})
    return cases, answers


def test_a_session_report_has_each_reader_the_intervals_fleiss_and_the_gallery():
    cases, answers = session_parts()
    table = answers_table(cases, answers)
    summary = session_summary(table, TWO)
    gallery = [(cases[1], scan_image(), heatmap_image(), ["Case 2: img1.png", "Readers: Ann said No tumour"]),
               (cases[2], scan_image((64, 64)), None, ["Case 3: img2.png", f"Bob wrote {MARKUP_NOTE}"])]
    blob = session_report(session=make_session(), cases=cases, table=table, summary=summary, gallery=gallery,
                          created=WHEN)
    pages, text = pdf_text(blob)
    assert pages >= 2
    # Wilson 95% for 3 of 4: centre (0.75 + z²/8) / (1 + z²/4) = 0.6275, half-width 0.3269 -> 0.301 to 0.954.
    assert "75.0% (95% CI 30.1–95.4%)" in text
    # Bob, 2 of 4: centre 0.5, half-width z * sqrt(1/16 + z²/64) / (1 + z²/4) = 0.3500 -> 0.15 to 0.85.
    assert "50.0% (95% CI 15.0–85.0%)" in text
    # The model, 4 of 4: low (1 + z²/8 - z * sqrt(z²/64)) / (1 + z²/4) = 0.510.
    assert "100.0% (95% CI 51.0–100.0%)" in text
    for expected in ["Session report", "Friday teaching round", "Ann", "Bob", SHA, "test-run-7",
                     "Fleiss' kappa across 2 readers, on the 4 cases", "Confusion matrices", "Hardest cases",
                     "Heatmap ratings", "on the tumour", "Disagreement gallery", "Readers: Ann said No tumour",
                     f"Bob wrote {MARKUP_NOTE}", "No heatmap for this case", FOOTER]:
        assert expected in text, expected
    # No header breaks inside a word: each of these words comes out whole.
    for word in ["Answers", "Accuracy", "Confidence", "Changed", "Reference", "Readers", "Wrong"]:
        assert re.search(rf"\b{word}\b", text), word


def test_one_reader_has_no_fleiss_line_and_an_undefined_kappa_reads_n_a():
    cases, answers = session_parts()
    table = answers_table(cases, answers[:1])  # Ann on one case: no kappa can be computed
    blob = session_report(session=make_session(), cases=cases, table=table, summary=session_summary(table, TWO),
                          gallery=[])
    _, text = pdf_text(blob)
    assert "Fleiss" not in text
    assert "n/a" in text
    assert "Disagreement gallery" in text and "No case to show" in text


def test_an_empty_session_still_gives_a_valid_report():
    cases, _ = session_parts()
    table = answers_table(cases, [])
    blob = session_report(session=make_session(mode="open"), cases=cases, table=table,
                          summary=session_summary(table, TWO), gallery=[])
    pages, text = pdf_text(blob)
    assert pages >= 1
    assert "No reader has committed an answer yet" in text
    assert "Friday teaching round" in text and "Disagreement gallery" in text


def test_names_and_notes_in_other_scripts_keep_their_letters_where_a_unicode_font_is_installed():
    from core.review import reports

    if reports.FONT == "Helvetica":
        pytest.skip("no DejaVu Sans on this machine (Debian: fonts-dejavu-core); the reports fall back to Latin-1")
    greek, cyrillic = "Αθηνά Παπαδοπούλου", "Пётр Ильич"
    cases, answers = session_parts()
    for row in answers:
        row["reader"] = greek if row["reader"] == "Ann" else cyrillic
    table = answers_table(cases, answers)
    blob = reports.session_report(session=make_session(), cases=cases, table=table,
                                  summary=session_summary(table, TWO), gallery=[], created=WHEN)
    _, text = pdf_text(blob)
    assert greek in text and cyrillic in text


def test_a_quiz_report_has_its_leaderboard():
    import dataclasses

    cases, answers = session_parts()
    table = answers_table(cases, answers)
    quiz = dataclasses.replace(make_session(), kind="quiz")
    _, text = pdf_text(session_report(session=quiz, cases=cases, table=table, summary=session_summary(table, TWO),
                                      gallery=[], created=WHEN, leaderboard=[("Ann", 3, 4), ("Bob", 2, 4)]))
    # Ann is right on 3 of 4, Bob on 2 of 4.
    assert "Leaderboard" in text and re.search(r"1\s+Ann\s+3\s+4", text) and re.search(r"2\s+Bob\s+2\s+4", text)
    _, review_text = pdf_text(session_report(session=make_session(), cases=cases, table=table,
                                             summary=session_summary(table, TWO), gallery=[], created=WHEN))
    assert "Leaderboard" not in review_text


def test_a_case_report_says_when_the_model_did_not_answer_or_was_unsure():
    import dataclasses

    for flags, said in [({"unfamiliar": True, "uncertain": False},
                         "no answer: unlike its training scans (its guess: Glioma, 87.6%)"),
                        ({"unfamiliar": False, "uncertain": True}, "Glioma (87.6%): uncertain, refer"),
                        ({"unfamiliar": False, "uncertain": False}, "Glioma (87.6%) Reference")]:
        case = dataclasses.replace(one_case(), model_flags=flags)
        _, text = pdf_text(case_report(session=make_session(), case=case, scan=scan_image(), heatmap=None,
                                       reader="Dr Ann", answer=an_answer(), revealed=True, created=WHEN))
        assert f"Model's answer {said}" in text, text


def test_a_session_report_keeps_notes_changes_of_mind_reading_times_and_says_what_the_overlays_are():
    """What the CSV had and the PDF left out: each note and change of mind (with why), the median reading time per
    reader, and a legend for the gallery's overlays naming the heatmap method; the words as on the pages."""
    cases, answers = session_parts()
    answers[0].update(note="ring enhancement, left frontal", reading_seconds=12.0)
    answers[1].update(revised_label="glioma", revised_note="looked again at the rim", reading_seconds=30.0)
    answers[4].update(reading_seconds=150.0)
    table = answers_table(cases, answers)
    gallery = [(cases[1], scan_image(), heatmap_image(), ["Case 2: img1.png"])]
    _, text = pdf_text(session_report(session=make_session(), cases=cases, table=table,
                                      summary=session_summary(table, TWO), gallery=gallery, created=WHEN,
                                      heatmap_method="Grad-CAM at layer4"))
    flat = " ".join(text.split())
    for expected in ["Notes and changes of mind", "ring enhancement, left frontal", "looked again at the rim",
                     "Reading time (median)", "21 s", "2 min 30 s", "Grad-CAM at layer4",
                     "a white box is the tumour box of the data", "cyan line the tumour outline"]:
        assert expected in flat, expected
    assert "notumor" not in flat  # class names as the pages write them
