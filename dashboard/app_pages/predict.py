"""Upload scans and see what the model says about each."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from core.data import CLASS_LABELS, load_image
from dashboard.common import get_classifier

st.title("Brain-tumour MRI classifier")
st.write("Upload one or more 2-D MRI slices (PNG, JPEG, BMP or TIFF). The model sorts each into glioma, "
         "meningioma, pituitary tumour or no tumour. It is a research and teaching tool, not a diagnosis.")

classifier = get_classifier()
uploads = st.file_uploader("MRI slices", type=["png", "jpg", "jpeg", "bmp", "tif", "tiff"],
                           accept_multiple_files=True, key="predict.uploads")
if classifier is not None and uploads:
    readable, problems = [], []
    for upload in uploads:
        try:
            readable.append((upload.name, load_image(upload)))
        except ValueError as error:
            problems.append(f"**{upload.name}**: {error}")
    for problem in problems:
        st.warning(problem + " — skipped; the other files are shown.")
    if readable:
        probs = classifier.predict_proba([image for _, image in readable])
        for (name, image), row in zip(readable, probs):
            best = int(row.argmax())
            with st.container(border=True):
                left, right = st.columns([1, 2])
                left.image(image, caption=name, width="stretch")
                right.subheader(f"{CLASS_LABELS[classifier.classes[best]]} — {row[best]:.1%}")
                frame = pd.DataFrame({"class": [CLASS_LABELS[c] for c in classifier.classes], "probability": row})
                figure = px.bar(frame, x="probability", y="class", orientation="h", range_x=[0, 1],
                                text=frame["probability"].map("{:.1%}".format))
                figure.update_layout(height=220, margin=dict(l=0, r=0, t=10, b=0), yaxis_title=None)
                right.plotly_chart(figure, width="stretch", key=f"predict.bar.{name}")
