"""How often the familiarity check flags scans, on images that are not brain MRI and on MRI from the datasets.

    python bench/familiarity.py [--checkpoint assets/models/default] [--runs assets/runs]

Images that are not brain MRI, made here (nothing is downloaded):
  photographs  scikit-image's bundled sample images (``skimage.data``), in colour and in grey; its brain MRI
               and the samples that need a download are left out
  noise        uniform, Gaussian, salt-and-pepper and smoothed noise, grey and colour, several sizes
  constant     blank black, white, grey levels and flat colours
  text         lines of text rendered into an image, dark on light and light on dark, and skimage's page/text
  screenshots  the dashboard's own screenshots that the browser test saved in test-artifacts/browser/, whole
               and cropped (run the tests first to have them)
Each image goes through the dashboard's own path: core.sources.read_image, then the classifier's explanation
pass, which gives the familiarity score. The MRI figures come from the evaluation runs in --runs (their
``familiarity`` column), so Testing is not read again here.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]

PHOTOS = ("astronaut", "camera", "cat", "chelsea", "clock", "coffee", "coins", "horse", "hubble_deep_field",
          "immunohistochemistry", "moon", "retina", "rocket", "cell", "brick", "grass", "gravel", "colorwheel",
          "logo", "microaneurysms", "binary_blobs", "checkerboard", "shepp_logan_phantom", "stereo_motorcycle")
WORDS = ("the quick brown fox jumps over the lazy dog while a radiologist reads the report of the morning list "
         "patient name date of birth series description axial post contrast slice thickness").split()


def as_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def photographs() -> list[tuple[str, Image.Image]]:
    import skimage.data

    out = []
    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        if isinstance(array, tuple):
            array = array[0]
        array = np.asarray(array)
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        if array.dtype != np.uint8:
            array = (255 * (array.astype(np.float64) - array.min()) / max(np.ptp(array), 1e-9)).astype(np.uint8)
        if array.ndim == 3 and array.shape[2] == 4:
            array = array[..., :3]
        image = Image.fromarray(array)
        out.append((name, image))
        if image.mode == "RGB":
            out.append((f"{name} (grey)", image.convert("L")))
    return out


def noise(seed: int = 0) -> list[tuple[str, Image.Image]]:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    out = []
    for size in (128, 256, 512):
        out.append((f"uniform grey {size}", Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8))))
        out.append((f"uniform colour {size}", Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))))
        gauss = np.clip(rng.normal(128, 40, (size, size)), 0, 255).astype(np.uint8)
        out.append((f"gaussian grey {size}", Image.fromarray(gauss)))
        pepper = np.where(rng.random((size, size)) < 0.5, 0, 255).astype(np.uint8)
        out.append((f"salt and pepper {size}", Image.fromarray(pepper)))
        for sigma in (2, 8):
            smooth = gaussian_filter(rng.normal(0, 1, (size, size)), sigma)
            smooth = (255 * (smooth - smooth.min()) / np.ptp(smooth)).astype(np.uint8)
            out.append((f"smoothed noise s={sigma} {size}", Image.fromarray(smooth)))
    return out


def constant() -> list[tuple[str, Image.Image]]:
    out = [(f"grey level {v}", Image.new("L", (256, 256), v)) for v in (0, 32, 64, 96, 128, 160, 192, 224, 255)]
    colours = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (240, 220, 40),
               "purple": (140, 40, 160), "teal": (20, 150, 150)}
    out += [(f"flat {name}", Image.new("RGB", (300, 200), rgb)) for name, rgb in colours.items()]
    return out


def text(seed: int = 0) -> list[tuple[str, Image.Image]]:
    import skimage.data

    rng = np.random.default_rng(seed)
    out = [("skimage page", Image.fromarray(skimage.data.page())),
           ("skimage text", Image.fromarray(skimage.data.text()))]
    for k in range(12):
        size = int(rng.choice([14, 20, 28, 40]))
        dark_on_light = k % 2 == 0
        image = Image.new("L", (512, 384), 245 if dark_on_light else 15)
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=size)
        y = 10
        while y < 384 - size:
            line = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))
            draw.text((12, y), line, fill=15 if dark_on_light else 240, font=font)
            y += int(size * 1.5)
        out.append((f"rendered text {size}px {'dark on light' if dark_on_light else 'light on dark'}", image))
    return out


def screenshots() -> list[tuple[str, Image.Image]]:
    out = []
    for path in sorted((ROOT / "test-artifacts" / "browser").glob("*.png")):
        image = Image.open(path).convert("RGB")
        w, h = image.size
        out.append((f"{path.stem}", image))
        out.append((f"{path.stem} (left third)", image.crop((0, 0, w // 3, h))))
        out.append((f"{path.stem} (centre)", image.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4))))
    return out


def scored(classifier, images: list[tuple[str, Image.Image]]) -> list[tuple[str, float | None, str]]:
    """(name, familiarity score, prediction) of each image, read back through the dashboard's image check."""
    from core.explain import explain
    from core.sources import read_image

    rows = []
    for name, image in images:
        try:
            checked = read_image(as_png(image))
        except ValueError as error:  # refused before the model sees it: counts as caught
            rows.append((name, None, f"refused: {error}"))
            continue
        result = explain(classifier, [checked])
        best = result.probabilities[0]
        rows.append((name, float(result.familiarity[0]), f"{classifier.classes[int(best.argmax())]} {best.max():.1%}"))
    return rows


def run_shares(runs: Path) -> None:
    from core.metrics import wilson_interval
    from core.runs import find_runs, read_run

    for path in find_runs(runs):
        run = read_run(path)
        table = run.predictions
        if "unfamiliar" not in table:
            print(f"  {run.name}: no familiarity column (made before the model had a familiarity model)")
            continue
        flagged = table["unfamiliar"].fillna(False).astype(bool)
        low, high = wilson_interval(int(flagged.sum()), len(flagged))
        line = (f"  {run.name}: {int(flagged.sum())} of {len(flagged)} flagged = {flagged.mean():.2%} "
                f"(95% CI {low:.2%}-{high:.2%})")
        if "train_duplicate" in table and table["train_duplicate"].notna().all():
            free = ~table["train_duplicate"].astype(bool)
            line += f"; duplicate-free {int(flagged[free].sum())} of {int(free.sum())} = {flagged[free].mean():.2%}"
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "assets/models/default"))
    parser.add_argument("--runs", default=str(ROOT / "assets/runs"))
    parser.add_argument("--show", action="store_true", help="print every image's score")
    args = parser.parse_args()

    from core import load_classifier
    from core.metrics import wilson_interval
    from core.runtime import cpu_description

    classifier = load_classifier(args.checkpoint)
    if classifier.familiarity is None or classifier.familiarity.threshold is None:
        print(f"{args.checkpoint} has no familiarity threshold; fit one with python -m training.familiarity")
        return 2
    threshold = classifier.familiarity.threshold
    print(f"model: {args.checkpoint}; familiarity threshold {threshold:.2f}; CPU: {cpu_description()}")
    groups = {"photographs": photographs(), "noise": noise(), "constant": constant(), "text": text(),
              "screenshots": screenshots()}
    caught = total = 0
    for group, images in groups.items():
        rows = scored(classifier, images)
        flagged = [r for r in rows if r[1] is None or r[1] > threshold]
        caught, total = caught + len(flagged), total + len(rows)
        print(f"{group:12s} {len(flagged):3d} of {len(rows):3d} flagged or refused"
              + ("" if rows else "  (none: run the browser test first for screenshots)"))
        for name, score, prediction in rows:
            missed = score is not None and score <= threshold
            if missed or args.show:
                state = "MISSED " if missed else "flagged"
                print(f"    {state} {name}: {'refused' if score is None else f'{score:.2f}'} ({prediction})")
    low, high = wilson_interval(caught, total)
    print(f"not brain MRI: {caught} of {total} flagged or refused = {caught / total:.1%} (95% CI {low:.1%}-{high:.1%})")
    print("MRI, from the evaluation runs:")
    run_shares(Path(args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
