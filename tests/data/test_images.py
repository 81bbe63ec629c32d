"""Reading images of every common form as RGB uint8; atomic output."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bloomseg.data.images import read_image
from bloomseg.errors import ImageError


def _save(tmp_path, name, array, mode=None, **kw):
    path = tmp_path / name
    Image.fromarray(array, mode=mode).save(path, **kw) if mode else Image.fromarray(array).save(path, **kw)
    return path


def test_rgb_png_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_image(_save(tmp_path, "a.png", rgb)), rgb)


def test_greyscale_and_rgba(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = read_image(_save(tmp_path, "g.png", grey))
    assert out.shape == (3, 4, 3) and (out[..., 0] == grey).all() and (out[..., 2] == grey).all()
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 100, 255
    out = read_image(_save(tmp_path, "a.png", rgba))
    assert out.shape == (3, 4, 3) and (out[..., 0] == 100).all()


def test_16bit_is_scaled_by_its_bit_depth(tmp_path):
    data = np.array([[0, 4095], [2048, 1000]], dtype=np.uint16)  # 12-bit camera data
    out = read_image(_save(tmp_path, "d.png", data))
    assert out[0, 1, 0] == 255 and out[0, 0, 0] == 0
    assert out[1, 0, 0] == round(2048 * 255 / 4095)


def test_palette(tmp_path):
    img = Image.new("P", (4, 2))
    img.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    img.putpixel((1, 1), 1)
    img.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[1, 1]) == (0, 0, 255)


def test_exif_orientation(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = 255
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif, quality=100)
    assert read_image(tmp_path / "r.jpg").shape == (3, 2, 3)


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"), (b"hello, world", "not an image .* starts with b'hello"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not an image|truncated or corrupt"),
])
def test_bad_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad image.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=rf"bad image\.png: ({message})"):
        read_image(path)


def test_truncated_png(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _save(tmp_path, "t.png", rgb).read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"t\.png: truncated or corrupt"):
        read_image(tmp_path / "t.png")


def test_missing(tmp_path):
    with pytest.raises(ImageError, match="no such image file"):
        read_image(tmp_path / "none.png")


def test_pixel_limit_is_ours_and_names_the_option(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    path = _save(tmp_path, "big.png", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ImageError, match=r"big\.png: refused, 64x64 .* --max-pixels 4096 or more"):
        read_image(path, max_pixels=4095)
    assert read_image(path, max_pixels=4096).shape == (64, 64, 3)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # PIL's limit is not the user's
    assert read_image(path).shape == (64, 64, 3)
    assert PILImage.MAX_IMAGE_PIXELS == 100  # and is left as it was
