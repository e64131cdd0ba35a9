"""What a user's own images do to predict.py: EXIF orientation, decompression
bombs, names that collide, files of other types, huge images, flag mistakes."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from zsi_jax.data import images

from tests.scripts import run_script


def _save_with_orientation(path, array, orientation):
  exif = Image.Exif()
  exif[images.EXIF_ORIENTATION] = orientation
  Image.fromarray(array).save(path, exif=exif)


@pytest.mark.parametrize('orientation,turn', [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied_on_decoding(tmp_path, orientation, turn):
  rng = np.random.default_rng(orientation)
  stored = rng.integers(0, 255, (20, 40, 3), dtype=np.uint8)
  path = str(tmp_path / f'o{orientation}.png')
  _save_with_orientation(path, stored, orientation)
  # 3: half a turn; 6: the viewer turns it a quarter clockwise; 8: counter-clockwise.
  np.testing.assert_array_equal(images.decode(path, path), np.rot90(stored, turn))
  with Image.open(path) as im:
    assert images.displayed_size(im) == np.rot90(stored, turn).shape[1::-1]


def test_pixel_limit_refuses_in_one_line(tmp_path):
  path = str(tmp_path / 'big.png')
  Image.new('RGB', (100, 100)).save(path)
  try:
    images.set_pixel_limit(5000)
    with pytest.raises(ValueError, match=r'big.png: .*10000 pixels.*--max_image_pixels'):
      images.decode(path, path)
  finally:
    images.set_pixel_limit(images.DEFAULT_PIXEL_LIMIT)


def _folder(trained, tmp_path):
  """A user's folder: two images with one base name, a phone photo turned by
  EXIF, a bomb, a wide image, a text file."""
  data, _ = trained
  folder = tmp_path / 'photos'
  folder.mkdir()
  test_dir = os.path.join(data, 'images')
  src = [np.asarray(Image.open(os.path.join(test_dir, f)).convert('RGB'))
         for f in sorted(os.listdir(test_dir))[:2]]
  Image.fromarray(src[0]).save(folder / 'a.jpg', quality=95)
  Image.fromarray(src[1]).save(folder / 'a.png')
  _save_with_orientation(str(folder / 'phone.jpg'), np.ascontiguousarray(src[0][:, :48]), 6)
  Image.new('RGB', (1000, 1000)).save(folder / 'bomb.png')
  Image.fromarray(src[0]).resize((1500, 400)).save(folder / 'wide.png')
  (folder / 'notes.txt').write_text('not an image')
  return str(folder)


def test_a_folder_run_accounts_for_every_file(trained, tmp_path):
  _, workdir = trained
  folder = _folder(trained, tmp_path)
  out = str(tmp_path / 'out')
  r = run_script(['predict.py', '--workdir', workdir, '--input', folder, '--classes',
                  'Red  Star,green ring', '--score_threshold', '0', '--out', out,
                  '--max_image_pixels', '700000'], check=False)
  assert r.returncode == 1, r.stderr[-3000:]
  # Names that differ only in case or spacing are the class space's, with a note.
  assert "note: --classes 'Red  Star' is the class 'red star'" in r.stderr
  # The bomb is skipped and listed; every other image is predicted and written.
  err = [l for l in r.stderr.splitlines() if l.startswith('error:')]
  assert len(err) == 1 and 'skipped 1 image(s)' in err[0] and 'bomb.png' in err[0]
  assert 'ignored 1 file(s) of other types: notes.txt' in r.stderr
  written = json.load(open(os.path.join(out, 'images.json')))
  assert sorted(os.path.basename(i['file_name']) for i in written) == [
      'a.jpg', 'a.png', 'phone.jpg', 'wide.png']
  # Two inputs named a.*: two pictures.
  assert {'a.png', 'a_png.png', 'phone.png', 'wide.png'} <= set(os.listdir(out))
  # The phone photo as it is viewed: 48 wide stored, turned to 48 high.
  phone = next(i for i in written if i['file_name'].endswith('phone.jpg'))
  assert (phone['height'], phone['width']) == (48, 64)
  # A large image's picture is not upscaled (the small ones are, by 2).
  with Image.open(os.path.join(out, 'wide.png')) as im:
    assert im.size == (1500, 400)
  with Image.open(os.path.join(out, 'a.png')) as im:
    assert im.size == (128, 128)
  categories = json.load(open(os.path.join(out, 'categories.json')))
  assert [c['name'] for c in categories] == ['red star', 'green ring']


def test_flag_mistakes_are_one_line(trained, tmp_path):
  _, workdir = trained
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'readme.md').write_text('x')
  for args, message in (
      (['--input', str(empty)], 'no images in'),
      (['--input', str(empty), '--dataset_split', 'test_zsi'], 'not both'),
      ([], 'give either --input')):
    r = run_script(['predict.py', '--workdir', workdir, *args], check=False)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) <= 2, r.stderr[-2000:]
    assert lines[0].startswith('error:') and message in lines[0]
