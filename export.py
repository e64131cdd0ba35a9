"""Writes a trained model as one self-contained file: a zero-shot segmenter for any class list.

python export.py --workdir runs/shapes --out shapes.zsi [--checkpoint STEP]
    [--image_size H,W] [--max_classes K] [--dtype float32|bfloat16]

The file holds the detect function serialised with jax.export (lowered for
cpu, cuda and tpu), the parameters, the class space and a metadata record; it
runs without this project's model code (zsi_jax/exported.py; predict.py
--model FILE). Class vectors are an input, so one file takes any list of up to
K classes. --out may be a bucket URL.
"""
import os
import time

from absl import app, flags

from zsi_jax import cli, storage

flags.DEFINE_string('workdir', None, 'training workdir (config.json, classes.json, checkpoints/)')
flags.DEFINE_string('out', None, 'the model file to write (e.g. model.zsi)')
flags.DEFINE_integer('checkpoint', None, 'step (default: latest)')
flags.DEFINE_list('image_size', None, "H,W of the canvas images are resized into (default: the "
                  "training's data.image_size)")
flags.DEFINE_integer('max_classes', None, 'the most classes one call takes (default: config '
                     "data.max_classes or the class space's size)")
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'parameters and computation')
flags.DEFINE_string('data_root', None, 'read the class space from this dataset (needed only for '
                    'workdirs written before zsi_jax kept classes.json)')
flags.mark_flags_as_required(['workdir', 'out'])
FLAGS = flags.FLAGS


def main(_):
  image_size = None
  if FLAGS.image_size:
    try:
      image_size = tuple(int(x) for x in FLAGS.image_size)
    except ValueError:
      raise ValueError(f'--image_size={",".join(FLAGS.image_size)}: expected H,W in pixels') \
          from None
  cli.setup_logging()
  from zsi_jax import export_model, trained
  start = time.time()
  model = trained.load(FLAGS.workdir, FLAGS.checkpoint, data_root=FLAGS.data_root)
  meta = export_model.export(model, FLAGS.out, image_size, FLAGS.max_classes, FLAGS.dtype)
  size = storage.size(FLAGS.out)
  print(f'exported step {meta["step"]} of {FLAGS.workdir} -> {FLAGS.out} ({size / 2**20:.1f} MiB, '
        f'{meta["dtype"]}, canvas {meta["image_size"][0]}x{meta["image_size"][1]}, up to '
        f'{meta["max_classes"]} classes, {"/".join(meta["platforms"])}) in '
        f'{time.time() - start:.0f} s')
  print(f'segment with: python predict.py --model {FLAGS.out} --input IMAGE --classes '
        f'"{",".join(meta["classes"]["unseen"][:2])}"')


if __name__ == '__main__':
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')   # lowering for every platform needs none of them
  app.run(cli.main(main), flags_parser=cli.parse_flags)
