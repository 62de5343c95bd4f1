"""Local-data loaders (IDX, CIFAR-10 pickles, image folders), split, transforms and DataLoader.

Every file is written by the tests into ``tmp_path`` (a few KB); nothing is downloaded. Each loader
is checked on valid files (values come back exactly) and on missing, corrupt and truncated ones
(a clear error that names the file).
"""
import gzip
import os
import pickle

import numpy as np
import pytest

from helpers import idx_bytes, mnist_arrays, save_image, solid, write, write_cifar, write_mnist
from tinycnn.data import (CIFAR10_CLASSES, FASHION_MNIST_CLASSES, MNIST_CLASSES, SHAPES_CLASSES,
                          ArrayDataset, Compose, DataLoader, Normalize, RandomCrop, RandomHorizontalFlip,
                          compute_mean_std, load_cifar10, load_dataset, load_idx, load_image_folder,
                          load_mnist, read_idx, resize_images, select_classes, train_val_split)

Image = pytest.importorskip("PIL.Image")


# ------------------------------------------------------------------------------------ file writers
@pytest.fixture
def image_folder(tmp_path):
    """3 classes, 5 images in PNG/JPEG/BMP, RGB/gray/RGBA, plus files that must be skipped."""
    root = tmp_path / "pets"
    save_image(root / "cat" / "a.png", solid(10, 6, (255, 0, 0)))
    save_image(root / "cat" / "nested" / "b.png", solid(5, 5, (0, 255, 0)))
    save_image(root / "dog" / "c.jpg", solid(16, 16, (0, 0, 255)), format="JPEG")
    save_image(root / "dog" / "d.png", np.full((9, 9), 128, dtype=np.uint8))          # grayscale "L"
    save_image(root / "emu" / "e.png", solid(4, 4, (10, 20, 30, 0)))                  # RGBA, transparent
    save_image(root / "emu" / "f.bmp", solid(7, 3, (200, 100, 50)))
    (root / "cat" / "notes.txt").write_text("not an image")
    save_image(root / "cat" / ".hidden.png", solid(4, 4, (1, 2, 3)))
    save_image(root / "dog" / ".ipynb_checkpoints" / "g.png", solid(4, 4, (1, 2, 3)))
    save_image(root / ".cache" / "h.png", solid(4, 4, (1, 2, 3)))                      # hidden class
    return root


# --------------------------------------------------------------------------------------------- IDX
@pytest.mark.nojit
def test_load_idx_returns_the_written_pixels_and_labels(tmp_path):
    images, labels = mnist_arrays(5, seed=0)
    image_file = write(tmp_path / "img", idx_bytes(images))
    label_file = write(tmp_path / "lab", idx_bytes(labels))
    raw_images, raw_labels = load_idx(image_file, label_file, as_float=False)
    assert raw_images.shape == (5, 1, 28, 28) and raw_images.dtype == np.uint8
    np.testing.assert_array_equal(raw_images[:, 0], images)
    assert raw_labels.dtype == np.int64
    np.testing.assert_array_equal(raw_labels, labels)
    float_images, _ = load_idx(image_file, label_file)                        # default: float32 / 255
    assert float_images.dtype == np.float32
    np.testing.assert_allclose(float_images[:, 0], images / 255.0, rtol=1e-6)  # float32 rounding only


def test_gzip_is_detected_from_content_not_name(tmp_path):
    images, labels = mnist_arrays(3, seed=1)
    gz_named = write(tmp_path / "img.gz", idx_bytes(images), gz=True)
    gz_unnamed = write(tmp_path / "labels-without-suffix", idx_bytes(labels), gz=True)
    loaded_images, loaded_labels = load_idx(gz_named, gz_unnamed, as_float=False)
    np.testing.assert_array_equal(loaded_images[:, 0], images)
    np.testing.assert_array_equal(loaded_labels, labels)


@pytest.mark.parametrize("type_code, dtype", [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32),
                                              (0x0D, np.float32), (0x0E, np.float64)])
def test_read_idx_decodes_every_big_endian_element_type(tmp_path, type_code, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 11).astype(dtype) * dtype(3)    # negative values too
    loaded = read_idx(write(tmp_path / "a", idx_bytes(array, type_code)))
    assert loaded.dtype == np.dtype(dtype) and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)


def test_load_mnist_finds_standard_raw_gz_and_dotted_names(tmp_path):
    train = write_mnist(tmp_path / "raw", "train", 6, seed=2)                  # torchvision's root/raw
    test = write_mnist(tmp_path / "raw", "test", 4, seed=3, gz=True)
    train_images, train_labels = load_mnist(tmp_path, "train", as_float=False)
    test_images, test_labels = load_mnist(tmp_path, "test", as_float=False)
    np.testing.assert_array_equal(train_images[:, 0], train[0])
    np.testing.assert_array_equal(train_labels, train[1])
    np.testing.assert_array_equal(test_images[:, 0], test[0])
    np.testing.assert_array_equal(test_labels, test[1])
    dotted = write_mnist(tmp_path / "dotted", "train", 2, seed=4, dotted=True)  # train-images.idx3-ubyte
    np.testing.assert_array_equal(load_mnist(tmp_path / "dotted", as_float=False)[1], dotted[1])


def test_load_mnist_missing_files_name_the_folder_and_the_expected_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST folder not found.*nowhere"):
        load_mnist(tmp_path / "nowhere")
    write_mnist(tmp_path, "train", 2)
    with pytest.raises(FileNotFoundError, match=r"no t10k-images-idx3-ubyte in .*train-images-idx3-ubyte"):
        load_mnist(tmp_path, "test")
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="no train-labels-idx1-ubyte in"):
        load_mnist(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_mnist(tmp_path, "validation")
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        load_idx(tmp_path / "absent", tmp_path / "absent-too")


def test_idx_wrong_magic_numbers_are_reported(tmp_path):
    images, labels = mnist_arrays(2, seed=0)
    image_file = write(tmp_path / "img", idx_bytes(images))
    label_file = write(tmp_path / "lab", idx_bytes(labels))
    with pytest.raises(ValueError, match=r"lab: not an IDX images file: magic number 0x00000801, "
                                         r"expected 0x00000803"):
        load_idx(label_file, image_file)                                       # arguments swapped
    int16_labels = write(tmp_path / "lab16", idx_bytes(labels, type_code=0x0B))
    with pytest.raises(ValueError, match="not an IDX labels file: magic number 0x00000B01"):
        load_idx(image_file, int16_labels)
    png = write(tmp_path / "picture", b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match="picture: not an IDX file .magic number 0x89504E47"):
        load_idx(png, label_file)


def test_idx_truncated_or_oversized_data_is_reported(tmp_path):
    images, labels = mnist_arrays(3, seed=0)
    label_file = write(tmp_path / "lab", idx_bytes(labels))
    full = idx_bytes(images)
    cut = write(tmp_path / "cut", full[:-10])
    with pytest.raises(ValueError, match=r"cut: truncated IDX file: header announces shape \(3, 28, 28\) "
                                         r"\(2352 bytes of data\) but only 2342"):
        load_idx(cut, label_file)
    with pytest.raises(ValueError, match="truncated IDX header"):
        load_idx(write(tmp_path / "header", full[:9]), label_file)            # 3 dims need 16 bytes
    with pytest.raises(ValueError, match="only 2 bytes"):
        load_idx(write(tmp_path / "tiny", full[:2]), label_file)
    with pytest.raises(ValueError, match="corrupt IDX file.*2353 bytes follow"):
        load_idx(write(tmp_path / "long", full + b"\x00"), label_file)
    cut_gzip = write(tmp_path / "cut.gz", gzip.compress(full)[:-20])
    with pytest.raises(ValueError, match="cut.gz: corrupt or truncated gzip data"):
        load_idx(cut_gzip, label_file)


def test_idx_image_and_label_counts_must_match(tmp_path):
    images, labels = mnist_arrays(4, seed=0)
    image_file = write(tmp_path / "img", idx_bytes(images))
    label_file = write(tmp_path / "lab", idx_bytes(labels[:3]))
    with pytest.raises(ValueError, match="holds 4 images but .*lab holds 3 labels"):
        load_idx(image_file, label_file)


# ------------------------------------------------------------------------------------------- CIFAR
def test_load_cifar10_concatenates_batches_and_reshapes_rgb_planes(tmp_path):
    names = [f"class{k}" for k in range(10)]
    written = write_cifar(tmp_path / "cifar-10-batches-py", count=3, meta_names=names)
    images, labels, class_names = load_cifar10(tmp_path, "train", as_float=False, return_class_names=True)
    assert images.shape == (15, 3, 32, 32) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert class_names == tuple(names)                                         # read from batches.meta
    data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(labels, np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)]))
    # layout: 1024 red values, then green, then blue, each a row-major 32 x 32 plane
    image, channel, row, column = 7, 2, 5, 30
    assert images[image, channel, row, column] == data[image, channel * 1024 + row * 32 + column]
    np.testing.assert_array_equal(images.reshape(15, -1), data)
    test_images, test_labels = load_cifar10(tmp_path / "cifar-10-batches-py", "test")
    assert test_images.dtype == np.float32 and test_images.shape == (3, 3, 32, 32)
    np.testing.assert_allclose(test_images.reshape(3, -1), written["test_batch"][0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(test_labels, written["test_batch"][1])


def test_cifar10_reads_str_keys_and_defaults_class_names_without_meta(tmp_path):
    written = write_cifar(tmp_path, count=2, str_keys=True)                    # re-pickled in Python 3
    images, labels, class_names = load_cifar10(tmp_path, "test", as_float=False, return_class_names=True)
    np.testing.assert_array_equal(images.reshape(2, -1), written["test_batch"][0])
    np.testing.assert_array_equal(labels, written["test_batch"][1])
    assert class_names == CIFAR10_CLASSES


def test_cifar10_missing_folder_or_batch_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="CIFAR-10 folder not found"):
        load_cifar10(tmp_path / "absent")
    write_cifar(tmp_path, count=2)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="no data_batch_3 in .*test_batch"):
        load_cifar10(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_cifar10(tmp_path, "val")


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[: len(raw) // 2], "test_batch: corrupt or truncated CIFAR-10 pickle"),
    (lambda raw: b"GIF89a" + bytes(40), "corrupt or truncated CIFAR-10 pickle"),
    (lambda raw: b"", "corrupt or truncated CIFAR-10 pickle"),
    (lambda raw: pickle.dumps([1, 2, 3]), "expected a pickled dict, got list"),
    (lambda raw: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), r"no b'labels' entry"),
    (lambda raw: pickle.dumps({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}),
     r"'data' must be a uint8 array \(n, 3072\); got uint8 with shape \(2, 3000\)"),
    (lambda raw: pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}),
     "got float32"),
    (lambda raw: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}),
     r"2 images but labels of shape \(1,\)"),
    (lambda raw: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}),
     "labels must lie in 0..9"),
])
def test_cifar10_corrupt_batches_are_reported_with_the_file_name(tmp_path, damage, message):
    write_cifar(tmp_path, count=2)
    batch = tmp_path / "test_batch"
    batch.write_bytes(damage(batch.read_bytes()))
    with pytest.raises(ValueError, match=message):
        load_cifar10(tmp_path, "test")


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (os.getcwd, ())                      # harmless stand-in for os.system


def test_cifar10_refuses_pickles_that_would_run_code(tmp_path):
    write_cifar(tmp_path, count=2)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _RunsCodeWhenUnpickled()}))
    with pytest.raises(ValueError, match="refusing to load posix.getcwd|refusing to load nt.getcwd"):
        load_cifar10(tmp_path, "test")
    (tmp_path / "batches.meta").write_bytes(b"\x80\x02}q")                   # truncated pickle
    with pytest.raises(ValueError, match="batches.meta: corrupt or truncated"):
        load_cifar10(tmp_path, "train", return_class_names=True)


# ------------------------------------------------------------------------------------ image folder
def test_image_folder_loads_sorted_classes_and_converts_every_mode_to_rgb(image_folder):
    images, labels, class_names = load_image_folder(image_folder, image_size=8)
    assert class_names == ("cat", "dog", "emu")                               # hidden .cache skipped
    assert images.shape == (6, 3, 8, 8) and images.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])                 # txt and hidden files skipped
    assert 0.0 <= images.min() and images.max() <= 1.0
    per_image_colour = np.round(images.mean(axis=(2, 3)) * 255)               # solid images stay solid
    np.testing.assert_array_equal(per_image_colour[0], [255, 0, 0])          # cat/a.png
    np.testing.assert_array_equal(per_image_colour[1], [0, 255, 0])          # cat/nested/b.png
    np.testing.assert_allclose(per_image_colour[2], [0, 0, 255], atol=3)     # dog/c.jpg: JPEG is lossy
    np.testing.assert_array_equal(per_image_colour[3], [128, 128, 128])      # grayscale repeated
    np.testing.assert_array_equal(per_image_colour[4], [10, 20, 30])         # alpha dropped
    np.testing.assert_array_equal(per_image_colour[5], [200, 100, 50])       # BMP


def test_image_folder_resizes_exactly_like_pillow_bilinear(tmp_path):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (23, 17, 3), dtype=np.uint8)
    save_image(tmp_path / "only" / "x.png", picture)
    images, _, _ = load_image_folder(tmp_path, image_size=12, as_float=False)
    expected = np.asarray(Image.fromarray(picture).resize((12, 12), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(images[0], expected.transpose(2, 0, 1))


def test_image_folder_class_subset_follows_the_given_order(image_folder):
    _, labels, class_names = load_image_folder(image_folder, image_size=4, classes=["emu", "cat"])
    assert class_names == ("emu", "cat")
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"no class folder 'fox' in .*found \['cat', 'dog', 'emu'\]"):
        load_image_folder(image_folder, classes=["cat", "fox"])
    with pytest.raises(TypeError, match="list of folder names"):
        load_image_folder(image_folder, classes="cat")


def test_image_folder_errors_name_the_folder_or_file(tmp_path, image_folder):
    with pytest.raises(FileNotFoundError, match="image folder not found: .*absent"):
        load_image_folder(tmp_path / "absent")
    with pytest.raises(ValueError, match="is a file"):
        load_image_folder(image_folder / "cat" / "a.png")
    (tmp_path / "flat").mkdir()
    save_image(tmp_path / "flat" / "x.png", solid(3, 3, (0, 0, 0)))
    with pytest.raises(ValueError, match="has no class sub-folders"):
        load_image_folder(tmp_path / "flat")
    (image_folder / "fox").mkdir()
    (image_folder / "fox" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder .*fox holds no image"):
        load_image_folder(image_folder)
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        load_image_folder(image_folder, image_size=0)


@pytest.mark.parametrize("content", [b"this is not a PNG", "truncated"])
def test_image_folder_unreadable_image_names_the_file(image_folder, content):
    broken = image_folder / "dog" / "broken.png"
    if content == "truncated":
        save_image(broken, np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
        broken.write_bytes(broken.read_bytes()[:300])
    else:
        broken.write_bytes(content)
    with pytest.raises(ValueError, match=r"cannot read image .*dog.broken\.png"):
        load_image_folder(image_folder, image_size=8)


# ------------------------------------------------------------------------------- split and classes
def test_stratified_split_keeps_class_proportions_and_partitions_the_data():
    labels = np.repeat(np.arange(3), [50, 30, 17])                            # 97 images, unbalanced
    ids = np.arange(97)                                                       # "images": their own index
    (train_ids, train_labels), (val_ids, val_labels) = train_val_split(ids, labels, 0.2, seed=0)
    np.testing.assert_array_equal(labels[train_ids], train_labels)
    assert len(val_ids) == round(0.2 * 97) == 19 and len(train_ids) == 78
    np.testing.assert_array_equal(np.sort(np.concatenate([train_ids, val_ids])), ids)   # a partition
    np.testing.assert_array_equal(labels[val_ids], val_labels)                # labels travel with images
    val_per_class = np.bincount(val_labels, minlength=3)
    assert np.all(np.abs(val_per_class - 0.2 * np.array([50, 30, 17])) < 1)  # within one image
    assert not np.all(np.diff(val_labels) >= 0)                               # classes mixed, not sorted


def test_split_is_deterministic_in_the_seed_and_plain_split_has_the_same_size():
    labels = np.arange(200) % 4
    ids = np.arange(200)
    first = train_val_split(ids, labels, 0.25, seed=3)
    again = train_val_split(ids, labels, 0.25, seed=3)
    other = train_val_split(ids, labels, 0.25, seed=4)
    np.testing.assert_array_equal(first[1][0], again[1][0])
    assert not np.array_equal(np.sort(first[1][0]), np.sort(other[1][0]))
    plain = train_val_split(ids, labels, 0.25, seed=3, stratified=False)
    assert len(plain[1][0]) == 50
    empty_val = train_val_split(ids, labels, 0.0)
    assert len(empty_val[1][0]) == 0 and len(empty_val[0][0]) == 200
    for bad in (1.0, -0.1, "0.2"):
        with pytest.raises(ValueError, match="val_fraction"):
            train_val_split(ids, labels, bad)
    with pytest.raises(ValueError, match=r"labels must have shape \(200,\)"):
        train_val_split(ids, labels[:5])


def test_select_classes_renumbers_in_the_given_order():
    labels = np.array([0, 1, 2, 1, 0, 2])
    images, new_labels, names = select_classes(np.arange(6), labels, ("a", "b", "c"), ["c", 0])
    np.testing.assert_array_equal(images, [0, 2, 4, 5])
    np.testing.assert_array_equal(new_labels, [1, 0, 1, 0])
    assert names == ("c", "a")
    with pytest.raises(ValueError, match="unknown class 'z'"):
        select_classes(np.arange(6), labels, ("a", "b", "c"), ["z"])


def test_array_dataset_checks_its_arrays():
    dataset = ArrayDataset(np.zeros((4, 1, 2, 2), np.uint8), [0, 1, 1, 0], ("x", "y"))
    assert len(dataset) == 4 and dataset.image_shape == (1, 2, 2) and dataset.num_classes == 2
    np.testing.assert_array_equal(dataset.class_counts(), [2, 2])
    assert ArrayDataset(np.zeros((2, 1, 2, 2)), [0, 2]).class_names == ("0", "1", "2")
    with pytest.raises(ValueError, match="labels reach 2 but there are only 2 class names"):
        ArrayDataset(np.zeros((2, 1, 2, 2)), [0, 2], ("x", "y"))
    with pytest.raises(ValueError, match=r"4-D \(N, C, H, W\)"):
        ArrayDataset(np.zeros((2, 4)), [0, 1])
    with pytest.raises(TypeError, match="must hold integers"):
        ArrayDataset(np.zeros((2, 1, 2, 2)), [0.5, 1.0])


# -------------------------------------------------------------------------- normalisation, resizing
def test_compute_mean_std_matches_numpy_and_normalize_standardises():
    rng = np.random.default_rng(0)
    images = rng.random((10, 3, 5, 5)).astype(np.float32) * [[[0.5]], [[1.0]], [[0.2]]]
    mean, std = compute_mean_std(images, chunk_size=3)                        # several chunks
    np.testing.assert_allclose(mean, images.mean(axis=(0, 2, 3), dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(std, images.std(axis=(0, 2, 3), dtype=np.float64), rtol=1e-5)
    normalised = Normalize(mean, std)(images)
    np.testing.assert_allclose(normalised.mean(axis=(0, 2, 3)), 0, atol=1e-5)  # float32 sums of 250
    np.testing.assert_allclose(normalised.std(axis=(0, 2, 3)), 1, rtol=1e-4)
    np.testing.assert_allclose(Normalize(mean, std).inverse(normalised), images, atol=1e-6)
    as_bytes = np.round(images * 255).astype(np.uint8)                       # uint8 counts as pixel/255
    np.testing.assert_allclose(compute_mean_std(as_bytes)[0], as_bytes.mean(axis=(0, 2, 3)) / 255, rtol=1e-6)
    with pytest.raises(ValueError, match="2 channel statistics but the batch has 3"):
        Normalize([0, 0], [1, 1])(images)
    with pytest.raises(ValueError, match="std > 0"):
        Normalize(0.5, 0.0)


@pytest.mark.parametrize("size", [(5, 4), (20, 13), (3, 30)])
def test_resize_images_matches_pillow_bilinear_up_and_down(size):
    plane = np.random.default_rng(1).random((7, 9)).astype(np.float32)
    expected = np.asarray(Image.fromarray(plane).resize(size[::-1], Image.Resampling.BILINEAR))  # mode "F"
    resized = resize_images(plane[None, None], size)
    assert resized.shape == (1, 1, *size) and resized.dtype == np.float32
    np.testing.assert_allclose(resized[0, 0], expected, atol=1e-6)           # float32 rounding only
    as_bytes = resize_images(np.full((2, 1, 7, 9), 200, np.uint8), size)
    assert as_bytes.dtype == np.uint8 and np.all(as_bytes == 200)            # weights sum to one


# ------------------------------------------------------------------------------------ augmentation
def test_random_crop_with_padding_keeps_shape_and_shifts_content():
    rng = np.random.default_rng(0)
    x = rng.random((16, 2, 6, 6)).astype(np.float32) + 1.0                    # > 0: padding shows as 0
    out = RandomCrop(6, padding=2)(x, np.random.default_rng(7))
    assert out.shape == x.shape and out.dtype == x.dtype
    draws = np.random.default_rng(7)                                          # the same offsets, by hand
    top, left = draws.integers(0, 5, 16), draws.integers(0, 5, 16)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for n in range(16):
        np.testing.assert_array_equal(out[n], padded[n, :, top[n]:top[n] + 6, left[n]:left[n] + 6])
    shifted = (top != 2) | (left != 2)
    assert shifted.sum() >= 10 and np.all((out[shifted] == 0).any(axis=(1, 2, 3)))  # zeros came in
    np.testing.assert_array_equal(RandomCrop(6, padding=0)(x, rng), x)        # nothing to choose
    smaller = RandomCrop((4, 5), padding=(0, 1))(x, np.random.default_rng(7))
    assert smaller.shape == (16, 2, 4, 5)


def test_random_crop_is_seeded_and_validates():
    x = np.random.default_rng(0).random((8, 1, 5, 5))
    crop = RandomCrop(5, padding=1)
    np.testing.assert_array_equal(crop(x, np.random.default_rng(1)), crop(x, np.random.default_rng(1)))
    assert not np.array_equal(crop(x, np.random.default_rng(1)), crop(x, np.random.default_rng(2)))
    with pytest.raises(ValueError, match="larger than the padded images"):
        RandomCrop(8, padding=1)(x, np.random.default_rng(0))
    with pytest.raises(TypeError, match="needs a numpy.random.Generator"):
        crop(x, None)


@pytest.mark.nojit
def test_horizontal_flip_twice_is_identity_and_p_controls_the_share():
    x = np.random.default_rng(0).random((1000, 1, 2, 3)).astype(np.float32)
    flip = RandomHorizontalFlip(p=0.5)
    once = flip(x, np.random.default_rng(5))
    np.testing.assert_array_equal(flip(once, np.random.default_rng(5)), x)   # same draws: undone
    flipped = np.all(once == x[..., ::-1], axis=(1, 2, 3)) & ~np.all(once == x, axis=(1, 2, 3))
    assert 400 < flipped.sum() < 600        # Binomial(1000, 0.5): sd 16, so 6 sd either side
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(x, np.random.default_rng(0)), x[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0)(x, np.random.default_rng(0)), x)
    with pytest.raises(ValueError, match="probability"):
        RandomHorizontalFlip(p=1.5)


# ------------------------------------------------------------------------------------------ loader
def test_loader_batches_cover_every_image_once_with_and_without_drop_last():
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)            # image i holds the value i
    labels = np.arange(10)
    loader = DataLoader(images, labels, batch_size=4, shuffle=True, seed=0)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    for x, y in batches:
        assert x.dtype == np.float32 and y.dtype == np.int64
        np.testing.assert_array_equal(x[:, 0, 0, 0], y)                      # images and labels aligned
    np.testing.assert_array_equal(np.sort(np.concatenate([y for _, y in batches])), labels)
    dropping = DataLoader(images, labels, batch_size=4, drop_last=True)
    assert len(dropping) == 2 and [len(y) for _, y in dropping] == [4, 4]
    np.testing.assert_array_equal(next(iter(dropping))[1], [0, 1, 2, 3])    # no shuffle: in order
    assert len(DataLoader(images, labels, batch_size=32, drop_last=True)) == 0


def test_loader_order_is_reproducible_from_seed_and_epoch():
    images, labels = np.zeros((50, 1, 2, 2), np.float32), np.arange(50)
    first = DataLoader(images, labels, 8, shuffle=True, seed=1)
    second = DataLoader(images, labels, 8, shuffle=True, seed=1)
    epoch0 = np.concatenate([y for _, y in first])
    epoch1 = np.concatenate([y for _, y in first])                           # the pass advanced the epoch
    assert first.epoch == 2
    np.testing.assert_array_equal(np.concatenate([y for _, y in second]), epoch0)
    assert not np.array_equal(epoch0, epoch1)
    second.set_epoch(1)
    np.testing.assert_array_equal(np.concatenate([y for _, y in second]), epoch1)
    other_seed = np.concatenate([y for _, y in DataLoader(images, labels, 8, shuffle=True, seed=2)])
    assert not np.array_equal(epoch0, other_seed)
    peek = DataLoader(images, labels, 8, shuffle=True, seed=1)
    next(iter(peek))                                                         # a pass left early...
    assert peek.epoch == 0                                                   # ...does not count
    np.testing.assert_array_equal(np.concatenate([y for _, y in peek]), epoch0)


def test_loader_state_dict_resumes_mid_epoch_with_identical_augmented_batches():
    images = np.random.default_rng(0).random((30, 1, 4, 4)).astype(np.float32)
    augment = Compose([RandomCrop(4, padding=1), RandomHorizontalFlip()])
    reference = [x for x in DataLoader(images, np.arange(30), 7, shuffle=True, seed=3, transform=augment)]

    interrupted = DataLoader(images, np.arange(30), 7, shuffle=True, seed=3, transform=augment)
    for batch_index, _ in enumerate(interrupted):
        if batch_index == 1:                                                 # two batches done
            state = interrupted.state_dict()
            break
    assert state == {"seed": 3, "epoch": 0, "batch": 2}
    resumed = DataLoader(images, np.arange(30), 7, shuffle=True, seed=0, transform=augment)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(reference) - 2
    for (x, y), (x_ref, y_ref) in zip(rest, reference[2:]):
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(x, x_ref)
    assert resumed.state_dict() == {"seed": 3, "epoch": 1, "batch": 0}
    with pytest.raises(ValueError, match="missing"):
        resumed.load_state_dict({"epoch": 0})


def test_loader_gives_each_batch_its_own_augmentation_draws():
    images = np.tile(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), (8, 1, 1, 1))   # 8 equal images
    loader = DataLoader(images, np.zeros(8, np.int64), 4, transform=RandomCrop(4, padding=2))
    (first, _), (second, _) = list(loader)
    assert not np.array_equal(first, second)                               # batch index enters the seed
    (again, _), _ = list(loader)                                           # next epoch: new draws
    assert not np.array_equal(first, again)
    loader.set_epoch(0)
    np.testing.assert_array_equal(next(iter(loader))[0], first)            # epoch 0 again: same draws


def test_loader_scales_uint8_and_applies_the_transform():
    images = np.full((3, 2, 2, 2), 255, np.uint8)
    x, _ = next(iter(DataLoader(images, [0, 1, 0], 3)))
    assert x.dtype == np.float32 and np.all(x == 1.0)
    x, _ = next(iter(DataLoader(images, [0, 1, 0], 3, transform=Normalize(0.5, 0.25))))
    np.testing.assert_allclose(x, 2.0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        DataLoader(images, [0, 1, 0], 0)
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        DataLoader(images, [0, 1], 2)


# ------------------------------------------------------------------------------------ load_dataset
def test_load_dataset_shapes_default_and_sized_spec():
    data = load_dataset("shapes:50", image_size=16, seed=1)
    train, val, class_names, in_channels = data
    assert (len(train), len(val), in_channels) == (40, 10, 3)
    assert train.images.shape[1:] == (3, 16, 16) and class_names == SHAPES_CLASSES
    np.testing.assert_array_equal(val.class_counts(), np.ones(10))            # stratified: one per class
    again = load_dataset("shapes:50", image_size=16, seed=1)
    np.testing.assert_array_equal(again.val.images, val.images)
    two = load_dataset("shapes:20", image_size=8, classes=["circle", "square"])
    assert two.class_names == ("circle", "square") and two.train.num_classes == 2


def test_load_dataset_mnist_fashion_resize_and_rgb(tmp_path):
    write_mnist(tmp_path, "train", 20, seed=0)
    write_mnist(tmp_path, "test", 5, seed=1, gz=True)
    gray = load_dataset(f"mnist:{tmp_path}", image_size=None)
    assert gray.in_channels == 1 and gray.train.images.shape == (16, 1, 28, 28)
    assert gray.train.images.dtype == np.uint8 and gray.class_names == MNIST_CLASSES
    rgb = load_dataset(f"fashion:{tmp_path}", image_size=32, to_rgb=True, val_source="test")
    assert rgb.in_channels == 3 and rgb.train.images.shape == (20, 3, 32, 32) and len(rgb.val) == 5
    assert rgb.class_names == FASHION_MNIST_CLASSES
    np.testing.assert_array_equal(rgb.train.images[:, 0], rgb.train.images[:, 2])   # channels repeated


def test_load_dataset_cifar_subset_folder_and_max_images(tmp_path, image_folder):
    write_cifar(tmp_path / "c", count=20)
    cats_dogs = load_dataset(f"cifar10:{tmp_path / 'c'}", classes=["cat", "dog"])
    assert cats_dogs.class_names == ("cat", "dog") and set(cats_dogs.train.labels) <= {0, 1}
    small = load_dataset(f"cifar10:{tmp_path / 'c'}", max_images=30, val_fraction=0.2)
    assert (len(small.train), len(small.val)) == (24, 6)
    folder = load_dataset(f"folder:{image_folder}", image_size=8, val_fraction=0.5)
    assert folder.class_names == ("cat", "dog", "emu") and (len(folder.train), len(folder.val)) == (3, 3)
    np.testing.assert_array_equal(folder.val.class_counts(), [1, 1, 1])


@pytest.mark.parametrize("spec, kwargs, error, message", [
    ("imagenet:/data", {}, ValueError, "unknown dataset spec 'imagenet:/data'.*folder:PATH"),
    ("folder", {}, ValueError, "needs a path"),
    ("shapes:many", {}, ValueError, "needs an integer N"),
    ("shapes", {"val_source": "test"}, ValueError, "has none"),
    ("shapes", {"image_size": 0}, ValueError, "image_size"),
    ("mnist:/definitely/not/here", {}, FileNotFoundError, "MNIST folder not found"),
    ("folder:/definitely/not/here", {}, FileNotFoundError, "image folder not found"),
])
def test_load_dataset_rejects_bad_specs_clearly(spec, kwargs, error, message):
    with pytest.raises(error, match=message):
        load_dataset(spec, **kwargs)


def test_load_dataset_suggests_a_prefix_for_a_bare_folder(tmp_path):
    with pytest.raises(ValueError, match="is a folder: write 'folder:"):
        load_dataset(str(tmp_path))
