"""Captions built from a model's metadata and its runs: text in, markdown out, no Streamlit (like
dashboard/charts.py, each can be tried in a notebook). Whatever comes from a file goes through :func:`md`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from core.data import CLASS_LABELS
from core.sources.files import printable

_MARKDOWN = re.compile(r"[\\`*_{}\[\]()#+\-.!|<>~$:=^&\"'@%/]")
_LINK_START = re.compile(r"(?i)(https?|www)(?=[:.])|@")
WORD_JOINER = "\u2060"


def md(value) -> str:
    """Text from a file or a user (a run name, a path, a class name, an error message) made safe to put into
    markdown, to be shown as the characters it holds.

    Every character that markdown or Streamlit's directives could act on becomes a numeric character reference
    (``:`` -> ``&#58;``), which the page shows as the character itself. That does not stop the link detection of
    GitHub-flavoured markdown, which runs on the text after parsing (``http://host`` in plain text becomes a link
    whatever the escaping), so an invisible word joiner goes after each ``http``, ``https`` or ``www`` that starts
    an address and after each ``@``."""
    text = printable(str(value)).replace("\r", " ").replace("\n", " ")
    text = _LINK_START.sub(lambda match: match.group() + WORD_JOINER, text)
    return _MARKDOWN.sub(lambda match: f"&#{ord(match.group())};", text)


def sentence(error) -> str:
    """An error's message shown on its own: markdown-safe, with a capital letter and a full stop."""
    text = str(error).strip()
    text = text[:1].upper() + text[1:]
    return md(text if text.endswith((".", "!", "?")) else text + ".")


def model_grid(metadata: dict) -> tuple[int, int]:
    """(input size, output stride) of the network a checkpoint's metadata describes (224 and 32 when it says
    nothing, as older checkpoints do)."""
    size = (metadata.get("preprocessing") or {}).get("image_size", 224)
    stride = (metadata.get("architecture") or {}).get("output_stride", 32)
    return int(size), int(stride)


def layer_label(name: str, size: int = 224, output_stride: int = 32) -> str:
    """A layer as a picker shows it, short enough for a narrow column: 'layer4 (7 x 7)', for a network of that input
    size and output stride."""
    from core.explain import LAYERS, layer_grid

    if name not in LAYERS:
        return name
    grid = layer_grid(name, size, output_stride)
    return f"{name} ({grid} x {grid})"


def training_source(data: dict) -> str:
    """'brain-tumor-mri/Training' from the checkpoint's data record."""
    trained_on = Path(str(data.get("trained_on", ".")))
    root = Path(str(data.get("root", "?"))).name
    return root if str(trained_on) == "." else f"{root}/{trained_on.as_posix()}"


def calibration_caption(meta: dict) -> tuple[str, str]:
    """(plain sentence, technical detail) on whether the model's percentages can be read as chances of being
    right (markdown)."""
    from core.inference import checkpoint_temperature

    record = meta.get("calibration")
    if not record:
        return ("Its percentages are not calibrated: read them as scores, not as the chance of being right.",
                "No temperature scaling was fitted (python -m training.calibrate).")
    images = record.get("images")
    source = f"{images:,} validation images" if isinstance(images, int) else "validation images"
    source += borrowed_from(record)
    return ("Its percentages are calibrated: on scans it was not trained on, answers given at 80% were right about "
            "80% of the time.",
            f"Temperature scaling, T = {checkpoint_temperature(meta):.2f}, fitted on {source}.")


def borrowed_from(record: dict) -> str:
    """' of a run of the same recipe (name)' when a calibration-style record was fitted on another run's
    validation split; '' otherwise (markdown-safe)."""
    fitted_on = record.get("fitted_on") if isinstance(record.get("fitted_on"), dict) else {}
    borrowed = record.get("borrowed") if isinstance(record.get("borrowed"), dict) else {}
    if not fitted_on.get("borrowed") and not borrowed:
        return ""
    return f" of a run of the same recipe ({md(borrowed.get('checkpoint') or fitted_on.get('checkpoint', 'unnamed'))})"


def familiarity_caption(meta: dict) -> tuple[str, str] | None:
    """(plain sentence, technical detail) on the warning for scans unlike the training scans, or None when the
    model has no familiarity threshold."""
    record = meta.get("familiarity") or {}
    if record.get("threshold") is None:
        return None
    share = record.get("flag_share", 0.01)  # checked with the metadata: strictly between 0 and 1
    where = (" set on validation images" if record.get("threshold_from") == "validation"
             else f", borrowed{borrowed_from(record)}")
    floor = record.get("probability_floor")
    if floor is None:
        return (f"It warns, instead of answering, when a scan is unlike the scans it learned from (about 1 in "
                f"{round(1 / share)} ordinary scans is flagged too).",
                f"Familiarity: Mahalanobis distance of the pooled layer4 features to the nearest class mean, "
                f"threshold {record['threshold']:.1f}{where}.")
    return (f"It warns, instead of answering, when a scan is unlike the scans it learned from or its answer is under "
            f"{floor:.1%} (about {100 * share:g} in 100 ordinary scans are flagged too).",
            f"Familiarity: Mahalanobis distance of the pooled layer4 features to the nearest class mean over "
            f"{record['distance_threshold']:.1f}, or a calibrated top probability under {floor:.1%}, chosen "
            f"together{where}.")


def familiar_rule(figures: dict) -> str:
    """What an evaluation run's familiarity warning was (its ``familiarity`` figures), in one sentence."""
    floor, distance = figures.get("probability_floor"), figures.get("distance_threshold")
    if isinstance(floor, (int, float)) and isinstance(distance, (int, float)):
        return (f"Warned: a familiarity distance above {distance:.1f} or a top probability under {floor:.1%} "
                "(core.familiarity).")
    return f"Warned: a familiarity distance above {figures['threshold']:.1f} (core.familiarity)."


def warning_where_wrong(figures: dict) -> str | None:
    """How the warning fell on the model's wrong and right answers in a run, or None when the run does not say."""
    wrong, right = figures.get("wrong"), figures.get("right")
    if not (isinstance(wrong, dict) and isinstance(right, dict)):
        return None

    def part(block: dict, what: str) -> str:
        if not block.get("images"):
            return f"it gave no {what} answers"
        return f"{block['flagged']:,} of its {block['images']:,} {what} answers ({block['share']:.1%})"

    return f"The warning fell on {part(wrong, 'wrong')} and on {part(right, 'right')}."


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "?"


def _total(counts) -> int:
    return sum(v for v in counts.values() if isinstance(v, int)) if isinstance(counts, dict) else 0


def guidance_caption(record, config) -> tuple[str, str] | None:
    """What a mask-guided model (core.guidance) was taught besides the labels; None for a model trained on labels
    alone."""
    if not isinstance(record, dict) or not isinstance(record.get("guided_images"), int):
        return None
    config = config if isinstance(config, dict) else {}
    weight, margin = config.get("mask_weight"), config.get("mask_margin_px")

    def number(v) -> str:
        return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"

    source = md(Path(str(record.get("mask_data", "?"))).name)
    return (f"Also taught where the evidence should lie: {record['guided_images']:,} of its training scans came "
            f"with a tumour outline ({_total(record.get('added')):,} of them slices of {source}), and evidence for "
            "the true class outside the outline was penalised.",
            f"Outlines from {md(record.get('masks', '?'))}, the train side of the localisation split "
            f"{md(Path(str(record.get('split', '?'))).name)}: {_total(record.get('transferred')):,} moved onto copies "
            f"in the training data, {_total(record.get('added')):,} slices added; "
            f"{_count(record.get('left_out_copies_of_held_out_slices'))} training images left out as copies of the "
            "split's validation and test slices, which score its heatmaps. Loss: cross-entropy plus "
            f"{number(weight)} x the share of the true class's positive Grad-CAM evidence at layer4 lying outside "
            f"the outline grown by {number(margin)} px at 224.")


def model_captions(meta: dict, runs: list) -> list[tuple[str, str | None]]:
    """The sidebar's description of a model: (plain sentence, technical detail for its tooltip) pairs, markdown,
    on its classes, training data, calibration, familiarity warning and the test figures of its bundled ``runs``."""
    captions: list[tuple[str, str | None]] = [("Classes: " + ", ".join(CLASS_LABELS[c] for c in meta["classes"]),
                                                None)]
    data = meta.get("data", {})
    counts = data.get("counts", {})
    seen = sum(counts.get("train", {}).values()) + sum(counts.get("val", {}).values())
    guidance = data.get("guidance")
    seen -= _total(guidance.get("added")) if isinstance(guidance, dict) else 0  # counted in guidance_caption
    base = meta.get("base_weights", {}).get("name", "not recorded")
    captions.append((f"Learned from {seen:,} scans of {md(training_source(data))}.",
                     f"A ResNet-50 started from ImageNet weights ({md(base)}) and fine-tuned."))
    guided = guidance_caption(guidance, (meta.get("training") or {}).get("config"))
    if guided:
        captions.append(guided)
    validation = meta.get("validation", {})
    if validation.get("val_accuracy") is not None:
        auc = validation.get("val_macro_auc")
        captions.append((f"Right on {validation['val_accuracy']:.2%} of its held-out validation scans.",
                         f"Validation macro AUC {auc:.4f}." if auc is not None else None))
    captions.append(calibration_caption(meta))
    familiar = familiarity_caption(meta)
    if familiar:
        captions.append(familiar)
    for run in runs:
        m = run.metrics
        free = f" ({m['accuracy_duplicate_free']:.2%} on those with no copy in its training data)" \
            if m.get("accuracy_duplicate_free") is not None else ""
        dataset = run.info["dataset"]
        where = dataset["name"] + ("" if dataset["evaluated"] == "." else "/" + dataset["evaluated"])
        if dataset.get("files"):  # a listed part of the dataset, as a held-out split
            listing = Path(str(dataset["files"]))
            where += f" ({listing.parent.name}/{listing.stem})"
        accuracy = f"{m['accuracy']:.2%}" if m.get("accuracy") is not None else "n/a"
        auc = f"Macro AUC {m['macro_auc']:.5f} (how well it ranks each class above the others; 1 is perfect)." \
            if m.get("macro_auc") is not None else None
        captions.append((f"Tested on {md(where)}: right on {accuracy} of the scans{free}.", auc))
    return captions


def recipe_caption(config: dict, best_epoch) -> str:
    """The training recipe of a run's model in one sentence, as plain text (settings a run's model may predate are
    skipped)."""
    parts = [f"{config.get('epochs')} epochs ({config.get('head_epochs')} head-only)"]
    parts += [f"batch {config.get('batch_size')}", f"label smoothing {config.get('label_smoothing')}",
              f"validation share {config.get('val_fraction')}", f"seed {config.get('seed')}"]
    return ", ".join(parts) + f"; epoch kept: {best_epoch}."


@dataclass(frozen=True)
class Verdict:
    """How one scan's result is presented: a confident answer, an uncertain one, or none (an unfamiliar scan)."""
    kind: str          # "answer" | "uncertain" | "unfamiliar"
    heading: str       # markdown
    badge: str | None  # short label shown beside the heading
    sentence: str      # markdown: what the state means, in plain words


def verdict(label: str, probability: float, refer_below: float, calibrated: bool,
            familiarity: float | None = None, threshold: float | None = None, evidence: dict | None = None,
            flag_share: float = 0.01, floor: float | None = None, distance_threshold: float | None = None) -> Verdict:
    """The card's heading and message for a prediction of ``label`` at ``probability``.

    A scan whose familiarity score exceeds the threshold gets no answer: its heading is the model's guess, in
    grey. With a probability ``floor`` (a familiarity model of the second form, whose score is the larger of the
    distance over ``distance_threshold`` and the doubt over the floor's), the message says which of the two it was.
    An answer under ``refer_below`` is marked uncertain and never looks like a confident one. ``evidence``: the
    calibration record's count of held-out answers under that level and how many were right."""
    shown = f"{label} {probability:.1%}"
    ordinary = round(100 * (1 - flag_share), 1)
    greyed = ("the model would still name one of its four classes, so the guess and heatmap below are greyed and "
              "should not be read as an answer.")
    if familiarity is not None and threshold is not None and not familiarity <= threshold:
        heading = f":gray[Not answered (the model's guess would be {shown})]"
        if floor is not None and probability < floor:
            return Verdict("unfamiliar", heading, "Model at a loss",
                           f"**The model is at a loss on this scan.** Its best answer has {probability:.1%}, under "
                           f"the floor of {floor:.1%}: answers this unsure are where it goes wrong most often on scans "
                           "from a hospital it has not seen (this check and the distance check together pass about "
                           f"{ordinary:g} in 100 ordinary held-out scans). Asked anyway, {greyed}")
        second = floor is not None and bool(distance_threshold)
        distance, limit = (familiarity * distance_threshold, distance_threshold) if second else (familiarity, threshold)
        passed = (f"set with the probability floor so that about {ordinary:g} in 100 ordinary held-out scans pass "
                  "both" if second else f"which about {ordinary:g} in 100 ordinary held-out scans stay under")
        return Verdict("unfamiliar", heading, "Not a familiar scan",
                       "**Not a brain MRI slice like those the model was trained on?** In the network's own features "
                       f"this image lies farther from the training scans (distance {distance:.1f}) than the "
                       f"threshold ({limit:.1f}), {passed}. Whatever it shows, {greyed}")
    if probability < refer_below:
        if not calibrated:
            meaning = (f"The answer is under {refer_below:.0%}; this model's probabilities are not calibrated, so "
                       "the figure says little about how often such answers are right")
        else:
            meaning = (f"The answer is under {refer_below:.0%}, and this model's probabilities are calibrated: fewer "
                       f"than {round(100 * refer_below)} in 100 answers like it are expected to be right")
            images, correct = (evidence or {}).get("images"), (evidence or {}).get("correct")
            if isinstance(images, int) and isinstance(correct, int) and images > 0:
                meaning += (f" (of the {images:d} held-out scans it gave under {refer_below:.0%}, {correct:d} "
                            "were right)")
        return Verdict("uncertain", f":orange[Uncertain: {shown}?]", "Uncertain: refer",
                       f"**Uncertain: refer.** {meaning}; the answer needs a radiologist's read before it is used, "
                       "and the runner-up below may be the right one.")
    return Verdict("answer", f"{label} — {probability:.1%}", None, "")


def localisation_sentence(runs: list, class_name: str, method: str, layer: str) -> str | None:
    """How often the heatmap (this method and layer) lay on the tumour for this class, measured against the tumour
    outlines in a run of the same model (a held-out split's run first), in words; None when no run measured it."""
    measured = [run for run in runs if class_name in ((run.metrics.get("masks") or {}).get("per_class") or {})
                and run.metrics["masks"].get("method") == method and run.metrics["masks"].get("layer") == layer]
    if not measured:
        return None
    run = sorted(measured, key=lambda r: ("test" not in r.name.lower(), r.name))[0]
    masks = run.metrics["masks"]
    block = masks["per_class"][class_name]
    ours, blob = block["peak_in_dilated"]["mean"], block["blob_peak_in_dilated"]["mean"]
    name = CLASS_LABELS.get(class_name, class_name).lower()
    from core.explain import CAM_METHODS

    known = CAM_METHODS.get(masks["method"])
    return (f"Against tumour outlines ({md(run.name)}), the {md(known.label if known else masks['method'])} "
            f"({md(masks['layer'])}) heatmap's "
            f"hottest point lay on "
            f"the tumour for {ours:.0%} of {block['images']:,} {name} slices; a blob at the image centre scores "
            f"{blob:.0%}.")
