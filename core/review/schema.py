"""The review database: its tables (SQLAlchemy 2 ORM), how a database is opened, and the versioned schema the
application creates and upgrades itself.

Any SQLAlchemy URL works; SQLite (the default, one file in the data directory) is opened in WAL mode with full
synchronous commits, so an answer that was committed survives the server being killed at any moment, and write
transactions begin IMMEDIATE so that two readers answering at once wait for each other instead of failing.
Images are never stored here: a case names its image and holds its content hash.

Each schema version is one frozen function in :data:`MIGRATIONS`; :func:`open_database` applies the missing ones
in order, under a lock, so that several processes starting at once upgrade the database exactly once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.pool import NullPool

from core.review.errors import ReviewError
from core.review.names import NAME_LENGTH, name_key, name_skeleton

NOTE_LENGTH, PATH_LENGTH = 2000, 1000
MIGRATION_LOCK = 74_120_915  # the PostgreSQL advisory lock that serialises schema upgrades (any fixed number)
BUSY_SECONDS = 15  # how long a write waits for another's lock on a SQLite file before it is given up

log = logging.getLogger(__name__)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    pass


class ReviewSession(Base):
    """A review or a quiz: a named, ordered list of cases read by one or more readers."""

    __tablename__ = "review_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)         # the join code in a session's link
    owner_key: Mapped[str] = mapped_column(String(64))                 # sha256 of the organiser's key
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    mode: Mapped[str] = mapped_column(String(16))                      # "blinded" or "open"
    kind: Mapped[str] = mapped_column(String(16))                      # "review" or "quiz"
    joinable: Mapped[bool] = mapped_column(Boolean)                    # whether a new reader may join by the link
    classes: Mapped[list] = mapped_column(JSON)
    source: Mapped[dict] = mapped_column(JSON)                         # run or uploads, filters, sample, order, seed
    model: Mapped[dict] = mapped_column(JSON)                          # path, file_sha256, name of the model
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    # Version 4: presenting a quiz to a class, and the organiser who made the session.
    presenter_key: Mapped[str | None] = mapped_column(String(64), unique=True)  # sha256 of the projected page's key
    paced: Mapped[bool] = mapped_column(Boolean, default=False)       # the teacher moves the class case by case
    current_position: Mapped[int | None] = mapped_column(Integer)      # paced: the class's case (None: not begun)
    hide_answers: Mapped[bool] = mapped_column(Boolean, default=False)  # organiser's views show progress only
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))  # answers shown to all from then
    organiser_id: Mapped[int | None] = mapped_column(ForeignKey("review_organisers.id", ondelete="SET NULL"),
                                                     index=True)
    cases: Mapped[list[Case]] = relationship(back_populates="session", order_by="Case.position")
    readers: Mapped[list[Reader]] = relationship(back_populates="session", order_by="Reader.id")


class Case(Base):
    """One image of a session, in its place in the reading order, with the model's answer and the reference."""

    __tablename__ = "review_cases"
    __table_args__ = (UniqueConstraint("session_id", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("review_sessions.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    image: Mapped[str] = mapped_column(String(PATH_LENGTH))            # path in the dataset, or uploads/<sha256>.<ext>
    image_sha256: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(PATH_LENGTH))            # what the case is called once revealed
    reference: Mapped[str | None] = mapped_column(String(32))          # the true class, where known
    model_label: Mapped[str | None] = mapped_column(String(32))
    model_probabilities: Mapped[dict | None] = mapped_column(JSON)     # class -> probability
    model_flags: Mapped[dict | None] = mapped_column(JSON)             # {"unfamiliar": bool, "uncertain": bool}
    # An uploaded DICOM series or NIfTI volume: a slab of its slices (8-bit pixels only, uploads/<sha256>.npz) for
    # readers to scroll, and which of them is the case's image, the slice the model answered (from 0, in the slab).
    stack: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    stack_sha256: Mapped[str | None] = mapped_column(String(64))
    stack_slice: Mapped[int | None] = mapped_column(Integer)
    revealed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))  # shown to the class (presenter)
    session: Mapped[ReviewSession] = relationship(back_populates="cases")


class Reader(Base):
    """A person reading a session, known by name within it and proven by a personal key (stored as its hash)."""

    __tablename__ = "review_readers"
    __table_args__ = (UniqueConstraint("session_id", "name_key"), UniqueConstraint("session_id", "name_skeleton"))
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("review_sessions.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    name_key: Mapped[str] = mapped_column(String(4 * NAME_LENGTH))       # case folded (core.review.names)
    name_skeleton: Mapped[str] = mapped_column(String(4 * NAME_LENGTH))  # as it looks, case kept
    key: Mapped[str] = mapped_column(String(64), unique=True)
    joined_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)  # named or joined
    opened_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))  # first opened their link
    session: Mapped[ReviewSession] = relationship(back_populates="readers")


class Answer(Base):
    """A reader's committed reading of one case. The class, confidence and note never change once written; what
    the reader thought after the reveal is kept beside them (``revised_*``), with the heatmap rating."""

    __tablename__ = "review_answers"
    __table_args__ = (UniqueConstraint("reader_id", "case_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("review_readers.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("review_cases.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[int] = mapped_column(Integer)                   # 1 (a guess) to 5 (certain)
    note: Mapped[str] = mapped_column(Text, default="")
    answered_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    heatmap_rating: Mapped[str | None] = mapped_column(String(16))     # "right", "partly", "wrong"
    revised_label: Mapped[str | None] = mapped_column(String(32))
    revised_note: Mapped[str | None] = mapped_column(Text)
    revised_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    reading_seconds: Mapped[float | None] = mapped_column(Float)       # case shown to answer committed


class Organiser(Base):
    """Whoever makes sessions, known by a key of their own (kept as its hash) that lists their sessions again."""

    __tablename__ = "review_organisers"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


# --------------------------------------------------------------------------------------------------
# The versioned schema. Each migration is frozen once released: a later change is a new function that alters what
# the earlier ones made, never an edit of them. The ORM classes above describe the newest version; a test checks
# that the migrations build exactly that.


def _version_1(connection: Connection) -> None:
    """The first schema: sessions, cases, readers and answers (tables named review_* so that they can share a
    database with others)."""
    meta = MetaData()
    Table("review_sessions", meta,
          Column("id", Integer, primary_key=True),
          Column("code", String(32), nullable=False, unique=True),
          Column("owner_key", String(64), nullable=False),
          Column("name", String(NAME_LENGTH), nullable=False),
          Column("mode", String(16), nullable=False),
          Column("kind", String(16), nullable=False),
          Column("joinable", Boolean, nullable=False),
          Column("classes", JSON, nullable=False),
          Column("source", JSON, nullable=False),
          Column("model", JSON, nullable=False),
          Column("created_at", DateTime(timezone=True), nullable=False))
    Table("review_cases", meta,
          Column("id", Integer, primary_key=True),
          Column("session_id", Integer, ForeignKey("review_sessions.id", ondelete="CASCADE"), nullable=False,
                 index=True),
          Column("position", Integer, nullable=False),
          Column("image", String(PATH_LENGTH), nullable=False),
          Column("image_sha256", String(64), nullable=False),
          Column("title", String(PATH_LENGTH), nullable=False),
          Column("reference", String(32)),
          Column("model_label", String(32)),
          Column("model_probabilities", JSON),
          Column("model_flags", JSON),
          UniqueConstraint("session_id", "position"))
    Table("review_readers", meta,
          Column("id", Integer, primary_key=True),
          Column("session_id", Integer, ForeignKey("review_sessions.id", ondelete="CASCADE"), nullable=False,
                 index=True),
          Column("name", String(NAME_LENGTH), nullable=False),
          Column("name_key", String(4 * NAME_LENGTH), nullable=False),
          Column("key", String(64), nullable=False, unique=True),
          Column("joined_at", DateTime(timezone=True), nullable=False),
          UniqueConstraint("session_id", "name_key"))
    Table("review_answers", meta,
          Column("id", Integer, primary_key=True),
          Column("reader_id", Integer, ForeignKey("review_readers.id", ondelete="CASCADE"), nullable=False, index=True),
          Column("case_id", Integer, ForeignKey("review_cases.id", ondelete="CASCADE"), nullable=False, index=True),
          Column("label", String(32), nullable=False),
          Column("confidence", Integer, nullable=False),
          Column("note", Text, nullable=False),
          Column("answered_at", DateTime(timezone=True), nullable=False),
          Column("heatmap_rating", String(16)),
          Column("revised_label", String(32)),
          Column("revised_note", Text),
          Column("revised_at", DateTime(timezone=True)),
          UniqueConstraint("reader_id", "case_id"))
    meta.create_all(connection, checkfirst=False)  # a table of that name already there is an error, not adopted


def _version_2(connection: Connection) -> None:
    """A case may carry the slices of the volume its image was cut from (an uploaded DICOM series or NIfTI volume),
    for readers to scroll. Existing cases have none."""
    for column, kind in (("stack", f"VARCHAR({PATH_LENGTH})"), ("stack_sha256", "VARCHAR(64)"),
                         ("stack_slice", "INTEGER")):
        connection.execute(text(f"ALTER TABLE review_cases ADD COLUMN {column} {kind}"))


# Marks a key that is no name's key: names never hold a control character (core.review.names), so a key with one in
# it can equal no other reader's, old or new.
NO_NAME = "\x01"


def _version_3(connection: Connection) -> None:
    """Readers' names are compared by two keys (core.review.names), each unique within a session: case folded
    (:func:`~core.review.names.name_key`, as before) and by their look-alike skeleton with case kept
    (:func:`~core.review.names.name_skeleton`: "Аnn" with a Cyrillic A is "Ann", "Ian" with a capital I is "lan").
    The skeleton gets a column, and both keys are computed for every reader (a later change of those functions adds
    a migration that does the same). Two readers of one session whose names now fall together joined before this
    version; both stay, with their answers, the later one's key marked as no name's, and nobody new can join under
    either name."""
    # SQLite adds a NOT NULL column only with a default; every reader gets a skeleton below, before it is unique.
    connection.execute(text(f"ALTER TABLE review_readers ADD COLUMN name_skeleton VARCHAR({4 * NAME_LENGTH}) "
                            "NOT NULL DEFAULT ''"))
    _compute_name_keys(connection)
    connection.execute(text("CREATE UNIQUE INDEX uq_review_readers_session_id_name_skeleton "
                            "ON review_readers (session_id, name_skeleton)"))


def _compute_name_keys(connection: Connection) -> None:
    """Both keys of every reader's name, computed again; the later of two readers whose keys are one keeps a key
    marked with its id."""
    rows = connection.execute(text("SELECT id, session_id, name FROM review_readers ORDER BY session_id, id")).all()
    if not rows:
        return
    # First out of each other's way: a reader's new key may be another reader's old one.
    connection.execute(text("UPDATE review_readers SET name_key = :key WHERE id = :id"),
                       [{"key": f"{NO_NAME}{reader_id}", "id": reader_id} for reader_id, _, _ in rows])
    update = text("UPDATE review_readers SET name_key = :key, name_skeleton = :skeleton WHERE id = :id")
    taken = set()
    for reader_id, session_id, name in rows:
        keys = {"key": name_key(name), "skeleton": name_skeleton(name)}
        for kind, key in keys.items():
            if (session_id, kind, key) in taken:
                keys[kind] = f"{key}{NO_NAME}{reader_id}"
            taken.add((session_id, kind, keys[kind]))
        connection.execute(update, {**keys, "id": reader_id})


def _version_4(connection: Connection) -> None:
    """Presenting a quiz and finding one's sessions again: organisers with keys of their own; a session's presenter
    key, teacher-paced mode, the case the class is on, answers hidden from the organiser's views until the end, and
    its organiser; when a case was revealed to the class; when a reader first opened their link (for readers of
    older sessions, the time of their first answer: the time they were named is not when they came); how long a
    reader took over a case."""
    Table("review_organisers", MetaData(),
          Column("id", Integer, primary_key=True),
          Column("key", String(64), nullable=False, unique=True),
          Column("created_at", DateTime(timezone=True), nullable=False)).create(connection)
    postgres = connection.dialect.name == "postgresql"
    false, moment, real = (("false", "TIMESTAMP WITH TIME ZONE", "DOUBLE PRECISION") if postgres
                           else ("0", "DATETIME", "FLOAT"))
    for column, kind in (("presenter_key", "VARCHAR(64)"), ("paced", f"BOOLEAN NOT NULL DEFAULT {false}"),
                         ("current_position", "INTEGER"), ("hide_answers", f"BOOLEAN NOT NULL DEFAULT {false}"),
                         ("ended_at", moment),
                         ("organiser_id", "INTEGER REFERENCES review_organisers (id) ON DELETE SET NULL")):
        connection.execute(text(f"ALTER TABLE review_sessions ADD COLUMN {column} {kind}"))
    connection.execute(text("CREATE UNIQUE INDEX uq_review_sessions_presenter_key ON review_sessions (presenter_key)"))
    connection.execute(text("CREATE INDEX ix_review_sessions_organiser_id ON review_sessions (organiser_id)"))
    connection.execute(text(f"ALTER TABLE review_cases ADD COLUMN revealed_at {moment}"))
    connection.execute(text(f"ALTER TABLE review_readers ADD COLUMN opened_at {moment}"))
    connection.execute(text("UPDATE review_readers SET opened_at = (SELECT MIN(answered_at) FROM review_answers "
                            "WHERE review_answers.reader_id = review_readers.id)"))
    connection.execute(text(f"ALTER TABLE review_answers ADD COLUMN reading_seconds {real}"))


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("sessions, cases, readers and answers", _version_1),
    ("the slices of an uploaded volume, for readers to scroll", _version_2),
    ("readers' names compared case folded and by their look-alike skeleton", _version_3),
    ("presenting a quiz, organisers' session lists, reading times", _version_4),
]
SCHEMA_VERSION = len(MIGRATIONS)
_versions = Table("schema_version", MetaData(), Column("version", Integer, nullable=False))


def schema_version(connection: Connection) -> int:
    """The schema version a database is at; 0 for an empty one."""
    if not connection.dialect.has_table(connection, "schema_version"):
        return 0
    return int(connection.execute(select(_versions.c.version)).scalar_one_or_none() or 0)


def _refuse_newer(found: int) -> None:
    if found > SCHEMA_VERSION:
        raise ReviewError(f"the review database is at schema version {found}, written by a newer version of "
                          f"this application (this one knows up to {SCHEMA_VERSION}); it was left untouched")


def upgrade(engine: Engine) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`, in one transaction that holds the database's write lock, so that
    a second process waits and then finds nothing to do. Returns the version it was at. A database written by a
    newer version of the application is refused, untouched. A database already up to date is only read, so that one
    the server may not write to (or whose lock another program holds) still opens for reading."""
    with engine.connect() as connection:
        found = schema_version(connection)
    _refuse_newer(found)
    if found == SCHEMA_VERSION:
        return found
    with writing(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            # a stuck upgrade elsewhere: an error, not a hang
            connection.execute(text("SET LOCAL lock_timeout = '60s'"))
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        found = schema_version(connection)
        _refuse_newer(found)
        if found == SCHEMA_VERSION:
            return found
        if found == 0:
            _versions.create(connection, checkfirst=True)
        for _, migrate in MIGRATIONS[found:]:
            migrate(connection)
        connection.execute(_versions.delete())
        connection.execute(_versions.insert().values(version=SCHEMA_VERSION))
        return found


# --------------------------------------------------------------------------------------------------
# When the database fails


class DatabaseUnavailable(ReviewError):
    """The database could not carry out a read or a write (damaged, read-only, locked, out of space, unreachable):
    nothing was changed, and the same request can be made again once the cause is dealt with."""


# What the driver says (SQLite's and PostgreSQL's words, lower case), and what the person at the page is told.
FAILURES = [
    (("readonly", "read-only"),
     "the review database is read-only on the server, so nothing can be saved; ask the organiser to have it made "
     "writable, then try again"),
    (("database is locked", "table is locked", "lock timeout", "could not obtain lock", "deadlock"),
     "the review database is busy: another program has held its lock for {seconds} seconds; wait a moment and try "
     "again (tell the organiser if it goes on)"),
    (("disk is full", "no space left", "disk full", "quota"),
     "the server's disk is full, so nothing can be saved; ask the organiser to have space freed on the server, "
     "then try again"),
    (("not a database", "malformed", "corrupt"),
     "the review database file is damaged; ask the organiser to restore it from a backup (moving it aside starts "
     "an empty one)"),
    (("unable to open", "disk i/o error"),
     "the review database file cannot be read or written on the server (its folder may be missing or not "
     "writable); ask the organiser to look into it, then try again"),
    (("connection", "could not connect", "server closed", "timeout"),
     "the review database server cannot be reached; try again in a moment, and tell the organiser if it goes on"),
]


# Errors in the request or the code (a bad statement, a value too long for its column, a broken constraint), not
# the database failing: trying again would fail again, so they go on to the page's error boundary as they are.
NOT_THE_DATABASE = (ProgrammingError, DataError, IntegrityError, NotSupportedError)


def unavailable(error: DBAPIError) -> DatabaseUnavailable | None:
    """The failure of the database itself (damaged, read-only, locked, out of space, unreachable) as a sentence
    that says what is wrong and what to do, with the driver's own message, which may name paths and statements,
    written to the log only. None for any other error, which the caller raises again."""
    if isinstance(error, NOT_THE_DATABASE):
        return None
    said = str(error.orig if error.orig is not None else error).lower()
    sentence = next((sentence for words, sentence in FAILURES if any(word in said for word in words)), None)
    if sentence is None and isinstance(error, (OperationalError, InterfaceError)):
        sentence = ("the review database failed to carry out the request, and nothing was changed; try again, and "
                    "tell the organiser if it goes on")
    if sentence is None:
        return None
    failure = DatabaseUnavailable(sentence.format(seconds=BUSY_SECONDS))
    log.warning("the review database failed, and the page was told: %s", failure, exc_info=error)
    return failure


# --------------------------------------------------------------------------------------------------
# Opening a database


WRITE_OPTION = "review_write"


def writing(engine: Engine) -> Engine:
    """The engine for a transaction that writes. On SQLite it begins IMMEDIATE, taking the write lock at once: a
    deferred transaction that reads and then writes can fail at once with 'database is locked' when another writer
    came first, whatever the busy timeout. Reads begin deferred and never wait for writers (WAL)."""
    return engine.execution_options(**{WRITE_OPTION: True})


def _sqlite_settings(engine: Engine) -> None:
    """WAL, full synchronous commits, foreign keys and a busy wait on every connection; the driver's own implicit
    transactions replaced by SQLAlchemy's, IMMEDIATE for writes (:func:`writing`)."""

    @event.listens_for(engine, "connect")
    def configure(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # the driver's own implicit BEGIN is replaced by the one below
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
                       f"busy_timeout={round(BUSY_SECONDS * 1000)}"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get(WRITE_OPTION)
                                   else "BEGIN")


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def open_database(url: str) -> Engine:
    """The engine of the review database at ``url`` (any SQLAlchemy URL), with its schema brought up to date; one
    engine per URL and process. Raises ReviewError with a readable sentence when the URL is malformed or its driver is
    missing, and DatabaseUnavailable when the database cannot be read (damaged, unreachable, locked for an upgrade)."""
    with _engines_lock:
        if url in _engines:
            return _engines[url]
        try:
            parsed = make_url(url)
            sqlite = parsed.get_backend_name() == "sqlite"
            options = ({"poolclass": NullPool} if sqlite else
                       {"pool_pre_ping": True, **({"connect_args": {"connect_timeout": 10}}
                                                  if parsed.get_backend_name() == "postgresql" else {})})
            engine = create_engine(parsed, **options)
        except (ArgumentError, NoSuchModuleError, ImportError) as error:
            raise ReviewError(f"the review database address is not usable ({error.__class__.__name__}: "
                              f"{str(error).splitlines()[0]})") from None
        if sqlite:
            _sqlite_settings(engine)
        try:
            upgrade(engine)
        except DBAPIError as error:
            engine.dispose()
            failure = unavailable(error)
            if failure is None:
                raise
            raise failure from None
        _engines[url] = engine
        return engine


def close_databases() -> None:
    """Dispose of every engine opened here (tests, and a process that is about to exit)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
