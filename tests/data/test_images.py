"""Images of every mode Pillow reads become the model's 8-bit RGB, or are refused
with the mode named."""
import io

import numpy as np
import pytest
from PIL import Image

from zsi_jax.data import images


def _png(array, mode=None):
  buf = io.BytesIO()
  (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buf, format='PNG')
  return buf.getvalue()


def test_sixteen_bit_grey_is_scaled_not_clipped():
  # Pillow's convert('RGB') would clip every value above 255 to white.
  grey8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
  grey16 = grey8.astype(np.uint16) * 257                  # the same picture in 16 bits
  data = _png(grey16)
  with Image.open(io.BytesIO(data)) as im:
    assert im.mode.startswith('I')
  got = images.decode(data, 'grey16.png')
  assert got.shape == (16, 16, 3) and got.dtype == np.uint8
  np.testing.assert_array_equal(got, np.repeat(grey8[..., None], 3, axis=-1))


@pytest.mark.parametrize('mode', ['L', 'P', 'RGBA', 'LA', '1', 'CMYK'])
def test_eight_bit_modes_convert_as_pillow_does(mode):
  rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  im = Image.fromarray(rgb).convert(mode)
  np.testing.assert_array_equal(images.to_rgb8(im, 'x'), np.asarray(im.convert('RGB')))


def test_float_images_are_refused_naming_the_mode():
  im = Image.fromarray(np.full((4, 4), 0.5, np.float32))
  assert im.mode == 'F'
  with pytest.raises(images.ImageModeError, match=r"scan\.tif: image mode 'F'"):
    images.to_rgb8(im, 'scan.tif')


def test_undecodable_and_missing_files_name_the_file(tmp_path):
  bad = tmp_path / 'broken.png'
  bad.write_bytes(b'\x89PNG not really')
  with pytest.raises(ValueError, match='broken.png: cannot decode'):
    images.decode(str(bad), str(bad))
  with pytest.raises(FileNotFoundError, match='nothere.png'):
    images.decode(str(tmp_path / 'nothere.png'), 'nothere.png')
