"""Getting the public datasets: the figshare brain tumour release through figshare's public API (every file checked
against the MD5 figshare publishes, downloads resumed where they stopped), and the Kaggle Brain Tumor MRI dataset
through kagglehub (with the credentials kagglehub finds itself).

Nothing here prints: progress goes to a callback, failures are :class:`DownloadError` with one sentence, and an
unreachable network says so in those words.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

FIGSHARE_ARTICLE = 1512427   # Cheng et al., "brain tumor dataset", doi:10.6084/m9.figshare.1512427
FIGSHARE_API = "https://api.figshare.com/v2"
FIGSHARE_API_ENV = "BRAIN_MRI_FIGSHARE_API"   # another API address (a mirror, or the tests' loopback server)
KAGGLE_HANDLE = "masoudnickparvar/brain-tumor-mri-dataset"
CHUNK = 1 << 20
MAX_LISTING_BYTES = 1 << 20
MAX_FILE_BYTES = 2 << 30       # the release's largest zip is about 250 MB
MAX_UNPACKED_BYTES = 4 << 30
TIMEOUT = 60

Progress = Callable[[str, int, int | None], None]   # (file name, bytes so far, total or None)


class DownloadError(RuntimeError):
    """A download that could not be completed, with the reason in one sentence."""


def _open(url: str, headers: dict | None = None):
    request = urllib.request.Request(url, headers={"User-Agent": "brain-tumour-mri/0.1", **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{url} answered HTTP {error.code} ({error.reason})") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"the network is unreachable from here, or {urllib.parse.urlsplit(url).netloc} is "
                            f"down ({reason}); download on a machine with internet access and copy the folder "
                            "over") from None


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, target: Path, size: int | None = None, md5: str | None = None,
          progress: Progress | None = None) -> Path:
    """Download ``url`` to ``target``: into ``target.part`` first, resumed from where an earlier attempt stopped
    (an HTTP Range request; a server that ignores it sends the file whole and it is started again), checked against
    ``md5`` and ``size``, and moved into place only when complete. A target already there with the right MD5 is
    kept."""
    if target.is_file() and (md5 is None or md5_of(target) == md5):
        return target
    if size is not None and size > MAX_FILE_BYTES:
        raise DownloadError(f"{target.name} is said to be {size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit")
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is None or have < size:
        try:
            response = _open(url, {"Range": f"bytes={have}-"} if have else None)
        except DownloadError as error:
            if not (have and "HTTP 416" in str(error)):
                raise
            response = None  # nothing after what we have: the part is whole (interrupted before it was moved)
        if response is not None:
            with response:
                range_start = (response.headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
                resumed = have and response.status == 206 and range_start == str(have)
                mode, done = ("ab", have) if resumed else ("wb", 0)
                total = size if size is not None else (int(response.headers.get("Content-Length", 0)) + done or None)
                limit = size if size is not None else MAX_FILE_BYTES
                with open(part, mode) as out:
                    while done < limit:
                        chunk = response.read(min(CHUNK, limit - done))  # never past the published size
                        if not chunk:
                            break
                        done += len(chunk)
                        out.write(chunk)
                        if progress:
                            progress(target.name, done, total)
                    if size is None and response.read(1):
                        raise DownloadError(f"{target.name} is larger than the {MAX_FILE_BYTES:,}-byte limit")
    if size is not None and part.stat().st_size != size:
        raise DownloadError(f"{target.name} stopped at {part.stat().st_size:,} of {size:,} bytes; run the command "
                            "again to resume")
    if md5 is not None and md5_of(part) != md5:
        part.unlink()
        raise DownloadError(f"{target.name} does not match the MD5 figshare publishes for it (damaged in transit?); "
                            "it was deleted: run the command again")
    os.replace(part, target)
    return target


def unpack(archive: Path, into: Path) -> list[Path]:
    """Unpack a zip into a folder, refusing members that would land outside it (absolute paths, '..') and archives
    that unpack to more than :data:`MAX_UNPACKED_BYTES`."""
    written, total = [], 0
    try:
        with zipfile.ZipFile(archive) as handle:
            for member in handle.infolist():
                name = PurePosixPath(member.filename)
                if member.is_dir() or "__MACOSX" in name.parts:
                    continue
                if name.is_absolute() or ".." in name.parts:
                    raise DownloadError(f"{archive.name} holds {member.filename!r}, which would land outside {into}")
                total += member.file_size
                if total > MAX_UNPACKED_BYTES:
                    raise DownloadError(f"{archive.name} unpacks to over {MAX_UNPACKED_BYTES:,} bytes")
                target = into.joinpath(*name.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with handle.open(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
                written.append(target)
    except zipfile.BadZipFile:
        raise DownloadError(f"{archive.name} is not a readable zip file") from None
    return written


def figshare(to: str | os.PathLike, progress: Progress | None = None, api: str | None = None) -> Path:
    """The figshare release, as published, in ``to``: its zips fetched and checked, then unpacked (the
    ``brainTumorDataPublic_*`` folders of .mat files), with cvind.mat and the README beside them. Returns the folder
    to give to ``--data``."""
    api = (api or os.environ.get(FIGSHARE_API_ENV) or FIGSHARE_API).rstrip("/")
    folder = Path(to).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    with _open(f"{api}/articles/{FIGSHARE_ARTICLE}") as response:
        listing = response.read(MAX_LISTING_BYTES + 1)
    try:
        files = json.loads(listing)["files"]
    except (ValueError, KeyError, TypeError):
        raise DownloadError("figshare's answer about the article is not what its API documents (no file list)") from None
    if not files:
        raise DownloadError("figshare lists no file for the article")
    downloads = folder / "downloads"
    downloads.mkdir(exist_ok=True)
    for item in files:
        name = PurePosixPath(str(item.get("name", ""))).name
        if not name or name in (".", ".."):
            raise DownloadError(f"figshare lists a file without a usable name ({item.get('name')!r})")
        md5 = item.get("computed_md5") or item.get("supplied_md5") or None
        got = fetch(str(item["download_url"]), downloads / name, item.get("size"), md5, progress)
        if name.lower().endswith(".zip"):
            marker = folder / f".{name}.unpacked"
            if not marker.is_file() or marker.read_text() != md5_of(got):
                unpack(got, folder)
                marker.write_text(md5_of(got))
        else:
            shutil.copyfile(got, folder / name)
    return folder


def kaggle(to: str | os.PathLike) -> Path:
    """The Kaggle Brain Tumor MRI dataset in ``to``, through kagglehub (it finds the credentials itself:
    ~/.kaggle/kaggle.json, KAGGLE_USERNAME and KAGGLE_KEY, or a notebook's). Returns the folder to give to
    ``--data`` (the one holding Training/ and Testing/)."""
    try:
        import kagglehub
    except ImportError:
        raise DownloadError("kagglehub is not installed (pip install -r requirements.txt)") from None
    folder = Path(to).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        got = Path(kagglehub.dataset_download(KAGGLE_HANDLE, output_dir=str(folder)))
    except Exception as error:  # kagglehub raises its own types, requests' and OSError
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        if any(word in text.lower() for word in ("connection", "resolve", "unreachable", "timed out", "network")):
            raise DownloadError(f"the network is unreachable from here ({text}); download on a machine with internet "
                                "access and copy the folder over") from None
        raise DownloadError(f"kagglehub could not fetch {KAGGLE_HANDLE}: {text}") from None
    found = next((p for p in [got, *sorted(got.rglob("*"))] if (p / "Training").is_dir()), None)
    if found is None:
        raise DownloadError(f"the download in {got} holds no Training/ folder; is {KAGGLE_HANDLE} still the same "
                            "dataset?")
    return found
