"""Readers' names: what a name may hold, and when two names are one.

A reader's name stands beside their answers on the organiser's page, the leaderboard and the reports, so nobody may
join under a name that passes for someone else's. A name is normalised (NFKC: full-width letters, ligatures and
odd spaces become their plain forms), and refused when it holds no letter or digit, or a character that shows as
nothing (control and format characters, line breaks, private-use and unassigned code points, and the other
default-ignorable ones such as the Hangul fillers and variation selectors). The one exception is a zero-width
non-joiner or joiner (U+200C, U+200D) between two letters or marks of one script other than Latin: Persian, Arabic
and the Indic scripts are spelled with them (a simplified form of the CONTEXTJ rule of IDNA, RFC 5892).

A word may not mix Latin letters with Cyrillic, Greek or Armenian ones ("Аnn" with a Cyrillic A, "аnn" with a small
one): that is how a name is made to pass for another (UTS #39's mixed-script test). Other mixes are ordinary
spelling and stay allowed (Japanese words mix kanji and kana), and so do words of different scripts in one name.

Two names of one session are one name when either of two keys match:

- the case-folded key (:func:`name_key`): NFKC and case folding, so "Ann", "ann" and "Ａｎｎ" are one;
- the skeleton (:func:`name_skeleton`), case kept: each character read as the one it looks like as written, in
  the manner of Unicode's UTS #39, so "Аnn" with a Cyrillic A is "Ann", "Ian" with a capital I is "lan" with a
  small L, and "B0b" is "Bob".

The skeleton keeps case because a capital I looks like a small l while a small i and a capital L look like nothing
else: folding case first made "Ian" and "Lan", "Lisa" and "Ilsa" one name, and two readers could not both be named.
Both keys leave out the joiners, which may show as nothing.

The look-alikes are a table of our own, not Unicode's whole confusables list: the letters of the Cyrillic, Greek
and Armenian scripts (and a few Latin letters and digits) that pass for Latin letters in the fonts a browser uses,
which is what an impersonator reaches for; other scripts are compared by NFKC and case alone. No pair of letters
stands for one letter: "rn" passes for "m" only in some fonts, and reading it so made "Kern" and "Kem", "Arne" and
"Ame" one name.
"""

from __future__ import annotations

import hashlib
import unicodedata

from core.review.errors import ReviewError

NAME_LENGTH = 100  # the characters of a reader's name kept (review_readers.name, core.review.schema)

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

JOINERS = "\u200c\u200d"  # zero-width non-joiner and joiner: spelling in some scripts, nothing to see in others

# The first word of the Unicode names of letters and marks that Latin text is written with: a joiner between them
# changes nothing a reader sees ("FULLWIDTH" and the like become plain Latin under NFKC, and are checked again).
LATIN_AND_COMMON = {"", "LATIN", "COMBINING", "MODIFIER"}

# Characters that look like another as written, case kept (after NFKC and NFD, so that accents stay accents: "ё"
# is "е" with a diaeresis, and reads as "ë"). A capital I, the digit 1 and a bar look like a small l in the
# sans-serif fonts of the page; a capital O, a small o and the digit 0 differ only in size.
LOOK_ALIKES = str.maketrans({
    # Cyrillic
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ү": "y", "ѵ": "v", "ѡ": "w",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "o", "Р": "P", "С": "C", "Т": "T", "Х": "X",
    "Ѕ": "S", "І": "l", "Ј": "J", "Ү": "Y", "Ӏ": "l", "Ԛ": "Q", "Ԝ": "W",
    # Greek
    "α": "a", "ο": "o", "ρ": "p", "ι": "i", "ν": "v", "υ": "u", "γ": "y", "η": "n", "ϲ": "c", "ϳ": "j", "κ": "k",
    "χ": "x", "ω": "w",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "l", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "o", "Ρ": "P",
    "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C", "Ϳ": "J",
    # Armenian
    "օ": "o", "ս": "u", "հ": "h", "ո": "n", "զ": "q", "Օ": "o", "Ս": "U",
    # Latin letters and signs that pass for other Latin letters, and digits that pass for letters
    "I": "l", "ı": "i", "ɩ": "i", "ǀ": "l", "|": "l", "1": "l", "ɑ": "a", "ɡ": "g", "O": "o", "0": "o",
    # The joiners show as nothing where they are allowed
    "\u200c": None, "\u200d": None,
})
WITHOUT_JOINERS = str.maketrans(dict.fromkeys(JOINERS))

KEY_LENGTH = 4 * NAME_LENGTH  # review_readers.name_key and name_skeleton


def invisible(character: str) -> bool:
    """Whether a character shows as nothing (or as a space that is not one) in a name."""
    point = ord(character)
    return (unicodedata.category(character) in INVISIBLE_CATEGORIES
            or any(low <= point <= high for low, high in INVISIBLE_RANGES))


def _script(character: str) -> str | None:
    """The script of a letter or mark other than Latin, by the first word of its Unicode name ("ARABIC LETTER
    FARSI YEH", "DEVANAGARI SIGN VIRAMA"); None for a Latin or shared letter or mark, and for anything else."""
    if unicodedata.category(character)[0] not in "LM":
        return None
    word = unicodedata.name(character, "").split(" ")[0]
    return None if word in LATIN_AND_COMMON else word


def _spelling_joiner(text: str, at: int) -> bool:
    """Whether the character at ``at`` is a joiner between two letters or marks of one script other than Latin."""
    if text[at] not in JOINERS or at == 0 or at + 1 == len(text):
        return False
    script = _script(text[at - 1])
    return script is not None and script == _script(text[at + 1])


def _first_hidden(text: str) -> str | None:
    """The first character of ``text`` that shows as nothing and is not part of its script's spelling."""
    return next((ch for at, ch in enumerate(text) if invisible(ch) and not _spelling_joiner(text, at)), None)


def clean_name(value: str) -> str:
    """A reader's name as it is kept and shown: NFKC-normalised, surrounding space trimmed, runs of space made one.
    Refused (ReviewError) when empty, too long, without a letter or digit, or holding an invisible character."""
    typed = str(value).strip(" \t\r\n")  # what a paste brings along; inside a name, a tab or line break is refused
    # Spaces (any kind, once NFKC has made them plain) are trimmed and made one.
    name = " ".join(part for part in unicodedata.normalize("NFKC", typed).split(" ") if part)
    hidden = _first_hidden(typed) or _first_hidden(name)
    if hidden is not None:
        raise ReviewError(f"the reader's name holds a character that shows as nothing or breaks the line "
                          f"(U+{ord(hidden):04X}); type the name again without it")
    if not name:
        raise ReviewError("the reader's name is empty")
    if len(name) > NAME_LENGTH:
        raise ReviewError(f"the reader's name is {len(name)} characters long; at most {NAME_LENGTH} are kept")
    if not any(unicodedata.category(ch)[0] in "LN" for ch in name):
        raise ReviewError("the reader's name has no letter or digit; type a name people will know you by")
    mixed = next((word for word in name.split(" ") if len(_look_alike_scripts(word)) > 1), None)
    if mixed is not None:
        raise ReviewError(f"a word of the reader's name mixes {' and '.join(sorted(_look_alike_scripts(mixed)))} "
                          "letters, as a name made to pass for another would; type each word in one script")
    return name


# Scripts whose letters pass for one another (the look-alike table's): one word mixing them is refused, after UTS
# #39's mixed-script test, since "аnn" with a small Cyrillic a passes for "ann" and neither key catches it. Other
# mixes are ordinary spelling (Japanese words mix kanji and kana) and stay allowed.
LOOK_ALIKE_SCRIPTS = {"LATIN": "Latin", "CYRILLIC": "Cyrillic", "GREEK": "Greek", "ARMENIAN": "Armenian"}


def _look_alike_scripts(word: str) -> set[str]:
    """Which of :data:`LOOK_ALIKE_SCRIPTS` the letters of one word are written in."""
    names = (unicodedata.name(ch, "").split(" ")[0] for ch in word if unicodedata.category(ch)[0] == "L")
    return {LOOK_ALIKE_SCRIPTS[first] for first in names if first in LOOK_ALIKE_SCRIPTS}


def _fitted(key: str) -> str:
    """A key as its column keeps it: one longer than the column (a name of letters that fold into several) is kept
    as its hash."""
    key = " ".join(key.split())
    return key if len(key) <= KEY_LENGTH - 16 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def name_key(name: str) -> str:
    """The name with case and width aside (NFKC and case folding, spacing and joiners aside): "Ann", "ann" and
    "Ａｎｎ" have one key."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return _fitted(folded.translate(WITHOUT_JOINERS))


def name_skeleton(name: str) -> str:
    """The name as it looks, case kept (see the module's description): "Аnn" with a Cyrillic A and "Ann" have one
    skeleton, and so have "Ian" with a capital I and "lan" with a small L, but not "Ian" and "Lan"."""
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", name))
    return _fitted(unicodedata.normalize("NFC", decomposed.translate(LOOK_ALIKES)))
