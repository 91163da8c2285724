"""CSV files people open in a spreadsheet (core.tables): the audit's --csv and the runs page's download are quoted
and defused as the review exports are, so that a dataset's file name cannot become a formula."""

from __future__ import annotations

import csv
import io
import shutil

import pandas as pd

from hostile import tried

FORMULA = "=cmd|' /C calc'!A0"


def test_a_file_named_like_a_formula_is_quoted_and_defused_in_the_audit_csv(kaggle_layout, tmp_path, capsys):
    from training.audit import main

    root = tmp_path / "data"
    shutil.copytree(kaggle_layout, root)
    source = root / "Training/no_tumor/no_tumor_001.jpg"
    names = {f"{FORMULA}.png": f"notumor/{FORMULA}.png",            # a cell that does not start with =: quoted
             f"x;{FORMULA}.png": f"notumor/x;'{FORMULA}.png"}      # ";" splits it in a European spreadsheet
    for name in names:
        (root / "Testing/notumor" / name).parent.mkdir(parents=True, exist_ok=True)  # the "/" in " /C" is a folder
        shutil.copy(source, root / "Testing/notumor" / name)
        tried("python -m training.audit --csv", f"a dataset file named {name!r}")
    assert main(["--data", str(root), "--no-progress", "--csv", str(tmp_path / "audit.csv")]) == 0
    capsys.readouterr()
    text = (tmp_path / "audit.csv").read_text()
    rows = {row["path"]: row for row in csv.DictReader(io.StringIO(text, newline=""))}
    for name, written in names.items():
        assert f'"{written}"' in text and written in rows, name  # every text cell quoted, each field defused
        assert rows[written]["nearest"] == "no_tumor/no_tumor_001.jpg" and rows[written]["kind"] == "exact"
    assert f";{FORMULA}" not in text  # no field begins with "=" whichever separator the spreadsheet assumes


def test_the_runs_page_per_class_download_and_the_review_exports_share_one_writer(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT
    from core import tables
    from dashboard import organising

    assert organising.csv_bytes is tables.csv_bytes
    original, written = tables.csv_bytes, []

    def recorded(table: pd.DataFrame) -> bytes:
        written.append(table)
        return original(table)

    monkeypatch.setattr(tables, "csv_bytes", recorded)  # the page imports it each time it runs
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300).run()
    at.switch_page("app_pages/runs.py").run()
    assert not at.exception
    assert [b.proto.label for b in at.get("download_button")] == ["Download as CSV"]
    (table,) = written
    assert "class" in table.columns and "support" in table.columns
