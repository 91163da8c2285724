"""How the dashboard's Predict page holds up when several people upload a scan at the same moment.

    .venv/bin/python bench/load_sessions.py [--sessions 8] [--rounds 3] [--warmup 1] [--timeout 120]
                                            [--slow-session [--slow-timeout 3600]] [--reuse-bytes]
                                            [--streamlit-option NAME=VALUE ...] [--json PATH]

It starts the real app (`streamlit run dashboard/app.py`) on a free loopback port and drives browser-less
sessions through Streamlit's own websocket protocol, as the frontend does: a `rerun_script` to load the
Predict page, a `file_urls_request` for an upload URL, an HTTP PUT of the file, then a rerun whose widget
states carry the file uploader's value. Each session uploads one scan and waits for that run's
`script_finished`; from the run's deltas it reads the prediction heading ("Glioma — 97.3%") and downloads the
Grad-CAM overlay image, keeping its sha256.

  single user   one fresh session at a time, each scan in turn, --rounds times: the reference latency, and
                the reference result (heading, overlay hash) of every scan;
  concurrent    --sessions fresh sessions connect, then all upload at once (an asyncio barrier), each its own
                scan, --rounds times; every result must equal the single-user one of its scan;
  slow session  (--slow-session) the concurrent rounds again while one more session has pressed
                "Compute Score-CAM" on the page, to see what a slow explanation does to everyone else.

Figures per upload: latency = from sending the upload's rerun (after the PUT) to its script_finished; upload =
the PUT alone; end to end = from asking for the upload URL to having the overlay image downloaded. The page
caches its explanations by file bytes (st.cache_data, shared by all sessions), so each upload's bytes are
made unique with a metadata chunk (a PNG text chunk, a JPEG comment) that leaves the pixels alone: every
upload is computed, as it is for real users who upload different scans. --reuse-bytes uploads the files as
they are, which measures the cached path instead. Scans: 2 per class from ../shared/datasets/brain-tumor-mri/
Testing when it exists, else 8 synthetic slices made in memory. The warm-up (--warmup passes over the scans,
one session at a time) is not measured: the first upload loads the model, which takes seconds.

Each phase also says who used the CPU meanwhile (the server, this client, every other process: /proc): on a
shared machine another job skews the figures, and the bench says so rather than print them as clean. The
client keeps out of the way: one asyncio process at nice +5, on a core of its own when there are more than 2.
--streamlit-option passes a config option to the server (e.g. runner.postScriptGC=false) to try a setting.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import random
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from websockets.exceptions import WebSocketException

from core.runtime import cpu_summary

ROOT = Path(__file__).resolve().parents[1]
DATASET_TESTING = ROOT.parent / "shared" / "datasets" / "brain-tumor-mri" / "Testing"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# What the bench looks for on the Predict page (dashboard/app_pages/predict.py). Widget ids end in the user key.
PAGE_NAME = "predict"                      # the page's url_path in dashboard/app.py
UPLOADER_KEY = "predict.uploads.0"         # a fresh session's uploader (the key moves on after each upload)
METHOD_KEY = "predict.method"
SLOW_METHOD = "scorecam"
HEATMAP_CAPTION = "Grad-CAM"
SLOW_CAPTION = "Score-CAM"
COMPUTE_LABEL = "Compute"
POLL_SECONDS = 2.0
# A confident card reads "Glioma — 97.1%"; an uncertain or unfamiliar one "…Glioma 54.0%…".
HEADING = re.compile(r"(Glioma|Meningioma|No tumour|Pituitary tumour)\s+(?:[—–-]\s+)?(\d+(?:\.\d+)?)\s*%")


class BenchError(Exception):
    """An expected failure (server down, page changed, timeout): reported in one line, without a traceback."""


# What a session can meet that is an outcome to count (an error), not a bug in the bench.
EXPECTED_FAILURES = (BenchError, OSError, asyncio.TimeoutError, WebSocketException)


# --------------------------------------------------------------------------------------------------
# The machine


def split_cores() -> tuple[set[int] | None, set[int] | None]:
    """(server cores, client cores): the last usable core for the client when there are more than 2, so the
    client's own work never competes with the server's torch threads; (None, None) otherwise."""
    if not hasattr(os, "sched_setaffinity"):
        return None, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) <= 2:
        return None, None
    return set(cores[:-1]), {cores[-1]}


def tree_cpu_seconds(root: int) -> float | None:
    """User + system CPU seconds of a process and its descendants, threads and reaped children included (the
    page may hand slow work to a worker process), from /proc; None where that is unavailable."""
    parents, seconds = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            parents[int(entry.name)] = int(fields[1])
            seconds[int(entry.name)] = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    if root not in seconds:
        return None
    total, frontier = 0, [root]
    while frontier:
        pid = frontier.pop()
        total += seconds[pid]
        frontier += [child for child, parent in parents.items() if parent == pid]
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    except (OSError, IndexError, ValueError):
        return None


class CpuMeter:
    """Who used the CPU during a phase: the server, this client, and every other process on the machine (on a
    shared machine another job can skew the figures; this says so)."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid

    def mark(self) -> tuple:
        return (time.perf_counter(), tree_cpu_seconds(self.server_pid), time.process_time(), machine_busy_seconds())

    def since(self, mark: tuple) -> dict:
        now = self.mark()
        if None in mark or None in now:
            return {}
        wall, server, client, machine = (b - a for a, b in zip(mark, now))
        return {"wall_s": wall, "server_cpu_s": server, "client_cpu_s": client,
                "other_cpu_s": max(0.0, machine - server - client), "cores": cpu_summary()["cores_usable"]}


def print_floor(usage: dict, uploads: int, sessions: int, single: dict) -> None:
    """What no scheduling can beat: when every session uploads at once, the last result cannot come sooner than
    the server's CPU time for all the uploads divided by the cores. The CPU time includes opening the page, so
    this overstates the floor a little."""
    seconds, cores = usage.get("server_cpu_s"), usage.get("cores") or os.cpu_count() or 1
    if not seconds or not uploads:
        return
    floor = seconds / uploads * sessions / cores
    print(f"CPU floor of a burst: {seconds / uploads:.3f} s of server CPU per upload (page opening included) x "
          f"{sessions} sessions / {cores} cores = {floor:.2f} s for the last of them, {floor / single['p95']:.1f} x "
          "the single-user p95")


def print_cpu(usage: dict, uploads: int) -> None:
    if not usage:
        return
    each = f" ({usage['server_cpu_s'] / uploads:.2f} s per upload, opening the page included)" if uploads else ""
    print(f"  CPU over the phase's {usage['wall_s']:.1f} s: server {usage['server_cpu_s']:.1f} s{each}, client "
          f"{usage['client_cpu_s']:.1f} s, other processes {usage['other_cpu_s']:.1f} s")
    share = usage["other_cpu_s"] / max(usage["wall_s"] * usage["cores"], 1e-9)
    if share > 0.05:
        print(f"  !! other processes used {share:.0%} of the machine during this phase: these figures are skewed")


# --------------------------------------------------------------------------------------------------
# The server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        """SIGTERM (Streamlit shuts down cleanly), then SIGKILL if it does not within 15 s; then the rest of its
        process group (it leads its own), e.g. a worker process the page started for slow explanations."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass  # nothing left
        self.log.unlink(missing_ok=True)


def start_server(port: int, cores: set[int] | None, options: list[str]) -> Server:
    command = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.address", "127.0.0.1",
               "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    for option in options:  # --streamlit-option runner.postScriptGC=false -> --runner.postScriptGC false
        name, _, value = option.partition("=")
        command += [f"--{name}", value]
    log = Path(tempfile.mkstemp(prefix="load_sessions_server_", suffix=".log")[1])
    with log.open("wb") as out:
        # A log file, not a pipe: nobody reads a pipe while the bench runs, and a full one would stall the server.
        # Its own session: Ctrl-C reaches only the bench, which then stops the server in order.
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True,
                                   preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
    return Server(process, port, log)


async def wait_until_healthy(server: Server, timeout: float) -> str:
    """Poll /_stcore/health until it answers "ok"; returns the XSRF cookie it sets (empty if XSRF is off)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"the server exited with code {server.process.returncode} before it was ready; "
                             f"its log ends:\n{server.log_tail()}")
        try:
            status, headers, body = await http_request(server.port, "GET", "/_stcore/health", timeout=5)
            if status == 200 and body.strip() == b"ok":
                return xsrf_cookie(headers)
        except (TimeoutError, OSError, BenchError):
            pass
        await asyncio.sleep(0.25)
    raise BenchError(f"the server did not answer /_stcore/health with 'ok' within {timeout:.0f} s; its log ends:\n"
                     f"{server.log_tail()}")


# --------------------------------------------------------------------------------------------------
# HTTP: a few requests per upload, so a minimal asyncio client (no threads, no extra dependency)


async def http_request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
                       body: bytes = b"", timeout: float = 30) -> tuple[int, list[tuple[str, str]], bytes]:
    async def exchange():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
                    f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            return await reader.read()  # Connection: close, so the response ends at EOF
        finally:
            writer.close()

    raw = await asyncio.wait_for(exchange(), timeout)
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise BenchError(f"{method} {path}: not an HTTP response ({lines[0][:80]!r})") from None
    response_headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    if ("transfer-encoding", "chunked") in response_headers:
        payload = dechunk(payload)
    return status, response_headers, payload


def dechunk(payload: bytes) -> bytes:
    out, position = bytearray(), 0
    while True:
        end = payload.index(b"\r\n", position)
        size = int(payload[position:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += payload[end + 2:end + 2 + size]
        position = end + 2 + size + 2


def xsrf_cookie(headers: list[tuple[str, str]]) -> str:
    for name, value in headers:
        if name == "set-cookie" and value.startswith("_streamlit_xsrf="):
            return value.split(";", 1)[0].split("=", 1)[1].strip('"')
    return ""


def multipart(filename: str, content_type: str, data: bytes) -> tuple[str, bytes]:
    """The PUT body the frontend sends: one form field named after the file (FormData.append(name, file, name))."""
    boundary = f"----loadsessions{uuid.uuid4().hex}"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{filename}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


# --------------------------------------------------------------------------------------------------
# Scans


@dataclass
class Scan:
    name: str
    data: bytes
    content_type: str
    source: str


def dataset_scans(folder: Path, per_class: int = 2) -> list[Scan]:
    scans = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:per_class]
        for path in files:
            kind = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
            scans.append(Scan(path.name, path.read_bytes(), kind, f"{class_dir.name}/{path.name}"))
    return scans


def synthetic_scans(count: int = 8) -> list[Scan]:
    """224 x 224 grayscale PNGs made in memory: a dark head-like ellipse with a bright blob placed around it."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:224, 0:224].astype(np.float64)
    scans = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        pixels = rng.normal(12, 4, (224, 224))
        inside = ((xx - 112) / 92) ** 2 + ((yy - 112) / 104) ** 2 <= 1
        pixels[inside] = rng.normal(70, 10, int(inside.sum()))
        angle = 2 * np.pi * seed / count
        cx, cy, radius = 112 + 50 * np.cos(angle), 112 + 55 * np.sin(angle), 10 + 2 * (seed % 4)
        pixels += 150 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius ** 2))
        png = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L").save(png, "PNG")
        scans.append(Scan(f"synthetic_{seed}.png", png.getvalue(), "image/png", f"synthetic seed {seed}"))
    return scans


def unique_bytes(data: bytes, tag: str) -> bytes:
    """The same image with a metadata chunk holding ``tag`` (PNG tEXt after IHDR, JPEG COM after the APPn
    segments): different bytes, so the page's st.cache_data cannot answer from an earlier upload, same pixels,
    so the prediction and the heatmap are those of the original."""
    text = tag.encode("ascii")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        chunk = b"tEXt" + b"Comment\x00" + text
        insert_at = 8 + 8 + struct.unpack(">I", data[8:12])[0] + 4  # signature, IHDR length/type, data, CRC
        return data[:insert_at] + struct.pack(">I", len(chunk) - 4) + chunk + \
            struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF) + data[insert_at:]
    if data.startswith(b"\xff\xd8"):
        position = 2
        while data[position] == 0xFF and 0xE0 <= data[position + 1] <= 0xEF:  # JFIF/EXIF segments stay first
            position += 2 + struct.unpack(">H", data[position + 2:position + 4])[0]
        return data[:position] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + data[position:]
    raise BenchError("only PNG and JPEG scans can be given unique bytes; use --reuse-bytes")


# --------------------------------------------------------------------------------------------------
# A browser-less session


@dataclass
class Run:
    """One script run as the session saw it: its deltas' elements, and how it ended."""
    elements: list = field(default_factory=list)
    status: int | None = None
    finished_at: float = 0.0
    compile_error: str = ""

    @property
    def fragment(self) -> bool:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        return self.status == ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY


@dataclass
class Outcome:
    """What one measured upload produced."""
    scan: str
    latency: float | None = None
    upload: float | None = None
    end_to_end: float | None = None
    heading: str | None = None
    heatmap_sha256: str | None = None
    page_open: float | None = None   # connect + the first run (the page without a file), not part of latency
    error: str | None = None
    mismatch: bool = False
    started: float = 0.0     # perf_counter at the upload's start and its result, to check overlaps
    ended: float = 0.0


# The protocol as the Streamlit 1.67 frontend speaks it (streamlit/web/server/starlette/, runtime/app_session.py,
# proto/*.pyi), and what the bench relies on:
# * GET /_stcore/health sets the _streamlit_xsrf cookie (XSRF protection is on by default). The websocket offers
#   the subprotocols ["streamlit", <that token>]; every upload PUT carries the cookie and X-Xsrftoken: <token>.
# * Nothing runs until the client sends BackMsg.rerun_script (a ClientState). The first one names the page by
#   page_name = its url_path ("predict") with no page_script_hash; later ones send the hash that the navigation
#   ForwardMsg reported. Every run starts with a new_session ForwardMsg (initialize.session_id: the id uploads
#   are filed under) and ends with script_finished; the elements arrive between as delta.new_element.
# * Upload: BackMsg.file_urls_request (request_id, file_names) -> ForwardMsg.file_urls_response (file_id,
#   upload_url "/_stcore/upload_file/<session>/<file>") -> PUT multipart/form-data with one file field ->
#   rerun_script whose widget_states hold file_uploader_state_value.uploaded_file_info [{file_id, name, size,
#   file_urls}] under the uploader's widget id ("$$ID-<hash>-predict.uploads": ids end in the user key).
# * A selectbox's value travels as string_value = the option's label as shown (format_func), a button press as
#   trigger_value = true (sent once). An st.fragment(run_every=...) sends auto_rerun; the client then reruns
#   that fragment_id with is_auto_rerun every interval, as the session below does.


class Session:
    """One browser tab's worth of protocol: a websocket for BackMsg/ForwardMsg, plain HTTP for uploads and media."""

    def __init__(self, port: int, xsrf: str, timeout: float):
        self.port, self.xsrf, self.timeout = port, xsrf, timeout
        self.session_id = ""
        self.page_hash = ""
        self._ws = None
        self._reader: asyncio.Task | None = None
        self._current = Run()
        self._finished: asyncio.Queue = asyncio.Queue()
        self._url_requests: dict[str, asyncio.Future] = {}
        self._widgets: list = []  # the widget states of the last rerun, which a browser keeps sending
        self._auto_reruns: dict[str, tuple[float, asyncio.Task]] = {}  # fragment id -> (interval, timer)

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        # As the frontend: subprotocols ["streamlit", <XSRF token>]; the server selects the first and reads the
        # second. No pings from our side (a browser sends none; the server pings and the client library answers),
        # no message size limit (a run's deltas can be large).
        self._ws = await connect(f"ws://127.0.0.1:{self.port}/_stcore/stream",
                                 subprotocols=["streamlit", self.xsrf or "PLACEHOLDER_AUTH_TOKEN"],
                                 max_size=None, ping_interval=None, open_timeout=self.timeout, proxy=None)
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        for _, timer in self._auto_reruns.values():
            timer.cancel()
        if self._ws is not None:
            try:
                await self._ws.close()
            except Exception:  # already broken: nothing left to close politely
                pass
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass

    async def _read(self) -> None:
        """Drain the websocket all the time (a full receive queue would stop the library answering the server's
        pings) and sort the ForwardMsgs into runs."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        try:
            async for raw in self._ws:
                msg = ForwardMsg()
                msg.ParseFromString(raw)
                self._dispatch(msg, time.perf_counter())
            reason = f"the server closed the websocket ({self._ws.close_code})"
        except Exception as error:  # the connection failing is an outcome to report, not a crash
            reason = f"websocket failed: {type(error).__name__}: {error}"
        self._finished.put_nowait(BenchError(reason))
        for waiting in self._url_requests.values():
            if not waiting.done():
                waiting.set_exception(BenchError(reason))

    def _dispatch(self, msg, now: float) -> None:
        kind = msg.WhichOneof("type")
        if kind == "new_session":  # every run starts with one
            self._current = Run()
            self.session_id = msg.new_session.initialize.session_id or self.session_id
            self.page_hash = msg.new_session.page_script_hash or self.page_hash
        elif kind == "navigation":  # st.navigation names the page it is running
            self.page_hash = msg.navigation.page_script_hash or self.page_hash
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            self._current.elements.append(msg.delta.new_element)
        elif kind == "session_event" and msg.session_event.WhichOneof("type") == "script_compilation_exception":
            failure = msg.session_event.script_compilation_exception
            self._current.compile_error = f"{failure.type}: {failure.message}"
        elif kind == "script_finished":
            run, self._current = self._current, Run()
            run.status, run.finished_at = msg.script_finished, now
            self._finished.put_nowait(run)
        elif kind == "file_urls_response":
            waiting = self._url_requests.pop(msg.file_urls_response.response_id, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(msg.file_urls_response)
        elif kind == "auto_rerun" and msg.auto_rerun.fragment_id:  # st.fragment(run_every=...)
            self._start_auto_rerun(msg.auto_rerun.fragment_id, msg.auto_rerun.interval)
        elif kind == "stop_auto_rerun":
            for fragment_id in msg.stop_auto_rerun.fragment_ids:
                _, timer = self._auto_reruns.pop(fragment_id, (0, None))
                if timer is not None:
                    timer.cancel()

    def _start_auto_rerun(self, fragment_id: str, interval: float) -> None:
        """What the frontend does for an auto_rerun message: every ``interval`` seconds, a rerun of that fragment
        with the current widget states and is_auto_rerun set (a page that polls a background job relies on it)."""
        if fragment_id in self._auto_reruns:
            if self._auto_reruns[fragment_id][0] == interval:
                return
            self._auto_reruns.pop(fragment_id)[1].cancel()

        async def tick():
            try:
                while True:
                    await asyncio.sleep(interval)
                    await self.rerun(self._widgets, fragment_id=fragment_id)
            except Exception:  # the connection is gone: the reader reports that
                pass

        self._auto_reruns[fragment_id] = (interval, asyncio.create_task(tick()))

    @property
    def widgets(self) -> list:
        return list(self._widgets)

    @property
    def auto_rerunning(self) -> bool:
        return bool(self._auto_reruns)

    def client_state(self, widgets: list | None = None):
        from streamlit.proto.ClientState_pb2 import ClientState

        state = ClientState(query_string="", page_script_hash=self.page_hash, page_name=PAGE_NAME)
        state.context_info.timezone = "UTC"
        state.context_info.locale = "en-GB"
        state.context_info.url = f"http://127.0.0.1:{self.port}/{PAGE_NAME}"
        state.widget_states.widgets.extend(widgets or [])
        return state

    async def rerun(self, widgets: list | None = None, fragment_id: str = "") -> float:
        """Send a rerun_script BackMsg; returns when it was sent (perf_counter). Like the frontend, later reruns
        repeat these widget states, less the button presses (a trigger is sent once)."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        message = BackMsg()
        message.rerun_script.CopyFrom(self.client_state(widgets))
        if fragment_id:
            message.rerun_script.fragment_id = fragment_id
            message.rerun_script.is_auto_rerun = True
        await self._ws.send(message.SerializeToString())
        self._widgets = [w for w in widgets or [] if w.WhichOneof("value") != "trigger_value"]
        return time.perf_counter()

    async def finished_run(self, timeout: float | None = None, fragments: bool = False) -> Run:
        """The next run that ends for good. Runs cut short by a rerun (st.rerun, a newer request) are skipped, and
        so are fragment runs (auto-reruns of an st.fragment) unless ``fragments``."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                run = await asyncio.wait_for(self._finished.get(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BenchError(f"no script_finished within {timeout or self.timeout:.0f} s") from None
            if isinstance(run, Exception):
                raise run
            if run.status != ForwardMsg.FINISHED_EARLY_FOR_RERUN and (fragments or not run.fragment):
                return run

    async def open_page(self) -> Run:
        """Load the Predict page as a browser does on first visit: page by name, no widget state."""
        await self.connect()
        await self.rerun()
        run = await self.finished_run()
        if not self.session_id:
            raise BenchError("the server sent no session id (new_session.initialize.session_id)")
        return run

    async def upload(self, name: str, data: bytes, content_type: str):
        """file_urls_request -> file_urls_response -> HTTP PUT; returns (UploadedFileInfo, PUT seconds)."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.Common_pb2 import UploadedFileInfo

        request_id = uuid.uuid4().hex
        answer = asyncio.get_running_loop().create_future()
        self._url_requests[request_id] = answer
        message = BackMsg()
        message.file_urls_request.request_id = request_id
        message.file_urls_request.session_id = self.session_id
        message.file_urls_request.file_names.append(name)
        await self._ws.send(message.SerializeToString())
        try:
            response = await asyncio.wait_for(answer, self.timeout)
        except TimeoutError:
            raise BenchError("no file_urls_response") from None
        if response.error_msg or not response.file_urls:
            raise BenchError(f"no upload URL: {response.error_msg or 'empty file_urls_response'}")
        urls = response.file_urls[0]
        form_type, body = multipart(name, content_type, data)
        headers = {"Content-Type": form_type}
        if self.xsrf:  # as the frontend's csrfRequest: the cookie, and the same token in a header
            headers.update({"Cookie": f"_streamlit_xsrf={self.xsrf}", "X-Xsrftoken": self.xsrf})
        started = time.perf_counter()
        status, _, reply = await http_request(self.port, "PUT", urls.upload_url, headers, body, self.timeout)
        put_seconds = time.perf_counter() - started
        if status not in (200, 204):
            raise BenchError(f"upload PUT answered {status}: {reply[:200].decode(errors='replace')}")
        info = UploadedFileInfo(name=name, size=len(data), file_id=urls.file_id)
        info.file_urls.CopyFrom(urls)
        return info, put_seconds

    async def media_sha256(self, url: str) -> str:
        path = url if url.startswith("/") else "/" + url.split("://", 1)[-1].split("/", 1)[-1]
        status, _, body = await http_request(self.port, "GET", path, timeout=self.timeout)
        if status != 200:
            raise BenchError(f"GET {path} answered {status}")
        return hashlib.sha256(body).hexdigest()


# --------------------------------------------------------------------------------------------------
# Reading the page's elements


def widget(run: Run, kind: str, user_key: str):
    """The element of ``kind`` (a proto field of Element, e.g. "file_uploader") whose widget id ends in the key."""
    for element in run.elements:
        if element.WhichOneof("type") == kind and getattr(element, kind).id.endswith("-" + user_key):
            return getattr(element, kind)
    return None


def run_errors(run: Run) -> list[str]:
    """Exceptions and error boxes the run showed, one line each."""
    from streamlit.proto.Alert_pb2 import Alert

    found = [f"script failed to compile: {run.compile_error}"] if run.compile_error else []
    for element in run.elements:
        kind = element.WhichOneof("type")
        if kind == "exception":
            found.append(f"exception on the page: {element.exception.type}: {element.exception.message}")
        elif kind == "alert" and element.alert.format == Alert.ERROR:
            found.append(f"error on the page: {element.alert.body}")
    return [line.replace("\n", " ")[:300] for line in found]


def prediction_heading(run: Run) -> str | None:
    for element in run.elements:
        kind = element.WhichOneof("type")
        if kind in ("heading", "markdown"):
            match = HEADING.search(getattr(element, kind).body)
            if match:
                return match.group(0)
    return None


def heatmap_url(run: Run, caption_prefix: str) -> str | None:
    for element in run.elements:
        if element.WhichOneof("type") == "imgs":
            for image in element.imgs.imgs:
                if image.caption.startswith(caption_prefix):
                    return image.url
    return None


def button_starting(run: Run, label_prefix: str):
    for element in run.elements:
        if element.WhichOneof("type") == "button" and element.button.label.startswith(label_prefix):
            return element.button
    return None


def uploader_state(uploader_id: str, info):
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    state = WidgetState(id=uploader_id)
    state.file_uploader_state_value.uploaded_file_info.append(info)
    return state


# --------------------------------------------------------------------------------------------------
# One upload, measured


@dataclass
class Target:
    """Where and how patiently the sessions talk to the server."""
    port: int
    xsrf: str
    timeout: float

    def session(self) -> Session:
        return Session(self.port, self.xsrf, self.timeout)


async def open_session(target: Target) -> tuple[Session, str, float]:
    """A session on the Predict page, its file uploader's widget id, and the seconds the page took to open."""
    session = target.session()
    started = time.perf_counter()
    try:
        run = await session.open_page()
        problems = run_errors(run)
        if problems:
            raise BenchError(f"the Predict page failed on first load: {problems[0]}")
        uploader = widget(run, "file_uploader", UPLOADER_KEY)
        if uploader is None:
            raise BenchError(f"no file uploader with the key {UPLOADER_KEY!r} on the Predict page (the page changed?)")
        return session, uploader.id, run.finished_at - started
    except BaseException:
        await session.close()
        raise


async def upload_and_measure(session: Session, uploader_id: str, page_open: float, scan: Scan, data: bytes,
                             barrier: asyncio.Barrier | None = None, delay: float = 0.0) -> Outcome:
    outcome = Outcome(scan=scan.name, page_open=page_open)
    try:
        if barrier is not None:
            await barrier.wait()
        if delay:
            await asyncio.sleep(delay)
        outcome.started = time.perf_counter()
        info, outcome.upload = await session.upload(scan.name, data, scan.content_type)
        sent = await session.rerun([uploader_state(uploader_id, info)])
        run = await session.finished_run()
        outcome.latency = run.finished_at - sent
        problems = run_errors(run)
        outcome.heading = prediction_heading(run)
        url = heatmap_url(run, HEATMAP_CAPTION)
        if problems:
            outcome.error = problems[0]
        elif outcome.heading is None:
            outcome.error = "no prediction heading ('<class> — NN.N%') in the run"
        elif url is None:
            outcome.error = f"no image captioned '{HEATMAP_CAPTION}…' in the run"
        else:
            outcome.heatmap_sha256 = await session.media_sha256(url)
        outcome.ended = time.perf_counter()
        outcome.end_to_end = outcome.ended - outcome.started
    except EXPECTED_FAILURES as error:
        outcome.error = str(error) or type(error).__name__
        outcome.ended = time.perf_counter()
    return outcome


class Uploads:
    """The bytes to upload: unique per upload (see unique_bytes) unless --reuse-bytes."""

    def __init__(self, reuse: bool):
        self.reuse, self.count = reuse, 0

    def __call__(self, scan: Scan) -> bytes:
        self.count += 1
        if self.reuse:
            return scan.data
        return unique_bytes(scan.data, f"load_sessions upload {self.count} {time.time_ns()}")


async def single_upload(target: Target, scan: Scan, data: bytes) -> Outcome:
    """A fresh session opens the page, uploads one scan and closes: one user on their own."""
    try:
        session, uploader_id, page_open = await open_session(target)
    except EXPECTED_FAILURES as error:
        return Outcome(scan=scan.name, error=str(error) or type(error).__name__)
    try:
        return await upload_and_measure(session, uploader_id, page_open, scan, data)
    finally:
        await session.close()


async def concurrent_round(target: Target, scans: list[Scan], sessions: int, uploads: Uploads,
                           window: float = 0.0, seed: int = 0) -> list[Outcome]:
    """``sessions`` sessions open the page, then upload, session i the scan i: all at the same moment, or each at
    a random moment within ``window`` seconds (--spread: people uploading at about the same time)."""
    chosen = [scans[i % len(scans)] for i in range(sessions)]
    opened = await asyncio.gather(*(open_session(target) for _ in chosen), return_exceptions=True)
    outcomes: list[Outcome | None] = [None] * sessions
    ready = []
    for i, result in enumerate(opened):
        if isinstance(result, BaseException):
            outcomes[i] = Outcome(scan=chosen[i].name, error=str(result) or type(result).__name__)
        else:
            ready.append(i)
    # The barrier holds every opened session until all are ready, so the uploads start within a millisecond.
    barrier = asyncio.Barrier(len(ready)) if ready else None
    delays = random.Random(seed).uniform if window else None
    measured = await asyncio.gather(*(upload_and_measure(*opened[i], chosen[i], uploads(chosen[i]), barrier,
                                                         delays(0.0, window) if delays else 0.0)
                                      for i in ready))
    for i, outcome in zip(ready, measured):
        outcomes[i] = outcome
    await asyncio.gather(*(opened[i][0].close() for i in ready))
    return outcomes


# --------------------------------------------------------------------------------------------------
# The slow session: Score-CAM while the others use Grad-CAM


@dataclass
class SlowOutcome:
    skipped: str | None = None
    error: str | None = None
    seconds: float | None = None      # from pressing "Compute" to the run that shows the slow heatmap
    polls: int = 0                    # reruns the bench asked for while waiting (a page with no auto-rerun)
    started: float = 0.0
    ended: float = 0.0
    heading: str | None = None


def option_for(options, method_key: str) -> str | None:
    """The selectbox label of a method key: the page shows labels ("Score-CAM") for keys ("scorecam")."""
    wanted = re.sub(r"[^a-z0-9+]", "", method_key.lower())
    for option in options:
        if re.sub(r"[^a-z0-9+]", "", option.lower()) == wanted:
            return option
    return None


async def press_compute(session: Session, scan: Scan, data: bytes) -> tuple[str | None, float]:
    """Choose Score-CAM, upload, press the page's "Compute …" button. Returns (why it cannot be done, or None;
    when the button was pressed)."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    first = await session.open_page()
    uploader, method = widget(first, "file_uploader", UPLOADER_KEY), widget(first, "selectbox", METHOD_KEY)
    if uploader is None:
        return f"no file uploader {UPLOADER_KEY!r} on the Predict page", 0.0
    label = option_for(method.options, SLOW_METHOD) if method is not None else None
    if label is None:
        return f"the Predict page has no selectbox {METHOD_KEY!r} offering {SLOW_METHOD!r}", 0.0
    # Streamlit 1.67 sends a selectbox's value as string_value = the option's label (before 1.4x it was int_value,
    # the index); the server maps the label back to the option ("scorecam").
    choice = WidgetState(id=method.id, string_value=label)
    info, _ = await session.upload(scan.name, data, scan.content_type)
    files = uploader_state(uploader.id, info)
    await session.rerun([files, choice])
    shown = await session.finished_run()
    button = button_starting(shown, COMPUTE_LABEL)
    if button is None:
        if heatmap_url(shown, SLOW_CAPTION) is not None:
            return f"the page computed {label} without a button press: nothing left to overlap with", 0.0
        return (f"after choosing {label} the page shows neither a '{COMPUTE_LABEL}…' button nor a '{SLOW_CAPTION}' "
                "heatmap"), 0.0
    return None, await session.rerun([files, choice, WidgetState(id=button.id, trigger_value=True)])


async def wait_for_slow_result(session: Session, outcome: SlowOutcome, slow_timeout: float) -> SlowOutcome:
    """Until a run shows the slow heatmap. A page may show it in the run the button starts, or compute in the
    background and show it in a later run: an st.fragment auto-rerun (the session does those as a browser does),
    or, when the page has none, a rerun the bench asks for every POLL_SECONDS, as a user would."""
    deadline = time.monotonic() + slow_timeout
    try:
        while True:
            run = await session.finished_run(timeout=max(1.0, deadline - time.monotonic()), fragments=True)
            outcome.heading = prediction_heading(run) or outcome.heading
            problems = run_errors(run)
            if problems:
                outcome.error = problems[0]
                break
            if heatmap_url(run, SLOW_CAPTION) is not None:
                outcome.seconds = run.finished_at - outcome.started
                break
            if not run.fragment and button_starting(run, COMPUTE_LABEL) is not None:
                outcome.error = f"the page still asks for '{COMPUTE_LABEL}…' after the button was pressed"
                break
            if not session.auto_rerunning:
                await asyncio.sleep(POLL_SECONDS)
                await session.rerun(session.widgets)
                outcome.polls += 1
    except EXPECTED_FAILURES as error:
        outcome.error = f"{error} (after pressing '{COMPUTE_LABEL}')"
    outcome.ended = time.perf_counter()
    return outcome


async def start_slow_session(target: Target, slow_timeout: float, scan: Scan, data: bytes):
    """(session, a task that ends with the slow result, SlowOutcome), or (None, None, SlowOutcome saying why it
    was skipped)."""
    outcome, session = SlowOutcome(), target.session()
    try:
        outcome.skipped, outcome.started = await press_compute(session, scan, data)
    except EXPECTED_FAILURES as error:
        outcome.skipped = f"could not start it: {error}"
    if outcome.skipped:
        await session.close()
        return None, None, outcome
    return session, asyncio.create_task(wait_for_slow_result(session, outcome, slow_timeout)), outcome


# --------------------------------------------------------------------------------------------------
# Figures


def percentile(values: list[float], percent: int) -> float:
    """Nearest-rank percentile: a value that was measured, never an interpolation between two."""
    ordered = sorted(values)
    rank = -(-percent * len(ordered) // 100)  # ceil(percent / 100 * n), in integers
    return ordered[max(rank, 1) - 1]


def spread(values: list[float]) -> dict:
    if not values:
        return {}
    return {"n": len(values), "p50": statistics.median(values), "p95": percentile(values, 95), "max": max(values)}


def latencies(outcomes: list[Outcome]) -> list[float]:
    return [o.latency for o in outcomes if o.error is None]


def line(label: str, values: list[float]) -> str:
    s = spread(values)
    if not s:
        return f"  {label:<42} no successful uploads"
    return f"  {label:<42} p50 {s['p50']:7.3f} s   p95 {s['p95']:7.3f} s   max {s['max']:7.3f} s   (n={s['n']})"


def print_block(title: str, outcomes: list[Outcome]) -> None:
    good = [o for o in outcomes if o.error is None]
    print(title)
    print(line("latency (rerun sent -> script_finished)", [o.latency for o in good]))
    print(line("upload (HTTP PUT)", [o.upload for o in good]))
    print(line("end to end (URL request -> overlay got)", [o.end_to_end for o in good]))
    print(line("page open (connect + first run)", [o.page_open for o in good if o.page_open is not None]))
    errors = [o for o in outcomes if o.error]
    for o in errors[:5]:
        print(f"    error ({o.scan}): {o.error}")
    if len(errors) > 5:
        print(f"    … and {len(errors) - 5} more")


def check_against(reference: dict[str, tuple[str, str]], outcomes: list[Outcome]) -> int:
    """Mark and count the results that differ from the single-user result of the same scan."""
    mismatches = 0
    for o in outcomes:
        if o.error is None and reference.get(o.scan) != (o.heading, o.heatmap_sha256):
            o.mismatch, mismatches = True, mismatches + 1
    return mismatches


# --------------------------------------------------------------------------------------------------
# The phases


async def warm_up(target: Target, scans: list[Scan], uploads: Uploads, passes: int) -> None:
    """The first upload loads the model (st.cache_resource) and oneDNN picks its kernels: not measured. A page
    that fails here stops the bench, since every measured upload would fail the same way."""
    for number in range(passes):
        started = time.perf_counter()
        for scan in scans:
            outcome = await single_upload(target, scan, uploads(scan))
            if outcome.error:
                raise BenchError(f"warm-up upload of {scan.name} failed: {outcome.error}")
        print(f"warm-up pass {number + 1}: {len(scans)} uploads one at a time in {time.perf_counter() - started:.1f} s "
              "(not measured)")


async def single_user_phase(target: Target, scans: list[Scan], uploads: Uploads, rounds: int, meter: CpuMeter):
    """(outcomes, reference result per scan, how many repeats disagreed with their scan's first result)."""
    mark = meter.mark()
    single = [await single_upload(target, scan, uploads(scan)) for _ in range(rounds) for scan in scans]
    usage = meter.since(mark)
    reference: dict[str, tuple[str, str]] = {}
    for o in single:
        if o.error is None:
            reference.setdefault(o.scan, (o.heading, o.heatmap_sha256))
    disagreements = check_against(reference, single)
    print_block(f"single user ({len(single)} uploads: {len(scans)} scans x {rounds} rounds, one session at a time):",
                single)
    print_cpu(usage, len(single))
    if disagreements:
        print(f"  !! {disagreements} single-user results differ from the first one of the same scan")
    for scan in scans:
        heading, digest = reference.get(scan.name, ("(no result)", ""))
        print(f"    {scan.source:<40} {heading:<28} overlay sha256 {digest[:16]}")
    return single, reference, disagreements, usage


async def concurrent_phase(target: Target, scans: list[Scan], uploads: Uploads, rounds: int, sessions: int,
                           meter: CpuMeter, during: asyncio.Task | None = None,
                           window: float = 0.0) -> tuple[list[Outcome], dict]:
    mark = meter.mark()
    outcomes: list[Outcome] = []
    for number in range(rounds):
        started = time.perf_counter()
        this_round = await concurrent_round(target, scans, sessions, uploads, window, seed=number)
        outcomes += this_round
        worst = max(latencies(this_round), default=float("nan"))
        slow = "" if during is None else f"; Score-CAM {'finished' if during.done() else 'still running'}"
        print(f"  round {number + 1}: {sessions} sessions, slowest latency {worst:.2f} s, round "
              f"{time.perf_counter() - started:.1f} s{slow}")
    return outcomes, meter.since(mark)


async def slow_phase(args, target: Target, scans: list[Scan], uploads: Uploads, reference: dict,
                     without: dict, meter: CpuMeter) -> dict:
    """The concurrent rounds again while one more session waits for Score-CAM."""
    session, task, slow = await start_slow_session(target, args.slow_timeout, scans[0], uploads(scans[0]))
    if session is None:
        print(f"slow session: skipped: {slow.skipped}")
        return {**asdict(slow), "errors": 0, "mismatches": 0}
    print(f"slow session: pressed '{COMPUTE_LABEL} {SLOW_CAPTION}' on the page; meanwhile {args.rounds} concurrent "
          f"round(s) of {args.sessions} Grad-CAM sessions:")
    try:
        with_slow, usage = await concurrent_phase(target, scans, uploads, args.rounds, args.sessions, meter, task,
                                                  args.spread)
        if not task.done():
            print(f"  waiting for the slow session's {SLOW_CAPTION} (--slow-timeout {args.slow_timeout:.0f} s)…")
        slow = await task
    finally:
        task.cancel()
        await session.close()
    overlapped = [o for o in with_slow if o.error is None and o.ended <= slow.ended]
    mismatches = check_against(reference, with_slow)
    print_block(f"concurrent with the slow session ({len(with_slow)} Grad-CAM uploads, {len(overlapped)} of them "
                f"done before {SLOW_CAPTION} was):", with_slow)
    print_cpu(usage, 0)  # the server's time includes Score-CAM's: no per-upload figure
    print(line(f"latency, only those done before {SLOW_CAPTION}", latencies(overlapped)))
    with_spread = spread(latencies(with_slow))
    if without and with_spread:
        print(f"  Grad-CAM latency without the slow session -> with it: p50 {without['p50']:.3f} s -> "
              f"{with_spread['p50']:.3f} s, p95 {without['p95']:.3f} s -> {with_spread['p95']:.3f} s "
              f"({with_spread['p95'] / without['p95']:.2f} x)")
    state = f"error: {slow.error}" if slow.error else slow.heading or "no heading"
    polled = f"; the bench asked for {slow.polls} reruns meanwhile (the page has no auto-rerun)" if slow.polls else ""
    if slow.seconds is not None:
        print(f"  the slow session: '{COMPUTE_LABEL}' pressed -> a run showing the {SLOW_CAPTION} heatmap in "
              f"{slow.seconds:.1f} s ({state}{polled})")
    else:
        print(f"  the slow session: {state}{polled}")
    print(f"  mismatches with the slow session running: {mismatches}")
    return {**asdict(slow), "with_slow": [asdict(o) for o in with_slow], "cpu": usage,
            "latency_with_slow": with_spread, "mismatches": mismatches,
            "errors": sum(o.error is not None for o in with_slow) + (slow.error is not None)}


async def bench(args, server: Server, scans: list[Scan], notes: dict) -> int:
    xsrf = await wait_until_healthy(server, args.start_timeout)
    notes["server_ready_s"] = round(time.perf_counter() - notes.pop("_started"), 2)
    print(f"server: http://127.0.0.1:{server.port} (pid {server.process.pid}) answered 'ok' after "
          f"{notes['server_ready_s']:.1f} s; XSRF protection {'on' if xsrf else 'off'}"
          + "".join(f"; --{option}" for option in args.streamlit_option))
    target, uploads = Target(server.port, xsrf, args.timeout), Uploads(args.reuse_bytes)
    meter = CpuMeter(server.process.pid)

    await warm_up(target, scans, uploads, args.warmup)
    single, reference, disagreements, single_cpu = await single_user_phase(target, scans, uploads, args.rounds, meter)
    when = f"each at a random moment within {args.spread:g} s" if args.spread else "at the same moment"
    print(f"concurrent ({args.sessions} sessions upload {when}, {args.rounds} rounds):")
    concurrent, concurrent_cpu = await concurrent_phase(target, scans, uploads, args.rounds, args.sessions, meter,
                                                        window=args.spread)
    mismatches = check_against(reference, concurrent)
    print_block(f"concurrent ({len(concurrent)} uploads):", concurrent)
    print_cpu(concurrent_cpu, len(concurrent))

    single_spread, concurrent_spread = spread(latencies(single)), spread(latencies(concurrent))
    if single_spread and concurrent_spread:
        print(f"ratio concurrent p95 / single-user p95: {concurrent_spread['p95'] / single_spread['p95']:.2f} x; "
              f"concurrent p95 / single-user p50: {concurrent_spread['p95'] / single_spread['p50']:.2f} x")
        print_floor(concurrent_cpu, len(concurrent), args.sessions, single_spread)
    errors = sum(o.error is not None for o in single + concurrent)
    print(f"mismatches (heading or overlay sha256 differ from the single-user result of the scan): "
          f"{mismatches + disagreements} of {len(single) + len(concurrent)} "
          f"(concurrent {mismatches}, single-user repeats {disagreements})")
    print(f"errors (exception or error box, missing heading or overlay, timeout, connection): {errors}")
    results = {"settings": vars(args), **notes, "scans": [s.source for s in scans],
               "single": [asdict(o) for o in single], "concurrent": [asdict(o) for o in concurrent],
               "reference": {k: {"heading": h, "heatmap_sha256": d} for k, (h, d) in reference.items()},
               "summary": {"single_latency": single_spread, "concurrent_latency": concurrent_spread,
                           "mismatches": mismatches + disagreements, "errors": errors,
                           "cpu": {"single": single_cpu, "concurrent": concurrent_cpu}}}

    if args.slow_session:
        results["slow_session"] = await slow_phase(args, target, scans, uploads, reference, concurrent_spread, meter)
        results["summary"]["mismatches"] += results["slow_session"]["mismatches"]
        results["summary"]["errors"] += results["slow_session"]["errors"]

    results["client_cpu_s"] = time.process_time()
    print(f"client CPU time, whole bench: {time.process_time():.1f} s (one asyncio process)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        print(f"raw numbers: {args.json}")
    return 0 if results["summary"]["mismatches"] == 0 and results["summary"]["errors"] == 0 else 1


def lower_client_priority(client_cores: set[int] | None) -> None:
    """After the server has started (it must not inherit this): nice +5, and the client's own core if any."""
    done = []
    try:
        os.nice(5)
        done.append("nice +5")
    except OSError as error:
        done.append(f"nice failed ({error})")
    if client_cores:
        os.sched_setaffinity(0, client_cores)
        done.append(f"pinned to core {sorted(client_cores)}, the server to the others")
    else:
        done.append(f"no core pinning ({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} "
                    "cores: the client shares them with the server)")
    print("client: " + "; ".join(done))


def interrupted(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8, help="sessions uploading at the same moment")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds, single-user and concurrent")
    parser.add_argument("--spread", type=float, default=0.0,
                        help="concurrent uploads start at random moments within this many seconds (seeded) instead "
                             "of all at once: people uploading at about the same time")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured passes over the scans first")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for any one run or request")
    parser.add_argument("--start-timeout", type=float, default=120, help="seconds for the server to become healthy")
    parser.add_argument("--slow-session", action="store_true",
                        help="also run the concurrent rounds while one more session computes Score-CAM")
    parser.add_argument("--slow-timeout", type=float, default=3600,
                        help="seconds to wait for the slow session's Score-CAM result")
    parser.add_argument("--reuse-bytes", action="store_true",
                        help="upload each scan's bytes unchanged (repeated uploads then hit the page's cache)")
    parser.add_argument("--streamlit-option", action="append", default=[], metavar="NAME=VALUE",
                        help="a config option for the server, e.g. server.fileWatcherType=none (repeatable)")
    parser.add_argument("--json", metavar="PATH", help="write the raw numbers here")
    args = parser.parse_args()
    if args.sessions < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--sessions and --rounds must be at least 1, --warmup at least 0")
    if any("=" not in option for option in args.streamlit_option):
        parser.error("--streamlit-option takes NAME=VALUE, e.g. server.fileWatcherType=none")

    cpu = cpu_summary()
    print(f"CPU: {cpu['model']}; AMX (amx_tile): {'yes' if cpu['amx'] else 'no'}; {cpu['cores_usable']} cores usable "
          f"({cpu['cores_online']} online)")
    if DATASET_TESTING.is_dir():
        scans = dataset_scans(DATASET_TESTING)
        print(f"scans: {len(scans)} from {DATASET_TESTING} (2 per class, first by name)")
    else:
        scans = synthetic_scans()
        print(f"scans: {len(scans)} synthetic 224 x 224 slices made in memory ({DATASET_TESTING} is absent)")
    if not scans:
        print(f"error: no PNG or JPEG scans in {DATASET_TESTING}")
        return 1
    print("uploads: " + ("each scan's bytes as they are (repeats are served from the page's cache)"
                         if args.reuse_bytes else "each with unique bytes, same pixels (every upload is computed)"))

    server_cores, client_cores = split_cores()
    port = free_port()
    notes = {"cpu": cpu, "port": port, "_started": time.perf_counter()}
    signal.signal(signal.SIGTERM, interrupted)  # like Ctrl-C, so the server is stopped either way
    server = start_server(port, server_cores, args.streamlit_option)
    try:
        lower_client_priority(client_cores)
        return asyncio.run(bench(args, server, scans, notes))
    except EXPECTED_FAILURES as error:
        print(f"error: {error or type(error).__name__}")
        return 1
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
