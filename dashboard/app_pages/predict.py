"""Upload scans: the model's prediction for each, with the heatmap of where it found the evidence."""

from __future__ import annotations

import hashlib
import io
import os
import threading

import streamlit as st

from core.data import CLASS_LABELS, load_image
from core.explain import CAM_METHODS, DEFAULT_LAYER, DEFAULT_METHOD, LAYERS, explain, overlay
from dashboard.charts import probability_bars
from dashboard.common import get_classifier, percent

PREDICTED = "the predicted class"

st.title("Brain-tumour MRI classifier")
st.write("Upload one or more 2-D MRI slices (PNG, JPEG, BMP or TIFF). The model sorts each into glioma, "
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
                          format_func=lambda c: c if c == PREDICTED else f"why {CLASS_LABELS.get(c, c)}?",
                          help="Ask about any class, for instance 'why not meningioma?'")
    layer = c3.selectbox("Layer", list(LAYERS), index=list(LAYERS).index(DEFAULT_LAYER), key="predict.layer", persist_state="session",
                         format_func=lambda name: f"{name}: {LAYERS[name]}")
    opacity = c4.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="predict.opacity", persist_state="session")
uploads = st.file_uploader("MRI slices", type=["png", "jpg", "jpeg", "bmp", "tif", "tiff"],
                           accept_multiple_files=True, key="predict.uploads")

SLOW_LIMIT = 3  # Score-CAM holds about 1.2 GB per image at layer4 and takes tens of seconds each
if CAM_METHODS[method].slow:
    signature = (method, layer, target, tuple(u.file_id for u in uploads or []))
    if len(uploads or []) > SLOW_LIMIT:
        st.warning(f"{CAM_METHODS[method].label} explains at most {SLOW_LIMIT} scans at a time "
                   f"({CAM_METHODS[method].note}); remove some uploads. Until then the heatmaps are Grad-CAM.")
        method = DEFAULT_METHOD
    elif st.session_state.get("predict.slow_confirmed") != signature:
        st.warning(f"{CAM_METHODS[method].label} is slow: {CAM_METHODS[method].note}. It runs only when you press "
                   "the button; until then the heatmaps are Grad-CAM.")
        if st.button(f"Compute {CAM_METHODS[method].label}", key="predict.run_slow"):
            st.session_state["predict.slow_confirmed"] = signature  # remembered for these files and settings
            st.rerun()
        method = DEFAULT_METHOD


@st.cache_resource
def slow_method_lock() -> threading.Lock:
    """One slow explanation at a time in this process, whatever the number of sessions (memory)."""
    return threading.Lock()


@st.cache_data(show_spinner=False, max_entries=64)
def explained(model_key: str, blobs: tuple[bytes, ...], method: str, layer: str, target: str | None,
              _classifier=None):
    """Probabilities and heatmaps for a set of uploads, computed once per model, files and settings
    (moving the opacity slider reuses them)."""
    images = [load_image(io.BytesIO(blob)) for blob in blobs]
    if CAM_METHODS[method].slow:
        with slow_method_lock():
            result = explain(_classifier, images, method=method, layer=layer, targets=target, batch_size=1)
    else:
        result = explain(_classifier, images, method=method, layer=layer, targets=target)
    return result.probabilities, result.targets, result.heatmaps, result.mirrored


if classifier is not None and uploads:
    readable, problems = [], []
    for upload in uploads:
        blob = upload.getvalue()
        try:
            readable.append((upload.name, blob, load_image(io.BytesIO(blob))))
        except ValueError as error:
            problems.append(f"**{upload.name}**: {error}")
    for problem in problems:
        st.warning(problem + " — skipped; the other files are shown.")
    if readable:
        model_key = f"{classifier.path}:{os.path.getmtime(classifier.path)}"
        with st.spinner(f"Explaining {len(readable)} scan{'s' if len(readable) > 1 else ''}…"):
            try:
                probs, targets, heatmaps, mirrored = explained(
                    model_key, tuple(blob for _, blob, _ in readable), method, layer,
                    None if target == PREDICTED else target, _classifier=classifier)
            except (ValueError, RuntimeError) as error:  # a model/settings mismatch; say it, keep the page
                st.error(f"The explanation failed: {error}")
                st.stop()
        for position, ((name, blob, image), row, explained_class, heatmap, looked_twice) in enumerate(
                zip(readable, probs, targets, heatmaps, mirrored)):
            best = int(row.argmax())
            with st.container(border=True):
                st.subheader(f"{CLASS_LABELS[classifier.classes[best]]} — {row[best]:.1%}")
                original, heat, chart = st.columns([1, 1, 1.3])
                original.image(image, caption=f"{name} ({image.width} x {image.height})", width="stretch")
                blended = overlay(image, heatmap, opacity)
                why = CLASS_LABELS[classifier.classes[int(explained_class)]]
                class_specific = method != "eigencam"
                heat.image(blended, caption=f"{CAM_METHODS[method].label} ({layer}) "
                           + (f"for {why}" if class_specific else "- the same map for every class"), width="stretch")
                png = io.BytesIO()
                blended.save(png, "PNG")
                digest = hashlib.sha1(blob).hexdigest()[:10]
                heat.download_button("Download overlay (PNG)", png.getvalue(),
                                     file_name=f"{name.rsplit('.', 1)[0]}_{method}_{classifier.classes[int(explained_class)]}.png",
                                     mime="image/png", key=f"predict.download.{position}.{digest}")
                chart.plotly_chart(probability_bars(classifier.classes, row, best), width="stretch",
                                   config={"displayModeBar": False},
                                   key=f"predict.bar.{position}.{digest}")
                runner_up = int(row.argsort()[-2])
                meaning = (f"red marks the regions that raised the score of {why}" if class_specific else
                           "red marks the strongest pattern in the layer's activations, whatever the class")
                second_look = (f" The model's first reading of this scan was unsure (top probability under "
                               f"{percent(classifier.mirror_below)}), so it also looked at its mirror image; the "
                               "probabilities are of both views, the heatmap of the scan as uploaded."
                               if looked_twice else "")
                chart.caption(f"Next most likely: {CLASS_LABELS[classifier.classes[runner_up]]} "
                              f"({row[runner_up]:.1%}). Heatmap: {meaning}; it shows where the network looked, "
                              f"not the tumour's outline.{second_look}")
