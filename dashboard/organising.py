"""Starting a review session or quiz, and the organiser's view of it: the links to hand out, every reader's
answers per case as they come in (the teacher's view), the summary with its agreement figures, the CSV export and
the PDF session report."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.checkpoint import CheckpointError
from core.data import CLASSES
from core.review import ReviewError
from core.review import store
from core.review.agreement import answers_table, confusion, session_summary
from core.review.cases import ORDERS, SELECTIONS, cases_from_run, cases_from_uploads, run_model, run_source
from core.review.store import KINDS, MODES, RATINGS, CaseView, SessionView
from core.runs import RunError
from dashboard.captions import md
from dashboard.charts import confusion_matrix_figure
from dashboard.common import (ROOT, current_model_path, data_dir, error_boundary, file_digest, found_runs,
                              get_classifier, checkpoint_file, load_run, run_images_root, run_title)
from dashboard.sessions import JOIN, ORGANISER, READER, case_pictures, label, page_link, pil, with_interval

CREATED_KEY = "review.created"   # the keys of sessions made in this browser session, shown to their organiser once
GALLERY_LIMIT = 12               # disagreement cases in the session report
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
        code = st.text_input("Have a session code? Join it", key="review.join_code", max_chars=40,
                             placeholder="the code at the end of the link you were given")
        if st.button("Join", key="review.join_go", disabled=not code.strip()):
            st.query_params.from_dict({JOIN: code.strip()})
            st.rerun()
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
    source = st.radio("Cases", ["run", "uploads"], horizontal=True, key="review.new.source",
                      format_func={"run": "From an evaluation run", "uploads": "Scans uploaded now"}.get)
    made = run_cases() if source == "run" else upload_cases()
    if made is None:
        return
    cases, origin, model = made
    st.caption(f"{len(cases)} case{'s' if len(cases) != 1 else ''} in the session.")
    if st.button("Create the session", type="primary", key="review.new.create", disabled=not cases):
        names = [line for line in readers.splitlines() if line.strip()]
        try:
            session, owner_key, reader_keys = store.create_session(
                engine, name, cases, list(CLASSES), mode="blinded" if kind == "quiz" else mode, kind=kind,
                readers=names, joinable=joinable, source=origin, model=model)
        except ReviewError as error:
            st.error(md(error))
            return
        st.session_state.setdefault(CREATED_KEY, {})[session.id] = reader_keys
        st.query_params.from_dict({ORGANISER: owner_key})
        st.rerun()


def run_cases() -> tuple[list, dict, dict] | None:
    runs = found_runs()
    if not runs:
        st.info("No evaluation runs were found (assets/runs, outputs/).")
        return None
    chosen = st.selectbox("Evaluation run", [str(p) for p in runs], format_func=run_title, key="review.new.run")
    run = load_run(chosen)
    c1, c2, c3 = st.columns(3)
    selection = c1.selectbox("Which cases", list(SELECTIONS), format_func=SELECTIONS.get, key="review.new.selection")
    only = c2.selectbox("Of the class", ["any", *run.classes], key="review.new.class",
                        format_func=lambda c: "any class" if c == "any" else label(c))
    count = c3.number_input("How many", 1, store.MAX_CASES, 20, key="review.new.count",
                            disabled=selection not in ("uncertain", "sample"))
    c4, c5 = st.columns(2)
    order = c4.radio("Order", list(ORDERS), format_func=ORDERS.get, horizontal=True, key="review.new.order")
    seed = int(c5.number_input("Seed (sample and shuffle)", 0, 2**31 - 1, 0, key="review.new.seed"))
    choice = {"selection": selection, "true_class": None if only == "any" else only,
              "count": int(count) if selection in ("uncertain", "sample") else None, "seed": seed, "order": order}
    try:
        cases = cases_from_run(run, run_images_root(run), **choice)
    except (ReviewError, ValueError) as error:
        st.error(md(error))
        return None
    if run_images_root(run) is None:
        st.warning("The run's images are not on this machine (set the datasets folder in the sidebar): readers would "
                   "see no scans.")
    return cases, run_source(run, ROOT, **choice), run_model(run)


def upload_cases() -> tuple[list, dict, dict] | None:
    files = st.file_uploader("Scans (PNG, JPEG, BMP or TIFF)", type=["png", "jpg", "jpeg", "bmp", "tif", "tiff"],
                             accept_multiple_files=True, key="review.new.uploads",
                             help="Each scan is kept once, by its content, in the dashboard's data folder; the model "
                                  "in the sidebar answers it now.")
    classifier = get_classifier()
    if not files or classifier is None:
        return None
    if len(files) > store.MAX_CASES:
        st.error(f"At most {store.MAX_CASES} scans can make one session.")
        return None
    cases, problems = cases_from_uploads(classifier, [(f.name, f.getvalue()) for f in files], data_dir())
    for problem in problems:
        st.warning(md(problem) + " — left out.")
    file = checkpoint_file(current_model_path())
    try:
        path = str(file.resolve().relative_to(ROOT))
    except ValueError:
        path = str(file)
    model = {"path": path, "file_sha256": file_digest(file), "run": None}
    return cases, {"type": "uploads", "files": len(cases)}, model


# --------------------------------------------------------------------------------------------------
# The organiser's view


def organiser_page(engine, key: str) -> None:
    session = store.session_for_organiser(engine, key)
    cases = store.session_cases(engine, session.id)
    st.title(md(session.name))
    origin = (f"run **{md(session.source.get('run_name', ''))}**" if session.source.get("type") == "run"
              else "uploaded scans")
    st.caption(f"{KINDS[session.kind]} · {MODES[session.mode]} · {len(cases)} cases from {origin} · model "
               f"{md(session.model.get('path') or '?')}. This is the organiser's page: keep its address private.")
    links(engine, session)
    live, summary, export = st.tabs(["Answers as they come", "Summary", "Export and report"])
    with live:
        on = st.toggle("Update live", value=True, key="review.live",
                       help=f"Every {LIVE_SECONDS} seconds, without reloading the page")
        st.fragment(run_every=LIVE_SECONDS if on else None)(teacher_view)(engine, session, cases)
    table = answers_table(cases, store.session_answers(engine, session))
    with summary, error_boundary("The summary"):
        summary_view(engine, session, table)
    with export, error_boundary("The export"):
        export_view(session, cases, table)


def links(engine, session: SessionView) -> None:
    created = st.session_state.get(CREATED_KEY, {}).get(session.id)
    with st.expander("Links to hand out", expanded=bool(created)):
        if session.joinable:
            st.markdown("**Join link** (anyone with it joins under a name of their own):")
            st.code(page_link(**{JOIN: session.code}), language=None)
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
                new_key = store.new_reader_key(engine, session, who.id)
                st.markdown(f"New link for **{md(who.name)}** (the old one no longer works):")
                st.code(page_link(**{READER: new_key}), language=None)


def teacher_view(engine, session: SessionView, cases: list[CaseView]) -> None:
    """Every reader's answer per case, as committed (refreshed live)."""
    readers = store.session_readers(engine, session.id)
    answers = store.session_answers(engine, session)
    if not readers:
        st.info("No reader has joined yet.")
        return
    progress = pd.DataFrame({"reader": [r.name for r in readers],
                             "answered": [sum(a["reader_id"] == r.id for a in answers) for r in readers]})
    progress["of"] = len(cases)
    st.dataframe(progress, hide_index=True, width="content")
    grid = pd.DataFrame({"case": [c.position + 1 for c in cases], "image": [c.title for c in cases],
                         "reference": [label(c.reference) for c in cases],
                         "model": [label(c.model_label) for c in cases]})
    by_case = {c.id: c for c in cases}
    for reader in readers:
        column = [""] * len(cases)
        for a in answers:
            if a["reader_id"] == reader.id:
                case = by_case[a["case_id"]]
                mark = "" if case.reference is None else (" ✓" if a["label"] == case.reference else " ✗")
                column[case.position] = label(a["label"]) + mark
        grid[reader.name] = column
    st.dataframe(grid, hide_index=True, width="stretch", height=min(600, 38 + 35 * len(grid)))
    if session.kind == "quiz":
        st.markdown("**Leaderboard**")
        st.dataframe(pd.DataFrame(store.scores(engine, session), columns=["reader", "right", "answered"]),
                     hide_index=True, width="content")


def reader_table(readers: pd.DataFrame) -> pd.DataFrame:
    """The per-reader summary as people read it: each figure with its 95% interval."""
    rows = []
    for r in readers.to_dict("records"):
        rows.append({"reader": r["reader"], "answered": r["answered"],
                     "accuracy": with_interval(r["accuracy"], r["accuracy_low"], r["accuracy_high"]),
                     "model, same cases": with_interval(r["model_accuracy"], r["model_accuracy_low"],
                                                        r["model_accuracy_high"]),
                     "κ with reference": with_interval(r["kappa_reference"], r["kappa_reference_low"],
                                                       r["kappa_reference_high"]),
                     "κ with model": with_interval(r["kappa_model"], r["kappa_model_low"], r["kappa_model_high"]),
                     "mean confidence": f"{r['mean_confidence']:.1f}", "changed mind": r["changed_mind"]})
    return pd.DataFrame(rows)


def summary_view(engine, session: SessionView, table: pd.DataFrame) -> None:
    if table.empty:
        st.info("No answers yet.")
        return
    summary = session_summary(table, session.classes)
    st.markdown("**Readers** (accuracy against the reference with 95% Wilson intervals; Cohen's κ with 95% "
                "bootstrap intervals over cases)")
    st.dataframe(reader_table(summary["readers"]), hide_index=True, width="stretch")
    fleiss = summary["fleiss"]
    if fleiss:
        st.markdown(f"**Agreement across the {fleiss['readers']} readers** (Fleiss' κ, on the {fleiss['cases']} cases "
                    f"all of them answered): {with_interval(fleiss['kappa'], fleiss['low'], fleiss['high'])}")
    names = list(summary["readers"]["reader"])
    who = st.selectbox("Confusion matrix of", names, key="review.summary.reader")
    st.plotly_chart(confusion_matrix_figure(confusion(table[table["reader"] == who], session.classes)
                                            .to_numpy().tolist(), session.classes), width="stretch",
                    key="review.summary.confusion")
    left, right = st.columns(2)
    difficulty = summary["difficulty"].head(20).assign(reference=lambda t: t["reference"].map(label),
                                                       model=lambda t: t["model"].map(label))
    left.markdown("**Hardest cases** (share of readers wrong)")
    left.dataframe(difficulty, hide_index=True, width="stretch",
                   column_config={"share_wrong": st.column_config.ProgressColumn("share wrong", min_value=0,
                                                                                   max_value=1, format="percent")})
    right.markdown("**Heatmap ratings** (after the reveal)")
    right.dataframe(summary["ratings"].rename(index=RATINGS), width="stretch")
    st.markdown(f"**Where reader and model disagree** ({len(summary['disagreements'])} answers)")
    st.dataframe(summary["disagreements"][["reader", "case", "image", "answer", "model", "reference", "confidence",
                                           "note"]], hide_index=True, width="stretch")


def export_view(session: SessionView, cases: list[CaseView], table: pd.DataFrame) -> None:
    st.download_button("Every answer (CSV)", table.to_csv(index=False).encode(), file_name="answers.csv",
                       mime="text/csv", key="review.export.answers", icon=":material/download:")
    if table.empty:
        return
    summary = session_summary(table, session.classes)
    st.download_button("Reader summary (CSV)", summary["readers"].to_csv(index=False).encode(),
                       file_name="readers.csv", mime="text/csv", key="review.export.readers",
                       icon=":material/download:")
    if st.button("Prepare the session report (PDF)", key="review.export.prepare", icon=":material/picture_as_pdf:"):
        st.session_state["review.export.pdf"] = (session.id, session_report_pdf(session, cases, table, summary))
    prepared = st.session_state.get("review.export.pdf")
    if prepared and prepared[0] == session.id:
        st.download_button("Download the session report", prepared[1], file_name="session-report.pdf",
                           mime="application/pdf", key="review.export.pdf_download")


def session_report_pdf(session: SessionView, cases: list[CaseView], table: pd.DataFrame, summary: dict) -> bytes:
    from core.review.reports import session_report

    by_position = {c.position + 1: c for c in cases}
    gallery = []
    for number in list(dict.fromkeys(summary["disagreements"]["case"]))[:GALLERY_LIMIT]:
        case = by_position[number]
        said = table[table["case"] == number]
        lines = [f"Case {number}: {case.title}", f"Model: {label(case.model_label)}; reference: "
                 f"{label(case.reference)}",
                 "Readers: " + ", ".join(f"{r} said {label(a)}" for r, a in zip(said["reader"], said["answer"]))]
        try:
            pictures = case_pictures(session, case, with_heatmap=True)
        except (ValueError, CheckpointError, RunError):
            continue  # a scan no longer there: the tables still say what happened
        gallery.append((case, pil(pictures.scan), pil(pictures.heatmap), lines))
    return session_report(session=session, cases=cases, table=table, summary=summary, gallery=gallery)
