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
piece. The loop runs only the pieces that hold work (a trip count known at run
time), which also keeps XLA from unrolling it into straight-line code that its
scheduler would interleave.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import flax
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
                          pieces: Optional[Sequence[int]] = None, active_pieces=None):
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
    active_pieces: per branch, an int32 scalar: run only pieces ``0 .. a-1``
      (at least piece 0), the others contributing nothing (default: all).
  Returns:
    (loss, aux); ``aux`` carries no gradient.
  """
  pieces = [1] * len(branches) if pieces is None else list(pieces)
  if len(pieces) != len(branches) or min(pieces) < 1:
    raise ValueError(f'pieces {pieces} must give a count >= 1 for each of {len(branches)} branches')
  active = (pieces if active_pieces is None else
            [jnp.clip(a, 1, n).astype(jnp.int32) for a, n in zip(active_pieces, pieces)])

  def run(mdl, index, diff, rest):
    return nn.switch(index, [_loop(_piece(b), n, a) for b, n, a in zip(branches, pieces, active)],
                     mdl, diff, rest)

  def fwd(mdl, index, diff, rest):
    return nn.switch(index, [_loop(_piece_with_gradients(b), n, a)
                             for b, n, a in zip(branches, pieces, active)], mdl, diff, rest)

  def bwd(grads, cotangent):
    scale = lambda tree: jax.tree_util.tree_map(lambda x: (cotangent[0] * x).astype(x.dtype), tree)
    param_grads, diff_grads = grads
    return scale(param_grads), None, scale(diff_grads), None

  loss, aux = nn.custom_vjp(run, fwd, bwd)(module, index, diff, rest)
  return loss, jax.lax.stop_gradient(aux)


def _add(a, b):
  return jax.tree_util.tree_map(jnp.add, a, b)


def _loop(fn, count: int, active):
  """``fn(mdl, diff, rest, piece)`` summed over pieces ``0 .. active-1`` (of at
  most ``count``), one at a time.

  Piece 0 runs first and its result starts the sum, so the loop needs no zeros
  of the result's structure."""
  def summed(mdl, diff, rest):
    total = fn(mdl, diff, rest, jnp.int32(0))
    if count == 1:
      return total
    def body(m, carry):
      piece, total = carry
      return piece + 1, _add(total, fn(m, diff, rest, piece))
    return nn.while_loop(lambda m, carry: carry[0] < active, body, mdl, (jnp.int32(1), total),
                         broadcast_variables='params')[1]
  return summed


def _piece(branch):
  return lambda mdl, diff, rest, piece: branch(mdl, diff, rest, piece=piece)


def _piece_with_gradients(branch):
  """One piece's ((loss, aux), (parameter gradients, ``diff`` gradients))."""
  def one(mdl, diff, rest, piece):
    loss, vjp_fn, aux = nn.vjp(lambda m, d: branch(m, d, rest, piece=piece), mdl, diff,
                               has_aux=True)
    param_grads, diff_grads = vjp_fn(jnp.ones_like(loss))
    # Inside a lifted loop the gradients come as a FrozenDict: one structure for the sum.
    return (loss, aux), (flax.core.unfreeze(param_grads), diff_grads)
  return one
