"""Tumour masks: finding them, reading them, scoring heatmaps against them, the localisation split, and evaluation
runs that report it all."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import write_class_tree
from core.audit import fingerprint_file
from core.data import CLASSES, Sample
from core.localisation_split import copies_of, slice_groups, split_slices
from core.masks import (
    MaskError,
    centre_blob,
    find_mask_root,
    grouped_bootstrap,
    image_region,
    mask_path,
    mask_scores,
    mask_summary,
    patient_of,
    peak_points,
    read_mask,
    score_against_mask,
)

SIZE = 64


def square(top: int, left: int, side: int, size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_a_heatmap_equal_to_the_mask_scores_fully_and_a_disjoint_one_scores_nothing():
    region = np.ones((SIZE, SIZE), dtype=bool)
    mask = square(20, 20, 16)
    equal = mask_scores(mask.astype(float), mask, region, dilation_px=0)
    assert equal["peak_in_mask"] and equal["peak_in_dilated"]
    assert equal["energy_in_dilated"] == 1.0 and equal["iou"] == 1.0 and equal["dice"] == 1.0
    disjoint = mask_scores(square(0, 44, 16).astype(float), mask, region, dilation_px=0)
    assert not disjoint["peak_in_mask"] and not disjoint["peak_in_dilated"]
    assert disjoint["energy_in_dilated"] == 0.0 and disjoint["iou"] == 0.0 and disjoint["dice"] == 0.0
    assert equal["dilated_share"] == pytest.approx(256 / 4096)


def test_a_heatmap_half_over_the_mask_scores_a_half_and_a_third():
    region = np.ones((SIZE, SIZE), dtype=bool)
    mask = square(20, 20, 16)                      # columns 20-35
    half = np.zeros((SIZE, SIZE))
    half[20:36, 28:44] = 1.0                        # columns 28-43: 8 of its 16 columns over the mask
    scores = mask_scores(half, mask, region, dilation_px=0)
    assert scores["energy_in_dilated"] == pytest.approx(0.5)
    assert scores["iou"] == pytest.approx(128 / (256 + 256 - 128))   # a third
    assert scores["dice"] == pytest.approx(0.5)
    # Grown by 8 pixels of this 64 px grid (28 at 224, the scale the margin is given in), it takes in all of it.
    assert mask_scores(half, mask, region, dilation_px=28)["energy_in_dilated"] == pytest.approx(1.0)


def test_the_peak_just_outside_counts_only_once_the_mask_is_grown():
    region = np.ones((SIZE, SIZE), dtype=bool)
    mask = square(20, 20, 16)
    heatmap = np.zeros((SIZE, SIZE))
    heatmap[27, 37] = 1.0                           # one pixel right of the mask's edge (column 35)
    assert not mask_scores(heatmap, mask, region, dilation_px=0)["peak_in_dilated"]
    grown = mask_scores(heatmap, mask, region, dilation_px=5 * 224 / SIZE)  # 5 px on this grid
    assert grown["peak_in_dilated"] and not grown["peak_in_mask"]


def test_a_layer4_heatmap_peaks_only_near_cell_centres_so_a_tumour_between_them_is_out_of_reach():
    import cv2

    points = set(peak_points(7, 224).tolist())
    assert points == {0} | {32 * k + 15 for k in range(7)} | {32 * k + 16 for k in range(7)}
    rng = np.random.default_rng(0)
    for _ in range(200):  # where pytorch-grad-cam's resize of a 7 x 7 map really peaks
        peak = np.unravel_index(cv2.resize(rng.normal(size=(7, 7)).astype(np.float32), (224, 224)).argmax(), (224, 224))
        assert {int(peak[0]), int(peak[1])} <= points
    scan = np.zeros((224, 224), dtype=bool)
    scan[100:104, 100:104] = True                   # 4 px, 12 px from the centre at 112: out of reach at 5 px
    assert not score_against_mask(np.ones((224, 224)), scan, grid=7)["peak_reachable"]
    assert score_against_mask(np.ones((224, 224)), scan, grid=14)["peak_reachable"]   # layer3's centres: 104
    assert "peak_reachable" not in score_against_mask(np.ones((224, 224)), scan)


def test_no_layer4_heatmap_puts_more_heat_in_a_tumour_than_its_best_cell():
    import cv2

    scan = np.zeros((224, 224), dtype=bool)
    scan[96:128, 96:128] = True                     # the centre cell exactly
    best = score_against_mask(np.ones((224, 224)), scan, dilation_px=0, grid=7)["energy_reachable"]
    cell = np.zeros((7, 7), np.float32)
    cell[3, 3] = 1.0
    alone = cv2.resize(cell, (224, 224))
    assert best == pytest.approx(alone[96:128, 96:128].sum() / alone.sum(), rel=1e-5) and 0.2 < best < 0.6
    rng = np.random.default_rng(1)                  # any map of that grid, resized as Grad-CAM resizes it, puts less
    for _ in range(50):
        heatmap = cv2.resize(rng.uniform(size=(7, 7)).astype(np.float32) ** 4, (224, 224))
        assert score_against_mask(heatmap, scan, dilation_px=0)["energy_in_dilated"] <= best + 1e-6


def test_an_empty_heatmap_fails_and_padding_is_left_out():
    region = image_region(64, 32, SIZE)             # a wide image: rows 16-47 of the grid
    assert region[16:48].all() and not region[:15].any() and not region[49:].any()
    mask = square(20, 20, 8)
    empty = mask_scores(np.zeros((SIZE, SIZE)), mask, region)
    assert not empty["peak_in_dilated"] and empty["energy_in_dilated"] == 0.0
    padded = np.zeros((SIZE, SIZE))
    padded[0:8, :] = 5.0                             # all of it on the padding
    padded[22, 22] = 1.0
    assert mask_scores(padded, mask, region)["energy_in_dilated"] == 1.0


def test_the_centre_blob_is_scored_beside_the_heatmap():
    mask = np.zeros((100, 100), dtype=bool)
    mask[40:60, 40:60] = True                       # at the centre: the blob's peak is in it
    scores = score_against_mask(np.zeros((SIZE, SIZE)), mask)
    assert scores["blob_peak_in_mask"] and not scores["peak_in_mask"]
    assert 0 < scores["blob_energy_in_dilated"] < 1
    blob = centre_blob(SIZE)                          # on an even grid the centre falls between four pixels
    assert np.unravel_index(blob.argmax(), blob.shape) in {(31, 31), (31, 32), (32, 31), (32, 32)}
    assert blob[31, 31] == blob[32, 32] == blob[31, 32] and blob[20, 20] < blob[25, 25] < blob[31, 31]
    with pytest.raises(MaskError, match="empty"):
        score_against_mask(np.ones((SIZE, SIZE)), np.zeros((100, 100), dtype=bool))


def test_masks_are_found_beside_the_dataset_or_where_given(tmp_path):
    data = tmp_path / "figshare-cheng-br35h"
    (data / "glioma").mkdir(parents=True)
    assert find_mask_root(data) is None
    (tmp_path / "figshare-cheng-masks" / "glioma").mkdir(parents=True)
    (tmp_path / "figshare-masks").mkdir()              # also fits, but the longer name is the closer one
    (tmp_path / "figsharexyz-masks").mkdir()           # a name that is not a leading part of the dataset's
    assert find_mask_root(data) == tmp_path / "figshare-cheng-masks"
    Image.new("1", (8, 8)).save(tmp_path / "figshare-cheng-masks" / "glioma" / "1841.png")
    Image.new("1", (8, 8)).save(tmp_path / "figshare-cheng-masks" / "77.png")  # at the top level
    root = find_mask_root(data)
    assert mask_path(root, "glioma/1841.jpg") == root / "glioma" / "1841.png"
    assert mask_path(root, "meningioma/77.jpg") == root / "77.png"
    assert mask_path(root, "glioma/9.jpg") is None
    assert find_mask_root(data, tmp_path / "figshare-masks") == tmp_path / "figshare-masks"
    with pytest.raises(MaskError, match="does not exist"):
        find_mask_root(data, tmp_path / "nowhere")


def test_a_mask_of_another_size_is_resized_and_one_of_other_proportions_refused(tmp_path):
    small = np.zeros((256, 256), dtype=np.uint8)
    small[64:128, 64:128] = 255
    Image.fromarray(small).save(tmp_path / "small.png")
    mask = read_mask(tmp_path / "small.png", 512, 512)   # drawn on a 256 px original of a 512 px scan
    assert mask.shape == (512, 512) and mask[128:256, 128:256].all() and mask.sum() == 128 * 128
    with pytest.raises(MaskError, match="not the same proportions"):
        read_mask(tmp_path / "small.png", 512, 300)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(MaskError, match="not a readable mask"):
        read_mask(tmp_path / "bad.png", 512, 512)


def test_patients_come_from_file_names_and_intervals_resample_them():
    assert patient_of("glioma/TCGA_DU_6404_19850629_38.png") == "TCGA_DU_6404"
    assert patient_of("glioma/1841.jpg") is None
    values = np.array([1.0] * 10 + [0.0] * 10)
    one_each = grouped_bootstrap(values, [f"p{i}" for i in range(20)], 2000, 0.95, 0)
    two_patients = grouped_bootstrap(values, ["a"] * 10 + ["b"] * 10, 2000, 0.95, 0)
    # Two patients, one all right and one all wrong: resampling patients knows the mean could be 0 or 1.
    assert two_patients == (0.0, 1.0) and 0.2 < one_each[0] < one_each[1] < 0.8
    table = pd.DataFrame({"path": [f"glioma/TCGA_CS_{i:04d}_1_{j}.png" for i in range(3) for j in range(2)],
                          "label": "glioma", **{key: 1.0 for key in (
                              "peak_in_mask", "peak_in_dilated", "energy_in_dilated", "iou", "dice", "dilated_share",
                              "blob_peak_in_mask", "blob_peak_in_dilated", "blob_energy_in_dilated", "blob_iou",
                              "blob_dice")}})
    summary = mask_summary(table, resamples=50)
    assert summary["resampled"] == "patients" and summary["per_class"]["glioma"]["patients"] == 3
    assert summary["per_class"]["glioma"]["peak_in_dilated"] == {"mean": 1.0, "interval": [1.0, 1.0]}


def picture(seed: int, wobble: int | None = None) -> np.ndarray:
    """A smooth random picture; ``wobble`` adds a little noise of its own (a neighbouring slice of it)."""
    coarse = np.random.default_rng(seed).uniform(0, 255, size=(8, 8)).astype(np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((96, 96), Image.Resampling.BICUBIC), dtype=np.float64)
    if wobble is not None:
        image += np.random.default_rng(1000 + wobble).normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def slices(tmp_path, plan):
    """Slice files (number, class, picture) -> samples and fingerprints."""
    samples, fingerprints = [], []
    for stem, label, pixels in plan:
        name = CLASSES[label]
        path = tmp_path / name / f"{stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        samples.append(Sample(path, label, f"{name}/{stem}.png"))
        fingerprints.append(fingerprint_file(path))
    return samples, fingerprints


def test_copies_and_neighbouring_slices_share_a_group(tmp_path):
    from core.audit import hamming_matrix, phash_array

    # 1-3: one patient's neighbouring slices; 10 and 11 two other pictures; 20 a copy of 1; 4 (another class) and
    # 12 (not next to 3 in name order) look like 3.
    plan = [(1, 0, picture(5, 1)), (2, 0, picture(5, 2)), (3, 0, picture(5, 3)), (10, 0, picture(7)),
            (11, 0, picture(8)), (20, 0, picture(5, 1)), (4, 1, picture(5, 4)), (12, 0, picture(5, 5))]
    samples, fingerprints = slices(tmp_path, plan)
    hashes = phash_array(fingerprints)
    close = int(max(hamming_matrix(hashes[0:1], hashes[1:2])[0, 0], hamming_matrix(hashes[1:2], hashes[2:3])[0, 0]))
    assert close < int(hamming_matrix(hashes[2:3], hashes[3:4])[0, 0])  # the pictures are what the test says
    groups = slice_groups(samples, fingerprints, near_duplicate_bits=0, neighbour_bits=close)
    assert groups[0] == groups[1] == groups[2] == groups[5]           # neighbours, and an exact copy
    assert len({groups[0], groups[3], groups[4], groups[6]}) == 4      # other pictures; another class
    assert groups[7] != groups[0]                                      # alike, but not a neighbour in name order
    # Patients named in the file names share a group whatever their pictures.
    named, prints = slices(tmp_path / "lgg", [("TCGA_CS_4941_1_1", 0, picture(1)), ("TCGA_CS_4941_1_9", 0, picture(2)),
                                              ("TCGA_DU_6404_1_1", 0, picture(3))])
    assert len(set(slice_groups(named, prints, near_duplicate_bits=0, neighbour_bits=0))) == 2


def test_the_split_keeps_every_group_on_one_side_and_finds_copies_elsewhere(tmp_path):
    plan = [(n, label, picture(100 * label + n // 3)) for label in (0, 1, 3) for n in range(30)]  # runs of 3 copies
    samples, fingerprints = slices(tmp_path / "data", plan)
    split = split_slices(samples, fingerprints, seed=0, test_fraction=0.3, validation_fraction=0.2)
    groups = slice_groups(samples, fingerprints)
    side_of = {path: side for side, paths in split.sides.items() for path in paths}
    assert sorted(side_of) == sorted(s.relpath for s in samples)
    for g in np.unique(groups):
        assert len({side_of[samples[i].relpath] for i in np.flatnonzero(groups == g)}) == 1
    assert all(split.record["counts"][side]["glioma"] > 0 for side in ("train", "validation", "test"))
    # Copies of held-out slices among other images (a release that re-published them) are found.
    held = [fingerprints[i] for i, s in enumerate(samples) if side_of[s.relpath] == "test"]
    others = [fingerprints[i] for i, s in enumerate(samples) if side_of[s.relpath] == "train"]
    copies = copies_of(held, held[:3] + others)
    assert copies[:3].all() and not copies[3:].any()


def scans_with_masks(root):
    """Scans with a centred square outline beside them, drawn at twice their size (resized when read)."""
    data = write_class_tree(root / "scans", per_class=3, size=64)
    masks = root / "scans-masks"
    for image in sorted(data.rglob("*.*")):
        if image.parent.name != "notumor":
            (masks / image.parent.name).mkdir(parents=True, exist_ok=True)
            mask = np.zeros((128, 128), dtype=np.uint8)
            mask[40:88, 40:88] = 255
            Image.fromarray(mask).save(masks / image.parent.name / f"{image.stem}.png")
    return data


def test_an_evaluation_run_scores_heatmaps_against_masks_and_reads_a_list_of_files(tmp_path):
    from conftest import random_classifier
    from core.evaluation import EvaluationSettings, evaluate
    from core.runs import read_run

    data = scans_with_masks(tmp_path)
    listing = tmp_path / "some.txt"
    chosen = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.*"))[::2]
    listing.write_text("# a held-out split\n" + "\n".join(chosen) + "\n")
    model = random_classifier(tmp_path / "model", seed=1).path
    run = read_run(evaluate(EvaluationSettings(checkpoint=str(model), data=str(data), out=str(tmp_path / "run"),
                                               precision="fp32", progress=False, bootstrap_resamples=50,
                                               num_workers=0, files=str(listing), mask_dilation_px=10)))
    assert sorted(run.predictions["path"]) == chosen
    table = run.masks
    tumours = [p for p in chosen if not p.startswith("notumor")]
    assert sorted(table["path"]) == tumours
    summary = run.metrics["masks"]
    assert summary["overall"]["images"] == len(tumours) and summary["folder"] == "scans-masks"
    assert summary["dilation_px"] == 10  # the margin the scores used
    # The centre blob's peak lies in a centred square mask on every image.
    assert summary["overall"]["blob_peak_in_mask"]["mean"] == 1.0
    # Whether a layer4 heatmap can peak on the tumour at all is scored beside it: at 64 px, layer4 is 2 x 2 and its
    # resized map peaks only near pixels 0, 16 and 48, none of them in the centred outline (pixels 18-45 grown).
    assert not table["peak_reachable"].any() and summary["overall"]["peak_reachable"]["mean"] == 0.0
    # The most heat one cell's footprint can put inside bounds the heatmap's (here a single cell's footprint itself:
    # equal up to rounding).
    assert summary["overall"]["energy_reachable"]["mean"] >= summary["overall"]["energy_in_dilated"]["mean"] - 1e-9
    assert run.info["dataset"]["masks"] == "scans-masks"
    listing.write_text("glioma/nothing-here.png\n")
    from core.data import DatasetError
    with pytest.raises(DatasetError, match="not in"):
        evaluate(EvaluationSettings(checkpoint=str(model), data=str(data), out=str(tmp_path / "run2"),
                                    progress=False, files=str(listing)))


def test_the_explanations_command_measures_every_method_and_refuses_a_run_without_masks(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import ROOT, random_classifier
    from core.evaluation import EvaluationSettings, evaluate

    data = scans_with_masks(tmp_path)
    model = random_classifier(tmp_path / "model", seed=2).path

    def run_of(out, **extra):
        return evaluate(EvaluationSettings(checkpoint=str(model), data=str(data), out=str(out), precision="fp32",
                                           progress=False, bootstrap_resamples=20, num_workers=0, **extra))

    def command(run):
        return subprocess.run([sys.executable, "-m", "training.explanations", "--run", str(run), "--methods",
                               "gradcam", "eigencam", "--layers", "layer4", "--faithfulness-per-class", "1",
                               "--sanity-per-class", "2", "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                              timeout=600)

    measured = command(run_of(tmp_path / "run"))
    assert measured.returncode == 0, measured.stderr
    found = json.loads((tmp_path / "run" / "explanations.json").read_text())
    assert [(r["method"], r["layer"]) for r in found["by_method_and_layer"]] == [("gradcam", "layer4"),
                                                                                ("eigencam", "layer4")]
    assert found["by_method_and_layer"][0]["per_class"]["glioma"]["images"] == 3
    assert {r["method"] for r in found["faithfulness"]["scores"]} == {"gradcam", "eigencam", "random", "centre blob"}
    assert {r["method"] for r in found["sanity"]["rows"]} == {"gradcam", "eigencam"}
    assert "eigencam layer4" in found["best"]["excluded"]  # the same map for every class: never the default
    from core.runs import RunError
    with pytest.raises(RunError, match="--masks is only read for localisation"):
        run_of(tmp_path / "neither", localisation="off", masks=str(tmp_path / "scans-masks"))
    refused = command(run_of(tmp_path / "plain", localisation="off"))
    assert refused.returncode == 2 and "no scores against tumour masks" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_roads_percentiles_remove_different_pixels_from_a_map_that_is_mostly_zero():
    from core.explanation_audit import untied

    cam = np.zeros((1, 32, 32), np.float32)
    cam[0, 10:20, 10:20] = np.linspace(0.1, 1.0, 100).reshape(10, 10)  # 90% of the map is exactly zero
    kept = [(untied(cam)[0] >= np.percentile(untied(cam)[0], p)).mean() for p in (20, 40, 60, 80)]
    assert kept == pytest.approx([0.8, 0.6, 0.4, 0.2], abs=0.01)  # as the percentiles say, not all or nothing
    assert np.argsort(untied(cam)[0, 10:20, 10:20].ravel()).tolist() == list(range(100))  # the order is the map's


def test_per_patient_answers_are_the_class_most_of_their_slices_get():
    from core.metrics import patient_figures

    paths = [f"glioma/TCGA_CS_{p}_19960909_{s}.png" for p in ("0001", "0002", "0003") for s in range(3)]
    predicted_classes = [0, 0, 2,   1, 1, 0,   2, 0, 3]  # patient 1 right (2 of 3), 2 wrong, 3 a three-way tie
    probs = np.eye(4)[predicted_classes] * 0.9 + 0.025
    probs[7] = [0.4, 0.2, 0.2, 0.2]  # patient 3's glioma slice is the least sure: the tie goes to another class
    figures = patient_figures(paths, np.zeros(9, int), probs, 0.95)
    assert figures["patients"] == 3 and figures["per_class"]["glioma"]["right"] == 1
    probs[7] = [0.97, 0.01, 0.01, 0.01]  # now the surest: glioma wins the tie
    assert patient_figures(paths, np.zeros(9, int), probs, 0.95)["per_class"]["glioma"]["right"] == 2
    assert figures["per_class"]["glioma"]["interval"][0] < 1 / 3 < figures["per_class"]["glioma"]["interval"][1]
    assert patient_figures(["glioma/1841.jpg"], np.zeros(1, int), np.eye(4)[:1], 0.95) is None


def test_a_margin_in_millimetres_follows_the_pixel_spacing_of_each_axis():
    from core.masks import grown_outline, margin_text

    # Millimetres are measured on the scan: on 1.0 mm rows and 0.5 mm columns, 4 mm is 4 pixels down and 8 across.
    point = np.zeros((64, 64), dtype=bool)
    point[32, 32] = True
    grown, margin = grown_outline(point, 64, dilation_mm=4, spacing_mm=(1.0, 0.5))
    rows, columns = np.nonzero(grown)
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (28, 36, 24, 40) and margin == 4
    # A margin under one pixel is what it says: pixels whose centre lies within it (here, none but the tumour's).
    assert grown_outline(point, 64, dilation_mm=0.4, spacing_mm=(0.5, 0.5))[0].sum() == 1
    # A 448-pixel scan of 0.5 mm pixels on a 224 grid: 4 mm is 8 scan pixels, 4 grid pixels.
    big = np.zeros((448, 448), dtype=bool)
    big[200:248, 200:248] = True
    grown, _ = grown_outline(big, 224, dilation_mm=4, spacing_mm=(0.5, 0.5))
    assert np.nonzero(grown.any(axis=1))[0][[0, -1]].tolist() == [96, 127]  # rows 100-123 grown by 4 each way
    # In pixels at 224, the margin in mm is what those whole pixels come to on this scan, where its spacing is known.
    assert grown_outline(big, 224, dilation_px=5, spacing_mm=(0.5, 0.5))[1] == 5.0
    assert grown_outline(big, 224, dilation_px=5.9, spacing_mm=(0.5, 0.5))[1] == 5.0  # a disc of 5 whole pixels
    assert grown_outline(big, 224, dilation_px=5)[1] is None
    with pytest.raises(MaskError, match="states no pixel spacing"):
        grown_outline(big, 224, dilation_mm=3, spacing_mm=None)
    mask = square(30, 30, 4)
    scan_ones = np.zeros((SIZE, SIZE))

    def peak_at(row: int, column: int, **margin) -> bool:
        heatmap = scan_ones.copy()
        heatmap[row, column] = 1.0
        return score_against_mask(heatmap, mask, **margin)["peak_in_dilated"]

    # The outline covers rows and columns 30-33. Three mm to its right is 6 columns; three mm below is 3 rows.
    spaced = {"dilation_mm": 4, "spacing_mm": (1.0, 0.5)}
    assert peak_at(31, 33 + 6, **spaced) and peak_at(33 + 3, 31, **spaced)
    assert not peak_at(31, 33 + 10, **spaced) and not peak_at(33 + 6, 31, **spaced)  # 5 mm and 6 mm away
    assert score_against_mask(np.eye(SIZE), mask, **spaced)["margin_mm"] == 4
    assert np.isnan(score_against_mask(np.eye(SIZE), mask)["margin_mm"])  # no spacing, no margin in mm
    assert margin_text({"dilation_px": 5, "dilation_mm": 3}) == "3 mm"
    assert margin_text({"dilation_px": 5, "margin_mm": None}) == "5 px at 224"
    assert margin_text({"dilation_px": 5, "margin_mm": {"images": 2, "of": 3, "median": 2.25, "min": 2.0,
                                                         "max": 2.5}}) == \
        "5 px at 224 (about 2.2 mm, 2.0-2.5 mm across the scans on the 2 of 3 with a spacing)"


def test_a_tolerance_in_millimetres_needs_a_spacing_and_takes_one_stated_for_the_dataset(tmp_path):
    from conftest import random_classifier
    from core.evaluation import EvaluationSettings, evaluate
    from core.runs import read_run

    data = scans_with_masks(tmp_path)
    model = random_classifier(tmp_path / "model", seed=1).path

    def run_with(out, **extra):
        return read_run(evaluate(EvaluationSettings(
            checkpoint=str(model), data=str(data), out=str(tmp_path / out), precision="fp32", progress=False,
            bootstrap_resamples=20, num_workers=0, **extra)))

    unknown = run_with("unknown", mask_dilation_mm=3)  # PNG files state no spacing: no score, and the reason
    assert unknown.masks.empty and len(unknown.metrics["masks"]["errors"]) == 9
    assert all("states no pixel spacing" in e["reason"] for e in unknown.metrics["masks"]["errors"])
    stated = run_with("stated", mask_dilation_mm=3, pixel_spacing_mm=0.5)
    assert len(stated.masks) == 9 and (stated.masks["margin_mm"] == 3).all()
    assert stated.metrics["masks"]["dilation_mm"] == 3
    # 5 px at 224 is 1.4 px on this model's 64-pixel grid: a disc of one whole pixel, 0.5 mm on these scans.
    in_pixels = run_with("pixels", pixel_spacing_mm=0.5)
    assert in_pixels.masks["margin_mm"].to_numpy() == pytest.approx(np.full(9, 0.5))
    assert in_pixels.metrics["masks"]["margin_mm"]["images"] == 9


def test_a_stated_spacing_follows_an_image_shrunk_on_reading():
    """A spacing stated for a dataset is per pixel of the file as stored: a large JPEG decoded at a smaller scale (and
    a PNG shrunk after decoding) get it scaled by how much they were shrunk."""
    import io

    from core.sources import read_image
    from core.sources.images import pixel_spacing

    for kind in ("JPEG", "PNG"):
        stored = io.BytesIO()
        Image.new("L", (4400, 4000), 90).save(stored, kind)
        image = read_image(stored.getvalue())
        assert image.info["source_size"] == (4400, 4000) and max(image.size) <= 2048
        rows, columns = pixel_spacing(image, 0.5)
        assert columns == pytest.approx(0.5 * 4400 / image.width) and rows == pytest.approx(0.5 * 4000 / image.height)
    assert pixel_spacing(image) is None  # a picture states no spacing of its own


def test_the_millimetre_margin_computed_near_the_tumour_equals_the_transform_of_the_whole_scan():
    from scipy.ndimage import distance_transform_edt

    from core.masks import grown_outline, on_grid

    rng = np.random.default_rng(0)
    for _ in range(20):  # tumours anywhere, edges included; pixels of any shape; margins of 0-15 mm
        height, width = (int(v) for v in rng.integers(64, 300, 2))
        mask = np.zeros((height, width), dtype=bool)
        top, left = int(rng.integers(0, height)), int(rng.integers(0, width))
        mask[top:top + int(rng.integers(1, 30)), left:left + int(rng.integers(1, 30))] = True
        spacing, margin = tuple(rng.uniform(0.3, 2.0, 2)), float(rng.uniform(0, 15))
        whole = distance_transform_edt(~mask, sampling=spacing) <= margin
        assert np.array_equal(grown_outline(mask, 128, dilation_mm=margin, spacing_mm=spacing)[0], on_grid(whole, 128))
