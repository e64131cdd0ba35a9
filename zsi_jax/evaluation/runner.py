"""Runs a trained model over a test split and scores it with the ZSI/GZSI protocol.

Settings (docs/REFERENCE_NOTES.md): 'zsi' scores the unseen classes on images that hold
unseen objects (unseen annotations only); 'gzsi' scores seen + unseen classes
together on the same images (all annotations); 'seen' scores the seen classes
on the held-out ``val`` split.
"""
from __future__ import annotations

import json
import os
import time
from typing import Dict, Optional

import jax
from pycocotools.coco import COCO
from tqdm import tqdm

from zsi_jax import checkpoint as ckpt_lib
from zsi_jax.data import datasets
from zsi_jax.data.input_pipeline import Loader, load_coco
from zsi_jax.evaluation import protocol
from zsi_jax.evaluation.results import image_results
from zsi_jax.modeling.build import build_model
from zsi_jax.modeling.class_space import pad_class_vectors
from zsi_jax.modeling.zsi import ZSIModel

SETTINGS = {'zsi': 'test_zsi', 'gzsi': 'test_gzsi', 'seen': 'val'}


def evaluate(workdir: str, setting: str = 'zsi', step: Optional[int] = None,
             scoring: Optional[str] = None, data_root: Optional[str] = None,
             vectors: Optional[str] = None, log=print) -> Dict[str, object]:
  """Evaluates a checkpoint; writes results and metrics JSON into ``workdir/eval``."""
  if setting not in SETTINGS:
    raise ValueError(f'setting must be one of {sorted(SETTINGS)}, got {setting!r}')
  config = ckpt_lib.load_config(workdir)
  info = datasets.load_dataset(data_root or config.data.root, vectors or config.data.vectors)
  variables, step = ckpt_lib.restore_variables(workdir, step)
  return evaluate_variables(config, variables, info, setting, step, scoring,
                            os.path.join(workdir, 'eval'), log=log)


def evaluate_variables(config, variables, info: datasets.DatasetInfo, setting: str, step: int,
                       scoring: Optional[str] = None, out_dir: Optional[str] = None,
                       max_images: int = 0, log=print, progress: bool = True
                       ) -> Dict[str, object]:
  """Runs the model over a test split and scores it (evaluation/protocol.py).

  Args:
    config: experiment config; variables: model variables.
    info: the dataset; setting: 'zsi', 'gzsi' or 'seen'; step: for the report.
    scoring: unseen scoring (default: the config's).
    out_dir: where ``{setting}_results.json`` / ``{setting}_metrics.json`` go
      (None: not written).
    max_images: evaluate only the first N images of the split (0: all), e.g.
      for periodic evaluation during training.
  Returns:
    the metrics dict (see ``format_table``).
  """
  if setting not in SETTINGS:
    raise ValueError(f'setting must be one of {sorted(SETTINGS)}, got {setting!r}')
  scoring = scoring or config.model.test.scoring
  targets = {'zsi': info.unseen, 'gzsi': info.seen + info.unseen, 'seen': info.seen}[setting]
  model = build_model(config.model, info.background, len(info.seen), training=False)
  k_max = info.class_rows(config.data.max_classes)
  cv, cm = pad_class_vectors(info.vectors_of(targets), k_max)
  sv, sm = pad_class_vectors(info.vectors_of(info.seen), k_max)
  cat_ids = info.cat_ids(targets)

  ann_file = info.annotation_file(SETTINGS[setting])
  records, _ = load_coco(ann_file, info.image_dir(SETTINGS[setting]), cat_ids)
  if max_images:
    records = records[:max_images]
  d = config.data
  loader = Loader(records, d.batch_size, d.image_size, d.scale, d.max_instances, d.mask_gt_size,
                  train=False, process_index=0, process_count=1)
  detect = jax.jit(lambda v, im, hw: model.apply(v, im, hw, cv, cm, seen_vectors=sv,
                                                 seen_valid=sm, scoring=scoring,
                                                 method=ZSIModel.detect))
  results = []
  t_model = t_host = 0.0
  n_images = 0
  for batch in tqdm(loader.eval_iterator(), total=loader.steps_per_epoch, desc=f'eval {setting}',
                    disable=not progress):
    t0 = time.time()
    det = jax.device_get(detect(variables, batch['image'], batch['input_hw']))
    t1 = time.time()
    for i in range(batch['image'].shape[0]):
      if batch['image_id'][i] < 0:
        continue
      n_images += 1
      results.extend(image_results(int(batch['image_id'][i]), {k: v[i] for k, v in det.items()},
                                   float(batch['scale'][i]), tuple(batch['orig_hw'][i]), cat_ids,
                                   mask_threshold=config.model.test.mask_threshold))
    t_model += t1 - t0
    t_host += time.time() - t1

  gt = COCO(ann_file) if log is print else _quiet_coco(ann_file)
  if max_images:
    gt = _subset(gt, [r['image_id'] for r in records])
  seen_ids = info.cat_ids(info.seen) if setting == 'gzsi' else None
  box_results = [{k: v for k, v in r.items() if k != 'segmentation'} for r in results]
  metrics = {'setting': setting, 'step': int(step), 'scoring': scoring, 'images': n_images,
             'detections': len(results),
             'box': protocol.zsi_metrics(gt, box_results, 'bbox', cat_ids, seen_ids),
             'mask': protocol.zsi_metrics(gt, results, 'segm', cat_ids, seen_ids),
             'seconds_model': t_model, 'seconds_host_postprocess': t_host}
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f'{setting}_results.json'), 'w') as f:
      json.dump(results, f)
    with open(os.path.join(out_dir, f'{setting}_metrics.json'), 'w') as f:
      json.dump(metrics, f, indent=1)
  log(format_table(metrics))
  return metrics


def _subset(gt: COCO, image_ids) -> COCO:
  """A COCO index restricted to ``image_ids`` (for evaluating the first N images)."""
  keep = set(image_ids)
  sub = COCO()
  sub.dataset = dict(gt.dataset)
  sub.dataset['images'] = [im for im in gt.dataset['images'] if im['id'] in keep]
  sub.dataset['annotations'] = [a for a in gt.dataset['annotations'] if a['image_id'] in keep]
  import contextlib
  import io
  with contextlib.redirect_stdout(io.StringIO()):
    sub.createIndex()
  return sub


def _quiet_coco(path):
  import contextlib
  import io
  with contextlib.redirect_stdout(io.StringIO()):
    return COCO(path)


def format_table(m: Dict[str, object]) -> str:
  """The paper's table layout for one setting (percentages)."""
  pct = lambda x: f'{100 * x:5.1f}' if x == x else '  nan'
  lines = [f"{m['setting'].upper()} (step {m['step']}, scoring={m['scoring']}, "
           f"{m['images']} images, {m['detections']} detections)",
           f"{'':6} {'R@100 0.4':>10} {'R@100 0.5':>10} {'R@100 0.6':>10} {'mAP@0.5':>8}"]
  for kind in ('box', 'mask'):
    r = m[kind]
    lines.append(f"{kind:6} {pct(r['recall@100_iou0.4']):>10} {pct(r['recall@100_iou0.5']):>10} "
                 f"{pct(r['recall@100_iou0.6']):>10} {pct(r['map@0.5']):>8}")
  if 'seen_map@0.5' in m['mask']:
    lines.append(f"{'':6} {'seen mAP':>9} {'seen R':>7} {'unseen mAP':>11} {'unseen R':>9} "
                 f"{'HM mAP':>7} {'HM R':>6}")
    for kind in ('box', 'mask'):
      r = m[kind]
      lines.append(f"{kind:6} {pct(r['seen_map@0.5']):>9} {pct(r['seen_recall@100']):>7} "
                   f"{pct(r['unseen_map@0.5']):>11} {pct(r['unseen_recall@100']):>9} "
                   f"{pct(r['hm_map@0.5']):>7} {pct(r['hm_recall@100']):>6}")
  return '\n'.join(lines)
