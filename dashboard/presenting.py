"""The presenter's page: what a class sees on the projector during a quiz. Its address holds a presenter key of its
own, never the organiser's; it shows who has answered and never what until the teacher reveals a case, and then the
class's spread of answers beside the reference, the model's answer and its heatmap. In a teacher-paced quiz the
teacher moves the class from case to case from here."""

from __future__ import annotations

import streamlit as st

from core.review import ReviewError, store
from core.review.store import CaseView, SessionView
from dashboard.captions import md, sentence
from dashboard.charts import answer_spread_figure
from dashboard.common import error_boundary
from dashboard.sessions import case_pictures, fit_to_screen, join_panel, label, leaderboard_table

LIVE_SECONDS = 3


def presenter_page(engine, key: str) -> None:
    session = store.session_for_presenter(engine, key)
    fit_to_screen(330)  # the title, the join line and the teacher's buttons: the scan fits under them on one screen
    title, code = st.columns([3, 2], vertical_alignment="bottom")
    title.title(md(session.name))
    if session.joinable and session.ended_at is None:
        code.markdown(f"<div style='text-align:right;font-size:2.2rem;font-weight:700;letter-spacing:0.08em'>"
                      f"Join: {session.display_code}</div>", unsafe_allow_html=True)
        with st.expander("How to join: the link and its QR code", expanded=session.paced and
                         session.current_position is None):
            join_panel(session, width=420)
    st.fragment(run_every=LIVE_SECONDS)(live)(engine, key)


def live(engine, key: str) -> None:
    """Everything below the title, read again every few seconds (and after each of the teacher's buttons)."""
    try:
        session = store.session_for_presenter(engine, key)
    except ReviewError as error:  # a newer presenter link was made: this page stops showing anything
        st.error(sentence(error))
        return
    cases = store.session_cases(engine, session.id)
    readers = store.session_readers(engine, session.id)
    done = store.answered_cases(engine, session)
    with error_boundary("The presenter's page"):
        if session.paced and session.ended_at is None:
            paced(engine, session, cases, readers, done)
        else:
            self_paced(engine, session, cases, readers, done)


def who_answered(readers, done: dict[int, set[int]], case: CaseView) -> None:
    """The names of those who have answered a case and of those who have not: never what they answered."""
    answered = [r.name for r in readers if case.id in done.get(r.id, set())]
    waiting = [r.name for r in readers if case.id not in done.get(r.id, set())]
    st.metric("Answered", f"{len(answered)} of {len(readers)}")
    if answered:
        st.markdown("✓ " + md(", ".join(answered)))
    if waiting:
        st.caption("Still reading: " + md(", ".join(waiting)))


def paced(engine, session: SessionView, cases: list[CaseView], readers, done: dict[int, set[int]]) -> None:
    at = session.current_position
    if at is None:
        st.markdown(f"**{len(readers)}** reader{'s have' if len(readers) != 1 else ' has'} joined"
                    + (": " + md(", ".join(r.name for r in readers)) if readers else "."))
        if st.button("Begin: show case 1 to the class", type="primary", key="present.begin",
                     icon=":material/play_arrow:", shortcut="Right"):
            store.move_class(engine, session, 0)
            st.rerun()
        return
    case = cases[at]
    revealed = case.revealed_at is not None
    # The teacher's buttons above the case, so that they are on the screen whatever the case's pictures take.
    heading, c1, c2, c3 = st.columns([2, 1, 1, 1], vertical_alignment="center")
    heading.subheader(f"Case {at + 1} of {len(cases)}")
    if not revealed and c1.button("Reveal the answers", type="primary", key="present.reveal",
                                  icon=":material/visibility:", shortcut="Space", width="stretch"):
        store.reveal_case(engine, session, case.id)
        st.rerun()
    if at + 1 < len(cases):
        if c2.button("Next case ▶", key="present.next", shortcut="Right", width="stretch",
                     type="primary" if revealed else "secondary",
                     help=None if revealed else "Moves the class on without revealing this case: its answers are "
                                                "shown at the end of the quiz"):
            store.move_class(engine, session, at + 1)
            st.rerun()
    end_button(engine, session, c3, last=at + 1 == len(cases) and revealed)
    case_panels(engine, session, case, revealed, readers, done)
    board(engine, session, cases)


def end_button(engine, session: SessionView, where, last: bool = False) -> None:
    """Ending takes a second click in a popover: an end cannot be undone from the projector, and the button sits
    next to the ones pressed on every case."""
    with where.popover("End the quiz", icon=":material/flag:", width="stretch",
                       type="primary" if last else "secondary"):
        st.markdown("End the quiz now? Every case is revealed, no more answers are taken, and the leaderboard is "
                    "final.")
        if st.button("End it", key="present.end", type="primary"):
            store.end_session(engine, session)
            st.rerun()


def self_paced(engine, session: SessionView, cases: list[CaseView], readers, done: dict[int, set[int]]) -> None:
    """Everyone at their own pace: each reader's progress, and any case the teacher chooses to reveal."""
    if session.ended_at is not None:
        st.success("The quiz has ended: every case is revealed. Pick one below to talk it through.")
    if not readers:
        st.info("Nobody has joined yet.")
    else:
        rows = [{"reader": r.name, "answered": len(done.get(r.id, set())), "of": len(cases)} for r in readers]
        st.dataframe(rows, hide_index=True, width="content",
                     column_config={"answered": st.column_config.ProgressColumn(
                         "answered", min_value=0, max_value=len(cases), format="%d")})
        if session.ended_at is None:
            st.caption("Who has answered how many cases; what they answered is shown only for a case you reveal.")
    chosen = st.selectbox("A case to talk through", [c.position for c in cases], index=None,
                          format_func=lambda p: f"Case {p + 1}" + (" (revealed)" if cases[p].revealed_at else ""),
                          key="present.case")
    if chosen is not None:
        case = cases[chosen]
        revealed = case.revealed_at is not None or session.ended_at is not None
        beside = case_panels(engine, session, case, revealed, readers, done)
        if not revealed:
            with beside:
                st.caption("Revealing a case shows its answers to the class: it then takes no more answers, also "
                           "from those who have not reached it.")
                if st.button("Reveal this case", type="primary", key="present.reveal_one",
                             icon=":material/visibility:"):
                    store.reveal_case(engine, session, case.id)
                    st.rerun()
    if session.ended_at is None:
        end_button(engine, session, st.container())
    board(engine, session, cases)


def case_panels(engine, session: SessionView, case: CaseView, revealed: bool, readers, done: dict[int, set[int]]):
    """The case's pictures, and beside them its reveal (once revealed) or who has answered it; returns the column
    beside the pictures, for what the caller adds there."""
    left, right = st.columns([3, 2])
    with left:
        reveal_pictures(session, case, revealed)
    with right:
        if revealed:
            reveal_panel(engine, session, case)
        else:
            who_answered(readers, done, case)
    return right


def reveal_pictures(session: SessionView, case: CaseView, revealed: bool) -> None:
    """The case's scan, and once revealed the model's heatmap beside it."""
    try:
        pictures = case_pictures(session, case, with_heatmap=revealed)
    except ValueError as error:
        st.warning(f"The scan cannot be shown: {md(error)}")
        return
    if revealed and pictures.heatmap:
        a, b = st.columns(2)
        a.container(key=f"fit-scan-{case.id}").image(pictures.scan, caption=md(case.title), width="stretch")
        b.container(key=f"fit-heatmap-{case.id}").image(pictures.heatmap, caption=md(pictures.note), width="stretch")
    else:
        st.container(key=f"fit-scan-{case.id}").image(pictures.scan, caption=f"Case {case.position + 1}",
                                                      width="stretch")


def reveal_panel(engine, session: SessionView, case: CaseView) -> None:
    """The class's spread of answers beside the reference and the model's answer."""
    spread = store.class_spread(engine, session, case.id)
    st.markdown(f"Reference: **{label(case.reference)}**" if case.reference else "No reference for this scan.")
    st.markdown(f"The model: **{md(case.model_said(label, with_probability=True))}**")
    st.markdown(f"**The class's answers** ({sum(spread.values())})")
    st.plotly_chart(answer_spread_figure(session.classes, spread, case.reference), width="stretch",
                    config={"displayModeBar": False}, key=f"present.spread.{case.id}")


def board(engine, session: SessionView, cases: list[CaseView]) -> None:
    """The leaderboard, once there is something to score: in a paced quiz it counts the revealed cases only."""
    if session.kind != "quiz" or not (session.ended_at or any(c.revealed_at for c in cases)):
        return
    with st.expander("Leaderboard" + ("" if session.ended_at else " (revealed cases)"),
                     expanded=session.ended_at is not None):
        leaderboard_table(engine, session)
