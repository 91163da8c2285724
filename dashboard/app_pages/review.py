"""Review sessions and teaching quizzes. The address says who is here: ?reader=KEY (a reader's own reading),
?organiser=KEY (the organiser's view), ?present=KEY (the page projected to a class), ?mine=KEY (an organiser's list
of their sessions, and &open=ID one of them), ?manage=ID (a session from the server-wide list, where the server
allows it), ?session=CODE (joining by the session's link); without any, starting a session."""

from __future__ import annotations

import streamlit as st

from core.review import ReviewError, store
from dashboard.captions import md, sentence
from dashboard.common import review_database
from dashboard.organising import organiser_page, sessions_list, start_page
from dashboard.presenting import presenter_page
from dashboard.reading import reader_page
from dashboard.sessions import JOIN, MANAGE, MINE, OPEN, ORGANISER, PRESENTER, READER, server_list_allowed


def join_page(engine, code: str) -> None:
    session = store.session_by_code(engine, code)
    st.title(md(session.name))
    st.write(f"{store.KINDS[session.kind]}: {store.MODES[session.mode].lower()}.")
    if session.ended_at is not None:
        st.info("This session has ended: it takes no more answers, and so no new readers.")
        return
    if not session.joinable:
        st.warning("This session does not take new readers; ask the organiser for your personal link.")
        return
    with st.form("review.join"):
        name = st.text_input("Your name", max_chars=store.NAME_LENGTH)
        if st.form_submit_button("Join", type="primary"):
            try:
                _, key = store.join(engine, code, name)
            except ReviewError as error:
                st.error(sentence(error))
                return
            st.query_params.from_dict({READER: key})
            st.rerun()


def session_number(given: str) -> int:
    if not (isinstance(given, str) and given.isascii() and given.isdigit() and len(given) <= 12):
        raise ReviewError("this address does not name a session; open it again from your list of sessions")
    return int(given)


def route() -> None:
    try:
        engine = review_database()
    except ReviewError as error:  # each sentence names the review database, what is wrong with it and what to do
        st.error(sentence(error))
        return
    params = st.query_params
    try:
        if params.get(READER):
            reader_page(engine, params[READER])
        elif params.get(PRESENTER):
            presenter_page(engine, params[PRESENTER])
        elif params.get(ORGANISER):
            key = params[ORGANISER]
            organiser_page(engine, store.session_for_organiser(engine, key), {ORGANISER: key})
        elif params.get(MINE) and params.get(OPEN):
            mine, opened = params[MINE], params[OPEN]
            organiser_page(engine, store.organisers_session(engine, mine, session_number(opened)),
                           {MINE: mine, OPEN: opened})
        elif params.get(MINE):
            sessions_list(engine, store.organiser_sessions(engine, params[MINE]), mine=params[MINE])
        elif params.get(MANAGE) and server_list_allowed():
            opened = params[MANAGE]
            organiser_page(engine, store.session_by_id(engine, session_number(opened)), {MANAGE: opened})
        elif params.get(JOIN):
            join_page(engine, params[JOIN])
        else:
            start_page(engine)
    except ReviewError as error:
        st.error(sentence(error))
        if st.button("Start page", key="review.home"):
            st.query_params.clear()
            st.rerun()


route()
