"""Downloading the public datasets (core.download, python -m training.download), against a figshare-like server on
127.0.0.1 that serves a small release the test builds: checksums, resuming, unpacking safely, and one clear line when
the network is unreachable. kagglehub itself is replaced by a stand-in: its protocol is kagglehub's to test."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import re
import threading
import zipfile

import numpy as np
import pytest

from core import download
from core.download import DownloadError
from figshare_files import cvind_bytes, mat_bytes
from hostile import tried
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
    of the first response for a file (a dropped connection); Range requests are honoured with a 206, unless ``lie``
    says how to answer them wrongly: "whole" sends the file from byte 0 under a 206 claiming the asked start,
    "shifted" does the same with the claimed range's length (consistent headers, wrong bytes), "always" answers
    every request, Range or not, with a 206 from the wrong place. ``listing`` replaces the article listing (bytes);
    ``redirects`` answers a path with a 302 to an address (both may be set after the server started); ``raw`` answers
    a path's first request with these bytes as they are (not HTTP, or a body cut short), then closes the connection."""

    def __init__(self, files: dict[str, bytes], md5s: dict[str, str] | None = None, cut_first: str | None = None,
                 lie: str | None = None, listing: bytes | None = None, redirects: dict[str, str] | None = None,
                 raw: dict[str, bytes] | None = None):
        self.files, self.requests, self.cut, self.lie, self.fixed_listing = files, [], cut_first, lie, listing
        self.raw = dict(raw or {})
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # the name http.server calls
                outer.requests.append((self.path, self.headers.get("Range")))
                if self.path in outer.raw:
                    self.wfile.write(outer.raw.pop(self.path))
                    self.close_connection = True
                    return
                if self.path == f"/v2/articles/{download.FIGSHARE_ARTICLE}":
                    fixed = outer.fixed_listing
                    return self.answer(200, fixed if fixed is not None else outer.listing(md5s))
                if self.path in (redirects or {}):
                    self.send_response(302)
                    self.send_header("Location", redirects[self.path])
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                name = self.path.rsplit("/", 1)[-1]
                if name not in outer.files:
                    return self.answer(404, b"no such file")
                blob, start = outer.files[name], None
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                if outer.cut == name:
                    outer.cut = None
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(blob)))
                    self.end_headers()
                    self.wfile.write(blob[: len(blob) // 2])  # then the connection drops
                    return
                if start is not None and start >= len(blob):
                    return self.answer(416, b"")
                if start is not None or outer.lie == "always":
                    return self.part(blob, start or 0)
                self.answer(200, blob)

            def part(self, blob: bytes, start: int):
                body = {"whole": blob, "shifted": blob[: len(blob) - start],
                        "always": blob[10:]}.get(outer.lie, blob[start:])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def answer(self, code: int, body: bytes):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()  # quick to close

    def listing(self, md5s: dict[str, str] | None = None) -> bytes:
        return json.dumps({"files": [{"name": name, "size": len(blob), "computed_md5": (md5s or {}).get(
            name, hashlib.md5(blob).hexdigest()), "download_url": f"{self.url}/files/{name}"}
            for name, blob in self.files.items()]}).encode()

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


def test_a_dropped_download_resumes_where_it_stopped(tmp_path, release_files, monkeypatch):
    monkeypatch.setattr(download, "RESUME_OVERLAP", 100)  # the test's zip is smaller than the usual 64 KiB
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
    assert zip_requests[0] is None and zip_requests[1] == f"bytes={part_size(release_files) - 100}-"  # resumed
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


def test_a_whole_part_left_by_an_interrupted_run_is_kept_not_fetched_again(tmp_path, release_files, monkeypatch):
    monkeypatch.setattr(download, "RESUME_OVERLAP", 100)
    server = Server(release_files)
    try:
        name = "cvind.mat"
        (tmp_path / "downloads").mkdir()
        (tmp_path / "downloads" / f"{name}.part").write_bytes(release_files[name])  # downloaded, never moved
        got = download.fetch(f"{server.url}/files/{name}", tmp_path / "downloads" / name, size=None,
                             md5=hashlib.md5(release_files[name]).hexdigest(), api=f"{server.url}/v2")
    finally:
        server.close()
    assert got.read_bytes() == release_files[name]
    # only the overlap is asked for again, and it matches: nothing more is fetched
    assert [r for p, r in server.requests if p.endswith(name)] == [f"bytes={len(release_files[name]) - 100}-"]


# --------------------------------------------------------------------------------------------------
# A hostile server or listing (issue 25)


def outside_folder(folder) -> list[str]:
    """What a refused download left in ``folder`` besides partial downloads (downloads/*.part)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and not (p.parent.name == "downloads" and p.name.endswith(".part")))


def listing_of(url: str, name: str = "cvind.mat", size: int = 4) -> bytes:
    return json.dumps({"files": [{"name": name, "size": size, "computed_md5": "", "download_url": url}]}).encode()


ADDRESSES = [  # (what, the download_url given to cvind.mat, with {server}, {other} and {secret} filled in)
    ("a file: address to a file on the host", "file://{secret}"),
    ("an ftp: address", "ftp://127.0.0.1:{other_port}/cvind.mat"),
    ("a data: address", "data:application/octet-stream;base64,AAAA"),
    ("a user name and password in the address", "http://user:secret@{server_host}/files/cvind.mat"),
    ("an empty user name in the address", "http://@{server_host}/files/cvind.mat"),
    ("another loopback port than the API's", "http://127.0.0.1:{other_port}/files/cvind.mat"),
    ("plain http to another machine", "http://192.0.2.1/files/cvind.mat"),
    ("https to a host that is not figshare's", "https://figshare.com.example.org/files/cvind.mat"),
    ("a backslash to confuse URL parsers", "https://evil.example\\\\.figshare.com/files/1"),
    ("figshare's host on another port", "https://ndownloader.figshare.com:8443/files/1"),
    ("an address without a scheme", "//127.0.0.1:{other_port}/files/cvind.mat"),
    ("a newline inside the address", "http://{server_host}/files/cvind.mat\\nHost: x"),
    ("a port that is not a number", "http://127.0.0.1:99999999/files/cvind.mat"),
]


@pytest.mark.parametrize("what,url", ADDRESSES, ids=[a[0] for a in ADDRESSES])
def test_a_listing_address_off_figshare_and_the_api_is_refused_before_anything_is_written(tmp_path, what, url):
    secret = tmp_path / "host" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("host-only\n")
    other = Server({"cvind.mat": b"evil"})
    server = Server({})
    address = url.format(secret=secret, other_port=other.url.rsplit(":", 1)[1],
                         server_host=server.url.removeprefix("http://"))
    server.fixed_listing = listing_of(json.loads(f'"{address}"'))  # json: the backslash and newline escapes
    tried("core.download.figshare (listing's download_url)", what)
    try:
        with pytest.raises(DownloadError, match="only https addresses on figshare's hosts") as refused:
            download.figshare(tmp_path / "data", api=f"{server.url}/v2")
    finally:
        server.close()
        other.close()
    assert str(secret) not in str(refused.value) and "secret" not in str(refused.value)
    assert not (tmp_path / "data").exists() and other.requests == []


def test_a_file_address_in_the_listing_is_one_error_line_from_the_command(tmp_path, monkeypatch, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("host-only\n")
    server = Server({}, listing=listing_of(f"file://{secret}"))
    monkeypatch.setenv(download.FIGSHARE_API_ENV, f"{server.url}/v2")
    tried("python -m training.download figshare", "a file: address in the listing, through the command")
    try:
        assert main(["figshare", "--to", str(tmp_path / "data")]) == 2
    finally:
        server.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the address of cvind.mat in figshare's listing of the article is a file: address, not "
                   "https; only https addresses on figshare's hosts or the configured API's are followed"]


@pytest.mark.parametrize("api,expect", [
    ("file:///etc", "is a file: address"),
    ("ftp://127.0.0.1/v2", "is a ftp: address"),
    ("http://192.0.2.1/v2", "is plain http to another machine"),
    ("https://user:pw@api.figshare.com/v2", "carries a user name or password"),
])
def test_an_api_address_that_is_not_https_or_loopback_http_is_refused(tmp_path, api, expect):
    tried("core.download.figshare (API address)", f"the API at {api}")
    with pytest.raises(DownloadError, match=re.escape(f"of the figshare API ({download.FIGSHARE_API_ENV}) {expect}")):
        download.figshare(tmp_path / "data", api=api)
    assert not (tmp_path / "data").exists()


def test_figshares_own_hosts_and_its_file_store_pass_the_address_rule():
    api = download.FIGSHARE_API
    for url in ("https://ndownloader.figshare.com/files/3594804", "https://api.figshare.com/v2/file/download/1",
                "https://figshare.com/ndownloader/files/1",
                "https://s3-eu-west-1.amazonaws.com/pfigshare-u-files/3594804/brainTumorDataPublic_1766.zip?X=1"):
        assert download.address_problem(url, api) is None, url
    for url in ("https://s3-eu-west-1.amazonaws.com/another-bucket/x", "http://ndownloader.figshare.com/files/1",
                "https://s3-eu-west-1.amazonaws.com/pfigshare-u-files/../another-bucket/x"):
        assert download.address_problem(url, api) is not None, url


REDIRECTS = [  # (what, where /files/cvind.mat is redirected, with {secret} and {other} filled in)
    ("a redirect to a file: address", "file://{secret}"),
    ("a redirect to an ftp: address", "ftp://127.0.0.1:{other_port}/cvind.mat"),
    ("a redirect to another host and port", "http://127.0.0.1:{other_port}/files/cvind.mat"),
    ("a redirect carrying a user name", "http://me@{server_host}/files/real.mat"),
]


@pytest.mark.parametrize("what,location", REDIRECTS, ids=[r[0] for r in REDIRECTS])
def test_each_redirect_obeys_the_same_rule(tmp_path, what, location):
    secret = tmp_path / "secret.txt"
    secret.write_text("host-only\n")
    other = Server({"cvind.mat": b"evil"})
    redirects: dict[str, str] = {}
    server = Server({"real.mat": b"good"}, redirects=redirects)
    redirects["/files/cvind.mat"] = location.format(secret=secret, other_port=other.url.rsplit(":", 1)[1],
                                                    server_host=server.url.removeprefix("http://"))
    server.fixed_listing = listing_of(f"{server.url}/files/cvind.mat")
    tried("core.download.figshare (redirect)", what)
    try:
        with pytest.raises(DownloadError, match="the server redirected cvind.mat to an address that"):
            download.figshare(tmp_path / "data", api=f"{server.url}/v2")
    finally:
        server.close()
        other.close()
    assert other.requests == [] and outside_folder(tmp_path / "data") == []


def test_a_redirect_within_the_api_host_is_followed(tmp_path):
    redirects: dict[str, str] = {}
    server = Server({"real.mat": b"good"}, redirects=redirects)
    redirects["/files/cvind.mat"] = "/files/real.mat"
    server.fixed_listing = listing_of(f"{server.url}/files/cvind.mat")
    try:
        download.figshare(tmp_path, api=f"{server.url}/v2")
    finally:
        server.close()
    assert (tmp_path / "cvind.mat").read_bytes() == b"good"


def entry(**changes) -> dict:
    item = {"name": "cvind.mat", "size": 4, "computed_md5": "", "download_url": "http://127.0.0.1:9/files/cvind.mat"}
    item.update(changes)
    return {key: value for key, value in item.items() if value is not None}


LISTINGS = [  # (what, the listing, what the refusal must say)
    ("files given as a string", {"files": "cvind.mat"}, "files should be a list"),
    ("an entry without download_url", {"files": [entry(download_url=None)]}, r"files\[0\] has no download_url"),
    ("size given as a string", {"files": [entry(size="4")]}, r"files\[0\].size should be a whole number"),
    ("size -1", {"files": [entry(size=-1)]}, r"files\[0\].size is below 0"),
    ("size 1.5", {"files": [entry(size=1.5)]}, r"files\[0\].size should be a whole number"),
    ("size 10 TB", {"files": [entry(size=10 ** 13)]}, r"files\[0\].size is over 2,147,483,648"),
    ("an empty file list", {"files": []}, "files is empty"),
    ("1,001 files", {"files": [entry(name=f"f{i}.mat") for i in range(1001)]}, "files lists more than 1,000 files"),
    ("a name with a folder in it", {"files": [entry(name="../../.bashrc")]},
     r"files\[0\].name is not a plain file name"),
    ("the name '..'", {"files": [entry(name="..")]}, r"files\[0\].name is not a plain file name"),
    ("a 5,000-character name", {"files": [entry(name="x" * 5000)]}, r"files\[0\].name is longer than 128 characters"),
    ("an MD5 that is not hexadecimal", {"files": [entry(computed_md5="not-an-md5")]},
     r"files\[0\].computed_md5 is not an MD5"),
    ("a download_url that is a number", {"files": [entry(download_url=7)]},
     r"files\[0\].download_url should be text"),
    ("a listing that is a list", [1, 2], "the answer should be an object"),
    ("a name with a right-to-left override (U+202E)", {"files": [entry(name="cvind\u202egnp.mat")]},
     r"files\[0\].name is not a plain file name"),
    ("a name with a C1 control character (CSI)", {"files": [entry(name="cvind\x9b2J.mat")]},
     r"files\[0\].name is not a plain file name"),
    ("a name ending in a line break", {"files": [entry(name="cvind.mat\n")]},
     r"files\[0\].name is not a plain file name"),
    ("a name with a zero-width space", {"files": [entry(name="cvind\u200b.mat")]},
     r"files\[0\].name is not a plain file name"),
    ("an MD5 given as a number", {"files": [entry(computed_md5=5)]}, r"files\[0\].computed_md5 should be text or null"),
    ("an MD5 followed by a line break", {"files": [entry(computed_md5="0" * 32 + "\n")]},
     r"files\[0\].computed_md5 is not an MD5"),
    ("a listing without files", {"id": 1}, "the answer has no files"),
]


@pytest.mark.parametrize("what,listing,expect", LISTINGS, ids=[item[0] for item in LISTINGS])
def test_a_listing_that_breaks_figshares_documented_form_is_one_sentence(tmp_path, what, listing, expect):
    server = Server({}, listing=json.dumps(listing).encode())
    tried("core.download.figshare (listing)", what)
    try:
        with pytest.raises(DownloadError, match=f"is not what figshare's API documents: {expect}") as refused:
            download.figshare(tmp_path / "data", api=f"{server.url}/v2")
    finally:
        server.close()
    assert len(str(refused.value)) < 200 and "xxxxxxxxxx" not in str(refused.value)
    assert str(refused.value).isprintable()  # no control, format or override character of the listing's
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("what,body,expect", [
    ("a listing that is not JSON", b"<html>maintenance</html>", "is not JSON"),
    ("a listing nested 100,000 deep", b"[" * 100_000, "is not JSON"),
    ("a listing over 1 MB", b" " * (download.MAX_LISTING_BYTES + 10) + b"{}", "over the 1,048,576-byte limit"),
])
def test_a_listing_that_is_not_json_or_too_long_is_one_sentence(tmp_path, what, body, expect):
    server = Server({}, listing=body)
    tried("core.download.figshare (listing)", what)
    try:
        with pytest.raises(DownloadError, match=expect):
            download.figshare(tmp_path / "data", api=f"{server.url}/v2")
    finally:
        server.close()


def test_a_bad_listing_through_the_command_is_one_error_line_not_a_bug(tmp_path, monkeypatch, capsys):
    server = Server({}, listing=json.dumps({"files": [entry(size=-1)]}).encode())
    monkeypatch.setenv(download.FIGSHARE_API_ENV, f"{server.url}/v2")
    tried("python -m training.download figshare", "size -1, through the command")
    try:
        assert main(["figshare", "--to", str(tmp_path / "data")]) == 2
    finally:
        server.close()
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: figshare's listing of the article is not what figshare's API documents: files[0].size is below 0"]


BLOB = np.random.default_rng(25).bytes(200_000)


def resume_against(tmp_path, lie: str | None, have: int = 100_000):
    """figshare() with a listing that publishes no MD5, a part of ``have`` bytes already downloaded, and a server
    that answers Range requests as ``lie`` says. Returns the server (closed) after the download."""
    (tmp_path / "downloads").mkdir(parents=True, exist_ok=True)
    (tmp_path / "downloads" / "data.bin.part").write_bytes(BLOB[:have])
    server = Server({"data.bin": BLOB}, md5s={"data.bin": ""}, lie=lie)
    try:
        download.figshare(tmp_path, api=f"{server.url}/v2")
    finally:
        server.close()
    return server


def test_a_resume_asks_for_an_overlap_and_appends_the_rest(tmp_path):
    server = resume_against(tmp_path, None)
    assert (tmp_path / "data.bin").read_bytes() == BLOB
    assert [r for p, r in server.requests if p.endswith("data.bin")] == [
        f"bytes={100_000 - download.RESUME_OVERLAP}-"]


@pytest.mark.parametrize("lie,what", [
    ("whole", "a 206 claiming the asked start whose body is the whole file from byte 0"),
    ("shifted", "a 206 with consistent headers whose bytes come from byte 0, not the claimed start"),
])
def test_a_resumed_range_that_lies_is_caught_and_the_download_starts_again(tmp_path, caplog, lie, what):
    tried("core.download.fetch (resumed range)", what)
    with caplog.at_level("WARNING", logger="core.download"):
        server = resume_against(tmp_path, lie)
    assert (tmp_path / "data.bin").read_bytes() == BLOB  # not the part with the file's start spliced on
    assert [r for p, r in server.requests if p.endswith("data.bin")] == [
        f"bytes={100_000 - download.RESUME_OVERLAP}-", None]  # the overlap did not fit: started again from zero
    assert "started again from zero" in caplog.text


def test_a_server_whose_ranges_never_fit_leaves_nothing_but_an_error(tmp_path, caplog):
    tried("core.download.fetch (resumed range)", "a server answering every request with a 206 from the wrong byte")
    with pytest.raises(DownloadError, match="does not match the listing or its own headers"):
        resume_against(tmp_path, "always")
    assert outside_folder(tmp_path) == [] and not (tmp_path / "downloads" / "data.bin.part").exists()


@pytest.mark.parametrize("what,headers", [
    ("a Content-Range starting after the asked byte", {"Content-Range": "bytes {s1}-199999/200000"}),
    ("a Content-Range whose total is not the published size", {"Content-Range": "bytes {s}-199999/300000"}),
    ("a Content-Range that is not one", {"Content-Range": "pages 1-2"}),
    ("a Content-Range ending past its total", {"Content-Range": "bytes {s}-250000/200000"}),
    ("a Content-Length that is not the range's", {"Content-Length": "5"}),
])
def test_a_206_whose_headers_contradict_the_request_is_not_spliced_in(tmp_path, monkeypatch, what, headers):
    """The answers are made by hand: each has the right bytes from the asked start but headers that say otherwise,
    so the only way to notice is the headers."""
    start = 100_000 - download.RESUME_OVERLAP
    filled = {k: v.format(s=start, s1=start + 1) for k, v in headers.items()}
    original = Server.__init__
    tried("core.download.fetch (resumed range)", what)

    def with_headers(self, *args, **kwargs):
        original(self, *args, **kwargs)
        handler = self.server.RequestHandlerClass
        plain_part = handler.part

        def part(handler_self, blob, first):
            sent = handler_self.send_header
            handler_self.send_header = lambda k, v: sent(k, filled.get(k, v))
            plain_part(handler_self, blob, first)

        handler.part = part

    monkeypatch.setattr(Server, "__init__", with_headers)
    server = resume_against(tmp_path, None)
    assert (tmp_path / "data.bin").read_bytes() == BLOB
    assert [r for p, r in server.requests if p.endswith("data.bin")] == [f"bytes={start}-", None]


def test_a_zip_refused_for_one_member_writes_none_of_the_others(tmp_path, monkeypatch):
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("good/first.txt", b"x")
        archive.writestr("../escaped.txt", b"x")
    (tmp_path / "evil.zip").write_bytes(evil.getvalue())
    big = io.BytesIO()
    with zipfile.ZipFile(big, "w") as archive:
        archive.writestr("good/first.txt", b"x" * 100)
        archive.writestr("good/second.txt", b"x" * 100)
    (tmp_path / "big.zip").write_bytes(big.getvalue())
    tried("core.download.unpack", "a zip whose second member would land outside the folder")
    with pytest.raises(DownloadError, match="outside"):
        download.unpack(tmp_path / "evil.zip", tmp_path / "into")
    tried("core.download.unpack", "a zip whose second member passes the unpacked-size limit")
    monkeypatch.setattr(download, "MAX_UNPACKED_BYTES", 150)
    with pytest.raises(DownloadError, match="unpacks to over 150 bytes"):
        download.unpack(tmp_path / "big.zip", tmp_path / "into")
    assert not (tmp_path / "into").exists() and not (tmp_path / "escaped.txt").exists()


def test_an_md5_figshare_sends_as_null_counts_as_none_published(tmp_path, release_files):
    """figshare may send null for an MD5: the file is downloaded unchecked (as with ""), and an MD5 published in the
    other field is still checked."""
    def listing(url: str, supplied: str | None) -> bytes:
        return json.dumps({"files": [
            {"name": "cvind.mat", "size": len(release_files["cvind.mat"]), "computed_md5": None,
             "supplied_md5": None, "download_url": f"{url}/files/cvind.mat"},
            {"name": "README.txt", "size": len(release_files["README.txt"]), "computed_md5": None,
             "supplied_md5": supplied, "download_url": f"{url}/files/README.txt"}]}).encode()

    server = Server(release_files)
    tried("core.download.figshare (listing)", "computed_md5 and supplied_md5 both null")
    try:
        server.fixed_listing = listing(server.url, hashlib.md5(release_files["README.txt"]).hexdigest())
        download.figshare(tmp_path / "ok", api=f"{server.url}/v2")
        server.fixed_listing = listing(server.url, "0" * 32)
        with pytest.raises(DownloadError, match="README.txt does not match the MD5 figshare publishes"):
            download.figshare(tmp_path / "wrong", api=f"{server.url}/v2")
    finally:
        server.close()
    assert (tmp_path / "ok" / "cvind.mat").read_bytes() == release_files["cvind.mat"]
    assert (tmp_path / "ok" / "README.txt").read_bytes() == release_files["README.txt"]


ARTICLE = f"/v2/articles/{download.FIGSHARE_ARTICLE}"
BAD_STATUS = b"HTTP/1.1 2OO \xe2\x80\xae OK\r\nContent-Length: 2\r\n\r\n{}"  # a status that is no number


def chunked_cut(body: bytes, sent: int) -> bytes:
    """An HTTP answer whose chunked body ends after ``sent`` bytes, in the middle of a chunk that says it holds the
    rest (http.client raises IncompleteRead)."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    rest = len(body) - sent
    return head + b"%x\r\n" % sent + body[:sent] + b"\r\n" + b"%x\r\n" % rest + body[sent:sent + 10]


@pytest.mark.parametrize("what,raw,expect", [
    ("a listing answered with a status line that is no number", {ARTICLE: BAD_STATUS}, "did not answer in HTTP"),
    ("a listing whose chunked body is cut short", {ARTICLE: chunked_cut(b'{"files": []}' + b" " * 50, 20)},
     "broke off or was malformed"),
    ("a file answered with a status line that is no number", {"/files/data.bin": BAD_STATUS},
     "did not answer in HTTP"),
    ("a connection closed before any answer", {ARTICLE: b""}, "is down"),
])
def test_a_server_that_breaks_http_is_one_error_line_not_a_bug(tmp_path, monkeypatch, capsys, what, raw, expect):
    server = Server({"data.bin": BLOB}, raw=raw)
    monkeypatch.setenv(download.FIGSHARE_API_ENV, f"{server.url}/v2")
    tried("python -m training.download figshare", what)
    try:
        assert main(["figshare", "--to", str(tmp_path / "data")]) == 2
    finally:
        server.close()
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and expect in line and "bug" not in line, line
    assert "2OO" not in line and "\u202e" not in line  # the server's own text is not repeated


def test_a_body_cut_short_mid_chunk_keeps_what_arrived_and_the_next_run_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "CHUNK", 50_000)  # two whole reads arrive before the cut
    server = Server({"data.bin": BLOB}, raw={"/files/data.bin": chunked_cut(BLOB, 100_000)})
    tried("core.download.figshare (file)", "a file whose chunked body ends in the middle of a chunk")
    try:
        with pytest.raises(DownloadError, match="the server's answer for data.bin broke off or was malformed part "
                                                "way through; run the command again"):
            download.figshare(tmp_path, api=f"{server.url}/v2")
        assert (tmp_path / "downloads" / "data.bin.part").read_bytes() == BLOB[:100_000]
        download.figshare(tmp_path, api=f"{server.url}/v2")
    finally:
        server.close()
    assert (tmp_path / "data.bin").read_bytes() == BLOB
    assert [r for p, r in server.requests if p.endswith("data.bin")] == [
        None, f"bytes={100_000 - download.RESUME_OVERLAP}-"]
