"""tinycnn.prune: structured channel pruning gives a smaller model that computes what it should.

* Exactness: channels whose last batch norms have gamma = beta = 0 output exactly 0 (after ReLU/ReLU6, or
  in a linear bottleneck), so pruning exactly those (criterion "bn" ranks them lowest) leaves the logits
  unchanged to float64 rounding, for MobileNet V1, V2, MobileNeXt, ResNet-18/50 and SE-ResNet-18; with
  tied="prune" also for the channels tied to shortcuts (every BN that writes into them zeroed: the sum of
  zeros is zero), MobileNeXt's partial shortcut included.
* Cost: the profiler's parameters and MACs of the pruned model equal a prediction made from the channel
  counts alone (each conv/linear layer scales with kept inputs x kept outputs, each BN with its channels).
* The pruned architecture is saved with the weights and rebuilt by load_pruned; bad files are refused.
"""
import numpy as np
import pytest

from tinycnn import io, models, nn, profile, prune
from helpers import randomise_batch_norms

INPUT = (1, 3, 32, 32)
FAMILIES = [("mobilenet_v1", {"width_mult": 0.25}), ("mobilenet_v2", {"width_mult": 0.25}),
            ("mobilenext", {"width_mult": 0.25}), ("resnet18", {"width_mult": 0.25}),
            ("resnet50", {"width_mult": 0.125}), ("se_resnet18", {"width_mult": 0.25})]
# tied="prune": the families whose shortcut channels are pruned (MobileNeXt also with its partial shortcut)
TIED_FAMILIES = [("mobilenet_v2", {"width_mult": 0.25}), ("resnet18", {"width_mult": 0.25}),
                 ("resnet50", {"width_mult": 0.125}), ("mobilenext", {"width_mult": 0.25}),
                 ("mobilenext", {"width_mult": 0.25, "identity_tensor_multiplier": 0.5})]
TIED_IDS = ["mobilenet_v2", "resnet18", "resnet50", "mobilenext", "mobilenext_half_identity"]


def _model(name, kwargs, rng, dtype=np.float64):
    nn.init.manual_seed(0)
    model = models.get_model(name, num_classes=7, **kwargs)
    randomise_batch_norms(model, rng)                  # gamma in [0.5, 1.5): no channel is accidentally dead
    return model.to(dtype).eval()


def _kill_channels(model, rng, amount, tied):
    """Zero gamma and beta of random channels in every group's last BNs; ``{group: dead indices}``.

    The last BN of each writer (the one whose output is added into the channels, through ReLU/ReLU6 or
    linearly) and of each reader's depthwise convolution (MobileNeXt's ``depthwise_in`` reads a tied
    tensor through its own BN, whose constant output on a dead channel is not 0).
    """
    dead = {}
    for group in prune.channel_groups(model, tied):
        count = int(np.floor(amount * group.channels))
        chosen = np.sort(rng.choice(group.channels, count, replace=False))
        for bn in group.last_batch_norms:
            bn.weight.data[chosen] = 0.0
            bn.bias.data[chosen] = 0.0
        dead[group.name] = chosen
    return dead


def _check_dead_channels_pruned_exactly(model, rng, tied):
    amount = 0.5
    dead = _kill_channels(model, rng, amount, tied)
    x = rng.standard_normal((2,) + INPUT[1:])
    expected = model(x)
    pruned = prune.prune_channels(model, amount, criterion="bn", tied=tied).eval()
    assert set(pruned.pruned_indices) == set(dead)
    for group_name, chosen in dead.items():
        assert not set(chosen) & set(pruned.pruned_indices[group_name])     # exactly the dead ones went
    # float64 throughout: the pruned network adds the same nonzero terms, in the same order, minus exact zeros
    np.testing.assert_allclose(pruned(x), expected, rtol=1e-10, atol=1e-10)
    assert profile(pruned, INPUT).params < profile(model, INPUT).params
    return pruned


@pytest.mark.parametrize("name, kwargs", FAMILIES, ids=[name for name, _ in FAMILIES])
def test_pruning_dead_channels_leaves_the_logits_unchanged(rng, name, kwargs):
    _check_dead_channels_pruned_exactly(_model(name, kwargs, rng), rng, "keep")


@pytest.mark.parametrize("name, kwargs", TIED_FAMILIES, ids=TIED_IDS)
def test_pruning_dead_shortcut_channels_leaves_the_logits_unchanged(rng, name, kwargs):
    model = _model(name, kwargs, rng)
    pruned = _check_dead_channels_pruned_exactly(model, rng, "prune")
    tied = [group for group in prune.channel_groups(model, "prune") if group.tied]
    assert tied                                                   # shortcut channels were among the pruned
    kept = {group.name: len(pruned.pruned_indices[group.name]) for group in tied}
    assert all(count < group.channels for count, group in zip(kept.values(), tied))


def _predicted_cost(model, pruned_indices, tied="keep"):
    """Parameters and MACs after pruning, predicted from the kept channel counts of every layer."""
    base = profile(model, INPUT)
    macs = {row.name: row.macs for row in base.rows}
    names = {id(module): name for name, module in model.named_modules()}
    kept_out, kept_in = {}, {}
    for group in prune.channel_groups(model, tied):
        fraction = len(pruned_indices[group.name]) / group.channels
        carried = [pair for _, _, passthrough in group.writers for pair in passthrough]
        carried += [pair for passthrough, _ in group.readers for pair in passthrough]
        for layer in [m for conv, bn, _ in group.writers for m in (conv, bn)] + [m for pair in carried for m in pair]:
            kept_out[id(layer)] = fraction
        for _, consumer in group.readers:
            kept_in[id(consumer)] = fraction
    params, total_macs = 0.0, 0.0
    for module in model.modules():
        if module._modules:
            continue
        out_fraction, in_fraction = kept_out.get(id(module), 1.0), kept_in.get(id(module), 1.0)
        if isinstance(module, nn.Conv2d) and module.groups == module.in_channels and module.groups > 1:
            in_fraction = 1.0                           # a depthwise conv shrinks once, with its channels
        own = sum(p.size for p in module._parameters.values() if p is not None)
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            bias = 0 if module.bias is None else module.bias.size
            params += (own - bias) * out_fraction * in_fraction + bias * out_fraction
            total_macs += macs[names[id(module)]] * out_fraction * in_fraction
        else:
            params += own * out_fraction
    return round(params), round(total_macs)


@pytest.mark.parametrize("name, kwargs", FAMILIES[:5], ids=[name for name, _ in FAMILIES[:5]])
@pytest.mark.parametrize("criterion", ["l1", "bn"])
def test_profiled_cost_drops_by_the_predicted_amount(rng, name, kwargs, criterion):
    model = _model(name, kwargs, rng, np.float32)
    pruned = prune.prune_channels(model, 0.4, criterion=criterion)
    after = profile(pruned, INPUT)
    assert (after.params, after.macs) == _predicted_cost(model, pruned.pruned_indices)
    assert after.macs < profile(model, INPUT).macs


@pytest.mark.parametrize("name, kwargs", TIED_FAMILIES, ids=TIED_IDS)
@pytest.mark.parametrize("criterion", ["l1", "bn"])
def test_profiled_cost_drops_by_the_predicted_amount_with_tied_channels(rng, name, kwargs, criterion):
    model = _model(name, kwargs, rng, np.float32)
    pruned = prune.prune_channels(model, 0.4, criterion=criterion, tied="prune")
    after = profile(pruned, INPUT)
    assert (after.params, after.macs) == _predicted_cost(model, pruned.pruned_indices, "prune")
    assert after.params < profile(prune.prune_channels(model, 0.4, criterion=criterion), INPUT).params


def test_amount_removes_floor_of_the_fraction_and_keeps_one(rng):
    model = _model("mobilenet_v2", {"width_mult": 0.25}, rng, np.float32)
    groups = {group.name: group.channels for group in prune.channel_groups(model)}
    pruned = prune.prune_channels(model, 0.3)
    assert pruned.pruned_channels == {name: c - int(np.floor(0.3 * c)) for name, c in groups.items()}
    nearly_all = prune.prune_channels(model, 0.999)
    assert nearly_all.pruned_channels == {name: max(1, c - int(np.floor(0.999 * c))) for name, c in groups.items()}
    assert min(nearly_all.pruned_channels.values()) == 1
    assert nearly_all(rng.standard_normal(INPUT).astype(np.float32)).shape == (1, 7)


def test_l1_criterion_keeps_the_largest_filters(rng):
    model = _model("resnet18", {"width_mult": 0.25}, rng, np.float32)
    group = prune.channel_groups(model)[0]
    producer = group.writers[0][0]
    norms = np.abs(producer.weight.data).reshape(group.channels, -1).sum(axis=1)
    pruned = prune.prune_channels(model, 0.5, criterion="l1")
    kept = pruned.pruned_indices[group.name]
    assert norms[kept].min() >= np.delete(norms, kept).max()


def test_bn_threshold_prunes_by_one_global_value(rng):
    model = _model("mobilenet_v1", {"width_mult": 0.25}, rng, np.float32)
    groups = prune.channel_groups(model)
    threshold = 0.8
    pruned = prune.prune_channels(model, criterion="bn", threshold=threshold)
    for group in groups:
        score = prune.channel_scores(group, "bn")
        expected = np.flatnonzero(score >= threshold) if np.any(score >= threshold) else [np.argmax(score)]
        np.testing.assert_array_equal(pruned.pruned_indices[group.name], expected)


def test_the_input_model_is_not_changed(rng):
    model = _model("mobilenet_v2", {"width_mult": 0.25}, rng, np.float32)
    before = {key: value.copy() for key, value in model.state_dict().items()}
    prune.prune_channels(model, 0.5)
    after = model.state_dict()
    assert all(np.array_equal(before[key], after[key]) for key in before)


def test_shortcut_channels_stay(rng):
    model = _model("resnet18", {"width_mult": 0.25}, rng, np.float32)
    pruned = prune.prune_channels(model, 0.5)
    for original, smaller in zip(model.modules(), pruned.modules()):
        if hasattr(original, "downsample"):               # a residual block: its output width is the stage's
            assert smaller.bn2.num_features == original.bn2.num_features
            assert smaller.conv1.out_channels == original.conv1.out_channels - original.conv1.out_channels // 2


def test_pruned_model_trains(rng):
    from tinycnn.losses import CrossEntropyLoss

    pruned = prune.prune_channels(_model("mobilenet_v2", {"width_mult": 0.25}, rng, np.float32), 0.5).train()
    loss = CrossEntropyLoss()
    pruned.zero_grad()
    loss(pruned(rng.standard_normal((4, 3, 32, 32)).astype(np.float32)), np.array([0, 1, 2, 3]))
    pruned.backward(loss.backward())
    assert all(p.grad.shape == p.shape for p in pruned.parameters())


def test_save_and_load_rebuild_the_pruned_architecture(tmp_path, rng):
    model = _model("mobilenet_v2", {"width_mult": 0.25}, rng, np.float32)
    pruned = prune.prune_channels(model, 0.5, criterion="bn").eval()
    path = tmp_path / "pruned.npz"
    prune.save_pruned(path, pruned, "mobilenet_v2", extra={"note": "test"}, num_classes=7, width_mult=0.25)
    loaded, extra = prune.load_pruned(path)
    assert extra == {"note": "test"}
    x = rng.standard_normal(INPUT).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), pruned(x))
    assert profile(loaded, INPUT).params == profile(pruned, INPUT).params
    assert prune.read_architecture(path)["channels"] == pruned.pruned_channels


def test_loading_validates_the_architecture(tmp_path, rng):
    model = _model("mobilenet_v1", {"width_mult": 0.25}, rng, np.float32)
    pruned = prune.prune_channels(model, 0.5)
    path = tmp_path / "pruned.npz"
    prune.save_pruned(path, pruned, "mobilenet_v1", num_classes=7, width_mult=0.25)
    checkpoint = io.load_checkpoint(path)
    for channels, message in [({"no.such.layer": 3}, "does not have"), ({"features.0.0": 0}, "between 1 and"),
                              ({"features.0.0": 10**6}, "between 1 and")]:
        checkpoint["architecture"]["channels"] = channels
        io.save_checkpoint(path, checkpoint)
        with pytest.raises(ValueError, match=message):
            prune.load_pruned(path)
    checkpoint["architecture"]["channels"] = {"features.0.0": 3}          # fits the builder, not the weights
    io.save_checkpoint(path, checkpoint)
    with pytest.raises((ValueError, RuntimeError), match="shape"):
        prune.load_pruned(path)
    io.save_weights(tmp_path / "plain.npz", model)
    assert prune.read_architecture(tmp_path / "plain.npz") is None


@pytest.mark.parametrize("kwargs, message", [({"amount": 1.0}, "amount"), ({"amount": -0.1}, "amount"),
                                             ({"criterion": "l2"}, "criterion"),
                                             ({"threshold": float("nan")}, "threshold")])
def test_bad_arguments(rng, kwargs, message):
    model = _model("mobilenet_v1", {"width_mult": 0.25}, rng, np.float32)
    with pytest.raises(ValueError, match=message):
        prune.prune_channels(model, **kwargs)


def test_a_model_without_groups_is_refused():
    with pytest.raises(ValueError, match="no prunable channel group"):
        prune.prune_channels(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))


# ----------------------------------------------------------------------------------------------------
# tied="prune": the channels added to shortcuts
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, kwargs", TIED_FAMILIES, ids=TIED_IDS)
def test_tied_pruned_model_saves_loads_and_trains(tmp_path, rng, name, kwargs):
    from tinycnn.losses import CrossEntropyLoss

    model = _model(name, kwargs, rng, np.float32)
    pruned = prune.prune_channels(model, 0.5, criterion="bn", tied="prune").eval()
    path = tmp_path / "pruned.npz"
    prune.save_pruned(path, pruned, name, num_classes=7, **kwargs)
    loaded, _ = prune.load_pruned(path)
    x = rng.standard_normal((4,) + INPUT[1:]).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), pruned(x))
    assert profile(loaded, INPUT).params == profile(pruned, INPUT).params
    loaded.train()
    loss = CrossEntropyLoss()
    loaded.zero_grad()
    loss(loaded(x), np.array([0, 1, 2, 3]))
    assert loaded.backward(loss.backward()).shape == x.shape
    assert all(p.grad.shape == p.shape for p in loaded.parameters())


def test_resnet_stage_loses_the_same_channels_everywhere(rng):
    model = _model("resnet18", {"width_mult": 0.25}, rng, np.float32)
    pruned = prune.prune_channels(model, 0.5, tied="prune")
    stage = pruned.layer2                                    # downsample shortcut, then an identity one
    width = model.layer2[0].out_channels - model.layer2[0].out_channels // 2
    assert stage[0].conv2.out_channels == stage[0].downsample[0].out_channels == stage[0].bn2.num_features == width
    assert stage[1].conv1.in_channels == stage[1].conv2.out_channels == stage[1].in_channels == width
    assert pruned.layer3[0].conv1.in_channels == pruned.layer3[0].downsample[0].in_channels == width
    assert pruned.fc.in_features == model.fc.in_features - model.fc.in_features // 2
    group = next(g for g in prune.channel_groups(model, "prune") if g.name == "layer2.0.conv2")
    writers = {id(conv) for conv, _, _ in group.writers}
    assert writers == {id(m) for m in (model.layer2[0].conv2, model.layer2[0].downsample[0], model.layer2[1].conv2)}
    assert prune.channel_groups(model) == [g for g in prune.channel_groups(model, "prune") if not g.tied]


def test_default_prunes_the_untied_tensors_between_blocks(rng):
    model = _model("mobilenext", {"width_mult": 0.25}, rng, np.float32)
    groups = {group.name: group for group in prune.channel_groups(model)}
    assert not any(group.tied for group in groups.values())
    stem = groups["features.0.0"]                           # stem -> first sandglass block (no shortcut there)
    assert [consumer for _, consumer in stem.readers] == [model.features[1].reduce[0]]
    assert [conv for conv, _ in stem.readers[0][0]] == [model.features[1].depthwise_in[0]]
    resnet50 = _model("resnet50", {"width_mult": 0.125}, rng, np.float32)
    stem = next(group for group in prune.channel_groups(resnet50) if group.name == "conv1")
    assert [consumer for _, consumer in stem.readers] == [resnet50.layer1[0].conv1, resnet50.layer1[0].downsample[0]]


def test_tied_l1_score_sums_the_writers(rng):
    model = _model("resnet18", {"width_mult": 0.25}, rng, np.float32)
    group = next(g for g in prune.channel_groups(model, "prune") if g.name == "layer2.0.conv2")
    expected = sum(np.abs(conv.weight.data.astype(np.float64)).reshape(group.channels, -1).sum(axis=1)
                   for conv in (model.layer2[0].conv2, model.layer2[0].downsample[0], model.layer2[1].conv2))
    np.testing.assert_allclose(prune.channel_scores(group, "l1"), expected, rtol=1e-12)
    expected_bn = sum(np.abs(bn.weight.data.astype(np.float64))
                      for bn in (model.layer2[0].bn2, model.layer2[0].downsample[1], model.layer2[1].bn2))
    np.testing.assert_allclose(prune.channel_scores(group, "bn"), expected_bn, rtol=1e-12)


def test_mobilenext_partial_shortcut_stays_on_the_kept_first_channels(rng):
    model = _model("mobilenext", {"width_mult": 0.25, "identity_tensor_multiplier": 0.5}, rng, np.float32)
    pruned = prune.prune_channels(model, 0.5, criterion="l1", tied="prune")
    for original, smaller in zip(model.features, pruned.features):
        if getattr(original, "has_shortcut", False):
            group = next(g for g in prune.channel_groups(model, "prune") if original in g.blocks)
            keep = pruned.pruned_indices[group.name]
            assert smaller.identity_channels == np.sum(keep < original.identity_channels)
            assert pruned.pruned_channels[group.name] == [len(keep), smaller.identity_channels]
            assert smaller.in_channels == smaller.out_channels == len(keep)


def test_tied_groups_skip_concatenations_and_squeeze_excitation(rng):
    se = _model("se_resnet18", {"width_mult": 0.25}, rng, np.float32)
    assert prune.channel_groups(se, "prune") == prune.channel_groups(se)       # SE scales the stage channels
    nn.init.manual_seed(0)
    shufflenet = models.get_model("shufflenet_v2_x0_5", num_classes=7)
    assert not [g for g in prune.channel_groups(shufflenet, "prune") if g.tied]
    with pytest.raises(ValueError, match="no prunable channel group"):
        prune.prune_channels(shufflenet, 0.5, tied="prune")


@pytest.mark.parametrize("tied", ["yes", True, None, "Prune"])
def test_bad_tied_option_is_refused(rng, tied):
    model = _model("resnet18", {"width_mult": 0.25}, rng, np.float32)
    with pytest.raises(ValueError, match="tied must be one of keep, prune"):
        prune.prune_channels(model, 0.5, tied=tied)
    with pytest.raises(ValueError, match="tied must be one of"):
        prune.channel_groups(model, tied)


def test_loading_validates_a_partial_shortcut_entry(tmp_path, rng):
    kwargs = {"width_mult": 0.25, "identity_tensor_multiplier": 0.5}
    model = _model("mobilenext", kwargs, rng, np.float32)
    group = next(g for g in prune.channel_groups(model, "prune") if g.shortcut_channels is not None)
    C, k = group.channels, group.shortcut_channels
    for entry in [C // 2, [C // 2], [0, 0], [C, k + 1], [C, k - 1], [k + 1, -1], ["4", 2]]:
        with pytest.raises(ValueError, match="must keep"):
            prune.apply_channel_config(_model("mobilenext", kwargs, rng, np.float32), {group.name: entry})
    rebuilt = prune.apply_channel_config(_model("mobilenext", kwargs, rng, np.float32), {group.name: [5, 2]})
    blocks = next(g for g in prune.channel_groups(rebuilt, "prune") if g.name == group.name).blocks
    assert blocks and all(block.identity_channels == 2 and block.out_channels == 5 for block in blocks)
