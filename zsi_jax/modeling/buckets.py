"""Mask-RoI slot buckets: run a per-RoI loss on as few slots as the batch needs.

The RoI sampler yields at most ``cap`` positives per image (25% of 512 = 128
on COCO), but early in training and on images with few objects far fewer, and
the mask head on empty slots was most of a CPU train step. Training runs the
loss on the smallest bucket of slots (``cap``, ``cap/2``, ...) that holds every
image's positives, so no positive is dropped and the loss is the same whichever
bucket runs; each bucket is one more compiled branch.

Differentiating a ``lax.switch`` makes it output the residuals of every branch
(zero-filled for the branches not taken), or run the taken branch's forward
pass twice when rematerialised. :func:`switch_with_gradients` instead computes
the taken branch's gradients in the forward pass; the backward pass only
scales them. With a single bucket it is the plain loss and its gradients.

A branch may also run in pieces, one after another (a loop whose body computes
one piece's loss and gradients and adds them up), so only one piece's
activations are alive at a time: the peak memory of a large bucket is that of a
piece.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp


def slot_buckets(cap: int, num_buckets: int) -> Tuple[int, ...]:
  """Slot counts the loss may run at: ``cap`` and its halvings, e.g. (16, 32, 64, 128)
  for cap 128 and 4 buckets."""
  return tuple(sorted({max(1, cap >> i) for i in range(max(1, num_buckets))}))


def pieces(slots: int, piece_slots: int) -> Tuple[int, int]:
  """(count, size) of the equal pieces of at most ``piece_slots`` slots that
  cover a bucket of ``slots`` (one piece when ``piece_slots`` is 0), e.g. (4, 32)
  for 128 slots in pieces of 32, (4, 25) for 100."""
  count = 1 if piece_slots <= 0 else -(-slots // piece_slots)
  return count, -(-slots // count)


def smallest_bucket(counts, sizes: Sequence[int]):
  """Index of the smallest bucket holding ``max(counts)`` slots (int32 scalar)."""
  most = jnp.max(counts)
  return jnp.sum(most > jnp.asarray(sizes[:-1], jnp.int32)).astype(jnp.int32)


def switch_with_gradients(module: nn.Module, index, branches: Sequence[Callable], diff, rest,
                          pieces: Optional[Sequence[int]] = None):
  """``nn.switch(index, branches, module, diff, rest)`` whose backward pass is
  computed in the forward pass, inside the taken branch.

  Each branch returns a scalar loss that enters the objective linearly, so it
  can return its gradient at once: with respect to ``module``'s parameters and
  ``diff``; the backward pass multiplies it by the incoming cotangent.

  Args:
    module: the Flax module whose parameters the branches use.
    index: int32 scalar, the branch to run.
    branches: functions ``(module, diff, rest, piece) -> (loss scalar, aux)``
      with one output structure; ``piece`` is an int32 scalar.
    diff: pytree of the float arrays to differentiate.
    rest: pytree of arrays that get no gradient (integers, booleans, values
      that do not depend on what is differentiated).
    pieces: per branch, how many pieces it runs in (default 1 each): pieces
      ``0 .. n-1`` run one at a time, and the loss, ``aux`` and gradients are
      their sums.
  Returns:
    (loss, aux); ``aux`` carries no gradient.
  """
  pieces = [1] * len(branches) if pieces is None else list(pieces)
  if len(pieces) != len(branches) or min(pieces) < 1:
    raise ValueError(f'pieces {pieces} must give a count >= 1 for each of {len(branches)} branches')

  def run(mdl, index, diff, rest):
    return nn.switch(index, [functools.partial(b, piece=jnp.int32(0)) if n == 1
                             else _summed(b, n) for b, n in zip(branches, pieces)],
                     mdl, diff, rest)

  def fwd(mdl, index, diff, rest):
    return nn.switch(index, [_summed_with_gradients(b, n) for b, n in zip(branches, pieces)],
                     mdl, diff, rest)

  def bwd(grads, cotangent):
    scale = lambda tree: jax.tree_util.tree_map(lambda x: (cotangent[0] * x).astype(x.dtype), tree)
    param_grads, diff_grads = grads
    return scale(param_grads), None, scale(diff_grads), None

  loss, aux = nn.custom_vjp(run, fwd, bwd)(module, index, diff, rest)
  return loss, jax.lax.stop_gradient(aux)


def _add(a, b):
  return jax.tree_util.tree_map(jnp.add, a, b)


def _loop(fn, count):
  """``fn(mdl, diff, rest, piece)`` summed over pieces 0..count-1, one at a time.

  Piece 0 runs first and its result starts the sum, so the loop needs no zeros
  of the result's structure."""
  def summed(mdl, diff, rest):
    total = fn(mdl, diff, rest, jnp.int32(0))
    if count == 1:
      return total
    body = lambda m, carry, piece: (_add(carry, fn(m, diff, rest, piece)), None)
    loop = nn.scan(body, variable_broadcast='params', split_rngs={'params': False},
                   length=count - 1)
    return loop(mdl, total, jnp.arange(1, count, dtype=jnp.int32))[0]
  return summed


def _summed(branch, count):
  return _loop(lambda mdl, diff, rest, piece: branch(mdl, diff, rest, piece=piece), count)


def _summed_with_gradients(branch, count):
  """((loss, aux), (parameter gradients, ``diff`` gradients)), summed over the pieces."""
  def one(mdl, diff, rest, piece):
    loss, vjp_fn, aux = nn.vjp(lambda m, d: branch(m, d, rest, piece=piece), mdl, diff,
                               has_aux=True)
    return (loss, aux), vjp_fn(jnp.ones_like(loss))
  return _loop(one, count)
