"""Tables that people open in a spreadsheet: the review exports, the runs page's downloads, the audit's CSV.

Text in them comes from outside (a reader's name, a note, a dataset's file names, a run's class names), and a
spreadsheet takes a cell that begins with ``=`` for a formula. Files that the project reads back itself (a run's
predictions.csv) are written plainly instead, since the defusing below changes the text.
"""

from __future__ import annotations

import csv
import re

import pandas as pd

# Where a spreadsheet could start a formula inside a text cell: at its start, or after any character that one of
# the separators a spreadsheet may assume (comma, semicolon, tab) or a line break would split the cell at.
FORMULA_START = re.compile(r"(?<![^,;\t\r\n])(?=[=+\-@\t\r])")


def csv_bytes(table: pd.DataFrame) -> bytes:
    """A table as CSV that a spreadsheet opens as text whichever separator it assumes (Excel takes ";" in several
    European locales, and a tab when pasted): every text cell is quoted, and an apostrophe goes before each =, +, -,
    @, tab or carriage return that would begin a field, at the start of a cell or after a comma, semicolon, tab or
    line break inside it (a reader called "x;=cmd|..." would otherwise be a formula)."""
    def safe(value):
        return FORMULA_START.sub("'", value) if isinstance(value, str) else value

    return table.map(safe).to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC).encode()
