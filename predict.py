"""Segments images with a trained checkpoint: PNG overlays and a COCO results json.

python predict.py --workdir runs/shapes --input photo.png --classes "red star,blue ring"
python predict.py --model shapes.zsi --input photo.png --classes "red star,blue ring"
python predict.py --workdir runs/shapes --input DIR --classes unseen --out DIR_OUT
python predict.py --workdir runs/shapes --dataset_split test_zsi --num_images 12 \
    --classes unseen --grid docs/figure6_unseen.png

--workdir takes a training workdir (the model is traced and compiled),
--model a file written by export.py (no model code needed).
--classes: a comma-separated list of class names, or 'unseen', 'seen', 'all'
(the trained class space's). Other names get vectors from the dataset's
word-vector file (kept in the workdir or model file when small) or
--word_vectors.
Writes OUT/<image>.png, OUT/results.json (COCO results: bbox, score, RLE
segmentation in original pixels), OUT/categories.json, OUT/images.json and
OUT/predict.log. Images that cannot be read are skipped and listed at the end
(exit status 1); the results of every other image are written. The workdir,
--input and --out may be bucket URLs (gs://...).
"""
import os
import sys

from absl import app, flags

from zsi_jax import cli, storage
from zsi_jax.data import datasets
from zsi_jax.data import images as images_lib
from zsi_jax.jsonio import read_json, write_json

flags.DEFINE_string('workdir', None, 'training workdir (config.json + checkpoints/)')
flags.DEFINE_string('model', None, 'instead of --workdir: a model file written by export.py')
flags.DEFINE_string('input', '', 'an image file or a folder of images')
flags.DEFINE_string('dataset_split', '', 'instead of --input: images of this annotation split '
                    'of the training dataset (e.g. test_zsi)')
flags.DEFINE_integer('max_image_pixels', images_lib.DEFAULT_PIXEL_LIMIT, 'images with more '
                     'pixels are skipped as possible decompression bombs (0: no limit)')
flags.DEFINE_integer('num_images', 0, 'at most this many images (0: all)')
flags.DEFINE_string('classes', 'all', "class names (comma-separated) or 'unseen'/'seen'/'all'")
flags.DEFINE_string('word_vectors', '', 'gensim-loadable file for names outside the dataset')
flags.DEFINE_float('score_threshold', 0.3, 'drop detections below this score')
flags.DEFINE_float('seen_calibration', None, 'with seen and unseen classes: lower seen-class '
                   'scores by this gamma in [-1, 1] (default: config model.test.seen_calibration)')
flags.DEFINE_integer('checkpoint', None, 'step (default: latest)')
flags.DEFINE_string('out', '', 'output folder (default: WORKDIR/predictions, or predictions/ '
                    'beside the --model file)')
flags.DEFINE_string('grid', '', 'also write all pictures as one grid PNG here')
flags.DEFINE_integer('picture_scale', 2, 'integer upscaling of the pictures')
flags.DEFINE_string('data_root', None, 'read the class space and --dataset_split from this '
                    'dataset (default: the workdir\'s classes.json, and the dataset root it '
                    'records)')
flags.DEFINE_string('vectors', None, 'class-vector file in the dataset root (default: config)')
flags.DEFINE_integer('max_classes', None, 'rows of the padded class matrix, i.e. the most '
                     'classes one call can take (default: config or the dataset\'s count)')
FLAGS = flags.FLAGS

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff', '.gif')


def _beside(path):
  """The folder holding ``path``."""
  parent = path.rstrip('/').rsplit('/', 1)
  return parent[0] if len(parent) == 2 else '.'


def list_images(predictor):
  """([(image_id, path)], files ignored by extension) from --input or --dataset_split."""
  ignored = []
  if FLAGS.dataset_split:
    info = predictor.info
    if FLAGS.data_root:
      info = datasets.load_dataset(FLAGS.data_root, info.vector_file or 'class_vectors.txt')
    images = read_json(info.annotation_file(FLAGS.dataset_split), 'annotation file')['images']
    folder = info.image_dir(FLAGS.dataset_split)
    items = [(im['id'], storage.join(folder, im['file_name'])) for im in images]
  elif storage.isdir(FLAGS.input):
    names = sorted(storage.listdir(FLAGS.input))
    files = [f for f in names if f.lower().endswith(IMAGE_EXTENSIONS)]
    ignored = [f for f in names if f not in files and not storage.isdir(
        storage.join(FLAGS.input, f))]
    items = [(k + 1, storage.join(FLAGS.input, f)) for k, f in enumerate(files)]
  else:
    items = [(1, FLAGS.input)]
  if not items:
    raise ValueError(f'no images in {FLAGS.input or FLAGS.dataset_split} (looked for '
                     f'{", ".join(IMAGE_EXTENSIONS)}'
                     + (f'; ignored {", ".join(ignored[:5])}' if ignored else '') + ')')
  return (items[:FLAGS.num_images] if FLAGS.num_images else items), ignored


def resolve_classes(predictor, spec):
  """The --classes list: 'unseen', 'seen', 'all' or names (matched to the class space's
  spelling regardless of case and spacing, with a note)."""
  info = predictor.info
  named = {'unseen': info.unseen, 'seen': info.seen, 'all': info.names}
  if spec in named:
    return list(named[spec])
  asked = [n.strip() for n in spec.split(',') if n.strip()]
  names = predictor.known_spelling(asked)
  for a, n in zip(asked, names):
    if a != n:
      print(f'note: --classes {a!r} is the class {n!r}', file=sys.stderr)
  return names


class OutputNames:
  """Picture names that never collide: ``a.png`` for ``a.jpg``, ``a_png.png`` for
  a second ``a.png`` beside it, then counters."""

  def __init__(self):
    self.used = set()

  def __call__(self, path):
    stem, ext = os.path.splitext(storage.basename(path))
    for name in (stem, f'{stem}_{ext.lstrip(".")}'):
      if name not in self.used:
        break
    else:
      k = 2
      while f'{stem}_{k}' in self.used:
        k += 1
      name = f'{stem}_{k}'
    self.used.add(name)
    return name


def main(_):
  import numpy as np
  from pycocotools import mask as mask_utils
  from tqdm import tqdm

  from zsi_jax import visualize
  from zsi_jax.segmenter import load_image

  if bool(FLAGS.input) == bool(FLAGS.dataset_split):
    raise ValueError('give either --input (an image or a folder) or --dataset_split (the '
                         'images of an annotation split), not both')
  images_lib.set_pixel_limit(FLAGS.max_image_pixels)
  if bool(FLAGS.workdir) == bool(FLAGS.model):
    raise ValueError('give either --workdir (a training workdir) or --model (a file '
                         'written by export.py)')
  if FLAGS.model:
    ignored = [f'--{k}' for k in ('checkpoint', 'vectors', 'max_classes')
               if FLAGS[k].value is not None]
    if ignored:
      raise ValueError(f'{", ".join(ignored)}: only with --workdir; a --model file fixed '
                           'these when it was exported (export.py)')
  out_dir = FLAGS.out or storage.join(FLAGS.workdir or _beside(FLAGS.model), 'predictions')
  cli.setup_logging()
  storage.check_writable(out_dir, 'output folder')
  cli.log_to_file(storage.join(out_dir, 'predict.log'))
  if FLAGS.model:
    from zsi_jax.exported import ExportedModel
    predictor = ExportedModel.load(FLAGS.model, word_vectors=FLAGS.word_vectors or None)
  else:
    from zsi_jax.inference import Predictor
    predictor = Predictor.from_checkpoint(FLAGS.workdir, FLAGS.checkpoint,
                                          data_root=FLAGS.data_root, vectors=FLAGS.vectors,
                                          word_vectors=FLAGS.word_vectors or None,
                                          max_classes=FLAGS.max_classes)
  info = predictor.info
  classes = resolve_classes(predictor, FLAGS.classes)
  vectors = predictor.class_vectors(classes)  # fails early on unknown names
  next_id = max(info.category_ids.values(), default=0) + 1
  cat_id = {}
  for n in classes:
    if n in info.category_ids:
      cat_id[n] = int(info.category_ids[n])
    else:
      cat_id[n], next_id = next_id, next_id + 1
  results, images, pictures, captions, skipped = [], [], [], [], []
  unseen = set(info.unseen) | {n for n in classes if n not in info.names}
  items, ignored = list_images(predictor)
  output_name = OutputNames()
  for image_id, path in tqdm(items, desc='predict'):
    try:
      img = load_image(path)
      pred = predictor.predict(img, class_names=classes, class_vectors=vectors,
                               score_threshold=FLAGS.score_threshold,
                               seen_calibration=FLAGS.seen_calibration)
    except Exception as e:  # noqa: BLE001 (one image's failure of any kind skips only it)
      if isinstance(e, KeyboardInterrupt):
        raise
      skipped.append((path, cli.one_line(e)))
      tqdm.write(f'skipped: {cli.one_line(e)}', file=sys.stderr)
      continue
    images.append(dict(id=int(image_id), file_name=path, height=img.shape[0], width=img.shape[1]))
    if len(pred['scores']):
      rles = mask_utils.encode(np.asfortranarray(pred['masks'].transpose(1, 2, 0).astype(np.uint8)))
    for i in range(len(pred['scores'])):
      x1, y1, x2, y2 = (float(v) for v in pred['boxes'][i])
      rle = dict(rles[i])
      rle['counts'] = rle['counts'].decode('ascii')
      results.append(dict(image_id=int(image_id), category_id=cat_id[pred['class_names'][i]],
                          bbox=[x1, y1, x2 - x1, y2 - y1], score=float(pred['scores'][i]),
                          segmentation=rle))
    pic = visualize.draw_predictions(img, pred, unseen=unseen, scale=visualize.picture_scale(
        img.shape[:2], FLAGS.picture_scale), max_side=visualize.MAX_PICTURE_SIDE)
    name = output_name(path)
    storage.write_bytes(storage.join(out_dir, f'{name}.png'), visualize.png_bytes(pic))
    if FLAGS.grid:
      pictures.append(pic)
      captions.append(name)

  write_json(storage.join(out_dir, 'results.json'), results)
  write_json(storage.join(out_dir, 'categories.json'),
             [dict(id=cat_id[n], name=n, unseen=n in unseen) for n in classes], indent=1)
  write_json(storage.join(out_dir, 'images.json'), images, indent=1)
  if FLAGS.grid and pictures:
    grid = visualize.grid(pictures, columns=min(4, len(pictures)), captions=captions)
    storage.write_bytes(FLAGS.grid, visualize.png_bytes(grid))
  print(f'{len(results)} detections on {len(images)} images -> {out_dir}'
        + (f'; grid: {FLAGS.grid}' if FLAGS.grid and pictures else ''))
  if ignored:
    shown = ', '.join(ignored[:10]) + (f' and {len(ignored) - 10} more' if len(ignored) > 10
                                       else '')
    print(f'ignored {len(ignored)} file(s) of other types: {shown}', file=sys.stderr)
  if skipped:
    print(f'error: skipped {len(skipped)} image(s): '
          + '; '.join(f'{path} ({why})' for path, why in skipped), file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(cli.main(main), flags_parser=cli.parse_flags)
