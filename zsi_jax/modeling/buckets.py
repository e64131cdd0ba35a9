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
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp


def slot_buckets(cap: int, num_buckets: int) -> Tuple[int, ...]:
  """Slot counts the loss may run at: ``cap`` and its halvings, e.g. (16, 32, 64, 128)
  for cap 128 and 4 buckets."""
  return tuple(sorted({max(1, cap >> i) for i in range(max(1, num_buckets))}))


def smallest_bucket(counts, sizes: Sequence[int]):
  """Index of the smallest bucket holding ``max(counts)`` slots (int32 scalar)."""
  most = jnp.max(counts)
  return jnp.sum(most > jnp.asarray(sizes[:-1], jnp.int32)).astype(jnp.int32)


def switch_with_gradients(module: nn.Module, index, branches: Sequence[Callable], diff, rest):
  """``nn.switch(index, branches, module, diff, rest)`` whose backward pass is
  computed in the forward pass, inside the taken branch.

  Each branch returns a scalar loss that enters the objective linearly, so it
  can return its gradient at once: with respect to ``module``'s parameters and
  ``diff``; the backward pass multiplies it by the incoming cotangent.

  Args:
    module: the Flax module whose parameters the branches use.
    index: int32 scalar, the branch to run.
    branches: functions ``(module, diff, rest) -> (loss scalar, aux)`` with one
      output structure.
    diff: pytree of the float arrays to differentiate.
    rest: pytree of arrays that get no gradient (integers, booleans, values
      that do not depend on what is differentiated).
  Returns:
    (loss, aux); ``aux`` carries no gradient.
  """
  def run(mdl, index, diff, rest):
    return nn.switch(index, list(branches), mdl, diff, rest)

  def with_gradients(branch):
    def f(mdl, diff, rest):
      loss, vjp_fn, aux = nn.vjp(lambda m, d: branch(m, d, rest), mdl, diff, has_aux=True)
      param_grads, diff_grads = vjp_fn(jnp.ones_like(loss))
      return (loss, aux), (param_grads, diff_grads)
    return f

  def fwd(mdl, index, diff, rest):
    return nn.switch(index, [with_gradients(b) for b in branches], mdl, diff, rest)

  def bwd(grads, cotangent):
    scale = lambda tree: jax.tree_util.tree_map(lambda x: (cotangent[0] * x).astype(x.dtype), tree)
    param_grads, diff_grads = grads
    return scale(param_grads), None, scale(diff_grads), None

  loss, aux = nn.custom_vjp(run, fwd, bwd)(module, index, diff, rest)
  return loss, jax.lax.stop_gradient(aux)
