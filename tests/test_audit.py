import numpy as np
from PIL import Image

from conftest import FIGSHARE, KAGGLE, needs_shared, synthetic_slice
from core.audit import duplicate_groups, fingerprint_file, fingerprint_files, hamming_matrix, near_pairs


def test_hamming_distance_of_packed_hashes_counts_differing_bits():
    a = np.array([[0b00000000, 0b11111111], [0b10101010, 0b00000001]], dtype=np.uint8)
    b = np.array([[0b00000000, 0b11111110]], dtype=np.uint8)
    assert hamming_matrix(a, b).tolist() == [[1], [4 + 8]]


def test_near_pairs_within_one_set_lists_each_pair_once():
    hashes = np.array([[0], [1], [255], [3]], dtype=np.uint8)
    assert sorted(map(tuple, near_pairs(hashes, threshold=1).tolist())) == [(0, 1), (1, 3)]
    assert near_pairs(hashes, hashes[:1], threshold=0).tolist() == [[0, 0]]


def _save(array, path, fmt=None, size=None):
    image = Image.fromarray(array, "L")
    if size:
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    image.save(path, fmt)
    return path


def test_exact_and_resized_reencoded_copies_join_one_group(tmp_path):
    base = np.kron(synthetic_slice(0, seed=1, size=64), np.ones((2, 2), np.uint8))  # a 128 px "scan"
    other = np.kron(synthetic_slice(3, seed=2, size=64), np.ones((2, 2), np.uint8))
    paths = [
        _save(base, tmp_path / "a.png"),
        _save(base, tmp_path / "a_copy.png"),                 # byte-identical
        _save(base, tmp_path / "a_small.jpg", "JPEG", 72),    # resized and re-encoded
        _save(other, tmp_path / "b.png"),
    ]
    (tmp_path / "a_copy.png").write_bytes((tmp_path / "a.png").read_bytes())
    fingerprints, errors = fingerprint_files(paths)
    assert errors == {}
    assert fingerprints[0].sha256 == fingerprints[1].sha256
    assert fingerprints[0].sha256 != fingerprints[2].sha256
    groups = duplicate_groups(fingerprints)
    assert groups[0] == groups[1] == groups[2] != groups[3]
    exact_only = duplicate_groups(fingerprints, threshold=None)
    assert exact_only[0] == exact_only[1] != exact_only[2]


def test_same_pixels_in_another_container_is_an_exact_duplicate(tmp_path):
    pixels = synthetic_slice(1, seed=3)
    a = fingerprint_file(_save(pixels, tmp_path / "x.png"))
    b = fingerprint_file(_save(pixels, tmp_path / "x.bmp"))
    assert a.sha256 != b.sha256 and a.pixel_sha256 == b.pixel_sha256
    assert duplicate_groups([a, b], threshold=None).tolist() == [0, 0]


def test_unreadable_files_are_reported_not_fingerprinted(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    good = _save(synthetic_slice(2, seed=4), tmp_path / "good.png")
    fingerprints, errors = fingerprint_files([bad, good])
    assert fingerprints[0] is None and fingerprints[1] is not None
    assert "not a readable image" in errors[0]


def test_the_audit_command_finds_copies_across_the_split(kaggle_layout, tmp_path, capsys):
    import shutil

    import pandas as pd

    from training.audit import main

    root = tmp_path / "data"
    shutil.copytree(kaggle_layout, root)
    shutil.copy(root / "Training/no_tumor/no_tumor_001.jpg", root / "Testing/notumor/copy.jpg")
    Image.open(root / "Training/glioma_tumor/glioma_tumor_004.png").resize((96, 96)).save(
        root / "Testing/glioma/big.png")
    assert main(["--data", str(root), "--no-progress", "--csv", str(tmp_path / "audit.csv")]) == 0
    printed = capsys.readouterr().out
    assert "byte-identical copies in the reference: 1 images (1 pairs)" in printed
    table = pd.read_csv(tmp_path / "audit.csv", keep_default_na=False).set_index("path")
    assert table.loc["notumor/copy.jpg", "kind"] == "exact"
    assert table.loc["notumor/copy.jpg", "nearest"] == "no_tumor/no_tumor_001.jpg"
    assert table.loc["glioma/big.png", "kind"] == "near"
    assert table.loc["glioma/big.png", "nearest_label"] == "glioma"
    assert main(["--data", str(root / "Training"), "--no-progress"]) == 2
    assert "--against" in capsys.readouterr().err


@needs_shared(KAGGLE)
def test_every_byte_identical_pair_of_the_kaggle_split_is_found():
    import hashlib

    from core.audit import audit_sets
    from core.data import scan_class_folders

    testing, training = scan_class_folders(KAGGLE / "Testing"), scan_class_folders(KAGGLE / "Training")
    result = audit_sets(testing.samples, training.samples)
    by_hash = {}
    for j, s in enumerate(training.samples):
        by_hash.setdefault(hashlib.sha256(s.path.read_bytes()).digest(), []).append(j)
    expected = {(i, j) for i, s in enumerate(testing.samples)
                for j in by_hash.get(hashlib.sha256(s.path.read_bytes()).digest(), [])}
    assert set(result.pairs) == expected and len(expected) >= 216
    assert int(result.matches.byte_identical.sum()) == len({i for i, _ in expected})
    # Near duplicates come on top of the exact copies (resized or re-encoded slices).
    assert int(result.matches.duplicate.sum()) > int(result.matches.byte_identical.sum()) + 200


@needs_shared(FIGSHARE)
def test_figshare_slices_inside_the_kaggle_training_data_are_found_across_size_and_encoding():
    """The Kaggle release re-used figshare and Br35H images at another size and encoding."""
    from core.audit import audit_sets
    from core.data import scan_class_folders

    figshare, training = scan_class_folders(FIGSHARE), scan_class_folders(KAGGLE / "Training")
    result = audit_sets(figshare.samples, training.samples)
    assert not result.matches.byte_identical.any()  # no file is byte-identical: all were re-encoded
    found = {s.relpath: result.reference[int(j)].relpath
             for s, dup, j in zip(result.images, result.matches.duplicate, result.matches.nearest_index) if dup}
    assert len(found) >= 2900
    assert found["glioma/1851.jpg"] == "glioma/Tr-gl_0052.jpg"
    labels = np.array([s.class_name for s in result.images])
    assert result.matches.duplicate[labels == "notumor"].mean() > 0.95
    assert result.matches.duplicate[labels == "meningioma"].mean() > 0.9
