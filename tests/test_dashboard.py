"""The dashboard, driven headless with Streamlit's AppTest: every page, with the bundled model and runs."""

import html
import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import KAGGLE, ROOT, needs_shared, synthetic_slice
from core.checkpoint import read_metadata

APP = str(ROOT / "dashboard" / "app.py")
KAGGLE_RUN = ROOT / "assets" / "runs" / "brain-tumor-mri-testing"
LABELS = {"glioma": "Glioma", "meningioma": "Meningioma", "notumor": "No tumour", "pituitary": "Pituitary tumour"}


def shipped_metrics() -> dict:
    import json

    return json.loads((KAGGLE_RUN / "metrics.json").read_text())


def busiest_error_cell() -> tuple[str, str, int]:
    """(true class, predicted class, count) of the bundled Kaggle run's largest off-diagonal cell."""
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    matrix = shipped_metrics()["all"]["confusion_matrix"]
    count, i, j = max((matrix[i][j], i, j) for i in range(4) for j in range(4) if i != j)
    return classes[i], classes[j], count


def shipped_accuracy() -> str:
    """The bundled Kaggle run's accuracy as the dashboard prints it."""
    return f"{shipped_metrics()['accuracy']:.2%}"


def plain(markdown: str) -> str:
    """Page text as people read it: file-borne text is put into markdown as character references."""
    return html.unescape(markdown)


def png_bytes(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def scan_png(label=1, seed=9) -> bytes:
    return png_bytes(np.kron(synthetic_slice(label, seed=seed, size=112), np.ones((2, 2), np.uint8)))


@pytest.fixture
def app():
    return AppTest.from_file(APP, default_timeout=180)


def heatmap_captions(at) -> list[str]:
    return [c for image in at.image for c in image.captions if c.split(" (")[0] in
            ("Grad-CAM", "Grad-CAM++", "XGrad-CAM", "LayerCAM", "EigenCAM", "Score-CAM")]


def test_app_starts_on_the_default_model_and_shows_its_test_figures(app):
    at = app.run()
    assert not at.exception
    assert at.title[0].value == "Brain-tumour MRI classifier"
    captions = [plain(c.value) for c in at.sidebar.caption]
    assert any("Classes: Glioma, Meningioma, No tumour, Pituitary tumour" in c for c in captions)
    assert any(c.startswith(f"Tested on brain-tumor-mri/Testing: accuracy {shipped_accuracy()}") for c in captions)
    temperature = read_metadata(ROOT / "assets/models/default")["calibration"]["temperature"]
    assert any(f"calibrated by temperature scaling (T = {temperature:.2f}" in c for c in captions)


def test_upload_gives_a_prediction_a_heatmap_and_a_download_and_a_bad_file_a_message(app):
    at = app.run()
    at.file_uploader(key="predict.uploads").set_value([
        ("scan.png", scan_png(), "image/png"),
        ("broken.jpg", b"\xff\xd8\xff not really", "image/jpeg"),
    ]).run()
    assert not at.exception
    headings = [h.value for h in at.main.subheader]
    assert len(headings) == 1 and "%" in headings[0]
    predicted = headings[0].split(" — ")[0]
    assert predicted in ("Glioma", "Meningioma", "No tumour", "Pituitary tumour")
    assert heatmap_captions(at) == [f"Grad-CAM (layer4) for {predicted}"]
    assert len(at.get("download_button")) == 1
    assert len(at.warning) == 1 and "broken.jpg" in plain(at.warning[0].value)
    assert "not a readable image" in at.warning[0].value


def test_the_same_scan_uploaded_twice_is_shown_twice(app):
    at = app.run()
    at.file_uploader(key="predict.uploads").set_value([("scan.png", scan_png(), "image/png")] * 2).run()
    assert not at.exception
    assert len(at.main.subheader) == 2 and len(heatmap_captions(at)) == 2


def test_explanation_controls_change_the_heatmap_not_the_prediction(app):
    at = app.run()
    at.file_uploader(key="predict.uploads").set_value([("scan.png", scan_png(), "image/png")]).run()
    prediction = at.main.subheader[0].value
    at.selectbox(key="predict.method").set_value("eigencam")
    at.selectbox(key="predict.target").set_value("meningioma")
    at.selectbox(key="predict.layer").set_value("layer3").run()
    assert not at.exception
    assert heatmap_captions(at) == ["EigenCAM (layer3) - the same map for every class"]
    assert at.main.subheader[0].value == prediction
    at.selectbox(key="predict.method").set_value("scorecam").run()
    assert any("Score-CAM is slow" in w.value for w in at.warning)
    assert heatmap_captions(at) == ["Grad-CAM (layer3) for Meningioma"]  # until the button is pressed


def test_the_recipe_caption_says_how_the_model_was_trained():
    from dashboard.captions import recipe_caption

    config = {"epochs": 8, "head_epochs": 1, "batch_size": 32, "label_smoothing": 0.05, "val_fraction": 0.1,
              "seed": 42}
    assert recipe_caption(config, 7) == ("8 epochs (1 head-only), batch 32, label smoothing 0.05, validation share "
                                         "0.1, seed 42; epoch kept: 7.")


def test_runs_page_shows_headline_figures_and_lists_the_cases_of_a_cell(app):
    at = app.run()
    at.switch_page("app_pages/runs.py").run()
    assert not at.exception
    assert at.title[0].value == "Evaluation runs"
    assert at.selectbox(key="runs.choice").value.endswith("brain-tumor-mri-testing")
    assert [m.label for m in at.metric][:3] == ["Accuracy", "Balanced accuracy", "Macro AUC"]
    assert at.metric[0].value == shipped_accuracy()
    assert any(c.value.startswith("95% CI") for c in at.caption)
    import json
    config = json.loads((KAGGLE_RUN / "run.json").read_text())["model"]["training"]["config"]
    recipe = [plain(c.value) for c in at.caption
              if plain(c.value).startswith(f"{config['epochs']} epochs ({config['head_epochs']} ")]
    assert len(recipe) == 1 and f"seed {config['seed']}" in recipe[0]
    true, pred, count = busiest_error_cell()
    at.selectbox(key="runs.cell_true").set_value(true)
    at.selectbox(key="runs.cell_pred").set_value(pred).run()
    assert not at.exception
    heading = f"**{count} case{'s' if count != 1 else ''}**: true {LABELS[true]}, predicted {LABELS[pred]}"
    assert any(m.value.startswith(heading) for m in at.markdown)
    cases = at.dataframe[0].value
    assert len(cases) == count and cases["path"].str.startswith(f"Testing/{true}/").all()
    at.radio(key="runs.subset").set_value("duplicate_free").run()
    assert not at.exception


@needs_shared(KAGGLE)
def test_choosing_a_case_shows_its_image_and_heatmap(app):
    at = app.run()
    at.switch_page("app_pages/runs.py").run()
    true, pred, _ = busiest_error_cell()
    at.selectbox(key="runs.cell_true").set_value(true)
    at.selectbox(key="runs.cell_pred").set_value(pred).run()
    case = at.selectbox(key="runs.case").value
    assert not at.exception
    assert case in [plain(c) for image in at.image for c in image.captions]
    assert any(c.startswith("Grad-CAM (layer4) for") for c in heatmap_captions(at))


@needs_shared(KAGGLE)
def test_a_case_of_a_run_whose_model_is_not_here_is_explained_by_the_sidebars_model(app, tmp_path, monkeypatch):
    import json
    import shutil

    run = tmp_path / "elsewhere-run"
    shutil.copytree(KAGGLE_RUN, run)
    info = json.loads((run / "run.json").read_text())
    info["model"]["path"] = str(tmp_path / "gone" / "model.safetensors")  # made on another machine
    (run / "run.json").write_text(json.dumps(info))
    monkeypatch.setenv("BRAIN_MRI_ALLOWED_ROOTS", str(tmp_path))
    at = app.run()
    at.switch_page("app_pages/runs.py").run()
    at.text_input(key="runs.other").input(str(run)).run()
    true, pred, _ = busiest_error_cell()
    at.selectbox(key="runs.cell_true").set_value(true)
    at.selectbox(key="runs.cell_pred").set_value(pred).run()
    assert not at.exception
    heatmaps = [c for c in heatmap_captions(at) if c.startswith("Grad-CAM (layer4) for")]
    assert heatmaps and all("from the model in the sidebar" in c for c in heatmaps)


def test_without_the_images_the_runs_page_says_where_to_point_and_keeps_the_numbers(app, tmp_path, monkeypatch):
    import json
    import shutil

    run = tmp_path / "moved-run"
    shutil.copytree(KAGGLE_RUN, run)
    info = json.loads((run / "run.json").read_text())
    info["dataset"].update(root=str(tmp_path / "gone"), name="somewhere-else")  # images on another machine
    (run / "run.json").write_text(json.dumps(info))
    monkeypatch.setenv("BRAIN_MRI_ALLOWED_ROOTS", str(tmp_path))
    at = app.run()
    at.switch_page("app_pages/runs.py").run()
    at.text_input(key="runs.other").input(str(run)).run()
    assert not at.exception
    assert any("not on this machine" in i.value for i in at.info)
    assert at.metric[0].value == shipped_accuracy()


def test_operating_point_moves_with_the_threshold(app):
    at = app.run()
    at.switch_page("app_pages/runs.py").run()
    missed = {}
    for threshold in (0.5, 0.999):
        at.slider(key="runs.threshold").set_value(threshold).run()
        values = {m.label: m.value for m in at.metric}
        missed[threshold] = int(values["Tumours missed"])
    assert not at.exception
    assert missed[0.999] > missed[0.5]


def test_a_folder_that_is_not_a_run_gets_a_message(app, tmp_path, monkeypatch):
    monkeypatch.setenv("BRAIN_MRI_ALLOWED_ROOTS", str(tmp_path))
    at = app.run()
    at.switch_page("app_pages/runs.py").run()
    at.text_input(key="runs.other").input(str(tmp_path)).run()
    assert not at.exception
    assert any("not an evaluation run" in e.value for e in at.error)


def test_compare_page_lists_every_headline_figure_and_the_difference(app):
    at = app.run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert {"figure", "A", "B", "B - A"} <= set(table.columns)
    assert {"accuracy", "macro AUC", "Glioma: sensitivity"} <= set(table["figure"])
    accuracy = table.set_index("figure").loc["accuracy"]
    assert accuracy["B - A"] == pytest.approx(accuracy["B"] - accuracy["A"])


def test_the_chosen_run_survives_a_visit_to_another_page(app):
    at = app.run()
    at.switch_page("app_pages/runs.py").run()
    figshare = str(ROOT / "assets/runs/figshare-cheng-br35h")
    at.selectbox(key="runs.choice").set_value(figshare).run()
    at.switch_page("app_pages/predict.py").run()
    at.switch_page("app_pages/runs.py").run()
    assert not at.exception
    assert at.selectbox(key="runs.choice").value == figshare
