"""Upload scans: the model's prediction for each, with the heatmap of where it found the evidence."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import streamlit as st

from core.checkpoint import CheckpointError
from core.data import CLASS_LABELS
from core.explain import (
    CAM_METHODS,
    DEFAULT_LAYER,
    DEFAULT_METHOD,
    LAYERS,
    SCALES,
    explain,
    fast_methods,
    layer_description,
    overlay,
)
from core.sources import read_image
from core.sources.files import printable
from core.sources.images import pixel_spacing
from dashboard.captions import Verdict, layer_label, localisation_sentence, md, model_grid, verdict
from dashboard.charts import probability_bars
from dashboard.common import available_models, classifier_at, error_boundary, get_classifier, runs_of_model
from dashboard.heatmaps import in_proportion, png_bytes, with_colour_bar, with_header, with_scale_bar

PREDICTED = "the predicted class"
MAX_SCANS = 24        # per session: each decoded scan can hold up to 12 MB (2,048 x 2,048 RGB)
MAX_KEPT_BYTES = 96 << 20  # decoded scans one session keeps
KEPT_KEY, PROBLEMS_KEY, GENERATION_KEY = "predict.kept", "predict.problems", "predict.generation"
UPLOADER_KEY = "predict.uploads"
SLOW_LIMIT = 3        # Score-CAM: minutes per scan, in a background worker
DISPLAY_SIDE = 1024   # scans are shown (and blended with their heatmap) at most this large

st.title("Brain-tumour MRI classifier")
st.write("Upload one or more 2-D MRI slices (PNG, JPEG, BMP or TIFF), or a DICOM series or NIfTI volume to scroll "
         "through. The model sorts each slice into glioma, "
         "meningioma, pituitary tumour or no tumour, and a heatmap shows which part of the slice drove the "
         "answer. It is a research and teaching tool, not a diagnosis.")

classifier = get_classifier()

with st.expander("Explanation settings", expanded=False):
    c1, c2, c3, c4 = st.columns(4)
    method = c1.selectbox("Method", list(CAM_METHODS), index=list(CAM_METHODS).index(DEFAULT_METHOD),
                          format_func=lambda m: CAM_METHODS[m].label, key="predict.method", persist_state="session",
                          help="How the heatmap weighs the network's feature maps. " +
                          " ".join(f"{s.label}: {s.note}." for s in CAM_METHODS.values()))
    target = c2.selectbox("Explain", [PREDICTED, *(classifier.classes if classifier else [])], key="predict.target",
                          format_func=lambda c: c if c == PREDICTED else f"why {CLASS_LABELS[c]}?",
                          help="Ask about any class, for instance 'why not meningioma?'")
    size, stride = model_grid(classifier.metadata if classifier else {})
    layer = c3.selectbox("Layer", list(LAYERS), index=list(LAYERS).index(DEFAULT_LAYER), key="predict.layer",
                         persist_state="session", format_func=lambda name: layer_label(name, size, stride),
                         help=" ".join(f"{name}: {layer_description(name, size, stride)}." for name in LAYERS))
    opacity = c4.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="predict.opacity", persist_state="session")
    scale = st.radio("Heatmap colours", list(SCALES), format_func=lambda k: SCALES[k].capitalize(), horizontal=True,
                     key="predict.scale", persist_state="session",
                     help="Own maximum: every map is stretched until its hottest point is red, even for a class at "
                          "0.1%. Relative to the prediction: red means as much evidence as the predicted class's "
                          "peak, so maps of different classes and methods can be compared.")


def model_label(folder: str | Path) -> str:
    """'default' -> 'Default model', 'mask-guided' -> 'Mask-guided model'."""
    name = Path(folder).name
    return f"{name[:1].upper()}{name[1:]} model"


def kept_scans() -> list[dict]:
    """This session's scans, kept across pages until the user removes them: {"name", "digest", "image"} for a
    picture; {"name", "digest", "volume", "index", "axis", "source"} for a DICOM or NIfTI scan, shown one slice at a
    time ("source": a NIfTI file's bytes, to cut it along another axis; None for DICOM)."""
    return st.session_state.setdefault(KEPT_KEY, [])


def decoded_bytes(scan: dict) -> int:
    if "volume" in scan:
        return scan["volume"].slices.nbytes + len(scan["source"] or b"")
    image = scan["image"]
    return image.width * image.height * len(image.getbands())


def volume_entry(group: list[tuple[str, bytes]]) -> dict:
    """A DICOM series, zip or NIfTI file as a kept scan, opened at its middle slice (ScanRefused says why not)."""
    from core.sources.volumes import read_scan, scan_name

    volume = read_scan(group)
    digest = hashlib.sha256(b"".join(hashlib.sha256(blob).digest() for _, blob in group)).hexdigest()
    name = scan_name(group)
    nifti = volume.kind == "NIfTI"
    return {"name": name, "digest": digest, "volume": volume, "index": volume.count // 2, "axis": 2,
            "source": group[0][1] if nifti else None}


def shown_scan(scan: dict) -> tuple[str, str, object]:
    """(name, digest, image) of what a kept scan shows now: a picture, or the chosen slice of a volume (its digest
    names the slice, so that each slice's explanation is cached on its own)."""
    if "volume" not in scan:
        return scan["name"], scan["digest"], scan["image"]
    volume, index = scan["volume"], scan["index"]
    where = f"{volume.axis} " if volume.axis else ""
    return (f"{scan['name']}, {where}slice {index + 1} of {volume.count}", f"{scan['digest']}:{scan['axis']}:{index}",
            volume.image(index))


def stated_bytes(group: list[tuple[str, bytes]]) -> int:
    """What a DICOM series, zip or NIfTI file will hold in this session once decoded, from its headers alone
    (ScanRefused says why not): its 8-bit slices, and a NIfTI file's own bytes (kept to cut it along another axis)."""
    from core.sources.volumes import scan_kind, stated_voxels

    return stated_voxels(group) + (len(group[0][1]) if scan_kind(group) == "NIfTI" else 0)


def upload_entry(group: list[tuple[str, bytes]], volume: bool, room: int) -> dict | None:
    """A kept scan made of uploaded files, or None when it would not fit in ``room`` bytes: a volume is measured from
    its headers before anything is decoded, a picture (a few MB at most) once decoded. ValueError says what is wrong
    with the files."""
    if volume:
        return volume_entry(group) if stated_bytes(group) <= room else None
    name, blob = group[0]
    entry = {"name": name, "digest": hashlib.sha256(blob).hexdigest(), "image": read_image(blob)}
    return entry if decoded_bytes(entry) <= room else None


def some_names(names: list[str], shown: int = 3) -> str:
    """'**a**, **b**, **c** and 33 more': the names of uploaded files, for one sentence about them all."""
    listed = ", ".join(f"**{md(name)}**" for name in names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


def take_uploads(files) -> None:
    """Move uploaded files into the session's kept scans (each checked and decoded once: pictures one by one, DICOM
    files grouped by series, NIfTI files and zips each as a scan), note a sentence for each that is refused, and empty
    the uploader. The session's caps hold before a scan is decoded: what would pass :data:`MAX_SCANS` or
    :data:`MAX_KEPT_BYTES` is refused in one sentence, never decoded."""
    from core.sources.volumes import scan_groups

    scans, problems, over = kept_scans(), [], []
    groups, pictures = scan_groups([(upload.name, upload.getvalue()) for upload in files])
    uploads = [(group, True) for group in groups] + [([picture], False) for picture in pictures]
    held = sum(decoded_bytes(s) for s in scans)
    for at, (group, volume) in enumerate(uploads):
        if len(scans) >= MAX_SCANS:
            rest = [g[0][0] for g, _ in uploads[at:]]
            problems.append(f"At most {MAX_SCANS} scans are kept at a time; {some_names(rest)} "
                            f"{'was' if len(rest) == 1 else 'were'} not read. Remove some scans first.")
            break
        try:
            entry = upload_entry(group, volume, MAX_KEPT_BYTES - held)
        except ValueError as error:
            problems.append(f"**{md(group[0][0])}**: {md(error)} — skipped; the other files are shown.")
            continue
        except Exception:  # a reader's accident must not take the page down, nor the other files
            logging.getLogger(__name__).exception("unexpected error reading an uploaded scan")
            problems.append(f"**{md(group[0][0])}** could not be read (an unexpected error, written to the server's "
                            "log) — skipped; the other files are shown.")
            continue
        if entry is None:
            over.append(group[0][0])
            continue
        scans.append(entry)
        held += decoded_bytes(entry)
    if over:
        problems.append(f"{some_names(over)} {'was' if len(over) == 1 else 'were'} not added: this session would hold "
                        f"over {MAX_KEPT_BYTES >> 20} MB of decoded scans. Remove some scans first.")
    st.session_state[PROBLEMS_KEY] = problems
    st.session_state[GENERATION_KEY] = st.session_state.get(GENERATION_KEY, 0) + 1  # a fresh, empty uploader
    st.rerun()


def volume_controls(position: int, scan: dict) -> None:
    """The slice slider of a DICOM or NIfTI scan (and the axis of a NIfTI volume), with what the page knows of it:
    pixel spacing, how the grey levels were set, and what was withheld from the file."""
    from core.sources.volumes import AXES, read_nifti

    volume = scan["volume"]
    with st.container(border=True):
        st.markdown(f"**{md(scan['name'])}** ({volume.kind}, {volume.count} slice{'s' if volume.count != 1 else ''})")
        key = f"predict.volume.{position}.{scan['digest'][:10]}"
        if scan["source"] is not None:
            axis = st.radio("Cut along", list(AXES), index=list(AXES).index(scan["axis"]), format_func=AXES.get,
                            horizontal=True, key=f"{key}.axis")
            if axis != scan["axis"]:
                scan["volume"], scan["axis"] = read_nifti(scan["source"], axis), axis
                scan["index"] = scan["volume"].count // 2
                st.rerun()
        if volume.count > 1:
            scan["index"] = st.slider("Slice", 1, volume.count, scan["index"] + 1, key=f"{key}.{scan['axis']}") - 1
        facts = [f"pixels of {volume.spacing_mm[1]:g} x {volume.spacing_mm[0]:g} mm" if volume.spacing_mm
                 else "the file states no valid pixel spacing", f"grey levels from {volume.window}", *volume.notes]
        st.caption(md("; ".join(facts)) + ".")
        if volume.withheld or volume.private_tags:
            names = [WITHHELD_WORDS.get(k, k) for k in volume.withheld]
            private = [f"{volume.private_tags} private tag{'s' if volume.private_tags != 1 else ''}"] \
                if volume.private_tags else []
            st.caption("Not shown, not kept, not logged: " + md(", ".join(names + private)) + ".")
        if volume.burned_in:
            st.warning("The file says its pixels carry burned-in annotation (text such as a name may be part of the "
                       "picture itself); the image is shown as it is.", icon=":material/warning:")


# Plain words for the withheld DICOM attributes, on the page.
WITHHELD_WORDS = {"PatientName": "patient's name", "PatientID": "patient ID", "PatientBirthDate": "birth date",
                  "PatientBirthTime": "birth time", "PatientSex": "sex", "PatientAge": "age",
                  "AccessionNumber": "accession number", "InstitutionName": "institution",
                  "InstitutionAddress": "institution's address", "ReferringPhysicianName": "referring physician",
                  "StudyDate": "study date", "SeriesDate": "series date", "AcquisitionDate": "acquisition date",
                  "ContentDate": "content date", "StudyInstanceUID": "study UID", "SeriesInstanceUID": "series UID",
                  "SOPInstanceUID": "image UID", "ImageComments": "image comments",
                  "StudyDescription": "study description", "SeriesDescription": "series description"}


uploads = st.file_uploader("Add MRI slices", type=None, accept_multiple_files=True,
                           key=f"{UPLOADER_KEY}.{st.session_state.get(GENERATION_KEY, 0)}",
                           help=f"Pictures (PNG, JPEG, BMP, TIFF); DICOM files (one, a multi-frame file, or the files "
                                "of a series together; with or without .dcm), a zip of a series; NIfTI (.nii, "
                                f".nii.gz). Up to {MAX_SCANS} scans are kept for this session, across pages, until you "
                                "remove them.")
if uploads:
    take_uploads(uploads)
for problem in st.session_state.get(PROBLEMS_KEY, []):
    st.warning(problem)
for position, kept in enumerate(kept_scans()):
    if "volume" in kept:
        with error_boundary(f"The controls of {kept['name']}"):
            volume_controls(position, kept)
scans = [shown_scan(s) for s in kept_scans()]
bundled_models = available_models()
compare_models = len(bundled_models) > 1 and st.toggle(
    "Every bundled model side by side", value=True, key="predict.compare_models", persist_state="session",
    help="The same scan through each model shipped with the dashboard ("
         + ", ".join(md(model_label(m).lower()) for m in bundled_models) + "): models with much the same accuracy "
         "can rest on different evidence.")
if scans:
    count, clear = st.columns([4, 1], vertical_alignment="center")
    count.caption(f"{len(scans)} scan{'s' if len(scans) > 1 else ''} kept for this session (they stay when you visit "
                  "other pages).")
    if clear.button("Remove all scans", key="predict.clear", icon=":material/delete:"):
        st.session_state[KEPT_KEY] = []  # a slow job for them is cancelled below, now that there are no scans
        st.session_state[PROBLEMS_KEY] = []
        st.rerun()


@st.cache_resource
def slow_explainer():
    """The one background worker of this server for slow explanations (core.background)."""
    from core.background import SlowExplainer

    return SlowExplainer()


def model_key_of(model) -> str:
    """What names a model in the explanation cache: its file and when it was written."""
    return f"{model.path}:{os.path.getmtime(model.path)}"


@st.cache_data(show_spinner=False, max_entries=64)
def explained(model_key: str, digests: tuple[str, ...], method: str, layer: str, target: str | None,
              scale: str = "own", _images=(), _classifier=None):
    """The explanation (probabilities, heatmaps, familiarity) of a set of scans by a fast method, computed once per
    model, files (their digests) and settings (moving the opacity slider reuses them)."""
    return explain(_classifier, list(_images), method=method, layer=layer, targets=target, scale=scale)


SLOW_JOB = "predict.slow_job"


@st.fragment(run_every=2.0)
def slow_progress(title: str) -> None:
    """The running slow explanation's progress, refreshed every two seconds, with a button to cancel it; the
    whole page reruns when it is done."""
    entry = st.session_state.get(SLOW_JOB)
    if entry is None:
        return
    job = entry["job"]
    if job.done():
        st.rerun(scope="app")
    done, total, left = job.progress()
    if not total:
        text = "waiting for the worker (it serves one slow explanation at a time, for everybody on this server)"
    else:
        pace = f"about {max(1, round(left / 60))} min left at this pace" if left is not None else "starting"
        text = f"{done:,} of {total:,} masked copies of the scans through the network; {pace}"
    bar, cancel = st.columns([5, 1], vertical_alignment="center")
    bar.progress(done / total if total else 0.0, text=f"{title}: {text}")
    if cancel.button("Cancel", key="predict.slow_cancel", icon=":material/stop:"):
        job.cancel()
        st.session_state.pop(SLOW_JOB, None)
        st.session_state.pop("predict.slow_confirmed", None)
        st.rerun(scope="app")


def drop_slow_job() -> None:
    """Cancel this session's slow job, if any: its scans, settings or model are no longer the ones shown."""
    entry = st.session_state.pop(SLOW_JOB, None)
    if entry is not None and not entry["job"].done():
        entry["job"].cancel()


slow_result = None
if not (CAM_METHODS[method].slow and scans and classifier is not None):
    drop_slow_job()
else:
    signature = (model_key_of(classifier), method, layer, target, scale, tuple(digest for _, digest, _ in scans))
    title = CAM_METHODS[method].label
    if (st.session_state.get(SLOW_JOB) or {}).get("signature") not in (None, signature):
        drop_slow_job()
    if len(scans) > SLOW_LIMIT:
        st.warning(f"{title} explains at most {SLOW_LIMIT} scans at a time ({CAM_METHODS[method].note}); remove "
                   "some scans. Until then the heatmaps are Grad-CAM.")
    elif st.session_state.get("predict.slow_confirmed") != signature:
        st.warning(f"{title} is slow: {CAM_METHODS[method].note} (each scan is masked by every one of the layer's "
                   "channels and run through the network again). It runs only when you press the button, in the "
                   "background at low priority, with its progress shown and a button to cancel it; nobody else "
                   "waits for it. Until then the heatmaps are Grad-CAM.")
        if st.button(f"Compute {title}", key="predict.run_slow"):
            st.session_state["predict.slow_confirmed"] = signature  # remembered for these files and settings
            st.rerun()
    else:
        with error_boundary(f"The {title} explanation"):
            entry = st.session_state.get(SLOW_JOB)
            if entry is None:
                job = slow_explainer().submit(classifier, classifier.preprocess([image for _, _, image in scans]),
                                              method, layer, None if target == PREDICTED else target, scale)
                entry = st.session_state[SLOW_JOB] = {"signature": signature, "job": job, "result": None}
            if entry["result"] is None and entry["job"].done():
                try:
                    entry["result"] = entry["job"].result()
                except Exception:
                    # Failed, cancelled or timed out: forget it, so that the button offers it again.
                    st.session_state.pop(SLOW_JOB, None)
                    st.session_state.pop("predict.slow_confirmed", None)
                    raise
            if entry["result"] is None:
                st.info(f"{title} is being computed; the heatmaps below are Grad-CAM until it is done.")
                slow_progress(title)
            slow_result = entry["result"]
    if slow_result is None:
        method = DEFAULT_METHOD


def scan_verdict(model, row, familiarity: float | None) -> Verdict:
    """What ``model`` (a classifier) answers for a scan, given its probabilities and familiarity distance."""
    familiar = model.familiarity
    calibration = model.metadata.get("calibration") or {}
    return verdict(CLASS_LABELS[model.classes[int(row.argmax())]], float(row.max()), model.refer_below,
                   model.calibrated, familiarity, familiar.threshold if familiar is not None else None,
                   (calibration.get("referral") or {}).get("below"),
                   (model.metadata.get("familiarity") or {}).get("flag_share", 0.01),
                   familiar.floor if familiar is not None else None,
                   familiar.distance_threshold if familiar is not None else None)


def heatmap_description(method: str, layer: str, class_label: str) -> str:
    return f"{CAM_METHODS[method].label} ({layer}) " + (f"for {class_label}" if CAM_METHODS[method].class_specific
                                                        else "- the same map for every class")


def show_scan(position: int, name: str, digest: str, image, row, explained_class: int, heatmap,
              familiarity: float | None, compared: dict) -> None:
    best = int(row.argmax())
    judged = scan_verdict(classifier, row, familiarity)
    with st.container(border=True):
        if judged.kind == "unfamiliar":
            st.warning(judged.sentence, icon=":material/help:")
        heading, badge = st.columns([5, 1.4], vertical_alignment="center")
        heading.subheader(judged.heading)
        if judged.badge:
            badge.badge(judged.badge, icon=":material/warning:" if judged.kind == "uncertain" else
                        ":material/help:", color="orange" if judged.kind == "uncertain" else "gray")
        if judged.kind == "uncertain":
            st.caption(judged.sentence)
        original, heat, chart = st.columns([1, 1, 1.3])
        shown = image.copy()
        shown.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
        width, height = image.info.get("source_size", image.size)
        blended, displayed = overlay(shown, heatmap, opacity), shown
        spacing = pixel_spacing(image)
        if spacing:  # a DICOM or NIfTI slice: in true proportion, with the heatmap's scale in millimetres
            (displayed, blended), mm_per_pixel = in_proportion([shown.convert("RGB"), blended], spacing, image.size)
            blended = with_scale_bar(blended, mm_per_pixel)
        original.image(png_bytes(displayed), caption=f"{md(name)} ({width} x {height})", width="stretch",
                       output_format="PNG")
        blended = with_colour_bar(blended, scale)
        why = CLASS_LABELS[classifier.classes[int(explained_class)]]
        class_specific = CAM_METHODS[method].class_specific
        described = heatmap_description(method, layer, why)
        heat.image(png_bytes(blended), caption=described, width="stretch", output_format="PNG")
        header = [f"{printable(name)} ({width} x {height})",
                  f"Model: {CLASS_LABELS[classifier.classes[best]]} {row[best]:.1%}"
                  + {"answer": "", "uncertain": " (uncertain: refer)",
                     "unfamiliar": " (not answered: unlike the training scans)"}[judged.kind],
                  f"Heatmap: {described}; colours {SCALES[scale]}"]
        heat.download_button("Download heatmap (PNG)", png_bytes(with_header(blended, header)),
                             file_name=(f"{name.rsplit('.', 1)[0]}_{method}_"
                                        f"{classifier.classes[int(explained_class)]}.png"),
                             mime="image/png", key=f"predict.download.{position}.{digest[:10]}")
        chart.plotly_chart(probability_bars(classifier.classes, row, best, muted=judged.kind == "unfamiliar"),
                           width="stretch", config={"displayModeBar": False},
                           key=f"predict.bar.{position}.{digest[:10]}")
        runner_up = int(row.argsort()[-2])
        meaning = (f"red marks the regions that raised the score of {why}" if class_specific else
                   "red marks the strongest pattern in the layer's activations, whatever the class")
        measured = localisation_sentence(runs_of_model(Path(classifier.path)),
                                         classifier.classes[int(explained_class)], method, layer)
        chart.caption(f"Next most likely: {CLASS_LABELS[classifier.classes[runner_up]]} "
                      f"({row[runner_up]:.1%}). Heatmap: {meaning}; it shows where the network looked, "
                      "not the tumour's outline." + (f" {measured}" if measured else ""))
        if chart.button("Remove this scan", key=f"predict.remove.{position}.{digest[:10]}", icon=":material/close:"):
            del kept_scans()[position]
            st.rerun()
        if st.toggle("Every heatmap method side by side", key=f"predict.grid.{position}.{digest[:10]}",
                     help="The fast methods on one colour scale (relative to the predicted class's evidence), for "
                          "teaching how much the picture depends on the method."):
            method_grid(digest, image, shown, layer, None if target == PREDICTED else target)
        if compared:
            models_side_by_side(position, digest, shown, layer, compared)


def models_side_by_side(position: int, digest: str, shown, layer: str, compared: dict) -> None:
    """The scan through every bundled model: each one's answer, heatmap (same method, layer and colour scale) and
    probabilities, its Testing accuracy and how often its heatmaps lay on the tumour in its own bundled runs.
    ``compared``: bundled model folder -> (classifier, explanation of every kept scan), for the models that load."""
    fast = method if not CAM_METHODS[method].slow else DEFAULT_METHOD
    st.markdown("**The bundled models side by side**")
    for column, (folder, (model, result)) in zip(st.columns(len(compared)), compared.items()):
        with column, error_boundary(f"The {md(model_label(folder).lower())}"):
            row, explained_class = result.probabilities[position], int(result.targets[position])
            score = None if result.familiarity is None else float(result.familiarity[position])
            judged = scan_verdict(model, row, score)
            label = md(model_label(folder))
            st.markdown(f"{label}: {judged.heading}")
            name = model.classes[explained_class]
            st.image(png_bytes(with_colour_bar(overlay(shown, result.heatmaps[position], opacity), scale)),
                     caption=f"{label}: {heatmap_description(fast, layer, CLASS_LABELS[name])}",
                     width="stretch", output_format="PNG")
            st.plotly_chart(probability_bars(model.classes, row, int(row.argmax()),
                                             muted=judged.kind == "unfamiliar"),
                            width="stretch", config={"displayModeBar": False},
                            key=f"predict.models.{position}.{Path(folder).name}.{digest[:10]}")
            st.caption(" ".join(model_notes(model, name, fast, layer)))


def model_notes(model, class_name: str, method_name: str, layer: str) -> list[str]:
    """What a reader of one column of the side-by-side view should know about its model, in sentences."""
    runs = runs_of_model(Path(model.path))
    tested = [run for run in runs if run.info["dataset"].get("evaluated") == "Testing"
              and run.metrics.get("accuracy") is not None]
    notes = [f"Right on {tested[0].metrics['accuracy']:.2%} of {md(tested[0].info['dataset']['name'])}/Testing."
             if tested else "No bundled test run for this model."]
    if model.metadata.get("data", {}).get("guidance"):
        notes.append("Trained with tumour outlines: its Grad-CAM at layer4 was pushed inside them, so that map is "
                     "partly good by construction; other methods and layers (Explanation settings) show whether "
                     "more than that map changed.")
    measured = localisation_sentence(runs, class_name, method_name, layer)
    if measured:
        notes.append(measured)
    if not model.calibrated:
        notes.append("Its percentages are not calibrated.")
    if model.familiarity is None:
        notes.append("It has no check for scans unlike its training scans: it answers any image.")
    return notes


def compared_models(scans: list, target: str | None) -> dict:
    """Every bundled model that loads, with its explanation of the kept scans (one cached call per model, the
    main card's own when it is the sidebar's model); a model that does not load is reported once, here."""
    fast = method if not CAM_METHODS[method].slow else DEFAULT_METHOD
    compared = {}
    for folder in bundled_models:
        try:
            model = classifier_at(folder)
        except CheckpointError as error:
            st.warning(f"The bundled {md(model_label(folder).lower())} cannot be shown beside the others: {md(error)}")
            continue
        compared[folder] = (model, explained(model_key_of(model), tuple(digest for _, digest, _ in scans), fast, layer,
                                             target, scale, _images=tuple(image for _, _, image in scans),
                                             _classifier=model))
    return compared if len(compared) > 1 else {}


def method_grid(digest: str, image, shown, layer: str, target: str | None) -> None:
    fast = fast_methods()
    model_key = model_key_of(classifier)
    columns = st.columns(len(fast))
    for column, name in zip(columns, fast):
        result = explained(model_key, (digest,), name, layer, target, "prediction", _images=(image,),
                           _classifier=classifier)
        column.image(png_bytes(overlay(shown, result.heatmaps[0], opacity)), caption=CAM_METHODS[name].label,
                     width="stretch", output_format="PNG")
    st.caption("One colour scale for all: dark blue is no evidence, red as much as the predicted class's peak for "
               "that method.")


if classifier is not None and scans:
    with error_boundary("The explanation"):
        model_key = model_key_of(classifier)
        with st.spinner(f"Explaining {len(scans)} scan{'s' if len(scans) > 1 else ''}…"):
            result = slow_result or explained(model_key, tuple(digest for _, digest, _ in scans), method, layer,
                                              None if target == PREDICTED else target, scale,
                                              _images=tuple(image for _, _, image in scans), _classifier=classifier)
            compared = {}
            if compare_models:
                with error_boundary("The bundled models side by side"):
                    compared = compared_models(scans, None if target == PREDICTED else target)
        scores = result.familiarity if result.familiarity is not None else [None] * len(scans)
        for position, ((name, digest, image), row, explained_class, heatmap, score) in enumerate(
                zip(scans, result.probabilities, result.targets, result.heatmaps, scores)):
            with error_boundary(f"The result for {md(name)}"):
                show_scan(position, name, digest, image, row, explained_class, heatmap,
                          None if score is None else float(score), compared)
