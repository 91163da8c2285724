import torch

import pytest

from core.model import (build_resnet50, freeze_backbone_batchnorm, frozen_prefixes, layerwise_parameter_groups,
                        set_backbone_trainable)


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


def test_frozen_stages_stay_frozen_and_out_of_the_optimizer():
    assert frozen_prefixes(0) == ()
    assert frozen_prefixes(1) == ("conv1", "bn1", "layer1")
    assert frozen_prefixes(2) == ("conv1", "bn1", "layer1", "layer2")
    with pytest.raises(ValueError, match="between 0 and 4"):
        frozen_prefixes(5)
    model = build_resnet50(4)
    set_backbone_trainable(model, True, frozen_prefixes(1))
    frozen = {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1"}
    groups = {g["name"]: g for g in layerwise_parameter_groups(model, 1e-3, 4e-4, 0.5, 0.05)}
    assert groups["layer1"]["params"] == [] and groups["layer1.no_decay"]["params"] == []
    assert sum(len(g["params"]) for g in groups.values()) == sum(p.requires_grad for p in model.parameters())


def test_only_the_named_stages_keep_their_batchnorm_statistics():
    model = build_resnet50(4).train()
    freeze_backbone_batchnorm(model, frozen_prefixes(1))
    assert not model.bn1.training and not model.layer1[0].bn1.training
    assert model.layer2[0].bn1.training and model.layer4[2].bn3.training
    freeze_backbone_batchnorm(model)
    assert not model.layer4[2].bn3.training
