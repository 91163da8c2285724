"""Downloading the public datasets (core.download, python -m training.download), against a figshare-like server on
127.0.0.1 that serves a small release the test builds: checksums, resuming, unpacking safely, and one clear line when
the network is unreachable. kagglehub itself is replaced by a stand-in: its protocol is kagglehub's to test."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile

import numpy as np
import pytest

from core import download
from core.download import DownloadError
from figshare_files import cvind_bytes, mat_bytes
from training.download import main


def release_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for number in range(1, 4):
            image = np.full((64, 64), 100 * number, dtype=np.int16)
            archive.writestr(f"brainTumorDataPublic_1-3/{number}.mat", mat_bytes(image, "glioma", f"P{number}"))
    return buffer.getvalue()


class Server:
    """A loopback HTTP server with figshare's article listing and the files it names. ``cut_first`` sends only part
    of the first response for a file (a dropped connection); ``ranges`` honours Range requests."""

    def __init__(self, files: dict[str, bytes], md5s: dict[str, str] | None = None, cut_first: str | None = None):
        self.files, self.requests, self.cut = files, [], cut_first
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server calls
                outer.requests.append((self.path, self.headers.get("Range")))
                if self.path == f"/v2/articles/{download.FIGSHARE_ARTICLE}":
                    listing = {"files": [{"name": name, "size": len(blob), "computed_md5": (md5s or {}).get(
                        name, hashlib.md5(blob).hexdigest()), "download_url": f"{outer.url}/files/{name}"}
                        for name, blob in outer.files.items()]}
                    return self.answer(200, json.dumps(listing).encode())
                name = self.path.rsplit("/", 1)[-1]
                if name not in outer.files:
                    return self.answer(404, b"no such file")
                blob, start = outer.files[name], 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                if outer.cut == name:
                    outer.cut = None
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(blob)))
                    self.end_headers()
                    self.wfile.write(blob[: len(blob) // 2])  # then the connection drops
                    return
                if start >= len(blob):
                    return self.answer(416, b"")
                if start:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
                    self.send_header("Content-Length", str(len(blob) - start))
                    self.end_headers()
                    self.wfile.write(blob[start:])
                    return
                self.answer(200, blob)

            def answer(self, code: int, body: bytes):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def release_files():
    return {"brainTumorDataPublic_1-3.zip": release_zip(), "cvind.mat": cvind_bytes([1, 2, 3]),
            "README.txt": b"Cheng et al. brain tumor dataset\n"}


def test_the_figshare_release_downloads_checks_unpacks_and_reads_as_a_dataset(tmp_path, release_files, monkeypatch,
                                                                              capsys):
    from core.data import scan_class_folders

    server = Server(release_files)
    try:
        monkeypatch.setenv(download.FIGSHARE_API_ENV, f"{server.url}/v2")
        assert main(["figshare", "--to", str(tmp_path / "figshare")]) == 0
    finally:
        server.close()
    out = capsys.readouterr().out
    assert f"the figshare release is in {tmp_path / 'figshare'}" in out and "next: python -m training." in out
    tree = scan_class_folders(tmp_path / "figshare")
    assert [s.relpath for s in tree.samples] == [f"brainTumorDataPublic_1-3/{n}.mat" for n in (1, 2, 3)]
    assert (tmp_path / "figshare" / "cvind.mat").is_file() and (tmp_path / "figshare" / "README.txt").is_file()


def test_a_dropped_download_resumes_where_it_stopped(tmp_path, release_files):
    server = Server(release_files, cut_first="brainTumorDataPublic_1-3.zip")
    try:
        with pytest.raises(DownloadError, match="run the command again to resume"):
            download.figshare(tmp_path, api=f"{server.url}/v2")
        part = tmp_path / "downloads" / "brainTumorDataPublic_1-3.zip.part"
        assert 0 < part.stat().st_size < len(release_files["brainTumorDataPublic_1-3.zip"])
        download.figshare(tmp_path, api=f"{server.url}/v2")
    finally:
        server.close()
    zip_requests = [r for p, r in server.requests if p.endswith(".zip")]
    assert zip_requests[0] is None and zip_requests[1] == f"bytes={part_size(release_files)}-"  # resumed, not restarted
    assert (tmp_path / "brainTumorDataPublic_1-3" / "2.mat").is_file()


def part_size(files) -> int:
    return len(files["brainTumorDataPublic_1-3.zip"]) // 2


def test_a_file_that_does_not_match_its_published_md5_is_deleted_and_said(tmp_path, release_files):
    server = Server(release_files, md5s={"cvind.mat": "0" * 32})
    try:
        with pytest.raises(DownloadError, match="does not match the MD5"):
            download.figshare(tmp_path, api=f"{server.url}/v2")
    finally:
        server.close()
    assert not (tmp_path / "downloads" / "cvind.mat").exists()
    assert not (tmp_path / "downloads" / "cvind.mat.part").exists()


def test_a_zip_that_would_write_outside_its_folder_is_refused(tmp_path):
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../escaped.txt", b"x")
    (tmp_path / "evil.zip").write_bytes(evil.getvalue())
    with pytest.raises(DownloadError, match="outside"):
        download.unpack(tmp_path / "evil.zip", tmp_path / "into")
    assert not (tmp_path / "escaped.txt").exists()


def test_an_unreachable_network_is_one_clear_line(tmp_path, monkeypatch, capsys):
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(download.FIGSHARE_API_ENV, f"http://127.0.0.1:{port}/v2")
    assert main(["figshare", "--to", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the network is unreachable from here")


def test_kaggle_goes_through_kagglehub_and_finds_the_release_folder(tmp_path, monkeypatch, capsys):
    import kagglehub

    asked = {}

    def fake_download(handle, path=None, *, force_download=False, output_dir=None):
        asked.update(handle=handle, output_dir=output_dir)
        for split in ("Training", "Testing"):
            (tmp_path / "kaggle" / split / "glioma").mkdir(parents=True)
        return str(tmp_path / "kaggle")

    monkeypatch.setattr(kagglehub, "dataset_download", fake_download)
    assert main(["kaggle", "--to", str(tmp_path / "kaggle")]) == 0
    assert asked == {"handle": download.KAGGLE_HANDLE, "output_dir": str(tmp_path / "kaggle")}
    assert "next: python -m training.train --data" in capsys.readouterr().out

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    assert main(["kaggle", "--to", str(tmp_path / "k2")]) == 2
    assert "the network is unreachable from here" in capsys.readouterr().err


def test_a_whole_part_left_by_an_interrupted_run_is_kept_not_fetched_again(tmp_path, release_files):
    server = Server(release_files)
    try:
        name = "cvind.mat"
        (tmp_path / "downloads").mkdir()
        (tmp_path / "downloads" / f"{name}.part").write_bytes(release_files[name])  # downloaded, never moved
        got = download.fetch(f"{server.url}/files/{name}", tmp_path / "downloads" / name, size=None,
                             md5=hashlib.md5(release_files[name]).hexdigest())
    finally:
        server.close()
    assert got.read_bytes() == release_files[name]
    assert [r for p, r in server.requests if p.endswith(name)] == [f"bytes={len(release_files[name])}-"]  # one 416
