import io

import numpy as np
import pytest
from PIL import Image

from core.data import (
    CLASSES,
    DatasetError,
    canonical_class,
    find_split_dirs,
    pad_to_square,
    preprocess_uint8,
    scan_class_folders,
)
from core.sources import read_image


@pytest.mark.parametrize("name, expected", [
    ("glioma", "glioma"), ("glioma_tumor", "glioma"), ("Glioma-Tumour", "glioma"),
    ("meningioma_tumor", "meningioma"), ("notumor", "notumor"), ("no_tumor", "notumor"),
    ("no-tumor", "notumor"), ("No Tumour", "notumor"), ("pituitary_tumor", "pituitary"),
    ("yes", None), ("tumor", None), ("cat", None),
])
def test_release_folder_names_map_to_canonical_classes(name, expected):
    assert canonical_class(name) == expected


def test_scan_maps_aliases_and_reports_unknown_folders(kaggle_layout):
    train, test = find_split_dirs(kaggle_layout)
    assert (train.name, test.name) == ("Training", "Testing")
    tree = scan_class_folders(train)
    assert tree.counts() == dict.fromkeys(CLASSES, 14)
    assert tree.folders["no_tumor"] == "notumor"
    assert tree.unknown_folders == []
    assert all(s.relpath.startswith(s.path.parent.name + "/") for s in tree.samples)


def test_unknown_folder_and_non_image_files_are_listed(class_tree):
    (class_tree / "yes").mkdir()
    (class_tree / "glioma" / "notes.txt").write_text("box")
    tree = scan_class_folders(class_tree)
    assert tree.unknown_folders == ["yes"]
    assert tree.other_files == ["glioma/notes.txt"]


def test_missing_path_is_explained(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan_class_folders(tmp_path / "nowhere")


def test_empty_class_folder_is_explained(class_tree):
    (class_tree / "meningioma_tumor").mkdir()
    for image in (class_tree / "meningioma").iterdir():
        image.unlink()
    (class_tree / "meningioma").rmdir()
    with pytest.raises(DatasetError, match="holds no images"):
        scan_class_folders(class_tree)


def test_two_folders_for_one_class_are_refused(class_tree):
    (class_tree / "glioma_tumor").mkdir()
    with pytest.raises(DatasetError, match="both mean class 'glioma'"):
        scan_class_folders(class_tree)


def test_release_root_instead_of_class_tree_gets_a_hint(kaggle_layout):
    with pytest.raises(DatasetError, match="use .*Training"):
        scan_class_folders(kaggle_layout)


def _encode(image, fmt="PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_grayscale_becomes_three_equal_channels():
    gray = Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64), "L")
    rgb = np.asarray(read_image(_encode(gray)))
    assert rgb.shape == (64, 64, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_transparency_is_composited_onto_black():
    rgba = Image.new("RGBA", (64, 64), (200, 100, 50, 0))
    rgba.putpixel((0, 0), (200, 100, 50, 255))
    out = np.asarray(read_image(_encode(rgba)))
    assert tuple(out[0, 0]) == (200, 100, 50)
    assert tuple(out[1, 1]) == (0, 0, 0)


def test_sixteen_bit_images_are_windowed_to_eight_bits():
    array = np.linspace(1000, 4000, 64 * 64, dtype=np.uint16).reshape(64, 64)
    out = np.asarray(read_image(_encode(Image.fromarray(array))))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_exif_orientation_is_honoured():
    wide = Image.new("RGB", (128, 64), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    loaded = read_image(_encode(wide, "JPEG", exif=exif.tobytes()))
    assert loaded.size == (64, 128)


def test_corrupt_file_gives_the_reason(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(ValueError, match="not a readable image"):
        read_image(broken)


def test_truncated_file_gives_the_reason(tmp_path):
    good = _encode(Image.fromarray(np.full((64, 64), 128, np.uint8)), "JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not a readable image"):
        read_image(truncated)


def test_non_square_images_are_padded_not_cropped():
    tall = Image.new("RGB", (64, 128), (255, 255, 255))
    square = pad_to_square(tall)
    assert square.size == (128, 128)
    pixels = np.asarray(square)
    assert pixels[:, :32].max() == 0 and pixels[:, 32:96].min() == 255 and pixels[:, 96:].max() == 0
    tensor = preprocess_uint8(tall, 32)
    assert tuple(tensor.shape) == (3, 32, 32) and tensor.dtype.is_floating_point is False
