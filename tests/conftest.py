"""Shared test setup: JAX on the CPU, float32 matmuls exact enough for reference checks."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# Several tests compile the same program again (a train step built anew for a
# resumed run, the same tiny model in several fixtures): JAX's persistent
# compilation cache, private to this test session, lets them reuse it. The
# executable is the same, so results are too.
import tempfile  # noqa: E402

_CACHE = tempfile.mkdtemp(prefix="zsi_jax_test_cache_")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
# The scripts the tests run as subprocesses (train.py, eval.py, predict.py,
# export.py) share it: each compiles the same tiny programs.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")


# A Google Cloud Storage emulator on 127.0.0.1, for the tests of bucket
# workdirs and datasets (tools/gcs_emulator.py; one per test process).
import pytest  # noqa: E402

from tests.scripts import run_script, tiny_shapes  # noqa: E402


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
  """A tiny ZSI-Shapes dataset and a 3-step tiny checkpoint trained on it by train.py
  (with the periodic seen-class evaluation switched on): (data root, workdir)."""
  base = tmp_path_factory.mktemp('tiny')
  data = tiny_shapes(base / 'data')
  workdir = str(base / 'run')
  r = run_script(['train.py', '--config', 'tests/tiny_config.py', '--workdir', workdir,
                  f'--config.data.root={data}', '--config.total_steps=3',
                  '--config.checkpoint_every=3', '--config.eval_every=3',
                  '--config.eval_images=2'])
  with open(os.path.join(workdir, 'console.txt'), 'w') as f:
    f.write(r.stderr)
  return data, workdir


@pytest.fixture(scope='session')
def gcs():
  """A fresh emulated GCS server with bucket ``zsi-test``: yields a ``tools.gcs_emulator.Emulator``
  whose ``env`` points gcsfs and orbax's tensorstore at it (also set in this process)."""
  from tools.gcs_emulator import Emulator
  with Emulator(bucket='zsi-test') as emulator:
    saved = {k: os.environ.get(k) for k in emulator.env}
    os.environ.update(emulator.env)
    try:
      yield emulator
    finally:
      for k, v in saved.items():
        if v is None:
          os.environ.pop(k, None)
        else:
          os.environ[k] = v
