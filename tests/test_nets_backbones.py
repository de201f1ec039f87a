"""Backbones against torchvision's naming scheme, its parameter totals and its forward, and the
checkpoint loader's refusals. torchvision itself is not importable here, so its rules are written out.

Width-1 structure checks build the models on the meta device (shapes only, no memory, no init cost);
everything that computes runs at width 0.25 on small inputs.
"""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from handops_models.nets.backbones import ResNet, VGGFront, load_pretrained

VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512)  # to conv4_4
LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


# --------------------------------------------------------------------------- torchvision's rules


def expected_vgg19_features(upto: int = 25) -> dict[str, list[int]]:
    """torchvision vgg19().features: Conv2d(3x3, bias) then ReLU per entry, MaxPool2d per "M"."""
    keys, index, cin = {}, 0, 3
    for v in VGG19_CFG:
        if v == "M":
            index += 1
            continue
        keys[f"features.{index}.weight"] = [v, cin, 3, 3]
        keys[f"features.{index}.bias"] = [v]
        index, cin = index + 2, v
    assert max(int(k.split(".")[1]) for k in keys) == upto
    return keys


def _bn(prefix: str, c: int) -> dict[str, list[int]]:
    return {f"{prefix}.weight": [c], f"{prefix}.bias": [c], f"{prefix}.running_mean": [c],
            f"{prefix}.running_var": [c], f"{prefix}.num_batches_tracked": []}


def expected_resnet(depth: int) -> dict[str, list[int]]:
    """torchvision resnet{depth}() state_dict shapes, from resnet.py's ResNet/_make_layer/blocks."""
    bottleneck = depth >= 50
    expansion = 4 if bottleneck else 1
    keys = {"conv1.weight": [64, 3, 7, 7], **_bn("bn1", 64)}
    inplanes = 64
    for li, (planes, blocks) in enumerate(zip((64, 128, 256, 512), LAYERS[depth])):
        stride = 1 if li == 0 else 2
        for b in range(blocks):
            p = f"layer{li + 1}.{b}"
            if bottleneck:
                keys[f"{p}.conv1.weight"] = [planes, inplanes, 1, 1]
                keys.update(_bn(f"{p}.bn1", planes))
                keys[f"{p}.conv2.weight"] = [planes, planes, 3, 3]
                keys.update(_bn(f"{p}.bn2", planes))
                keys[f"{p}.conv3.weight"] = [planes * 4, planes, 1, 1]
                keys.update(_bn(f"{p}.bn3", planes * 4))
            else:
                keys[f"{p}.conv1.weight"] = [planes, inplanes, 3, 3]
                keys.update(_bn(f"{p}.bn1", planes))
                keys[f"{p}.conv2.weight"] = [planes, planes, 3, 3]
                keys.update(_bn(f"{p}.bn2", planes))
            if b == 0 and (stride != 1 or inplanes != planes * expansion):
                keys[f"{p}.downsample.0.weight"] = [planes * expansion, inplanes, 1, 1]
                keys.update(_bn(f"{p}.downsample.1", planes * expansion))
            inplanes = planes * expansion
    keys["fc.weight"] = [1000, 512 * expansion]
    keys["fc.bias"] = [1000]
    return keys


def shapes(model: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def on_meta(cls, *args, **kwargs):
    with torch.device("meta"):
        return cls(*args, **kwargs)


# --------------------------------------------------------------------------- names, shapes, counts


def test_vgg_front_keys_follow_torchvision_vgg19_features():
    """Rules out: renumbered Sequential (conv-only indices, or vgg19_bn's BatchNorm shifting them), a
    missing pool, a bias-free conv, and extras folded into ``features`` (they would be features.27+)."""
    m = on_meta(VGGFront)
    want = expected_vgg19_features()
    want |= {"extra.0.weight": [512, 512, 3, 3], "extra.0.bias": [512],
             "extra.2.weight": [512, 512, 3, 3], "extra.2.bias": [512],
             "extra.4.weight": [128, 512, 3, 3], "extra.4.bias": [128]}
    assert shapes(m) == want
    assert len(m.features) == 27 and isinstance(m.features[26], nn.ReLU)
    assert [i for i, l in enumerate(m.features) if isinstance(l, nn.MaxPool2d)] == [4, 9, 18]
    assert [i for i, l in enumerate(m.extra) if isinstance(l, nn.ReLU)] == [1, 3, 5]
    assert not any(isinstance(l, nn.BatchNorm2d) for l in m.modules())
    assert m.out_channels == 128 and m.stride == 8
    assert list(on_meta(VGGFront, out_channels=32).state_dict()["extra.4.weight"].shape) == [32, 512, 3, 3]


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_keys_and_shapes_follow_torchvision(depth):
    """Rules out: the shortcut named differently (``shortcut``), a downsample on every block or none on
    layer1 of resnet50 (channels 64 -> 256), a Bottleneck without the x4 expansion, biased convs."""
    m = on_meta(ResNet, depth)
    assert shapes(m) == expected_resnet(depth)
    if depth == 50:
        assert shapes(m)["layer1.0.conv1.weight"] == [64, 64, 1, 1] and shapes(m)["fc.weight"] == [1000, 2048]
        assert m.num_features == 2048
    else:
        assert shapes(m)["fc.weight"] == [1000, 512] and m.num_features == 512
    for name in ("relu", "maxpool", "avgpool"):
        assert hasattr(m, name)
    assert isinstance(m.avgpool, nn.AdaptiveAvgPool2d) and isinstance(m.maxpool, nn.MaxPool2d)


def test_parameter_counts_match_torchvision_totals():
    """Rules out structures with the right key names but wrong sizes anywhere (kernel 7 vs 3 in conv1,
    a missing block in a deep stage, conv biases): torchvision's published totals."""
    counts = {d: sum(p.numel() for p in on_meta(ResNet, d).parameters()) for d in (18, 50, 152)}
    assert counts == {18: 11_689_512, 50: 25_557_032, 152: 60_192_808}
    # VGG-19 to conv4_4 by hand: sum of 9 cin cout + cout over the 12 convs
    chans = [3] + [c for c in VGG19_CFG if c != "M"]
    by_hand = sum(9 * a * b + b for a, b in zip(chans[:-1], chans[1:]))
    assert by_hand == 10_585_152
    # and torchvision's all-16-conv vgg19().features total (20,024,384) minus conv5_1..conv5_4
    assert by_hand == 20_024_384 - 4 * (9 * 512 * 512 + 512)
    m = on_meta(VGGFront)
    assert sum(p.numel() for p in m.features.parameters()) == by_hand
    assert sum(p.numel() for p in m.extra.parameters()) == 2 * (9 * 512 * 512 + 512) + 9 * 512 * 128 + 128


def test_unsupported_depth_and_bad_arguments():
    """Rules out silently building the nearest depth (e.g. 20 -> 18) or a zero-channel net."""
    with pytest.raises(ValueError, match=r"18, 34, 50, 101, 152.*got 20"):
        ResNet(20)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="width"):
            ResNet(18, width=bad)
        with pytest.raises(ValueError, match="width"):
            VGGFront(width=bad)
    with pytest.raises(ValueError, match="out_channels"):
        VGGFront(out_channels=0)


def test_width_rounding_and_floor_of_one():
    """Rules out truncation instead of rounding (64 * 0.3 = 19.2 -> 19 either way, but 128 * 0.3 = 38.4,
    256 * 0.3 = 76.8 -> 77 not 76) and a zero-channel layer at tiny widths."""
    m = on_meta(VGGFront, width=0.3, out_channels=7)
    convs = [l.out_channels for l in m.features if isinstance(l, nn.Conv2d)]
    assert convs == [19, 19, 38, 38, 77, 77, 77, 77, 154, 154, 154, 154]
    assert [l.out_channels for l in m.extra if isinstance(l, nn.Conv2d)] == [154, 154, 7]
    tiny = on_meta(VGGFront, width=1e-3)
    assert all(l.out_channels == 1 for l in tiny.features if isinstance(l, nn.Conv2d))
    r = on_meta(ResNet, 50, width=0.3)  # base round(19.2) = 19, stages 19, 38, 76, 152
    assert r.conv1.out_channels == 19 and r.layer4[0].conv1.out_channels == 152 and r.num_features == 608


# --------------------------------------------------------------------------- forward behaviour


def test_vgg_front_output_shapes():
    """Rules out a stride other than 8 (a fourth pool, or pool5 kept) and ceil-mode pooling."""
    assert on_meta(VGGFront)(torch.empty(2, 3, 368, 368, device="meta")).shape == (2, 128, 46, 46)
    m = VGGFront(width=0.25)
    with torch.no_grad():
        assert m(torch.randn(2, 3, 368, 368)).shape == (2, 128, 46, 46)
        assert m(torch.randn(1, 3, 71, 63)).shape == (1, 128, 8, 7)  # floor at each pool
        assert VGGFront(width=0.25, out_channels=21)(torch.randn(1, 3, 64, 64)).shape == (1, 21, 8, 8)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        m(torch.randn(1, 3, 4, 64))


def test_resnet_output_shapes():
    """Rules out forward_features returning the unpooled map or fc applied twice / not at all."""
    m = ResNet(18).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 224, 224)).shape == (2, 1000)
    m = ResNet(50, num_classes=7, width=0.25).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = m.forward_features(x)
        assert f.shape == (2, m.num_features) == (2, 512)
        assert torch.equal(m(x), m.fc(f))


def test_bottleneck_stride_is_on_the_3x3_conv():
    """Rules out ResNet v1 (stride on conv1, the 1x1), which has identical keys and shapes."""
    m = ResNet(50, width=0.25).eval()
    sizes = {}
    for name in ("layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0"):
        m.get_submodule(name).register_forward_hook(lambda mod, i, o, n=name: sizes.__setitem__(n, o.shape[-1]))
    with torch.no_grad():
        m(torch.randn(1, 3, 64, 64))
    assert sizes == {"layer2.0.conv1": 16, "layer2.0.conv2": 8, "layer2.0.downsample.0": 8}


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=g))


def reference_resnet(sd: dict, x: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's ResNet.forward (eval mode) written functionally from a state dict."""
    def bn(t, p):
        return F.batch_norm(t, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                            sd[f"{p}.bias"], False, 0.0, 1e-5)

    x = F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for li, blocks in enumerate(LAYERS[depth]):
        for b in range(blocks):
            p, s = f"layer{li + 1}.{b}", (2 if li > 0 and b == 0 else 1)
            if depth >= 50:
                out = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
                out = F.relu(bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=s, padding=1), f"{p}.bn2"))
                out = bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
            else:
                out = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=s, padding=1), f"{p}.bn1"))
                out = bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
            if f"{p}.downsample.0.weight" in sd:
                x = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=s), f"{p}.downsample.1")
            x = F.relu(out + x)
    feats = x.mean((2, 3))
    return feats, F.linear(feats, sd["fc.weight"], sd["fc.bias"])


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_forward_matches_torchvision_forward(depth):
    """Rules out orderings that keep the keys: ReLU before the residual add (or none after it), the
    maxpool skipped, max instead of average pooling, BN applied after the add."""
    torch.manual_seed(depth)
    m = ResNet(depth, num_classes=10, width=0.25).double().eval()
    with torch.no_grad():
        _randomise_bn(m)
        x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
        feats, logits = reference_resnet(m.state_dict(), x, depth)
        torch.testing.assert_close(m.forward_features(x), feats, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(m(x), logits, rtol=1e-10, atol=1e-12)


def test_vgg_front_forward_matches_conv_relu_pool_sequence():
    """Rules out a missing ReLU after the last conv (conv5_3 has one in the CPM code) or a misplaced pool."""
    torch.manual_seed(0)
    m = VGGFront(width=0.25, out_channels=16).double()
    sd = m.state_dict()
    x = torch.randn(1, 3, 40, 48, dtype=torch.float64)
    y, index = x, 0
    for v in VGG19_CFG:
        if v == "M":
            y, index = F.max_pool2d(y, 2, 2), index + 1
        else:
            y = F.relu(F.conv2d(y, sd[f"features.{index}.weight"], sd[f"features.{index}.bias"], padding=1))
            index += 2
    for i in (0, 2, 4):
        y = F.relu(F.conv2d(y, sd[f"extra.{i}.weight"], sd[f"extra.{i}.bias"], padding=1))
    with torch.no_grad():
        torch.testing.assert_close(m(x), y, rtol=1e-10, atol=1e-12)


def test_initialisation_is_torchvisions():
    """Rules out PyTorch's default conv init (kaiming uniform, a = sqrt(5): std 1/sqrt(3 fan_in)) and
    fan_in instead of fan_out; BN weight 1, bias 0; VGG conv biases 0."""
    torch.manual_seed(0)
    m = ResNet(18)
    w = m.layer2[0].conv1.weight  # 64 -> 128, 3x3: fan_in 576, fan_out 1152
    want = (2 / 1152) ** 0.5  # fan_in would give 0.0589, the default init 0.0241
    assert abs(w.std().item() / want - 1) < 0.02
    assert torch.equal(m.bn1.weight, torch.ones(64)) and torch.equal(m.layer3[1].bn2.bias, torch.zeros(256))
    v = VGGFront(width=0.25)
    w = v.features[21].weight  # 128 -> 128 at width 0.25, fan_out 1152
    assert abs(w.std().item() / (2 / 1152) ** 0.5 - 1) < 0.03
    assert all(torch.equal(l.bias, torch.zeros_like(l.bias)) for l in v.modules() if isinstance(l, nn.Conv2d))


# --------------------------------------------------------------------------- load_pretrained


def small_resnet(seed: int, **kwargs) -> ResNet:
    torch.manual_seed(seed)
    m = ResNet(18, width=0.25, **kwargs)
    with torch.no_grad():
        _randomise_bn(m, seed)
    return m.eval()


def test_round_trip_resnet_and_wrappers(tmp_path):
    """Rules out a loader that does nothing (the fresh model differs before loading) or that reads only
    parameters and leaves the BN running statistics behind."""
    src = small_resnet(1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = src(x)
    for i, payload in enumerate([src.state_dict(), {"state_dict": src.state_dict(), "epoch": 3},
                                 {"model": src.state_dict()}]):
        path = tmp_path / f"ckpt{i}.pth"
        torch.save(payload, path)
        dst = small_resnet(2)
        with torch.no_grad():
            assert not torch.allclose(dst(x), want)
            assert load_pretrained(dst, path) is dst
            assert torch.equal(dst(x), want)


def test_round_trip_vgg_front_and_imagenet_vgg19_layout(tmp_path):
    """A saved VGGFront loads whole; a vgg19 checkpoint (features.0..34 + classifier) loads features.0..25
    and leaves ``extra`` at its initialisation. Rules out refusing the full vgg19 file, and loading the
    vgg19 conv5_x weights into ``extra`` by position."""
    torch.manual_seed(0)
    src, dst = VGGFront(width=0.25), VGGFront(width=0.25)
    x = torch.randn(1, 3, 32, 32)
    torch.save(src.state_dict(), tmp_path / "front.pth")
    load_pretrained(dst, tmp_path / "front.pth")
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))

    full = {k: v for k, v in src.state_dict().items() if k.startswith("features.")}
    for i in (28, 30, 32, 34):  # conv5_1..conv5_4 of vgg19 (width 0.25)
        full[f"features.{i}.weight"], full[f"features.{i}.bias"] = torch.randn(128, 128, 3, 3), torch.randn(128)
    full |= {"classifier.0.weight": torch.randn(4, 8), "classifier.0.bias": torch.randn(4),
             "classifier.6.weight": torch.randn(10, 4), "classifier.6.bias": torch.randn(10)}
    torch.save(full, tmp_path / "vgg19.pth")
    torch.manual_seed(5)
    fresh = VGGFront(width=0.25)
    extra_before = {k: v.clone() for k, v in fresh.extra.state_dict().items()}
    load_pretrained(fresh, tmp_path / "vgg19.pth")
    for k, v in fresh.features.state_dict().items():
        assert torch.equal(v, full[f"features.{k}"])
    for k, v in fresh.extra.state_dict().items():
        assert torch.equal(v, extra_before[k])


def test_old_checkpoint_without_num_batches_tracked_loads(tmp_path):
    """torchvision's original resnet files predate num_batches_tracked; rules out reporting them missing."""
    src = small_resnet(1)
    torch.save({k: v for k, v in src.state_dict().items() if "num_batches_tracked" not in k}, tmp_path / "old.pth")
    dst = load_pretrained(small_resnet(2), tmp_path / "old.pth")
    assert torch.equal(dst.layer1[0].bn1.running_mean, src.layer1[0].bn1.running_mean)


def test_mismatches_are_listed_and_nothing_is_loaded(tmp_path):
    """Rules out torch's first-error-only message, a partial load before the error, and silently
    ignoring an extra key."""
    src = small_resnet(1)
    sd = src.state_dict()
    del sd["layer1.0.conv1.weight"]
    sd["layer9.0.conv1.weight"] = torch.zeros(1)
    sd["fc.weight"] = torch.zeros(3, 128)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    dst = small_resnet(2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load_pretrained(dst, path)
    msg = str(info.value)
    assert str(path) in msg
    assert re.search(r"missing keys \(1\):\s+layer1\.0\.conv1\.weight", msg)
    assert re.search(r"unexpected keys \(1\):\s+layer9\.0\.conv1\.weight", msg)
    assert "fc.weight: checkpoint [3, 128] vs model [1000, 128]" in msg
    assert all(torch.equal(v, before[k]) for k, v in dst.state_dict().items())


def test_long_lists_are_truncated_with_a_count(tmp_path):
    torch.save({"fc.bias": torch.zeros(1000)}, tmp_path / "one.pth")
    with pytest.raises(ValueError) as info:
        load_pretrained(small_resnet(0), tmp_path / "one.pth")
    total = len(small_resnet(0).state_dict()) - 1 - 20  # 20 num_batches_tracked may be absent
    assert f"missing keys ({total}):" in str(info.value)
    assert f"... and {total - 10} more" in str(info.value)


def test_skip_prefixes_and_strict_false(tmp_path):
    """skip=("fc.",) loads a 1000-class checkpoint into a 10-class net and keeps its fc; rules out a
    ``skip`` string iterated per character and strict=False hiding shape mismatches."""
    src = small_resnet(1)
    torch.save(src.state_dict(), tmp_path / "in1k.pth")
    dst = small_resnet(2, num_classes=10)
    fc_before = dst.fc.weight.clone()
    with pytest.raises(ValueError, match=r"fc\.weight: checkpoint \[1000, 128\] vs model \[10, 128\]"):
        load_pretrained(dst, tmp_path / "in1k.pth")
    load_pretrained(dst, tmp_path / "in1k.pth", skip=("fc.",))
    assert torch.equal(dst.fc.weight, fc_before) and torch.equal(dst.conv1.weight, src.conv1.weight)
    with pytest.raises(TypeError, match="skip"):
        load_pretrained(dst, tmp_path / "in1k.pth", skip="fc.")

    sd = src.state_dict()
    del sd["conv1.weight"]
    sd["extra_key"] = torch.zeros(1)
    torch.save(sd, tmp_path / "partial.pth")
    dst = small_resnet(2)
    conv1_before = dst.conv1.weight.clone()
    load_pretrained(dst, tmp_path / "partial.pth", strict=False)
    assert torch.equal(dst.conv1.weight, conv1_before) and torch.equal(dst.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_pretrained(small_resnet(2, num_classes=10), tmp_path / "in1k.pth", strict=False)


def test_width_mismatch_mentions_width(tmp_path):
    """Rules out a bare shape listing that leaves the user guessing why ImageNet weights do not fit."""
    torch.save(on_meta(ResNet, 18).to_empty(device="cpu").state_dict(), tmp_path / "w1.pth")
    with pytest.raises(ValueError) as info:
        load_pretrained(ResNet(18, width=0.5), tmp_path / "w1.pth")
    msg = str(info.value)
    assert "width=0.5" in msg and "conv1.weight: checkpoint [64, 3, 7, 7] vs model [32, 3, 7, 7]" in msg
    with pytest.raises(ValueError) as info:  # a width-1 model whose mismatch is elsewhere: no width note
        load_pretrained(on_meta(ResNet, 18, num_classes=10), tmp_path / "w1.pth")
    assert "fc.weight: checkpoint [1000, 512] vs model [10, 512]" in str(info.value)
    assert "width=" not in str(info.value)


class _CreatesMarker:
    """Unpickling this calls open(path, "w"): arbitrary code a malicious .pth could run."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_code_in_a_pickle_is_refused_and_not_run(tmp_path):
    """Rules out torch.load(weights_only=False) (or pickle.load): the payload would run on load."""
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": _CreatesMarker(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"evil\.pth.*weights_only"):
        load_pretrained(small_resnet(0), tmp_path / "evil.pth")
    assert not marker.exists()
    # control: the payload is live, an unsafe load does create the file
    control = tmp_path / "control"
    torch.save({"conv1.weight": _CreatesMarker(str(control))}, tmp_path / "control.pth")
    torch.load(tmp_path / "control.pth", weights_only=False)["conv1.weight"].close()
    assert control.exists()


def test_unreadable_and_non_state_dict_files(tmp_path):
    """Rules out raw torch/zip errors (or a KeyError deep in load_state_dict) that do not name the file."""
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_pretrained(small_resnet(0), tmp_path / "nowhere.pth")
    torch.save(small_resnet(0).state_dict(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"could not read checkpoint .*cut\.pth"):
        load_pretrained(small_resnet(0), tmp_path / "cut.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pth"):
        load_pretrained(small_resnet(0), tmp_path / "empty.pth")
    for name, payload in [("list.pth", [1, 2]), ("tensor.pth", torch.zeros(3)), ("ints.pth", {"conv1.weight": 3}),
                          ("empty_dict.pth", {})]:
        torch.save(payload, tmp_path / name)
        with pytest.raises(ValueError, match=rf"{re.escape(name)}.*not a state dict"):
            load_pretrained(small_resnet(0), tmp_path / name)
