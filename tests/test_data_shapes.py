"""The built-in ``shapes`` dataset: format, determinism, balance, speed, and that it is a real task."""
import time

import numpy as np
import pytest

from tinycnn.data import SHAPES_CLASSES, make_shapes


@pytest.fixture(scope="module")
def train_and_test():
    return make_shapes(3000, seed=0), make_shapes(1000, seed=1)


@pytest.mark.nojit
def test_images_and_labels_have_the_documented_shapes_dtypes_and_ranges():
    images, labels = make_shapes(25, seed=0)
    assert images.shape == (25, 3, 32, 32) and images.dtype == np.float32
    assert labels.shape == (25,) and labels.dtype == np.int64
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert labels.min() >= 0 and labels.max() < len(SHAPES_CLASSES)
    assert len(SHAPES_CLASSES) >= 10 and len(set(SHAPES_CLASSES)) == len(SHAPES_CLASSES)


@pytest.mark.nojit
def test_same_seed_gives_identical_data_and_other_seeds_differ():
    first, second, other = make_shapes(40, seed=5), make_shapes(40, seed=5), make_shapes(40, seed=6)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], other[0])


def test_large_requests_are_rendered_in_chunks_without_changing_determinism():
    images, labels = make_shapes(4500, seed=2, image_size=16)       # spans three 2048-image chunks
    again, _ = make_shapes(4500, seed=2, image_size=16)
    np.testing.assert_array_equal(images, again)
    assert np.isfinite(images).all() and images.std() > 0.1
    assert (images[-100:].std(axis=(1, 2, 3)) > 0.05).all()            # the last chunk was drawn too


def test_classes_are_balanced_and_shuffled():
    _, labels = make_shapes(1003, seed=3)
    counts = np.bincount(labels, minlength=len(SHAPES_CLASSES))
    assert counts.max() - counts.min() <= 1
    assert not np.array_equal(labels[:20], np.arange(20) % len(SHAPES_CLASSES))


def test_class_subset_by_name_or_index_relabels_in_the_given_order():
    images, labels = make_shapes(60, seed=4, classes=["vertical_stripes", 5])
    assert set(labels.tolist()) == {0, 1}
    vertical, horizontal = images[labels == 0], images[labels == 1]
    # vertical stripes vary along x (columns differ), horizontal ones along y (rows differ)
    def row_and_column_variation(batch):
        gray = batch.mean(axis=1)                                        # (n, H, W)
        return gray.mean(axis=2).std(axis=1).mean(), gray.mean(axis=1).std(axis=1).mean()
    rows_v, columns_v = row_and_column_variation(vertical)
    rows_h, columns_h = row_and_column_variation(horizontal)
    assert columns_v > 3 * rows_v and rows_h > 3 * columns_h


def test_other_image_sizes_and_noise_free_images():
    images, _ = make_shapes(12, seed=5, image_size=48, noise=0.0, classes=["circle"])
    assert images.shape == (12, 3, 48, 48)
    corners = images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]             # (n, 3, 4): background only
    np.testing.assert_allclose(corners, corners[:, :, :1].repeat(4, axis=2), atol=1e-7)
    noisy, _ = make_shapes(12, seed=5, image_size=48, noise=0.2, classes=["circle"])
    assert np.abs(noisy - images).mean() > 0.05


def test_generation_takes_well_under_a_second_per_thousand_images():
    make_shapes(50, seed=0)                                              # warm-up
    start = time.perf_counter()
    make_shapes(1000, seed=1)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"1000 images took {elapsed:.3f} s"            # ~0.07 s measured; shared CPUs


def softmax_regression_accuracy(train_features, train_labels, test_features, test_labels, steps=200, lr=0.5):
    """Full-batch gradient descent on standardised features; returns test accuracy."""
    mean, std = train_features.mean(axis=0), train_features.std(axis=0) + 1e-6
    train_features, test_features = (train_features - mean) / std, (test_features - mean) / std
    K = len(SHAPES_CLASSES)
    weights, bias = np.zeros((train_features.shape[1], K)), np.zeros(K)
    onehot = np.eye(K)[train_labels]
    for _ in range(steps):
        logits = train_features @ weights + bias
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        grad = (probs - onehot) / len(train_labels)
        weights -= lr * (train_features.T @ grad + 1e-4 * weights)
        bias -= lr * grad.sum(axis=0)
    return ((test_features @ weights + bias).argmax(axis=1) == test_labels).mean()


def fourier_magnitude_features(images, max_frequency=8):
    """log |FFT| of the grayscale image at low frequencies (|k| < 8 cycles per image).

    The magnitude ignores where things are (invariant to translation) and which of the two colours
    is the foreground, so a linear classifier on it sees shape, texture and orientation only.
    """
    gray = images.mean(axis=1).astype(np.float64)                        # (n, H, W)
    gray -= gray.mean(axis=(1, 2), keepdims=True)
    magnitude = np.abs(np.fft.rfft2(gray))                               # (n, H, W // 2 + 1)
    low = np.concatenate([magnitude[:, :max_frequency, :max_frequency],
                          magnitude[:, -max_frequency:, :max_frequency]], axis=1)   # (n, 16, 8)
    return np.log1p(low.reshape(len(images), -1))


def test_translation_invariant_linear_classifier_is_far_above_chance(train_and_test):
    (train_images, train_labels), (test_images, test_labels) = train_and_test
    accuracy = softmax_regression_accuracy(fourier_magnitude_features(train_images), train_labels,
                                           fourier_magnitude_features(test_images), test_labels)
    assert accuracy > 0.5, accuracy                                      # chance is 0.1; ~0.86 measured


def test_colour_statistics_alone_do_not_solve_the_task(train_and_test):
    (train_images, train_labels), (test_images, test_labels) = train_and_test
    def colour_features(images):                                         # per-channel mean and std
        return np.concatenate([images.mean(axis=(2, 3)), images.std(axis=(2, 3))], axis=1).astype(np.float64)
    accuracy = softmax_regression_accuracy(colour_features(train_images), train_labels,
                                           colour_features(test_images), test_labels)
    assert accuracy < 0.3, accuracy                                      # ~0.15 measured


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n=-1), ValueError, "n must"),
    (dict(n=10, image_size=4), ValueError, "image_size"),
    (dict(n=10, noise=-0.1), ValueError, "noise"),
    (dict(n=10, classes=["hexagon"]), ValueError, "hexagon"),
    (dict(n=10, classes=["circle", "circle"]), ValueError, "repeats"),
    (dict(n=10, classes=[10]), ValueError, "out of range"),
    (dict(n=10, classes="circle"), TypeError, "list"),
])
def test_invalid_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_shapes(**kwargs)


def test_zero_images_is_allowed():
    images, labels = make_shapes(0)
    assert images.shape == (0, 3, 32, 32) and labels.shape == (0,)
