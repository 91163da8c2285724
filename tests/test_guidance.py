"""Mask guidance: the loss, the transfer of outlines to copies, what is left out, and a guided training run."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_class_tree
from core.checkpoint import read_metadata
from core.config import ConfigError, TrainConfig
from core.guidance import GUIDE_PREFIX, class_activation_maps, outside_share

SIDE = 128


def test_evidence_outside_the_outline_costs_more_than_evidence_inside_and_having_none_is_no_way_out():
    head = torch.nn.Linear(8, 4)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[2] = 1.0                          # class 2 reads every channel
    outline = torch.zeros(1, 1, 224, 224)
    outline[..., 96:128, 96:128] = 1.0                # the centre cell of the 7 x 7 grid
    inside, outside = torch.zeros(1, 8, 7, 7), torch.zeros(1, 8, 7, 7)
    inside[..., 3, 3] = 4.0                           # 32 once summed over the 8 channels
    outside[..., 0, 6] = 4.0
    label = torch.tensor([2])
    share_in = outside_share(class_activation_maps(inside, head, label), outline, margin_px=0)
    share_out = outside_share(class_activation_maps(outside, head, label), outline, margin_px=0)
    assert share_in.item() == pytest.approx(0.0, abs=1e-5) and share_out.item() == pytest.approx(1.0, abs=1e-5)
    # Half of it in a neighbouring cell: the resized map is level from one cell's centre to the other's, half of
    # that inside the outline; the margin moves the border out pixel by pixel, not a cell at a time.
    half = inside.clone()
    half[..., 3, 4] = 4.0
    shares = [outside_share(class_activation_maps(half, head, label), outline, m).item() for m in (0, 8, 16)]
    assert shares[0] == pytest.approx(0.5, abs=1e-3) and 0.2 < shares[1] < 0.3 and shares[2] < 0.05
    # A small tumour in the corner of the cell that holds the evidence is missed: the map peaks at the cell's centre,
    # 8 px or more from the tumour (what a reader would see), however much of the cell the tumour touches.
    corner = torch.zeros(1, 1, 224, 224)
    corner[..., 96:104, 96:104] = 1.0
    assert outside_share(class_activation_maps(inside, head, label), corner, 0).item() > 0.99
    # A map with no positive evidence anywhere (what a first guided run learned for gliomas) costs as much as a flat
    # one, whose evidence lies where the pixels do: making Grad-CAM blank does not escape the penalty.
    flat = outside_share(class_activation_maps(torch.zeros(1, 8, 7, 7), head, label), outline, 0).item()
    negative = outside_share(class_activation_maps(inside - 10.0, head, label), outline, 0).item()
    assert flat == pytest.approx(1 - 32 * 32 / 224 ** 2, abs=1e-5)
    assert negative == pytest.approx(share_in.item(), abs=1e-5)  # a shift of the whole map changes nothing
    assert outside_share(class_activation_maps(-inside, head, label), outline, 0).item() > flat


def picture(seed: int) -> np.ndarray:
    coarse = np.random.default_rng(seed).uniform(0, 255, size=(8, 8)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((SIDE, SIDE), Image.Resampling.BICUBIC))


def masked_dataset(root, count: int = 6):
    """'figshare': tumour slices with outlines, in glioma and meningioma folders (plus no-tumour images)."""
    for folder, base in (("glioma", 100), ("meningioma", 200), ("notumor", 300)):
        (root / "slices" / folder).mkdir(parents=True)
        (root / "slices-masks" / folder).mkdir(parents=True)
        for n in range(count):
            Image.fromarray(picture(base + n)).save(root / "slices" / folder / f"{base + n}.png")
            outline = np.zeros((SIDE, SIDE), np.uint8)
            outline[40:80, 40:80] = 255
            if folder != "notumor":
                Image.fromarray(outline).save(root / "slices-masks" / folder / f"{base + n}.png")
    return root / "slices"


def test_outlines_reach_aligned_copies_and_held_out_slices_and_their_copies_are_left_out(tmp_path):
    from core.guidance import prepare_guidance
    from core.split import prepare_data

    slices = masked_dataset(tmp_path)
    split = tmp_path / "split"
    split.mkdir()
    (split / "train.txt").write_text("glioma/100.png\nglioma/101.png\nglioma/102.png\nmeningioma/200.png\n"
                                     "meningioma/201.png\nnotumor/300.png\n")
    (split / "validation.txt").write_text("glioma/103.png\nmeningioma/203.png\n")
    (split / "test.txt").write_text("glioma/104.png\nglioma/105.png\nmeningioma/202.png\nmeningioma/204.png\n"
                                    "meningioma/205.png\nnotumor/301.png\n")
    kaggle = write_class_tree(tmp_path / "kaggle" / "Training", per_class=8)
    # Copies at the release's size: 100 and 200 aligned; 101 shifted by 4 px (its outline would be in the wrong
    # place; a perceptual hash calls it a copy only when loosened to 64 bits, as below); 104 a copy of a held-out
    # slice.
    Image.fromarray(picture(100)).resize((64, 64)).save(kaggle / "glioma" / "copy_100.png")
    Image.fromarray(picture(200)).resize((64, 64)).save(kaggle / "meningioma" / "copy_200.png")
    shifted = np.roll(picture(101), 4, axis=1)
    Image.fromarray(shifted).resize((64, 64)).save(kaggle / "glioma" / "copy_101.png")
    Image.fromarray(picture(104)).resize((64, 64)).save(kaggle / "glioma" / "copy_104.png")
    cfg = TrainConfig(data=str(tmp_path / "kaggle"), val_fraction=0.0, progress=False)
    data = prepare_data(cfg, progress=False)
    guidance = prepare_guidance(data, str(slices), None, str(split), bits=64)
    names = {data.samples[i].relpath: i for i in data.train_idx}
    assert "glioma/copy_104.png" not in names                        # a copy of a held-out slice
    assert guidance.record["left_out_copies_of_held_out_slices"] == 1
    assert guidance.masks[names["glioma/copy_100.png"]].name == "100.png"
    assert guidance.masks[names["meningioma/copy_200.png"]].name == "200.png"
    assert names["glioma/copy_101.png"] not in guidance.masks       # matched, but not aligned
    assert guidance.record["transferred"] == {"glioma": 1, "meningioma": 1, "pituitary": 0}
    assert guidance.record["not_aligned"]["glioma"] == 1
    # Slices without a copy join training under their own name; held-out ones never do.
    added = sorted(p for p in names if p.startswith(GUIDE_PREFIX))
    assert added == [GUIDE_PREFIX + p for p in ("glioma/102.png", "meningioma/201.png")]
    assert not any(p.endswith(("103.png", "104.png", "202.png", "203.png")) for p in names)


def test_a_guided_training_run_records_its_guidance_and_the_share_outside(tmp_path):
    from core.trainer import train

    slices = masked_dataset(tmp_path, count=4)
    split = tmp_path / "split"
    split.mkdir()
    everything = sorted(p.relative_to(slices).as_posix() for p in slices.rglob("*.png"))
    (split / "train.txt").write_text("\n".join(p for p in everything if not p.endswith(("3.png",))) + "\n")
    (split / "validation.txt").write_text("")
    (split / "test.txt").write_text("\n".join(p for p in everything if p.endswith("3.png")) + "\n")
    kaggle = write_class_tree(tmp_path / "kaggle" / "Training", per_class=6)
    with pytest.raises(ConfigError, match="needs --mask-split"):
        train(TrainConfig(data=str(tmp_path / "kaggle"), mask_data=str(slices)))
    out = train(TrainConfig(data=str(tmp_path / "kaggle"), out=str(tmp_path / "run"), image_size=48, epochs=2,
                            head_epochs=1, batch_size=6, weights="none", num_workers=0, progress=False,
                            precision="fp32", mask_data=str(slices), mask_split=str(split), mask_weight=1.0))
    meta = read_metadata(out)
    assert meta["data"]["guidance"]["added"] == {"glioma": 3, "meningioma": 3, "pituitary": 0}
    assert all(0 <= h["train_outside_share"] <= 1 and h["train_guided_images"] > 0 for h in meta["history"])
    assert sum(f.startswith(GUIDE_PREFIX) for f in meta["data"]["seen_files"]) >= 1
    assert kaggle.is_dir()
