"""Review sessions under hostile input: formulas hidden in names and notes of the CSV exports, look-alike and
invisible reader names, identifying file names of uploaded scans, and a review database that is damaged, read-only,
locked or on a full disk. Every input is counted with tried()."""

from __future__ import annotations

import csv
import io

import pytest

from hostile import tried

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
FORMULA = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture
def engine(tmp_path):
    from core.review import open_database
    from core.review.schema import close_databases

    yield open_database(f"sqlite:///{tmp_path / 'review.sqlite'}")
    close_databases()


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
