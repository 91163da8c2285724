"""A reader's view of a review session or quiz: one case at a time, the answer committed before anything of the
model's is shown (blinded), then the reveal, the heatmap rating and a change of mind; the reader's own summary at
the end, and for a quiz the running score, the leaderboard and the gallery of missed cases."""

from __future__ import annotations

import time

import numpy as np
import streamlit as st

from core.review import ReviewError, store, words
from core.review.agreement import answers_table, confusion, reader_summary
from core.review.cases import CONTEXT_SLICES, without_slice
from core.review.schema import DatabaseUnavailable
from core.review.store import CONFIDENCES, RATINGS, AnswerView, CaseView, ReaderView, SessionView
from dashboard.captions import md, sentence
from dashboard.charts import confusion_matrix_figure, probability_bars
from dashboard.common import error_boundary
from dashboard.sessions import (
    case_pictures,
    case_stack,
    fit_to_screen,
    label,
    leaderboard_table,
    pil,
    scan_beside_heatmap,
)

MISSED_SHOWN = 12  # missed cases shown with their heatmaps at the end of a quiz


def position_key(reader: ReaderView) -> str:
    return f"review.at.{reader.id}"


FLASH_KEY = "review.flash"      # what was just saved, said once on the next run of the page
SCROLL_KEY = "review.scroll"    # set when the reader moves to another case: the page goes back to its top
LIVE_SECONDS = 3                # how often a reader waiting for the teacher looks for the next case or the reveal


def say_saved(*what: str) -> None:
    st.session_state.setdefault(FLASH_KEY, []).extend(what)


def reader_page(engine, key: str) -> None:
    reader = store.reader_by_key(engine, key)
    try:
        reader = store.mark_opened(engine, reader)
    except DatabaseUnavailable:  # reading needs no write: the organiser's "joined" column waits for a later visit
        pass
    session = store.session_of(engine, reader)
    cases = store.session_cases(engine, session.id)
    answers = store.answers_of(engine, reader)
    upcoming = store.next_position(cases, answers, session)
    quiz = session.kind == "quiz"
    for said in st.session_state.pop(FLASH_KEY, []):
        st.toast(said, icon=":material/check_circle:")
    if st.session_state.pop(SCROLL_KEY, False):
        to_top()
    st.title(md(session.name))
    st.caption(f"{'Teaching quiz' if quiz else 'Review session'} · reading as **{md(reader.name)}** · "
               f"{store.MODES[session.mode]}. Keep this page's address: it brings you back to where you stopped.")
    done = len(answers)
    st.progress(done / len(cases), text=f"{done} of {len(cases)} cases answered"
                + (f" · your score: {score_line(session, cases, answers)}" if quiz else ""))
    reachable = [c.position for c in cases if c.id in answers and not left_behind(session, c, answers)] + (
        [upcoming] if upcoming is not None else [])
    at = st.session_state.get(position_key(reader))
    if isinstance(at, int) and 0 <= at < len(cases) and left_behind(session, cases[at], answers):
        st.toast(moved_on(session.current_position, at), icon=":material/fast_forward:")
    if at not in reachable:
        at = upcoming
        if at is None and session.paced and session.ended_at is None and session.current_position in reachable:
            at = session.current_position  # the class's case, answered: its reveal comes (or came) there
    if at is None:
        if store.waiting_for_teacher(session, cases, answers) or (session.paced and session.ended_at is None):
            waiting(engine, session, reader)
        else:
            finished(engine, session, reader, cases, answers)
        if quiz:
            leaderboard(engine, session)
        return
    st.session_state[position_key(reader)] = at
    if upcoming is None and not session.paced and st.button("Back to your summary", key="review.summary",
                                                          icon=":material/summarize:"):
        st.session_state.pop(position_key(reader))
        st.rerun()
    case = cases[at]
    navigation(engine, reader, case, answers.get(case.id), reachable, at, len(cases))
    with error_boundary(f"Case {at + 1}"):
        show_case(engine, session, reader, case, answers.get(case.id), last=at == len(cases) - 1)
    if quiz:
        leaderboard(engine, session)


def leaderboard(engine, session: SessionView) -> None:
    with st.expander("Leaderboard"), error_boundary("The leaderboard"):
        leaderboard_table(engine, session, width="stretch")


def left_behind(session: SessionView, case: CaseView, answers: dict[int, AnswerView]) -> bool:
    """In a teacher-paced quiz under way: a case this reader has answered, which the class has left without a reveal.
    Its reveal comes only at the end, so the reader goes to the class's case rather than wait on this one."""
    return (session.paced and session.ended_at is None and session.current_position is not None
            and case.position != session.current_position and case.id in answers and case.revealed_at is None)


def moved_on(class_at: int, left: int) -> str:
    """What a student is told when the class has left a case they answered (``left``) without revealing it."""
    return f"The class has moved on to case {class_at + 1}: case {left + 1}'s answers are shown at the end of the quiz."


def to_top() -> None:
    """Scroll the page back to its top (a new case's scan starts there). The script carries the time so that it is new
    content, run again, each time it is sent."""
    st.html(f"<script>/* {time.monotonic()} */ for (const el of [document.querySelector('[data-testid=\"stMain\"]'), "
            "document.scrollingElement]) { if (el) el.scrollTo({top: 0, behavior: 'instant'}); }</script>",
            unsafe_allow_javascript=True)


def waiting(engine, session: SessionView, reader: ReaderView) -> None:
    """A teacher-paced quiz between cases: the reader waits, and the page moves on by itself when the teacher opens
    the next case, reveals one or ends the quiz."""
    if session.paced and session.current_position is None:
        st.info("The quiz has not begun: the teacher opens the first case from the front, and this page shows it by "
                "itself.")
    else:
        st.info("Your answers are in. The teacher opens the next case (and reveals the answers) from the front: this "
                "page follows by itself.")
    st.fragment(run_every=LIVE_SECONDS)(follow_teacher)(engine, session, reader)


def follow_teacher(engine, seen: SessionView, reader: ReaderView, case: CaseView | None = None) -> None:
    """Look for the teacher's next step; when there is one, run the whole page again to show it. Moving with the
    class first saves what the reader chose on this case and did not save (the rating, a change of mind), as their
    own move would, and says why the page moved when the case they answered was left without a reveal."""
    now = store.session_by_id(engine, seen.id)
    moved = (now.current_position, now.ended_at) != (seen.current_position, seen.ended_at)
    cases = store.session_cases(engine, seen.id)
    fresh = next((c for c in cases if case is not None and c.id == case.id), None)
    revealed = case is not None and case.revealed_at is None and fresh is not None and fresh.revealed_at is not None
    if moved or revealed:
        answer = store.answers_of(engine, reader).get(case.id) if case is not None else None
        if moved and answer is not None:
            keep_unsaved(engine, reader, case, answer)
            if (now.ended_at is None and now.current_position not in (None, case.position) and fresh is not None
                    and fresh.revealed_at is None):
                say_saved(moved_on(now.current_position, case.position))
        if moved and now.current_position is not None:
            st.session_state[position_key(reader)] = now.current_position
            st.session_state[SCROLL_KEY] = True
        st.rerun(scope="app")


def score_line(session: SessionView, cases: list[CaseView], answers: dict[int, AnswerView]) -> str:
    """Right answers of those whose reference the reader has been shown (in a paced quiz, the revealed cases)."""
    by_id = {c.id: c for c in cases}
    marked = [a for a in answers.values() if by_id[a.case_id].reference is not None
              and store.may_reveal(session, a, by_id[a.case_id])]
    if not marked:
        return "none marked yet"
    return f"{sum(a.label == by_id[a.case_id].reference for a in marked)} of {len(marked)}"


def move_to(engine, reader: ReaderView, case: CaseView, answer: AnswerView | None, position: int | None) -> None:
    """Leave a case for another (``position``; None: the reader's summary), first saving what the reader chose after
    the reveal and did not save (the heatmap rating, a change of mind): nothing chosen is lost by going on."""
    if answer is not None:
        keep_unsaved(engine, reader, case, answer)
    if position is None:
        st.session_state.pop(position_key(reader), None)
    else:
        st.session_state[position_key(reader)] = position
    st.session_state[SCROLL_KEY] = True
    st.rerun()


def navigation(engine, reader: ReaderView, case: CaseView, answer: AnswerView | None, reachable: list[int], at: int,
               total: int) -> None:
    """Back to any answered case, and on to the next unanswered one; never ahead of it."""
    back, where, ahead = st.columns([1, 3, 1], vertical_alignment="center")
    index = reachable.index(at)
    if back.button("◀ Previous", disabled=index == 0, key="review.previous", shortcut="P"):
        move_to(engine, reader, case, answer, reachable[index - 1])
    where.markdown(f"**Case {at + 1} of {total}**")
    if ahead.button("Next ▶", disabled=index == len(reachable) - 1, key="review.next"):
        move_to(engine, reader, case, answer, reachable[index + 1])


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
    """The scan on the left and, beside it on a wide screen (below it on a narrow one), the answer form before the
    commit; after the reveal, the scan, the model's heatmap and the verdict with the rating side by side, so that a
    1440 x 900 screen shows the whole reveal and the way on."""
    revealed = store.may_reveal(session, answer, case)  # in an open session, before the reader's answer too
    fit_to_screen(380)  # the page's title, progress line and case navigation are above the pictures
    paced = session.paced and session.ended_at is None
    if paced and answer is None and session.current_position is not None and case.position < session.current_position:
        st.info(f"The class has moved on to case {session.current_position + 1}: answer this one, and the page then "
                "takes you to the class's case.")
    columns = st.columns(3 if revealed else 2)
    with columns[0]:
        try:
            shown, where = chosen_slice(reader, case)
            pictures = case_pictures(session, case, with_heatmap=revealed, slice_index=shown)
        except ValueError as error:  # a scan moved or changed: say so, and let the reader go on
            pictures = None
            st.warning(f"The scan cannot be shown: {md(error)}. Tell the organiser; you can still record an answer "
                       "(say in the note that you did not see the scan) and go on.")
        if pictures is not None:
            named = md(without_slice(case.title) if where else case.title)  # a volume's title names its own slice
            st.container(key=f"fit-scan-{case.id}").image(
                pictures.scan, caption=(named if revealed else f"Case {case.position + 1}") + where, width="stretch")
    if not revealed:
        with columns[1]:
            if answer is None:
                answer_form(engine, session, reader, case)
            else:
                your_answer(case, answer, verdict=False)
                st.info("Your answer is in. The teacher reveals the answers to the class: this page shows them then, "
                        "by itself.")
                on_button(engine, session, reader, case, answer, last)
    else:
        with columns[1]:
            if pictures is not None and pictures.heatmap:
                st.container(key=f"fit-heatmap-{case.id}").image(pictures.heatmap, caption=md(pictures.note),
                                                                 width="stretch")
            elif pictures is not None:
                st.info(md(pictures.note))
        with columns[2]:
            if answer is None:  # an open session: the model's answer beside the form
                model_answer(session, case)
                answer_form(engine, session, reader, case)
            else:
                your_answer(case, answer)
                model_answer(session, case)
                after_reveal(engine, session, reader, case, answer)
                on_button(engine, session, reader, case, answer, last)
                case_report_button(session, reader, case, answer)
    if paced:  # the page follows the teacher: the reveal, the next case, the end
        st.fragment(run_every=LIVE_SECONDS)(follow_teacher)(engine, session, reader, case)


def on_button(engine, session: SessionView, reader: ReaderView, case: CaseView, answer: AnswerView,
              last: bool) -> None:
    """On to the next case (or the summary after the last); in a paced quiz, only to a case the teacher has opened."""
    paced = session.paced and session.ended_at is None
    if paced and not (store.may_reveal(session, answer, case) and case.position < (session.current_position or 0)):
        return
    upcoming = case.position + 1 if not last else None
    if st.button("Your summary ▶" if last else "Next case ▶", key="review.next_below", type="primary", shortcut="N"):
        move_to(engine, reader, case, answer, upcoming)


def choice_key(reader: ReaderView, case: CaseView, what: str) -> str:
    return f"review.choice.{reader.id}.{case.id}.{what}"


def confidence_label(value: int) -> str:
    """A confidence button's word ("fairly sure"): its number is in the heading's "from 1 to 5" and on its key."""
    return CONFIDENCES[value].split(" - ", 1)[-1]


def answer_form(engine, session: SessionView, reader: ReaderView, case: CaseView) -> None:
    """The reading, by mouse or keyboard alone: 1-4 pick the class, then 1-5 the confidence (Backspace goes back to
    the class), Enter commits. The time from the case being shown to the commit is kept as the reading time."""
    shown_key = choice_key(reader, case, "shown")
    st.session_state.setdefault(shown_key, time.time())
    chosen = st.session_state.get(choice_key(reader, case, "class"))
    confidence = st.session_state.get(choice_key(reader, case, "confidence"))
    with st.container(border=True):
        st.markdown("**Your reading**" + ("" if not session.blinded else " — the model's answer is shown once "
                                          "you commit yours"))
        st.caption("Keyboard: " + ("**1–4** pick the class" if chosen is None else
                                   "**1–5** pick the confidence, **Backspace** to change the class")
                   + ", **Enter** commits, **N** / **P** next and previous case. The keys work while nothing is "
                   "being typed into: click outside the note (or press Tab) first.")
        st.markdown("**Class**")
        wide = 2 if len(session.classes) == 4 else min(len(session.classes), 3)  # 4 as 2 x 2: whole names fit
        picks = [cell for _ in range(0, len(session.classes), wide) for cell in st.columns(wide)]
        for k, name in enumerate(session.classes):
            if picks[k].button(label(name), key=f"{choice_key(reader, case, 'class')}.{name}", width="stretch",
                               type="primary" if chosen == name else "secondary",
                               shortcut=str(k + 1) if chosen is None and k < 9 else None):
                st.session_state[choice_key(reader, case, "class")] = name
                st.rerun()
        if chosen is not None and st.button("Change the class", key=choice_key(reader, case, "unpick"),
                                            shortcut="Backspace", type="tertiary"):
            st.session_state.pop(choice_key(reader, case, "class"), None)
            st.session_state.pop(choice_key(reader, case, "confidence"), None)
            st.rerun()
        st.markdown("**Confidence**, from 1 to 5")
        levels = st.columns(len(CONFIDENCES))
        for k, value in enumerate(CONFIDENCES):
            if levels[k].button(confidence_label(value), key=f"{choice_key(reader, case, 'confidence')}.{value}",
                                width="stretch",
                                type="primary" if confidence == value else "secondary",
                                shortcut=str(value) if chosen is not None else None):
                st.session_state[choice_key(reader, case, "confidence")] = value
                st.rerun()
        note = st.text_area("Note (optional)", max_chars=store.NOTE_LENGTH, height=80,
                            key=choice_key(reader, case, "note"))
        missing = [what for what, value in (("a class", chosen), ("a confidence", confidence)) if value is None]
        if st.button("Commit answer", type="primary", key=choice_key(reader, case, "commit"), shortcut="Enter"):
            if missing:
                st.error(f"Choose {' and '.join(missing)} first.")
                return
            try:
                with st.spinner("Saving your answer…"):
                    store.commit_answer(engine, reader, case.id, chosen, int(confidence), note,
                                        reading_seconds=time.time() - st.session_state[shown_key])
            except DatabaseUnavailable as error:  # the choices stay on the page, for another try
                st.error(f"Your answer was not saved: {sentence(error)} Your class, confidence and note are kept "
                         "here: commit again.")
                return
            except ReviewError as error:
                st.error(sentence(error))
                return
            say_saved(f"Answer saved: {label(chosen)}, {CONFIDENCES[int(confidence)]}")
            st.rerun()


def your_answer(case: CaseView, answer: AnswerView, verdict: bool = True) -> None:
    said = ""
    if verdict and case.reference is not None:
        said = (" · :green[✓ right]" if answer.label == case.reference
                else f" · :red[✗ the reference is **{label(case.reference)}**]")
    st.markdown(f"Your answer: **{label(answer.label)}** ({CONFIDENCES[answer.confidence]}){said}")
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


def rating_key(reader: ReaderView, case: CaseView) -> str:
    return f"review.rating.{reader.id}.{case.id}"


def revision_keys(reader: ReaderView, case: CaseView) -> tuple[str, str]:
    return f"review.revised.{reader.id}.{case.id}", f"review.revised_note.{reader.id}.{case.id}"


def keep_unsaved(engine, reader: ReaderView, case: CaseView, answer: AnswerView) -> None:
    """Save the heatmap rating and the change of mind the reader chose on this case and did not save, and say so."""
    said = []
    rated = st.session_state.get(rating_key(reader, case), answer.heatmap_rating)
    if rated != answer.heatmap_rating and (rated is None or rated in RATINGS):
        try:
            store.rate_heatmap(engine, reader, case.id, rated)
        except ReviewError as error:
            st.error(f"Your rating was not saved: {sentence(error)}")
            st.stop()
        said.append("Heatmap rating saved" + (f": {RATINGS[rated]}" if rated else " (taken back)"))
    label_key, note_key = revision_keys(reader, case)
    revised = st.session_state.get(label_key, answer.revised_label)
    why = st.session_state.get(note_key, answer.revised_note or "")
    if revised is not None and (revised, why) != (answer.revised_label, answer.revised_note or ""):
        try:
            store.change_mind(engine, reader, case.id, revised, why)
        except ReviewError as error:
            st.error(f"Your change of mind was not saved: {sentence(error)}")
            st.stop()
        said.append(f"Change of mind recorded: {label(revised)}")
    say_saved(*said)


def after_reveal(engine, session: SessionView, reader: ReaderView, case: CaseView, answer: AnswerView) -> None:
    """The heatmap rating and a change of mind; the committed answer itself stays as it is. Each is saved with its
    button, and whatever is chosen and not saved is saved when the reader moves to another case (and said so)."""
    if case.reference != store.NO_TUMOUR:
        key = rating_key(reader, case)
        if key not in st.session_state:
            st.session_state[key] = answer.heatmap_rating if answer.heatmap_rating in RATINGS else None
        # Buttons rather than a radio group: a radio keeps the keyboard's focus, and N or P would then do nothing.
        rating = st.segmented_control("Does the heatmap point at the right place?", list(RATINGS), key=key,
                                      format_func=RATINGS.get, help="Click your choice again to take it back")
        if st.button("Save the rating", key=f"{key}.save", disabled=rating == answer.heatmap_rating):
            keep_unsaved(engine, reader, case, answer)
            st.rerun()
        if rating == answer.heatmap_rating:
            st.caption("Saved." if rating else "Not rated.")
        else:
            st.caption(":orange[Not saved yet: it is saved when you press “Save the rating” or go to another case.]")
    label_key, note_key = revision_keys(reader, case)
    with st.expander("Changed your mind?" + (f" (recorded: {label(answer.revised_label)})"
                                             if answer.revised_label else ""),
                     expanded=st.session_state.get(label_key, answer.revised_label) != answer.revised_label):
        st.caption("Your committed answer stays as it was given; a change of mind is recorded beside it.")
        if label_key not in st.session_state:
            st.session_state[label_key] = answer.revised_label
            st.session_state[note_key] = answer.revised_note or ""
        st.segmented_control("The class you would give now", session.classes, format_func=label, key=label_key)
        st.text_input("Why (optional)", max_chars=store.NOTE_LENGTH, key=note_key)
        revised = st.session_state[label_key]
        pending = revised is not None and (revised, st.session_state[note_key]) != (answer.revised_label,
                                                                                     answer.revised_note or "")
        if st.button("Record the change of mind", key=f"{label_key}.save", disabled=not pending):
            keep_unsaved(engine, reader, case, answer)
            st.rerun()
        if pending:
            st.caption(":orange[Not recorded yet: it is recorded when you press the button or go to another case.]")
        if answer.revised_label and st.button("Withdraw the change of mind", key=f"{label_key}.withdraw",
                                              type="tertiary"):
            store.change_mind(engine, reader, case.id, None)
            st.session_state.pop(label_key, None)
            st.session_state.pop(note_key, None)
            say_saved("Change of mind withdrawn")
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
    """Nothing left to answer (every case answered, or the session ended or its other cases revealed to the
    class): the reader's own figures (only their own answers), and for a quiz the missed cases."""
    unanswered = len(cases) - len(answers)
    if not answers:
        st.info("This session takes no more answers (it has ended, or its cases were revealed to the class), and you "
                "did not answer any of its cases.")
        return
    if unanswered:
        st.success(f"This session takes no more answers: you answered {len(answers)} of its {len(cases)} cases "
                   f"(the other {unanswered} {'was' if unanswered == 1 else 'were'} revealed to the class, or the "
                   "session ended, before you did). "
                   "Pick one below to look at it again.")
    else:
        st.success("You have answered every case. Pick one below to look at it again.")
    own = [{"reader": reader.name, "case_id": a.case_id, "label": a.label, "confidence": a.confidence,
            "note": a.note, "heatmap_rating": a.heatmap_rating, "revised_label": a.revised_label,
            "revised_note": a.revised_note, "answered_at": a.answered_at} for a in answers.values()]
    table = answers_table(cases, own)
    summary = reader_summary(table, session.classes).iloc[0]
    columns = st.columns(2 if session.kind == "quiz" else 3)
    columns[0].metric("Your accuracy", words.share(summary["accuracy"], summary["accuracy_low"],
                                                   summary["accuracy_high"]),
                      help="Share of your answers that match the reference, with its 95% Wilson interval")
    columns[1].metric("The model's, same cases", words.share(summary["model_accuracy"], summary["model_accuracy_low"],
                                                             summary["model_accuracy_high"]))
    if session.kind != "quiz":  # agreement statistics are for reviewers; students get their score and the model's
        columns[2].metric("Agreement with the model (Cohen's κ)",
                          words.kappa(summary["kappa_model"], summary["kappa_model_low"], summary["kappa_model_high"]),
                          help="1: the same answers as the model; 0: no more alike than chance would make them")
    if table["reference"].notna().any():
        st.plotly_chart(confusion_matrix_figure(confusion(table, session.classes).to_numpy().tolist(),
                                                session.classes, axes=("reference", "your answer")),
                        width="stretch", key="review.own_confusion")
    revisit = st.selectbox("Look at a case again", [c.position for c in cases if c.id in answers],
                           format_func=lambda p: f"Case {p + 1}",
                           index=None, key="review.revisit")
    if revisit is not None:
        st.session_state[position_key(reader)] = revisit
        st.session_state.pop("review.revisit", None)
        st.rerun()
    if session.kind == "quiz":
        missed_gallery(session, cases, answers)


def missed_gallery(session: SessionView, cases: list[CaseView], answers: dict[int, AnswerView]) -> None:
    missed = [c for c in cases if c.reference is not None and c.id in answers and answers[c.id].label != c.reference]
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
