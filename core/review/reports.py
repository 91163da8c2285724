"""PDF reports of review sessions, made in memory with reportlab: one case as its reader saw it
(:func:`case_report`), and a whole session's figures for its organiser (:func:`session_report`).

Whatever a person typed (session and reader names, notes, image titles, captions) is text, never markup: it is
escaped before it reaches a reportlab Paragraph, whose mini-language would otherwise read ``<font size=99>`` in a
note as an instruction. What a blinded reader may not see yet (the model's answer, its probabilities, its heatmap
and the reference) is left out of the file altogether, not drawn over.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import pandas as pd
from PIL import Image
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.lib.utils import ImageReader
from reportlab.platypus import (
    Flowable,
    KeepInFrame,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from core.review import words
from core.review.agreement import confusion
from core.review.store import CONFIDENCES, KINDS, MODES, RATINGS, AnswerView, CaseView, SessionView

FOOTER = "Research and teaching tool, not a diagnosis."
HIDDEN = ("The model's answer, its probabilities, its heatmap and the reference are hidden until the reader commits an "
          "answer.")
NOT_RECORDED = "not recorded"

MARGIN = 1.6 * cm
# The frame reportlab lays flowables in keeps 6 points of padding on every side.
CONTENT_WIDTH = A4[0] - 2 * MARGIN - 12
CONTENT_HEIGHT = A4[1] - 2 * MARGIN - 12
MAX_PIXELS = 800        # no embedded image is larger than this on its long side
PRINT_DPI = 200         # finer than any printer or screen shows these pictures at their size on the page
NOTE_SHOWN = 1000       # characters of a note shown in a case report (notes may hold 2000)
CAPTION_SHOWN = 300     # characters of each gallery caption line
HARDEST_SHOWN = 15
NOTES_SHOWN = 200       # notes and changes of mind listed in a session report (the CSV has every one)
CHART_READERS = 20      # more bars than this cannot be told apart; the table above the chart has every reader

READER_COLOUR = colors.HexColor("#4C72B0")
MODEL_COLOUR = colors.HexColor("#DD8452")
RULE_COLOUR = colors.HexColor("#BBBBBB")
HEADER_FILL = colors.HexColor("#EEEEEE")
AGREEMENT_FILL = colors.HexColor("#E3F1E3")

FONT_FOLDERS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/local/share/fonts/dejavu",
                "/Library/Fonts", "C:/Windows/Fonts")


def _register_fonts() -> tuple[str, str]:
    """The regular and bold font of the reports: DejaVu Sans where the system has it (Debian's fonts-dejavu-core),
    which covers Greek, Cyrillic and most scripts readers' names and notes come in; else reportlab's built-in
    Helvetica, which covers Latin-1 only (other characters then show as boxes)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    for folder in FONT_FOLDERS:
        regular, bold = Path(folder) / "DejaVuSans.ttf", Path(folder) / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            try:
                pdfmetrics.registerFont(TTFont("ReportSans", str(regular)))
                pdfmetrics.registerFont(TTFont("ReportSans-Bold", str(bold)))
                pdfmetrics.registerFontFamily("ReportSans", normal="ReportSans", bold="ReportSans-Bold",
                                              italic="ReportSans", boldItalic="ReportSans-Bold")
            except Exception:  # a damaged font file: the built-in font will do
                continue
            return "ReportSans", "ReportSans-Bold"
    return "Helvetica", "Helvetica-Bold"


FONT, BOLD_FONT = _register_fonts()
_SAMPLE = getSampleStyleSheet()
TITLE = ParagraphStyle("report-title", parent=_SAMPLE["Title"], alignment=0, fontSize=18, leading=22, spaceAfter=4,
                       fontName=BOLD_FONT)
HEADING = ParagraphStyle("report-heading", parent=_SAMPLE["Heading2"], fontSize=12, leading=15, spaceBefore=10,
                         spaceAfter=4, fontName=BOLD_FONT)
SUBHEADING = ParagraphStyle("report-subheading", parent=_SAMPLE["Heading3"], fontSize=10, leading=12, spaceBefore=6,
                            spaceAfter=3, fontName=BOLD_FONT)
BODY = ParagraphStyle("report-body", parent=_SAMPLE["BodyText"], fontSize=9, leading=11.5, fontName=FONT)
CELL = ParagraphStyle("report-cell", parent=BODY, fontSize=8, leading=10, spaceBefore=0, spaceAfter=0)
HEADER_CELL = ParagraphStyle("report-header-cell", parent=CELL, fontName=BOLD_FONT)


# --------------------------------------------------------------------------------------------------
# Text


def _markup(value: object) -> str:
    """Paragraph markup that shows ``value`` literally, line breaks kept."""
    return escape(str(value)).replace("\n", "<br/>")


def _paragraph(value: object, style: ParagraphStyle = BODY) -> Paragraph:
    return Paragraph(_markup(value), style)


def _shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at a word where there is one, with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    words = cut.rsplit(maxsplit=1)
    return (words[0] if len(words) == 2 else cut).rstrip() + "…"


def _class_name(name: str | None, missing: str = NOT_RECORDED) -> str:
    return words.class_name(name, missing)


def _number(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.{digits}f}"




def _when(moment: dt.datetime | None) -> str:
    if moment is None:
        return NOT_RECORDED
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)  # SQLite hands back the stored UTC time without its zone
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# --------------------------------------------------------------------------------------------------
# Pictures


class _Picture(Flowable):
    """A PIL image drawn at a given size on the page, read from memory through ImageReader."""

    def __init__(self, image: Image.Image, width: float, height: float):
        super().__init__()
        self.image, self.width, self.height = ImageReader(image), width, height

    def wrap(self, available_width, available_height):
        return self.width, self.height

    def draw(self):
        self.canv.drawImage(self.image, 0, 0, self.width, self.height)


def _flattened(image: Image.Image) -> Image.Image:
    """A greyscale or RGB copy; a transparent overlay is laid on white rather than on black."""
    if image.mode in ("L", "RGB"):
        return image.copy()
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _picture(image: Image.Image, max_width: float, max_height: float) -> _Picture:
    """``image`` scaled to fit the box with its aspect kept, downsampled to what that size can show."""
    scale = min(max_width / image.width, max_height / image.height)
    width, height = image.width * scale, image.height * scale
    pixels = min(MAX_PIXELS, max(1, round(max(width, height) / 72 * PRINT_DPI)))
    small = _flattened(image)
    small.thumbnail((pixels, pixels), Image.Resampling.LANCZOS)  # only ever shrinks
    return _Picture(small, width, height)


def _scan_and_heatmap(scan: Image.Image, heatmap: Image.Image | None, side: float, missing: str) -> Table:
    """The scan and, beside it, the heatmap overlay, or a sentence saying why there is none."""
    right = _picture(heatmap, side, side) if heatmap is not None else _paragraph(missing)
    captions = [_paragraph("Scan", CELL), _paragraph("Heatmap overlay", CELL)]
    table = Table([[_picture(scan, side, side), right], captions], colWidths=[side + 8, side + 8], hAlign="LEFT")
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
    return table


# --------------------------------------------------------------------------------------------------
# Tables


def _cell(value: object, style: ParagraphStyle = CELL) -> Flowable:
    return value if isinstance(value, Flowable) else _paragraph(value, style)


def _header_widths(header: Sequence[object], widths: Sequence[float]) -> list[float]:
    """Column widths at least as wide as each header's longest word (a header never breaks inside a word), taken
    from the widest columns while the table would be wider than the page."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    padding = 13  # the table's cell padding, both sides, and a point to spare
    least = [max((stringWidth(word, HEADER_CELL.fontName, HEADER_CELL.fontSize) for word in str(name).split()),
                 default=0) + padding for name in header]
    out = [max(w, m) for w, m in zip(widths, least)]
    while sum(out) > CONTENT_WIDTH + 0.5:
        slack = [w - m for w, m in zip(out, least)]
        widest = max(range(len(slack)), key=slack.__getitem__)
        if slack[widest] <= 0:
            break
        out[widest] -= min(slack[widest], sum(out) - CONTENT_WIDTH)
    return out


def _grid(rows: Sequence[Sequence[object]], widths: Sequence[float] | None = None) -> Table:
    """A ruled table whose first row is its header (repeated when the table runs onto another page)."""
    cells = [[_cell(v, HEADER_CELL if k == 0 else CELL) for v in row] for k, row in enumerate(rows)]
    if widths is not None:
        widths = _header_widths(rows[0], widths)
    table = Table(cells, colWidths=widths, repeatRows=1, hAlign="LEFT")
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.4, RULE_COLOUR),
                               ("BACKGROUND", (0, 0), (-1, 0), HEADER_FILL),
                               ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return table


def _facts(rows: Sequence[tuple[str, object]]) -> Table:
    """Name and value pairs, the names in bold, without rules."""
    table = Table([[_cell(name, HEADER_CELL), _cell(value)] for name, value in rows],
                  colWidths=[120, CONTENT_WIDTH - 120], hAlign="LEFT")
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                               ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
    return table


def _model_facts(session: SessionView) -> list[tuple[str, object]]:
    """Which checkpoint the session's model answers came from: its path, its full sha256 and the run."""
    digest = session.model.get("file_sha256")
    rows = [("Model", session.model.get("path") or NOT_RECORDED),
            ("Checkpoint sha256", Paragraph(f'<font face="Courier">{_markup(digest)}</font>', CELL) if digest
             else NOT_RECORDED)]
    run = session.source.get("run_name") or session.model.get("run")
    if run:
        rows.append(("Evaluation run", run))
    return rows


# --------------------------------------------------------------------------------------------------
# Document


def _footer(canvas, document) -> None:
    canvas.saveState()
    canvas.setFont(FONT, 8)
    canvas.setFillColor(colors.grey)
    canvas.drawString(MARGIN, MARGIN / 2, FOOTER)
    canvas.drawRightString(A4[0] - MARGIN, MARGIN / 2, f"Page {document.page}")
    canvas.restoreState()


def _pdf(story: list[Flowable], title: str) -> bytes:
    out = io.BytesIO()
    document = SimpleDocTemplate(out, pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN,
                                 bottomMargin=MARGIN, title=title, creator="brain-tumour MRI classifier")
    document.build(story, onFirstPage=_footer, onLaterPages=_footer)
    return out.getvalue()


def _now(created: dt.datetime | None) -> dt.datetime:
    return created if created is not None else dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------------------------------
# One case


def _probabilities(case: CaseView) -> Flowable:
    if not case.model_probabilities:
        return _paragraph("The model's probabilities were not recorded for this case.")
    ranked = sorted(case.model_probabilities.items(), key=lambda item: item[1], reverse=True)
    return _grid([("Class", "Probability"), *((_class_name(name), f"{100 * p:.1f}%") for name, p in ranked)],
                 widths=[140, 70])


def _model_section(case: CaseView) -> list[Flowable]:
    answer = case.model_said(_class_name, with_probability=True)
    return [_facts([("Model's answer", answer), ("Reference", _class_name(case.reference, "not known"))]),
            Spacer(1, 4), _probabilities(case)]


def _reader_section(reader: str | None, answer: AnswerView | None) -> list[Flowable]:
    rows: list[tuple[str, object]] = [("Reader", reader or "not named")]
    if answer is None:
        return [_facts(rows), _paragraph("No answer committed yet.")]
    rows += [("Answer", _class_name(answer.label)),
             ("Confidence", CONFIDENCES.get(answer.confidence, str(answer.confidence))),
             ("Note", _shorten(answer.note, NOTE_SHOWN) if answer.note else "none"),
             ("Answered", _when(answer.answered_at))]
    if answer.heatmap_rating:
        rows.append(("Heatmap rating", RATINGS.get(answer.heatmap_rating, answer.heatmap_rating)))
    if answer.revised_label:
        rows.append(("Changed mind to", _class_name(answer.revised_label)))
        if answer.revised_note:
            rows.append(("Why", _shorten(answer.revised_note, NOTE_SHOWN)))
    return [_facts(rows)]


def case_report(*, session: SessionView, case: CaseView, scan: Image.Image, heatmap: Image.Image | None,
                reader: str | None, answer: AnswerView | None, revealed: bool,
                created: dt.datetime | None = None) -> bytes:
    """A one-page A4 PDF of one case: the scan beside its heatmap overlay, the model's probabilities and answer,
    the reference, the reader's answer and notes, and which model answered. ``revealed`` says whether the reader may
    see the model's side (:func:`core.review.store.may_reveal`); when it is False the model's answer, probabilities,
    heatmap and the reference are not put in the file at all."""
    side = (CONTENT_WIDTH - 16) / 2
    picture_missing = "No heatmap for this case." if revealed else "Heatmap hidden until the reader commits an answer."
    story = [Paragraph("Case report", TITLE),
             _paragraph(f"{session.name} ({KINDS.get(session.kind, session.kind)}, {session.mode})"),
             Paragraph(f"Case {case.position + 1}: {_markup(case.title)}", HEADING),
             _scan_and_heatmap(scan, heatmap if revealed else None, min(side, 210), picture_missing),
             Paragraph("The model", HEADING),
             *(_model_section(case) if revealed else [_paragraph(HIDDEN)]),
             Paragraph("The reader", HEADING), *_reader_section(reader, answer),
             Paragraph("Model and report", HEADING),
             _facts([*_model_facts(session), ("Report made", _when(_now(created)))])]
    # Shrinking, rather than flowing onto a second page, keeps even a long note on the one page.
    return _pdf([KeepInFrame(CONTENT_WIDTH, CONTENT_HEIGHT - 10, story, mode="shrink")], "Case report")


# --------------------------------------------------------------------------------------------------
# A whole session


def _session_facts(session: SessionView, cases: Sequence[CaseView], table: pd.DataFrame,
                   created: dt.datetime | None) -> Table:
    return _facts([("Session", session.name), ("Kind", KINDS.get(session.kind, session.kind)),
                   ("Mode", MODES.get(session.mode, session.mode)), ("Cases", str(len(cases))),
                   ("Readers with answers", str(table["reader"].nunique())), ("Answers", str(len(table))),
                   ("Classes", ", ".join(_class_name(c) for c in session.classes)),
                   *_model_facts(session), ("Session created", _when(session.created_at)),
                   ("Report made", _when(_now(created)))])


def _section(title: str, *content: Flowable) -> list[Flowable]:
    """A heading kept on one page with what follows it (a long table still breaks, after its first rows)."""
    return [KeepTogether([Paragraph(title, HEADING), *content])]


def _readers_section(summary: dict) -> list[Flowable]:
    readers = list(summary["readers"].itertuples())
    header = ("Reader", "Answers", "Accuracy", "Model on the same cases", "Confidence (mean)", "Changed mind",
              "Reading time (median)")
    rows = [(r.reader, str(r.answered), words.share(r.accuracy, r.accuracy_low, r.accuracy_high),
             words.share(r.model_accuracy, r.model_accuracy_low, r.model_accuracy_high),
             _number(r.mean_confidence, 1), str(r.changed_mind), words.seconds(r.median_reading_seconds))
            for r in readers]
    agreement = [(r.reader, words.kappa(r.kappa_reference, r.kappa_reference_low, r.kappa_reference_high),
                  words.kappa(r.kappa_model, r.kappa_model_low, r.kappa_model_high)) for r in readers]
    story = _section("Readers",
                     _paragraph("Accuracy is against the reference, on the cases that have one; the model's accuracy "
                                "is on those same cases. Intervals are 95%: Wilson for accuracies, a bootstrap over "
                                "cases for Cohen's kappas. Reading time: from a case being shown to the answer."),
                     Spacer(1, 4), _grid([header, *rows], widths=[80, 44, 108, 108, 50, 44, 56]))
    story += [Spacer(1, 6), _grid([("Reader", "Kappa with the reference", "Kappa with the model"), *agreement],
                                  widths=[120, 150, 150])]
    fleiss = summary.get("fleiss")
    if fleiss is not None:
        story.append(_paragraph(f"Fleiss' kappa across {fleiss['readers']} readers, on the {fleiss['cases']} cases "
                                f"every one of them answered: "
                                f"{words.kappa(fleiss['kappa'], fleiss['low'], fleiss['high'])}."))
    return story


def _bar(value: float) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _accuracy_chart(readers: pd.DataFrame) -> Drawing:
    """Each reader's accuracy beside the model's on the same cases (reportlab's own chart: no browser needed)."""
    drawing = Drawing(CONTENT_WIDTH, 210)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 40, 60, CONTENT_WIDTH - 170, 140
    chart.data = [[_bar(v) for v in readers["accuracy"]], [_bar(v) for v in readers["model_accuracy"]]]
    chart.categoryAxis.categoryNames = [_shorten(str(name), 16) for name in readers["reader"]]
    chart.categoryAxis.labels.angle, chart.categoryAxis.labels.boxAnchor = 30, "ne"
    chart.categoryAxis.labels.fontSize = chart.valueAxis.labels.fontSize = 7
    chart.categoryAxis.labels.fontName = chart.valueAxis.labels.fontName = FONT  # readers' names in any script
    chart.valueAxis.valueMin, chart.valueAxis.valueMax, chart.valueAxis.valueStep = 0, 1, 0.25
    chart.bars[0].fillColor, chart.bars[1].fillColor = READER_COLOUR, MODEL_COLOUR
    legend = Legend()
    legend.x, legend.y, legend.fontSize = chart.x + chart.width + 15, chart.y + chart.height, 7
    legend.fontName = FONT
    legend.colorNamePairs = [(READER_COLOUR, "Reader"), (MODEL_COLOUR, "Model, same cases")]
    drawing.add(chart)
    drawing.add(legend)
    return drawing


def _chart_section(summary: dict) -> list[Flowable]:
    readers = summary["readers"]
    if readers[["accuracy", "model_accuracy"]].isna().all().all():
        return _section("Accuracy beside the model",
                        _paragraph("No answered case has a reference, so there is no accuracy to draw."))
    shown = ([_paragraph(f"The first {CHART_READERS} of {len(readers)} readers; the table above has all.")]
             if len(readers) > CHART_READERS else [])
    return _section("Accuracy beside the model", *shown, _accuracy_chart(readers.head(CHART_READERS)))


def _confusion_table(matrix: pd.DataFrame) -> Table:
    rows = [("Reference \\ answer", *(_class_name(c) for c in matrix.columns)),
            *((_class_name(name), *(str(int(n)) for n in counts)) for name, counts in
              zip(matrix.index, matrix.to_numpy()))]
    table = _grid(rows, widths=[100] + [70] * len(matrix.columns))
    table.setStyle(TableStyle([("BACKGROUND", (k + 1, k + 1), (k + 1, k + 1), AGREEMENT_FILL)
                               for k in range(len(matrix.columns))]))
    return table


def _confusion_section(session: SessionView, table: pd.DataFrame) -> list[Flowable]:
    blocks = [[_paragraph(name, SUBHEADING), _confusion_table(confusion(table[table["reader"] == name],
                                                                      session.classes))]
              for name in table["reader"].unique()]
    intro = _paragraph("The reference (rows) against each reader's committed answer (columns), on the cases with a "
                       "reference.")
    story = _section("Confusion matrices", intro, *(blocks[0] if blocks else []))
    return story + [KeepTogether(block) for block in blocks[1:]]


def _leaderboard_section(session: SessionView, leaderboard: Sequence[tuple[str, int, int]] | None
                         ) -> list[Flowable]:
    """A quiz's scores as the pages show them (core.review.store.scores: the same rows in the same order)."""
    if session.kind != "quiz" or leaderboard is None:
        return []
    rows = [(str(k + 1), name, str(right), str(answered)) for k, (name, right, answered) in enumerate(leaderboard)]
    return _section("Leaderboard", _grid([("Place", "Reader", "Right", "Answered"), *rows], widths=[40, 200, 60, 60]))


def _hardest_section(summary: dict) -> list[Flowable]:
    difficulty = summary["difficulty"]
    if difficulty.empty:
        return _section("Hardest cases", _paragraph("No answered case has a reference."))
    missed = difficulty[difficulty["wrong"] > 0]
    if missed.empty:
        return _section("Hardest cases", _paragraph("Every reader was right on every case with a reference."))
    rows = [(str(r.case), r.image, _class_name(r.reference), _class_name(r.model), str(r.readers), str(r.wrong),
             words.share(r.share_wrong), words.seconds(r.median_reading_seconds))
            for r in missed.head(HARDEST_SHOWN).itertuples()]
    header = ("Case", "Title", "Reference", "Model", "Readers", "Wrong", "Share wrong", "Reading time (median)")
    shown = min(len(missed), HARDEST_SHOWN)
    intro = (f"The {shown} case{'s' if shown != 1 else ''} at least one reader got wrong"
             f"{f' (of {len(missed)})' if len(missed) > shown else ''}, hardest first.")
    return _section("Hardest cases", _paragraph(intro), Spacer(1, 4),
                    _grid([header, *rows], widths=[30, 140, 66, 66, 40, 36, 46, 56]))


def _notes_section(table: pd.DataFrame) -> list[Flowable]:
    """Every note and change of mind, reader by reader (the first NOTES_SHOWN; the CSV has them all)."""
    noted = table[(table["note"].fillna("") != "") | table["changed_to"].notna()]
    if noted.empty:
        return _section("Notes and changes of mind", _paragraph("No reader wrote a note or changed their mind."))
    rows = [(r.reader, str(r.case), _class_name(r.answer), _shorten(str(r.note or ""), NOTE_SHOWN // 2),
             _class_name(r.changed_to, "") if isinstance(r.changed_to, str) else "",
             _shorten(str(r.changed_note or ""), NOTE_SHOWN // 4) if isinstance(r.changed_to, str) else "")
            for r in noted.head(NOTES_SHOWN).itertuples()]
    intro = (f"The {min(len(noted), NOTES_SHOWN)} answers with a note or a change of mind"
             + (f" (of {len(noted)}; the answers CSV has every one)" if len(noted) > NOTES_SHOWN else "")
             + ". A change of mind is kept beside the committed answer, which it never replaces.")
    header = ("Reader", "Case", "Answer", "Note", "Changed mind to", "Why")
    return _section("Notes and changes of mind", _paragraph(intro), Spacer(1, 4),
                    _grid([header, *rows], widths=[60, 30, 62, 180, 62, 100]))


def _ratings_section(summary: dict) -> list[Flowable]:
    ratings = summary["ratings"]
    if ratings.empty or ratings.to_numpy().sum() == 0:
        return _section("Heatmap ratings", _paragraph("No reader rated a heatmap."))
    header = ("Heatmap", *ratings.columns, "All")
    rows = [(words.rating_name(name), *(str(int(n)) for n in counts), str(int(counts.sum())))
            for name, counts in zip(ratings.index, ratings.to_numpy())]
    return _section("Heatmap ratings", _paragraph("How readers rated where the model's heatmap pointed, split by "
                                                  "whether the model was right."), Spacer(1, 4), _grid([header, *rows]))


def _gallery_section(gallery: Sequence[tuple[CaseView, Image.Image, Image.Image | None, list[str]]],
                     heatmap_method: str | None = None) -> list[Flowable]:
    story: list[Flowable] = [PageBreak(), Paragraph("Disagreement gallery", HEADING)]
    if not gallery:
        return story + [_paragraph("No case to show: no reader's answer differs from the model's, or its scan is "
                                   "no longer available.")]
    story.append(_paragraph("Cases where a reader's answer differs from the model's: the scan, and beside it the "
                            f"model's heatmap{f' ({heatmap_method})' if heatmap_method else ''} for its answer, in "
                            "the jet colours (red: the most evidence for the class; blue: none). Where the data has "
                            "them, a white box is the tumour box of the data and a cyan line the tumour outline drawn "
                            "by the dataset's authors."))
    for case, scan, heatmap, lines in gallery:
        captions = lines or [f"Case {case.position + 1}: {case.title}"]
        story.append(KeepTogether([Spacer(1, 8), *(_paragraph(_shorten(str(line), CAPTION_SHOWN), CELL)
                                                   for line in captions),
                                   Spacer(1, 3), _scan_and_heatmap(scan, heatmap, 190, "No heatmap for this case.")]))
    return story


def session_report(*, session: SessionView, cases: Sequence[CaseView], table: pd.DataFrame, summary: dict,
                   gallery: Sequence[tuple[CaseView, Image.Image, Image.Image | None, list[str]]],
                   created: dt.datetime | None = None, leaderboard: Sequence[tuple[str, int, int]] | None = None,
                   heatmap_method: str | None = None) -> bytes:
    """A multi-page A4 PDF of a session for its organiser: what the session was and which model answered; each
    reader's accuracy and kappas with their intervals beside the model's; Fleiss' kappa across readers; a chart of
    the accuracies; each reader's confusion matrix; the hardest cases; the heatmap ratings; and a gallery of the
    cases where readers and model disagreed (each item a case, its scan, its heatmap and its caption lines).
    ``table`` and ``summary`` come from :func:`core.review.agreement.answers_table` and
    :func:`core.review.agreement.session_summary`."""
    story: list[Flowable] = [Paragraph("Session report", TITLE), _session_facts(session, cases, table, created)]
    if table.empty:
        story.append(Paragraph("Answers", HEADING))
        story.append(_paragraph("No reader has committed an answer yet, so there is nothing to summarise."))
    else:
        story += [*_readers_section(summary), *_leaderboard_section(session, leaderboard), *_chart_section(summary),
                  *_confusion_section(session, table), *_hardest_section(summary), *_notes_section(table),
                  *_ratings_section(summary)]
    return _pdf(story + _gallery_section(gallery, heatmap_method), "Session report")
