"""Readers' names: what a name may hold, and when two names are one.

A reader's name stands beside their answers on the organiser's page, the leaderboard and the reports, so nobody may
join under a name that passes for someone else's. A name is normalised (NFKC: full-width letters, ligatures and
odd spaces become their plain forms), refused when it holds a character that shows as nothing (control and format
characters, line breaks, private-use and unassigned code points, and the other default-ignorable ones such as the
Hangul fillers and variation selectors) or no letter or digit at all, and compared by a skeleton in the manner of
Unicode's UTS #39: case folded, and each letter of another script that looks like a Latin one (Cyrillic "а",
Greek "Ο") and each digit that looks like a letter ("0", "1") read as that letter. "Ann", "ANN", "Аnn" (Cyrillic A)
and "Ann" followed by a Hangul filler are then one name, or refused.

The look-alikes are a table of our own, not Unicode's whole confusables list: the letters of the Cyrillic, Greek
and Armenian scripts (and a few Latin ones) that pass for Latin letters in the fonts a browser uses, which is what
an impersonator reaches for; other scripts are compared by NFKC and case alone.
"""

from __future__ import annotations

import hashlib
import unicodedata

from core.review.errors import ReviewError
from core.review.schema import NAME_LENGTH

# Categories that never show as a character of a name: controls, format characters (zero-width space and joiners,
# bidirectional overrides, soft hyphen), surrogates, private use, unassigned, line and paragraph separators.
INVISIBLE_CATEGORIES = {"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"}

# Default-ignorable code points that are not in those categories (Unicode's DerivedCoreProperties), and blanks
# that a font draws as nothing: each shows as nothing, or as a space that is not a space.
INVISIBLE_RANGES = [
    (0x034F, 0x034F),    # combining grapheme joiner
    (0x115F, 0x1160),    # Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),    # Khmer inherent vowels
    (0x180B, 0x180F),    # Mongolian free variation selectors
    (0x2800, 0x2800),    # braille pattern blank
    (0x3164, 0x3164),    # Hangul filler
    (0xFE00, 0xFE0F),    # variation selectors
    (0xFFA0, 0xFFA0),    # half-width Hangul filler
    (0xE0100, 0xE01EF),  # variation selectors supplement
]

# Capitals of other scripts that look like a Latin capital while their small letter looks like no Latin letter
# (Greek "Η" but "η"), read as the Latin capital before case is folded: "ТОМ" in Cyrillic is "TOM". Capitals whose
# small letter is itself a look-alike ("А" and "а") need no entry: folding the case brings them to the table below.
CAPITALS = str.maketrans({
    "В": "B", "Н": "H", "К": "K", "М": "M", "Т": "T",                               # Cyrillic
    "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Κ": "K", "Μ": "M", "Ν": "N", "Τ": "T", "Υ": "Y",  # Greek
})

# Small letters, digits and signs that look like a small Latin letter (after case folding and NFD, so that accents
# stay accents: "ё" is "е" with a diaeresis, and reads as "ë"). i, l, 1 and | are one letter: a capital I folds to
# i, and looks like l in the sans-serif fonts of the page.
LOOK_ALIKES = str.maketrans({
    # Cyrillic
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s", "і": "l", "ј": "j", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ү": "y", "ѵ": "v", "ѡ": "w",
    # Greek
    "α": "a", "ο": "o", "ρ": "p", "χ": "x", "ι": "l", "κ": "k", "ν": "v", "υ": "u", "γ": "y", "η": "n", "ϲ": "c",
    "ϳ": "j", "ω": "w",
    # Armenian
    "օ": "o", "ս": "u", "հ": "h", "ո": "n", "զ": "q",
    # Latin letters and signs that pass for other Latin letters, and digits that pass for letters
    "ı": "l", "i": "l", "ɩ": "l", "ǀ": "l", "|": "l", "1": "l", "ɑ": "a", "ɡ": "g", "0": "o",
})
LOOK_ALIKE_PAIRS = [("rn", "m")]  # letters that together pass for another

KEY_LENGTH = 4 * NAME_LENGTH  # review_readers.name_key


def invisible(character: str) -> bool:
    """Whether a character shows as nothing (or as a space that is not one) in a name."""
    point = ord(character)
    return (unicodedata.category(character) in INVISIBLE_CATEGORIES
            or any(low <= point <= high for low, high in INVISIBLE_RANGES))


def clean_name(value: str) -> str:
    """A reader's name as it is kept and shown: NFKC-normalised, surrounding space trimmed, runs of space made one.
    Refused (ReviewError) when empty, too long, without a letter or digit, or holding an invisible character."""
    typed = str(value).strip(" \t\r\n")  # what a paste brings along; inside a name, a tab or line break is refused
    # Spaces (any kind, once NFKC has made them plain) are trimmed and made one.
    name = " ".join(part for part in unicodedata.normalize("NFKC", typed).split(" ") if part)
    hidden = next((ch for ch in typed + name if invisible(ch)), None)
    if hidden is not None:
        raise ReviewError(f"the reader's name holds a character that shows as nothing or breaks the line "
                          f"(U+{ord(hidden):04X}); type the name again without it")
    if not name:
        raise ReviewError("the reader's name is empty")
    if len(name) > NAME_LENGTH:
        raise ReviewError(f"the reader's name is {len(name)} characters long; at most {NAME_LENGTH} are kept")
    if not any(unicodedata.category(ch)[0] in "LN" for ch in name):
        raise ReviewError("the reader's name has no letter or digit; type a name people will know you by")
    return name


def name_key(name: str) -> str:
    """How names are compared within a session: NFKC, look-alike capitals, case folded, look-alike letters and
    digits (see the module's description), spacing aside. Two names with the same key are one name."""
    text = unicodedata.normalize("NFKC", name).translate(CAPITALS).casefold()
    text = unicodedata.normalize("NFD", text).translate(LOOK_ALIKES)
    for pair, letter in LOOK_ALIKE_PAIRS:
        text = text.replace(pair, letter)
    key = " ".join(text.split())
    # A key longer than its column (a name of letters that fold into several) is kept as its hash.
    return key if len(key) <= KEY_LENGTH - 16 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()
