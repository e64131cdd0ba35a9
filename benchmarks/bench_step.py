"""Train-step and inference throughput: zsi_jax beside torchvision's Mask R-CNN.

The zsi_jax side is the COCO R50-FPN configuration (configs/coco_common.py
with ``backbone.depth=50``: BA-RPN, semantic box head with decoder, semantic
mask head with decoder, Sync-bg; 65 training classes with 300-d vectors). The
torchvision side is ``MaskRCNN`` on ``resnet_fpn_backbone('resnet50')`` with
FrozenBatchNorm and layers 2-4 trainable (what ``maskrcnn_resnet50_fpn`` builds
for fine-tuning from ImageNet; with ``weights=None`` it would train every layer
with plain BatchNorm, which is not the recipe), random weights, 66 classes and
the same settings: image size (no resizing), batch, proposals (train 2000/2000,
test 1000/1000 per image), 256 anchors at 50% positive, 512 RoIs at 25%
positive, 100 detections at score threshold 0 (so both paste 100 masks per
image), SGD with momentum, weight decay and gradient clipping.

Each framework runs in its own subprocess (so peak memory is its own), with the
same number of CPU threads. Measured after compilation / warm-up:
  train: seconds per step and images/second (median of --steps steps);
  infer: images/second for the forward pass plus mask pasting into the image
         (torchvision's ``paste_masks_in_image`` in its postprocess, on the
         device; zsi_jax twice: with the host-side ``paste_masks`` that
         evaluation and the Predictor use, and with ``paste_masks_padded``
         compiled into the detect call, results left on the device as
         torchvision leaves them); and host pasting alone, timed apart;
  compile: seconds to lower + compile the train step and the detect function
           (zsi_jax), and whether any compilation happened during the timed
           steps (it must not);
  peak memory: process max RSS on the CPU, allocator peak on a GPU;
  CPU use of the train steps: cores busy (process CPU time over wall time)
  and page faults per step (pages first touched, fresh from the OS).

Both sides run with glibc's allocator defaults, as train.py does: each maps
and zeroes its large buffers anew at every step. ``--reuse_freed_memory``
gives both ``host.reuse_freed_memory`` instead (freed memory kept for the
next step; docs/PERFORMANCE.md has what it gains here and costs elsewhere).
The environment reaches both sides' subprocesses: with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` glibc asks for transparent huge
pages on the memory it maps (Linux with THP in 'madvise' or 'always' mode),
and a step's buffers fault in 2 MiB at a time; the setting is recorded
(``glibc_tunables`` in --json).

Each side runs --repeats times, alternating (zsi_jax, torchvision, zsi_jax,
...), each time in a fresh subprocess: the report gives every number's median
over the repetitions and each ratio's median with its min-max, so no verdict
rests on one pair of runs on a noisy machine. The host's CPU model and flags
(lscpu) are recorded with the results (--json).

Usage:
  python benchmarks/bench_step.py [--size 512] [--batch 2] [--steps 5] [--repeats 3]
      [--dtype float32|bfloat16] [--sides jax,torch] [--json out.json]
      [--roi_buckets 1] [--fixed_sampling] [--train_only] [--profile DIR]
      [--set model.conv_impl=conv ...] [--xla_memory] [--reuse_freed_memory]
  --size takes 512 (square) or HxW, e.g. 800x1344; --roi_buckets 2 --set
  model.mask_head.skip_empty_pieces=False makes the zsi_jax mask head run on
  64 slots per image in every step (4 pieces of 16), at least torchvision's
  positives: equal work (by default only the pieces holding positives run,
  reported as mask-head RoIs per image); --roi_buckets 1 the same on all 128
  slots per image, its worst case; --set
  overrides a field of the zsi_jax config (for A/B runs); --xla_memory only
  compiles the zsi_jax side and prints XLA's buffer sizes (the arena of
  intermediate values is what the model code decides; RSS adds the runtime).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from zsi_jax import host  # noqa: E402

NUM_CLASSES = 65     # COCO 65/15 training classes
VECTOR_DIM = 300     # word2vec
NUM_GT = 8           # real instances per image (padded to MAX_GT on the JAX side)
MAX_GT = 100
MASK_GT = 56


def literal(text: str):
  """A --set value: a Python literal (False, 0.5, 'x', ...) or else the string itself."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_size(s: str):
  if 'x' in s:
    h, w = s.split('x')
    return int(h), int(w)
  return int(s), int(s)


def synthetic_instances(rng, batch, hw):
  """[B, NUM_GT] random boxes (x1, y1, x2, y2) inside ``hw``, classes and ellipse masks.

  Returns boxes [B, G, 4] float32, classes [B, G] int (0..K-1) and full-image
  masks [B, G, H, W] uint8 (an ellipse inscribed in each box).
  """
  h, w = hw
  wh = rng.uniform(0.1, 0.4, (batch, NUM_GT, 2)) * np.array([w, h])
  xy = rng.uniform(0, 1, (batch, NUM_GT, 2)) * (np.array([w, h]) - wh)
  boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
  classes = rng.integers(0, NUM_CLASSES, (batch, NUM_GT))
  yy, xx = np.mgrid[0:h, 0:w]
  masks = np.zeros((batch, NUM_GT, h, w), np.uint8)
  for i in range(batch):
    for j in range(NUM_GT):
      x1, y1, x2, y2 = boxes[i, j]
      cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
      masks[i, j] = ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1
  return boxes, classes, masks


def median_seconds(fn, steps: int, warmup: bool = False) -> float:
  """Median wall time of ``steps`` calls of ``fn`` (which must block until done),
  after one untimed call (compilation) when ``warmup``."""
  if warmup:
    fn()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def profile_call(folder: str, name: str, fn, *args):
  """One call of the jitted ``fn`` under jax.profiler, traced into ``folder``,
  and its compiled HLO as ``folder/{name}.hlo.txt`` (whose metadata names
  each XLA op, for benchmarks/top_ops.py). Returns the call's result."""
  import jax
  hlo = fn.lower(*args).compile().as_text()     # before the call, which may donate args
  with jax.profiler.trace(folder, create_perfetto_trace=True):
    out = jax.block_until_ready(fn(*args))
  with open(os.path.join(folder, f'{name}.hlo.txt'), 'w') as f:
    f.write(hlo)
  return out


def cpu_use():
  """(CPU seconds of this process, all threads; wall seconds; minor page
  faults so far, each a first touch of a page fresh from the OS)."""
  t = os.times()
  return t.user + t.system, time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def train_cpu_use(start, steps: int) -> dict:
  """Cores busy (CPU seconds per wall second) and page faults per step since
  ``start`` (a :func:`cpu_use`), over ``steps`` train steps."""
  cpu, wall, faults = (now - then for now, then in zip(cpu_use(), start))
  return dict(train_cores_busy=cpu / wall, train_page_faults_per_step=faults / steps)


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------- zsi_jax
def run_jax(args) -> dict:
  import jax
  host.release_heap_after_compiles()            # as train.py, eval.py and predict.py do

  from configs.coco_common import coco_config
  from zsi_jax.config_check import validate
  from zsi_jax.data.datasets import pad_class_vectors
  from zsi_jax.ops.postprocess import paste_masks, paste_masks_padded
  from zsi_jax.training.train_step import build_training

  hw = parse_size(args.size)
  c = coco_config('65_15', learning_rate=0.01, warmup_steps=100)
  c.model.backbone.depth = 50
  c.model.dtype = args.dtype
  c.model.test.score_threshold = 0.0
  if args.roi_buckets:
    c.model.mask_head.roi_buckets = args.roi_buckets
  c.update_from_flattened_dict({k: literal(v) for k, v in (i.split('=', 1) for i in args.set)})
  validate(c)                       # a misspelt --set key is an error, not a no-op
  c.data.batch_size = args.batch
  rng = np.random.default_rng(0)
  vecs = rng.normal(size=(NUM_CLASSES, VECTOR_DIM)).astype(np.float32)
  vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
  # The training setup of train.py (loop.train), without the mesh.
  run = build_training(c, vecs.mean(0), NUM_CLASSES, hw, steps_per_epoch=1000,
                       total_steps=12_000)
  state = run.state
  cv, cm = pad_class_vectors(vecs, NUM_CLASSES)

  boxes, classes, full_masks = synthetic_instances(rng, args.batch, hw)
  # Ground-truth masks as the input pipeline stores them: cropped to the box
  # and resized to MASK_GT x MASK_GT (nearest sampling is enough here).
  crops = np.zeros((args.batch, MAX_GT, MASK_GT, MASK_GT), np.uint8)
  for i in range(args.batch):
    for j in range(NUM_GT):
      x1, y1, x2, y2 = boxes[i, j]
      ys = np.clip((y1 + (np.arange(MASK_GT) + 0.5) * (y2 - y1) / MASK_GT).astype(int), 0, hw[0] - 1)
      xs = np.clip((x1 + (np.arange(MASK_GT) + 0.5) * (x2 - x1) / MASK_GT).astype(int), 0, hw[1] - 1)
      crops[i, j] = full_masks[i, j][np.ix_(ys, xs)]
  pad = lambda a, fill: np.concatenate(
      [a, np.full((args.batch, MAX_GT - NUM_GT) + a.shape[2:], fill, a.dtype)], 1)
  batch = dict(image=rng.normal(size=(args.batch,) + hw + (3,)).astype(np.float32),
               gt_boxes=pad(boxes, 0), gt_classes=pad(classes.astype(np.int32), -1),
               gt_valid=pad(np.ones((args.batch, NUM_GT), bool), False),
               gt_crowd=np.zeros((args.batch, MAX_GT), bool), gt_masks=crops,
               input_hw=np.tile(np.array(hw, np.int32), (args.batch, 1)))
  batch = jax.device_put(batch)
  cv_d, cm_d = jax.device_put(cv), jax.device_put(cm)

  # Compile-time events of jax (tracing, lowering, XLA compilation) and their seconds.
  events = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda name, secs, **kw: events.append((name, secs))
      if name.startswith('/jax/core/compile/') else None)
  backend_compiles = lambda: sum(n.endswith('backend_compile_duration') for n, _ in events)

  out = dict(side='zsi_jax', device=str(jax.devices()[0].device_kind), dtype=args.dtype)
  if args.xla_memory:
    return xla_memory(args, out, run.step, (state, batch, cv_d, cm_d), c, vecs, cv_d, cm_d)
  # --fixed_sampling times the same step from the same state again and again
  # (no donation): the same anchor and RoI sampling, hence the same mask-head
  # bucket every time, for A/B comparisons of code changes.
  step = jax.jit(run.step, donate_argnums=() if args.fixed_sampling else (0,))
  t0 = time.perf_counter()
  state, m = step(state, batch, cv_d, cm_d)     # first step: trace, lower, compile, run
  jax.block_until_ready(m)
  out['train_first_step_s'] = time.perf_counter() - t0
  out['train_compile_s'] = sum(s for _, s in events)
  n_before = backend_compiles()
  times, slots = [], []
  start = state
  start_use = cpu_use()
  for _ in range(args.steps):
    t = time.perf_counter()
    state, m = step(start if args.fixed_sampling else state, batch, cv_d, cm_d)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
    slots.append(int(m['mask_slots']))
  out.update(train_cpu_use(start_use, args.steps))
  out['train_step_s'] = float(np.median(times))
  out['train_img_per_s'] = args.batch / out['train_step_s']
  out['train_loss'] = float(m['total'])
  # Positives among the sampled RoIs per image (last timed step).
  out['positive_rois_per_image'] = float(m['num_pos_rois']) / args.batch
  out['recompiles_during_steps'] = backend_compiles() - n_before
  out['train_cache_size'] = step._cache_size()
  # Slots per image the mask head ran on in each timed step (its bucket's
  # pieces that hold positives, chosen per batch, so step times vary with it).
  out['mask_head_rois_per_image'] = slots
  if args.profile:
    state, m = profile_call(args.profile, 'train_step', step, state, batch, cv_d, cm_d)

  if args.train_only:
    out['peak_mem_mib'] = peak_rss_mib()
    out['peak_mem_kind'] = 'process max RSS (train only)'
    return out
  variables = {'params': state.params, **state.model_state}
  detect_fn = inference_detect(c, vecs, cv_d, cm_d)
  detect = jax.jit(detect_fn)
  def paste_all(det):
    for i in range(args.batch):
      v = det['valid'][i]
      paste_masks(det['masks'][i][v], det['boxes'][i][v], hw)

  def infer():
    det = jax.device_get(detect(variables, batch['image'], batch['input_hw']))
    paste_all(det)
    return det

  n_events = len(events)
  t0 = time.perf_counter()
  det = infer()                                 # first call: compile
  out['detect_first_call_s'] = time.perf_counter() - t0
  out['detect_compile_s'] = sum(s for _, s in events[n_events:])
  out['detections_per_image'] = float(det['valid'].sum(1).mean())
  # Pasting on the device, in the same compiled call (the canvas is the image
  # here, so pasting at its size is pasting at the original size).
  paste = jax.vmap(lambda d, ihw: paste_masks_padded(d['masks'], d['boxes'], d['valid'], ihw, hw))
  detect_paste = jax.jit(lambda v, im, ihw: paste(detect_fn(v, im, ihw), ihw))
  infer_device = lambda: jax.block_until_ready(
      detect_paste(variables, batch['image'], batch['input_hw']))
  infer_device()
  if args.profile:
    # Before counting compilations: writing the HLO compiles detect again.
    profile_call(os.path.join(args.profile, 'detect'), 'detect', detect,
                 variables, batch['image'], batch['input_hw'])
  n_before = backend_compiles()
  out['infer_batch_s'] = median_seconds(infer, args.steps)
  out['infer_img_per_s'] = args.batch / out['infer_batch_s']
  # The same without mask pasting: the model's share of inference.
  out['infer_model_s'] = median_seconds(
      lambda: jax.device_get(detect(variables, batch['image'], batch['input_hw'])), args.steps)
  # Host pasting alone, on the detections of the first call (its share of
  # inference; a difference of the two medians above would carry their noise).
  out['infer_host_paste_s'] = median_seconds(lambda: paste_all(det), args.steps)
  out['infer_device_paste_batch_s'] = median_seconds(infer_device, args.steps)
  out['infer_device_paste_img_per_s'] = args.batch / out['infer_device_paste_batch_s']
  out['recompiles_during_steps'] += backend_compiles() - n_before
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    out['peak_mem_mib'] = stats['peak_bytes_in_use'] / 2**20
    out['peak_mem_kind'] = 'device allocator peak'
  else:
    out['peak_mem_mib'] = peak_rss_mib()
    out['peak_mem_kind'] = 'process max RSS'
  return out


def inference_detect(c, vecs, cv_d, cm_d):
  """``(variables, images, input_hw) -> detections`` of the inference model: the
  same parameters, the convolution forms chosen for a forward-only call (as
  eval.py and the Predictor)."""
  from zsi_jax.modeling.build import build_model
  model = build_model(c.model, vecs.mean(0), NUM_CLASSES, training=False)
  return lambda v, im, ihw: model.apply(v, im, ihw, cv_d, cm_d, method='detect')


def xla_memory(args, out, train_step, train_args, c, vecs, cv_d, cm_d) -> dict:
  """XLA's buffer sizes (MiB) of the compiled train step and detect call, nothing run:
  ``temp`` is the arena of intermediate values, the part the code decides."""
  import jax

  def sizes(compiled):
    m = compiled.memory_analysis()
    return {k: getattr(m, f'{k}_size_in_bytes') / 2**20
            for k in ('temp', 'argument', 'output', 'alias', 'generated_code')}

  out['train_xla_mib'] = sizes(jax.jit(train_step, donate_argnums=(0,)).lower(*train_args)
                               .compile())
  if not args.train_only:
    state, batch = train_args[:2]
    detect = jax.jit(inference_detect(c, vecs, cv_d, cm_d))
    out['detect_xla_mib'] = sizes(detect.lower({'params': state.params, **state.model_state},
                                               batch['image'], batch['input_hw']).compile())
  return out


# ---------------------------------------------------------------------------- torchvision
def run_torch(args) -> dict:
  import torch
  from torchvision.models.detection import MaskRCNN
  from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
  from torchvision.ops import FrozenBatchNorm2d

  torch.manual_seed(0)
  dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  hw = parse_size(args.size)
  backbone = resnet_fpn_backbone(backbone_name='resnet50', weights=None,
                                 norm_layer=FrozenBatchNorm2d, trainable_layers=3)
  model = MaskRCNN(
      backbone, num_classes=NUM_CLASSES + 1, min_size=min(hw), max_size=max(hw),
      rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=2000,
      rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000,
      rpn_batch_size_per_image=256, rpn_positive_fraction=0.5,
      box_batch_size_per_image=512, box_positive_fraction=0.25,
      box_score_thresh=0.0, box_nms_thresh=0.5, box_detections_per_img=100).to(dev)
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
  rng = np.random.default_rng(0)
  boxes, classes, masks = synthetic_instances(rng, args.batch, hw)
  images = [torch.from_numpy(rng.uniform(0, 1, (3,) + hw).astype(np.float32)).to(dev)
            for _ in range(args.batch)]
  targets = [dict(boxes=torch.from_numpy(boxes[i]).to(dev),
                  labels=torch.from_numpy(classes[i] + 1).to(dev),
                  masks=torch.from_numpy(masks[i]).to(dev)) for i in range(args.batch)]
  # Count the positives among the sampled RoIs (torchvision's mask head runs
  # on exactly these; zsi_jax on a fixed number of slots).
  positives = []
  select = model.roi_heads.select_training_samples

  def counting_select(proposals, targets):
    res = select(proposals, targets)
    positives.append(float(np.mean([int((l > 0).sum()) for l in res[2]])))
    return res

  model.roi_heads.select_training_samples = counting_select
  amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.dtype == 'bfloat16')
  sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)

  def train_step():
    model.train()
    with amp:
      loss = sum(model(images, targets).values())
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 35.0)
    opt.step()
    sync()
    return float(loss)

  def infer():
    model.eval()
    with torch.no_grad(), amp:
      out = model(images)
    sync()
    return out

  out = dict(side='torchvision', device=torch.cuda.get_device_name() if dev.type == 'cuda'
             else 'cpu', dtype=args.dtype, threads=torch.get_num_threads())
  if dev.type == 'cuda':
    torch.cuda.reset_peak_memory_stats()
  losses = [train_step()]                        # warm-up
  start_use = cpu_use()
  out['train_step_s'] = median_seconds(lambda: losses.append(train_step()), args.steps)
  out.update(train_cpu_use(start_use, args.steps))
  out['train_img_per_s'] = args.batch / out['train_step_s']
  out['train_loss'] = losses[-1]
  out['positive_rois_per_image'] = positives[-1]
  out['mask_head_rois_per_image'] = positives[-1]
  det = infer()
  out['detections_per_image'] = float(np.mean([len(d['boxes']) for d in det]))
  out['infer_batch_s'] = median_seconds(infer, args.steps)
  out['infer_img_per_s'] = args.batch / out['infer_batch_s']
  if dev.type == 'cuda':
    out['peak_mem_mib'] = torch.cuda.max_memory_allocated() / 2**20
    out['peak_mem_kind'] = 'device allocator peak'
  else:
    out['peak_mem_mib'] = peak_rss_mib()
    out['peak_mem_kind'] = 'process max RSS'
  return out


# ---------------------------------------------------------------------------- driver
def run_side_subprocess(args, side: str) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), '--side', side, '--size', args.size,
         '--batch', str(args.batch), '--steps', str(args.steps), '--dtype', args.dtype,
         '--threads', str(args.threads), '--profile', args.profile,
         '--roi_buckets', str(args.roi_buckets)]
  cmd += [f'--{flag}' for flag in ('fixed_sampling', 'train_only', 'xla_memory',
                                    'reuse_freed_memory')
          if getattr(args, flag)]
  for item in args.set:
    cmd += ['--set', item]
  p = subprocess.run(cmd, capture_output=True, text=True)
  if p.returncode != 0:
    raise RuntimeError(f'{side} benchmark failed:\n{p.stderr[-4000:]}')
  return json.loads(p.stdout.strip().splitlines()[-1])


def summarise(side_runs):
  """One side's repetitions -> medians of its numbers, with ``<key>_range`` (min, max)."""
  out = dict(side_runs[0])
  for key, value in side_runs[0].items():
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      values = [r[key] for r in side_runs]
      out[key] = float(np.median(values))
      out[f'{key}_range'] = (float(min(values)), float(max(values)))
  return out


def report(results, args, runs=None) -> str:
  """A table of both sides; with ``runs`` (the repetitions), each ratio is the
  median of the per-repetition ratios with its min-max."""
  rows = [('train step (s)', 'train_step_s', '{:.3f}'), ('train img/s', 'train_img_per_s', '{:.2f}'),
          ('infer img/s', 'infer_img_per_s', '{:.2f}'),
          ('infer img/s, device paste', 'infer_device_paste_img_per_s', '{:.2f}'),
          ('infer batch, model only (s)', 'infer_model_s', '{:.3f}'),
          ('infer batch, host paste only (s)', 'infer_host_paste_s', '{:.3f}'),
          ('train: cores busy (CPU s / wall s)', 'train_cores_busy', '{:.2f}'),
          ('train: page faults per step', 'train_page_faults_per_step', '{:.0f}'),
          ('peak memory (MiB)', 'peak_mem_mib', '{:.0f}'),
          ('positive RoIs / image', 'positive_rois_per_image', '{:.0f}'),
          ('mask-head RoIs / image', 'mask_head_rois_per_image', '{:.0f}'),
          ('compile train (s)', 'train_compile_s', '{:.1f}'),
          ('compile detect (s)', 'detect_compile_s', '{:.1f}')]
  sides = [r['side'] for r in results]
  lines = [f"size {args.size}, batch {args.batch}, {args.dtype}, threads {args.threads}, "
           f"device {results[0]['device']}",
           f"{'':33s}" + ''.join(f'{s:>16s}' for s in sides) +
           ('     ratio' if len(sides) == 2 else '')]
  # torchvision has one inference number; the device-paste row compares with it.
  reference = lambda key: 'infer_img_per_s' if key == 'infer_device_paste_img_per_s' else key
  for label, key, fmt in rows:
    vals = [r.get(key) for r in results]
    fmt_one = lambda v: ('-' if v is None else '/'.join(fmt.format(x) for x in v)
                         if isinstance(v, list) else fmt.format(v))
    line = f'{label:33s}' + ''.join(f'{fmt_one(v):>16s}' for v in vals)
    if len(vals) == 2 and key.endswith('per_s') and None not in (vals[0],
                                                                  results[1].get(reference(key))):
      if runs:
        ratios = [r[0][key] / r[1][reference(key)] for r in runs]
        line += f'  {np.median(ratios):5.2f}x ({min(ratios):.2f}-{max(ratios):.2f})'
      else:
        line += f'  {vals[0] / results[1][reference(key)]:8.2f}x'
    lines.append(line)
  for r in results:
    if 'recompiles_during_steps' in r:
      lines.append(f"{r['side']}: compilations during the timed steps: "
                   f"{r['recompiles_during_steps']:g}; train-step cache entries: "
                   f"{r['train_cache_size']:g}")
  return '\n'.join(lines)


def code_version() -> str:
  """The measured code: the commit, '+' when the work tree differs from it."""
  git = lambda *a: subprocess.run(['git', *a], capture_output=True, text=True,
                                  cwd=os.path.dirname(os.path.abspath(__file__)))
  head = git('rev-parse', '--short', 'HEAD')
  if head.returncode:
    return 'unknown'
  modified = git('status', '--porcelain', '--untracked-files=no').stdout.strip()
  return head.stdout.strip() + ('+' if modified else '')


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--size', default='512')
  p.add_argument('--batch', type=int, default=2)
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  p.add_argument('--sides', default='jax,torch')
  p.add_argument('--threads', type=int, default=os.cpu_count(),
                 help='torch intra-op threads (XLA uses one per core)')
  p.add_argument('--roi_buckets', type=int, default=0,
                 help='zsi_jax mask-RoI slot buckets (0: the config\'s; 1: one bucket '
                      'of 128 slots per image; every piece of it runs with --set '
                      'model.mask_head.skip_empty_pieces=False)')
  p.add_argument('--fixed_sampling', action='store_true',
                 help='zsi_jax: time the same step from the same state each time (same '
                      'sampling and mask bucket), for A/B comparisons')
  p.add_argument('--train_only', action='store_true',
                 help='zsi_jax: time the train step only (no inference), for quick A/B runs')
  p.add_argument('--profile', default='',
                 help='zsi_jax side: write a jax.profiler trace of one train step here (and of one detect call in DIR/detect) '
                      '(summarise with benchmarks/top_ops.py)')
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                 help='zsi_jax: override a config field, e.g. '
                      'model.conv_impl=conv (repeatable; A/B runs)')
  p.add_argument('--repeats', type=int, default=3,
                 help='invocations of each side, alternating (A B A B ...); the report gives '
                      'the median of each number and of the ratios, with their min-max')
  p.add_argument('--xla_memory', action='store_true',
                 help='zsi_jax: compile the train step (and detect) and print XLA\'s buffer '
                      'sizes in MiB (temp: the arena of intermediate values); nothing is timed')
  p.add_argument('--reuse_freed_memory', action='store_true',
                 help='both sides with host.reuse_freed_memory (glibc keeps freed '
                      'memory for the next step) instead of the allocator defaults')
  p.add_argument('--side', default='', help=argparse.SUPPRESS)
  p.add_argument('--json', default='', help='append the results (one JSON line per run)')
  args = p.parse_args()
  if args.side:
    if args.reuse_freed_memory:
      host.reuse_freed_memory()         # before either framework allocates
    # XLA's CPU client uses one intra-op thread per core; torch gets the same count.
    if args.side == 'jax':
      print(json.dumps(run_jax(args)))
    else:
      import torch
      torch.set_num_threads(args.threads)
      print(json.dumps(run_torch(args)))
    return
  if args.xla_memory:
    result = run_side_subprocess(args, 'jax')
    print(f"host: {host.short_name(host.describe())}\n{json.dumps(result, indent=1)}")
    return
  sides = args.sides.split(',')
  runs = []                           # one [jax, torch] list per repetition, in run order
  for i in range(args.repeats):
    runs.append([run_side_subprocess(args, s) for s in sides])
    print(f'repetition {i + 1}/{args.repeats}:\n{report(runs[-1], args)}\n', flush=True)
  results = [summarise([r[k] for r in runs]) for k in range(len(sides))]
  machine = host.describe()
  tunables = os.environ.get('GLIBC_TUNABLES', '')    # inherited by both sides
  if args.json:
    with open(args.json, 'a') as f:
      f.write(json.dumps(dict(size=args.size, batch=args.batch, dtype=args.dtype,
                              threads=args.threads, roi_buckets=args.roi_buckets,
                              fixed_sampling=args.fixed_sampling, set=args.set,
                              reuse_freed_memory=args.reuse_freed_memory,
                              glibc_tunables=tunables,
                              repeats=args.repeats, host=machine, code=code_version(),
                              runs=runs, results=results)) + '\n')
  print(f"host: {host.short_name(machine)}, {machine['cores']} cores"
        + (f', GLIBC_TUNABLES={tunables} (both sides)' if tunables else ''))
  print(f'median of {args.repeats} alternating repetitions (min-max):')
  print(report(results, args, runs))


if __name__ == '__main__':
  main()
