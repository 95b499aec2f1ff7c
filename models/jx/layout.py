"""Canonical weights <-> the Flax variable tree, numpy only.

Flax names a leaf by its module path plus kernel/bias/scale/embedding; models/jx/unet.py and
dit.py name every module with its canonical dotted path, so a leaf's path joined with "."
is the canonical name once the leaf is renamed. The layouts differ on purpose:

    conv kernel   Flax HWIO  <-> canonical OIHW (torch's)   transpose (3, 2, 0, 1)
    dense kernel  Flax (in, out) <-> canonical (out, in)    transpose
    GroupNorm scale, Embed embedding <-> .weight            as is

The same mapping converts Adam's moments (trees shaped like the parameters) for
checkpoints, so a JAX checkpoint resumes in torch or Jittor and back.
"""
from collections import OrderedDict

import numpy as np

from models.common.weights import model_param_shapes

LEAF_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
BUFFERS = "buffers"   # the collection of fixed canonical tensors (a DiT's pos_embed)


def _flatten(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            yield from _flatten(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def _set(tree, path, value):
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def canonical_name(path):
    return ".".join(path[:-1] + (LEAF_NAMES.get(path[-1], path[-1]),))


def to_canonical_array(path, arr):
    arr = np.asarray(arr)
    if path[-1] == "kernel":
        return np.ascontiguousarray(arr.transpose(3, 2, 0, 1) if arr.ndim == 4 else arr.T)
    return arr


def to_flax_array(path, arr):
    arr = np.asarray(arr, dtype=np.float32)
    if path[-1] == "kernel":
        return np.ascontiguousarray(arr.transpose(2, 3, 1, 0) if arr.ndim == 4 else arr.T)
    return arr


class Layout:
    """The map between one model's Flax variables and its canonical names.

    variables: the model's variable tree (shapes suffice: jax.eval_shape of init), with the
    trainable "params" and the fixed BUFFERS collections."""

    def __init__(self, spec, variables):
        self.order = list(model_param_shapes(spec))   # the canonical (state-dict) order
        self.paths = {}   # canonical name -> (collection, path)
        for collection in ("params", BUFFERS):
            for path, _ in _flatten(variables.get(collection, {})):
                self.paths[canonical_name(path)] = (collection, path)
        missing = set(self.order) ^ set(self.paths)
        if missing:
            raise AssertionError(f"the Flax model and the canonical names disagree: "
                                 f"{sorted(missing)[:8]}")

    def has(self, collection):
        return any(coll == collection for coll, _ in self.paths.values())

    def to_flax(self, weights, collection="params"):
        """Canonical numpy weights -> the nested dict of one collection (numpy leaves)."""
        tree = {}
        for name, (coll, path) in self.paths.items():
            if coll == collection:
                _set(tree, path, to_flax_array(path, weights[name]))
        return tree

    def to_canonical(self, params, buffers=None):
        """Trees of numpy (or device) arrays -> canonical OrderedDict in state-dict order;
        names of a collection not given are left out (Adam's moments have no buffers)."""
        trees = {"params": params, BUFFERS: buffers}
        out = OrderedDict()
        for name in self.order:
            coll, path = self.paths[name]
            if trees[coll] is None:
                continue
            leaf = trees[coll]
            for k in path:
                leaf = leaf[k]
            out[name] = to_canonical_array(path, leaf)
        return out
