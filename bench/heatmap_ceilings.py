"""How well can a heatmap of each grid size point at the tumour at all? The ceilings of the localisation scores.

    python bench/heatmap_ceilings.py [--data ../shared/datasets/figshare-cheng-br35h] [--split test]

A Grad-CAM map is computed on the explained layer's grid and resized to the 224-pixel input. Its peak can only
lie near a cell's centre, and its heat is a sum of resized cells, so the grid alone caps two of the scores of
core.masks, whatever the network does: ``peak_reachable`` (the tumour grown by 5 px at 224 holds a point where
the resized map can peak) and ``energy_reachable`` (the largest share of heat one cell, and so any mix of cells,
puts inside it). This prints both per tumour class for the grids on offer:

   7 x 7   layer4 at 224 px (output stride 32: today's default)
  10 x 10  layer4 at 320 px
  14 x 14  layer4 with dilated convolutions (output stride 16), or layer3, at 224 px
  28 x 28  layer2 at 224 px

over the tumour slices of one side of the figshare localisation split (assets/splits/figshare-localisation; the
held-out ``test`` side by default), their outlines from the figshare masks beside the dataset. No network is
read: the figures depend on the outlines and the grid alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

GRIDS = (7, 10, 14, 28)
SIZE = 224


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets/figshare-cheng-br35h"))
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    args = parser.parse_args(argv)

    from core.masks import find_mask_root, grown_outline, image_region, mask_path, on_grid, reachable, read_mask

    data = Path(args.data)
    mask_root = find_mask_root(data)
    if mask_root is None:
        print(f"no mask folder beside {data}")
        return 2
    names = [n for n in (ROOT / "assets/splits/figshare-localisation" / f"{args.split}.txt").read_text().split()
             if not n.startswith("notumor/")]
    started = time.perf_counter()
    rows = []
    for name in names:
        outline = mask_path(mask_root, name)
        if outline is None:
            continue
        with Image.open(data / name) as image:
            width, height = image.size
        mask = read_mask(outline, width, height)
        region = image_region(width, height, SIZE)
        grown = grown_outline(mask, SIZE, placed=on_grid(mask, SIZE))[0] & region
        row = {"class": name.split("/")[0]}
        for grid in GRIDS:  # core.masks.score_against_mask's own ceilings, at each grid
            row[f"peak {grid}"], row[f"energy {grid}"] = reachable(grown, region, grid)
        rows.append(row)
    classes = sorted({r["class"] for r in rows})
    print(f"{len(rows)} tumour slices of the {args.split} side with an outline ({time.perf_counter() - started:.0f} s)")
    print(f"{'grid':>8} " + " ".join(f"{c + ' peak':>17} {c + ' energy':>19}" for c in classes))
    for grid in GRIDS:
        cells = []
        for c in classes:
            mine = [r for r in rows if r["class"] == c]
            cells.append(f"{np.mean([r[f'peak {grid}'] for r in mine]):>17.3f} "
                         f"{np.mean([r[f'energy {grid}'] for r in mine]):>19.3f}")
        print(f"{grid:>3} x {grid:<3} " + " ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
