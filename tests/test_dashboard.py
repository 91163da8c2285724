"""The dashboard, driven headless with Streamlit's AppTest: every page, with the bundled model and runs."""

import html
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import KAGGLE, ROOT, needs_shared, synthetic_slice
from conftest import upload_scans as upload
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


def predicted_class(heading: str) -> str:
    """The class a result card names, whether it is an answer ("Glioma — 97.1%"), an uncertain one or a greyed
    guess for a scan the model does not recognise (a synthetic slice may well be one)."""
    return next(name for name in LABELS.values() if name in heading)


def heatmap_captions(at) -> list[str]:
    return [c for image in at.image for c in image.captions if c.split(" (")[0] in
            ("Grad-CAM", "Grad-CAM++", "XGrad-CAM", "LayerCAM", "EigenCAM", "Score-CAM")]


def test_app_starts_on_the_default_model_and_shows_its_test_figures(app):
    at = app.run()
    assert not at.exception
    assert at.title[0].value == "Brain-tumour MRI classifier"
    captions = [plain(c.value) for c in at.sidebar.caption]
    details = [plain(c.help or "") for c in at.sidebar.caption]
    assert any("Classes: Glioma, Meningioma, No tumour, Pituitary tumour" in c for c in captions)
    assert any(c.startswith(f"Tested on brain-tumor-mri/Testing: right on {shipped_accuracy()}") for c in captions)
    temperature = read_metadata(ROOT / "assets/models/default")["calibration"]["temperature"]
    # Plain words in the sidebar, the technical terms in the tooltips.
    assert any(c.startswith("Its percentages are calibrated") for c in captions)
    assert any(f"Temperature scaling, T = {temperature:.2f}" in d for d in details)
    assert not any("T = " in c or "keras-npm" in c for c in captions)


def test_upload_gives_a_prediction_a_heatmap_and_a_download_and_a_bad_file_a_message(app):
    at = app.run()
    upload(at, [
        ("scan.png", scan_png(), "image/png"),
        ("broken.jpg", b"\xff\xd8\xff not really", "image/jpeg"),
    ])
    assert not at.exception
    headings = [h.value for h in at.main.subheader]
    assert len(headings) == 1 and "%" in headings[0]
    predicted = predicted_class(headings[0])
    assert predicted in ("Glioma", "Meningioma", "No tumour", "Pituitary tumour")
    assert heatmap_captions(at) == [f"Grad-CAM (layer4) for {predicted}"]
    assert len(at.get("download_button")) == 1
    about_files = [w.value for w in at.warning if "Not a brain MRI slice" not in plain(w.value)]
    assert len(about_files) == 1 and "broken.jpg" in plain(about_files[0])
    assert "not a readable image" in about_files[0]


def test_the_same_scan_uploaded_twice_is_shown_twice(app):
    at = app.run()
    upload(at, [("scan.png", scan_png(), "image/png")] * 2)
    assert not at.exception
    assert len(at.main.subheader) == 2 and len(heatmap_captions(at)) == 2


def test_explanation_controls_change_the_heatmap_not_the_prediction(app):
    at = app.run()
    upload(at, [("scan.png", scan_png(), "image/png")])
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
    assert [m.label for m in at.metric][:3] == ["Accuracy", "Balanced accuracy", "Ranking (AUC)"]
    assert all(m.help for m in at.metric[:5])  # each figure says in words what it measures
    assert at.metric[0].value == shipped_accuracy()
    assert any(c.value.startswith("95% CI") for c in at.caption)
    import json
    config = json.loads((KAGGLE_RUN / "run.json").read_text())["model"]["training"]["config"]
    recipe = [plain(c.value) for c in at.caption
              if plain(c.value).startswith(f"{config['epochs']} epochs ({config['head_epochs']} ")]
    assert len(recipe) == 1 and f"seed {config['seed']}" in recipe[0]
    true, pred, count = busiest_error_cell()
    # The matrix opens on its most frequent mistake.
    assert (at.selectbox(key="runs.cell_true").value, at.selectbox(key="runs.cell_pred").value) == (true, pred)
    heading = f"**{count} case{'s' if count != 1 else ''}**: true {LABELS[true]}, predicted {LABELS[pred]}"
    assert any(m.value.startswith(heading) for m in at.markdown)
    cases = at.dataframe[0].value
    assert len(cases) == count and cases["image"].str.startswith(f"Testing/{true}/").all()
    assert {"image", "true class", "predicted class", "confidence"} <= set(cases.columns)
    assert not any(column.startswith(("prob_", "train_")) for column in cases.columns)  # named for people
    at.radio(key="runs.subset").set_value("duplicate_free").run()
    assert not at.exception


def test_the_review_table_puts_the_most_confident_errors_first():
    from core.runs import read_run
    from dashboard.review import cases

    run = read_run(KAGGLE_RUN)
    errors = cases(run, run.predictions, "errors")
    wrong = run.predictions[run.predictions["label"] != run.predictions["pred"]]
    assert len(errors) == len(wrong) and errors["confidence"].is_monotonic_decreasing
    assert errors["confidence"].iloc[0] == wrong["confidence"].max()
    right = cases(run, run.predictions, "unsure_right", true="glioma")
    assert right["confidence"].is_monotonic_increasing and (right["true class"] == "Glioma").all()


@needs_shared(KAGGLE)
def test_a_clicked_thumbnail_opens_the_case_and_next_goes_through_its_cell(app):
    at = app.run()
    at.switch_page("app_pages/runs.py").run()
    _, _, count = busiest_error_cell()
    listed = at.dataframe[0].value["image"].tolist()
    at.button(key="runs.thumb.0").click().run()
    assert not at.exception
    captions = [plain(c) for image in at.image for c in image.captions]
    assert listed[0] in captions
    assert any(c.startswith("Grad-CAM (layer4) for") for c in heatmap_captions(at))
    assert at.query_params["case"] in (listed[0], [listed[0]])  # the address links to the case
    if count > 1:
        at.button(key="runs.case_next").click().run()
        assert listed[1] in [plain(c) for image in at.image for c in image.captions]
    at.selectbox(key="runs.case_method").set_value("gradcam++").run()
    assert any(c.startswith("Grad-CAM++ (layer4) for") for c in heatmap_captions(at))


@needs_shared(KAGGLE)
def test_a_link_opens_its_run_and_case(app):
    import pandas as pd

    figshare = ROOT / "assets/runs/figshare-cheng-br35h"
    case = pd.read_csv(figshare / "predictions.csv")["path"].iloc[0]
    at = app
    at.query_params["run"] = "figshare-cheng-br35h"
    at.query_params["case"] = case
    at.run()
    at.switch_page("app_pages/runs.py").run()
    assert not at.exception
    assert at.selectbox(key="runs.choice").value == str(figshare)
    assert case in [plain(c) for image in at.image for c in image.captions]


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
    at.button(key="runs.thumb.0").click().run()
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
    figures = table.set_index("figure")
    accuracy = figures.loc["accuracy"]
    a, b = (float(accuracy[k].rstrip("%")) for k in ("A", "B"))
    assert accuracy["B - A"].endswith(" pt") and accuracy["A"].endswith("%")
    assert float(accuracy["B - A"][:-3]) == pytest.approx(b - a, abs=0.011)  # each side rounded to 0.01
    assert figures.loc["images", "A"].replace(",", "").isdigit()  # counts are whole numbers
    assert len(figures.loc["macro AUC", "A"].split(".")[1]) == 5


def test_compared_figures_read_as_people_read_them():
    from dashboard.charts import figure_text

    assert figure_text("images", 1311.0) == "1,311" and figure_text("images", 3253, signed=True) == "+3,253"
    assert figure_text("accuracy", 0.99390) == "99.39%" and figure_text("accuracy", -1e-7, signed=True) == "0.00 pt"
    assert figure_text("macro AUC", 0.999812) == "0.99981" and figure_text("macro AUC", 4e-5, signed=True) == "+0.00004"
    assert figure_text("calibration error (ECE)", None) == "n/a"


def test_the_chosen_run_survives_a_visit_to_another_page(app):
    at = app.run()
    at.switch_page("app_pages/runs.py").run()
    figshare = str(ROOT / "assets/runs/figshare-cheng-br35h")
    at.selectbox(key="runs.choice").set_value(figshare).run()
    at.switch_page("app_pages/predict.py").run()
    at.switch_page("app_pages/runs.py").run()
    assert not at.exception
    assert at.selectbox(key="runs.choice").value == figshare


def test_uploads_and_their_results_survive_a_visit_to_another_page_until_removed(app):
    at = app.run()
    upload(at, [("first.png", scan_png(seed=1), "image/png"), ("second.png", scan_png(seed=2), "image/png")])
    before = [h.value for h in at.main.subheader]
    at.switch_page("app_pages/runs.py").run()
    at.switch_page("app_pages/predict.py").run()
    assert not at.exception
    assert [h.value for h in at.main.subheader] == before and len(before) == 2
    upload(at, [("third.png", scan_png(seed=3), "image/png")])  # added to the kept scans
    assert len(at.main.subheader) == 3
    next(b for b in at.button if b.key.startswith("predict.remove.0.")).click().run()
    assert len(at.main.subheader) == 2
    at.button(key="predict.clear").click().run()
    assert not at.main.subheader and not at.exception


def test_the_cards_say_uncertain_and_not_familiar_in_words_and_never_look_confident():
    from dashboard.captions import verdict

    confident = verdict("Glioma", 0.991, 0.95, True)
    assert confident.kind == "answer" and confident.heading == "Glioma — 99.1%" and confident.badge is None
    unsure = verdict("Glioma", 0.54, 0.95, True, evidence={"images": 31, "correct": 20})
    assert unsure.kind == "uncertain" and unsure.badge == "Uncertain: refer"
    assert unsure.heading.startswith(":orange[Uncertain") and "—" not in unsure.heading
    assert "of the 31 held-out scans it gave under 95%, 20 were right" in unsure.sentence
    assert "not calibrated" in verdict("Glioma", 0.54, 0.95, False).sentence
    stranger = verdict("Meningioma", 0.999, 0.95, True, familiarity=80.0, threshold=30.0)
    assert stranger.kind == "unfamiliar" and stranger.heading.startswith(":gray[Not answered")
    assert "Not a brain MRI slice like those the model was trained on?" in stranger.sentence
    # A familiar scan, or a model without a familiarity threshold, is judged on its probability alone.
    assert verdict("Meningioma", 0.999, 0.95, True, familiarity=10.0, threshold=30.0).kind == "answer"
    assert verdict("Meningioma", 0.999, 0.95, True, familiarity=80.0, threshold=None).kind == "answer"
    # The second form: a score of 1.5 against 1 is a distance of 1.5 x 30 when the answer is above the floor,
    # and the model being at a loss when it is under it.
    far = verdict("Glioma", 0.97, 0.95, True, familiarity=1.5, threshold=1.0, floor=0.6, distance_threshold=30.0)
    assert far.badge == "Not a familiar scan" and "(distance 45.0) than the threshold (30.0)" in far.sentence
    lost = verdict("Glioma", 0.41, 0.95, True, familiarity=1.5, threshold=1.0, floor=0.6, distance_threshold=30.0)
    assert lost.kind == "unfamiliar" and lost.badge == "Model at a loss"
    assert "Its best answer has 41.0%, under the floor of 60.0%" in lost.sentence
    assert verdict("Glioma", 0.61, 0.95, True, familiarity=0.9, threshold=1.0, floor=0.6,
                   distance_threshold=30.0).kind == "uncertain"


def test_a_model_that_does_not_know_gets_the_uncertain_badge_and_a_stranger_the_warning(app, tmp_path,
                                                                                       monkeypatch):
    import torch

    from conftest import random_classifier
    from core import load_classifier
    from core.checkpoint import load_checkpoint, save_checkpoint, update_metadata
    from core.familiarity import fit

    # A head that ignores the scan and answers 50% glioma: every answer is uncertain.
    path = random_classifier(tmp_path, seed=0).path
    stored = load_checkpoint(path)
    stored.state_dict["fc.weight"].zero_()
    stored.state_dict["fc.bias"] = torch.log(torch.tensor([0.5, 0.3, 0.1, 0.1]))
    save_checkpoint(path, stored.state_dict, stored.metadata)
    classifier = load_classifier(path, precision="fp32")
    scans = [Image.open(io.BytesIO(scan_png(label=k % 4, seed=k))) for k in range(24)]
    features, logits = (t.numpy() for t in classifier.features_and_logits(classifier.preprocess(scans)))
    fitted = fit(features[:12], np.arange(12) % 4, 4, (features[12:], logits[12:]), {"split": "training"})
    update_metadata(classifier.path, {"familiarity": fitted.record}, familiarity=fitted.tensors)
    monkeypatch.setenv("BRAIN_MRI_ALLOWED_ROOTS", str(tmp_path))
    at = app.run()
    at.text_input(key="sidebar.checkpoint_path").input(str(classifier.path)).run()
    blank = png_bytes(np.full((224, 224), 255, np.uint8))
    upload(at, [("scan.png", scan_png(seed=5), "image/png"), ("blank.png", blank, "image/png")])
    assert not at.exception
    headings = [h.value for h in at.main.subheader]
    assert headings[0].startswith(":orange[Uncertain") and headings[1].startswith(":gray[Not answered")
    badges = [m.value for m in at.main.markdown if "-badge[" in m.value]
    assert len(badges) == 2 and badges[0].endswith("Uncertain: refer]") and badges[1].endswith("Not a familiar scan]")
    warnings = [plain(w.value) for w in at.warning]
    assert len(warnings) == 1 and "Not a brain MRI slice like those the model was trained on?" in warnings[0]


def test_heatmaps_carry_a_colour_bar_the_download_says_what_it_shows_and_methods_compare_side_by_side(app):
    from dashboard.heatmaps import with_colour_bar, with_header

    at = app.run()
    upload(at, [("scan.png", scan_png(), "image/png")])
    at.radio(key="predict.scale").set_value("prediction").run()
    assert not at.exception
    download = at.get("download_button")[0]
    assert download.proto.label == "Download heatmap (PNG)"
    assert [i for i in at.image if heatmap_captions_of(i)]
    toggle = next(t for t in at.toggle if t.key.startswith("predict.grid."))
    toggle.set_value(True).run()
    assert not at.exception
    assert {"Grad-CAM", "Grad-CAM++", "XGrad-CAM", "LayerCAM", "EigenCAM"} <= {c for i in at.image for c in i.captions}
    # The pieces themselves: a bar to the right of the overlay, a header above it.
    overlay = Image.new("RGB", (224, 224))
    barred = with_colour_bar(overlay, "prediction")
    assert barred.height == 224 and barred.width > 224 + 18
    labelled = with_header(barred, ["scan.png (224 x 224)", "Model: Glioma 97.0%", "Heatmap: Grad-CAM"])
    assert labelled.width == barred.width and labelled.height > barred.height


def heatmap_captions_of(image) -> list[str]:
    return [c for c in image.captions if c.startswith("Grad-CAM")]


def test_compare_pairs_two_runs_of_the_same_data_tests_them_and_overlays_their_curves(app, tmp_path, monkeypatch):
    import shutil

    import pandas as pd

    other = tmp_path / "other-run"
    shutil.copytree(KAGGLE_RUN, other)
    table = pd.read_csv(other / "predictions.csv", keep_default_na=False)
    right = table.index[table["label"] == table["pred"]][:12]  # B gets twelve of A's right answers wrong
    table.loc[right, "pred"] = table.loc[right, "label"].map(
        {"glioma": "meningioma", "meningioma": "glioma", "notumor": "glioma", "pituitary": "glioma"})
    table.to_csv(other / "predictions.csv", index=False)
    monkeypatch.setenv("BRAIN_MRI_ALLOWED_ROOTS", str(tmp_path))
    at = app.run()
    at.switch_page("app_pages/compare.py").run()
    at.text_input(key="compare.other").input(str(other)).run()
    at.selectbox(key="compare.b").set_value(str(other)).run()
    assert not at.exception
    summary = next(plain(m.value) for m in at.markdown if "images in both runs" in plain(m.value))
    assert "A alone right on 12, B alone right on 0" in summary and "McNemar, exact binomial: p = 0.000488" in summary
    disagree = next(d.value for d in at.dataframe if "A says" in d.value.columns)
    assert len(disagree) == 12
    assert len(at.get("plotly_chart")) >= 4  # ROC, precision-recall, reliability and training, overlaid


def test_score_cam_runs_in_the_background_with_its_progress_and_can_be_cancelled(app):
    at = app.run()
    upload(at, [("scan.png", scan_png(), "image/png")])
    at.selectbox(key="predict.method").set_value("scorecam").run()
    at.button(key="predict.run_slow").click().run()
    assert not at.exception
    assert any("is being computed" in i.value for i in at.info)
    assert heatmap_captions(at) == ["Grad-CAM (layer4) for " + predicted_class(at.main.subheader[0].value)]
    assert len(at.get("progress")) == 1 and "Score-CAM" in at.get("progress")[0].proto.text
    at.button(key="predict.slow_cancel").click().run()
    assert not at.exception
    assert not at.get("progress") and any("Score-CAM is slow" in w.value for w in at.warning)


def test_text_from_a_checkpoint_cannot_reach_the_cards_as_markdown():
    from dashboard.captions import verdict

    crafted = {"images": "![x](http://127.0.0.1:9/beacon.png)", "correct": 3}
    card = verdict("Glioma", 0.6, 0.95, True, evidence=crafted)
    assert "beacon" not in card.sentence and "](" not in card.sentence


def test_compare_pairs_the_two_models_on_testing_and_not_runs_of_different_data(app):
    at = app.run()
    at.switch_page("app_pages/compare.py").run()  # first, the two bundled models' Testing runs
    assert not at.exception
    assert [Path(at.selectbox(key=k).value).name for k in ("compare.a", "compare.b")] == [
        "brain-tumor-mri-testing", "brain-tumor-mri-testing-mask-guided"]
    assert not any("different data" in i.value for i in at.info)
    at.selectbox(key="compare.b").set_value(str(ROOT / "assets" / "runs" / "figshare-cheng-br35h")).run()
    assert not at.exception
    assert any("different data" in i.value for i in at.info)


def test_runs_in_the_outputs_folder_are_found_without_typing_their_path(app, tmp_path, monkeypatch):
    import shutil

    import dashboard.common

    shutil.copytree(KAGGLE_RUN, tmp_path / "runs" / "my-new-run")
    monkeypatch.setattr(dashboard.common, "OUTPUTS_DIR", tmp_path)
    at = app.run()
    at.switch_page("app_pages/runs.py").run()
    assert not at.exception
    assert any(option.endswith(" · my-new-run") for option in at.selectbox(key="runs.choice").options)


@needs_shared(KAGGLE)
def test_the_explanations_tab_measures_heatmaps_against_the_outlines_and_a_case_shows_its_own(app):
    import pandas as pd

    held_out = ROOT / "assets/runs/figshare-localisation-validation"
    masks = pd.read_csv(held_out / "masks.csv")
    case = masks.sort_values("energy_in_dilated")["path"].iloc[0]
    at = app
    at.query_params["run"] = "figshare-localisation-validation"
    at.query_params["case"] = case
    at.run()
    at.switch_page("app_pages/runs.py").run()
    assert not at.exception
    texts = [plain(c.value) for c in at.caption]
    # Per class, beside the blob that ignores the scan, in words.
    sentence = next(t for t in texts if t.startswith("Where is the heatmap's hottest point?"))
    assert "a blob at the centre of the image" in sentence and "pituitary tumour: on the tumour for" in sentence
    # Every method and layer, faithfulness and the randomisation test, from the run's explanations.json.
    tables = {tuple(frame.value.columns[:3]): frame.value for frame in at.dataframe}
    methods = tables[("method", "layer", "Glioma: peak on tumour")]
    assert {"Grad-CAM", "EigenCAM"} <= set(methods["method"]) and {"layer3", "layer4"} == set(methods["layer"])
    assert {"random", "centre blob"} <= set(tables[("heatmap", "layer", "ROAD")]["heatmap"])
    assert len(tables[("heatmap", "layer", "after randomising head and layer4")]) == len(methods)
    assert any(t.startswith("Best at locating the tumour among the methods that pass the sanity check") for t in texts)
    # The case opened by the link: its outline over the heatmap and its own figures.
    captions = [plain(c) for image in at.image for c in image.captions]
    assert any("cyan line: the tumour outline" in c for c in captions)
    row = masks[masks["path"] == case].iloc[0]
    assert any(f"{row['energy_in_dilated']:.0%} of the heat lies on it" in t for t in texts)


def test_the_predict_page_says_how_often_the_heatmap_lies_on_the_tumour(app):
    at = app.run()
    upload(at, [("scan.png", scan_png(label=3), "image/png")])
    assert not at.exception
    card = [plain(c.value) for c in at.caption if plain(c.value).startswith("Next most likely")]
    said = [c for c in card if "Against tumour outlines" in c]
    predicted = predicted_class(at.main.subheader[0].value)
    if predicted == "No tumour":  # no outline to measure a no-tumour heatmap against
        assert not said
    else:
        assert (len(said) == 1 and f"{predicted.split()[0].lower()}" in said[0]
                and "a blob at the image centre" in said[0])


def side_by_side(at) -> tuple[list[str], dict[str, str]]:
    """The side-by-side view's heatmap captions, and each model's answer, as people read them."""
    names = ("Default model: ", "Mask-guided model: ")
    captions = [plain(c) for i in at.image for c in i.captions if plain(c).startswith(names)]
    answers = dict(plain(m.value).split(": ", 1) for m in at.main.markdown if plain(m.value).startswith(names))
    return captions, answers


def test_both_bundled_models_load_from_the_sidebar_and_show_one_scan_side_by_side(app):
    from dashboard.common import available_models

    assert {"default", "mask-guided"} <= {path.name for path in available_models()}
    at = app.run()
    upload(at, [("scan.png", scan_png(label=3), "image/png")])
    assert not at.exception
    captions, answers = side_by_side(at)
    assert [c.split(":")[0] for c in captions] == ["Default model", "Mask-guided model"]
    assert all(" (layer4) " in c for c in captions)
    assert answers["Default model"] == plain(at.main.subheader[0].value)  # the card's own model: the same answer
    notes = " ".join(plain(c.value) for c in at.caption)
    assert "Trained with tumour outlines: its Grad-CAM at layer4 was pushed inside them" in notes
    assert notes.count("/Testing.") == 2  # each model's own Testing accuracy
    at.toggle(key="predict.compare_models").set_value(False).run()
    assert side_by_side(at) == ([], {})
    # The mask-guided model from the sidebar: its own description, and the card's answer is its own.
    at.selectbox(key="sidebar.choice").set_value(str(ROOT / "assets" / "models" / "mask-guided")).run()
    assert not at.exception
    sidebar = [plain(c.value) for c in at.sidebar.caption]
    assert any(c.startswith("Also taught where the evidence should lie") for c in sidebar), sidebar
    at.toggle(key="predict.compare_models").set_value(True).run()
    assert side_by_side(at)[1]["Mask-guided model"] == plain(at.main.subheader[0].value)


def test_the_runs_page_says_how_the_warning_fell_on_wrong_and_right_answers():
    from dashboard.captions import familiar_rule, warning_where_wrong

    figures = {"threshold": 1.0, "distance_threshold": 90.54, "probability_floor": 0.487,
               "wrong": {"images": 459, "flagged": 108, "share": 108 / 459},
               "right": {"images": 2352, "flagged": 66, "share": 66 / 2352}}
    assert warning_where_wrong(figures) == ("The warning fell on 108 of its 459 wrong answers (23.5%) and on 66 of "
                                            "its 2,352 right answers (2.8%).")
    assert "above 90.5 or a top probability under 48.7%" in familiar_rule(figures)
    assert familiar_rule({"threshold": 80.7}) == "Warned: a familiarity distance above 80.7 (core.familiarity)."
    # A run made before these figures were counted says nothing of them.
    assert warning_where_wrong({"threshold": 80.7}) is None
    assert "no wrong answers" in warning_where_wrong({**figures, "wrong": {"images": 0, "flagged": 0}})
