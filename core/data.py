"""Datasets on disk: class-per-folder trees, canonical class names, image decoding and preprocessing.

Layouts read:

* the Kaggle release: ``<root>/Training/<class>/*`` and ``<root>/Testing/<class>/*``;
* a single tree ``<root>/<class>/*`` (to be split, or evaluated whole).

Class folder names differ between public releases (``glioma_tumor``, ``no-tumor``, ...); they are mapped
to :data:`CLASSES`. Folders that map to no class are reported, never guessed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.grid import square_geometry
from core.masks import on_grid, read_mask
from core.sources import FileRefused, prepare_image, read_bytes, read_image
from core.sources.files import printable
from core.sources.images import VOLUME_SUFFIXES

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
CLASS_LABELS = {"glioma": "Glioma", "meningioma": "Meningioma", "notumor": "No tumour",
                "pituitary": "Pituitary tumour"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp")
TRAIN_DIRS = ("training", "train")
TEST_DIRS = ("testing", "test")

_ALIASES = {
    "glioma": "glioma", "gliomatumor": "glioma", "gliomatumour": "glioma",
    "meningioma": "meningioma", "meningiomatumor": "meningioma", "meningiomatumour": "meningioma",
    "notumor": "notumor", "notumour": "notumor", "notumors": "notumor", "normal": "notumor",
    "pituitary": "pituitary", "pituitarytumor": "pituitary", "pituitarytumour": "pituitary",
    "pituitaryadenoma": "pituitary",
}


class DatasetError(ValueError):
    """A dataset cannot be used as given; the message says what is wrong and what to do."""


def canonical_class(folder_name: str) -> str | None:
    """``'Glioma_Tumor'`` -> ``'glioma'``; ``None`` for a name that is no known class."""
    return _ALIASES.get(re.sub(r"[\s_\-]+", "", folder_name.lower()))


@dataclass(frozen=True)
class Sample:
    path: Path          # absolute path of the image file
    label: int          # index into CLASSES
    relpath: str        # path relative to the dataset root, with forward slashes

    @property
    def class_name(self) -> str:
        return CLASSES[self.label]


@dataclass
class ClassFolderTree:
    """The images of one class-per-folder tree, and everything that did not fit."""

    root: Path
    samples: list[Sample]
    folders: dict[str, str] = field(default_factory=dict)       # folder name -> canonical class
    unknown_folders: list[str] = field(default_factory=list)
    other_files: list[str] = field(default_factory=list)        # non-image files in class folders
    refused: list[dict] = field(default_factory=list)           # {"path", "reason"}: images that cannot be named
    patients: dict[str, str] = field(default_factory=dict)      # relpath -> patient, where the data says (figshare)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(CLASSES, 0)
        for sample in self.samples:
            counts[sample.class_name] += 1
        return counts


def _child_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_split_dirs(root: str | os.PathLike) -> tuple[Path | None, Path | None]:
    """Return the ``Training``-like and ``Testing``-like folders of ``root`` (either may be None)."""
    root = Path(root)
    train = test = None
    for child in _child_dirs(root):
        if child.name.lower() in TRAIN_DIRS:
            train = child
        elif child.name.lower() in TEST_DIRS:
            test = child
    return train, test


def scan_class_folders(root: str | os.PathLike) -> ClassFolderTree:
    """List the images of a class-per-folder tree, mapping folder names to :data:`CLASSES`.

    Raises :class:`DatasetError` when the path is missing, when no folder is a known class, when two
    folders map to the same class, or when a class folder holds no image.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist; check the path")
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a dataset folder of class sub-folders")
    from core.sources import figshare

    if figshare.is_release(root):
        return release_tree(root)
    tree = ClassFolderTree(root=root.resolve(), samples=[])
    for folder in _child_dirs(root):
        name = canonical_class(folder.name)
        if name is None:
            tree.unknown_folders.append(printable(folder.name))
            continue
        if name in tree.folders.values():
            other = next(k for k, v in tree.folders.items() if v == name)
            raise DatasetError(f"folders '{other}' and '{folder.name}' in {root} both mean class '{name}'; "
                               "merge them or remove one")
        tree.folders[folder.name] = name
        found = 0
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.startswith("."):
                    continue
                path = Path(dirpath) / filename
                rel = path.relative_to(root).as_posix()
                if path.suffix.lower() not in IMAGE_EXTENSIONS and not _is_scan_file(path):
                    tree.other_files.append(printable(rel))
                elif not _is_utf8(rel):  # it could be named in no run, log or CSV
                    tree.refused.append({"path": printable(rel), "reason": "the file name is not valid UTF-8; "
                                                                           "rename the file"})
                else:
                    # Not resolved: a symbolic link stays as named (one that loops is refused when it is read).
                    tree.samples.append(Sample(Path(os.path.abspath(path)), CLASSES.index(name), rel))
                    found += 1
        if found == 0:
            raise DatasetError(f"class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                               "add images or remove the folder")
    if not tree.folders:
        hint = f" (found: {', '.join(tree.unknown_folders)})" if tree.unknown_folders else ""
        train, _ = find_split_dirs(root)
        if train is not None:
            hint += f"; it looks like a release with a split, use {train}"
        raise DatasetError(f"{root} has no class folders named like {', '.join(CLASSES)}{hint}")
    return tree


# --------------------------------------------------------------------------------------------------
# Decoding and preprocessing


def release_tree(root: Path) -> ClassFolderTree:
    """The figshare release as published (core.sources.figshare): its numbered .mat slices, each labelled and given
    its patient from inside the file; a file that is not a readable slice is listed as refused."""
    from core.sources import figshare

    tree = ClassFolderTree(root=root.resolve(), samples=[])
    for path in figshare.release_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            label, patient = figshare.read_label(path)
        except (ValueError, OSError) as error:
            tree.refused.append({"path": printable(rel), "reason": str(error)})
            continue
        tree.samples.append(Sample(Path(os.path.abspath(path)), CLASSES.index(label), rel))
        tree.patients[rel] = patient
    if not tree.samples:
        raise DatasetError(f"{root} looks like the figshare release but holds no readable slice (.mat)")
    tree.folders = {name: name for name in sorted({s.class_name for s in tree.samples})}
    return tree


def _is_scan_file(path: Path) -> bool:
    """A DICOM file (named .dcm, or with no extension and the 'DICM' marker, as scanners write them) or a NIfTI
    file: read as the slice it stands for (core.sources.volumes.stated_slice)."""
    name = path.name.lower()
    if name.endswith(VOLUME_SUFFIXES):
        return True
    if path.suffix:
        return False
    from core.sources import open_regular
    from core.sources.volumes import MAX_SCAN_BYTES

    try:
        with open_regular(path, MAX_SCAN_BYTES, "file") as handle:  # a FIFO or device is refused, never waited on
            return handle.read(132)[128:132] == b"DICM"
    except (FileRefused, OSError):
        return False


def _is_utf8(name: str) -> bool:
    """Whether a name read from the file system decodes as UTF-8 (undecodable bytes arrive as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def pad_to_square(image: Image.Image) -> Image.Image:
    """Centre the image on a black square, so that resizing keeps the whole slice and its proportions."""
    width, height = image.size
    if width == height:
        return image
    _, dx, dy = square_geometry(width, height, 1)
    canvas = Image.new("RGB", (max(width, height),) * 2)
    canvas.paste(image, (dx, dy))
    return canvas


def preprocess_uint8(image: Image.Image, size: int) -> torch.Tensor:
    """PIL image -> uint8 tensor (3, size, size): checked and converted by
    :func:`core.sources.prepare_image` (so any image costs bounded memory), padded to a square, then resized
    (antialiased). Raises :class:`core.sources.ImageRefused` for an image the model must not be shown."""
    image = pad_to_square(prepare_image(image))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def normalize(batch_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 normalised with ``mean``/``std`` given for the 0-1 range."""
    mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (batch_uint8.float().div_(255.0) - mean) / std


MAX_BOX_FILE_BYTES = 1 << 20  # a box file holds a line or a few


def read_yolo_boxes(image_path: str | os.PathLike) -> list[tuple[float, float, float, float]] | None:
    """Tumour boxes from the YOLO sidecar (same stem, ``.txt``) of an image: ``[(x_centre, y_centre, width,
    height), ...]`` normalised to the image. None when there is no sidecar; [] when it is empty (no tumour).
    Raises ``ValueError`` naming the file and line when a line is not a valid box."""
    sidecar = Path(image_path).with_suffix(".txt")
    if not sidecar.is_file():
        return None
    try:
        text = read_bytes(sidecar, MAX_BOX_FILE_BYTES, "box file").decode("utf-8", errors="replace")
    except FileRefused as error:
        raise ValueError(str(error)) from None
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields[1:5]]
        except ValueError:
            values = []
        if len(fields) != 5 or len(values) != 4 or not all(0.0 <= v <= 1.0 for v in values) \
                or values[2] <= 0 or values[3] <= 0:
            raise ValueError(f"{printable(sidecar)}, line {number}: expected 'label x_centre y_centre width height' "
                             f"with values in [0, 1], got {line.strip()!r}")
        boxes.append(tuple(values))
    return boxes


class ImageFolderDataset(torch.utils.data.Dataset):
    """Samples -> (uint8 tensor (3, size, size), label). ``transform`` acts on the uint8 tensor.

    With ``masks`` (sample index -> tumour outline file, :mod:`core.guidance`), every item is (image, label,
    outline (1, size, size) uint8 of 0 and 1 on the same grid, whether it has one), and the transform moves the
    outline with the image."""

    def __init__(self, samples: list[Sample], size: int, transform=None, masks: dict | None = None):
        self.samples = list(samples)
        self.size = size
        self.transform = transform
        self.masks = masks

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        outline = None if self.masks is None else self.masks.get(index)
        try:
            image = read_image(sample.path)
            tensor = preprocess_uint8(image, self.size)
            if outline is not None:
                outline = torch.from_numpy(on_grid(read_mask(outline, image.width, image.height, image.info),
                                                   self.size))
        except ValueError as error:  # checked once before training; the file changed since
            raise DatasetError(f"{printable(sample.path)}: {error}") from None
        if self.masks is None:
            return (self.transform(tensor) if self.transform is not None else tensor), sample.label
        from torchvision import tv_tensors

        mask = (outline if outline is not None else torch.zeros((self.size, self.size), dtype=torch.bool))
        mask = tv_tensors.Mask(mask[None].to(torch.uint8))
        if self.transform is not None:
            tensor, mask = self.transform(tv_tensors.Image(tensor), mask)
        mask = torch.as_tensor(mask)
        # An outline lost on the way (a tiny tumour under the resize, or moved out of the frame) guides nothing.
        return torch.as_tensor(tensor), sample.label, mask, bool(outline is not None and mask.any())


def training_augmentation(rotation: float = 10.0, scale: tuple[float, float] = (0.9, 1.1),
                          translate: float = 0.05, brightness: float = 0.2, contrast: float = 0.2,
                          hflip: float = 0.5, mri: tuple[str, ...] = (), mri_probability: float = 0.25):
    """MRI-sensible augmentation on uint8 tensors.

    Small rotations, scalings and shifts (patient positioning), left-right flips (the brain is roughly
    symmetric and tumours occur on either side), brightness and contrast (scanner and windowing
    differences). No vertical flips or large rotations: they produce anatomy no scanner shows. Then, where
    ``mri`` names them, the appearance of another scanner (:mod:`core.augment`: bias field, motion, noise, ...),
    each with ``mri_probability``, after the geometry, as a scanner acquires the patient where they lie.
    """
    from torchvision.transforms import v2

    from core.augment import mri_augmentation

    appearance = mri_augmentation(tuple(mri), mri_probability)
    return v2.Compose([
        v2.RandomHorizontalFlip(hflip),
        v2.RandomAffine(degrees=rotation, translate=(translate, translate), scale=scale,
                        interpolation=v2.InterpolationMode.BILINEAR),
        *([appearance] if appearance is not None else []),
        v2.ColorJitter(brightness=brightness, contrast=contrast),
    ])


MAX_LISTING_BYTES = 16 << 20  # a list of image paths (a split's side): a million names and more


def read_listing(listing: str | os.PathLike, what: str = "--files") -> set[str]:
    """The image paths a list file names: one a line, ``#`` starts a comment, blank lines ignored."""
    try:
        text = read_bytes(listing, MAX_LISTING_BYTES, "list of files").decode("utf-8")
    except (OSError, ValueError) as error:
        raise DatasetError(f"{what}: {error}") from None
    return {line.split("#", 1)[0].strip() for line in text.splitlines()} - {""}


def only_listed(tree: ClassFolderTree, prefix: str, listing: str | os.PathLike) -> ClassFolderTree:
    """The tree with only the images a list file names (relative to the dataset root or to the evaluated tree;
    :func:`read_listing`). A name that is not in the tree is an error: a split that no longer fits its dataset
    must not be evaluated silently in part."""
    from dataclasses import replace

    wanted = read_listing(listing)
    if prefix:
        wanted = {name[len(prefix) + 1:] if name.startswith(prefix + "/") else name for name in wanted}
    known = {s.relpath for s in tree.samples}
    missing = sorted(wanted - known)
    if missing:
        raise DatasetError(f"--files names {len(missing)} image(s) that are not in {printable(tree.root)}, e.g. "
                           f"{printable(missing[0])}")
    if not wanted:
        raise DatasetError(f"--files {printable(listing)} names no image")
    return replace(tree, samples=[s for s in tree.samples if s.relpath in wanted])
