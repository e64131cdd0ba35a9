"""The paper's ablations, in shape, on ZSI-Shapes; writes docs/RESULTS.md.

python experiments/ablations.py [--steps 1000] [--ablation_steps 600] [--seeds 0,1,2]
                                [--only main,table1,...] [--out docs/RESULTS.md]

Each variant is ``configs/shapes.py`` plus ``--config.*`` overrides, trained
with train.py and evaluated with eval.py (ZSI and GZSI) in its own workdir
under --runs. A variant whose workdir already has its final checkpoint and
metrics is not trained again, so an interrupted sweep resumes where it stopped.
Each finished run's metrics are also kept in docs/results/ (committed), from
which the tables can be rewritten alone (--skip_training), runs/ or not.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NO_DECODERS = ('model.box_head.use_decoder=False', 'model.mask_head.use_decoder=False')
PLAIN_RPN = ('model.rpn.semantic=False', 'model.sync_bg.det=False', 'model.sync_bg.mask=False')
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
}
# Variants run like the main result: --steps, every seed.
MAIN_LENGTH = {'full', 'mask_rois16', 'mask_wide', 'mask_gt28', 'mask_recon01'}
# Variants whose GZSI is also swept over seen-score calibrations (eval.py
# --calibration_sweep N), and N.
CALIBRATION_SWEEP = {'full': 21}
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
}


def run_dir(runs: str, name: str, seed: int, steps: int) -> str:
  return os.path.join(runs, f'{SAME_CHECKPOINT.get(name, name)}_s{seed}_n{steps}')


# Every finished run's metrics are kept here (committed), so the tables can be
# rewritten anywhere, after runs/ is gone (--skip_training).
RESULTS_DIR = os.path.join(ROOT, 'docs', 'results')


def metrics_path(workdir: str, name: str, setting: str) -> str:
  run = os.path.basename(workdir).replace(SAME_CHECKPOINT.get(name, name), name, 1)
  return os.path.join(RESULTS_DIR, f'{run}_{setting}.json')


def run_variant(name: str, seed: int, steps: int, runs: str, data: str, log) -> Dict[str, dict]:
  """Trains (unless done) and evaluates one variant; returns {setting: metrics}."""
  overrides, scoring = VARIANTS[name]
  workdir = run_dir(runs, name, seed, steps)
  done = {s: metrics_path(workdir, name, s) for s in ('zsi', 'gzsi')}
  sweep_file = metrics_path(workdir, name, 'gzsi_calibration')
  sweep = name in CALIBRATION_SWEEP
  if all(os.path.exists(p) for p in done.values()) and (not sweep or os.path.exists(sweep_file)):
    out = {s: json.load(open(p)) for s, p in done.items()}
    if sweep:
      out['gzsi_calibration'] = json.load(open(sweep_file))
    return out
  t0 = time.time()
  if name not in SAME_CHECKPOINT:
    cmd = [sys.executable, 'train.py', '--config', 'configs/shapes.py', '--workdir', workdir,
           f'--config.seed={seed}', f'--config.total_steps={steps}',
           f'--config.data.root={data}'] + [f'--config.{o}' for o in overrides]
    log(f'[{name} seed {seed}] ' + ' '.join(cmd[1:]))
    _check(cmd, os.path.join(workdir + '.train.log'))
  train_s = time.time() - t0
  cmd = [sys.executable, 'eval.py', '--workdir', workdir, '--split', 'zsi,gzsi',
         '--scoring', scoring]
  log(f'[{name} seed {seed}] ' + ' '.join(cmd[1:]))
  _check(cmd, os.path.join(workdir + f'.eval_{scoring}.log'))
  os.makedirs(RESULTS_DIR, exist_ok=True)
  out = {}
  for setting, path in done.items():
    with open(os.path.join(workdir, 'eval', f'{setting}_metrics.json')) as f:
      m = json.load(f)
    m['train_seconds'] = train_s
    m['wall_seconds'] = time.time() - t0
    m['command'] = ' '.join(['python train.py --config configs/shapes.py', f'--config.seed={seed}',
                             f'--config.total_steps={steps}']
                            + [f'--config.{o}' for o in overrides])
    with open(path + '.tmp', 'w') as f:
      json.dump(m, f, indent=1)
    os.replace(path + '.tmp', path)
    out[setting] = m
  if sweep:
    cmd = [sys.executable, 'eval.py', '--workdir', workdir, '--split', 'gzsi', '--scoring', scoring,
           '--calibration_sweep', str(CALIBRATION_SWEEP[name])]
    log(f'[{name} seed {seed}] ' + ' '.join(cmd[1:]))
    _check(cmd, os.path.join(workdir + '.calibration.log'))
    shutil.copy(os.path.join(workdir, 'eval', 'gzsi_calibration.json'), sweep_file)
    with open(sweep_file) as f:
      out['gzsi_calibration'] = json.load(f)
    picture = os.path.join(ROOT, 'docs', 'gzsi_calibration.png')
    if seed == 0:
      shutil.copy(os.path.join(workdir, 'eval', 'gzsi_calibration.png'), picture)
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


def _at_gamma_zero(curve: dict, key: str) -> float:
  """A calibration curve's ``key`` at the gamma closest to 0 (no calibration)."""
  i = min(range(len(curve['gammas'])), key=lambda j: abs(curve['gammas'][j]))
  return curve[key][i]


def _direction(ours: float, ours_ref: float, paper: float, paper_ref: float) -> str:
  d_ours, d_paper = ours - ours_ref, paper - paper_ref
  if abs(d_ours) < 0.005:
    return 'no change (<0.5)'
  if abs(d_paper) < 0.1:
    return 'paper: no change'
  return 'agrees' if (d_ours > 0) == (d_paper > 0) else '**disagrees**'


def write_results(res: Dict[str, Dict[int, Dict[str, dict]]], seeds: Sequence[int], steps: int,
                  ablation_steps: int, out: str):
  """Writes docs/RESULTS.md from {variant: {seed: {setting: metrics}}}."""
  first = lambda name: next(iter(res[name].values())) if res.get(name) else None
  L = ['# Results on ZSI-Shapes', '',
       'Produced by `python experiments/ablations.py` (this file is overwritten by it). '
       'ZSI-Shapes: 36 seen / 12 unseen "<color> <shape>" classes, every unseen class a new '
       'combination of a seen color and a seen shape; 2,000 training images, 296 test images '
       '(`python data_prep/make_shapes.py`, seed 0). Class vectors: 64-d attribute vectors '
       '(normalised sum of one fixed random vector per word). Metrics are the paper\'s protocol '
       '(pycocotools COCOeval, IoU 0.4/0.5/0.6, Recall@100, mAP@0.5), in percent. The paper\'s '
       'numbers are COCO 65/15 and are shown only for the direction of each effect: the '
       'datasets differ, so the absolute values are not comparable.', '']
  L += ['Hardware: 2-core CPU (no accelerator), JAX on CPU.', '',
        'Reading the numbers: with 12 unseen classes and up to 100 detections per image, '
        'Recall@100 is lenient (a box can be listed under several classes, so even weak '
        'classification is often rewarded); mAP@0.5 is the number that measures whether the '
        'unseen class is ranked right. Compare the controls below on both.', '']

  if not res.get('full'):
    L += ['## Main result', '', f'Not run yet (`python experiments/ablations.py --only main '
          f'--steps {steps}`).', '']
  else:
    rows = list(res['full'].values())
    L += [f'## Main result (default config, {steps} steps, seeds {", ".join(map(str, seeds))}; '
          'mean ± sd)', '',
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
      L += [f'Calibrated GZSI (`eval.py --split gzsi --calibration_sweep '
            f'{len(sweeps[0]["mask"]["gammas"])}`: seen scores lowered by gamma in [-1, 1], '
            'IoU 0.5, mAP in percent). AUSUC is the area under unseen mAP against seen mAP '
            'over the sweep; the best gamma is chosen on the test labels (an oracle, not a '
            'tuned setting). `docs/gzsi_calibration.png` is seed 0\'s curve.', '',
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
    L += [f'Training wall time per seed: {statistics.mean(secs) / 60:.1f} min '
          f'(evaluation of ZSI + GZSI included in the sweep wall time: '
          f'{statistics.mean(r["zsi"]["wall_seconds"] for r in rows) / 60:.1f} min). '
          f'Command: `{rows[0]["zsi"]["command"]} --config.data.root=data/generated/zsi_shapes` '
          'then `python eval.py --workdir WORKDIR --split zsi,gzsi`.', '']

  def table(title, names, labels, paper, header, cols, note=''):
    have = [n for n in names if res.get(n)]
    if not have:
      return
    L.extend([f'## {title}', '', note, '', header, '|' + '---|' * (header.count('|') - 1)])
    ref = names[0]
    for n in have:
      ours = cols(first(n))
      p = paper.get(n) if paper else None
      direction = ''
      if n != ref and res.get(ref) and p and paper.get(ref):
        direction = _direction(ours[1], cols(first(ref))[1], p[1], paper[ref][1])
      L.append(f'| {labels[n]} | ' + ' | '.join(_pct(x) for x in ours) + ' | '
               + (' / '.join(f'{x:.1f}' for x in p) if p else '-') + f' | {direction} |')
    missing = [labels[n] for n in names if not res.get(n)]
    if missing:
      group = [g for g, ns in GROUPS.items() if ns == names]
      L.append(f'Not run yet: {", ".join(missing)} '
               f'(`python experiments/ablations.py --only {group[0] if group else "..."}`).')
    L.append('')

  t1_labels = {'zsd_smh_e': 'ZSD + SMH encoder (baseline)', 'smh_decoder': '+ SMH decoder',
               'det_decoder': '+ Det decoder', 'full_ref': '+ BA-RPN & Sync-bg (full)'}
  abl = f'{ablation_steps} steps, seed {seeds[0]}'
  table('Table 1: components', GROUPS['table1'], t1_labels, PAPER_T1,
        '| variant | ZSI R@0.4 | ZSI R@0.5 | ZSI R@0.6 | ZSI mAP | ZSD R@0.5 | ZSD mAP '
        '| paper (R@0.4 / 0.5 / 0.6 / mAP) | direction of ZSI R@0.5 vs baseline |',
        zsi_row, f'Each row adds to the one above ({abl}). One seed per row: over 3 seeds the '
        'default model varied by about 0.7 points of ZSI R@0.5 and 7 of ZSI mAP (README), so '
        'smaller differences are not evidence either way.')
  t5_labels = {'zsd_smh_e': 'RPN', 'ba_rpn': 'BA-RPN', 'sync_mask': 'BA-RPN & Sync-bg in mask',
               'sync_det': 'BA-RPN & Sync-bg in det', 'sync_both': 'BA-RPN & Sync-bg'}
  table('Table 5: BA-RPN and Sync-bg', GROUPS['table5'], t5_labels, PAPER_T5,
        '| variant | ZSI R@0.4 | ZSI R@0.5 | ZSI R@0.6 | ZSI mAP | ZSD R@0.5 | ZSD mAP '
        '| paper (ZSI R@0.4 / ZSI R@0.5 / ZSD R@0.5) | direction of ZSI R@0.5 vs RPN |',
        zsi_row, f'All rows without decoders, as in the paper ({abl}). Sync-bg in the mask '
        'head alone cannot change anything here: the mask loss and the mask output use only '
        'the class channel of `[v_b; W]` (docs/REFERENCE_NOTES.md: BCE on the ground-truth class channel), '
        'so the `v_b` channel is never read under direct scoring, and the mask rows equal the '
        'rows without it to the last digit. The paper\'s numbers show no change there either.')

  t6_labels = {'full_ref': 'word vectors (attributes)', 'onehot': 'one-hot', 'random': 'random'}
  have = [n for n in GROUPS['table6'] if res.get(n)]
  if have:
    L += ['## Table 6: the semantics carry the transfer', '',
          'GZSI masks at IoU 0.5 and ZSI masks. One-hot: each class its own axis, so unseen '
          'vectors are orthogonal to every seen one. Random: fixed random unit vectors (seeded) '
          f'with no relation between classes that share a word ({abl}). '
          'Recall@100 is lenient with 12 unseen classes: a model that cannot tell '
          'them apart scores every unseen class of a box about equally, so each box '
          'is listed under several classes and the right one is often among them '
          '(see the ZSD box recall of the controls beside their box mAP); mAP is the '
          'column that shows whether the right class wins.', '',
          '| vectors | GZSI unseen R@100 | GZSI unseen mAP | GZSI seen R@100 | ZSI R@0.5 | ZSI mAP '
          '| ZSD R@0.5 | ZSD mAP | paper unseen R@100 / mAP |',
          '|---|---|---|---|---|---|---|---|---|']
    for n in have:
      m = first(n)
      g = gzsi_row(m)
      z = zsi_row(m)
      p = PAPER_T6[n]
      L.append(f'| {t6_labels[n]} | {_pct(g[2])} | {_pct(g[3])} | {_pct(g[0])} | {_pct(z[1])} '
               f'| {_pct(z[3])} | {_pct(z[4])} | {_pct(z[5])} | {p[0]:.1f} / {p[1]:.1f} |')
    L.append('')

  if res.get('full_ref') and res.get('full_projected'):
    L += ['## Unseen scoring: direct (paper) vs projected through the seen vectors (authors\' code)',
          '', f'Same checkpoint (the full model, {abl}).', '',
          '| scoring | ZSI R@0.4 | ZSI R@0.5 | ZSI R@0.6 | ZSI mAP | ZSD R@0.5 | ZSD mAP '
          '| GZSI unseen R | GZSI unseen mAP | GZSI HM mAP |', '|---|---|---|---|---|---|---|---|---|---|']
    for n, label in (('full_ref', 'direct'), ('full_projected', 'projected')):
      m = first(n)
      g = gzsi_row(m)
      L.append(f'| {label} | ' + ' | '.join(_pct(x) for x in zsi_row(m))
               + f' | {_pct(g[2])} | {_pct(g[3])} | {_pct(g[5])} |')
    L.append('')
  if res.get('full_ref') and res.get('sync_no_grad'):
    L += ['## Sync-bg gradients: heads train v_b (paper, Algorithm 1) vs detached (authors\' code)',
          '', f'({abl}; the paper has no number for this.)', '',
          '| v_b gradients from heads | ZSI R@0.4 | ZSI R@0.5 | ZSI R@0.6 | ZSI mAP | ZSD R@0.5 '
          '| ZSD mAP |', '|---|---|---|---|---|---|---|']
    for n, label in (('full_ref', 'on'), ('sync_no_grad', 'off')):
      L.append(f'| {label} | ' + ' | '.join(_pct(x) for x in zsi_row(first(n))) + ' |')
    L.append('')
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, 'w') as f:
    f.write('\n'.join(L) + '\n')


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--steps', type=int, default=1000, help='training steps of the main runs')
  p.add_argument('--ablation_steps', type=int, default=600, help='training steps of ablations')
  p.add_argument('--seeds', default='0,1,2', help='seeds of the main runs (ablations: first)')
  p.add_argument('--only', default=','.join(GROUPS), help='groups: ' + ','.join(GROUPS))
  p.add_argument('--data', default='data/generated/zsi_shapes')
  p.add_argument('--runs', default='runs/ablations')
  p.add_argument('--out', default='docs/RESULTS.md')
  p.add_argument('--skip_training', action='store_true', help='only tabulate finished runs')
  a = p.parse_args(argv)
  seeds = [int(s) for s in a.seeds.split(',')]
  os.chdir(ROOT)
  if not os.path.exists(os.path.join(a.data, 'split.json')):
    subprocess.run([sys.executable, 'data_prep/make_shapes.py', '--out', a.data], check=True)
  names = []
  for g in a.only.split(','):
    if g not in GROUPS:
      raise SystemExit(f'unknown group {g!r}; choose from {", ".join(GROUPS)}')
    names += [n for n in GROUPS[g] if n not in names]
  # The ablation reference first (every table compares against it), the
  # controls (they carry the main claim), the component tables, all at
  # --ablation_steps; then the main runs (full model, --steps, all seeds).
  rest = sorted((n for n in names if n not in MAIN_LENGTH),
                key=lambda n: (n != 'full_ref', n not in ('onehot', 'random'),
                               list(VARIANTS).index(n)))
  plan = [(n, seeds[0], a.ablation_steps) for n in rest]
  plan += [(n, s, a.steps) for s in seeds for n in names if n in MAIN_LENGTH]
  res: Dict[str, Dict[int, Dict[str, dict]]] = {}
  for name, seed, steps in plan:
    workdir = run_dir(a.runs, name, seed, steps)
    if a.skip_training and not os.path.exists(metrics_path(workdir, name, 'gzsi')):
      continue
    res.setdefault(name, {})[seed] = run_variant(name, seed, steps, a.runs, a.data, print)
    write_results(res, seeds, a.steps, a.ablation_steps, a.out)
  write_results(res, seeds, a.steps, a.ablation_steps, a.out)
  print(f'wrote {a.out}')


if __name__ == '__main__':
  main()
