"""Review sessions and teaching quizzes. The address says who is here: ?reader=KEY (a reader's own reading),
?organiser=KEY (the organiser's view), ?session=CODE (joining by the session's link); without any, starting a
session."""

from __future__ import annotations

import streamlit as st

from core.review import ReviewError
from core.review import store
from dashboard.captions import md, sentence
from dashboard.common import review_database
from dashboard.organising import organiser_page, start_page
from dashboard.reading import reader_page
from dashboard.sessions import JOIN, ORGANISER, READER


def join_page(engine, code: str) -> None:
    session = store.session_by_code(engine, code)
    st.title(md(session.name))
    st.write(f"{store.KINDS[session.kind]}: {store.MODES[session.mode].lower()}.")
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
        elif params.get(ORGANISER):
            organiser_page(engine, params[ORGANISER])
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
