"""Review sessions under hostile input: formulas hidden in names and notes of the CSV exports, look-alike and
invisible reader names, identifying file names of uploaded scans, and a review database that is damaged, read-only,
locked or on a full disk. Every input is counted with tried()."""

from __future__ import annotations

import csv
import html
import io

import pytest

from hostile import tried
from test_review_dashboard import button, pick, problems, review_page, texts

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

READERS = ["Ann", "Bill", "Tom", "JOHN", "lan"]
LOOK_ALIKES = {  # each is one of READERS by case and width, or passes for one as written in the page's font
    "ANN": "capitals", "\uff21\uff4e\uff4e": "full-width letters",
    "Bi11": "digit ones for l", "BiII": "capital I for l", "J0HN": "digit zero for a capital O",
    "Ian": "capital I for a small l",
}
MIXED_SCRIPTS = {  # one word of Latin letters with Cyrillic, Greek or Armenian ones that pass for Latin letters
    "\u0410nn": "Cyrillic capital A", "\u0430nn": "Cyrillic small a", "\u0391nn": "Greek capital Alpha",
    "B\u0456ll": "Cyrillic i", "\u0422\u043em": "Tom with a Cyrillic T and o", "T\u03bfm": "Greek omicron",
    "J\u041eHN": "Cyrillic capital O among capitals", "\u0406an": "Cyrillic capital I for a small l",
    "\u0585scar": "Armenian o",
}
# Names that folding case before reading look-alikes, or reading "rn" as "m", used to make one: each pair is two
# people, both of whom an organiser must be able to name.
DIFFERENT = [("Ian", "Lan"), ("Lisa", "Ilsa"), ("Lila", "Ilia"), ("Kern", "Kem"), ("Arne", "Ame")]
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

    session, _, _ = store.create_session(engine, "Names", cases(), CLASSES, readers=READERS)
    for name, what in LOOK_ALIKES.items():
        with pytest.raises(ReviewError, match="looks the same, has already joined"):
            store.join(engine, session.code, name)
        with pytest.raises(ReviewError, match="same name"):
            store.create_session(engine, "Twins", cases(), CLASSES, readers=[*READERS, name])
        tried("library: core.review.store.join", f"reader name: {what}")
    for name, what in MIXED_SCRIPTS.items():
        for attempt in (lambda name=name: store.join(engine, session.code, name),
                        lambda name=name: store.create_session(engine, "Mixed", cases(), CLASSES, readers=[name])):
            with pytest.raises(ReviewError, match="mixes .* letters"):
                attempt()
        tried("library: core.review.store.join", f"reader name: {what}")
    for name, what in INVISIBLE.items():
        for attempt in (lambda name=name: store.join(engine, session.code, name),
                        lambda name=name: store.create_session(engine, "Hidden", cases(), CLASSES, readers=[name])):
            with pytest.raises(ReviewError, match="shows as nothing|no letter or digit") as refused:
                attempt()
            assert name not in str(refused.value)  # said by its code point, never echoed
        tried("library: core.review.store.join", f"reader name: {what}")
    assert [r.name for r in store.session_readers(engine, session.id)] == READERS
    # Names of other scripts, accents and spaces of their own are names.
    for name in ("Анна", "Zoë", "Zoe", "李 华", "Dr\u3000Eve", "ﬁona", "Ivan Иванов", "田中さん"):
        store.join(engine, session.code, name)
    assert [r.name for r in store.session_readers(engine, session.id)][len(READERS):] == [
        "Анна", "Zoë", "Zoe", "李 华", "Dr Eve", "fiona", "Ivan Иванов", "田中さん"]


def test_names_that_differ_as_written_are_two_readers(engine):
    from core.review import store

    named = [name for pair in DIFFERENT for name in pair]
    session, _, keys = store.create_session(engine, "Pairs", cases(), CLASSES, readers=named)
    assert sorted(keys) == sorted(named)
    joined, _, _ = store.create_session(engine, "Joined", cases(), CLASSES)
    for first, second in DIFFERENT:
        store.join(engine, joined.code, first)
        store.join(engine, joined.code, second)
    assert [r.name for r in store.session_readers(engine, joined.id)] == named


PERSIAN = "\u0646\u0627\u0647\u06cc\u062f\u200c\u0647"  # a name spelled with a zero-width non-joiner
JOINED_WRONG = {  # a joiner where no script is spelled with it: nothing to see, so refused
    "Jo\u200chn": "zero-width non-joiner between Latin letters",
    "Jo\u200dhn": "zero-width joiner between Latin letters",
    "\u200c" + PERSIAN[:5]: "zero-width non-joiner before a Persian name",
    PERSIAN[:5] + "\u200c": "zero-width non-joiner after a Persian name",
    PERSIAN[:5] + "\u200cAnn": "zero-width non-joiner between Persian and Latin",
    PERSIAN[:5] + "\u200c\u200c\u0647": "two zero-width non-joiners in a Persian name",
}


def test_a_joiner_is_kept_where_a_script_is_spelled_with_it_and_refused_elsewhere(engine):
    from core.review import ReviewError, store

    devanagari = "\u0915\u094d\u200c\u0937\u093e"  # after a virama: a half form, not a ligature
    session, _, _ = store.create_session(engine, "Joiners", cases(), CLASSES, readers=[PERSIAN, devanagari])
    assert [r.name for r in store.session_readers(engine, session.id)] == [PERSIAN, devanagari]
    with pytest.raises(ReviewError, match="looks the same, has already joined"):  # the joiner alone differs
        store.join(engine, session.code, PERSIAN.replace("\u200c", ""))
    for name, what in JOINED_WRONG.items():
        with pytest.raises(ReviewError, match=r"shows as nothing or breaks the line \(U\+200[CD]\)"):
            store.join(engine, session.code, name)
        tried("library: core.review.store.join", f"reader name: {what}")


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


# --------------------------------------------------------------------------------------------------
# The review database failing


def reader_link(data) -> str:
    """A blinded session of one uploaded scan in the dashboard's own database; returns its reader's key."""
    from core.review import open_database, store
    from core.review.cases import checked_upload, keep_uploads
    from core.review.store import NewCase
    from dashboard.common import database_url
    from test_dashboard import scan_png

    stored, digest, _, blob = checked_upload(scan_png(0, seed=1))
    keep_uploads(data, {stored: blob})
    engine = open_database(database_url())
    case = NewCase(image=stored, image_sha256=digest, title="Case 1 (picture)")
    _, _, keys = store.create_session(engine, "Failing database", [case], CLASSES, readers=["Ann"],
                                      source={"type": "uploads"})
    return keys["Ann"]


def commit(at, note: str = "rim enhancement, left frontal"):
    pick(at, "meningioma", 4)
    at.text_area[0].set_value(note)
    return button(at, "Commit answer").click().run()


def kept_in_the_form(at, note: str = "rim enhancement, left frontal") -> bool:
    from dashboard.reading import confidence_label

    chosen = {b.label for b in at.button if b.proto.type == "primary"}  # the chosen class and confidence stand out
    return {"Meningioma", confidence_label(4)} <= chosen and at.text_area[0].value == note


def saved_answers(key: str) -> list[str]:
    from core.review import open_database, store
    from dashboard.common import database_url

    engine = open_database(database_url())
    return [a.label for a in store.answers_of(engine, store.reader_by_key(engine, key)).values()]


def assert_not_saved_and_kept(at, reason: str) -> None:
    assert not at.exception and errors(at) == [f"Your answer was not saved: {reason} Your class, confidence and "
                                               "note are kept here: commit again."]
    assert kept_in_the_form(at) and "The model says" not in texts(at)


@pytest.mark.parametrize("damage", ["random bytes", "a SQLite header over random bytes", "pages overwritten"])
def test_a_damaged_database_file_gets_a_sentence_on_every_review_page(review_data, damage):
    import os

    from core.review import ReviewError, open_database
    from core.review.schema import close_databases
    from dashboard.common import database_url

    key = reader_link(review_data)
    close_databases()
    path = review_data / "review.sqlite"
    blob = bytearray(path.read_bytes())
    if damage == "random bytes":
        blob = os.urandom(len(blob))
    elif damage == "a SQLite header over random bytes":
        blob = b"SQLite format 3\x00" + os.urandom(len(blob) - 16)
    else:
        blob[4096:] = b"\x5a" * (len(blob) - 4096)
    path.write_bytes(bytes(blob))
    said = ("The review database file is damaged; ask the organiser to restore it from a backup (moving it aside "
            "starts an empty one).")
    with pytest.raises(ReviewError, match="damaged"):
        open_database(database_url())
    for params in ({}, {"reader": key}, {"organiser": "x"}, {"session": "x"}):
        at = review_page(**params)
        tried(f"dashboard: review page {sorted(params) or ['start']}", f"review database: {damage}")
        assert not at.exception and errors(at) == [said], errors(at)


def test_a_read_only_database_shows_the_session_and_keeps_an_answer_it_cannot_save(review_data, monkeypatch):
    from core.review.schema import close_databases

    key = reader_link(review_data)
    close_databases()
    path = review_data / "review.sqlite"
    # Tests run as root, which file modes do not stop: SQLite's read-only mode is what a 0444 file gives others.
    monkeypatch.setenv("BRAIN_MRI_DB", f"sqlite:///file:{path}?mode=ro&uri=true")
    at = review_page(reader=key)
    assert not problems(at) and "Case 1 of 1" in texts(at)  # reading needs no write
    commit(at)
    tried("dashboard: review answer form", "review database: read-only file")
    assert_not_saved_and_kept(at, "The review database is read-only on the server, so nothing can be saved; ask the "
                                  "organiser to have it made writable, then try again.")
    monkeypatch.setenv("BRAIN_MRI_DB", f"sqlite:///{path}")  # writable again: the same click saves it
    button(at, "Commit answer").click().run()
    assert not problems(at) and saved_answers(key) == ["meningioma"]


def test_a_lock_held_by_another_program_keeps_the_answer_to_commit_again(review_data, monkeypatch):
    import sqlite3

    from core.review import schema

    key = reader_link(review_data)
    monkeypatch.setattr(schema, "BUSY_SECONDS", 0.5)  # 15 s on a server
    at = review_page(reader=key)
    holder = sqlite3.connect(review_data / "review.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program's write transaction, left open
    try:
        commit(at)
        tried("dashboard: review answer form", "review database: write lock held by another program")
        assert_not_saved_and_kept(at, "The review database is busy: another program has held its lock for 0.5 "
                                      "seconds; wait a moment and try again (tell the organiser if it goes on).")
    finally:
        holder.rollback()
        holder.close()
    button(at, "Commit answer").click().run()
    assert not problems(at) and saved_answers(key) == ["meningioma"]


def test_a_full_disk_keeps_the_readers_answer_and_leaves_no_part_of_an_upload(review_data, monkeypatch):
    import errno
    import sqlite3

    from sqlalchemy import event

    from core.review import open_database
    from dashboard.common import database_url
    from test_dashboard import scan_png

    key = reader_link(review_data)
    engine = open_database(database_url())  # the page's own engine (one per address and process)
    full = {"disk": True}

    @event.listens_for(engine, "before_cursor_execute")
    def no_space(connection, cursor, statement, *_):
        if full["disk"] and statement.startswith("INSERT INTO review_answers"):
            raise sqlite3.OperationalError("database or disk is full")

    at = review_page(reader=key)
    commit(at)
    tried("dashboard: review answer form", "review database: disk full")
    assert_not_saved_and_kept(at, "The server's disk is full, so nothing can be saved; ask the organiser to have "
                                  "space freed on the server, then try again.")
    full["disk"] = False
    button(at, "Commit answer").click().run()
    assert not problems(at) and saved_answers(key) == ["meningioma"]

    # The organiser's uploads: the disk fills while a scan is written.
    import core.review.cases as cases_module

    finish = cases_module.finish_atomic_write

    def disk_full(tmp, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cases_module, "finish_atomic_write", disk_full)
    start = review_page()
    start.radio(key="review.new.source").set_value("uploads").run()
    start.file_uploader(key="review.new.uploads").set_value(
        [(f"scan{k}.png", scan_png(k, seed=20 + k), "image/png") for k in range(2)]).run()
    start.text_input(key="review.new.name").set_value("Full disk")
    button(start, "Create the session").click().run()
    tried("dashboard: review start page", "data folder: disk full while an upload is written")
    assert not start.exception and errors(start) == [
        "The server's disk is full, so the uploaded scans cannot be kept and the session was not made; ask whoever "
        "runs the server to free some space, then create the session again."]
    assert "organiser" not in start.query_params
    assert not [p.name for p in (review_data / "uploads").iterdir() if p.name.endswith(".part")]
    monkeypatch.setattr(cases_module, "finish_atomic_write", finish)
    button(start, "Create the session").click().run()  # space freed: the same page makes the session
    assert not problems(start) and "organiser" in start.query_params


def test_the_drivers_error_is_logged_and_a_bug_is_not_called_a_failing_database(review_data, caplog):
    """Whenever a page is told the database failed, the driver's own error goes to the server's log with its
    traceback; an operational error no list names is "try again". An error of the code or the request (a statement
    the driver refuses to run) is not the database failing: the part of the page says an unexpected error was
    logged, never "try again", and nothing is saved."""
    import logging
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from core.review import open_database
    from dashboard.common import database_url

    key = reader_link(review_data)
    engine = open_database(database_url())  # the page's own engine (one per address and process)
    failing = {"error": sqlite3.OperationalError("cannot start a transaction within a transaction")}

    @event.listens_for(engine, "before_cursor_execute")
    def fail(connection, cursor, statement, *_):
        if statement.startswith("INSERT INTO review_answers"):
            raise failing["error"]

    caplog.set_level(logging.WARNING)
    at = review_page(reader=key)
    commit(at)
    tried("dashboard: review answer form", "review database: an operational error of no known kind")
    assert_not_saved_and_kept(at, "The review database failed to carry out the request, and nothing was changed; "
                                  "try again, and tell the organiser if it goes on.")
    (logged,) = [r for r in caplog.records if r.name == "core.review.schema"]
    assert logged.levelno == logging.WARNING and isinstance(logged.exc_info[1], OperationalError)
    assert "cannot start a transaction within a transaction" in logged.getMessage() + caplog.text
    caplog.clear()
    failing["error"] = sqlite3.ProgrammingError("Incorrect number of bindings supplied. The current statement uses "
                                                "9, and there are 8 supplied.")
    button(at, "Commit answer").click().run()
    tried("dashboard: review answer form", "review database: a statement the driver refuses (a bug)")
    (said,) = errors(at)
    assert not at.exception and "server's log" in said and "try again" not in said and "not saved" not in said
    assert [type(r.exc_info[1]) for r in caplog.records if r.exc_info] == [ProgrammingError]
    assert saved_answers(key) == []


# --------------------------------------------------------------------------------------------------
# Uploaded files' names

UID_NAME = "1.2.826.0.1.3680043.2.1125.1.99.dcm"
IDENTIFYING = [UID_NAME, "1.2.826.0.1.3680043.2.1125.1.99", "DOE_JOHN_series.zip", "DOE_JOHN", "DOE JOHN",
               "SMITH^ANNA", "SMITH ANNA", "SMITH_ANNA"]


def named_uploads() -> list[tuple[str, bytes, str]]:
    """Scans whose file names identify their patient: a PACS export named by its SOP Instance UID, a zip of a series
    named (with its members) after the patient, a picture named after her, and a refused file named after him."""
    import zipfile

    import numpy as np

    from conftest import synthetic_slice
    from test_dashboard import scan_png
    from test_volumes import dicom_bytes

    pixels = np.kron(synthetic_slice(0, seed=5, size=56), np.ones((2, 2), np.uint8)).astype(np.int16)
    series = io.BytesIO()
    with zipfile.ZipFile(series, "w") as packed:
        for k in range(3):
            packed.writestr(f"DOE_JOHN/DOE_JOHN_{k:03d}.dcm", dicom_bytes(pixels // (k + 1), position=3.0 * k,
                                                                          instance=k + 1))
    return [(UID_NAME, dicom_bytes(pixels), "application/dicom"),
            ("DOE_JOHN_series.zip", series.getvalue(), "application/zip"),
            ("SMITH^ANNA_1970-01-01.png", scan_png(1, seed=6), "image/png"),
            ("DOE_JOHN_refused.png", b"not an image at all", "image/png")]


def leaked(where: str, text: str) -> list[str]:
    return [f"{name} in {where}" for name in IDENTIFYING if name.lower() in text.lower()]


def database_text(path) -> str:
    """Every value of every table of a SQLite file, as text."""
    import sqlite3

    with sqlite3.connect(path) as connection:
        tables = [t for (t,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return " ".join(repr(row) for table in tables for row in connection.execute(f'SELECT * FROM "{table}"'))


def pdf_text(blob: bytes) -> str:
    import pypdf

    return " ".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(blob)).pages)


def test_no_uploaded_file_name_reaches_the_database_the_exports_the_reports_or_the_pages(review_data):
    """Files named by a UID and after patients make a session through the start page, are read by a reader and
    summarised for the organiser: their names are in none of the database's tables, the data folder, the CSV files,
    the PDF reports or the pages after the start page, which shows them to the organiser alone."""
    from core.review import open_database, store
    from core.review.agreement import answers_table, session_summary
    from core.review.reports import case_report
    from dashboard.common import database_url
    from dashboard.organising import csv_bytes, session_report_pdf
    from dashboard.sessions import case_pictures, pil

    at = review_page()
    at.radio(key="review.new.source").set_value("uploads").run()
    at.radio(key="review.new.uploaded.order").set_value("listed").run()
    at.file_uploader(key="review.new.uploads").set_value(named_uploads()).run()
    for name, _, _ in named_uploads():
        tried("dashboard: review start page", f"an upload named {name}")
    assert [html.unescape(w.value).split(":")[0] for w in at.warning] == ["DOE_JOHN_refused.png"]  # to its uploader
    assert not at.checkbox(key="review.new.keep_names").value  # names are not kept unless asked
    at.text_input(key="review.new.name").set_value("Named files")
    at.text_area(key="review.new.readers").set_value("Ann")
    button(at, "Create the session").click().run()
    assert not problems(at), problems(at)
    organiser = at.query_params["organiser"]
    organiser = organiser[0] if isinstance(organiser, list) else organiser
    reader = next(c.value for c in at.code if "reader=" in c.value).split("reader=")[1]

    engine = open_database(database_url())
    session = store.session_for_organiser(engine, organiser)
    cases = store.session_cases(engine, session.id)
    assert [c.title for c in cases] == ["Case 1 (picture)", "Case 2 (DICOM image)",
                                        "Case 3 (DICOM series, slice 2 of 3)"]
    page = review_page(reader=reader)
    shown = []
    for case in cases:  # answered against the model, so that every case is a disagreement
        pick(page, next(c for c in CLASSES if c != case.model_label), 3)
        button(page, "Commit answer").click().run()
        assert not problems(page), problems(page)
        shown.append(texts(page) + " ".join(html.unescape(c) for image in page.image for c in image.captions))
        if case is not cases[-1]:
            button(page, "Next ▶").click().run()
    view = review_page(organiser=organiser)
    assert not problems(view)
    shown.append(texts(view) + " ".join(t.value.to_csv() for t in view.dataframe))

    table = answers_table(cases, store.session_answers(engine, session))
    summary = session_summary(table, session.classes, cases=len(cases))
    exports = {name: csv_bytes(frame).decode() for name, frame in (
        ("answers.csv", table), ("readers.csv", summary["readers"]), ("difficulty.csv", summary["difficulty"]),
        ("disagreements.csv", summary["disagreements"]))}
    assert len(summary["disagreements"]) == len(cases)
    pictures = case_pictures(session, cases[2], with_heatmap=True)
    ann = store.reader_by_key(engine, reader)
    reports = {"session report": session_report_pdf(session, cases, table, summary),
               "case report": case_report(session=session, case=cases[2], scan=pil(pictures.scan),
                                          heatmap=pil(pictures.heatmap), reader="Ann",
                                          answer=store.answers_of(engine, ann)[cases[2].id], revealed=True)}
    found = leaked("the database", database_text(review_data / "review.sqlite"))
    found += leaked("the data folder", " ".join(str(p) for p in review_data.rglob("*")))
    found += [f for name, text in exports.items() for f in leaked(name, text)]
    found += [f for name, blob in reports.items() for f in leaked(name, pdf_text(blob))]
    found += [f for k, text in enumerate(shown) for f in leaked(f"page {k}", text)]
    assert found == []
    assert "Case 3 (DICOM series, slice 2 of 3)" in pdf_text(reports["case report"])


def test_the_organiser_may_title_uploads_or_keep_their_names():
    from core.review.cases import titled_uploads
    from core.review.store import NewCase, Upload

    def upload(name, kind):
        return NewCase(image=f"uploads/{name}", image_sha256="0" * 64, title="Case 0 (x)", upload=Upload(name, kind))

    uploads = [upload("1.2.3.dcm", "DICOM image"), upload("DOE.zip", "DICOM series, slice 2 of 3"),
               upload("a.png", "picture")]
    listed = titled_uploads(uploads, "listed", 0)
    assert [c.title for c in listed] == ["Case 1 (DICOM image)", "Case 2 (DICOM series, slice 2 of 3)",
                                         "Case 3 (picture)"] and all(c.upload is None for c in listed)
    shuffled = titled_uploads(uploads, "shuffled", 1, titles=[None, "  Tumour near the ventricle ", float("nan")])
    assert [c.title for c in shuffled] == [
        {"1.2.3.dcm": f"Case {k} (DICOM image)", "DOE.zip": "Tumour near the ventricle",
         "a.png": f"Case {k} (picture)"}[c.image.split("/")[1]] for k, c in enumerate(shuffled, start=1)]
    kept = titled_uploads(uploads, "listed", 0, titles=["", "Own"], keep_names=True)
    assert [c.title for c in kept] == ["1.2.3.dcm (DICOM image)", "Own", "a.png (picture)"]
    tried("library: core.review.cases.titled_uploads", "an upload named by its SOP Instance UID")
