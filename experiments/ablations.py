"""The paper's ablations, in shape, on ZSI-Shapes; writes docs/RESULTS.md.

python experiments/ablations.py [--preset default,hard] [--only main,table1,...]
    [--seeds 0,1,2] [--steps 1000] [--ablation_steps 500] [--out docs/RESULTS.md]

Each variant is ``configs/shapes.py`` plus ``--config.*`` overrides, trained
with train.py on a ZSI-Shapes preset and evaluated with eval.py (ZSI and
GZSI) in its own workdir under --runs, for every seed. Each finished run's
metrics are kept in docs/results/ (committed; the hard preset's in
docs/results/hard/): a run found there is not trained again, so an
interrupted sweep resumes where it stopped, and the tables can be rewritten
alone (--skip_training), runs/ or not.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from zsi_jax import host, jsonio  # noqa: E402
from zsi_jax.data import shapes  # noqa: E402

NO_DECODERS = ('model.box_head.use_decoder=False', 'model.mask_head.use_decoder=False')
PLAIN_RPN = ('model.rpn.semantic=False', 'model.sync_bg.det=False', 'model.sync_bg.mask=False')
INSTANCE = ('model.mask_head.instance_logit=True',)
NEIGHBOUR = ('model.mask_head.neighbour_weight=3.0',)
BA_RPN_NO_SYNC = ('model.rpn.semantic=True', 'model.sync_bg.det=False',
                  'model.sync_bg.mask=False')

# name -> (config overrides, unseen scoring). The full model is the default config.
VARIANTS: Dict[str, Tuple[Tuple[str, ...], str]] = {
    'full': ((), 'direct'),                   # the main runs (--steps, all seeds)
    'full_ref': ((), 'direct'),               # the full model at --ablation_steps: the
                                              # reference row of every ablation table
    'full_projected': ((), 'projected'),      # full_ref's checkpoint, other scoring
    'zsd_smh_e': (NO_DECODERS + PLAIN_RPN, 'direct'),
    'smh_decoder': (('model.box_head.use_decoder=False',) + PLAIN_RPN, 'direct'),
    'det_decoder': (PLAIN_RPN, 'direct'),
    'ba_rpn': (NO_DECODERS + BA_RPN_NO_SYNC, 'direct'),
    'sync_mask': (NO_DECODERS + ('model.sync_bg.det=False',), 'direct'),
    'sync_det': (NO_DECODERS + ('model.sync_bg.mask=False',), 'direct'),
    'sync_both': (NO_DECODERS, 'direct'),
    'onehot': (('data.vectors=class_vectors_onehot.txt',), 'direct'),
    'random': (('data.vectors=class_vectors_random.txt',), 'direct'),
    'sync_no_grad': (('model.sync_bg.gradients=False',), 'direct'),
    # Issue 20's mask-quality study: what closes the gap between mask and box
    # recall (each at --steps, every seed, like the main runs).
    'mask_rois16': (('model.mask_head.max_rois_per_image=16',), 'direct'),
    'mask_wide': (('model.mask_head.max_rois_per_image=16', 'model.mask_head.channels=64'),
                  'direct'),
    'mask_gt28': (('data.mask_gt_size=28',), 'direct'),
    'mask_recon01': (('model.mask_head.recon_weight=0.1',), 'direct'),
    # Issue 35: masks of touching objects. The default config retrained with the
    # touching / apart metrics, the candidates, and the one-hot control.
    'touch_base': ((), 'direct'),
    'touch_instance': (INSTANCE, 'direct'),
    'touch_neighbour': (NEIGHBOUR, 'direct'),
    # A test-time setting: training is touch_base's (the same checkpoint, retrained
    # deterministically when run from here).
    'touch_exclusive': (('model.test.exclusive_mask_score=0.5',), 'direct'),
    # The control: the instance logit is class-agnostic, so it could paint unseen
    # masks without the semantics; with one-hot vectors the transfer must vanish.
    'touch_onehot': (('data.vectors=class_vectors_onehot.txt',) + INSTANCE, 'direct'),
}
# (preset, variant) whose GZSI is also swept over seen-score calibrations
# (eval.py --calibration_sweep N), and N. A sweep costs about 9 minutes per
# seed on 2 cores; the hard preset's main runs skip it.
CALIBRATION_SWEEP = {('default', 'full'): 21}
# Variants sharing a checkpoint with another one (evaluation-only).
SAME_CHECKPOINT = {'full_projected': 'full_ref'}

# Paper numbers (COCO 65/15) for the direction of each effect: ZSI mask
# Recall@100 at IoU 0.4 / 0.5 / 0.6 and mAP@0.5 (Tables 1 and 5), and GZSI
# unseen recall / mAP (Table 6). None where the paper has no number.
PAPER_T1 = {
    'zsd_smh_e': (48.9, 42.6, 35.5, 9.1),
    'smh_decoder': (51.7, 45.8, 38.7, 10.1),
    'det_decoder': (52.4, 47.0, 40.5, 10.3),
    'full_ref': (55.8, 50.0, 42.9, 10.5),
}
PAPER_T5 = {  # ZSI R@0.4, ZSI R@0.5, ZSD R@0.5 (65/15)
    'zsd_smh_e': (48.9, 42.6, 35.5),
    'ba_rpn': (49.0, 42.4, 35.4),
    'sync_mask': (49.0, 42.5, 35.4),
    'sync_det': (51.9, 45.3, 37.9),
    'sync_both': (53.7, 47.4, 39.9),
}
PAPER_T6 = {'random': (0.2, 0.0), 'onehot': (0.3, 0.0), 'full_ref': (58.9, 13.6)}

GROUPS = {
    'main': ['full'],
    'table1': ['zsd_smh_e', 'smh_decoder', 'det_decoder', 'full_ref'],
    'table5': ['zsd_smh_e', 'ba_rpn', 'sync_mask', 'sync_det', 'sync_both'],
    'table6': ['full_ref', 'onehot', 'random'],
    'scoring': ['full_ref', 'full_projected'],
    'gradients': ['full_ref', 'sync_no_grad'],
    'masks': ['full', 'mask_rois16', 'mask_wide', 'mask_gt28', 'mask_recon01'],
    'touching': ['touch_base', 'touch_instance', 'touch_neighbour', 'touch_exclusive',
                 'touch_onehot'],
}
# Variants trained like the main result (--steps); the others at --ablation_steps.
MAIN_LENGTH = set(GROUPS['main'] + GROUPS['masks'] + GROUPS['touching'])


# name -> (data root, subfolder of --runs and of docs/results). The default
# preset's runs and results keep the top folders.
PRESETS = {name: (os.path.join('data', 'generated', shapes.PRESETS[name].name),
                  '' if name == 'default' else name) for name in shapes.PRESETS}

# Every finished run's metrics are kept here (committed), so the tables can be
# rewritten anywhere, after runs/ is gone (--skip_training).
RESULTS_DIR = os.path.join(ROOT, 'docs', 'results')


def run_dir(runs: str, preset: str, name: str, seed: int, steps: int) -> str:
  return os.path.join(runs, PRESETS[preset][1], f'{SAME_CHECKPOINT.get(name, name)}_s{seed}_n{steps}')


def metrics_path(preset: str, name: str, seed: int, steps: int, setting: str) -> str:
  return os.path.join(RESULTS_DIR, PRESETS[preset][1], f'{name}_s{seed}_n{steps}_{setting}.json')


def finished(preset: str, name: str, seed: int, steps: int) -> Optional[Dict[str, dict]]:
  """The stored metrics of a finished run, or None."""
  settings = ('zsi', 'gzsi') + (('gzsi_calibration',) if (preset, name) in CALIBRATION_SWEEP
                                 else ())
  paths = {s: metrics_path(preset, name, seed, steps, s) for s in settings}
  if not all(os.path.exists(p) for p in paths.values()):
    return None
  return {s: json.load(open(p)) for s, p in paths.items()}


@contextlib.contextmanager
def _run_folder_lock(workdir: str, log):
  """Holds ``workdir``.lock while one sweep trains or evaluates there; another
  sweep needing the same run waits (the lock goes with its holder's process)."""
  os.makedirs(os.path.dirname(os.path.abspath(workdir)), exist_ok=True)
  with open(workdir + '.lock', 'w') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      log(f'{workdir} is in use by another sweep; waiting for it')
      fcntl.flock(f, fcntl.LOCK_EX)
    yield


def run_variant(preset: str, name: str, seed: int, steps: int, runs: str, log) -> Dict[str, dict]:
  """Trains (unless done) and evaluates one variant; returns {setting: metrics}.
  Sweeps running side by side never train or evaluate one run folder at once."""
  done = finished(preset, name, seed, steps)
  if done:
    return done
  with _run_folder_lock(run_dir(runs, preset, name, seed, steps), log):
    # Another sweep may have finished this run while we waited.
    return finished(preset, name, seed, steps) or _train_and_evaluate(
        preset, name, seed, steps, runs, log)


def _train_and_evaluate(preset: str, name: str, seed: int, steps: int, runs: str,
                        log) -> Dict[str, dict]:
  owner = SAME_CHECKPOINT.get(name, name)
  overrides, scoring = VARIANTS[owner][0], VARIANTS[name][1]
  data = PRESETS[preset][0]
  workdir = run_dir(runs, preset, name, seed, steps)
  tag = f'[{preset} {name} seed {seed}]'
  t0 = time.time()
  train_args = ['--config', 'configs/shapes.py', f'--config.seed={seed}',
                f'--config.total_steps={steps}', f'--config.data.root={data}'] + [
                    f'--config.{o}' for o in overrides]
  # A shared checkpoint trained in an earlier session may be gone: retrain it (deterministic).
  if owner == name or not os.path.exists(os.path.join(workdir, 'config.json')):
    cmd = [sys.executable, 'train.py', '--workdir', workdir] + train_args
    log(f'{tag} ' + ' '.join(cmd[1:]))
    _check(cmd, workdir + '.train.log')
  train_s = time.time() - t0
  cmd = [sys.executable, 'eval.py', '--workdir', workdir, '--split', 'zsi,gzsi',
         '--scoring', scoring]
  log(f'{tag} ' + ' '.join(cmd[1:]))
  _check(cmd, workdir + f'.eval_{scoring}.log')
  out = {}
  for setting in ('zsi', 'gzsi'):
    with open(os.path.join(workdir, 'eval', f'{setting}_metrics.json')) as f:
      m = json.load(f)
    m['train_seconds'] = train_s
    m['wall_seconds'] = time.time() - t0
    m['command'] = ' '.join(['python train.py'] + train_args)
    m['host'] = host.short_name(host.describe())
    jsonio.write_json(metrics_path(preset, name, seed, steps, setting), m, indent=1)
    out[setting] = m
  if (preset, name) in CALIBRATION_SWEEP:
    cmd = [sys.executable, 'eval.py', '--workdir', workdir, '--split', 'gzsi', '--scoring', scoring,
           '--calibration_sweep', str(CALIBRATION_SWEEP[preset, name])]
    log(f'{tag} ' + ' '.join(cmd[1:]))
    _check(cmd, workdir + '.calibration.log')
    with open(os.path.join(workdir, 'eval', 'gzsi_calibration.json')) as f:
      out['gzsi_calibration'] = json.load(f)
    jsonio.write_json(metrics_path(preset, name, seed, steps, 'gzsi_calibration'),
                      out['gzsi_calibration'], indent=1)
    if seed == 0:
      suffix = '' if preset == 'default' else f'_{preset}'
      shutil.copy(os.path.join(workdir, 'eval', 'gzsi_calibration.png'),
                  os.path.join(ROOT, 'docs', f'gzsi_calibration{suffix}.png'))
  return out


def _check(cmd: List[str], log_file: str):
  os.makedirs(os.path.dirname(log_file), exist_ok=True)
  with open(log_file, 'w') as f:
    r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
  if r.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed with exit code {r.returncode}; see {log_file}')


# ---------------------------------------------------------------------------- tables


def _pct(x: Optional[float]) -> str:
  return '-' if x is None or x != x else f'{100 * x:.1f}'


def _mean_sd(xs: Sequence[float]) -> str:
  xs = [x for x in xs if x == x]
  if not xs:
    return '-'
  if len(xs) == 1:
    return f'{100 * xs[0]:.1f}'
  return f'{100 * statistics.mean(xs):.1f} ± {100 * statistics.stdev(xs):.1f}'


def zsi_row(m: Dict[str, dict]) -> List[float]:
  """ZSI mask R@100 0.4/0.5/0.6, mAP; ZSD box R@100 0.5, mAP (fractions)."""
  z = m['zsi']
  return [z['mask']['recall@100_iou0.4'], z['mask']['recall@100_iou0.5'],
          z['mask']['recall@100_iou0.6'], z['mask']['map@0.5'],
          z['box']['recall@100_iou0.5'], z['box']['map@0.5']]


def gzsi_row(m: Dict[str, dict]) -> List[float]:
  """GZSI mask seen R/mAP, unseen R/mAP, HM R/mAP (fractions)."""
  g = m['gzsi']['mask']
  return [g['seen_recall@100'], g['seen_map@0.5'], g['unseen_recall@100'], g['unseen_map@0.5'],
          g['hm_recall@100'], g['hm_map@0.5']]


def mask_gap_row(m: Dict[str, dict]) -> List[float]:
  """Box and mask recall at IoU 0.5 and 0.6, ZSI then GZSI, and ZSI mask mAP."""
  out = []
  for setting in ('zsi', 'gzsi'):
    for iou in ('0.5', '0.6'):
      out += [m[setting]['box'][f'recall@100_iou{iou}'], m[setting]['mask'][f'recall@100_iou{iou}']]
  return out + [m['zsi']['mask']['map@0.5']]


def touching_row(m: Dict[str, dict], setting: str) -> List[float]:
  """Unseen box and mask recall at IoU 0.5 of the touching objects, of the apart
  ones and of all, then unseen mask mAP (fractions); ``setting`` 'zsi' or 'gzsi'."""
  c, r = m[setting]['contact'], m[setting]
  u = '' if setting == 'zsi' else 'unseen_'
  overall = ((r['box']['recall@100_iou0.5'], r['mask']['recall@100_iou0.5'], r['mask']['map@0.5'])
             if setting == 'zsi' else (r['box']['unseen_recall@100'],
                                       r['mask']['unseen_recall@100'], r['mask']['unseen_map@0.5']))
  return [c['box']['touching'][f'{u}recall@100'], c['mask']['touching'][f'{u}recall@100'],
          c['box']['apart'][f'{u}recall@100'], c['mask']['apart'][f'{u}recall@100'],
          overall[0], overall[1], overall[2]]


def _at_gamma_zero(curve: dict, key: str) -> float:
  """A calibration curve's ``key`` at the gamma closest to 0 (no calibration)."""
  i = min(range(len(curve['gammas'])), key=lambda j: abs(curve['gammas'][j]))
  return curve[key][i]


# A difference is called only when it exceeds the seeds' spread: the larger
# standard deviation of the two rows, and at least half a point.
MIN_CALLED_DIFFERENCE = 0.005


def call_direction(ours: Sequence[float], ref: Sequence[float],
                   paper_delta: Optional[float]) -> str:
  """Our effect (variant minus reference, per-seed values as fractions) beside the paper's.

  Returns 'not called (one seed)', 'within seed spread (+0.3)', or the sign
  of our difference followed by 'agrees' / '**disagrees**' with the paper's
  difference ``paper_delta`` (points; None: the paper has no number; |delta|
  < 0.1: the paper shows no change).
  """
  if len(ours) < 2 or len(ref) < 2:
    return 'not called (one seed)'
  d = statistics.mean(ours) - statistics.mean(ref)
  spread = max(statistics.stdev(ours), statistics.stdev(ref), MIN_CALLED_DIFFERENCE)
  text = f'{100 * d:+.1f}'
  if abs(d) <= spread:
    return f'within seed spread ({text})'
  if paper_delta is None:
    return f'{text}; no paper number'
  if abs(paper_delta) < 0.1:
    return f'{text}; paper: no change'
  return f'{text}; ' + ('agrees' if (d > 0) == (paper_delta > 0) else '**disagrees**')


def verdict_line(directions: Sequence[str]) -> str:
  """One sentence counting a table's called directions."""
  count = lambda text: sum(text in d for d in directions)
  parts = [f'{count("; agrees")} agree with the paper', f'{count("disagrees")} disagree',
           f'{count("paper: no change")} move where the paper saw no change',
           f'{count("no paper number")} move (no paper number)',
           f'{count("within seed spread")} within the seeds\' spread',
           f'{count("not called")} not called (one seed)']
  return f'of {len(directions)} rows, ' + ', '.join(p for p in parts if not p.startswith('0 ')) + '.'


PRESET_TEXT = {
    'default': ('ZSI-Shapes, default preset (`python data_prep/make_shapes.py`): 36 seen / 12 '
                'unseen "<color> <shape>" classes (6 colors, 8 shapes), every unseen class a new '
                'combination of a seen color and a seen shape; 2,000 training images, 296 test '
                'images.'),
    'hard': ('ZSI-Shapes, hard preset (`python data_prep/make_shapes.py --preset hard`): 65 '
             'seen / 15 unseen classes of 8 colors and 10 shapes; the unseen classes are made '
             'of six rarer words (their seen classes are drawn at 1/3 the rate in training), '
             'objects are smaller (radius 7-20 px on 128 px), up to 7 per image and more '
             'occluded, among more strokes and 1-3 shapes of no class; 2,000 training images, '
             '297 test images.'),
}


DISCUSSION = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs',
                          'results', 'discussion.md')


def write_results(res: Dict[str, Dict[str, Dict[int, Dict[str, dict]]]], seeds: Sequence[int],
                  steps: int, ablation_steps: int, out: str):
  """Writes docs/RESULTS.md from {preset: {variant: {seed: {setting: metrics}}}}."""
  L = ['# Results on ZSI-Shapes', '',
       'Produced by `python experiments/ablations.py` (this file is overwritten by it; '
       '`--skip_training` rebuilds it from the committed metrics in `docs/results/`). Class '
       'vectors: 64-d attribute vectors (normalised sum of one fixed random vector per word). '
       'Metrics are the paper\'s protocol (pycocotools COCOeval, IoU 0.4/0.5/0.6, Recall@100, '
       'mAP@0.5), in percent, mean ± sd over seeds. The paper\'s numbers are COCO 65/15 and are '
       'shown only for the direction of each effect: the datasets differ, so the absolute '
       'values are not comparable.', '',
       f'A direction is called only where the difference of the means exceeds the seeds\' '
       f'spread (the larger of the two rows\' standard deviations, and at least '
       f'{100 * MIN_CALLED_DIFFERENCE:.1f} points); otherwise the row says "within seed '
       'spread". Hardware: 2-core CPU (no accelerator), JAX on CPU.', '',
       'Reading the numbers: with up to 100 detections per image, Recall@100 is lenient (a box '
       'can be listed under several classes, so even weak classification is often rewarded); '
       'mAP@0.5 is the number that measures whether the unseen class is ranked right. Compare '
       'the controls on both.', '']
  for preset in PRESETS:
    if res.get(preset):
      L += _preset_section(preset, res[preset], seeds, steps, ablation_steps)
  # The discussion of the tables is written by hand and kept beside the metrics.
  if os.path.exists(DISCUSSION):
    with open(DISCUSSION) as f:
      L += ['', f.read().rstrip()]
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, 'w') as f:
    f.write('\n'.join(L) + '\n')


def _preset_section(preset: str, res: Dict[str, Dict[int, Dict[str, dict]]],
                    seeds: Sequence[int], steps: int, ablation_steps: int) -> List[str]:
  runs = lambda name: list(res.get(name, {}).values())
  seeds_of = lambda name: ', '.join(map(str, sorted(res.get(name, {}))))

  def hosts_of(name):
    # XLA rounds differently per CPU, so a seed trained on another host is another sample.
    hosts = sorted({m['zsi'].get('host', 'host not recorded') for m in runs(name)})
    return '; '.join(hosts)
  L = [f'## {preset.capitalize()} preset', '', PRESET_TEXT[preset], '']
  if not res.get('full'):
    L += ['Main result: not run yet (`python experiments/ablations.py --preset '
          f'{preset} --only main`).', '']
  else:
    rows = runs('full')
    L += [f'### Main result (default config, {steps} steps, seeds {seeds_of("full")})', '',
          '| | R@100 0.4 | R@100 0.5 | R@100 0.6 | mAP@0.5 |', '|---|---|---|---|---|']
    for kind, label in (('mask', 'ZSI (mask)'), ('box', 'ZSD (box)')):
      vals = [[r['zsi'][kind][k] for r in rows] for k in
              ('recall@100_iou0.4', 'recall@100_iou0.5', 'recall@100_iou0.6', 'map@0.5')]
      L.append(f'| {label} | ' + ' | '.join(_mean_sd(v) for v in vals) + ' |')
    L += ['| paper ZSI 65/15 | 55.8 | 50.0 | 42.9 | 10.5 |', '',
          '| GZSI (mask, IoU 0.5) | seen R@100 | seen mAP | unseen R@100 | unseen mAP | HM R@100 '
          '| HM mAP |', '|---|---|---|---|---|---|---|']
    g = [gzsi_row(r) for r in rows]
    L.append('| ours | ' + ' | '.join(_mean_sd([x[i] for x in g]) for i in range(6)) + ' |')
    L += ['| paper 65/15 | 67.1 | 38.7 | 58.9 | 13.6 | 62.8 | 20.1 |', '']
    sweeps = [r['gzsi_calibration'] for r in rows if 'gzsi_calibration' in r]
    if sweeps:
      picture = 'gzsi_calibration.png' if preset == 'default' else f'gzsi_calibration_{preset}.png'
      L += [f'Calibrated GZSI (`eval.py --split gzsi --calibration_sweep '
            f'{len(sweeps[0]["mask"]["gammas"])}`: seen scores lowered by gamma in [-1, 1], '
            'IoU 0.5, mAP in percent). AUSUC is the area under unseen mAP against seen mAP '
            'over the sweep; the best gamma is chosen on the test labels (an oracle, not a '
            f'tuned setting). `docs/{picture}` is seed 0\'s curve.', '',
            '| | HM mAP at gamma 0 | AUSUC | oracle best HM mAP | oracle best gamma |',
            '|---|---|---|---|---|']
      for kind in ('mask', 'box'):
        curves = [sw[kind] for sw in sweeps]
        gammas = [c['best_gamma'] for c in curves]
        gamma_text = (f'{statistics.mean(gammas):.2f} ± {statistics.stdev(gammas):.2f}'
                      if len(gammas) > 1 else f'{gammas[0]:.2f}')
        L.append(f'| GZSI{" (mask)" if kind == "mask" else "D (box)"} | '
                 f'{_mean_sd([_at_gamma_zero(c, "hm_map") for c in curves])} | '
                 f'{_mean_sd([c["ausuc_map"] for c in curves])} | '
                 f'{_mean_sd([c["best_hm_map"] for c in curves])} | {gamma_text} |')
      L.append('')
    secs = [r['zsi']['train_seconds'] for r in rows]
    L += [f'Hosts: {hosts_of("full")}. '
          f'Training wall time per seed: {statistics.mean(secs) / 60:.1f} min. Command: '
          f'`{rows[0]["zsi"]["command"]}` then `python eval.py --workdir WORKDIR --split '
          'zsi,gzsi`.', '']

  abl = f'{ablation_steps} steps'

  def table(title, names, labels, cols, paper, col, header, note):
    # ``col``: the column (of ``cols`` and of ``paper``) whose direction is called.
    have = [n for n in names if res.get(n)]
    if not have:
      return
    ref = names[0]
    verdicts = []
    L.extend([f'### {title}', '', note, '', header, '|' + '---|' * (header.count('|') - 1)])
    for n in have:
      per_seed = [cols(m) for m in runs(n)]
      means = [_mean_sd([x[i] for x in per_seed]) for i in range(len(per_seed[0]))]
      p = paper.get(n)
      direction = ''
      if n != ref and res.get(ref):
        paper_delta = p[col] - paper[ref][col] if p and paper.get(ref) else None
        direction = call_direction([x[col] for x in per_seed], [cols(m)[col] for m in runs(ref)],
                                   paper_delta)
        verdicts.append(direction)
      L.append(f'| {labels[n]} | ' + ' | '.join(means) + ' | '
               + (' / '.join(f'{x:.1f}' for x in p) if p else '-') + f' | {direction} |')
    missing = [labels[n] for n in names if not res.get(n)]
    if missing:
      L.append(f'Not run yet: {", ".join(missing)}.')
    if verdicts:
      L.extend(['', 'Verdict: ' + verdict_line(verdicts)])
    L.extend(['', 'Seeds (hosts) per row: ' + '; '.join(
        f'{labels[n]} {seeds_of(n)} ({hosts_of(n)})' for n in have) + '.', ''])

  t1_labels = {'zsd_smh_e': 'ZSD + SMH encoder (baseline)', 'smh_decoder': '+ SMH decoder',
               'det_decoder': '+ Det decoder', 'full_ref': '+ BA-RPN & Sync-bg (full)'}
  table('Table 1: components', GROUPS['table1'], t1_labels, zsi_row, PAPER_T1, 1,
        '| variant | ZSI R@0.4 | ZSI R@0.5 | ZSI R@0.6 | ZSI mAP | ZSD R@0.5 | ZSD mAP '
        '| paper (R@0.4 / 0.5 / 0.6 / mAP) | ZSI R@0.5 vs baseline |',
        f'Each row adds to the one above ({abl}).')
  t5_labels = {'zsd_smh_e': 'RPN', 'ba_rpn': 'BA-RPN', 'sync_mask': 'BA-RPN & Sync-bg in mask',
               'sync_det': 'BA-RPN & Sync-bg in det', 'sync_both': 'BA-RPN & Sync-bg'}
  table('Table 5: BA-RPN and Sync-bg', GROUPS['table5'], t5_labels, zsi_row, PAPER_T5, 1,
        '| variant | ZSI R@0.4 | ZSI R@0.5 | ZSI R@0.6 | ZSI mAP | ZSD R@0.5 | ZSD mAP '
        '| paper (ZSI R@0.4 / ZSI R@0.5 / ZSD R@0.5) | ZSI R@0.5 vs RPN |',
        f'All rows without decoders, as in the paper ({abl}). Sync-bg in the mask head alone '
        'cannot change anything here: the mask loss and the mask output use only the class '
        'channel of `[v_b; W]` (docs/REFERENCE_NOTES.md: BCE on the ground-truth class '
        'channel), so the `v_b` channel is never read under direct scoring, and the mask rows '
        'equal the rows without it to the last digit. The paper\'s numbers show no change there '
        'either.')
  t6_labels = {'full_ref': 'word vectors (attributes)', 'onehot': 'one-hot', 'random': 'random'}
  t6_cols = lambda m: [gzsi_row(m)[2], gzsi_row(m)[3], gzsi_row(m)[0]] + [
      zsi_row(m)[i] for i in (1, 3, 4, 5)]
  paper_t6 = {n: (v[0], v[1]) for n, v in PAPER_T6.items()}
  table('Table 6: the semantics carry the transfer', GROUPS['table6'], t6_labels, t6_cols,
        paper_t6, 1,
        '| vectors | GZSI unseen R@100 | GZSI unseen mAP | GZSI seen R@100 | ZSI R@0.5 | ZSI mAP '
        '| ZSD R@0.5 | ZSD mAP | paper unseen R@100 / mAP | GZSI unseen mAP vs word vectors |',
        'GZSI masks at IoU 0.5 and ZSI masks. One-hot: each class its own axis, so unseen '
        'vectors are orthogonal to every seen one. Random: fixed random unit vectors (seeded) '
        f'with no relation between classes that share a word ({abl}). Recall@100 is lenient: a '
        'model that cannot tell the unseen classes apart scores every unseen class of a box '
        'about equally, so each box is listed under several classes and the right one is often '
        'among them (see the ZSD box recall of the controls beside their box mAP); mAP is the '
        'column that shows whether the right class wins.')
  scoring_cols = lambda m: zsi_row(m) + [gzsi_row(m)[i] for i in (2, 3, 5)]
  table('Unseen scoring: direct (paper) vs projected through the seen vectors (authors\' code)',
        GROUPS['scoring'], {'full_ref': 'direct', 'full_projected': 'projected'}, scoring_cols,
        {}, 1,
        '| scoring | ZSI R@0.4 | ZSI R@0.5 | ZSI R@0.6 | ZSI mAP | ZSD R@0.5 | ZSD mAP '
        '| GZSI unseen R | GZSI unseen mAP | GZSI HM mAP | paper | ZSI R@0.5 vs direct |',
        f'Same checkpoints (the full model, {abl}).')
  table('Sync-bg gradients: heads train v_b (paper, Algorithm 1) vs detached (authors\' code)',
        GROUPS['gradients'], {'full_ref': 'on', 'sync_no_grad': 'off'}, zsi_row, {}, 1,
        '| v_b gradients from heads | ZSI R@0.4 | ZSI R@0.5 | ZSI R@0.6 | ZSI mAP | ZSD R@0.5 '
        '| ZSD mAP | paper | ZSI R@0.5 vs on |',
        f'({abl}; the paper has no number for this.)')
  mask_labels = {'full': 'default (8 RoIs/image, 32 channels, 56 px targets, recon 0.5)',
                 'mask_rois16': '16 mask RoIs per image', 'mask_wide': '16 RoIs, 64 channels',
                 'mask_gt28': 'targets cropped at 28 px (no resampling)',
                 'mask_recon01': 'mask decoder weight 0.1'}
  table('Mask quality: what closes the gap between mask and box recall', GROUPS['masks'],
        mask_labels, mask_gap_row, {}, 1,
        '| mask head | ZSI box R@0.5 | ZSI mask R@0.5 | ZSI box R@0.6 | ZSI mask R@0.6 '
        '| GZSI box R@0.5 | GZSI mask R@0.5 | GZSI box R@0.6 | GZSI mask R@0.6 | ZSI mask mAP '
        '| paper | ZSI mask R@0.5 vs default |',
        f'Each row is the main model ({steps} steps) with one mask-head setting changed.')
  touch_labels = {'touch_base': 'default (the paper\'s head)',
                  'touch_instance': '+ instance logit',
                  'touch_neighbour': '+ neighbour pixels weighted 3',
                  'touch_exclusive': 'exclusive masks at test time (score >= 0.5)',
                  'touch_onehot': 'instance logit, one-hot class vectors (control)'}
  counts = next((m['zsi']['contact']['mask'] for m in runs('touch_base')), None)
  objects = (f" ZSI test objects: {counts['touching']['objects']} touching another annotated "
             f"object, {counts['apart']['objects']} apart." if counts else '')
  for setting, title in (('zsi', 'ZSI'), ('gzsi', 'GZSI, unseen classes')):
    table(f'Masks of touching objects: {title}', GROUPS['touching'], touch_labels,
          functools.partial(touching_row, setting=setting), {}, 1,
          '| mask head | touching box R | touching mask R | apart box R | apart mask R '
          '| all box R | all mask R | mask mAP | paper | touching mask R vs default |',
          f'Recall@100 and mAP at IoU 0.5 of the unseen classes ({steps} steps). An object is '
          'touching when another annotated object of its image (any class) lies within one '
          'pixel of its mask; each group is scored with the other group\'s objects ignored '
          '(`eval.py`\'s contact table).' + objects)
  return L


def collect(preset: str, names: Sequence[str], seeds: Sequence[int], steps: int,
            ablation_steps: int) -> Dict[str, Dict[int, Dict[str, dict]]]:
  """{variant: {seed: metrics}} of every finished run of ``names``."""
  res: Dict[str, Dict[int, Dict[str, dict]]] = {}
  for name in names:
    for seed in seeds:
      m = finished(preset, name, seed, steps if name in MAIN_LENGTH else ablation_steps)
      if m:
        res.setdefault(name, {})[seed] = m
  return res


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--steps', type=int, default=1000, help='training steps of the main runs')
  p.add_argument('--ablation_steps', type=int, default=500, help='training steps of ablations')
  p.add_argument('--seeds', default='0,1,2', help='seeds of every row')
  p.add_argument('--preset', default=','.join(PRESETS), help='ZSI-Shapes presets to run')
  p.add_argument('--only', default=','.join(GROUPS), help='groups: ' + ','.join(GROUPS))
  p.add_argument('--runs', default='runs/ablations')
  p.add_argument('--out', default='docs/RESULTS.md')
  p.add_argument('--skip_training', action='store_true', help='only tabulate finished runs')
  a = p.parse_args(argv)
  seeds = [int(s) for s in a.seeds.split(',')]
  presets = a.preset.split(',')
  os.chdir(ROOT)
  names = []
  for g in a.only.split(','):
    if g not in GROUPS:
      raise SystemExit(f'unknown group {g!r}; choose from {", ".join(GROUPS)}')
    names += [n for n in GROUPS[g] if n not in names]
  for preset in presets:
    if preset not in PRESETS:
      raise SystemExit(f'unknown preset {preset!r}; choose from {", ".join(PRESETS)}')
  # Seed by seed, so a partial sweep already has every row; within a seed the
  # ablation reference, the controls, the other ablations, then the main runs.
  order = sorted(names, key=lambda n: (n in MAIN_LENGTH, n != 'full_ref',
                                       n not in ('onehot', 'random'), list(VARIANTS).index(n)))
  everything = lambda: {pr: collect(pr, list(VARIANTS), seeds, a.steps, a.ablation_steps)
                        for pr in PRESETS}
  if not a.skip_training:
    for preset in presets:
      data = PRESETS[preset][0]
      if not os.path.exists(os.path.join(data, 'split.json')):
        subprocess.run([sys.executable, 'data_prep/make_shapes.py', '--preset', preset,
                        '--out', data], check=True)
      for seed in seeds:
        for name in order:
          steps = a.steps if name in MAIN_LENGTH else a.ablation_steps
          run_variant(preset, name, seed, steps, a.runs, print)
          write_results(everything(), seeds, a.steps, a.ablation_steps, a.out)
  write_results(everything(), seeds, a.steps, a.ablation_steps, a.out)
  print(f'wrote {a.out}')


if __name__ == '__main__':
  main()
