"""The size a compressed DICOM frame declares in its own header, read before anything decodes it.

A decoder allocates what the codestream declares, not what the DICOM header says: a 5 KB file whose header says
128 x 128 pixels can carry a JPEG 2000 codestream that declares 30,000 x 30,000, and it would be decoded whole
(gigabytes) before its size could be compared with the header's. So each frame's own declaration is read here:
the SIZ marker of a JPEG 2000 codestream (also inside a JP2 file's ``jp2c`` box), and the start-of-frame marker of a
JPEG (baseline, extended, lossless) or JPEG-LS stream.
"""

from __future__ import annotations

SOI, SOC, SIZ = b"\xff\xd8", b"\xff\x4f", b"\xff\x51"
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
# JPEG's start-of-frame markers (C0-CF, but C4, C8 and CC are tables and a reserved code) and JPEG-LS's SOF55 (F7).
START_OF_FRAME = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
START_OF_SCAN, END_OF_IMAGE = 0xDA, 0xD9
STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # markers without a length: restarts and TEM
# How far into a frame its declaration is looked for: an encoder may put APP segments (an ICC profile, EXIF) of tens
# of KB before a JPEG's start of frame, in fragments of its own, but not a megabyte.
HEAD_BYTES = 1 << 20


def _number(data: bytes, at: int, size: int) -> int:
    return int.from_bytes(data[at:at + size], "big")


def fragments_declare(fragments) -> tuple[int, int, int] | None:
    """:func:`declared_size` of a frame stored in several fragments (DICOM encapsulation may cut it anywhere, even
    before its start of frame), from their first :data:`HEAD_BYTES` bytes joined."""
    head = bytearray()
    for fragment in fragments:
        head += fragment[:HEAD_BYTES - len(head)]
        if len(head) >= HEAD_BYTES:
            break
    return declared_size(bytes(head))


def declared_size(frame: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) that a compressed frame declares, or None when no declaration can be found at its
    start (then it must not be decoded: nothing bounds what the decoder would allocate)."""
    if frame.startswith(JP2_SIGNATURE):
        frame = _jp2_codestream(frame)
    if frame.startswith(SOC):
        return _siz(frame)
    if frame.startswith(SOI):
        return _start_of_frame(frame)
    return None


def _siz(codestream: bytes) -> tuple[int, int, int] | None:
    """A JPEG 2000 codestream's image size: the SIZ marker comes right after SOC (ISO 15444-1, A.5.1): Lsiz, Rsiz,
    Xsiz, Ysiz, XOsiz, YOsiz, four tile fields, then Csiz."""
    if len(codestream) < 42 or codestream[2:4] != SIZ:
        return None
    width, height = _number(codestream, 8, 4) - _number(codestream, 16, 4), \
        _number(codestream, 12, 4) - _number(codestream, 20, 4)
    return (height, width, _number(codestream, 40, 2)) if width > 0 and height > 0 else None


def _start_of_frame(stream: bytes) -> tuple[int, int, int] | None:
    """A JPEG or JPEG-LS stream's frame size, from the first start-of-frame marker (ISO 10918-1, B.2.2: Lf, P, Y, X,
    Nf). A height or width of 0 (to be given later, by a DNL or LSE marker) counts as no declaration."""
    at = 2
    while at + 4 <= len(stream):
        if stream[at] != 0xFF:
            return None
        marker = stream[at + 1]
        if marker == 0xFF:  # a fill byte before the marker
            at += 1
        elif marker in START_OF_FRAME:
            if at + 10 > len(stream):
                return None
            rows, columns = _number(stream, at + 5, 2), _number(stream, at + 7, 2)
            return (rows, columns, stream[at + 9]) if rows and columns else None
        elif marker in (START_OF_SCAN, END_OF_IMAGE):
            return None  # the image data begins, or ends, before any frame was declared
        elif marker in STANDALONE:
            at += 2
        else:
            length = _number(stream, at + 2, 2)
            if length < 2:
                return None
            at += 2 + length
    return None


def _jp2_codestream(data: bytes) -> bytes:
    """The codestream inside a JP2 file: the contents of its ``jp2c`` box (ISO 15444-1, I.4), or nothing."""
    at = 0
    while at + 8 <= len(data):
        length, kind, header = _number(data, at, 4), data[at + 4:at + 8], 8
        if length == 1:  # the length follows as 8 bytes
            length, header = _number(data, at + 8, 8), 16
        elif length == 0:  # the last box: to the end
            length = len(data) - at
        if kind == b"jp2c":
            return data[at + header:at + length]
        if length < header:
            return b""
        at += length
    return b""
