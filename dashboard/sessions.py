"""What the review pages share: the links of a session, a case's pictures (the scan, and the model's heatmap with
the tumour's box and outline where the data has them), and figures written with their intervals."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from core.checkpoint import CheckpointError
from core.explain import CAM_METHODS, DEFAULT_LAYER, DEFAULT_METHOD, explain, overlay
from core.review.cases import Stack, case_image_file, load_case_image, load_case_stack
from core.review.store import CaseView, SessionView
from core.sources import FileRefused, contained_path, is_within
from dashboard import review
from dashboard.captions import md
from dashboard.common import ROOT, allowed_roots, checkpoint_file, classifier_at, data_dir, datasets_root, file_digest
from dashboard.heatmaps import in_proportion, png_bytes, with_scale_bar

CASE_SIDE = 768  # the scan and heatmap are shown, cached and put into reports at most this large
READER, ORGANISER, JOIN = "reader", "organiser", "session"  # the query parameters of the review page
PRESENTER = "present"          # the projected page of a session (its own key, never the organiser's)
MINE, OPEN = "mine", "open"    # an organiser's list of their sessions (their key), and one of them opened from it
MANAGE = "manage"              # a session opened from the server-wide list, where the server allows it
PROJECTED = "projected"        # on the organiser's page: the presenter's key made there, shown again after a reload
QR_MODULE_PIXELS = 12          # a QR module this many pixels wide: read from the back of a room when projected


READER_URL_ENV = "BRAIN_MRI_READER_URL"  # where readers are served, when not here (a BRAIN_MRI_PAGES=review server)


def page_link(**params: str) -> str:
    """The full address of the review page with these query parameters (for people to copy and share). Readers'
    and join links go to $BRAIN_MRI_READER_URL when it is set."""
    import os

    if os.environ.get(READER_URL_ENV) and (READER in params or JOIN in params):
        return f"{os.environ[READER_URL_ENV].rstrip('/')}/review?{urlencode(params)}"
    base = "http://localhost:8501/review"
    try:
        if st.context.url:
            base = st.context.url.split("?", 1)[0]
    except Exception:
        pass
    return f"{base}?{urlencode(params)}"


SESSIONS_PAGE = "sessions"  # in $BRAIN_MRI_PAGES: this server lists every session of its database, to open


def server_list_allowed() -> bool:
    """Whether this server shows every session of its database to whoever opens the review page (an organisers'
    server started with "sessions" among BRAIN_MRI_PAGES); never by default, where readers use the same server."""
    import os

    return SESSIONS_PAGE in {p.strip() for p in os.environ.get("BRAIN_MRI_PAGES", "").split(",")}


def join_qr_png(link: str) -> bytes:
    """The QR code of a join link as a PNG (segno; error correction M, a quiet zone of four modules)."""
    import segno

    buffer = io.BytesIO()
    segno.make(link, error="m").save(buffer, kind="png", scale=QR_MODULE_PIXELS, border=4)
    return buffer.getvalue()


def join_panel(session: SessionView, width: int = 320) -> None:
    """The session's join code, link and QR code, as a class is shown them (on the projector or a handout)."""
    link = page_link(**{JOIN: session.code})
    left, right = st.columns([2, 1], vertical_alignment="center")
    left.markdown(f"Join at the link below, or scan the code, or type the code **{session.display_code}** on the "
                  "review page:")
    left.code(link, language=None)
    right.image(join_qr_png(link), width=width, caption="The join link as a QR code")


def fit_to_screen(above: int) -> None:
    """Draw the scans in containers keyed ``fit-...`` as wide as their column but no taller than the window less
    ``above`` pixels (what the page puts above them), and never under 300 px: a 1440 x 900 laptop or projector shows
    the whole scan beside the controls, and a small scan is still enlarged to fill its place. The style goes to the
    page's event container and takes no space."""
    st.html(f"<style>[class*='st-key-fit-'] img {{width: 100% !important; height: auto; "
            f"max-height: max(300px, calc(100vh - {int(above)}px)); object-fit: contain;}}</style>")


def leaderboard_table(engine, session: SessionView, width: str = "content") -> None:
    """A quiz's leaderboard, placed, in core.review.store.scores' one order (the reader's, organiser's and
    presenter's pages alike, and the session report)."""
    from core.review import store

    rows = [{"place": k, "reader": name, "right": right, "answered": answered}
            for k, (name, right, answered) in enumerate(store.scores(engine, session), 1)]
    st.dataframe(pd.DataFrame(rows, columns=["place", "reader", "right", "answered"]), hide_index=True, width=width)


def label(name: str | None) -> str:
    """A class as the pages, the CSV and the PDF name it (core.review.words)."""
    from core.review.words import class_name

    return class_name(name)


@dataclass(frozen=True)
class CasePictures:
    scan: bytes                 # PNG
    heatmap: bytes | None       # PNG: the overlay with the box and outline drawn, or None with ``note`` saying why
    note: str                   # what the heatmap shows, or why there is none
    size: tuple[int, int]


def session_images_root(session: SessionView) -> Path | None:
    """The folder a run-based session's images are in: the one found when the session was made (the same for every
    reader), while it is still inside the folders the dashboard may read; else the dataset in this browser's
    datasets folder."""
    recorded = session.source.get("images_root")
    if recorded and Path(recorded).is_dir() and is_within(recorded, allowed_roots()):
        return Path(recorded)
    root = datasets_root()
    if not root or not is_within(root, allowed_roots()):
        return None
    try:
        found = contained_path(root, str(session.source.get("dataset", "")), "dataset")
    except FileRefused:
        return None
    return found if found.is_dir() else None


def case_image_path(session: SessionView, case: CaseView) -> Path:
    return case_image_file(session.source, case.image, data_dir(), session_images_root(session))


def session_model_file(session: SessionView) -> Path:
    """The session's model file, refused (CheckpointError) when it is missing, outside the allowed folders, or no
    longer the file the session was made with."""
    recorded = session.model.get("path")
    if not recorded:
        raise CheckpointError("the session does not name its model")
    path = Path(recorded) if Path(recorded).is_absolute() else ROOT / recorded
    file = checkpoint_file(path)
    expected = session.model.get("file_sha256")
    if expected and file_digest(file) != expected:
        raise CheckpointError("the session's model file has changed since the session was made, so its heatmaps "
                              "would not be the model's that answered")
    return file


def _explained(image: Image.Image, model_file: str | None, model_error: str, image_file: str | None = None,
               mask_file: str | None = None, said: str = "", target: str | None = None,
               spacing_mm: tuple[float, float] | None = None, heatmap: np.ndarray | None = None) -> CasePictures:
    """The scan (at most CASE_SIDE) and, with a model, its heatmap of the model's answer (or of class ``target``;
    ``heatmap``: one already computed, of ``target``), with the tumour's box and outline drawn where the data has
    them; ``said`` ends the heatmap's caption. With the scan's (row, column) ``spacing_mm``, both pictures are shown
    in true proportion with a scale bar."""
    raw_size = image.size
    image.thumbnail((CASE_SIDE, CASE_SIDE))
    drawn, described = None, f"No heatmap: {model_error}" if model_error else ""
    if model_file is not None:
        classifier = classifier_at(model_file)
        if heatmap is None:
            result = explain(classifier, [image], method=DEFAULT_METHOD, layer=DEFAULT_LAYER, targets=target)
            heatmap, explained = result.heatmaps[0], classifier.classes[int(result.targets[0])]
        else:
            explained = target
        notes = []
        drawn = overlay(image, heatmap)
        if image_file is not None:
            drawn, notes = review.draw_truth(drawn, Path(image_file), Path(mask_file) if mask_file else None)
        described = (f"{CAM_METHODS[DEFAULT_METHOD].label} ({DEFAULT_LAYER}) for {label(explained)}"
                     + "".join(f"; {n}" for n in [*notes, said] if n))
    shown = [image.convert("RGB")] + ([drawn] if drawn is not None else [])
    if spacing_mm:  # the spacing of the scan as stored, before the thumbnail
        shown, mm_per_pixel = in_proportion(shown, spacing_mm, raw_size)
        shown = [with_scale_bar(p, mm_per_pixel) for p in shown]
    return CasePictures(png_bytes(shown[0]), png_bytes(shown[1]) if drawn is not None else None, described,
                        shown[0].size)


@st.cache_data(show_spinner="Computing the heatmap…", max_entries=96)
def _pictures(image_file: str, image_sha256: str, model_file: str | None, model_error: str, mask_file: str | None
              ) -> CasePictures:
    return _explained(load_case_image(Path(image_file), image_sha256), model_file, model_error, image_file, mask_file)


@st.cache_resource(show_spinner="Opening the scan's slices…", max_entries=32)
def _stack(stack_file: str, stack_sha256: str) -> Stack:
    """A case's slab of slices, read once and shared by every reader (read-only: a cached array is not copied on each
    rerun). A slab is at most 31 slices, 8 MB for 512 x 512 ones, so a session's cases mostly stay in the cache."""
    stack = load_case_stack(Path(stack_file), stack_sha256)
    stack.slices.flags.writeable = False
    return stack


def _stack_file(case: CaseView) -> str:
    return str(contained_path(data_dir(), case.stack, "uploaded scan"))


def case_stack(case: CaseView) -> Stack:
    """The slab of slices of an uploaded volume's case (ValueError says why it cannot be read)."""
    return _stack(_stack_file(case), case.stack_sha256)


@st.cache_resource(show_spinner="Computing the heatmaps of the scan's slices…", max_entries=16)
def _slab_heatmaps(stack_file: str, stack_sha256: str, target: str, model_file: str) -> np.ndarray:
    """The heatmaps of class ``target`` on every slice of a volume's slab, on one colour scale (divided by the
    largest value over the slab): a slice without evidence for the class stays cold instead of being stretched to
    its own faint peak. Computed once per slab, model and class, and shared (read-only) by every reader."""
    stack = _stack(stack_file, stack_sha256)
    pictures = [Image.fromarray(np.asarray(one), "L") for one in stack.slices]
    maps = explain(classifier_at(model_file), pictures, method=DEFAULT_METHOD, layer=DEFAULT_LAYER, targets=target,
                   scale="together").heatmaps
    maps.flags.writeable = False
    return maps


@st.cache_data(show_spinner="Computing the heatmap…", max_entries=96)
def _slice_pictures(stack_file: str, stack_sha256: str, index: int, answered: int, target: str | None,
                    model_file: str | None, model_error: str) -> CasePictures:
    """One slice of a volume's case and the heatmap, on that slice, of the class the model answered on the case's
    own slice (``target``), so that scrolling shows where that answer's evidence lies slice by slice: every slice's
    colours on the slab's one scale."""
    stack = _stack(stack_file, stack_sha256)
    picture = Image.fromarray(np.asarray(stack.slices[index]), "L")
    scale = "colours on one scale across the scan's slices (a slice without evidence stays cold)"
    said = (f"slice {stack.number(index)}, the case's; {scale}" if index == answered else
            f"slice {stack.number(index)} (the model answered slice {stack.number(answered)}); {scale}")
    heatmap = None
    if model_file is not None and target is not None:
        heatmap = _slab_heatmaps(stack_file, stack_sha256, target, model_file)[index]
    return _explained(picture, model_file, model_error, said=said, target=target, spacing_mm=stack.spacing_mm,
                      heatmap=heatmap)


def case_pictures(session: SessionView, case: CaseView, with_heatmap: bool, slice_index: int | None = None
                  ) -> CasePictures:
    """The case's scan and, when asked (after the reveal), the session model's heatmap of its answer. For an
    uploaded volume, ``slice_index`` (from 0) shows any of its slices, with the model's heatmap of that slice and a
    scale bar where the spacing is known.
    Raises ValueError (FileRefused, ReviewError, ImageRefused) with the reason when the scan cannot be shown."""
    image_file = case_image_path(session, case)
    model_file, model_error, mask_file = None, "", None
    if with_heatmap:
        try:
            model_file = str(session_model_file(session))
        except (CheckpointError, FileRefused, OSError) as error:
            model_error = str(error)
        images_root = session_images_root(session) if session.source.get("type") == "run" else None
        if images_root is not None:
            mask = review.mask_path(images_root.parent, images_root.name, case.image)
            mask_file = str(mask) if mask else None
    if case.stack and slice_index is not None:
        return _slice_pictures(_stack_file(case), case.stack_sha256, slice_index, case.stack_slice, case.model_label,
                               model_file, model_error)
    return _pictures(str(image_file), case.image_sha256, model_file, model_error, mask_file)


def pil(picture: bytes | None) -> Image.Image | None:
    return Image.open(io.BytesIO(picture)).convert("RGB") if picture else None


def scan_beside_heatmap(session: SessionView, case: CaseView, caption: str) -> None:
    """A case's scan, captioned, with the model's heatmap beside it (the galleries of missed cases)."""
    pictures = case_pictures(session, case, with_heatmap=True)
    left, right = st.columns(2)
    left.image(pictures.scan, width="stretch", caption=caption)
    if pictures.heatmap:
        right.image(pictures.heatmap, caption=md(pictures.note), width="stretch")
