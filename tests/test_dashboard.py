"""The dashboard, driven headless with Streamlit's AppTest."""

import io

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import ROOT, synthetic_slice

APP = str(ROOT / "dashboard" / "app.py")


def png_bytes(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def test_app_starts_on_the_default_model():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Brain-tumour MRI classifier"
    assert any("Classes: Glioma, Meningioma, No tumour, Pituitary tumour" in c.value for c in at.sidebar.caption)


def test_upload_gives_a_prediction_and_a_bad_file_gets_a_message():
    at = AppTest.from_file(APP, default_timeout=120).run()
    scan = np.kron(synthetic_slice(1, seed=9, size=112), np.ones((2, 2), np.uint8))
    at.file_uploader(key="predict.uploads").set_value([
        ("scan.png", png_bytes(scan), "image/png"),
        ("broken.jpg", b"\xff\xd8\xff not really", "image/jpeg"),
    ]).run()
    assert not at.exception
    headings = [h.value for h in at.main.subheader]
    assert len(headings) == 1 and "%" in headings[0]
    assert any(h.startswith(label) for h in headings for label in ("Glioma", "Meningioma", "No tumour", "Pituitary"))
    assert len(at.warning) == 1 and "broken.jpg" in at.warning[0].value and "not a readable image" in at.warning[0].value
