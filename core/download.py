"""Getting the public datasets: the figshare brain tumour release through figshare's public API (every file checked
against the MD5 figshare publishes, downloads resumed where they stopped), and the Kaggle Brain Tumor MRI dataset
through kagglehub (with the credentials kagglehub finds itself).

What figshare's API answers is treated as hostile until checked: its listing against :data:`LISTING_SCHEMA`, every
address in it (and every redirect) against :func:`address_problem`, and every resumed range against what it claims
and against the bytes already on disk.

Nothing here prints: progress goes to a callback, failures are :class:`DownloadError` with one sentence, and an
unreachable network says so in those words.
"""

from __future__ import annotations

import hashlib
import http
import http.client
import ipaddress
import json
import logging
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from itertools import islice
from pathlib import Path, PurePosixPath

FIGSHARE_ARTICLE = 1512427   # Cheng et al., "brain tumor dataset", doi:10.6084/m9.figshare.1512427
FIGSHARE_API = "https://api.figshare.com/v2"
FIGSHARE_API_ENV = "BRAIN_MRI_FIGSHARE_API"   # another API address (a mirror, or the tests' loopback server)
FIGSHARE_DOMAIN = "figshare.com"              # the API, ndownloader.figshare.com (the listing's download_url)
# ndownloader.figshare.com answers with a redirect to a signed address in figshare's bucket on Amazon S3
FIGSHARE_STORE_HOSTS = ("s3-eu-west-1.amazonaws.com", "s3.eu-west-1.amazonaws.com")
FIGSHARE_STORE_PATH = "/pfigshare-u-files/"
KAGGLE_HANDLE = "masoudnickparvar/brain-tumor-mri-dataset"
CHUNK = 1 << 20
MAX_LISTING_BYTES = 1 << 20
MAX_LISTED_FILES = 1000        # the release lists 5
MAX_FILE_BYTES = 2 << 30       # the release's largest zip is about 250 MB
MAX_UNPACKED_BYTES = 4 << 30
RESUME_OVERLAP = 64 << 10      # bytes asked for again when resuming, to check the server still sends the same file
TIMEOUT = 60

Progress = Callable[[str, int, int | None], None]   # (file name, bytes so far, total or None)
log = logging.getLogger(__name__)

# figshare may send null for an MD5 it has not computed: none published, as an empty string
_MD5 = {"type": ["string", "null"], "pattern": r"^([0-9a-fA-F]{32})?\Z"}
LISTING_SCHEMA = {
    "type": "object",
    "required": ["files"],
    "properties": {"files": {"type": "array", "minItems": 1, "maxItems": MAX_LISTED_FILES, "items": {
        "type": "object",
        "required": ["name", "download_url", "size"],
        "properties": {
            # a plain file name: it is joined to the download folder and shown in every message and progress line,
            # so no folder, control character or bidirectional override (\Z: "$" would let a final newline through)
            "name": {"type": "string", "maxLength": 128, "pattern": r"^(?!\.\.?\Z)[A-Za-z0-9._ -]+\Z"},
            "download_url": {"type": "string", "maxLength": 2000},
            "size": {"type": "integer", "minimum": 0, "maximum": MAX_FILE_BYTES},
            "computed_md5": _MD5, "supplied_md5": _MD5}}}},
}
_KINDS = {"array": "a list", "object": "an object", "string": "text", "integer": "a whole number", "null": "null"}
_PATTERNS = {"name": "is not a plain file name (letters, digits, spaces, '.', '_' and '-')",
             "computed_md5": "is not an MD5 (32 hexadecimal digits)",
             "supplied_md5": "is not an MD5 (32 hexadecimal digits)"}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_HOST = re.compile(r"[a-z0-9.-]+|[0-9a-f:.]+")   # a DNS name or an IP address, nothing a parser could read otherwise
_FOLLOWED = "only https addresses on figshare's hosts or the configured API's are followed"


class DownloadError(RuntimeError):
    """A download that could not be completed, with the reason in one sentence."""


class _Answered(DownloadError):
    """An HTTP error status, kept so that a caller can tell one status from another."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class _Untrusted(Exception):
    """The server's answer does not fit the part already downloaded: another start, total or length than asked,
    or other bytes where the two overlap. The part is discarded and the download starts again from zero."""


def _api(api: str | None) -> str:
    return (api or os.environ.get(FIGSHARE_API_ENV) or FIGSHARE_API).rstrip("/")


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _same_origin(parts: urllib.parse.SplitResult, api: str) -> bool:
    def origin(of: urllib.parse.SplitResult) -> tuple:
        scheme = of.scheme.lower()
        return scheme, of.hostname, of.port or {"https": 443, "http": 80}.get(scheme)

    try:
        return origin(parts) == origin(urllib.parse.urlsplit(api))
    except ValueError:  # an API address with a malformed port is no origin at all
        return False


def _figshare_host(parts: urllib.parse.SplitResult) -> bool:
    host, path = parts.hostname or "", parts.path
    if parts.scheme.lower() != "https" or parts.port not in (None, 443):
        return False
    if host == FIGSHARE_DOMAIN or host.endswith("." + FIGSHARE_DOMAIN):
        return True
    return host in FIGSHARE_STORE_HOSTS and path.startswith(FIGSHARE_STORE_PATH) and ".." not in path.split("/")


def address_problem(url: str, api: str) -> str | None:
    """Why ``url`` may not be fetched, as the end of a sentence (None when it may): only https, or http to this
    machine (tests, a local mirror), with no user name or password, on figshare's hosts or the configured ``api``'s
    host and port. urllib alone would follow file:, ftp: and data: addresses and any host."""
    if not url.isascii() or any(c.isspace() or not c.isprintable() or c == "\\" for c in url):
        return "holds spaces, control characters, backslashes or letters outside ASCII"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return "is not a well-formed address"
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if "@" in parts.netloc:
        return "carries a user name or password"
    if scheme not in ("https", "http"):
        return f"is a {scheme}: address, not https" if scheme else "is not a full https address"
    if scheme == "http" and not _loopback(host):
        return "is plain http to another machine, not https"
    if not _HOST.fullmatch(host) or not (_same_origin(parts, api) or _figshare_host(parts)):
        return "is on a host that is neither figshare's nor the configured API's"
    return None


def _check_address(url: str, api: str, what: str) -> None:
    problem = address_problem(url, api)
    if problem:
        raise DownloadError(f"the address of {what} {problem}; {_FOLLOWED}")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an address :func:`address_problem` allows, checked hop by hop (urllib alone
    follows one to ftp: or to any host)."""

    def __init__(self, api: str, what: str):
        super().__init__()
        self.api, self.what = api, what

    def http_error_302(self, req, fp, code, msg, headers):
        where = headers.get("location") or headers.get("uri")
        problem = address_problem(urllib.parse.urljoin(req.full_url, where), self.api) if where else None
        if problem:
            fp.close()
            raise DownloadError(f"the server redirected {self.what} to an address that {problem}; {_FOLLOWED}")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _open(url: str, api: str, what: str, headers: dict | None = None):
    _check_address(url, api, what)
    opener = urllib.request.build_opener(_CheckedRedirects(api, what))
    request = urllib.request.Request(url, headers={"User-Agent": "brain-tumour-mri/0.1", **(headers or {})})
    try:
        return opener.open(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as error:
        error.close()
        raise _Answered(f"the server answered HTTP {error.code} ({_phrase(error.code)}) for {what}",
                        error.code) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:  # also a closed connection
        reason = getattr(error, "reason", error)
        raise DownloadError(f"the network is unreachable from here, or {urllib.parse.urlsplit(url).netloc} is "
                            f"down ({reason}); download on a machine with internet access and copy the folder "
                            "over") from None
    except http.client.HTTPException:  # a malformed status line or headers; their text is the server's, not shown
        raise DownloadError(f"{urllib.parse.urlsplit(url).netloc} did not answer in HTTP for {what} (a malformed "
                            "status line or headers); check the API address, or try again later") from None


def _read(response, size: int, what: str) -> bytes:
    """Up to ``size`` bytes of an answer's body. A connection that breaks off, or a body that is not valid HTTP (a
    chunk cut short: IncompleteRead), is a DownloadError; whatever was saved before it stays, to resume from."""
    try:
        return response.read(size)
    except (http.client.HTTPException, ConnectionError, TimeoutError):
        raise DownloadError(f"the server's answer for {what} broke off or was malformed part way through; run the "
                            "command again (a download resumes where it stopped)") from None


def _phrase(status: int) -> str:
    """The standard words for an HTTP status (not the server's own, which could say anything)."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "an unknown status"


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, target: Path, size: int | None = None, md5: str | None = None,
          progress: Progress | None = None, api: str | None = None) -> Path:
    """Download ``url`` to ``target``: into ``target.part`` first, resumed from where an earlier attempt stopped
    (an HTTP Range request that starts up to :data:`RESUME_OVERLAP` bytes early, so that the bytes both have are
    compared; a server that ignores it sends the file whole and it is started again), checked against ``md5`` and
    ``size``, and moved into place only when complete. A target already there with the right MD5 is kept. ``url``
    and its redirects must pass :func:`address_problem` for ``api`` (the configured API by default)."""
    api = _api(api)
    if target.is_file() and (md5 is None or md5_of(target) == md5):
        return target
    if size is not None and size > MAX_FILE_BYTES:
        raise DownloadError(f"{target.name} is said to be {size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit")
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    total = size
    if size is None or have < size:
        total = _receive_checked(url, api, target, have, size, progress)
    _check_whole(part, target, total, md5)
    os.replace(part, target)
    return target


def _receive_checked(url: str, api: str, target: Path, have: int, size: int | None,
                     progress: Progress | None) -> int | None:
    """:func:`_receive`, started again from zero once when the server's answer does not fit the part."""
    for kept in (have, 0) if have else (0,):
        try:
            return _receive(url, api, target, kept, size, progress)
        except _Untrusted:
            target.with_name(target.name + ".part").unlink(missing_ok=True)
            if kept:
                log.warning("%s: the server's answer does not fit the part downloaded before (another range, or "
                            "other bytes); the part was discarded and the download started again from zero",
                            target.name)
    raise DownloadError(f"the server's answer for {target.name} does not match the listing or its own headers "
                        "(another size, range or length); nothing of it was kept: try again later")


def _receive(url: str, api: str, target: Path, have: int, size: int | None, progress: Progress | None) -> int | None:
    """Append to ``target``'s part what it lacks; returns the file's whole size when the listing or the server
    says it. Raises :class:`_Untrusted` when the answer does not fit the part."""
    start = have - min(have, RESUME_OVERLAP)
    try:
        response = _open(url, api, target.name, {"Range": f"bytes={start}-"} if have else None)
    except _Answered as error:
        if have and error.status == 416:
            raise _Untrusted from None  # the server's file ends before the part does
        raise
    with response:
        if response.status != 206:
            start = have = 0  # the whole file: a server that ignores Range
        length, total = _announced(response, start, size)
        if have:
            _check_overlap(response, target.with_name(target.name + ".part"), have - start)
        _save(response, target, have, None if length is None else length - (have - start), total, progress)
    return total


def _announced(response, start: int, size: int | None) -> tuple[int | None, int | None]:
    """The body's length and the file's whole size, as the answer's headers give them, checked against what was
    asked: a 206 must cover bytes from ``start`` of a file of ``size`` bytes, and its body must be that range."""
    length = response.headers.get("Content-Length")
    if length is not None and not length.strip().isdigit():
        raise _Untrusted
    length = None if length is None else int(length)
    if response.status != 206:
        if size is not None and length is not None and length != size:
            raise _Untrusted
        return (size if size is not None else length), (size if size is not None else length)
    found = _CONTENT_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
    if not found:
        raise _Untrusted
    first, last = int(found[1]), int(found[2])
    total = size if found[3] == "*" else int(found[3])
    if first != start or last < first or (total is not None and last >= total):
        raise _Untrusted
    if size is not None and total != size:
        raise _Untrusted
    if length is not None and length != last - first + 1:
        raise _Untrusted
    return last - first + 1, total


def _check_overlap(response, part: Path, count: int) -> None:
    """The ``count`` bytes the server sends first must be the last ``count`` bytes of ``part``."""
    sent = b""
    while len(sent) < count:
        chunk = _read(response, count - len(sent), part.name.removesuffix(".part"))
        if not chunk:
            break
        sent += chunk
    with open(part, "rb") as handle:
        handle.seek(-count, os.SEEK_END)
        kept = handle.read(count)
    if sent != kept[:len(sent)]:
        raise _Untrusted


def _save(response, target: Path, have: int, remaining: int | None, total: int | None,
          progress: Progress | None) -> None:
    """Write the rest of the body to ``target``'s part after its first ``have`` bytes: at most ``remaining`` bytes
    (the body as announced), or up to :data:`MAX_FILE_BYTES` when nothing was announced."""
    limit = remaining if remaining is not None else MAX_FILE_BYTES - have
    written = 0
    with open(target.with_name(target.name + ".part"), "ab" if have else "wb") as out:
        while written < limit:
            chunk = _read(response, min(CHUNK, limit - written), target.name)  # never past what was announced
            if not chunk:
                break
            out.write(chunk)
            written += len(chunk)
            if progress:
                progress(target.name, have + written, total)
        if _read(response, 1, target.name):
            if remaining is not None:
                raise _Untrusted  # more bytes than its headers said
            raise DownloadError(f"{target.name} is larger than the {MAX_FILE_BYTES:,}-byte limit")


def _check_whole(part: Path, target: Path, size: int | None, md5: str | None) -> None:
    if size is not None and part.stat().st_size != size:
        raise DownloadError(f"{target.name} stopped at {part.stat().st_size:,} of {size:,} bytes; run the command "
                            "again to resume")
    if md5 is not None and md5_of(part) != md5:
        part.unlink()
        raise DownloadError(f"{target.name} does not match the MD5 figshare publishes for it (damaged in transit?); "
                            "it was deleted: run the command again")


def unpack(archive: Path, into: Path) -> list[Path]:
    """Unpack a zip into a folder, refusing members that would land outside it (absolute paths, '..') and archives
    that unpack to more than :data:`MAX_UNPACKED_BYTES`, before anything is written; each member is written beside
    its place and moved into it when whole."""
    try:
        with zipfile.ZipFile(archive) as handle:
            members = _members(archive, handle, into)
            for member in members:
                _extract(handle, member, into.joinpath(*PurePosixPath(member.filename).parts))
    except zipfile.BadZipFile:
        raise DownloadError(f"{archive.name} is not a readable zip file") from None
    return [into.joinpath(*PurePosixPath(member.filename).parts) for member in members]


def _members(archive: Path, handle: zipfile.ZipFile, into: Path) -> list[zipfile.ZipInfo]:
    members, total = [], 0
    for member in handle.infolist():
        name = PurePosixPath(member.filename)
        if member.is_dir() or "__MACOSX" in name.parts:
            continue
        if name.is_absolute() or ".." in name.parts:
            raise DownloadError(f"{archive.name} holds {member.filename[:100]!r}, which would land outside {into}")
        total += member.file_size  # zipfile stops each member at its declared size
        if total > MAX_UNPACKED_BYTES:
            raise DownloadError(f"{archive.name} unpacks to over {MAX_UNPACKED_BYTES:,} bytes")
        members.append(member)
    return members


def _extract(handle: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with handle.open(member) as source, open(part, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def listing_problem(listing) -> str | None:
    """What is wrong with figshare's answer about the article, as ``"files[2].size should be a whole number"``
    (the place and the rule broken, never the value itself); None when it fits :data:`LISTING_SCHEMA`."""
    import jsonschema

    errors = jsonschema.Draft202012Validator(LISTING_SCHEMA).iter_errors(listing)
    error = jsonschema.exceptions.best_match(islice(errors, 20))
    if error is None:
        return None
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    return f"{where or 'the answer'} {_broken_rule(error)}"


def _broken_rule(error) -> str:
    """The rule of :data:`LISTING_SCHEMA` that ``error`` broke, in words made from the schema, not the value."""
    rule, value = error.validator, error.validator_value
    if rule == "type":  # one type, or a list of them ("text or null")
        kinds = [value] if isinstance(value, str) else value
        return "should be " + " or ".join(_KINDS.get(kind, kind) for kind in kinds)
    if rule == "required":
        return "has no " + ", ".join(key for key in value if key not in error.instance)
    if rule in ("minimum", "maximum"):
        return f"is {'below' if rule == 'minimum' else 'over'} {value:,}"
    if rule in ("minItems", "maxItems"):
        return "is empty" if rule == "minItems" else f"lists more than {value:,} files"
    if rule == "maxLength":
        return f"is longer than {value} characters"
    if rule == "pattern" and error.absolute_path:
        return _PATTERNS.get(str(error.absolute_path[-1]), "is not in the documented form")
    return "is not in the documented form"


def _listing(api: str) -> list[dict]:
    """The article's files, as figshare's API lists them, checked: the listing against :data:`LISTING_SCHEMA` and
    every download address against :func:`address_problem`, all before anything is downloaded."""
    what = "figshare's listing of the article"
    _check_address(api, api, f"the figshare API ({FIGSHARE_API_ENV})")
    with _open(f"{api}/articles/{FIGSHARE_ARTICLE}", api, what) as response:
        raw = _read(response, MAX_LISTING_BYTES + 1, what)
    if len(raw) > MAX_LISTING_BYTES:
        raise DownloadError(f"{what} is over the {MAX_LISTING_BYTES:,}-byte limit; is the API address right?")
    try:
        listing = json.loads(raw)
    except (ValueError, RecursionError):
        raise DownloadError(f"{what} is not JSON, as figshare's API documents it; is the API address right?") from None
    problem = listing_problem(listing)
    if problem:
        raise DownloadError(f"{what} is not what figshare's API documents: {problem}")
    for item in listing["files"]:
        _check_address(item["download_url"], api, f"{item['name']} in {what}")
    return listing["files"]


def figshare(to: str | os.PathLike, progress: Progress | None = None, api: str | None = None) -> Path:
    """The figshare release, as published, in ``to``: its zips fetched and checked, then unpacked (the
    ``brainTumorDataPublic_*`` folders of .mat files), with cvind.mat and the README beside them. Returns the folder
    to give to ``--data``."""
    api = _api(api)
    folder = Path(to).expanduser()
    files = _listing(api)
    downloads = folder / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    for item in files:
        name = item["name"]
        md5 = (item.get("computed_md5") or item.get("supplied_md5") or "").lower() or None
        got = fetch(item["download_url"], downloads / name, int(item["size"]), md5, progress, api)
        if name.lower().endswith(".zip"):
            marker = folder / f".{name}.unpacked"
            if not marker.is_file() or marker.read_text() != md5_of(got):
                unpack(got, folder)
                marker.write_text(md5_of(got))
        else:
            copy = downloads / f"{name}.copy.part"
            shutil.copyfile(got, copy)
            os.replace(copy, folder / name)
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
