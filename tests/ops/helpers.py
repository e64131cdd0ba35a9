"""Random inputs shared by the op tests."""
import numpy as np


def random_boxes(rng, n, lo=0.0, hi=100.0, min_size=0.5, max_size=40.0):
  """[n, 4] float32 boxes with positive size."""
  xy = rng.uniform(lo, hi, size=(n, 2))
  wh = rng.uniform(min_size, max_size, size=(n, 2))
  return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
