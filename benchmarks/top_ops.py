"""Summarises a jax.profiler trace of one train step or detect call: where the time goes.

python benchmarks/top_ops.py DIR [--top 25]

DIR is the --profile directory of benchmarks/bench_step.py (the train step)
or its DIR/detect (one detect call): the trace
(plugins/profile/*/*.trace.json.gz) and the compiled HLO (*.hlo.txt), whose metadata
names each XLA op after the JAX operation and Flax module it came from.
Prints the ops by total time, and the time per model part (the first path
component under the loss function: backbone, fpn, rpn, box_head, mask_head,
or the detection ops such as RoIAlign and NMS by their function name).
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re


def op_names(hlo_text: str):
  """{hlo op name: metadata op_name} from compiled HLO text.

  A fusion without metadata of its own is named after the first op inside
  its fused computation that has some (e.g. the convolution of a library
  fusion).
  """
  out, inner, comp = {}, {}, None
  calls = {}
  for line in hlo_text.splitlines():
    head = re.match(r'^%?([\w.\-]+) \(.*\{$', line)
    if head:
      comp = head.group(1)
      continue
    m = re.match(r'\s*(?:ROOT )?%([\w.\-]+) = ', line)
    if not m:
      continue
    name = re.search(r'metadata=\{op_name="([^"]*)"', line)
    if name:
      out[m.group(1)] = name.group(1)
      if comp and comp not in inner:
        inner[comp] = name.group(1)
    call = re.search(r'calls=%([\w.\-]+)', line)
    if call:
      calls[m.group(1)] = call.group(1)
  for op, comp in calls.items():
    if op not in out and comp in inner:
      out[op] = inner[comp]
  return out


def part_of(op_name: str) -> str:
  """A coarse model part from a metadata op_name such as
  'jit(step)/transpose(jvp(ZSIModel.losses))/mask_head/conv1/conv_general_dilated'."""
  parts = [p for p in op_name.split('/') if p and not p.startswith(('jit(', 'jvp(', 'transpose('))]
  grad = 'bwd ' if 'transpose(' in op_name else ''
  return grad + (parts[0] if parts else '?') if parts else grad + '?'


def main():
  p = argparse.ArgumentParser()
  p.add_argument('dir')
  p.add_argument('--top', type=int, default=25)
  args = p.parse_args()
  traces = sorted(glob.glob(os.path.join(args.dir, 'plugins', 'profile', '*', '*.trace.json.gz')))
  if not traces:
    raise SystemExit(f'no trace under {args.dir}/plugins/profile')
  hlo_paths = glob.glob(os.path.join(args.dir, '*.hlo.txt'))
  names = op_names(open(hlo_paths[0]).read()) if hlo_paths else {}
  events = json.load(gzip.open(traces[-1]))['traceEvents']
  per_op = collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and 'hlo_op' in e.get('args', {}):
      per_op[e['args']['hlo_op']] += e.get('dur', 0)
  total = sum(per_op.values())
  print(f'total op time {total / 1e6:.2f} s over {len(per_op)} ops')
  for op, us in per_op.most_common(args.top):
    print(f'{us / 1e6:8.3f} s {100 * us / total:5.1f}%  {op:28s} {names.get(op, "")[:110]}')
  per_part = collections.Counter()
  for op, us in per_op.items():
    per_part[part_of(names.get(op, ''))] += us
  print('\nby part:')
  for part, us in per_part.most_common(20):
    print(f'{us / 1e6:8.3f} s {100 * us / total:5.1f}%  {part}')


if __name__ == '__main__':
  main()
