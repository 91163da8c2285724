"""Starting a review session or quiz, and the organiser's view of it: the links to hand out, every reader's
answers per case as they come in (the teacher's view), the summary with its agreement figures, the CSV export and
the PDF session report."""

from __future__ import annotations

import functools
import re

import pandas as pd
import streamlit as st

from core.checkpoint import CheckpointError
from core.review import ReviewError, store, words
from core.review.agreement import answers_for_people, answers_table, confusion, session_summary
from core.review.cases import (
    ORDERS,
    SELECTIONS,
    cases_from_run,
    cases_from_uploads,
    keep_uploads,
    run_model,
    run_source,
    titled_uploads,
)
from core.review.schema import utc_now
from core.review.store import KINDS, MODES, RATINGS, CaseView, SessionView
from core.runs import RunError
from core.tables import csv_bytes
from dashboard.captions import md, sentence
from dashboard.charts import confusion_matrix_figure
from dashboard.common import (
    ROOT,
    checkpoint_file,
    current_model_path,
    data_dir,
    error_boundary,
    file_digest,
    found_runs,
    get_classifier,
    load_run,
    run_images_root,
    run_title,
)
from dashboard.sessions import (
    JOIN,
    MANAGE,
    MINE,
    OPEN,
    ORGANISER,
    PRESENTER,
    PROJECTED,
    READER,
    case_pictures,
    join_panel,
    label,
    leaderboard_table,
    page_link,
    pil,
    scan_beside_heatmap,
    server_list_allowed,
)

CREATED_KEY = "review.created"   # the keys of sessions made in this browser session, shown to their organiser once
ORGANISER_KEY = "review.organiser_key"  # this browser's organiser key (the list of their sessions), once made
UPLOADS_KEY = "review.new.prepared"  # uploaded scans checked and answered, until the files change
GALLERY_LIMIT = 12               # disagreement cases in the session report
DISCUSSION_LIMIT = 8             # most-missed cases shown for discussion
LIVE_SECONDS = 3


# --------------------------------------------------------------------------------------------------
# Starting a session


def start_page(engine) -> None:
    st.title("Review sessions and quizzes")
    st.write("A review session puts a list of scans in front of one or more readers. In a blinded session each "
             "reader commits a class and a confidence before seeing the model's answer, its heatmap and the "
             "reference; every answer is saved as it is given, and the summary compares readers with the reference "
             "and with the model. A teaching quiz is the same blinded flow for a class, with a score and a "
             "leaderboard.")
    with st.container(border=True):
        given = st.text_input("Have a session's link or code? Join it", key="review.join_code", max_chars=2000,
                              placeholder="paste the link you were given, or type the code (such as ABCD-2345)")
        if st.button("Join", key="review.join_go", disabled=not given.strip()):
            st.query_params.from_dict(pasted_address(given))
            st.rerun()
    mine = st.session_state.get(ORGANISER_KEY)
    if mine and st.button("Your sessions", key="review.start.mine", icon=":material/list:"):
        st.query_params.from_dict({MINE: mine})
        st.rerun()
    if server_list_allowed():
        with st.expander("Every session on this server"):
            sessions_list(engine, store.all_sessions(engine), title=False)
    st.subheader("Start a session")
    name = st.text_input("Name", key="review.new.name", max_chars=store.NAME_LENGTH,
                         placeholder="e.g. Neuro-oncology review, 3 December")
    c1, c2 = st.columns(2)
    kind = c1.radio("Kind", list(KINDS), format_func=KINDS.get, key="review.new.kind")
    mode = c2.radio("Mode", list(MODES), format_func=MODES.get, key="review.new.mode", disabled=kind == "quiz",
                    help="A quiz is always blinded")
    readers = st.text_area("Readers, one name per line", key="review.new.readers", height=90,
                           help="Each named reader gets a personal link. Leave empty when readers join by the "
                                "session's link and type their own name.")
    joinable = st.checkbox("Readers may join by the session's link", value=True, key="review.new.joinable")
    paced = False
    if kind == "quiz":
        paced = st.radio("Pace", [False, True], key="review.new.paced", horizontal=True,
                         format_func={False: "Each student at their own pace",
                                      True: "Teacher-paced: the class moves case by case"}.get,
                         help="Teacher-paced: from the presenter's page (the one to project) you open each case, "
                              "reveal the class's answers beside the reference and the heatmap, and move on")
    hide = st.checkbox("Hide the answers on the organiser's page until the end", value=kind == "quiz",
                       key=f"review.new.hide.{kind}",
                       help="The live view, the summary and the exports show who has answered and not what until "
                            "you end the session (you can change this later)")
    source = st.radio("Cases", ["run", "uploads"], horizontal=True, key="review.new.source",
                      format_func={"run": "From an evaluation run", "uploads": "Scans uploaded now"}.get)
    made = run_cases() if source == "run" else upload_cases()
    if made is None:
        return
    cases, origin, model, classes, blobs = made
    st.caption(f"{len(cases)} case{'s' if len(cases) != 1 else ''} in the session.")
    if st.button("Create the session", type="primary", key="review.new.create", disabled=not cases):
        names = [line for line in readers.splitlines() if line.strip()]
        try:
            keep_uploads(data_dir(), blobs)  # first: a session never names a scan that is not on disk
            options = dict(mode="blinded" if kind == "quiz" else mode, kind=kind, readers=names,
                           joinable=joinable, source=origin, model=model, paced=paced, hide_answers=hide)
            session, owner_key, reader_keys = store.create_session(
                engine, name, cases, classes, organiser_key=organiser_key(engine), **options)
        except ReviewError as error:
            st.error(sentence(error))
            return
        except OSError as error:
            st.error(not_kept(error))
            return
        st.session_state.setdefault(CREATED_KEY, {})[session.id] = reader_keys
        # The list of their sessions goes into the (private) address too: a reload keeps the way back to it.
        st.query_params.from_dict({ORGANISER: owner_key, MINE: organiser_key(engine)})
        st.rerun()


def not_kept(error: OSError) -> str:
    """Why the uploaded scans could not be written to the data folder, and what to do (the session was not made,
    and the page keeps every choice for another try)."""
    import errno

    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return ("The server's disk is full, so the uploaded scans cannot be kept and the session was not made; ask "
                "whoever runs the server to free some space, then create the session again.")
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ("The dashboard's data folder on the server cannot be written to, so the uploaded scans cannot be "
                "kept and the session was not made; ask whoever runs the server to make it writable, then create "
                "the session again.")
    why = md(error.strerror or "the disk failed")
    return (f"The uploaded scans could not be written to the data folder ({why}), so the session was not made; try "
            "again, and ask whoever runs the server if it goes on.")


def session_code(given: str) -> str:
    """The session code in a pasted join link (its ?session= parameter), or the text itself when it is a code."""
    return pasted_address(given).get(JOIN, given.strip())


def pasted_address(given: str) -> dict[str, str]:
    """Where a pasted link or code leads: a join link or a code to its session's join page; an organiser's
    sessions link to their list."""
    from urllib.parse import parse_qs, urlsplit

    given = given.strip()
    if "?" in given:
        query = parse_qs(urlsplit(given).query)
        for name in (JOIN, MINE):
            if query.get(name):
                return {name: query[name][0].strip()}
    return {JOIN: given}


def remember_organiser(engine, mine: str) -> None:
    """Take an organiser's key from the page's address (after a reload, or a link opened in a new browser) as this
    browser's, when it is valid: the start page then offers their list, and the next session they make joins it."""
    try:
        store.organiser_sessions(engine, mine)
    except ReviewError:
        return
    st.session_state[ORGANISER_KEY] = mine


def organiser_key(engine) -> str:
    """This browser's organiser key (made with the first session it creates), under which its sessions are
    listed; a new one when the one remembered is not in this database."""
    mine = st.session_state.get(ORGANISER_KEY)
    if mine:
        try:
            store.organiser_sessions(engine, mine)
            return mine
        except ReviewError:
            pass
    mine = store.new_organiser(engine)
    st.session_state[ORGANISER_KEY] = mine
    return mine


def sessions_list(engine, sessions: list[SessionView], mine: str | None = None, title: bool = True) -> None:
    """A list of sessions, newest first, each to open in the organiser's view (by the organiser's own key, or from
    the server-wide list)."""
    if mine:
        remember_organiser(engine, mine)
    if title:
        st.title("Your sessions")
        st.caption("Every session made under your organiser's link. Keep the link private: it opens their answers.")
        if st.button("Start another session", key="review.list.new", icon=":material/add:"):
            st.query_params.clear()
            st.rerun()
    if not sessions:
        st.info("No sessions yet.")
        return
    rows = [{"made (UTC)": f"{s.created_at:%Y-%m-%d %H:%M}", "name": s.name, "kind": KINDS[s.kind],
             "join code": s.display_code, "ended": "yes" if s.ended_at else "no"} for s in sessions]
    st.dataframe(rows, hide_index=True, width="stretch")
    chosen = st.selectbox("Open", sessions, index=None, format_func=lambda s: f"{s.name} ({s.created_at:%Y-%m-%d})",
                          key="review.list.open")
    if chosen is not None:
        st.query_params.from_dict({MINE: mine, OPEN: str(chosen.id)} if mine else {MANAGE: str(chosen.id)})
        st.rerun()


def upload_editor(cases: list, classes: list[str]) -> tuple[pd.DataFrame, bool]:
    """A table of the uploaded scans in which the organiser may give each one a title of their own and its true
    class (a quiz of one's own scans is then scored); and whether to keep the files' names as titles. The names are
    shown here, to the person who uploaded the files, and stored only when asked."""
    st.caption("A scan is stored under a neutral title such as “Case 3 (picture)”, numbered in reading order, "
               "unless you type one: a file's name can identify the patient (a PACS export is named by the scan's "
               "UID). Give the true class of each scan you know it for (optional): readers are then scored "
               "against it.")
    empty = pd.Series([pd.NA] * len(cases), dtype="string")  # shown as empty cells (a column of None shows "None")
    table = pd.DataFrame({"file": [c.upload.name if c.upload else c.title for c in cases],
                          "title": empty, "reference": empty.copy()})
    edited = st.data_editor(table, hide_index=True, width="stretch", disabled=["file"], key="review.new.references",
                            column_config={
                                "file": st.column_config.TextColumn("file (shown here only)"),
                                "title": st.column_config.TextColumn("title (optional)", max_chars=store.NAME_LENGTH),
                                "reference": st.column_config.SelectboxColumn(
                                    "reference (optional)", options=[label(c) for c in classes])})
    keep_names = st.checkbox("Keep the file names as titles", value=False, key="review.new.keep_names",
                             help="Readers see a case's title once it is revealed, and the organiser's page, the "
                                  "CSV files and the PDF reports show it. Leave this off for files named by "
                                  "patient, accession number or UID.")
    return edited, keep_names


def with_references(cases: list, edited: pd.DataFrame, classes: list[str]) -> list:
    """The cases with the references chosen in the editor (shown by their display names), in the same order."""
    import dataclasses

    by_label = {label(c): c for c in classes}
    chosen = [by_label.get(value) if isinstance(value, str) else None for value in edited["reference"]]
    return [dataclasses.replace(case, reference=reference) for case, reference in zip(cases, chosen)]


def order_choice(prefix: str) -> tuple[str, int]:
    """As listed or shuffled (the default: a list sorted by class would tell a blinded reader what comes next)."""
    c1, c2 = st.columns(2)
    order = c1.radio("Order", list(ORDERS), index=list(ORDERS).index("shuffled"), format_func=ORDERS.get,
                     horizontal=True, key=f"{prefix}.order")
    seed = int(c2.number_input("Seed (sample and shuffle)", 0, 2**31 - 1, 0, key=f"{prefix}.seed"))
    return order, seed


def run_cases() -> tuple[list, dict, dict, list, dict] | None:
    runs = found_runs()
    if not runs:
        st.info("No evaluation runs were found (assets/runs, outputs/).")
        return None
    chosen = st.selectbox("Evaluation run", [str(p) for p in runs], format_func=run_title, key="review.new.run")
    run = load_run(chosen)
    c1, c2, c3 = st.columns(3)
    selection = c1.selectbox("Which cases", list(SELECTIONS), index=list(SELECTIONS).index("sample"),
                             format_func=SELECTIONS.get, key="review.new.selection")
    only = c2.selectbox("Of the class", ["any", *run.classes], key="review.new.class",
                        format_func=lambda c: "any class" if c == "any" else label(c))
    count = c3.number_input("How many", 1, store.MAX_CASES, 20, key="review.new.count",
                            disabled=selection not in ("uncertain", "sample"))
    order, seed = order_choice("review.new")
    choice = {"selection": selection, "true_class": None if only == "any" else only,
              "count": int(count) if selection in ("uncertain", "sample") else None, "seed": seed, "order": order}
    images_root = run_images_root(run)
    try:
        cases = cases_from_run(run, images_root, **choice)
    except (ReviewError, ValueError) as error:
        st.error(sentence(error))
        return None
    if images_root is None:
        st.warning("The run's images are not on this machine (set the datasets folder in the sidebar): readers would "
                   "see no scans.")
    return cases, run_source(run, ROOT, images_root, **choice), run_model(run), list(run.classes), {}


def upload_cases() -> tuple[list, dict, dict, list, dict] | None:
    files = st.file_uploader("Scans: pictures (PNG, JPEG, BMP, TIFF), figshare .mat slices, DICOM (the files of a "
                             "series together, or a zip) and NIfTI volumes", type=None,
                             accept_multiple_files=True, key="review.new.uploads",
                             help="Each scan is one case, kept once, by its content, in the dashboard's data folder. "
                                  "The model in the sidebar answers it now: a DICOM series or NIfTI volume on its "
                                  "middle slice (axial for NIfTI), kept with up to 15 slices on either side for "
                                  "readers to scroll, as 8-bit pixels only, never as its files: nothing from a "
                                  "header is stored, nor a file's name unless you keep it as a title. Pixels can "
                                  "still show a face (deface research volumes first); "
                                  "a file whose header flags burned-in annotation is refused.")
    order, seed = order_choice("review.new.uploaded")
    classifier = get_classifier()
    if not files or classifier is None:
        return None
    if len(files) > store.MAX_CASES:
        st.error(f"At most {store.MAX_CASES} scans can make one session.")
        return None
    file = checkpoint_file(current_model_path())
    # Checked and answered once per set of files and model, not again on every change of another widget.
    signature = (tuple(f.file_id for f in files), str(file), file_digest(file))
    prepared = st.session_state.get(UPLOADS_KEY)
    if prepared is None or prepared[0] != signature:
        with st.spinner("Checking the scans and asking the model…"):
            prepared = (signature, cases_from_uploads(classifier, [(f.name, f.getvalue()) for f in files]))
        st.session_state[UPLOADS_KEY] = prepared
    cases, blobs, problems = prepared[1]
    for problem in problems:
        st.warning(md(problem) + " — left out.")
    titles, keep_names = [], False
    if cases:
        edited, keep_names = upload_editor(cases, list(classifier.classes))
        cases, titles = with_references(cases, edited, list(classifier.classes)), list(edited["title"])
    try:
        path = str(file.resolve().relative_to(ROOT))
    except ValueError:
        path = str(file)
    model = {"path": path, "file_sha256": file_digest(file), "run": None}
    source = {"type": "uploads", "files": len(cases), "order": order, "seed": seed}
    return titled_uploads(cases, order, seed, titles, keep_names), source, model, list(classifier.classes), blobs


# --------------------------------------------------------------------------------------------------
# The organiser's view


def organiser_page(engine, session: SessionView, address: dict[str, str]) -> None:
    """The organiser's view of a session; ``address`` is this page's query parameters (the organiser's key, or their
    sessions key and the session's id), for the link to come back by. Every part reads the database each time it is
    shown, and again every few seconds while "Update live" is on: nothing is a copy from when the page was loaded."""
    cases = store.session_cases(engine, session.id)
    st.title(md(session.name))
    origin = (f"run **{md(session.source.get('run_name', ''))}**" if session.source.get("type") == "run"
              else "uploaded scans")
    st.caption(f"{KINDS[session.kind]}{' · teacher-paced' if session.paced else ''} · {MODES[session.mode]} · "
               f"{len(cases)} cases from {origin} · model {md(session.model.get('path') or '?')}. This is the "
               "organiser's page: keep its address private, and project the presenter's page, not this one.")
    c1, c2 = st.columns(2)
    if c1.button("Start another session", key="review.home.new", icon=":material/add:"):
        st.query_params.clear()
        st.rerun()
    mine = st.session_state.get(ORGANISER_KEY) or address.get(MINE) or st.query_params.get(MINE)
    if mine and ORGANISER_KEY not in st.session_state:
        remember_organiser(engine, mine)
    if mine and c2.button("Your sessions", key="review.home.mine", icon=":material/list:"):
        st.query_params.from_dict({MINE: mine})
        st.rerun()
    links(engine, session, address)
    session = controls(engine, session)
    on = st.toggle("Update live", value=True, key="review.live",
                   help=f"Every {LIVE_SECONDS} seconds, without reloading the page: the answers, the summary and the "
                        "exports")
    every = LIVE_SECONDS if on else None
    live, summary, export = st.tabs(["Answers as they come", "Summary", "Export and report"])
    with live:
        st.fragment(run_every=every)(teacher_view)(engine, session.id)
    with summary:
        st.fragment(run_every=every)(summary_view)(engine, session.id)
    with export:
        st.fragment(run_every=every)(export_view)(engine, session.id)


def fresh(engine, session_id: int) -> tuple[SessionView, list[CaseView], pd.DataFrame]:
    """The session, its cases and every answer, as the database has them now."""
    session = store.session_by_id(engine, session_id)
    cases = store.session_cases(engine, session_id)
    return session, cases, answers_table(cases, store.session_answers(engine, session))


@st.cache_data(show_spinner="Computing the summary…", max_entries=32)
def cached_summary(table: pd.DataFrame, classes: tuple[str, ...], cases: int) -> dict:
    """The session's figures, computed once per state of its answers (the table is the key)."""
    return session_summary(table, list(classes), cases=cases)


def links(engine, session: SessionView, address: dict[str, str]) -> None:
    created = st.session_state.get(CREATED_KEY, {}).get(session.id)
    if session.joinable:  # shown, not folded away: it is what a class is given, on the projector or by message
        with st.expander(f"Join code **{session.display_code}**, link and QR code", expanded=created is not None):
            join_panel(session, width=240)
    with st.expander("Your organiser's link, the readers' links, and who may join", expanded=bool(created)):
        st.markdown("**This page** (bookmark it; keep it private: it opens every reader's answers):")
        st.code(page_link(**address), language=None)
        mine = st.session_state.get(ORGANISER_KEY)
        if mine:
            st.markdown("**Your sessions** (every session you make in this browser; keep it to come back to them):")
            st.code(page_link(**{MINE: mine}), language=None)
        joinable = st.toggle("Readers may join by the session's link", value=session.joinable,
                             key=f"review.joinable.{session.id}",
                             help="Close it once the class has joined: nobody can then come in under a second name")
        if joinable != session.joinable:
            try:
                store.set_joinable(engine, session, joinable)
            except ReviewError as error:
                st.error(f"Not changed: {sentence(error)}")
            else:
                st.rerun()
        if created:
            st.markdown("**Personal links** (shown once; each opens one reader's own reading):")
            for name, reader_key in created.items():
                st.markdown(md(name))
                st.code(page_link(**{READER: reader_key}), language=None)
        readers = store.session_readers(engine, session.id)
        if readers:
            c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
            who = c1.selectbox("A reader lost their link", readers, format_func=lambda r: r.name, index=None,
                               key="review.reissue.who")
            if c2.button("New personal link", disabled=who is None, key="review.reissue"):
                try:
                    new_key = store.new_reader_key(engine, session, who.id)
                except ReviewError as error:
                    st.error(f"No new link was made: {sentence(error)}")
                    return
                st.markdown(f"New link for **{md(who.name)}** (the old one no longer works):")
                st.code(page_link(**{READER: new_key}), language=None)


def controls(engine, session: SessionView) -> SessionView:
    """Hiding the answers until the end, ending the session, and the presenter's page (the one to project)."""
    c1, c2, c3 = st.columns(3, vertical_alignment="center")
    hide = c1.toggle("Hide the answers until the end", value=session.hide_answers, key=f"review.hide.{session.id}",
                     help="The live view, the summary and the exports then show who has answered, not what, until "
                          "you end the session")
    if hide != session.hide_answers:
        session = store.set_hide_answers(engine, session, hide)
        st.rerun()
    if session.ended_at is None:
        if c2.button("End the session", key="review.end", icon=":material/flag:",
                     help="No more answers; every case is revealed to its readers and every answer shown here"):
            store.end_session(engine, session)
            st.rerun()
    else:
        c2.caption(f"Ended at {session.ended_at:%H:%M} UTC.")
        if c2.button("Open it again", key="review.reopen"):
            store.end_session(engine, session, ended=False)
            st.rerun()
    shown = presenter_key(engine, session)
    if c3.button("Present to the class" if shown is None else "A new presenter's link", key="review.present",
                 icon=":material/co_present:",
                 help="A page for the projector: who has answered, never what, until you reveal a case. A new "
                      "presenter link ends the one before."):
        shown = store.new_presenter_key(engine, session)
        st.query_params[PROJECTED] = shown  # this page's address keeps it: a reload shows the link again
    if shown is not None:
        link = page_link(**{PRESENTER: shown})
        st.link_button("Open the presenter's page (in a new tab, for the projector)", link, type="primary",
                       icon=":material/open_in_new:")
        st.code(link, language=None)
    if session.paced:
        st.fragment(run_every=LIVE_SECONDS)(paced_status)(engine, session.id)
    return session


def paced_status(engine, session_id: int) -> None:
    """Where a teacher-paced class is, read again every few seconds (the teacher moves it from another page)."""
    session = store.session_by_id(engine, session_id)
    at = session.current_position
    st.caption("Teacher-paced: the class moves on when you say so, on the presenter's page. "
               + ("The quiz has ended." if session.ended_at else "Not begun yet." if at is None
                  else f"The class is on case {at + 1}."))


def presenter_key(engine, session: SessionView) -> str | None:
    """The presenter's key this page made (kept in its address), while it is still this session's: a newer one, made
    elsewhere, replaces it."""
    key = st.query_params.get(PROJECTED)
    if not key:
        return None
    try:
        return key if store.session_for_presenter(engine, key).id == session.id else None
    except ReviewError:
        return None


def joined(reader) -> str:
    return reader.opened_at.strftime("%H:%M:%S") if reader.opened_at else "not yet"


def teacher_view(engine, session_id: int) -> None:
    """Every reader's answer per case, as committed; while the answers are hidden, only who has answered. Columns
    are keyed by reader id and labelled with the name, so that a reader called "reference" cannot take the place
    of the reference column."""
    session, cases, _ = fresh(engine, session_id)
    readers = store.session_readers(engine, session.id)
    if not readers:
        st.info("No reader has joined yet.")
        return
    hidden = session.answers_hidden
    if hidden:
        done = store.answered_cases(engine, session)
        answers = pd.DataFrame([(r, c, "answered") for r, ids in done.items() for c in ids],
                               columns=["reader_id", "case_id", "label"])
    else:
        answers = pd.DataFrame(store.session_answers(engine, session), columns=["reader_id", "case_id", "label"])
    counts = answers.groupby("reader_id").size()
    st.dataframe(pd.DataFrame({"reader": [r.name for r in readers], "joined": [joined(r) for r in readers],
                               "answered": [int(counts.get(r.id, 0)) for r in readers], "of": len(cases)}),
                 hide_index=True, width="content")
    if hidden:
        st.caption("The answers are hidden until the end (the switch above): ✓ marks who has answered a case, "
                   "not what.")
        answers["shown"] = "✓"
    else:
        by_case = {c.id: c for c in cases}
        # A plain list: pandas would turn a case without a reference into NaN beside cases with one.
        right = [by_case[case_id].reference for case_id in answers["case_id"]]
        answers["shown"] = [label(a) + ("" if r is None else (" ✓" if a == r else " ✗"))
                            for a, r in zip(answers["label"], right)]
    grid = answers.pivot(index="case_id", columns="reader_id", values="shown") if len(answers) else pd.DataFrame()
    table = pd.DataFrame({"case": [c.position + 1 for c in cases]})
    if not hidden:
        table["title"] = [c.title for c in cases]
        table["reference"] = [label(c.reference) for c in cases]
        table["model"] = [c.model_said(label) for c in cases]
    config = {}
    for reader in readers:
        column = f"reader-{reader.id}"
        table[column] = [grid.at[c.id, reader.id] if reader.id in grid.columns and c.id in grid.index
                         and isinstance(grid.at[c.id, reader.id], str) else "" for c in cases]
        config[column] = st.column_config.TextColumn(reader.name)
    st.dataframe(table, hide_index=True, width="stretch", height=min(600, 38 + 35 * len(table)),
                 column_config=config)
    if session.kind == "quiz" and not hidden:
        st.markdown("**Leaderboard**")
        leaderboard_table(engine, session)


def reader_table(readers: pd.DataFrame) -> pd.DataFrame:
    """The per-reader summary as people read it (core.review.words, as in the PDF): each figure with its 95%
    interval."""
    rows = []
    for r in readers.to_dict("records"):
        rows.append({"reader": r["reader"], "answered": r["answered"],
                     "accuracy": words.share(r["accuracy"], r["accuracy_low"], r["accuracy_high"]),
                     "model, same cases": words.share(r["model_accuracy"], r["model_accuracy_low"],
                                                      r["model_accuracy_high"]),
                     "κ with reference": words.kappa(r["kappa_reference"], r["kappa_reference_low"],
                                                     r["kappa_reference_high"]),
                     "κ with model": words.kappa(r["kappa_model"], r["kappa_model_low"], r["kappa_model_high"]),
                     "mean confidence": f"{r['mean_confidence']:.1f}", "changed mind": r["changed_mind"],
                     "median reading time": words.seconds(r["median_reading_seconds"])})
    return pd.DataFrame(rows)


def hidden_notice(engine, session: SessionView, what: str) -> bool:
    """While the answers are hidden: say so, with how far the readers have got, and return True."""
    if not session.answers_hidden:
        return False
    done = store.answered_cases(engine, session)
    st.info(f"{what} shows the answers once the session has ended (or when you turn off “Hide the answers until "
            f"the end”). So far: {sum(map(len, done.values()))} answers from {len(done)} "
            f"reader{'s' if len(done) != 1 else ''}.")
    return True


def answers_view(engine, session_id: int, what: str, empty: str, show) -> None:
    """A tab that shows the session's answers (the summary, the exports), read from the database now: while the
    answers are hidden only how far the readers have got, with no answers yet ``empty``, else ``show(session,
    cases, table, summary)``."""
    session, cases, table = fresh(engine, session_id)
    with error_boundary(what):
        if hidden_notice(engine, session, what):
            return
        if table.empty:
            st.info(empty)
            return
        show(session, cases, table, cached_summary(table, tuple(session.classes), len(cases)))


def summary_view(engine, session_id: int) -> None:
    answers_view(engine, session_id, "The summary",
                 "No answers yet: the summary fills in as readers commit theirs (no reload needed).", summary_parts)


def summary_parts(session: SessionView, cases: list[CaseView], table: pd.DataFrame, summary: dict) -> None:
    st.markdown("**Readers** (accuracy against the reference with 95% Wilson intervals; Cohen's κ with 95% "
                "bootstrap intervals over cases)")
    st.dataframe(reader_table(summary["readers"]), hide_index=True, width="stretch")
    unanswered = sum(not c.model_answered for c in cases if c.model_label is not None)
    if unanswered:
        st.caption(f"The model did not answer {unanswered} of the {len(cases)} scans (unlike the scans it learned "
                   "from); its figures here count its guess on them, as the reveal showed it.")
    pooled = summary["pooled"]
    if pooled and pooled["readers"] > 1:
        st.markdown(f"**All {pooled['readers']} readers together**: right on "
                    f"{words.share(pooled['accuracy'], pooled['low'], pooled['high'])} of their {pooled['answers']} "
                    f"answers to {pooled['cases']} cases (bootstrap over cases); the model on the same cases: "
                    f"{words.share(pooled['model_accuracy'], pooled['model_low'], pooled['model_high'])}.")
    if summary["single_class_reference"]:
        st.caption("Every case with a reference is of one class, so κ against the reference says nothing of skill "
                   "here (it is 0 or undefined whatever the answers); read the accuracy instead.")
    fleiss = summary["fleiss"]
    if fleiss:
        left_out = (f"; left out, not having answered every case: {md(', '.join(fleiss['left_out']))}"
                    if fleiss["left_out"] else "")
        st.markdown(f"**Agreement across {fleiss['readers']} readers** (Fleiss' κ, on the {fleiss['cases']} cases "
                    f"all of them answered{left_out}): {words.kappa(fleiss['kappa'], fleiss['low'], fleiss['high'])}")
    names = list(summary["readers"]["reader"])
    who = st.selectbox("Confusion matrix of", names, key="review.summary.reader")
    st.plotly_chart(confusion_matrix_figure(confusion(table[table["reader"] == who], session.classes)
                                            .to_numpy().tolist(), session.classes,
                                            axes=("reference", f"{who}'s answer")),
                    width="stretch", key="review.summary.confusion")
    difficulty = summary["difficulty"].head(20).assign(
        reference=lambda t: t["reference"].map(label), model=lambda t: t["model"].map(label),
        median_reading_seconds=lambda t: t["median_reading_seconds"].map(words.seconds))
    st.markdown("**Hardest cases** (share of readers wrong)")
    st.dataframe(difficulty, hide_index=True, width="stretch",
                 column_config={"share_wrong": st.column_config.ProgressColumn("share wrong", min_value=0,
                                                                                 max_value=1, format="percent"),
                                "median_reading_seconds": "median reading time"})
    st.markdown("**Heatmap ratings** (after the reveal)")
    st.dataframe(summary["ratings"].rename(index=RATINGS), width="content")
    disagreeing = summary["disagreements"]
    st.markdown(f"**Where reader and model disagree** "
                f"({len(disagreeing)} answer{'s' if len(disagreeing) != 1 else ''})")
    shown = disagreeing[["reader", "case", "image", "answer", "model", "reference", "confidence", "note"]].copy()
    for column in ("answer", "model", "reference"):
        shown[column] = shown[column].map(label)
    st.dataframe(shown, hide_index=True, width="stretch")
    missed_for_discussion(session, cases, summary["difficulty"])


def missed_for_discussion(session: SessionView, cases: list[CaseView], difficulty: pd.DataFrame) -> None:
    """The most-missed cases with the model's heatmap and the reference, to talk through with the class."""
    missed = difficulty[difficulty["wrong"] > 0].head(DISCUSSION_LIMIT)
    with st.expander(f"Most-missed cases, for discussion ({len(missed)})"):
        by_number = {c.position + 1: c for c in cases}
        for row in missed.itertuples():
            case = by_number[row.case]
            with error_boundary(f"Case {row.case}"):
                scan_beside_heatmap(session, case,
                                    f"Case {row.case}: {row.wrong} of {row.readers} readers wrong; "
                                    f"reference {label(case.reference)}, model: {case.model_said(label)}")


def file_stem(session: SessionView) -> str:
    """The start of the session's download names: its date and name, in characters every file system takes."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", session.name).strip("-")[:40] or "session"
    return f"{session.created_at:%Y-%m-%d}-{name}"


def export_view(engine, session_id: int) -> None:
    answers_view(engine, session_id, "The export", "No answers yet, so there is nothing to export: the files appear "
                 "here as readers commit their answers.", functools.partial(export_parts, engine))


def summary_for_people(summary: dict, name: str) -> pd.DataFrame:
    """A part of the summary as its CSV holds it: in the words and figures of the page and the PDF
    (core.review.words)."""
    if name == "readers":
        return reader_table(summary["readers"])
    if name == "disagreements":
        return answers_for_people(summary["disagreements"])
    if name == "ratings":
        ratings = summary["ratings"].copy()
        ratings.index = [words.rating_name(r) for r in ratings.index]
        return ratings.rename_axis("heatmap rating").reset_index()
    difficulty = summary["difficulty"]
    return pd.DataFrame({"case": difficulty["case"], "title": difficulty["image"],
                         "reference": difficulty["reference"].map(words.class_name),
                         "model's answer": difficulty["model"].map(words.class_name),
                         "readers": difficulty["readers"], "wrong": difficulty["wrong"],
                         "share wrong": difficulty["share_wrong"].map(words.share),
                         "reading time (median)": difficulty["median_reading_seconds"].map(words.seconds)})


def export_parts(engine, session: SessionView, cases: list[CaseView], table: pd.DataFrame, summary: dict) -> None:
    stem = file_stem(session)
    st.caption(f"{len(table)} answer{'s' if len(table) != 1 else ''} from {table['reader'].nunique()} "
               f"reader{'s' if table['reader'].nunique() != 1 else ''} so far; every file is made from the database "
               "when you click it.")

    def answers_now() -> bytes:  # at the click, not at the page's last refresh
        return csv_bytes(answers_for_people(fresh(engine, session.id)[2]))

    st.download_button("Every answer (CSV)", answers_now, file_name=f"{stem}-answers.csv", mime="text/csv",
                       key="review.export.answers", icon=":material/download:")
    for name, title in (("readers", "Reader summary"), ("difficulty", "Case difficulty"),
                        ("disagreements", "Disagreements with the model"), ("ratings", "Heatmap ratings")):
        st.download_button(f"{title} (CSV)", csv_bytes(summary_for_people(summary, name)),
                           file_name=f"{stem}-{name}.csv", mime="text/csv", key=f"review.export.{name}",
                           icon=":material/download:")
    if st.button("Prepare the session report (PDF)", key="review.export.prepare", icon=":material/picture_as_pdf:"):
        board = store.scores(engine, session) if session.kind == "quiz" else None
        st.session_state["review.export.pdf"] = (session.id, len(table), utc_now(),
                                                 session_report_pdf(session, cases, table, summary, board))
    prepared = st.session_state.get("review.export.pdf")
    if prepared and prepared[0] == session.id:
        _, answered, made, pdf = prepared
        newer = len(table) - answered
        st.caption(f"Prepared at {made:%H:%M:%S} UTC with {answered} answers"
                   + (f"; {newer} more have come in since: prepare it again to include them." if newer else "."))
        st.download_button("Download the session report", pdf, file_name=f"{stem}-report.pdf",
                           mime="application/pdf", key="review.export.pdf_download")


def session_report_pdf(session: SessionView, cases: list[CaseView], table: pd.DataFrame, summary: dict,
                       leaderboard: list[tuple[str, int, int]] | None = None) -> bytes:
    from core.review.reports import session_report

    by_position = {c.position + 1: c for c in cases}
    gallery = []
    for number in list(dict.fromkeys(summary["disagreements"]["case"]))[:GALLERY_LIMIT]:
        case = by_position[number]
        said = table[table["case"] == number]
        lines = [f"Case {number}: {case.title}", f"Model: {case.model_said(label)}; reference: "
                 f"{label(case.reference)}",
                 "Readers: " + ", ".join(f"{r} said {label(a)}" for r, a in zip(said["reader"], said["answer"]))]
        try:
            pictures = case_pictures(session, case, with_heatmap=True)
        except (ValueError, CheckpointError, RunError):
            continue  # a scan no longer there: the tables still say what happened
        gallery.append((case, pil(pictures.scan), pil(pictures.heatmap), lines))
    from core.explain import CAM_METHODS, DEFAULT_LAYER, DEFAULT_METHOD

    return session_report(session=session, cases=cases, table=table, summary=summary, gallery=gallery,
                          leaderboard=leaderboard,
                          heatmap_method=f"{CAM_METHODS[DEFAULT_METHOD].label} at {DEFAULT_LAYER}")
