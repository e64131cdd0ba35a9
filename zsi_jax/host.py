"""What machine a measurement ran on: CPU model, family and flags (``lscpu``).

Recorded with every benchmark and every experiment run, because XLA rounds
differently on different CPUs (a deterministic training run gives other
numbers on another host) and speed depends on the CPU's vector units. The
model name alone is not enough: "AMD EPYC" covers several generations.
"""
from __future__ import annotations

import os
import subprocess
from typing import Dict


def describe() -> Dict[str, object]:
  """dict(cores, model, family, model_number, stepping, flags); 'unknown' where lscpu fails."""
  host: Dict[str, object] = dict(cores=os.cpu_count(), model='unknown', family='unknown',
                                 model_number='unknown', stepping='unknown', flags='')
  try:
    lines = subprocess.run(['lscpu'], capture_output=True, text=True).stdout.splitlines()
  except OSError:
    return host
  fields = {k.strip(): v.strip() for k, v in (l.split(':', 1) for l in lines if ':' in l)}
  host.update(model=fields.get('Model name', 'unknown'), family=fields.get('CPU family', 'unknown'),
              model_number=fields.get('Model', 'unknown'),
              stepping=fields.get('Stepping', 'unknown'), flags=fields.get('Flags', ''))
  return host


def short_name(host: Dict[str, object]) -> str:
  """E.g. 'AMD EPYC (family 26, model 2)'."""
  return f'{host.get("model", "unknown")} (family {host.get("family", "?")}, ' \
         f'model {host.get("model_number", "?")})'
