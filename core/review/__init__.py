"""Review sessions and teaching quizzes: the database of sessions, readers and answers (:mod:`core.review.schema`,
:mod:`core.review.store`), which cases a session reads (:mod:`core.review.cases`), what the answers say
(:mod:`core.review.agreement`) and the PDF reports (:mod:`core.review.reports`). No Streamlit here."""

from core.review.errors import ReviewError
from core.review.schema import open_database

__all__ = ["ReviewError", "open_database"]
