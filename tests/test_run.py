"""tinycnn.run: a configuration is checked and resolved once, the data spec parsed in one place, the
data of a run loaded by one call; and the Trainer's per-epoch totals (EpochProgress)."""
import dataclasses

import numpy as np
import pytest

from tinycnn import run
from tinycnn.data import parse_data_spec
from tinycnn.train import EpochProgress


@pytest.mark.nojit
@pytest.mark.parametrize("spec, expected", [
    ("shapes", ("shapes", None)), ("shapes:2000", ("shapes", "2000")), ("MNIST:~/data", ("mnist", "~/data")),
    ("folder:C:\\photos", ("folder", "C:\\photos")),               # only the first colon splits
])
def test_parse_data_spec_splits_kind_and_argument(spec, expected):
    assert parse_data_spec(spec) == expected


@pytest.mark.nojit
@pytest.mark.parametrize("spec, error, message", [
    ("imagenet", ValueError, "unknown dataset spec"), ("mnist", ValueError, "needs a path"),
    (3, TypeError, "must be a string"),
])
def test_parse_data_spec_rejects_bad_specs(spec, error, message):
    with pytest.raises(error, match=message):
        parse_data_spec(spec)


@pytest.mark.nojit
def test_resolved_checks_fills_the_automatic_choices_and_is_idempotent():
    config = run.TrainConfig(model="ghostnet", data="folder:/photos")
    resolved = config.resolved()
    assert (resolved.width_mult, resolved.image_size, resolved.data_kind) == (run.DEFAULT_WIDTH_MULT, 64, "folder")
    assert resolved.resolved() == resolved
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        dataclasses.replace(config, epochs=0).resolved()
    with pytest.raises(ValueError, match="unknown dataset spec"):
        run.TrainConfig(data="imagenet").resolved()


@pytest.mark.nojit
def test_build_model_passes_width_mult_to_every_model_that_has_one():
    assert run.has_width_mult("ghostnet") and not run.has_width_mult("squeezenet1_1")
    assert run.build_model("ghostnet", 3, 0.5).width_mult == 0.5
    with pytest.raises(ValueError, match="no width multiplier"):
        run.build_model("squeezenet1_1", 3, 0.5)
    with pytest.raises(ValueError, match="unknown model"):
        run.has_width_mult("lenet")


@pytest.mark.nojit
def test_load_config_data_is_the_runs_data_and_other_data_is_split_the_same_way():
    config = run.TrainConfig(data="shapes:60", image_size=16, max_images=40).resolved()
    own = run.load_config_data(config)
    assert len(own.train) + len(own.val) == 40                     # max_images applies to the run's own data
    again = run.load_config_data(config)
    assert np.array_equal(own.val.images, again.val.images)        # evaluate_run rebuilds the same split
    other = run.load_config_data(config, data="shapes:60")
    assert len(other.train) + len(other.val) == 60                 # other data: no max_images


@pytest.mark.nojit
def test_epoch_progress_counts_batches_and_round_trips_through_a_checkpoint_dict():
    progress = EpochProgress(lr=0.1)
    progress.add_batch(2.0, np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0]))
    progress.add_batch(1.0, np.array([[1.0, 0.0]]), np.array([0]))
    assert (progress.seen, progress.correct) == (3, 2)
    assert progress.mean_loss == pytest.approx((2.0 * 2 + 1.0) / 3) and progress.accuracy == pytest.approx(2 / 3)
    assert EpochProgress.from_dict(progress.to_dict()) == progress
    assert EpochProgress(lr=0.1).mean_loss == 0.0                  # no batch yet: no division by zero


@pytest.mark.parametrize("module_name, kernel_name", [
    ("depthwise", "_forward_one_pixel_kernel"), ("depthwise", "_backward_one_pixel_kernel"),
    ("depthwise", "_forward_channels_last_kernel"), ("depthwise", "_forward_flat_stacked3x3_kernel"),
    ("batchnorm", "batch_norm_statistics_kernel")])
def test_the_compile_notice_asks_for_each_kernel_the_default_run_uses(module_name, kernel_name, monkeypatch):
    """``tinycnn train`` announces the compile pause unless every kernel it checks is cached; the default
    run (MobileNet V2 at 32 x 32) goes through these kernels, so a missing one must count."""
    import importlib
    from kernels import _jit
    missing = getattr(importlib.import_module(f"kernels.{module_name}"), kernel_name)
    monkeypatch.setattr(_jit, "compiled_on_this_machine", lambda *kernels: missing not in kernels)
    assert run._kernels_compiled() is False
