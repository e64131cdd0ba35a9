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


def tiny_shapes(root, num_train=8, num_val=2, num_test=4):
  """A tiny ZSI-Shapes dataset at ``root`` (64 px images, 16-d vectors): the tests' data."""
  from zsi_jax.data import shapes
  shapes.generate(str(root), shapes.ShapesConfig(
      image_size=64, num_train=num_train, num_val=num_val, num_test=num_test, min_radius=8,
      max_radius=14, vector_dim=16), log=lambda *_: None)
  return str(root)
