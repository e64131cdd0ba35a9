"""Decoding images of any mode Pillow reads into the model's 8-bit RGB, the
way viewers show them (EXIF orientation applied).

Pillow's own ``convert('RGB')`` clips 16- and 32-bit grey values at 255, so a
16-bit PNG becomes almost white. Here those are rescaled from their full
range; modes whose range is unknown (floating point, 32-bit integers beyond
16 bits) are refused with the mode named.
"""
from __future__ import annotations

import io
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from zsi_jax import storage

# Modes whose samples are 8 bits: Pillow's conversion to RGB is exact.
EIGHT_BIT_MODES = ('1', 'L', 'LA', 'La', 'P', 'PA', 'RGB', 'RGBA', 'RGBa', 'RGBX', 'CMYK',
                   'YCbCr', 'LAB', 'HSV')
SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N')


# Pillow refuses images above twice its MAX_IMAGE_PIXELS as possible
# decompression bombs; this is that limit (about 179 megapixels).
DEFAULT_PIXEL_LIMIT = 2 * 89_478_485
EXIF_ORIENTATION = 0x0112


def set_pixel_limit(pixels: int):
  """Images with more pixels are refused (0: no limit)."""
  import warnings
  Image.MAX_IMAGE_PIXELS = pixels // 2 if pixels else None
  # Pillow warns from half the limit on; below it the image is accepted.
  warnings.simplefilter('ignore', Image.DecompressionBombWarning)


def upright(im: Image.Image) -> Image.Image:
  """``im`` turned the way its EXIF orientation says it is viewed (as is without one)."""
  if im.getexif().get(EXIF_ORIENTATION, 1) in (1, None):
    return im
  return ImageOps.exif_transpose(im)


def displayed_size(im: Image.Image):
  """(width, height) as viewed: swapped for EXIF orientations 5-8 (a quarter turn)."""
  w, h = im.size
  return (h, w) if im.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8) else (w, h)


class ImageModeError(ValueError):
  """An image whose pixel format cannot be read as 8-bit RGB."""


def to_rgb8(im: Image.Image, name: str) -> np.ndarray:
  """A Pillow image of any supported mode -> [H, W, 3] uint8 RGB, upright.

  8-bit modes convert as Pillow does (alpha dropped, palettes expanded);
  16-bit grey ('I;16*', and 'I' holding values up to 65535) is scaled by
  255/65535. ``name`` (file or image id) goes into the error for other modes.
  """
  im = upright(im)
  if im.mode in EIGHT_BIT_MODES:
    return np.asarray(im.convert('RGB'))
  if im.mode in SIXTEEN_BIT_MODES or im.mode == 'I':
    grey = np.asarray(im).astype(np.int64)
    if grey.size and (grey.min() < 0 or grey.max() > 65535):
      raise ImageModeError(f'{name}: image mode {im.mode!r} with values outside 0..65535; '
                           'convert it to 8-bit RGB first')
    grey = np.round(grey * (255.0 / 65535.0)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  raise ImageModeError(f'{name}: image mode {im.mode!r} is not supported (its value range is '
                       'unknown); convert it to 8-bit RGB first')


def decode(source: Union[str, bytes], name: str) -> np.ndarray:
  """An image file (local path or URL) or its encoded bytes -> [H, W, 3] uint8 RGB.

  Raises FileNotFoundError (missing file), ImageModeError (unsupported mode)
  or ValueError (undecodable data), each naming ``name``.
  """
  try:
    if isinstance(source, str) and storage.is_url(source):
      source = storage.read_bytes(source)
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
      return to_rgb8(im, name)
  except FileNotFoundError:
    raise FileNotFoundError(f'{name}: file not found') from None
  except ImageModeError:
    raise
  except Image.DecompressionBombError as e:
    raise ValueError(f'{name}: {e.args[0].split(" could be")[0]} (raise the limit with '
                     '--max_image_pixels if the image is genuine)') from None
  except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for broken files
    raise ValueError(f'{name}: cannot decode the image: {e}') from e
