import pytest
import torch

from core.model import build_resnet50, freeze_backbone_batchnorm, layerwise_parameter_groups, set_backbone_trainable


def test_original_resnet_puts_the_stride_on_the_first_1x1_convolution():
    v15 = build_resnet50(4, "3x3")
    v1 = build_resnet50(4, "1x1")
    assert v15.layer2[0].conv2.stride == (2, 2) and v15.layer2[0].conv1.stride == (1, 1)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert v1.layer1[0].conv1.stride == (1, 1)
    v1.load_state_dict(v15.state_dict())  # same names and shapes
    with torch.no_grad():
        assert v1.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 4)


def test_freezing_leaves_only_the_head_trainable():
    model = build_resnet50(4)
    set_backbone_trainable(model, False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}


def test_layerwise_rates_decay_towards_the_stem_and_skip_decay_on_norms():
    model = build_resnet50(4)
    groups = {g["name"]: g for g in layerwise_parameter_groups(model, 1e-3, 4e-4, 0.5, 0.05)}
    assert groups["fc"]["lr"] == 1e-3
    assert [groups[n]["lr"] for n in ("layer4", "layer3", "layer2", "layer1")] == [4e-4, 2e-4, 1e-4, 5e-5]
    assert groups["layer1.no_decay"]["weight_decay"] == 0.0
    counted = sum(len(g["params"]) for g in groups.values())
    assert counted == len(list(model.parameters()))


def test_a_frozen_backbone_keeps_its_batchnorm_statistics_and_the_head_trains():
    model = build_resnet50(4).train()
    freeze_backbone_batchnorm(model)
    assert not model.bn1.training and not model.layer4[2].bn3.training and model.fc.training


def test_folding_batchnorm_keeps_the_function_and_the_module_names():
    from core.model import fold_batchnorm

    torch.manual_seed(0)
    model = build_resnet50(4)
    with torch.no_grad():  # statistics as training leaves them, not the identity a new BatchNorm starts with
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    model.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(images)
        folded = fold_batchnorm(model)
        after = folded(images)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert hasattr(folded, "layer4") and folded.layer4[0].conv1.bias is not None
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(build_resnet50(4).train())
