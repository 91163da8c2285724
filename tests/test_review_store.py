"""The review database (core.review.schema, core.review.store), each test against a real SQLite file and a real
PostgreSQL server: schema creation and upgrade, who sees what, answers that cannot be changed, and answers that
survive a killed process and two readers answering at once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from core.review import ReviewError, open_database, store
from core.review.schema import SCHEMA_VERSION, Base, close_databases, schema_version
from core.review.store import NewCase
from hostile import tried

WORKER = Path(__file__).with_name("review_worker.py")
CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


def make_cases(n: int) -> list[NewCase]:
    return [NewCase(image=f"Testing/x/{k}.jpg", image_sha256=f"{k:064x}", title=f"case {k}",
                    reference=CLASSES[k % 4], model_label=CLASSES[(k + k // 4) % 4],
                    model_probabilities={c: 0.25 for c in CLASSES}) for k in range(n)]


def new_session(engine, n: int = 8, **options):
    session, owner, keys = store.create_session(engine, "Tuesday review", make_cases(n), CLASSES,
                                                readers=options.pop("readers", ["Ann", "Bob"]), **options)
    return session, owner, keys, store.session_cases(engine, session.id)


# --------------------------------------------------------------------------------------------------
# Schema


def test_a_new_database_gets_the_newest_schema_and_it_matches_the_models(database_url):
    engine = open_database(database_url)
    with engine.connect() as connection:
        assert schema_version(connection) == SCHEMA_VERSION
        found = inspect(connection)
        for table in Base.metadata.sorted_tables:
            columns = {c["name"]: c for c in found.get_columns(table.name)}
            assert set(columns) == {c.name for c in table.columns}, table.name
            for column in table.columns:
                assert columns[column.name]["nullable"] == column.nullable, (table.name, column.name)
            uniques = {tuple(u["column_names"]) for u in found.get_unique_constraints(table.name)}
            uniques |= {tuple(i["column_names"]) for i in found.get_indexes(table.name) if i["unique"]}
            for constraint in table.constraints:
                if constraint.__class__.__name__ == "UniqueConstraint":
                    assert tuple(c.name for c in constraint.columns) in uniques, (table.name, constraint)
    close_databases()
    engine = open_database(database_url)  # opening again changes nothing
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM schema_version")).scalar_one() == 1


def test_a_database_from_a_newer_version_is_refused_and_left_alone(database_url):
    open_database(database_url)
    close_databases()
    raw = create_engine(database_url)
    with raw.begin() as connection:
        connection.execute(text("UPDATE schema_version SET version = :v"), {"v": SCHEMA_VERSION + 1})
    with pytest.raises(ReviewError, match=f"schema version {SCHEMA_VERSION + 1}"):
        open_database(database_url)
    with raw.connect() as connection:
        assert connection.execute(text("SELECT version FROM schema_version")).scalar_one() == SCHEMA_VERSION + 1
    raw.dispose()


def test_processes_opening_a_new_database_at_once_create_it_once(database_url):
    code = f"from core.review import open_database; open_database({database_url!r}); print('ok')"
    workers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(3)]
    results = [w.communicate(timeout=120) for w in workers]
    assert all(w.returncode == 0 for w in workers), [err for _, err in results]
    engine = open_database(database_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version FROM schema_version")).scalars().all() == [SCHEMA_VERSION]


def test_an_unusable_address_gets_a_sentence():
    with pytest.raises(ReviewError, match="not usable"):
        open_database("nosuchdb://x")
    with pytest.raises(ReviewError, match="database server cannot be reached"):
        open_database("postgresql+psycopg://nobody:x@127.0.0.1:1/none")


# --------------------------------------------------------------------------------------------------
# Sessions, readers and answers


def test_readers_join_by_name_once_and_come_back_by_their_key(database_url):
    engine = open_database(database_url)
    session, owner, keys, _ = new_session(engine)
    assert store.session_for_organiser(engine, owner).id == session.id
    assert store.reader_by_key(engine, keys["Ann"]).name == "Ann"
    cat, cat_key = store.join(engine, session.code, "  Cat ")
    assert cat.name == "Cat" and store.reader_by_key(engine, cat_key) == cat
    for taken in ("Ann", "ann", " ANN ", "Ａｎｎ"):  # a name is not a key: Ann's answers stay Ann's
        with pytest.raises(ReviewError, match="already joined"):
            store.join(engine, session.code, taken)
    with pytest.raises(ReviewError, match="mixes Cyrillic and Latin letters"):
        store.join(engine, session.code, "\u0410nn")
    for hidden in ("Cat\x00", "Dr\nEve"):  # one line, nothing invisible
        with pytest.raises(ReviewError, match="shows as nothing or breaks the line"):
            store.join(engine, session.code, hidden)
    assert store.join(engine, session.code, "Dr\u3000 Eve")[0].name == "Dr Eve"  # NFKC, one space
    for odd in ("x" * 500, "code\x00", "ümlaut"):  # refused before the database sees it
        with pytest.raises(ReviewError, match="no review session has this code"):
            store.join(engine, odd, "Zed")
    with pytest.raises(ReviewError, match="not valid"):
        store.reader_by_key(engine, owner)
    with pytest.raises(ReviewError, match="empty"):
        store.join(engine, session.code, " \t")
    closed, *_ = new_session(engine, joinable=False)
    with pytest.raises(ReviewError, match="does not take new readers"):
        store.join(engine, closed.code, "Dan")
    assert [r.name for r in store.session_readers(engine, session.id)] == ["Ann", "Bob", "Cat", "Dr Eve"]
    store.set_joinable(engine, session, False)
    with pytest.raises(ReviewError, match="does not take new readers"):
        store.join(engine, session.code, "Fay")


def test_an_answer_is_given_once_and_a_change_of_mind_is_kept_beside_it(database_url):
    engine = open_database(database_url)
    session, _, keys, cases = new_session(engine)
    ann = store.reader_by_key(engine, keys["Ann"])
    first = store.commit_answer(engine, ann, cases[0].id, "glioma", 4, "ring enhancement")
    with pytest.raises(ReviewError, match="already answered"):
        store.commit_answer(engine, ann, cases[0].id, "meningioma", 5)
    store.change_mind(engine, ann, cases[0].id, "meningioma", "dural tail after all")
    store.rate_heatmap(engine, ann, cases[0].id, "partly")
    kept = store.answers_of(engine, ann)[cases[0].id]
    assert (kept.label, kept.confidence, kept.note) == ("glioma", 4, "ring enhancement") == \
        (first.label, first.confidence, first.note)
    assert (kept.revised_label, kept.revised_note, kept.heatmap_rating) == ("meningioma", "dural tail after all",
                                                                              "partly")
    for bad in [dict(label="astrocytoma", confidence=3), dict(label="glioma", confidence=0),
                dict(label="glioma", confidence=True)]:
        with pytest.raises(ReviewError):
            store.commit_answer(engine, ann, cases[1].id, **bad)
    with pytest.raises(ReviewError, match="answer this case first"):
        store.rate_heatmap(engine, ann, cases[1].id, "right")
    with pytest.raises(ReviewError, match="at most"):
        store.commit_answer(engine, ann, cases[1].id, "glioma", 3, "x" * 5000)


def test_a_reader_sees_and_touches_only_their_own_session_and_answers(database_url):
    engine = open_database(database_url)
    session, _, keys, cases = new_session(engine)
    other, _, other_keys, other_cases = new_session(engine)
    ann, bob = store.reader_by_key(engine, keys["Ann"]), store.reader_by_key(engine, keys["Bob"])
    store.commit_answer(engine, ann, cases[0].id, "glioma", 3)
    assert store.answers_of(engine, bob) == {}
    with pytest.raises(ReviewError, match="not part of your session"):
        store.commit_answer(engine, ann, other_cases[0].id, "glioma", 3)
    # The reveal: in a blinded session only after one's own answer; in an open one at once.
    assert store.may_reveal(session, store.answers_of(engine, ann).get(cases[0].id))
    assert not store.may_reveal(session, store.answers_of(engine, bob).get(cases[0].id))
    open_session, *_ = new_session(engine, mode="open")
    assert store.may_reveal(open_session, None)


def test_resuming_goes_on_at_the_first_unanswered_case_in_reading_order(database_url):
    engine = open_database(database_url)
    _, _, keys, cases = new_session(engine, n=5)
    ann = store.reader_by_key(engine, keys["Ann"])
    for case in (cases[0], cases[1], cases[3]):
        store.commit_answer(engine, ann, case.id, "notumor", 2)
    assert store.next_position(cases, store.answers_of(engine, ann)) == 2
    store.commit_answer(engine, ann, cases[2].id, "notumor", 2)
    store.commit_answer(engine, ann, cases[4].id, "notumor", 2)
    assert store.next_position(cases, store.answers_of(engine, ann)) is None


def test_the_leaderboard_counts_right_answers(database_url):
    engine = open_database(database_url)
    session, _, keys, cases = new_session(engine, kind="quiz", readers=["Ann", "Bob", "Cat"])
    ann, bob = store.reader_by_key(engine, keys["Ann"]), store.reader_by_key(engine, keys["Bob"])
    for case in cases[:4]:
        store.commit_answer(engine, ann, case.id, case.reference, 3)
        store.commit_answer(engine, bob, case.id, "glioma", 3)   # right once: case 0 is a glioma
    assert store.scores(engine, session) == [("Ann", 4, 4), ("Bob", 1, 4), ("Cat", 0, 0)]


def test_the_leaderboard_breaks_ties_one_way_on_the_pages_and_in_the_report(database_url):
    """Ties on right answers: fewer answers given first, then the name (as the pages and the PDF list them)."""
    import re

    from pypdf import PdfReader

    from core.review.agreement import answers_table, session_summary
    from core.review.reports import session_report

    engine = open_database(database_url)
    session, _, keys, cases = new_session(engine, kind="quiz", readers=["cat", "Bob", "Ann", "Dan"])
    readers = {name: store.reader_by_key(engine, keys[name]) for name in keys}
    plan = {"Ann": 3, "Bob": 2, "cat": 2, "Dan": 2}  # right answers; Ann also answers one case wrong
    for name, right in plan.items():
        for case in cases[:right]:
            store.commit_answer(engine, readers[name], case.id, case.reference, 3)
    wrong = next(c for c in CLASSES if c != cases[5].reference)
    store.commit_answer(engine, readers["Ann"], cases[5].id, wrong, 3)
    store.commit_answer(engine, readers["Dan"], cases[5].id, wrong, 3)
    board = store.scores(engine, session)
    assert board == [("Ann", 3, 4), ("Bob", 2, 2), ("cat", 2, 2), ("Dan", 2, 3)]
    table = answers_table(cases, store.session_answers(engine, session))
    blob = session_report(session=session, cases=cases, table=table, summary=session_summary(table, CLASSES),
                          gallery=[], leaderboard=board)
    text = " ".join(page.extract_text() for page in PdfReader(__import__("io").BytesIO(blob)).pages)
    places = [re.search(rf"(\d)\s+{name}\s+{right}\s+{answered}", text) for name, right, answered in board]
    assert all(places) and [int(m.group(1)) for m in places] == [1, 2, 3, 4]


def test_a_database_at_the_third_schema_learns_when_its_readers_first_came(database_url):
    """Version 4 adds presenting, organisers and reading times. A reader of an older session counts as having
    opened their link when they first answered; one who never answered has not (the time they were named is not
    when they came, which the organiser's "joined" column used to show)."""
    from core.review.schema import MIGRATIONS, _versions

    raw = create_engine(database_url)
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    with raw.begin() as connection:
        _versions.create(connection)
        for _, migrate in MIGRATIONS[:3]:
            migrate(connection)
        connection.execute(_versions.insert().values(version=3))
    raw.dispose()
    engine = open_database(database_url)
    close_databases()
    raw = create_engine(database_url)  # one session made by the third version, put in after the upgrade's columns
    with raw.begin() as connection:
        connection.execute(text("DELETE FROM schema_version"))
        connection.execute(text("INSERT INTO schema_version (version) VALUES (3)"))
        for column in ("reading_seconds",):
            connection.execute(text(f"ALTER TABLE review_answers DROP COLUMN {column}"))
        connection.execute(text("ALTER TABLE review_cases DROP COLUMN revealed_at"))
        connection.execute(text("ALTER TABLE review_readers DROP COLUMN opened_at"))
        if connection.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE review_sessions DROP COLUMN organiser_id, DROP COLUMN presenter_key, "
                                    "DROP COLUMN paced, DROP COLUMN current_position, DROP COLUMN hide_answers, "
                                    "DROP COLUMN ended_at"))
        else:
            connection.execute(text("DROP INDEX ix_review_sessions_organiser_id"))
            connection.execute(text("DROP INDEX uq_review_sessions_presenter_key"))
            for column in ("organiser_id", "presenter_key", "paced", "current_position", "hide_answers", "ended_at"):
                connection.execute(text(f"ALTER TABLE review_sessions DROP COLUMN {column}"))
        connection.execute(text("DROP TABLE review_organisers"))
        connection.execute(text("INSERT INTO review_sessions (code, owner_key, name, mode, kind, joinable, classes, "
                                "source, model, created_at) VALUES ('c0de', 'k', 'Old quiz', 'blinded', 'quiz', "
                                ":yes, '[\"glioma\"]', '{}', '{}', :now)"), {"yes": True, "now": now})
        old = connection.execute(text("SELECT id FROM review_sessions")).scalar_one()
        connection.execute(text("INSERT INTO review_cases (session_id, position, image, image_sha256, title) "
                                "VALUES (:old, 0, 'a.jpg', :sha, 'Case 1')"), {"old": old, "sha": "a" * 64})
        case = connection.execute(text("SELECT id FROM review_cases")).scalar_one()
        for name in ("Ann", "Bob"):
            connection.execute(text("INSERT INTO review_readers (session_id, name, name_key, name_skeleton, key, "
                                    "joined_at) VALUES (:old, :name, :key, :name, :key, :now)"),
                               {"old": old, "name": name, "key": name.lower(), "now": now})
        connection.execute(text("INSERT INTO review_answers (reader_id, case_id, label, confidence, note, answered_at) "
                                "SELECT id, :case, 'glioma', 3, '', :later FROM review_readers WHERE name = 'Ann'"),
                           {"case": case, "later": now + dt.timedelta(minutes=5)})
    raw.dispose()
    engine = open_database(database_url)
    with engine.connect() as connection:
        assert schema_version(connection) == SCHEMA_VERSION
    session = store.session_by_code(engine, "c0de")
    assert not session.paced and not session.hide_answers and session.ended_at is None and not session.has_presenter
    assert session.display_code == "c0de"  # an older code is shown as it was
    ann, bob = store.session_readers(engine, old)
    assert ann.opened_at == now + dt.timedelta(minutes=5) and bob.opened_at is None
    (answer,) = store.session_answers(engine, session)
    assert answer["reading_seconds"] is None


def test_join_codes_have_no_characters_taken_for_each_other_and_are_found_as_typed(database_url):
    engine = open_database(database_url)
    codes = {new_session(engine, n=1)[0].code for _ in range(30)}
    assert len(codes) == 30
    for code in codes:
        assert len(code) == store.CODE_LENGTH and not set(code) & set("0O1lIoi")
    session, *_ = new_session(engine, n=1)
    shown = session.display_code
    assert shown == f"{session.code[:4]}-{session.code[4:]}"
    for typed in (shown, shown.lower(), f" {session.code[:4]} {session.code[4:].lower()} ", session.code):
        assert store.session_by_code(engine, typed).id == session.id
    with pytest.raises(ReviewError, match="no review session has this code"):
        store.session_by_code(engine, "ABCD-EFG")


def test_readers_are_marked_when_they_first_open_their_link_and_reading_times_are_kept(database_url):
    engine = open_database(database_url)
    session, _, keys, cases = new_session(engine)
    ann = store.reader_by_key(engine, keys["Ann"])
    assert ann.opened_at is None  # named, not yet come
    opened = store.mark_opened(engine, ann)
    assert opened.opened_at is not None and store.mark_opened(engine, opened).opened_at == opened.opened_at
    assert store.reader_by_key(engine, keys["Ann"]).opened_at == opened.opened_at
    store.commit_answer(engine, ann, cases[0].id, "glioma", 3, reading_seconds=12.5)
    bob = store.reader_by_key(engine, keys["Bob"])
    for k, odd in enumerate((-1.0, float("nan"), float("inf"), 10 ** 9), 1):  # not a reading: not kept, the answer is
        store.commit_answer(engine, bob, cases[k].id, "glioma", 3, reading_seconds=odd)
    times = {(a["reader"], a["position"]): a["reading_seconds"] for a in store.session_answers(engine, session)}
    assert times == {("Ann", 0): 12.5, ("Bob", 1): None, ("Bob", 2): None, ("Bob", 3): None, ("Bob", 4): None}
    assert store.answers_of(engine, ann)[cases[0].id].reading_seconds == 12.5


def test_a_paced_quiz_takes_answers_only_up_to_the_teachers_case_and_reveals_on_the_teachers_word(database_url):
    engine = open_database(database_url)
    with pytest.raises(ReviewError, match="only a quiz"):
        new_session(engine, paced=True)
    session, owner, keys, cases = new_session(engine, n=3, kind="quiz", paced=True)
    assert session.paced and session.hide_answers and session.answers_hidden
    ann, bob = store.reader_by_key(engine, keys["Ann"]), store.reader_by_key(engine, keys["Bob"])
    assert store.next_position(cases, {}, session) is None and store.waiting_for_teacher(session, cases, {})
    with pytest.raises(ReviewError, match="no longer takes answers|not opened"):
        store.commit_answer(engine, ann, cases[0].id, "glioma", 3)
    with pytest.raises(ReviewError, match="no case 4"):
        store.move_class(engine, session, 3)
    session = store.move_class(engine, session, 0)
    assert store.next_position(cases, {}, session) == 0
    store.commit_answer(engine, ann, cases[0].id, "glioma", 3)
    with pytest.raises(ReviewError, match="no longer takes answers|not opened"):
        store.commit_answer(engine, ann, cases[1].id, "glioma", 3)
    answer = store.answers_of(engine, ann)[cases[0].id]
    assert not store.may_reveal(session, answer, cases[0])  # answered, but the teacher has not revealed it
    # What the presenter may show: who answered, never what, until the reveal.
    assert store.answered_cases(engine, session) == {ann.id: {cases[0].id}}
    with pytest.raises(ReviewError, match="once it is revealed"):
        store.class_spread(engine, session, cases[0].id)
    presenter = store.new_presenter_key(engine, session)
    assert store.session_for_presenter(engine, presenter).id == session.id
    for wrong in (owner, keys["Ann"], presenter + "x"):
        with pytest.raises(ReviewError, match="presenter's link is not valid"):
            store.session_for_presenter(engine, wrong)
    newer = store.new_presenter_key(engine, session)
    with pytest.raises(ReviewError, match="presenter's link is not valid"):
        store.session_for_presenter(engine, presenter)  # a new presenter link ends the old one
    assert store.session_for_presenter(engine, newer).has_presenter
    store.reveal_case(engine, session, cases[0].id)
    cases = store.session_cases(engine, session.id)
    assert store.may_reveal(session, answer, cases[0]) and store.class_spread(engine, session, cases[0].id) == {
        "glioma": 1}
    with pytest.raises(ReviewError, match="no longer takes answers"):  # Bob has seen the answer on the projector
        store.commit_answer(engine, bob, cases[0].id, "glioma", 3)
    session = store.move_class(engine, session, 1)
    assert store.next_position(cases, store.answers_of(engine, bob), session) == 1  # the revealed case is skipped
    session = store.end_session(engine, session)
    assert not session.answers_hidden and store.next_position(cases, {}, session) is None
    assert store.may_reveal(session, None, cases[2]) is False  # an unanswered case in a blinded session stays hidden
    assert store.class_spread(engine, session, cases[2].id) == {}
    with pytest.raises(ReviewError, match="not part of the session"):
        store.reveal_case(engine, session, cases[0].id + 1000)
    with pytest.raises(ReviewError, match="not teacher-paced"):
        store.move_class(engine, new_session(engine, kind="quiz")[0], 0)


def test_an_organiser_finds_their_sessions_again_by_their_own_key(database_url):
    engine = open_database(database_url)
    mine = store.new_organiser(engine)
    first, *_ = new_session(engine, organiser_key=mine)
    second, *_ = new_session(engine, organiser_key=mine)
    someone_elses, *_ = new_session(engine, organiser_key=store.new_organiser(engine))
    assert [s.id for s in store.organiser_sessions(engine, mine)] == [second.id, first.id]
    assert store.organisers_session(engine, mine, first.id).id == first.id
    with pytest.raises(ReviewError, match="not in your list"):
        store.organisers_session(engine, mine, someone_elses.id)
    with pytest.raises(ReviewError, match="sessions link is not valid"):
        store.organiser_sessions(engine, mine + "x")
    with pytest.raises(ReviewError, match="sessions link is not valid"):
        new_session(engine, organiser_key="made-up")
    assert {s.id for s in store.all_sessions(engine)} >= {first.id, second.id, someone_elses.id}


def test_a_session_is_refused_with_a_reason_when_it_cannot_be_made(database_url):
    engine = open_database(database_url)
    with pytest.raises(ReviewError, match="no cases"):
        store.create_session(engine, "empty", [], CLASSES)
    with pytest.raises(ReviewError, match="readers 1 and 2 of the list have the same name"):
        store.create_session(engine, "twins", make_cases(2), CLASSES, readers=["Ann", "ann "])
    # The organiser is told which name of the list to change (a look-alike shows as the name it passes for).
    with pytest.raises(ReviewError, match="readers 1 and 3 of the list have the same name"):
        store.create_session(engine, "twins", make_cases(2), CLASSES, readers=["Bob", "Ann", "B0b"])
    with pytest.raises(ReviewError, match="reader 3 of the list: a word of the reader's name mixes Cyrillic and Latin"):
        store.create_session(engine, "look-alike", make_cases(2), CLASSES, readers=["Ann", "Bob", "\u0410nn"])
    with pytest.raises(ReviewError, match=r"reader 2 of the list: .* shows as nothing .*U\+200B"):
        store.create_session(engine, "hidden", make_cases(2), CLASSES, readers=["Ann", "Bob\u200b"])
    with pytest.raises(ReviewError, match="nobody could open"):
        store.create_session(engine, "closed", make_cases(2), CLASSES, joinable=False)
    long_title = [NewCase(image="x.png", image_sha256="0" * 64, title="t\x00" * 2000)]
    session, *_ = store.create_session(engine, "long names", long_title, CLASSES)
    title = store.session_cases(engine, session.id)[0].title
    assert len(title) == 1000 and title.endswith("…") and "\x00" not in title
    with pytest.raises(ReviewError, match="unknown mode"):
        store.create_session(engine, "x", make_cases(2), CLASSES, mode="peek")


# --------------------------------------------------------------------------------------------------
# Nothing lost


def worker(database_url: str, key: str, case_ids, gate: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, **({"REVIEW_WORKER_WAIT": str(gate)} if gate else {})}
    process = subprocess.Popen([sys.executable, str(WORKER), database_url, key, *map(str, case_ids)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "ready", process.stderr.read()
    return process


def test_a_bug_or_another_broken_constraint_is_not_called_a_busy_database_or_a_taken_name(database_url,
                                                                                         monkeypatch):
    """Only the database failing (locked, read-only, full, damaged, unreachable) is DatabaseUnavailable, "try again".
    A value the driver cannot take (a bug), a value too long for its column, and a broken constraint other than the
    one a refusal is about go on as the driver's errors, for the page's error boundary to report as unexpected."""
    from sqlalchemy import event
    from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError

    engine = open_database(database_url)
    session, _, keys, cases = new_session(engine, n=2)
    ann = store.reader_by_key(engine, keys["Ann"])
    with pytest.raises(ProgrammingError):
        store.answers_of(engine, dataclasses.replace(ann, id=object()))
    tried("library: core.review.store", "a reader id the database driver cannot bind")
    with pytest.raises(IntegrityError):  # no such reader: not "you have already answered this case"
        store.commit_answer(engine, dataclasses.replace(ann, id=ann.id + 10_000), cases[0].id, "glioma", 3)
    tried("library: core.review.store.commit_answer", "an answer of a reader who is not in the database")
    monkeypatch.setattr(store, "_new_key", lambda: "one key for everyone")
    store.join(engine, session.code, "Cat")
    with pytest.raises(IntegrityError):  # the personal key is taken, not the name
        store.join(engine, session.code, "Dan")
    tried("library: core.review.store.join", "a personal key another reader has")

    @event.listens_for(engine, "before_cursor_execute")
    def too_long(connection, cursor, statement, *_):
        if statement.startswith("INSERT INTO review_answers"):
            raise engine.dialect.loaded_dbapi.DataError("value too long for type character varying(32)")

    with pytest.raises(DataError):
        store.commit_answer(engine, ann, cases[0].id, "glioma", 3)
    tried("library: core.review.store.commit_answer", "a value too long for its column")
    event.remove(engine, "before_cursor_execute", too_long)
    assert [r.name for r in store.session_readers(engine, session.id)] == ["Ann", "Bob", "Cat"]
    assert store.answers_of(engine, ann) == {}


def test_every_answer_committed_before_a_sigkill_is_there_after_it(database_url):
    engine = open_database(database_url)
    _, _, keys, cases = new_session(engine, n=400)
    process = worker(database_url, keys["Ann"], [c.id for c in cases])
    acknowledged = []
    for line in process.stdout:
        acknowledged.append(int(line.split()[1]))
        if len(acknowledged) == 25:
            process.send_signal(signal.SIGKILL)  # mid-stream: the worker is busy committing the next answers
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    close_databases()
    ann = store.reader_by_key(open_database(database_url), keys["Ann"])
    kept = store.answers_of(open_database(database_url), ann)
    assert set(acknowledged) <= set(kept)
    assert len(kept) < len(cases)  # it really was stopped part-way
    assert all(kept[c].note == f"answer of Ann to {c}" for c in acknowledged)


def test_two_readers_answering_at_once_both_keep_every_answer(database_url, tmp_path):
    engine = open_database(database_url)
    _, _, keys, cases = new_session(engine, n=40)
    gate = tmp_path / "go"
    ids = [c.id for c in cases]
    processes = [worker(database_url, keys[name], ids, gate) for name in ("Ann", "Bob")]
    gate.touch()
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err for _, err in outputs]
    for name, (out, _) in zip(("Ann", "Bob"), outputs):
        assert out.split().count("committed") == len(ids)
        reader = store.reader_by_key(engine, keys[name])
        assert set(store.answers_of(engine, reader)) == set(ids)


def test_one_reader_answering_from_two_windows_at_once_keeps_exactly_one_answer(database_url, tmp_path):
    engine = open_database(database_url)
    _, _, keys, cases = new_session(engine, n=30)
    gate = tmp_path / "go"
    ids = [c.id for c in cases]
    processes = [worker(database_url, keys["Ann"], ids, gate) for _ in range(2)]
    time.sleep(0.05)
    gate.touch()
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err for _, err in outputs]
    for out, _ in outputs:  # every attempt ended in a commit or a refusal, none in an error
        assert len(out.split()) == 2 * len(ids)
    committed = [int(line.split()[1]) for out, _ in outputs for line in out.splitlines()
                 if line.startswith("committed")]
    assert sorted(committed) == sorted(ids)  # each case answered by exactly one of the two windows
    assert len(store.answers_of(engine, store.reader_by_key(engine, keys["Ann"]))) == len(ids)


def test_sqlite_commits_durably_and_writes_take_the_lock_at_once(tmp_path):
    """What the SQLite file is opened with (a killed process loses nothing with any journal; a power cut needs WAL
    and full sync), and the statements each kind of transaction begins with."""
    from sqlalchemy import event

    from core.review.schema import writing

    engine = open_database(f"sqlite:///{tmp_path / 'review.sqlite'}")
    statements = []

    @event.listens_for(engine, "connect")
    def trace(dbapi_connection, _record):
        dbapi_connection.set_trace_callback(statements.append)

    with engine.connect() as connection:
        pragmas = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                   for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 15000}
    session, _, keys, cases = new_session(engine, n=2)
    statements.clear()
    store.answers_of(engine, store.reader_by_key(engine, keys["Ann"]))
    assert "BEGIN" in statements and "BEGIN IMMEDIATE" not in statements  # reads never wait for writers
    statements.clear()
    store.commit_answer(engine, store.reader_by_key(engine, keys["Ann"]), cases[0].id, "glioma", 3)
    assert "BEGIN IMMEDIATE" in statements and statements[-1] == "COMMIT"
    assert writing(engine).get_execution_options()["review_write"]


def test_a_database_at_the_first_schema_is_upgraded_in_place_and_keeps_its_sessions(database_url):
    """A database written by the first release (schema version 1) gains the columns of the newer versions when
    opened, once, and every session, case and answer in it is still there."""
    from core.review.schema import MIGRATIONS, _versions

    raw = create_engine(database_url)
    with raw.begin() as connection:  # what the first release made, with one session in it
        _versions.create(connection)
        MIGRATIONS[0][1](connection)
        connection.execute(_versions.insert().values(version=1))
        connection.execute(text("INSERT INTO review_sessions (code, owner_key, name, mode, kind, joinable, "
                                "classes, source, model, created_at) VALUES ('c0de', 'k', 'Old session', "
                                "'blinded', 'review', :yes, '[\"glioma\"]', '{}', '{}', :now)"),
                           {"yes": True, "now": dt.datetime(2026, 1, 5, tzinfo=dt.UTC)})
        old = connection.execute(text("SELECT id FROM review_sessions WHERE code = 'c0de'")).scalar_one()
        connection.execute(text("INSERT INTO review_cases (session_id, position, image, image_sha256, title) "
                                "VALUES (:old, 0, 'Testing/glioma/1.jpg', :sha, 'case one')"), {"old": old,
                                                                                                "sha": "a" * 64})
    raw.dispose()
    engine = open_database(database_url)
    with engine.connect() as connection:
        assert schema_version(connection) == SCHEMA_VERSION
        assert {c["name"] for c in inspect(connection).get_columns("review_cases")} >= {"stack", "stack_sha256",
                                                                                       "stack_slice"}
    (case,) = store.session_cases(engine, old)
    assert case.title == "case one" and case.stack is None and case.stack_slice is None
    # The upgraded database takes a case with a volume's slices, and gives them back.
    volume = NewCase(image="uploads/a.png", image_sha256="b" * 64, title="brain.nii.gz, axial slice 3 of 5",
                     stack="uploads/c.npz", stack_sha256="c" * 64, stack_slice=2)
    session, _, _ = store.create_session(engine, "Volumes", [volume, *make_cases(1)], CLASSES, readers=["Ann"])
    first, second = store.session_cases(engine, session.id)
    assert (first.stack, first.stack_sha256, first.stack_slice) == ("uploads/c.npz", "c" * 64, 2)
    assert second.stack is None and second.stack_slice is None


def test_a_database_at_the_second_schema_gets_both_name_keys_and_keeps_every_reader(database_url):
    """Version 3 computes every reader's name keys again: case folded, and by the look-alike skeleton with case kept.
    Two readers who joined under names that now fall together ("Ann" and "Аnn" with a Cyrillic A; "Ian" with a
    capital I and "lan") both stay with their answers, and nobody can join as either any more. A reader named like
    the key another reader is given while keys are moved out of each other's way ("#1" beside reader 1, which the
    first version of this upgrade failed on) is no conflict, and nor is a key that becomes another reader's old
    key."""
    from core.review.schema import MIGRATIONS, _versions

    raw = create_engine(database_url)
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    with raw.begin() as connection:  # what the second release made, with the keys it computed
        _versions.create(connection)
        for _, migrate in MIGRATIONS[:2]:
            migrate(connection)
        connection.execute(_versions.insert().values(version=2))
        connection.execute(text("INSERT INTO review_sessions (code, owner_key, name, mode, kind, joinable, classes, "
                                "source, model, created_at) VALUES ('c0de', 'k', 'Old session', 'blinded', 'review', "
                                ":yes, '[\"glioma\", \"notumor\"]', '{}', '{}', :now)"), {"yes": True, "now": now})
        old = connection.execute(text("SELECT id FROM review_sessions WHERE code = 'c0de'")).scalar_one()
        connection.execute(text("INSERT INTO review_cases (session_id, position, image, image_sha256, title) "
                                "VALUES (:old, 0, 'Testing/glioma/1.jpg', :sha, 'case one')"), {"old": old,
                                                                                                "sha": "a" * 64})
        case = connection.execute(text("SELECT id FROM review_cases")).scalar_one()

        def add_reader(name: str) -> int:
            digest = f"{len(name)}{name.encode().hex()}"[:64]
            connection.execute(text("INSERT INTO review_readers (session_id, name, name_key, key, joined_at) VALUES "
                                    "(:old, :name, :key, :digest, :now)"),
                               {"old": old, "name": name, "key": name.casefold(), "digest": digest, "now": now})
            connection.execute(text("INSERT INTO review_answers (reader_id, case_id, label, confidence, note, "
                                    "answered_at) SELECT id, :case, 'glioma', 3, :name, :now FROM review_readers "
                                    "WHERE key = :digest"), {"case": case, "name": name, "digest": digest, "now": now})
            return connection.execute(text("SELECT id FROM review_readers WHERE key = :digest"),
                                      {"digest": digest}).scalar_one()

        first = add_reader("Ann")
        names = ["Ann", "\u0410nn", f"#{first}", "Ian", "lan", "Bob"]
        for name in names[1:]:
            add_reader(name)
    raw.dispose()
    engine = open_database(database_url)
    with engine.connect() as connection:
        assert schema_version(connection) == SCHEMA_VERSION
        keys = connection.execute(text("SELECT name_key, name_skeleton FROM review_readers ORDER BY id")).all()
    assert [tuple(k) for k in keys] == [("ann", "Ann"), ("\u0430nn", f"Ann\x01{first + 1}"),
                                        (f"#{first}", f"#{str(first).replace('1', 'l').replace('0', 'o')}"),
                                        ("ian", "lan"), ("lan", f"lan\x01{first + 4}"), ("bob", "Bob")]
    session = store.session_by_code(engine, "c0de")
    assert [r.name for r in store.session_readers(engine, old)] == names
    assert sorted(a["note"] for a in store.session_answers(engine, session)) == sorted(names)
    for taken in ("ANN", "Ann", "B0b", "IAN", "Ian", "LAN", f"#{first}"):
        with pytest.raises(ReviewError, match="already joined"):
            store.join(engine, "c0de", taken)
    # The kept reader "\u0430nn" (a Cyrillic a) stays with their answers, though such a name could not join today.
    with pytest.raises(ReviewError, match="mixes Cyrillic and Latin letters"):
        store.join(engine, "c0de", "\u0430NN")
    assert [store.join(engine, "c0de", name)[0].name for name in ("Cat", "Dan")] == ["Cat", "Dan"]


def test_names_are_compared_by_two_keys_each_its_own_key():
    """The table of look-alikes (core.review.names) maps single characters of other scripts to a single Latin letter
    of the same case, but for those that look like a small l (a capital I) or an o; and each key is its own key,
    so that comparing keys is comparing names."""
    import unicodedata

    from core.review.names import LOOK_ALIKES, name_key, name_skeleton

    for point, letter in LOOK_ALIKES.items():
        if letter is None:  # the joiners, which show as nothing
            assert chr(point) in "\u200c\u200d"
            continue
        assert len(letter) == 1 and letter.isascii() and letter.isalpha() and chr(point) != letter
        assert letter in "lo" or letter.isupper() == chr(point).isupper(), unicodedata.name(chr(point))
    for name in ("Аnn", "ТОМ", "Bi11", "Zoë", "Ηλίας", "李 华", "Arnold", "Straße", "Ian", "\u0646\u0627\u200c\u0647"):
        for key in (name_key, name_skeleton):
            assert key(key(name)) == key(name)
    assert name_key("Straße") == name_key("STRASSE") and name_skeleton("Straße") != name_skeleton("Strasse")
    assert name_skeleton("Zoë") != name_skeleton("Zoe")  # an accent is not a look-alike
    assert name_skeleton("Ian") == name_skeleton("lan") != name_skeleton("Lan")
