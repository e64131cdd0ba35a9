"""Runs a trained model over a test split and scores it with the ZSI/GZSI protocol.

Settings (docs/REFERENCE_NOTES.md): 'zsi' scores the unseen classes on images that hold
unseen objects (unseen annotations only); 'gzsi' scores seen + unseen classes
together on the same images (all annotations); 'seen' scores the seen classes
on the held-out ``val`` split.

With several processes (``eval.py --distributed``, or periodic evaluation in
a multi-host run) every process detects its slice of each batch on its own
devices, process 0 gathers the detections in the split's order, scores them
and writes the files; the numbers equal a one-process run's.
"""
from __future__ import annotations

import time
from typing import Dict, Optional, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from pycocotools.coco import COCO
from tqdm import tqdm

from zsi_jax import jsonio, storage, trained
from zsi_jax.data import datasets
from zsi_jax.data.loaders import split_loader
from zsi_jax.evaluation import protocol
from zsi_jax.evaluation.results import image_results
from zsi_jax.data.datasets import pad_class_vectors
from zsi_jax.modeling.zsi import ZSIModel
from zsi_jax.training import mesh as mesh_lib

SETTINGS = {'zsi': 'test_zsi', 'gzsi': 'test_gzsi', 'seen': 'val'}


class ScoringError(RuntimeError):
  """COCO scoring failed after the detections were written."""


def evaluate(workdir: str, setting: str = 'zsi', step: Optional[int] = None,
             scoring: Optional[str] = None, data_root: Optional[str] = None,
             vectors: Optional[str] = None, calibration: Optional[float] = None,
             log=print, batch_per_device: int = 0) -> Optional[Dict[str, object]]:
  """Evaluates a checkpoint; writes results and metrics JSON into ``workdir/eval``.

  ``calibration``: gamma of calibrated stacking in GZSI (default: the config's
  ``model.test.seen_calibration``). ``batch_per_device``: see
  :func:`evaluate_variables`. Returns the metrics on process 0, None on the others.
  """
  return evaluate_splits(workdir, [setting], step, scoring, data_root, vectors, calibration,
                         log, batch_per_device)[setting]


def evaluate_splits(workdir: str, settings: Sequence[str], step: Optional[int] = None,
                    scoring: Optional[str] = None, data_root: Optional[str] = None,
                    vectors: Optional[str] = None, calibration: Optional[float] = None,
                    log=print, batch_per_device: int = 0) -> Dict[str, Optional[dict]]:
  """:func:`evaluate` for several settings with one checkpoint, restored once
  (a run still training cannot move the step between them). Returns
  setting -> metrics (None on processes other than 0)."""
  unknown = [s for s in settings if s not in SETTINGS]
  if unknown:
    raise ValueError(f'setting must be one of {sorted(SETTINGS)}, got {", ".join(unknown)}')
  config, variables, info, step = _load(workdir, settings[0], step, data_root, vectors)
  return {s: evaluate_variables(config, variables, info, s, step, scoring,
                                storage.join(workdir, 'eval'), calibration=calibration, log=log,
                                batch_per_device=batch_per_device) for s in settings}


def _load(workdir, setting, step, data_root, vectors):
  if setting not in SETTINGS:
    raise ValueError(f'setting must be one of {sorted(SETTINGS)}, got {setting!r}')
  t = trained.load(workdir, step, data_root=data_root, vectors=vectors, dataset=True)
  return t.config, t.variables, t.info, t.step


def evaluate_variables(config, variables, info: datasets.DatasetInfo, setting: str, step: int,
                       scoring: Optional[str] = None, out_dir: Optional[str] = None,
                       max_images: int = 0, calibration: Optional[float] = None, log=print,
                       progress: bool = True,
                       batch_per_device: int = 0) -> Optional[Dict[str, object]]:
  """Runs the model over a test split and scores it (evaluation/protocol.py).

  Every process must call it (each detects its share); process 0 scores and
  writes, and the others return None.

  Args:
    config: experiment config; variables: model variables.
    info: the dataset; setting: 'zsi', 'gzsi' or 'seen'; step: for the report.
    scoring: unseen scoring (default: the config's).
    out_dir: where ``{setting}_results.json`` / ``{setting}_metrics.json`` go
      (None: not written).
    max_images: evaluate only the first N images of the split (0: all), e.g.
      for periodic evaluation during training.
    calibration: seen-score calibration gamma (default: the config's).
    batch_per_device: images each device takes per step (default: the
      training's share, ``data.batch_size`` over the devices, at least 1).
  Returns:
    the metrics dict (see ``format_table``) on process 0, None on the others.
  """
  gamma = config.model.test.seen_calibration if calibration is None else float(calibration)
  split = _Split(config, info, setting, scoring, max_images, batch_per_device)
  (results,), n_images, seconds = split.detect(variables, [gamma], progress)
  if jax.process_index() != 0:
    return None
  # The detections are written before scoring, so a scoring failure never loses them.
  results_file = _write_json(out_dir, f'{setting}_results.json', results)
  scores = split.score(results, results_file)
  metrics = {'setting': setting, 'step': int(step), 'scoring': split.scoring,
             'seen_calibration': gamma, 'images': n_images, 'detections': len(results),
             **scores, **seconds}
  _write_json(out_dir, f'{setting}_metrics.json', metrics, indent=1)
  log(format_table(metrics))
  return metrics


def calibration_sweep(workdir: str, num: int, step: Optional[int] = None,
                      scoring: Optional[str] = None, data_root: Optional[str] = None,
                      vectors: Optional[str] = None, log=print,
                      batch_per_device: int = 0) -> Optional[Dict[str, object]]:
  """GZSI at ``num`` calibrations gamma in [-1, 1], the model run once per image.

  From gamma = -1 (the unseen scores lowered by 1: only seen classes pass the
  score threshold) to gamma = 1 (only unseen classes). Writes
  ``workdir/eval/gzsi_calibration.json`` (``calibration_curve`` for boxes and
  masks) and ``gzsi_calibration.png``, the seen-unseen curve. The best gamma
  is chosen on the test labels: an oracle, not a tuned setting.
  """
  if num < 2:
    raise ValueError(f'--calibration_sweep needs at least 2 values of gamma, got {num}')
  config, variables, info, step = _load(workdir, 'gzsi', step, data_root, vectors)
  gammas = [float(g) for g in np.linspace(-1.0, 1.0, num)]
  split = _Split(config, info, 'gzsi', scoring, 0, batch_per_device)
  results, n_images, seconds = split.detect(variables, gammas, progress=True)
  if jax.process_index() != 0:
    return None
  out_dir = storage.join(workdir, 'eval')
  sweep = {'setting': 'gzsi', 'step': int(step), 'scoring': split.scoring,
           'images': n_images, **seconds}
  scored = [split.score(r, None, contact=False) for r in tqdm(results, desc='score')]
  for kind in ('box', 'mask'):
    sweep[kind] = calibration_curve(gammas, [s[kind] for s in scored])
  _write_json(out_dir, 'gzsi_calibration.json', sweep, indent=1)
  from zsi_jax import visualize
  storage.write_bytes(storage.join(out_dir, 'gzsi_calibration.png'),
                      visualize.png_bytes(visualize.calibration_curve(sweep)))
  log(format_sweep(sweep))
  return sweep


def calibration_curve(gammas: Sequence[float], rows: Sequence[Dict[str, float]]):
  """One box or mask curve of a sweep: per-gamma GZSI numbers, AUSUC and the oracle best HM.

  rows: ``protocol.zsi_metrics`` (GZSI) of each gamma.
  """
  curve = dict(gammas=list(gammas))
  for key, name in (('seen_map@0.5', 'seen_map'), ('unseen_map@0.5', 'unseen_map'),
                    ('hm_map@0.5', 'hm_map'), ('seen_recall@100', 'seen_recall'),
                    ('unseen_recall@100', 'unseen_recall')):
    curve[name] = [float(r[key]) for r in rows]
  curve['ausuc_map'] = protocol.ausuc(curve['seen_map'], curve['unseen_map'])
  hm = np.nan_to_num(np.asarray(curve['hm_map']), nan=-1.0)
  best = int(np.argmax(hm))
  curve['best_hm_map'] = curve['hm_map'][best]
  curve['best_gamma'] = curve['gammas'][best]
  return curve


class _Split:
  """One evaluation setting of a dataset: its classes, ground truth and model."""

  def __init__(self, config, info, setting, scoring, max_images, batch_per_device=0):
    if setting not in SETTINGS:
      raise ValueError(f'setting must be one of {sorted(SETTINGS)}, got {setting!r}')
    self.config, self.setting = config, setting
    self.scoring = scoring or config.model.test.scoring
    targets = {'zsi': info.unseen, 'gzsi': info.seen + info.unseen, 'seen': info.seen}[setting]
    k_max = info.class_rows(config.data.max_classes)
    self.classes = pad_class_vectors(info.vectors_of(targets), k_max)
    self.seen = trained.seen_inputs(config, info)
    self.cat_ids = info.cat_ids(targets)
    self.seen_ids = info.cat_ids(info.seen) if setting == 'gzsi' else None
    self.ann_file = info.annotation_file(SETTINGS[setting])
    # Everything scoring needs is checked before the model runs.
    self.gt = protocol.load_ground_truth(self.ann_file, self.cat_ids)
    self.neighbours_file = self.ann_file
    if setting == 'zsi':
      # ZSI's file holds only the unseen objects; their seen neighbours are in GZSI's.
      gzsi = info.annotation_file(SETTINGS['gzsi'])
      self.neighbours_file = gzsi if storage.exists(gzsi) else self.ann_file
    self._touching = None
    # Each device takes the same number of images per step however many
    # processes share the work, so each image meets the same compiled program.
    per_device = batch_per_device or max(1, config.data.batch_size // jax.device_count())
    self.loader = split_loader(config, info, SETTINGS[setting], self.cat_ids, train=False,
                               max_images=max_images, batch_size=per_device * jax.device_count())
    if max_images:
      self.gt = _subset(self.gt, self.loader.image_ids())
    self.model = trained.inference_model(config, info)

  def detect(self, variables, gammas: Sequence[float], progress: bool):
    """COCO results of the split for each calibration gamma: the features, proposals
    and class scores once per batch, the selection and masks once per gamma.

    With several processes each detects its slice of every batch and the
    lists are gathered on process 0 in the split's order (the others get
    empty lists).

    Returns (one results list per gamma, images, dict of seconds).
    """
    (cv, cm), (sv, sm) = self.classes, self.seen
    model, scoring = self.model, self.scoring
    mesh = mesh_lib.make_local_mesh()
    rows = NamedSharding(mesh, P('data'))
    variables = jax.device_put(mesh_lib.local_values(variables), NamedSharding(mesh, P()))
    candidates = jax.jit(lambda v, im, hw: model.apply(
        v, im, hw, cv, cm, sv, sm, scoring, method=ZSIModel.candidates))
    finish = jax.jit(lambda v, c, hw, g: model.apply(
        v, c, hw, cv, cm, sv, sm, scoring, g, method=ZSIModel.finish))
    loader = self.loader
    found = []                                  # (step, slot, results per gamma)
    t_model = t_host = 0.0
    for step, batch in enumerate(tqdm(loader.eval_iterator(), total=loader.steps_per_epoch,
                                      desc=f'eval {self.setting}',
                                      disable=not progress or jax.process_index() != 0)):
      keep = [i for i in range(batch['image'].shape[0]) if batch['image_id'][i] >= 0]
      t0 = time.time()
      image, hw = jax.device_put((batch['image'], batch['input_hw']), rows)
      cand = candidates(variables, image, hw)
      dets = [jax.device_get(finish(variables, cand, hw, np.float32(gamma))) for gamma in gammas]
      t1 = time.time()
      for i in keep:
        per_gamma = [{k: v[i] for k, v in det.items()} for det in dets]
        found.append((step, i, self._image_results(batch, i, per_gamma)))
      t_model += t1 - t0
      t_host += time.time() - t1
    seconds = {'seconds_model': t_model, 'seconds_host_postprocess': t_host}
    # Process p holds the p-th contiguous slice of every batch: (step, process,
    # slot) is the split's order.
    every = mesh_lib.gather_objects((found, seconds))
    results = [[] for _ in gammas]
    if jax.process_index() != 0:
      return results, 0, seconds
    images = sorted((step, p, slot, per_gamma) for p, (part, _) in enumerate(every)
                    for step, slot, per_gamma in part)
    for *_, per_gamma in images:
      for out, image_results_ in zip(results, per_gamma):
        out.extend(image_results_)
    seconds = {k: max(s[k] for _, s in every) for k in seconds}
    return results, len(images), seconds

  def _image_results(self, batch, i, per_gamma):
    """COCO results of image ``i`` of ``batch`` for each gamma's detections.

    A detection is a proposal (``roi_index``) and a class; its box and mask do
    not depend on gamma, only its score does, so each pair's box, mask paste
    and RLE are computed once for all gammas. Exclusive masks depend on the
    other detections, so then each gamma's are its own.
    """
    done = {}                                  # (roi, class[, gamma]) -> result without score
    out = []
    exclusive = self.config.model.test.exclusive_mask_score > 0
    for g, det in enumerate(per_gamma):
      valid = np.asarray(det['valid'], bool)
      keys = [key + ((g,) if exclusive else ()) for key in
              zip(det['roi_index'][valid].tolist(), det['classes'][valid].tolist())]
      new = np.asarray([key not in done for key in keys], bool)
      if new.any():
        subset = {k: np.asarray(v)[valid][new] for k, v in det.items()}
        fresh = image_results(int(batch['image_id'][i]), subset, float(batch['scale'][i]),
                              tuple(batch['orig_hw'][i]), self.cat_ids,
                              mask_threshold=self.config.model.test.mask_threshold)
        done.update(zip([k for k, n in zip(keys, new) if n], fresh))
      out.append([dict(done[key], score=float(score))
                  for key, score in zip(keys, det['scores'][valid])])
    return out

  def touching(self) -> set:
    """Ids of the split's objects that touch another object of their image (once)."""
    if self._touching is None:
      images = {im['id'] for im in self.gt.dataset['images']}
      if self.neighbours_file == self.ann_file:
        everything = self.gt.dataset
      else:
        everything = jsonio.read_json(self.neighbours_file, 'ground-truth file')
      self._touching = protocol.touching_annotations(
          [a for a in everything['annotations'] if a['image_id'] in images],
          self.gt.dataset['images'])
    return self._touching

  def score(self, results, results_file: Optional[str],
            contact: bool = True) -> Dict[str, object]:
    """Box and mask numbers of one results list (ZSD/GZSD and ZSI/GZSI); with
    ``contact``, also those of the touching and the apart objects."""
    box_results = [{k: v for k, v in r.items() if k != 'segmentation'} for r in results]
    try:
      out = {'box': protocol.zsi_metrics(self.gt, box_results, 'bbox', self.cat_ids,
                                         self.seen_ids),
             'mask': protocol.zsi_metrics(self.gt, results, 'segm', self.cat_ids,
                                          self.seen_ids)}
      if contact:
        out['contact'] = {kind: protocol.contact_metrics(self.gt, r, iou, self.cat_ids,
                                                         self.touching(), self.seen_ids)
                          for kind, r, iou in (('box', box_results, 'bbox'),
                                               ('mask', results, 'segm'))}
      return out
    except Exception as e:
      kept = f'; the detections are in {results_file}' if results_file else ''
      raise ScoringError(f'scoring {self.setting} against {self.ann_file} failed: '
                         f'{type(e).__name__}: {e}{kept}') from e


def _write_json(out_dir: Optional[str], name: str, value, indent=None) -> Optional[str]:
  """Writes ``value`` to ``out_dir/name`` atomically (nothing when ``out_dir`` is None)."""
  if not out_dir:
    return None
  path = storage.join(out_dir, name)
  jsonio.write_json(path, value, indent=indent)
  return path


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


def format_table(m: Dict[str, object]) -> str:
  """The paper's table layout for one setting (percentages)."""
  pct = lambda x: f'{100 * x:5.1f}' if x == x else '  nan'
  gamma = m.get('seen_calibration', 0.0)
  calibrated = f', seen calibration {gamma:g}' if gamma and m['setting'] == 'gzsi' else ''
  lines = [f"{m['setting'].upper()} (step {m['step']}, scoring={m['scoring']}{calibrated}, "
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
  if 'contact' in m:
    lines.extend(format_contact(m['contact']))
  return '\n'.join(lines)


def format_contact(contact: Dict[str, dict]) -> list:
  """The touching / apart rows: recall@100 and mAP at IoU 0.5, box and mask
  (GZSI: of the unseen and of the seen classes)."""
  pct = lambda x: f'{100 * x:5.1f}' if x == x else '  nan'
  parts = [('unseen_', 'unseen '), ('seen_', 'seen ')] if 'seen_map@0.5' in contact[
      'box']['touching'] else [('', '')]
  lines = [f"{'IoU 0.5':16} {'objects':>7} {'box R':>6} {'mask R':>6} {'box mAP':>8} "
           f"{'mask mAP':>8}"]
  for prefix, label in parts:
    for group in protocol.CONTACT_GROUPS:
      box, mask = contact['box'][group], contact['mask'][group]
      lines.append(f"{label + group:16} {box[prefix + 'objects']:>7} {pct(box[prefix + 'recall@100']):>6} "
                   f"{pct(mask[prefix + 'recall@100']):>6} {pct(box[prefix + 'map@0.5']):>8} "
                   f"{pct(mask[prefix + 'map@0.5']):>8}")
  return lines


def format_sweep(sweep: Dict[str, object]) -> str:
  """The calibration sweep's summary; best-gamma numbers are labelled oracle."""
  pct = lambda x: f'{100 * x:5.1f}' if x == x else '  nan'
  lines = [f"GZSI calibration sweep (step {sweep['step']}, scoring={sweep['scoring']}, "
           f"{sweep['images']} images, {len(sweep['box']['gammas'])} values of gamma in [-1, 1])",
           f"{'':6} {'HM mAP at 0':>11} {'AUSUC':>6} {'oracle best HM mAP':>19} "
           f"{'at gamma (oracle)':>18}"]
  for kind in ('box', 'mask'):
    c = sweep[kind]
    zero = int(np.argmin(np.abs(np.asarray(c['gammas']))))
    lines.append(f"{kind:6} {pct(c['hm_map'][zero]):>11} {pct(c['ausuc_map']):>6} "
                 f"{pct(c['best_hm_map']):>19} {c['best_gamma']:>18.2f}")
  return '\n'.join(lines)
