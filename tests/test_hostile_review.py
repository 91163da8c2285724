"""Review sessions under hostile input: formulas hidden in names and notes of the CSV exports, look-alike and
invisible reader names, identifying file names of uploaded scans, and a review database that is damaged, read-only,
locked or on a full disk. Every input is counted with tried()."""

from __future__ import annotations

import csv
import html
import io

import pytest

from hostile import tried
from test_review_dashboard import button, problems, review_page, texts

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
FORMULA = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture
def engine(tmp_path):
    from core.review import open_database
    from core.review.schema import close_databases

    yield open_database(f"sqlite:///{tmp_path / 'review.sqlite'}")
    close_databases()


@pytest.fixture
def review_data(tmp_path, monkeypatch):
    """The dashboard's data folder, and with it its SQLite database, in tmp_path."""
    from core.review.schema import close_databases

    monkeypatch.setenv("BRAIN_MRI_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("BRAIN_MRI_DB", raising=False)
    yield tmp_path / "data"
    close_databases()


def errors(at) -> list[str]:
    return [html.unescape(e.value) for e in at.error]


def cases(n: int = 3):
    from core.review.store import NewCase

    return [NewCase(image=f"Testing/glioma/{k}.jpg", image_sha256=f"{k:064x}", title=f"Testing/glioma/{k}.jpg",
                    reference="glioma", model_label=CLASSES[k % 4], model_probabilities={c: 0.25 for c in CLASSES})
            for k in range(n)]


# --------------------------------------------------------------------------------------------------
# CSV exports


def number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def formula_fields(blob: bytes) -> list[tuple[str, str]]:
    """Every field that a spreadsheet would read as a formula, under each separator it may assume."""
    found = []
    for delimiter in (",", ";", "\t"):
        for row in csv.reader(io.StringIO(blob.decode(), newline=""), delimiter=delimiter):
            found += [(delimiter, f) for f in row if f.startswith(FORMULA) and not number(f)]
    return found


NAMES = ["x;=cmd|' /C calc'!A0;", "=HYPERLINK(\"http://evil\")", "+SUM(1)", "@SUM(1)", "-2+3", "a,=1+1", "b;+1",
         "c;@x", "d,-1+1"]
NOTES = ["ok\t=cmd|' /C calc'!A0\tend", "\t=x", "line\n=cmd|' /C calc'!A0", "x;\t=y", "a,\t-1", "\n@SUM(1)",
         "plain note"]


def test_no_csv_export_holds_a_formula_under_any_separator(engine):
    """Names and notes that hide a formula after a separator or a line break, through a real session to each CSV
    the organiser downloads, read back with ',' ';' and TAB as separators."""
    from core.review import store
    from core.review.agreement import answers_table, session_summary
    from dashboard.organising import csv_bytes

    session, _, keys = store.create_session(engine, "CSV check", cases(len(NOTES)), CLASSES, readers=NAMES)
    shown = store.session_cases(engine, session.id)
    for name, key in keys.items():
        reader = store.reader_by_key(engine, key)
        for case, note in zip(shown, NOTES):
            store.commit_answer(engine, reader, case.id, "meningioma", 3, note)
            store.change_mind(engine, reader, case.id, "glioma", note)
            tried("dashboard: review CSV export", f"note {note!r}")
        tried("dashboard: review CSV export", f"reader name {name!r}")
    table = answers_table(shown, store.session_answers(engine, session))
    summary = session_summary(table, CLASSES, cases=len(shown))
    exports = [table, summary["readers"], summary["difficulty"], summary["disagreements"],
               summary["ratings"].reset_index()]
    for export in exports:
        blob = csv_bytes(export)
        assert formula_fields(blob) == []
        read = list(csv.reader(io.StringIO(blob.decode(), newline="")))
        assert len(read) == len(export) + 1  # every line break stayed inside its quoted cell
    answers = list(csv.DictReader(io.StringIO(csv_bytes(table).decode(), newline="")))
    # The words are all there, each formula start behind an apostrophe.
    assert {a["reader"] for a in answers} == {"x;'=cmd|' /C calc'!A0;", "'=HYPERLINK(\"http://evil\")", "'+SUM(1)",
                                              "'@SUM(1)", "'-2+3", "a,'=1+1", "b;'+1", "c;'@x", "d,'-1+1"}
    assert "ok\t'=cmd|' /C calc'!A0\tend" in {a["note"] for a in answers}
    assert "x;'\t'=y" in {a["note"] for a in answers}


def test_a_csv_quotes_text_and_leaves_numbers_as_numbers():
    import pandas as pd

    from dashboard.organising import csv_bytes

    blob = csv_bytes(pd.DataFrame({"reader": ["Ann"], "kappa": [-0.25], "answered": [3]}))
    assert blob.decode().splitlines() == ['"reader","kappa","answered"', '"Ann",-0.25,3']


# --------------------------------------------------------------------------------------------------
# Readers' names

LOOK_ALIKES = {  # each passes for "Ann" (or "Bill", "Tom") in the page's font
    "\u0410nn": "Cyrillic capital A", "\u0391nn": "Greek capital Alpha", "\u0430nn": "Cyrillic small a",
    "ANN": "capitals", "\uff21\uff4e\uff4e": "full-width letters",
    "B\u0456ll": "Cyrillic i", "Bi11": "digit ones for l", "BiII": "capital I for l",
    "\u0422\u041e\u041c": "Tom in Cyrillic capitals",
    "T\u03bfm": "Greek omicron",
}
INVISIBLE = {
    "\u3164": "Hangul filler alone", "Ann\u3164": "Hangul filler after a name", "\u115f": "Hangul choseong filler",
    "\uffa0": "half-width Hangul filler", "Ann\u200b": "zero-width space", "A\u200dnn": "zero-width joiner",
    "Ann\u2060": "word joiner", "\u202eAnn": "right-to-left override", "Ann\u00ad": "soft hyphen",
    "Ann\ufe0f": "variation selector", "Ann\U000e0041": "tag character", "Ann\ue000": "private use",
    "Ann\u2028": "line separator", "Dr\nAnn": "line break", "Ann\x00": "NUL", "\u2800": "braille blank",
    "Ann\u034f": "combining grapheme joiner", "\u0301": "a lone accent", "...": "no letter",
}


def test_look_alike_and_invisible_names_are_refused_beside_the_real_one(engine):
    from core.review import ReviewError, store

    session, _, _ = store.create_session(engine, "Names", cases(), CLASSES, readers=["Ann", "Bill", "Tom"])
    for name, what in LOOK_ALIKES.items():
        with pytest.raises(ReviewError, match="looks the same, has already joined"):
            store.join(engine, session.code, name)
        with pytest.raises(ReviewError, match="same name"):
            store.create_session(engine, "Twins", cases(), CLASSES, readers=["Ann", "Bill", "Tom", name])
        tried("library: core.review.store.join", f"reader name: {what}")
    for name, what in INVISIBLE.items():
        for attempt in (lambda: store.join(engine, session.code, name),
                        lambda: store.create_session(engine, "Hidden", cases(), CLASSES, readers=[name])):
            with pytest.raises(ReviewError, match="shows as nothing|no letter or digit") as refused:
                attempt()
            assert name not in str(refused.value)  # said by its code point, never echoed
        tried("library: core.review.store.join", f"reader name: {what}")
    assert [r.name for r in store.session_readers(engine, session.id)] == ["Ann", "Bill", "Tom"]
    # Names of other scripts, accents and spaces of their own are names.
    for name in ("Анна", "Zoë", "Zoe", "李 华", "Dr\u3000Eve", "ﬁona"):
        store.join(engine, session.code, name)
    assert [r.name for r in store.session_readers(engine, session.id)][3:] == ["Анна", "Zoë", "Zoe", "李 华",
                                                                               "Dr Eve", "fiona"]


def test_a_hidden_name_gets_a_sentence_on_the_join_page(review_data):
    from core.review import open_database, store
    from dashboard.common import database_url

    engine = open_database(database_url())
    session, _, _ = store.create_session(engine, "Open", cases(), CLASSES, readers=["Ann"])
    at = review_page(session=session.code)
    at.text_input[0].set_value("Ann\u3164")
    next(b for b in at.button if b.label == "Join").click().run()
    tried("dashboard: review join page", "reader name: Hangul filler after a name")
    assert not at.exception and errors(at) == [
        "The reader's name holds a character that shows as nothing or breaks the line (U+3164); type the name "
        "again without it."]
    assert "reader" not in at.query_params
