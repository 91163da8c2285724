"""A reader's view of a review session or quiz: one case at a time, the answer committed before anything of the
model's is shown (blinded), then the reveal, the heatmap rating and a change of mind; the reader's own summary at
the end, and for a quiz the running score, the leaderboard and the gallery of missed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.review import ReviewError
from core.review import store
from core.review.agreement import answers_table, confusion, reader_summary
from core.review.cases import CONTEXT_SLICES, without_slice
from core.review.schema import DatabaseUnavailable
from core.review.store import CONFIDENCES, RATINGS, AnswerView, CaseView, ReaderView, SessionView
from dashboard.captions import md, sentence
from dashboard.charts import confusion_matrix_figure, probability_bars
from dashboard.common import error_boundary
from dashboard.sessions import case_pictures, case_stack, label, pil, scan_beside_heatmap, with_interval


MISSED_SHOWN = 12  # missed cases shown with their heatmaps at the end of a quiz


def position_key(reader: ReaderView) -> str:
    return f"review.at.{reader.id}"


def reader_page(engine, key: str) -> None:
    reader = store.reader_by_key(engine, key)
    session = store.session_of(engine, reader)
    cases = store.session_cases(engine, session.id)
    answers = store.answers_of(engine, reader)
    upcoming = store.next_position(cases, answers)
    quiz = session.kind == "quiz"
    st.title(md(session.name))
    st.caption(f"{'Teaching quiz' if quiz else 'Review session'} · reading as **{md(reader.name)}** · "
               f"{store.MODES[session.mode]}. Keep this page's address: it brings you back to where you stopped.")
    done = len(answers)
    st.progress(done / len(cases), text=f"{done} of {len(cases)} cases answered")
    if quiz:
        score_line(session, cases, answers)
        with st.expander("Leaderboard"), error_boundary("The leaderboard"):
            leaderboard(engine, session)
    reachable = [c.position for c in cases if c.id in answers] + ([upcoming] if upcoming is not None else [])
    at = st.session_state.get(position_key(reader))
    if at not in reachable:
        at = upcoming if upcoming is not None else None
    if at is None:
        finished(engine, session, reader, cases, answers)
        return
    st.session_state[position_key(reader)] = at
    if upcoming is None and st.button("Back to your summary", key="review.summary", icon=":material/summarize:"):
        st.session_state.pop(position_key(reader))
        st.rerun()
    navigation(reader, reachable, at, len(cases))
    case = cases[at]
    with error_boundary(f"Case {at + 1}"):
        show_case(engine, session, reader, case, answers.get(case.id), last=at == len(cases) - 1)


def score_line(session: SessionView, cases: list[CaseView], answers: dict[int, AnswerView]) -> None:
    by_id = {c.id: c for c in cases}
    marked = [a for a in answers.values() if by_id[a.case_id].reference is not None]
    right = sum(a.label == by_id[a.case_id].reference for a in marked)
    st.metric("Your score", f"{right} of {len(marked)}")


def leaderboard(engine, session: SessionView) -> None:
    table = pd.DataFrame(store.scores(engine, session), columns=["reader", "right", "answered"])
    table.index = np.arange(1, len(table) + 1)
    st.dataframe(table, width="stretch")


def navigation(reader: ReaderView, reachable: list[int], at: int, total: int) -> None:
    """Back to any answered case, and on to the next unanswered one; never ahead of it."""
    back, where, ahead = st.columns([1, 3, 1], vertical_alignment="center")
    index = reachable.index(at)
    if back.button("◀ Previous", disabled=index == 0, key="review.previous"):
        st.session_state[position_key(reader)] = reachable[index - 1]
        st.rerun()
    where.markdown(f"**Case {at + 1} of {total}**")
    if ahead.button("Next ▶", disabled=index == len(reachable) - 1, key="review.next"):
        st.session_state[position_key(reader)] = reachable[index + 1]
        st.rerun()


def chosen_slice(reader: ReaderView, case: CaseView) -> tuple[int | None, str]:
    """For an uploaded volume: the slice the reader has scrolled to (from 0; the case's own slice at first, and where
    the reader left it when they come back to the case) and how to say where it is; (None, "") for a single image."""
    if not case.stack:
        return None, ""
    stack = case_stack(case)
    own = stack.number(case.stack_slice)
    kept = f"review.slice.{reader.id}.{case.id}"  # outlives the slider, which forgets when another case is shown
    number = st.slider(f"Slice (the case's own slice, which the model answered, is {own})", stack.number(0),
                       stack.number(len(stack.slices) - 1), st.session_state.get(kept, own), key=f"{kept}.slider",
                       help=f"Scroll through the scan's slices (those kept for the session: up to {CONTEXT_SLICES} "
                            "on either side of the case's own). Your answer is for the scan.")
    st.session_state[kept] = number
    return number - stack.first - 1, f" · slice {number} of {stack.total}" + (" (the case's slice)" if number == own
                                                                            else "")


def show_case(engine, session: SessionView, reader: ReaderView, case: CaseView, answer: AnswerView | None,
              last: bool = False) -> None:
    revealed = store.may_reveal(session, answer)
    try:
        shown, where = chosen_slice(reader, case)
        pictures = case_pictures(session, case, with_heatmap=revealed, slice_index=shown)
    except ValueError as error:  # a scan moved or changed: say so, and let the reader go on
        pictures = None
        st.warning(f"The scan cannot be shown: {md(error)}. Tell the organiser; you can still record an answer "
                   "(say in the note that you did not see the scan) and go on.")
    if pictures is not None:
        left, right = st.columns([1, 1])
        named = md(without_slice(case.title) if where else case.title)  # a volume's title names its own slice
        left.image(pictures.scan, caption=(named if revealed else f"Case {case.position + 1}") + where,
                   width="stretch")
        if revealed:
            if pictures.heatmap:
                right.image(pictures.heatmap, caption=md(pictures.note), width="stretch")
            else:
                right.info(md(pictures.note))
    if answer is None:
        answer_form(engine, session, reader, case)
    else:
        your_answer(case, answer)
    if revealed:
        model_answer(session, case)
    if answer is not None:
        after_reveal(engine, session, reader, case, answer)
        case_report_button(session, reader, case, answer)
        if st.button("Your summary ▶" if last else "Next case ▶", key="review.next_below", type="primary"):
            st.session_state[position_key(reader)] = case.position + 1
            st.rerun()


def answer_form(engine, session: SessionView, reader: ReaderView, case: CaseView) -> None:
    with st.form(f"review.answer.{case.id}", border=True):
        st.markdown("**Your reading**" + ("" if not session.blinded else " — the model's answer is shown once "
                                          "you commit yours"))
        chosen = st.radio("Class", session.classes, index=None, format_func=label, horizontal=True)
        confidence = st.radio("Confidence", list(CONFIDENCES), index=None, format_func=CONFIDENCES.get,
                              horizontal=True)
        note = st.text_area("Note (optional)", max_chars=store.NOTE_LENGTH, height=80)
        if st.form_submit_button("Commit answer", type="primary"):
            if chosen is None or confidence is None:
                st.error("Choose a class and a confidence first.")
                return
            try:
                with st.spinner("Saving your answer…"):
                    store.commit_answer(engine, reader, case.id, chosen, int(confidence), note)
            except DatabaseUnavailable as error:  # the form keeps what was chosen and typed, for another try
                st.error(f"Your answer was not saved: {sentence(error)} Your class, confidence and note are kept "
                         "here: commit again.")
                return
            except ReviewError as error:
                st.error(sentence(error))
                return
            st.rerun()


def your_answer(case: CaseView, answer: AnswerView) -> None:
    verdict = ""
    if case.reference is not None:
        verdict = (" · :green[✓ right]" if answer.label == case.reference
                   else f" · :red[✗ the reference is **{label(case.reference)}**]")
    st.markdown(f"Your answer: **{label(answer.label)}** ({CONFIDENCES[answer.confidence]}){verdict}")
    if answer.note:
        st.caption(f"Your note: {md(answer.note)}")


def model_answer(session: SessionView, case: CaseView) -> None:
    reference = f"Reference: **{label(case.reference)}**. " if case.reference else "No reference for this scan. "
    if case.model_probabilities is None:
        st.markdown(reference + "The model gave no answer for this case.")
        return
    probabilities = np.array([case.model_probabilities.get(c, 0.0) for c in session.classes])
    flags = case.model_flags or {}
    if flags.get("unfamiliar"):
        said = (f"The model **does not answer**: it finds this scan unlike the scans it learned from (its guess, "
                f"not an answer: {label(case.model_label)}, {probabilities.max():.1%}).")
    else:
        said = f"The model says **{label(case.model_label)}** ({probabilities.max():.1%})" + (
            ", under its threshold for a confident answer: **uncertain, refer**." if flags.get("uncertain") else ".")
    st.markdown(reference + said)
    st.plotly_chart(probability_bars(session.classes, probabilities, int(probabilities.argmax()),
                                     muted=bool(flags.get("unfamiliar"))), width="stretch",
                    config={"displayModeBar": False}, key=f"review.bars.{case.id}")


def after_reveal(engine, session: SessionView, reader: ReaderView, case: CaseView, answer: AnswerView) -> None:
    """The heatmap rating and a change of mind; the committed answer itself stays as it is. The rating is saved with
    its own button: a radio saved on click sat where "Commit answer" had been, and a second click on that button
    rated the heatmap for the reader."""
    if case.reference != store.NO_TUMOUR:
        with st.form(f"review.rate.{case.id}", border=False):
            options = [None, *RATINGS]
            rating = st.radio("Does the heatmap point at the right place?", options, horizontal=True,
                              index=options.index(answer.heatmap_rating) if answer.heatmap_rating in options else 0,
                              format_func=lambda r: "not rated" if r is None else RATINGS[r])
            if st.form_submit_button("Save the rating") and rating != answer.heatmap_rating:
                try:
                    store.rate_heatmap(engine, reader, case.id, rating)
                except ReviewError as error:
                    st.error(f"Your rating was not saved: {sentence(error)}")
                else:
                    st.toast("Heatmap rating saved")
    with st.expander("Changed your mind?" + (f" (recorded: {label(answer.revised_label)})"
                                             if answer.revised_label else "")):
        with st.form(f"review.revise.{case.id}", border=False):
            st.caption("Your committed answer stays as it was given; a change of mind is recorded beside it.")
            revised = st.radio("The class you would give now", session.classes, horizontal=True, format_func=label,
                               index=session.classes.index(answer.revised_label) if answer.revised_label else None)
            why = st.text_input("Why (optional)", value=answer.revised_note or "", max_chars=store.NOTE_LENGTH)
            if st.form_submit_button("Record the change of mind") and revised is not None:
                try:
                    store.change_mind(engine, reader, case.id, revised, why)
                except ReviewError as error:
                    st.error(f"Your change of mind was not saved: {sentence(error)}")
                else:
                    st.rerun()


def case_report_button(session: SessionView, reader: ReaderView, case: CaseView, answer: AnswerView) -> None:
    """The case report, of the case's own image (for a volume, the slice the model answered)."""
    key = f"review.case_pdf.{case.id}"
    with error_boundary("The case report"):
        if st.button("Prepare the case report (PDF)", key=f"{key}.prepare", icon=":material/picture_as_pdf:"):
            from core.review.reports import case_report

            pictures = case_pictures(session, case, with_heatmap=True)
            st.session_state[key] = case_report(session=session, case=case, scan=pil(pictures.scan),
                                                heatmap=pil(pictures.heatmap), reader=reader.name, answer=answer,
                                                revealed=True)
        if key in st.session_state:
            st.download_button("Download the case report", st.session_state[key],
                               file_name=f"case-{case.position + 1}.pdf", mime="application/pdf",
                               key=f"{key}.download")


def finished(engine, session: SessionView, reader: ReaderView, cases: list[CaseView],
             answers: dict[int, AnswerView]) -> None:
    """Every case answered: the reader's own figures (only their own answers), and for a quiz the missed cases."""
    st.success("You have answered every case. Pick one below to look at it again.")
    own = [{"reader": reader.name, "case_id": a.case_id, "label": a.label, "confidence": a.confidence,
            "note": a.note, "heatmap_rating": a.heatmap_rating, "revised_label": a.revised_label,
            "revised_note": a.revised_note, "answered_at": a.answered_at} for a in answers.values()]
    table = answers_table(cases, own)
    summary = reader_summary(table, session.classes).iloc[0]
    columns = st.columns(2 if session.kind == "quiz" else 3)
    columns[0].metric("Your accuracy", with_interval(summary["accuracy"], summary["accuracy_low"],
                                                     summary["accuracy_high"]),
                      help="Share of your answers that match the reference, with its 95% Wilson interval")
    columns[1].metric("The model's, same cases", with_interval(summary["model_accuracy"], summary["model_accuracy_low"],
                                                               summary["model_accuracy_high"]))
    if session.kind != "quiz":  # agreement statistics are for reviewers; students get their score and the model's
        columns[2].metric("Agreement with the model (Cohen's κ)",
                          with_interval(summary["kappa_model"], summary["kappa_model_low"], summary["kappa_model_high"]),
                          help="1: the same answers as the model; 0: no more alike than chance would make them")
    if table["reference"].notna().any():
        st.plotly_chart(confusion_matrix_figure(confusion(table, session.classes).to_numpy().tolist(),
                                                session.classes, axes=("reference", "your answer")),
                        width="stretch", key="review.own_confusion")
    revisit = st.selectbox("Look at a case again", [c.position for c in cases], format_func=lambda p: f"Case {p + 1}",
                           index=None, key="review.revisit")
    if revisit is not None:
        st.session_state[position_key(reader)] = revisit
        st.session_state.pop("review.revisit", None)
        st.rerun()
    if session.kind == "quiz":
        missed_gallery(session, cases, answers)


def missed_gallery(session: SessionView, cases: list[CaseView], answers: dict[int, AnswerView]) -> None:
    missed = [c for c in cases if c.reference is not None and answers[c.id].label != c.reference]
    st.subheader(f"Cases you missed ({len(missed)})")
    if not missed:
        st.write("None: every answer matched the reference.")
    if len(missed) > MISSED_SHOWN:
        st.caption(f"The first {MISSED_SHOWN} are shown; pick any case above to look at it again.")
    for case in missed[:MISSED_SHOWN]:
        with error_boundary(f"Case {case.position + 1}"):
            scan_beside_heatmap(session, case, f"Case {case.position + 1}: you said {label(answers[case.id].label)}, "
                                               f"the reference is {label(case.reference)}, the model: "
                                               f"{case.model_said(label)}")
