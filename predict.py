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
from zsi_jax.jsonio import read_json, write_json

flags.DEFINE_string('workdir', None, 'training workdir (config.json + checkpoints/)')
flags.DEFINE_string('model', None, 'instead of --workdir: a model file written by export.py')
flags.DEFINE_string('input', '', 'an image file or a folder of images')
flags.DEFINE_string('dataset_split', '', 'instead of --input: images of this annotation split '
                    'of the training dataset (e.g. test_zsi)')
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

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')


def _beside(path):
  """The folder holding ``path``."""
  parent = path.rstrip('/').rsplit('/', 1)
  return parent[0] if len(parent) == 2 else '.'


def list_images(predictor):
  """[(image_id, path)] from --input or --dataset_split."""
  if FLAGS.dataset_split:
    info = predictor.info
    if FLAGS.data_root:
      info = datasets.load_dataset(FLAGS.data_root, info.vector_file or 'class_vectors.txt')
    images = read_json(info.annotation_file(FLAGS.dataset_split), 'annotation file')['images']
    folder = info.image_dir(FLAGS.dataset_split)
    items = [(im['id'], storage.join(folder, im['file_name'])) for im in images]
  elif storage.isdir(FLAGS.input):
    files = [f for f in storage.listdir(FLAGS.input) if f.lower().endswith(IMAGE_EXTENSIONS)]
    items = [(k + 1, storage.join(FLAGS.input, f)) for k, f in enumerate(files)]
  elif FLAGS.input:
    items = [(1, FLAGS.input)]
  else:
    raise app.UsageError('give --input (file or folder) or --dataset_split')
  if not items:
    raise app.UsageError(f'no images found in {FLAGS.input or FLAGS.dataset_split}')
  return items[:FLAGS.num_images] if FLAGS.num_images else items


def resolve_classes(info, spec):
  named = {'unseen': info.unseen, 'seen': info.seen, 'all': info.names}
  if spec in named:
    return list(named[spec])
  return [n.strip() for n in spec.split(',') if n.strip()]


def main(_):
  import numpy as np
  from pycocotools import mask as mask_utils
  from tqdm import tqdm

  from zsi_jax import visualize
  from zsi_jax.segmenter import load_image

  if bool(FLAGS.workdir) == bool(FLAGS.model):
    raise app.UsageError('give either --workdir (a training workdir) or --model (a file '
                         'written by export.py)')
  if FLAGS.model:
    ignored = [f'--{k}' for k in ('checkpoint', 'vectors', 'max_classes')
               if FLAGS[k].value is not None]
    if ignored:
      raise app.UsageError(f'{", ".join(ignored)}: only with --workdir; a --model file fixed '
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
  classes = resolve_classes(info, FLAGS.classes)
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
  for image_id, path in tqdm(list_images(predictor), desc='predict'):
    try:
      img = load_image(path)
    except (ValueError, OSError) as e:
      skipped.append(path)
      tqdm.write(f'skipped: {cli.one_line(e)}', file=sys.stderr)
      continue
    pred = predictor.predict(img, class_names=classes, class_vectors=vectors,
                             score_threshold=FLAGS.score_threshold,
                             seen_calibration=FLAGS.seen_calibration)
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
    pic = visualize.draw_predictions(img, pred, unseen=unseen, scale=FLAGS.picture_scale)
    name = os.path.splitext(storage.basename(path))[0]
    storage.write_bytes(storage.join(out_dir, f'{name}.png'), visualize.png_bytes(pic))
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
  if skipped:
    print(f'error: skipped {len(skipped)} unreadable image(s): {", ".join(skipped)}',
          file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(cli.main(main), flags_parser=cli.parse_flags)
