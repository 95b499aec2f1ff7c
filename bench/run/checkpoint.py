"""Training checkpoints: weights, EMA weights, optimizer state, step and data-RNG state.

Layout of one checkpoint (a directory, written under a temporary name and renamed, so a
checkpoint that exists is complete):

    <dir>/ckpt-<step>/
        weights.safetensors     model parameters (canonical names; metadata: specs, framework)
        ema.safetensors         EMA parameters (absent when EMA is off)
        optimizer.safetensors   Adam first/second moments per parameter + step
        state.json              step, framework, config hash, data-stream state

Tensors go to safetensors and state to JSON: nothing is pickled. Framework-free: the backend
hands over numpy arrays.
"""
import json
import os
import re
import shutil

import numpy as np

from models.common.dit_spec import DiTSpec
from models.common.specs import DiffusionSpec, OptimSpec, UNetSpec
from models.common.weights import load_weights, save_weights

STATE = "state.json"
_CKPT = re.compile(r"^ckpt-(\d+)$")


def save_checkpoint(root, backend, state):
    """Write ckpt-<step> under root; returns its path. `state` is JSON-able extra state."""
    step = int(backend.step)
    final = os.path.join(root, f"ckpt-{step:08d}")
    tmp = final + f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    # the model spec under its family's key: "unet" (UNetSpec) or "dit" (DiTSpec)
    family = "dit" if isinstance(backend.unet_spec, DiTSpec) else "unet"
    meta = {family: backend.unet_spec.to_dict(), "diffusion": backend.diffusion_spec.to_dict(),
            "optim": backend.optim_spec.to_dict(), "framework": backend.name, "step": step}
    save_weights(os.path.join(tmp, "weights.safetensors"), backend.export_weights(), metadata=meta)
    if backend.ema_enabled():
        save_weights(os.path.join(tmp, "ema.safetensors"), backend.export_weights(ema=True),
                     metadata=meta)
    opt = {k: np.ascontiguousarray(v) for k, v in backend.optimizer_state().items()}
    save_weights(os.path.join(tmp, "optimizer.safetensors"), opt)
    with open(os.path.join(tmp, STATE), "w") as f:
        json.dump(dict(state, step=step, framework=backend.name), f, indent=2)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


def find_checkpoint(path):
    """`path` is a checkpoint dir, or a dir holding ckpt-* (the latest is taken)."""
    if os.path.isfile(os.path.join(path, STATE)):
        return path
    found = sorted((int(m.group(1)), name) for name in (os.listdir(path) if os.path.isdir(path) else [])
                   if (m := _CKPT.match(name)) and os.path.isfile(os.path.join(path, name, STATE)))
    if not found:
        raise FileNotFoundError(f"{path}: no checkpoint here (expected {STATE} or ckpt-<step>/ dirs)")
    return os.path.join(path, found[-1][1])


def read_checkpoint(path):
    """-> dict(weights, ema (or None), optimizer, state, meta, path)."""
    path = find_checkpoint(path)
    weights, meta = load_weights(os.path.join(path, "weights.safetensors"))
    ema_path = os.path.join(path, "ema.safetensors")
    ema = load_weights(ema_path)[0] if os.path.exists(ema_path) else None
    optimizer = load_weights(os.path.join(path, "optimizer.safetensors"))[0]
    with open(os.path.join(path, STATE)) as f:
        state = json.load(f)
    return {"weights": weights, "ema": ema, "optimizer": optimizer, "state": state, "meta": meta,
            "path": path}


def restore(backend, ckpt):
    """Load a read_checkpoint() result into a backend built from the same specs."""
    backend.load_weights(ckpt["weights"], ema=ckpt["ema"])
    backend.load_optimizer_state(ckpt["optimizer"])


def load_backend_from_checkpoint(ckpt, framework=None, threads=None, device="auto", seed=0):
    from models.registry import load_backend  # here: imports a framework, only when called

    meta = ckpt["meta"]
    framework = framework or meta["framework"]
    unet = DiTSpec(**meta["dit"]) if "dit" in meta else UNetSpec(**meta["unet"])
    diffusion = DiffusionSpec(**meta["diffusion"])
    backend = load_backend(framework)(unet, diffusion, OptimSpec(**meta["optim"]),
                                      device=device, threads=threads, seed=seed)
    backend.load_weights(ckpt["weights"], ema=ckpt["ema"])
    return backend
