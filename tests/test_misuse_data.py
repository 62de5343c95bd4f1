"""Issue 12 probes on image loading: wide (16-bit) images scale by their bit depth (item 3),
decompression bombs and folders given as images are refused with the file named (items 6, 9)."""
import struct
import zlib

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from tinycnn import run  # noqa: E402
from tinycnn.data.folder import _load_image, load_image_folder  # noqa: E402

SIZE = 32
RAMP = np.linspace(0, 1, SIZE * SIZE).reshape(SIZE, SIZE)           # 0 .. 1, left to right, top to bottom


def _png_rgb16(path, rgb16):
    """Write (H, W, 3) uint16 as a 16-bit RGB PNG (Pillow cannot write those)."""
    height, width, _ = rgb16.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def _expected_grey():
    return np.rint(RAMP * 255)


def _write(kind, path):
    if kind == "grey16":
        Image.fromarray(np.rint(RAMP * 65535).astype(np.uint16)).save(path)
    elif kind == "rgb16":
        _png_rgb16(path, np.repeat(np.rint(RAMP * 65535).astype(np.uint16)[:, :, None], 3, axis=2))
    elif kind == "palette":
        Image.fromarray(np.rint(RAMP * 255).astype(np.uint8)).convert("P").save(path)
    elif kind == "la":
        grey = np.rint(RAMP * 255).astype(np.uint8)
        Image.fromarray(np.stack([grey, np.full_like(grey, 100)], axis=2), mode="LA").save(path)


@pytest.mark.parametrize("kind", ["grey16", "rgb16", "palette", "la"])
def test_images_of_every_bit_depth_load_on_the_same_0_to_255_scale(tmp_path, kind):
    """The probe: a 0..65535 ramp used to load with 97% of the pixels at 1.0 (clipped at 255)."""
    path = tmp_path / f"{kind}.png"
    _write(kind, path)
    pixels = _load_image(str(path), SIZE).astype(np.float64)              # (3, S, S) uint8
    assert (pixels == 255).mean() < 0.01
    for channel in pixels:                                                 # 8-bit rounding (+-1) only
        np.testing.assert_allclose(channel, _expected_grey(), atol=1.0)
    (tmp_path / "data" / "a").mkdir(parents=True)
    path.rename(tmp_path / "data" / "a" / path.name)
    images, _, _ = load_image_folder(tmp_path / "data", SIZE)              # the folder loader: [0, 1]
    np.testing.assert_allclose(images[0, 0], _expected_grey() / 255, atol=1 / 255 + 1e-6)
    predicted = run.load_images([str(tmp_path / "data" / "a" / path.name)], SIZE)   # what predict reads
    np.testing.assert_array_equal(predicted[0], pixels)


def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)          # 4x the limit: Pillow's error
    with pytest.raises(ValueError, match=rf"cannot read image {path}: .*decompression bomb"):
        _load_image(str(path), SIZE)


def test_predict_on_a_folder_says_it_is_a_folder(tmp_path):
    with pytest.raises(ValueError, match=rf"{tmp_path} is a folder, not an image file"):
        run.load_images([str(tmp_path)], SIZE)


def test_an_empty_cifar_batch_pickled_with_protocol_2_is_read(tmp_path):
    import pickle

    from tinycnn.data import cifar
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, protocol=2))
    images, labels = cifar._read_batch(str(path))[:2]
    assert images.shape == (0, 3, 32, 32) and len(labels) == 0


def test_a_batches_meta_with_undecodable_names_is_refused_naming_the_file(tmp_path):
    import pickle

    from tinycnn.data import cifar
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"\xff\xfe"] * 10}, protocol=2))
    with pytest.raises(ValueError, match=r"batches.meta: corrupt batches.meta: a label name is not UTF-8"):
        cifar._read_class_names(str(tmp_path))


def test_a_symlink_loop_as_a_class_folder_is_refused_naming_it(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises((ValueError, OSError), match="loop"):
        load_image_folder(tmp_path, SIZE)
