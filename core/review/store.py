"""Review sessions in the database: creating one, readers joining and coming back, committing answers, and what
each person may see.

Every call is one short transaction, committed before it returns: an answer the page has acknowledged is on disk.
Who may see what is decided here, not in the page: a reader is known only by a personal key (the database keeps its
hash), sees only their own answers, and in a blinded session sees the model's answer and the reference of a case
only after committing their own; the organiser's key opens every reader's answers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, Integer, func, or_, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from core.review.errors import ReviewError
from core.review.names import clean_name, name_key, name_skeleton
from core.review.schema import (
    NAME_LENGTH,
    NOTE_LENGTH,
    PATH_LENGTH,
    Answer,
    Case,
    Organiser,
    Reader,
    ReviewSession,
    unavailable,
    utc_now,
    writing,
)
from core.review.words import RATINGS

MODES = {"blinded": "Blinded: each reader commits an answer before seeing the model's",
         "open": "Open: the model's answer, heatmap and reference are shown with the scan"}
KINDS = {"review": "Review session", "quiz": "Teaching quiz"}
NO_TUMOUR = "notumor"  # a case of this reference has no tumour for a heatmap to point at
CONFIDENCES = {1: "1 - a guess", 2: "2 - unsure", 3: "3 - fairly sure", 4: "4 - sure", 5: "5 - certain"}
MAX_CASES = 2000
MAX_READERS = 200
MAX_READING_SECONDS = 24 * 3600  # a reading time longer than a day is a page left open, not a reading: not kept
# Join codes are read aloud and typed from a projector: capitals and digits without the ones taken for each other
# (0 and O, 1 and I and l), in two groups of four.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8


@dataclass(frozen=True)
class Upload:
    """Where an uploaded scan's case came from, for the organiser's eyes on the start page only: the file's name
    (which can identify the patient: a PACS export is named by the scan's UID) and what the scan is, in neutral words
    ("picture", "DICOM series, slice 11 of 20"). Never stored: create_session keeps the title alone."""

    name: str
    kind: str


@dataclass(frozen=True)
class NewCase:
    """A case as a session is made: the image's reference and hash, and what is known about it."""

    image: str
    image_sha256: str
    title: str
    reference: str | None = None
    model_label: str | None = None
    model_probabilities: dict[str, float] | None = None
    model_flags: dict[str, bool] | None = None   # "unfamiliar": unlike training scans; "uncertain": under refer_below
    stack: str | None = None                     # an uploaded volume's slices (uploads/<sha256>.npz), to scroll
    stack_sha256: str | None = None
    stack_slice: int | None = None               # the slice of the stack that is the case's image (from 0)
    upload: Upload | None = None                 # an uploaded scan's file name and kind, until it is titled


@dataclass(frozen=True)
class SessionView:
    id: int
    code: str
    name: str
    mode: str
    kind: str
    joinable: bool
    classes: list[str]
    source: dict
    model: dict
    created_at: dt.datetime
    paced: bool = False                      # the teacher moves the class case by case (presenter mode)
    current_position: int | None = None      # paced: the case the class is on, from 0 (None: not begun)
    hide_answers: bool = False               # the organiser's views show who answered, not what, until the end
    ended_at: dt.datetime | None = None      # ended by the organiser: everything is shown from then
    has_presenter: bool = False              # a presenter link has been made

    @property
    def blinded(self) -> bool:
        return self.mode == "blinded"

    @property
    def answers_hidden(self) -> bool:
        """Whether the organiser's views (live grid, summary, exports) show only who has answered."""
        return self.hide_answers and self.ended_at is None

    @property
    def display_code(self) -> str:
        """The join code as people read it: two groups of four (codes of older sessions as they were)."""
        return (f"{self.code[:4]}-{self.code[4:]}" if len(self.code) == CODE_LENGTH
                and all(ch in CODE_ALPHABET for ch in self.code) else self.code)


@dataclass(frozen=True)
class CaseView:
    id: int
    position: int
    image: str
    image_sha256: str
    title: str
    reference: str | None
    model_label: str | None
    model_probabilities: dict[str, float] | None
    model_flags: dict[str, bool] | None = None
    stack: str | None = None
    stack_sha256: str | None = None
    stack_slice: int | None = None
    revealed_at: dt.datetime | None = None   # revealed to the class on the presenter's page

    @property
    def model_answered(self) -> bool:
        """Whether the model's class is an answer: not for a scan it flagged as unlike its training scans."""
        return self.model_label is not None and not (self.model_flags or {}).get("unfamiliar", False)

    def model_said(self, name: Callable[[str], str] = str, with_probability: bool = False) -> str:
        """What the model said, in words, with ``name`` giving a class's name: its class; its class as a guess when
        it did not answer (a scan unlike its training scans); its class, to refer, when under its threshold; with
        its probability when asked."""
        if self.model_label is None:
            return "no answer recorded"
        flags = self.model_flags or {}
        probability = (self.model_probabilities or {}).get(self.model_label) if with_probability else None
        said = name(self.model_label)
        if flags.get("unfamiliar"):
            guess = said if probability is None else f"{said}, {100 * probability:.1f}%"
            return f"no answer: unlike its training scans (its guess: {guess})"
        return (said + ("" if probability is None else f" ({100 * probability:.1f}%)")
                + (": uncertain, refer" if flags.get("uncertain") else ""))


@dataclass(frozen=True)
class ReaderView:
    id: int
    name: str
    session_id: int
    joined_at: dt.datetime | None = None
    opened_at: dt.datetime | None = None     # when they first opened their link; None: not yet


@dataclass(frozen=True)
class AnswerView:
    case_id: int
    label: str
    confidence: int
    note: str
    answered_at: dt.datetime
    heatmap_rating: str | None
    revised_label: str | None
    revised_note: str | None
    reading_seconds: float | None = None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _new_key() -> str:
    return secrets.token_urlsafe(16)


def _new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normal_code(code: str) -> str:
    """A join code as typed or read off a screen ("abcd-efgh", "ABCD EFGH") in the form it is stored."""
    return "".join(ch for ch in str(code).upper() if ch not in " -\t")


def clean_text(value: str, what: str, limit: int, required: bool = True, single_line: bool = False) -> str:
    """``value`` with control characters removed (line breaks and tabs too when ``single_line``) and surrounding
    space trimmed; refused when empty (if required) or longer than ``limit`` characters."""
    kept = "" if single_line else "\n\t"
    cleaned = "".join(ch for ch in str(value) if unicodedata.category(ch)[0] != "C" or ch in kept).strip()
    if required and not cleaned:
        raise ReviewError(f"the {what} is empty")
    if len(cleaned) > limit:
        raise ReviewError(f"the {what} is {len(cleaned)} characters long; at most {limit} are kept")
    return cleaned


def shortened(value: str, limit: int) -> str:
    """A title from a file name or a path: control characters removed, cut to ``limit`` characters."""
    cleaned = "".join(ch for ch in str(value) if unicodedata.category(ch)[0] != "C").strip() or "(no name)"
    return cleaned if len(cleaned) <= limit else cleaned[:limit - 1] + "…"


@contextlib.contextmanager
def _unit(engine: Engine, write: bool = False) -> Iterator[Session]:
    """One unit of work on the database: a session, and for a write one transaction, committed on leaving. A failure
    of the database itself (damaged, read-only, locked, out of space, unreachable) becomes DatabaseUnavailable with
    a sentence (the driver's error is logged), and the transaction is rolled back: nothing of it was kept. Any other
    error of the driver goes on as it is: a broken constraint to the caller, which knows what it means, and a bug or
    a value its column cannot hold to the page's error boundary."""
    try:
        with Session(writing(engine) if write else engine) as db, (db.begin() if write else contextlib.nullcontext()):
            yield db
    except DBAPIError as error:
        failure = unavailable(error)
        if failure is None:
            raise
        raise failure from None


def _plausible_code(code: str) -> bool:
    """Whether a code from an address could be a session code at all (they are 12 URL-safe characters): anything
    else is refused before it reaches the database, which may reject odd bytes with an error of its own."""
    return isinstance(code, str) and 0 < len(code) <= 64 and code.isascii() and code.isprintable()


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """A time read back from the database, in UTC (SQLite returns the stored UTC time without its zone)."""
    return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value


def _reader_view(row: Reader) -> ReaderView:
    return ReaderView(row.id, row.name, row.session_id, _utc(row.joined_at), _utc(row.opened_at))


def _session_view(row: ReviewSession) -> SessionView:
    return SessionView(row.id, row.code, row.name, row.mode, row.kind, row.joinable, list(row.classes),
                       dict(row.source), dict(row.model), _utc(row.created_at), bool(row.paced),
                       row.current_position, bool(row.hide_answers), _utc(row.ended_at), row.presenter_key is not None)


def _case_view(row: Case) -> CaseView:
    return CaseView(row.id, row.position, row.image, row.image_sha256, row.title, row.reference, row.model_label,
                    dict(row.model_probabilities) if row.model_probabilities is not None else None,
                    dict(row.model_flags) if row.model_flags is not None else None, row.stack, row.stack_sha256,
                    row.stack_slice, _utc(row.revealed_at))


def _answer_view(row: Answer) -> AnswerView:
    return AnswerView(row.case_id, row.label, row.confidence, row.note, _utc(row.answered_at), row.heatmap_rating,
                      row.revised_label, row.revised_note, row.reading_seconds)


# --------------------------------------------------------------------------------------------------
# Sessions


def create_session(engine: Engine, name: str, cases: Sequence[NewCase], classes: Sequence[str], *,
                   mode: str = "blinded", kind: str = "review", readers: Iterable[str] = (), joinable: bool = True,
                   source: dict | None = None, model: dict | None = None, paced: bool = False,
                   hide_answers: bool | None = None, organiser_key: str | None = None
                   ) -> tuple[SessionView, str, dict[str, str]]:
    """A new session with its cases in reading order and its named readers. Returns the session, the organiser's
    key, and each named reader's personal key (shown once: only their hashes are kept). ``paced``: the teacher moves
    the class from case to case (presenter mode); ``hide_answers``: the organiser's views show who has answered and
    not what until the session is ended (by default, for a quiz); ``organiser_key``: the key of the organiser
    (:func:`new_organiser`) whose list of sessions this one joins."""
    if mode not in MODES:
        raise ReviewError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if kind not in KINDS:
        raise ReviewError(f"unknown kind of session {kind!r}; choose one of {', '.join(KINDS)}")
    if not cases:
        raise ReviewError("the session has no cases; choose a run, filter or uploads that give at least one")
    if len(cases) > MAX_CASES:
        raise ReviewError(f"the session would have {len(cases)} cases; at most {MAX_CASES} are allowed")
    names = []
    for number, typed in enumerate(readers, 1):  # the organiser is told which name, by its place in the list
        try:
            names.append(clean_name(typed))
        except ReviewError as error:
            raise ReviewError(f"reader {number} of the list: {error}") from None
    for key in (name_key, name_skeleton):
        first: dict[str, int] = {}
        for number, n in enumerate(names, 1):
            if key(n) in first:
                raise ReviewError(f"readers {first[key(n)]} and {number} of the list have the same name (capitals, "
                                  "spacing and look-alike letters aside); each reader needs a name of their own")
            first[key(n)] = number
    if not names and not joinable:
        raise ReviewError("nobody could open this session: name at least one reader, or let readers join by its link")
    if len(names) > MAX_READERS:
        raise ReviewError(f"at most {MAX_READERS} readers can be named")
    for case in cases:
        for label in (case.reference, case.model_label):
            if label is not None and label not in classes:
                raise ReviewError(f"case {case.title!r} has the class {label!r}, which is not one of the session's")
    if paced and kind != "quiz":
        raise ReviewError("only a quiz can be teacher-paced")
    owner_key, keys = _new_key(), {n: _new_key() for n in names}
    with _unit(engine, write=True) as db:
        organiser = None
        if organiser_key is not None:
            organiser = _organiser(db, organiser_key)
        code = _new_code()
        while db.scalar(select(ReviewSession.id).where(ReviewSession.code == code)) is not None:
            code = _new_code()
        row = ReviewSession(code=code, owner_key=_digest(owner_key),
                            name=clean_text(name, "session name", NAME_LENGTH), mode=mode, kind=kind,
                            joinable=joinable, classes=list(classes), source=source or {}, model=model or {},
                            created_at=utc_now(), paced=bool(paced),
                            hide_answers=kind == "quiz" if hide_answers is None else bool(hide_answers),
                            organiser_id=organiser.id if organiser is not None else None)
        db.add(row)
        db.flush()
        db.add_all(Case(session_id=row.id, position=k, image=c.image, image_sha256=c.image_sha256,
                        title=shortened(c.title, PATH_LENGTH),
                        reference=c.reference, model_label=c.model_label,
                        model_probabilities=c.model_probabilities, model_flags=c.model_flags, stack=c.stack,
                        stack_sha256=c.stack_sha256, stack_slice=c.stack_slice)
                    for k, c in enumerate(cases))
        db.add_all(_new_reader(row.id, n, k) for n, k in keys.items())
        db.flush()
        view = _session_view(row)
    return view, owner_key, keys


def session_by_code(engine: Engine, code: str) -> SessionView:
    """The session of a join code, as given in a link or typed (any case, with or without its hyphen)."""
    if not _plausible_code(code):
        raise ReviewError("no review session has this code; check the link")
    with _unit(engine) as db:
        row = db.scalar(select(ReviewSession).where(ReviewSession.code.in_({str(code), normal_code(code)})))
        if row is None:
            raise ReviewError("no review session has this code; check the link")
        return _session_view(row)


def session_of(engine: Engine, reader: ReaderView) -> SessionView:
    with _unit(engine) as db:
        return _session_view(db.get(ReviewSession, reader.session_id))


def session_for_organiser(engine: Engine, key: str) -> SessionView:
    """The session whose organiser's key this is."""
    with _unit(engine) as db:
        row = db.scalar(select(ReviewSession).where(ReviewSession.owner_key == _digest(str(key))))
        if row is None:
            raise ReviewError("this organiser's link is not valid (the key is wrong or the session was removed)")
        return _session_view(row)


def session_for_presenter(engine: Engine, key: str) -> SessionView:
    """The session whose presenter's key this is (the page projected to a class)."""
    with _unit(engine) as db:
        row = db.scalar(select(ReviewSession).where(ReviewSession.presenter_key == _digest(str(key))))
        if row is None:
            raise ReviewError("this presenter's link is not valid (a newer one was made, or the session was removed); "
                              "open the presenter's page again from the organiser's page")
        return _session_view(row)


def new_presenter_key(engine: Engine, session: SessionView) -> str:
    """A new key for the session's presenter page (the projected one); an older presenter link stops working. The
    organiser's key is never in the projected address: this one can show progress, move a paced class on and reveal
    cases, and nothing else."""
    key = _new_key()
    with _unit(engine, write=True) as db:
        db.get(ReviewSession, session.id).presenter_key = _digest(key)
    return key


def _change(engine: Engine, session: SessionView, **values) -> SessionView:
    with _unit(engine, write=True) as db:
        row = db.get(ReviewSession, session.id)
        for name, value in values.items():
            setattr(row, name, value)
        db.flush()
        return _session_view(row)


def set_hide_answers(engine: Engine, session: SessionView, hide: bool) -> SessionView:
    """Whether the organiser's views show only who has answered (until the session is ended)."""
    return _change(engine, session, hide_answers=bool(hide))


def end_session(engine: Engine, session: SessionView, ended: bool = True) -> SessionView:
    """End the session (every case is then revealed to its readers and every answer shown to the organiser), or
    open it again."""
    return _change(engine, session, ended_at=utc_now() if ended else None)


def move_class(engine: Engine, session: SessionView, position: int) -> SessionView:
    """Teacher-paced: put the class on case ``position`` (from 0); readers can answer up to it."""
    if not session.paced:
        raise ReviewError("this session is not teacher-paced")
    with _unit(engine, write=True) as db:
        row = db.get(ReviewSession, session.id)
        count = db.scalar(select(func.count(Case.id)).where(Case.session_id == session.id))
        if not isinstance(position, int) or not 0 <= position < count:
            raise ReviewError(f"there is no case {position + 1 if isinstance(position, int) else position!r}; the "
                              f"session has {count}")
        row.current_position = position
        db.flush()
        return _session_view(row)


def _session_case(db: Session, session: SessionView, case_id: int) -> Case:
    case = db.get(Case, case_id)
    if case is None or case.session_id != session.id:
        raise ReviewError("this case is not part of the session")
    return case


def reveal_case(engine: Engine, session: SessionView, case_id: int, revealed: bool = True) -> None:
    """Show a case's reference, the model's answer and the class's spread to the class (the presenter's reveal).
    A revealed case takes no more answers: those who had not answered it have now seen its answer."""
    with _unit(engine, write=True) as db:
        _session_case(db, session, case_id).revealed_at = utc_now() if revealed else None


def answered_cases(engine: Engine, session: SessionView) -> dict[int, set[int]]:
    """Which cases each reader has answered (reader id -> case ids), and nothing of what they answered: what the
    presenter's page and a hidden organiser's view may show."""
    with _unit(engine) as db:
        rows = db.execute(select(Answer.reader_id, Answer.case_id).join(Reader, Answer.reader_id == Reader.id)
                          .where(Reader.session_id == session.id))
        found: dict[int, set[int]] = {}
        for reader_id, case_id in rows:
            found.setdefault(reader_id, set()).add(case_id)
        return found


def class_spread(engine: Engine, session: SessionView, case_id: int) -> dict[str, int]:
    """How many readers gave each class for a case, once it is revealed to the class (or the session has ended)."""
    with _unit(engine) as db:
        case = _session_case(db, session, case_id)
        if case.revealed_at is None and db.get(ReviewSession, session.id).ended_at is None:
            raise ReviewError("the class's answers to a case are shown once it is revealed")
        rows = db.execute(select(Answer.label, func.count(Answer.id)).where(Answer.case_id == case_id)
                          .group_by(Answer.label))
        return {label: int(n) for label, n in rows}


# --------------------------------------------------------------------------------------------------
# Organisers


def new_organiser(engine: Engine) -> str:
    """A new organiser; returns their key (shown once: it opens the list of their sessions)."""
    key = _new_key()
    with _unit(engine, write=True) as db:
        db.add(Organiser(key=_digest(key), created_at=utc_now()))
    return key


def _organiser(db: Session, key: str) -> Organiser:
    row = db.scalar(select(Organiser).where(Organiser.key == _digest(str(key))))
    if row is None:
        raise ReviewError("this organiser's sessions link is not valid; check the link you kept")
    return row


def organiser_sessions(engine: Engine, key: str) -> list[SessionView]:
    """The sessions made under an organiser's key, newest first."""
    with _unit(engine) as db:
        organiser = _organiser(db, key)
        rows = db.scalars(select(ReviewSession).where(ReviewSession.organiser_id == organiser.id)
                          .order_by(ReviewSession.created_at.desc(), ReviewSession.id.desc()))
        return [_session_view(r) for r in rows]


def organisers_session(engine: Engine, key: str, session_id: int) -> SessionView:
    """One of the organiser's sessions, opened from their list (the organiser's key stands for the session's)."""
    for session in organiser_sessions(engine, key):
        if session.id == session_id:
            return session
    raise ReviewError("this session is not in your list")


def all_sessions(engine: Engine) -> list[SessionView]:
    """Every session in the database, newest first (the server-wide list, where the server allows it)."""
    with _unit(engine) as db:
        rows = db.scalars(select(ReviewSession).order_by(ReviewSession.created_at.desc(), ReviewSession.id.desc()))
        return [_session_view(r) for r in rows]


def session_by_id(engine: Engine, session_id: int) -> SessionView:
    with _unit(engine) as db:
        row = db.get(ReviewSession, session_id)
        if row is None:
            raise ReviewError("there is no such session")
        return _session_view(row)


def session_cases(engine: Engine, session_id: int) -> list[CaseView]:
    with _unit(engine) as db:
        rows = db.scalars(select(Case).where(Case.session_id == session_id).order_by(Case.position))
        return [_case_view(r) for r in rows]


# --------------------------------------------------------------------------------------------------
# Readers


def join(engine: Engine, code: str, name: str) -> tuple[ReaderView, str]:
    """A new reader, by name, in a session open to joining. Returns the reader and their personal key."""
    session = session_by_code(engine, code)
    if not session.joinable:
        raise ReviewError("this session does not take new readers; ask the organiser for your personal link")
    name = clean_name(name)
    key = _new_key()
    try:
        with _unit(engine, write=True) as db:
            current = db.get(ReviewSession, session.id, with_for_update=True)  # joins wait for each other (PostgreSQL)
            if not current.joinable:
                raise ReviewError("this session no longer takes new readers; ask the organiser for your personal link")
            if db.scalar(select(func.count(Reader.id)).where(Reader.session_id == session.id)) >= MAX_READERS:
                raise ReviewError(f"this session already has {MAX_READERS} readers, the most it can take")
            row = _new_reader(session.id, name, key)
            db.add(row)
            db.flush()
            view = _reader_view(row)
    except IntegrityError:
        if not _name_taken(engine, session.id, name):  # another constraint broken: not the race this one is
            raise
        raise ReviewError(f"a reader called {name!r}, or by a name that looks the same, has already joined this "
                          "session; to go on reading as them, open your personal link; otherwise choose another name"
                          ) from None
    return view, key


def _new_reader(session_id: int, name: str, key: str) -> Reader:
    return Reader(session_id=session_id, name=name, name_key=name_key(name), name_skeleton=name_skeleton(name),
                  key=_digest(key), joined_at=utc_now())


def mark_opened(engine: Engine, reader: ReaderView) -> ReaderView:
    """Record the first time a reader opened their link (the organiser's "joined" column)."""
    if reader.opened_at is not None:
        return reader
    with _unit(engine, write=True) as db:
        row = db.get(Reader, reader.id)
        if row.opened_at is None:
            row.opened_at = utc_now()
        db.flush()
        return _reader_view(row)


def _name_taken(engine: Engine, session_id: int, name: str) -> bool:
    """Whether a reader of the session has a name that is one with ``name`` (either key the same)."""
    with _unit(engine) as db:
        same = or_(Reader.name_key == name_key(name), Reader.name_skeleton == name_skeleton(name))
        return db.scalar(select(func.count(Reader.id)).where(Reader.session_id == session_id, same)) > 0


def reader_by_key(engine: Engine, key: str) -> ReaderView:
    with _unit(engine) as db:
        row = db.scalar(select(Reader).where(Reader.key == _digest(str(key))))
        if row is None:
            raise ReviewError("this reader's link is not valid; ask the organiser for your personal link")
        return _reader_view(row)


def new_reader_key(engine: Engine, session: SessionView, reader_id: int) -> str:
    """A new personal key for a reader of the session (the organiser's remedy for a lost link); the old key stops
    working. Returns the new key."""
    key = _new_key()
    with _unit(engine, write=True) as db:
        row = db.get(Reader, reader_id)
        if row is None or row.session_id != session.id:
            raise ReviewError("no such reader in this session")
        row.key = _digest(key)
    return key


def session_readers(engine: Engine, session_id: int) -> list[ReaderView]:
    with _unit(engine) as db:
        rows = db.scalars(select(Reader).where(Reader.session_id == session_id).order_by(Reader.id))
        return [_reader_view(r) for r in rows]


def set_joinable(engine: Engine, session: SessionView, joinable: bool) -> None:
    """Open or close the session's join link (the organiser's choice; named readers keep their personal links)."""
    with _unit(engine, write=True) as db:
        db.get(ReviewSession, session.id).joinable = bool(joinable)


# --------------------------------------------------------------------------------------------------
# Answers


def answers_of(engine: Engine, reader: ReaderView) -> dict[int, AnswerView]:
    """The reader's own answers, by case id."""
    with _unit(engine) as db:
        rows = db.scalars(select(Answer).where(Answer.reader_id == reader.id))
        return {r.case_id: _answer_view(r) for r in rows}


def next_position(cases: Sequence[CaseView], answered: Iterable[int], session: SessionView | None = None
                  ) -> int | None:
    """Where a reader goes on: the first case in reading order without an answer that is still open to answers
    (not yet revealed to the class, and in a paced session not beyond the case the class is on); None when there is
    none (all answered, or waiting for the teacher)."""
    done = set(answered)
    return next((c.position for c in cases if c.id not in done and open_to_answers(session, c)), None)


def open_to_answers(session: SessionView | None, case: CaseView) -> bool:
    """Whether a case takes answers: not once the session has ended or the case was revealed to the class, and in a
    paced session only up to the case the class is on."""
    if session is None:
        return case.revealed_at is None
    if session.ended_at is not None or case.revealed_at is not None:
        return False
    return not session.paced or (session.current_position is not None and case.position <= session.current_position)


def waiting_for_teacher(session: SessionView, cases: Sequence[CaseView], answered: Iterable[int]) -> bool:
    """Whether a paced session's reader has answered all they can and waits for the teacher to move the class on."""
    done = set(answered)
    return (session.paced and session.ended_at is None
            and any(c.id not in done and c.revealed_at is None for c in cases)
            and next_position(cases, done, session) is None)


def _own_case(db: Session, reader: ReaderView, case_id: int) -> tuple[Case, ReviewSession]:
    case = db.get(Case, case_id)
    if case is None or case.session_id != reader.session_id:
        raise ReviewError("this case is not part of your session")
    return case, db.get(ReviewSession, case.session_id)


def commit_answer(engine: Engine, reader: ReaderView, case_id: int, label: str, confidence: int,
                  note: str = "", reading_seconds: float | None = None) -> AnswerView:
    """Record the reader's answer to a case, committed before this returns, with the time from the case being shown
    to the answer (``reading_seconds``; not kept when it is not a plausible reading time). An answer is given once:
    a second one for the same case is refused and the first kept, as is one to a case no longer open to answers."""
    import math

    note = clean_text(note, "note", NOTE_LENGTH, required=False)
    if not isinstance(confidence, int) or isinstance(confidence, bool) or confidence not in CONFIDENCES:
        raise ReviewError("the confidence must be a whole number from 1 (a guess) to 5 (certain)")
    if reading_seconds is not None:
        reading_seconds = float(reading_seconds)
        if not (math.isfinite(reading_seconds) and 0 <= reading_seconds <= MAX_READING_SECONDS):
            reading_seconds = None
    try:
        with _unit(engine, write=True) as db:
            case, session = _own_case(db, reader, case_id)
            if label not in session.classes:
                raise ReviewError(f"{label!r} is not one of this session's classes")
            if not open_to_answers(_session_view(session), _case_view(case)):
                raise ReviewError("this case no longer takes answers: it was revealed to the class, the session has "
                                  "ended, or the teacher has not opened it yet")
            row = Answer(reader_id=reader.id, case_id=case.id, label=label, confidence=confidence, note=note,
                         answered_at=utc_now(), reading_seconds=reading_seconds)
            db.add(row)
            db.flush()
            return _answer_view(row)
    except IntegrityError:
        if case_id not in answers_of(engine, reader):  # another constraint broken: not a second answer
            raise
        raise ReviewError("you have already answered this case; a committed answer is kept as it was given (record "
                          "a change of mind after the reveal instead)") from None


def _own_answer(db: Session, reader: ReaderView, case_id: int) -> Answer:
    _own_case(db, reader, case_id)
    row = db.scalar(select(Answer).where(Answer.reader_id == reader.id, Answer.case_id == case_id))
    if row is None:
        raise ReviewError("answer this case first")
    return row


def rate_heatmap(engine: Engine, reader: ReaderView, case_id: int, rating: str | None) -> None:
    """After the reveal: whether the model's heatmap points at the right place (None takes the rating back)."""
    if rating is not None and rating not in RATINGS:
        raise ReviewError(f"unknown heatmap rating {rating!r}; choose one of {', '.join(RATINGS)}")
    with _unit(engine, write=True) as db:
        _own_answer(db, reader, case_id).heatmap_rating = rating


def change_mind(engine: Engine, reader: ReaderView, case_id: int, label: str | None, note: str = "") -> None:
    """After the reveal: the class the reader would now give (None withdraws it), kept beside the committed answer,
    which does not change."""
    note = clean_text(note, "note", NOTE_LENGTH, required=False)
    with _unit(engine, write=True) as db:
        row = _own_answer(db, reader, case_id)
        if label is not None and label not in db.get(ReviewSession, reader.session_id).classes:
            raise ReviewError(f"{label!r} is not one of this session's classes")
        row.revised_label, row.revised_note = label, (note if label is not None else None)
        row.revised_at = utc_now() if label is not None else None


def may_reveal(session: SessionView, answer: AnswerView | None, case: CaseView | None = None) -> bool:
    """Whether a reader may see the model's answer, its heatmap and the reference of a case: always in an open
    session; in a blinded one after committing their own, and in a teacher-paced quiz only once the teacher has
    revealed the case to the class (or ended the session)."""
    if not session.blinded:
        return True
    if session.paced and session.ended_at is None:
        return answer is not None and case is not None and case.revealed_at is not None
    return answer is not None


def session_answers(engine: Engine, session: SessionView) -> list[dict]:
    """Every answer of the session, one dict per (reader, case) answered, for the organiser's summary. The page
    calls this only with the organiser's key checked (:func:`session_for_organiser`)."""
    with _unit(engine) as db:
        rows = db.execute(select(Answer, Reader.name, Case.position)
                          .join(Reader, Answer.reader_id == Reader.id).join(Case, Answer.case_id == Case.id)
                          .where(Reader.session_id == session.id).order_by(Reader.id, Case.position))
        return [{"reader": name, "reader_id": a.reader_id, "case_id": a.case_id, "position": position,
                 "label": a.label, "confidence": a.confidence, "note": a.note, "answered_at": _utc(a.answered_at),
                 "heatmap_rating": a.heatmap_rating, "revised_label": a.revised_label, "revised_note": a.revised_note,
                 "reading_seconds": a.reading_seconds}
                for a, name, position in rows]


def scores(engine: Engine, session: SessionView) -> list[tuple[str, int, int]]:
    """The quiz leaderboard: each reader's name, right answers and answers given, best first; on a tie, fewer answers
    given first, then by name (the one order of the pages and the session report). Only counts: no reader sees
    another's answers through it. In a teacher-paced quiz that has not ended, only the cases revealed to the class
    count, so that the board tells nobody whether an answer not yet revealed was right."""
    with _unit(engine) as db:
        right = func.sum((Answer.label == Case.reference).cast(Integer))
        counted = Answer.reader_id == Reader.id
        if session.paced and session.ended_at is None:
            counted = counted & Answer.case_id.in_(select(Case.id).where(Case.session_id == session.id,
                                                                        Case.revealed_at.is_not(None)))
        rows = db.execute(select(Reader.name, func.coalesce(right, 0), func.count(Answer.id))
                          .select_from(Reader).outerjoin(Answer, counted)
                          .outerjoin(Case, Answer.case_id == Case.id)
                          .where(Reader.session_id == session.id).group_by(Reader.id, Reader.name))
        table = [(name, int(r), int(n)) for name, r, n in rows]
    return sorted(table, key=lambda t: (-t[1], t[2], t[0].casefold(), t[0]))
