"""Running the repository's scripts from tests, as a user would."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT_ENV = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)


def run_script(args, check=True, **kw):
  """Runs ``python ARGS`` in the repository root; with ``check``, asserts it succeeded."""
  r = subprocess.run([sys.executable] + list(args), cwd=ROOT, env=SCRIPT_ENV,
                     capture_output=True, text=True, **kw)
  if check:
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  return r
