"""Prove two frameworks run the same model: identical weights and inputs in, outputs compared.

Each framework runs in its own process (they must never share one):

    python -m models.parity run --framework torch --case case.npz --out torch.npz
    python -m models.parity check [--seed N]     # makes a case, runs both, prints the errors

A case holds canonical weights, a batch, timesteps and every noise draw, all made in numpy.
Errors are relative: ||a - b|| / ||b||, with the first framework as b.

The model is a UNet (UNetSpec) or a DiT (DiTSpec, docs/DIT.md): a class-conditional DiT's
case adds the labels, the label-dropout masks of the training steps (numpy-made, so both
frameworks drop the same labels) and a DDIM chain with classifier-free guidance.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from models.common.diffusion import sampler_plan
from models.common.dit_spec import DiTSpec, dit_preset
from models.common.dit_weights import init_dit_weights
from models.common.specs import DiffusionSpec, OptimSpec, UNetSpec
from models.common.weights import init_weights

# Tolerances the parity tests enforce (issue 2); the check command prints against them too.
TOLERANCES = {"forward": 1e-4, "loss": 1e-5, "grad": 1e-3, "params_after_steps": 1e-4,
              "ddim_eta0": 1e-3, "ddim_eta1": 1e-3, "ddpm": 1e-3}

TINY_UNET = UNetSpec(image_size=16, in_channels=3, base_channels=16, ch_mult=(1, 2),
                     num_res_blocks=1, attn_resolutions=(8,), dropout=0.0, norm_groups=4)
# T=100 keeps the chains short; warm-up 2 and a small clip exercise the lr ramp and clipping.
TINY_DIFFUSION = DiffusionSpec(timesteps=100, loss="l2")
TINY_OPTIM = OptimSpec(lr=1e-3, warmup_steps=2, grad_clip=0.5, ema_decay=0.9)
OPT_STEPS = 3
SAMPLERS = {"ddim_eta0": ("ddim", 10, 0.0), "ddim_eta1": ("ddim", 10, 1.0), "ddpm": ("ddpm", 20, None)}

# The DiT's parity case: DiT-T/2 on 8x8x3 inputs (16 tokens), 10 classes plus the null class.
TINY_DIT = dit_preset("DiT-T/2", image_size=8, in_channels=3, num_classes=10,
                      class_dropout=0.25)
# A class-conditional DiT's extra chain: DDIM (eta 1, so the noise path is used too) with
# classifier-free guidance at this scale; compared at the chains' tolerance.
CFG_SCALE = 4.0
CFG_SAMPLERS = {"ddim_cfg": ("ddim", 10, 1.0)}
EXTRA_TOLERANCES = {"ddim_cfg": 1e-3}


def tolerance(category):
    """The tolerance of a category (None: reported, not judged)."""
    return TOLERANCES.get(category, EXTRA_TOLERANCES.get(category))


def model_spec(specs):
    """The model spec of a specs dict (specs_dict's form): a UNetSpec or a DiTSpec."""
    return DiTSpec(**specs["dit"]) if "dit" in specs else UNetSpec(**specs["unet"])


def _conditional(spec):
    return isinstance(spec, DiTSpec) and spec.num_classes > 0


def specs_dict(unet, diffusion, optim):
    """The settings a parity case depends on, as plain JSON-able dicts (the case file, the
    record, its hash and `check --specs` all use this form). The model is under "unet" or,
    for a DiTSpec, "dit"."""
    key = "dit" if isinstance(unet, DiTSpec) else "unet"
    return {key: unet.to_dict(), "diffusion": diffusion.to_dict(), "optim": optim.to_dict()}


def make_case(seed=0, unet=TINY_UNET, diffusion=TINY_DIFFUSION, optim=TINY_OPTIM, batch=4,
              short=False):
    """short: the sweep's check of a point (forward, loss, every gradient, one Adam step; no
    sampling chains): a big model's whole case costs minutes, its model is what it checks."""
    rng = np.random.default_rng(seed)
    n_steps = 1 if short else OPT_STEPS
    shape = (batch, unet.in_channels, unet.image_size, unet.image_size)
    init = init_dit_weights if isinstance(unet, DiTSpec) else init_weights
    case = {f"w.{k}": v for k, v in init(unet, seed=seed, scheme="random").items()}
    case["x0"] = rng.uniform(-1, 1, size=(n_steps,) + shape).astype(np.float32)
    case["t"] = rng.integers(0, diffusion.timesteps, size=(n_steps, batch)).astype(np.int64)
    case["noise"] = rng.standard_normal((n_steps,) + shape).astype(np.float32)
    case["x_T"] = rng.standard_normal(shape).astype(np.float32)
    for key, (_, steps, _) in ({} if short else SAMPLERS).items():
        case[f"chain_noise.{key}"] = rng.standard_normal((steps,) + shape).astype(np.float32)
    if _conditional(unet):
        case["y"] = rng.integers(0, unet.num_classes, size=(n_steps, batch)).astype(np.int64)
        case["y_sample"] = rng.integers(0, unet.num_classes, size=batch).astype(np.int64)
        if unet.class_dropout > 0:
            drop = rng.random((n_steps, batch)) < unet.class_dropout
            drop[0, 0], drop[0, 1] = True, False  # the gradients see both kinds of row
            case["drop"] = drop
            for key, (_, steps, _) in ({} if short else CFG_SAMPLERS).items():
                case[f"chain_noise.{key}"] = rng.standard_normal((steps,) + shape).astype(
                    np.float32)
    case["specs"] = np.array(json.dumps(specs_dict(unet, diffusion, optim)))
    return case


def run_case(framework, case):
    """Everything the tests compare, computed by one framework. Returns name -> array."""
    from models.registry import load_backend

    specs = json.loads(str(case["specs"]))
    unet, diffusion = model_spec(specs), DiffusionSpec(**specs["diffusion"])
    optim = OptimSpec(**specs["optim"])
    # DIFFBENCH_PARITY_DEVICE=cuda: the same check on the GPU (harness.py gpu-check).
    be = load_backend(framework)(unet, diffusion, optim, seed=0,
                                 device=os.environ.get("DIFFBENCH_PARITY_DEVICE", "cpu"))
    weights = {k[2:]: v for k, v in case.items() if k.startswith("w.")}
    be.load_weights(weights)
    # Loading then exporting must give back the canonical weights bit for bit.
    exported = be.export_weights()
    out = {"roundtrip_max_abs_diff": np.array(max(
        float(np.max(np.abs(exported[k] - weights[k]))) for k in weights))}

    # a class-conditional DiT's labels (step i) and label-dropout masks; nothing for a UNet
    def labels(i):
        return {"y": case["y"][i], "drop": case["drop"][i] if "drop" in case else None} \
            if "y" in case else {}

    forward_y = {"y": case["y"][0]} if "y" in case else {}
    sample_y = {"y": case["y_sample"]} if "y" in case else {}
    x0, t, noise = be.to_device(case["x0"][0]), case["t"][0], be.to_device(case["noise"][0])
    out["forward"] = be.to_numpy(be.eps(x0, t, **forward_y))
    loss, grads = be.loss_and_grads(x0, t, noise, **labels(0))
    out["loss"] = np.array(loss)
    out.update({f"grad.{k}": v for k, v in grads.items()})
    chains = {k: v for k, v in dict(SAMPLERS, **CFG_SAMPLERS).items()
              if f"chain_noise.{k}" in case}   # none in a short case
    for key, (sampler, steps, eta) in chains.items():
        plan = sampler_plan(diffusion, sampler, steps=steps, eta=eta)
        noises = [be.to_device(n) for n in case[f"chain_noise.{key}"]]
        cfg = {"cfg_scale": CFG_SCALE} if key in CFG_SAMPLERS else {}
        out[key] = be.to_numpy(be.sample(be.to_device(case["x_T"]), plan, noises, ema=False,
                                         **sample_y, **cfg))
    losses = []
    for i in range(len(case["x0"])):
        step_loss = be.train_step(be.to_device(case["x0"][i]), case["t"][i],
                                  be.to_device(case["noise"][i]), **labels(i))
        losses.append(be.loss_value(step_loss))
    out["train_losses"] = np.array(losses)
    out.update({f"params_after_steps.{k}": v for k, v in be.export_weights().items()})
    out.update({f"ema_after_steps.{k}": v for k, v in be.export_weights(ema=True).items()})
    return out


def describe(framework, unet, forward=False):
    """Parameter name -> shape of the framework's model for `unet` (a UNetSpec or DiTSpec),
    and optionally the shape of a forward pass on one zero image (checks the model runs at
    that size)."""
    from models.registry import load_backend

    be = load_backend(framework)(unet, DiffusionSpec(), OptimSpec(ema_decay=0), device="cpu")
    info = {"shapes": {k: list(v.shape) for k, v in be.export_weights().items()}}
    if forward:
        x = be.to_device(np.zeros((1, unet.in_channels, unet.image_size, unet.image_size)))
        y = {"y": np.array([0])} if _conditional(unet) else {}
        info["forward_shape"] = list(be.to_numpy(be.eps(x, np.array([10]), **y)).shape)
    return info


def rel_error(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (denom if denom > 0 else 1.0))


_TRAINED = ("grad.", "params_after_steps.", "ema_after_steps.")


def analytically_inert(key):
    """Attention key biases add the same q.b_k to every logit of a softmax row, which the
    softmax cancels: their true gradient is exactly 0 and both frameworks return float noise
    (~1e-9) there, which Adam then normalises into lr-sized steps in random directions.
    Relative error is meaningless for them; `inert_gradients_are_zero` checks them instead.
    The DiT's key bias is the middle third of each qkv bias: `_split_inert`."""
    return key.endswith(".k.bias") and key.startswith(_TRAINED)


def _split_inert(key, arr):
    """(the comparable part, the inert part) of a tensor: a DiT's attn.qkv.bias is [q; k; v]
    biases, whose k third is inert (see analytically_inert)."""
    if key.endswith(".attn.qkv.bias") and key.startswith(_TRAINED):
        d = arr.shape[0] // 3
        return np.concatenate([arr[:d], arr[2 * d:]]), arr[d:2 * d]
    return arr, None


def inert_gradients_are_zero(out, rtol=1e-5):
    """The inert gradients are ~0 relative to the whole gradient's norm."""
    total = np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for k, v in out.items() if k.startswith("grad.")))
    inert = [np.linalg.norm(v) for k, v in out.items() if k.startswith("grad.") and analytically_inert(k)]
    inert += [np.linalg.norm(_split_inert(k, v)[1]) for k, v in out.items()
              if k.startswith("grad.") and _split_inert(k, v)[1] is not None]
    return max(inert, default=0.0) <= rtol * total


def compare(a, b):
    """Per category, the worst relative error (and which tensor it was)."""
    worst = {}
    for key in b:
        if analytically_inert(key) or key == "roundtrip_max_abs_diff":
            continue
        cat = key.split(".", 1)[0]
        cat = "loss" if cat == "train_losses" else cat
        err = rel_error(_split_inert(key, a[key])[0], _split_inert(key, b[key])[0])
        if cat not in worst or err > worst[cat][0]:
            worst[cat] = (err, key)
    return worst


def _save(path, arrays):
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def run_in_subprocess(framework, case_path, out_path):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "models.parity", "run", "--framework", framework,
                           "--case", case_path, "--out", out_path],
                          cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.exists(out_path):
        raise RuntimeError(f"{framework} parity run failed (rc={proc.returncode}):\n"
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    return _load(out_path)


def without_dropout(unet):
    """The UNet a check compares: dropout off. Each framework draws its own dropout masks
    (their RNGs differ), so with dropout on only the forward pass and the parameters after
    a step of lr-warm-up size would agree; the masks are not the model. The record keeps the
    configured spec (its report finds it) and says so (`dropout_note`)."""
    if isinstance(unet, UNetSpec) and unet.dropout > 0:
        return UNetSpec(**dict(unet.to_dict(), dropout=0.0))
    return unet


def dropout_note(unet):
    return (f"dropout {unet.dropout:g} set to 0 for the check: each framework draws its own "
            "masks") if without_dropout(unet) is not unet else None


def default_frameworks():
    """torch (the reference) and every other framework installed here."""
    from models.registry import installed_frameworks

    return ("torch",) + tuple(fw for fw in installed_frameworks() if fw != "torch")


def check(frameworks=None, seed=0, workdir=None, specs=None, short=False):
    """Make a case, run it in each framework's own process, return (outputs, worst errors).
    frameworks: the first is the reference (default: torch, then every other installed one);
    specs: (UNetSpec, DiffusionSpec, OptimSpec) to check instead of the tiny default;
    short: make_case's short case (no chains, one Adam step)."""
    frameworks = tuple(frameworks or default_frameworks())
    workdir = workdir or tempfile.mkdtemp(prefix="diffbench-parity-")
    case_path = os.path.join(workdir, "case.npz")
    unet, diffusion, optim = specs or (TINY_UNET, TINY_DIFFUSION, TINY_OPTIM)
    _save(case_path, make_case(seed, without_dropout(unet), diffusion, optim, short=short))
    outs = {fw: run_in_subprocess(fw, case_path, os.path.join(workdir, f"{fw}.npz"))
            for fw in frameworks}
    ref = outs[frameworks[0]]
    return outs, {fw: compare(outs[fw], ref) for fw in frameworks[1:]}


# Where `check` records its verdicts, one file per settings (the report's headline reads the
# one for its run's model, diffusion and optimiser): results/parity/<settings key>.json.
# DIFFBENCH_PARITY_DIR moves it (the tests keep their records out of the checkout).
DEFAULT_RECORD_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "results", "parity")


def record_dir():
    return os.environ.get("DIFFBENCH_PARITY_DIR") or DEFAULT_RECORD_DIR


def settings_key(unet, diffusion, optim):
    """A short hash of the settings a parity case depends on."""
    import hashlib

    text = json.dumps(specs_dict(unet, diffusion, optim), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_path(unet, diffusion, optim, folder=None):
    return os.path.join(folder or record_dir(),
                        f"parity-{settings_key(unet, diffusion, optim)}.json")


def verdicts(errors):
    """{framework: {category: {error, tensor, tolerance, ok}}} and whether all are ok."""
    out, passed = {}, True
    for fw, worst in errors.items():
        out[fw] = {}
        for cat, (err, key) in sorted(worst.items()):
            tol = tolerance(cat)
            ok = tol is None or err <= tol
            passed &= ok
            out[fw][cat] = {"error": err, "tensor": key, "tolerance": tol, "ok": ok}
    return out, passed


def write_record(path, specs, seed, errors, short=False):
    """The verdicts of one check, written atomically; returns the record."""
    from datetime import datetime, timezone

    unet, diffusion, optim = specs
    table, passed = verdicts(errors)
    rec = {"settings_key": settings_key(unet, diffusion, optim), "seed": seed,
           "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "passed": passed, "reference": "torch", "errors": table,
           "checked": "short: forward, loss, gradients, one Adam step" if short else
           f"whole: forward, loss, gradients, {OPT_STEPS} Adam steps, sampling chains",
           "note": dropout_note(unet),
           "specs": specs_dict(unet, diffusion, optim)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(rec, f, indent=2)
    os.replace(tmp, path)
    return rec


def read_record(unet, diffusion, optim, folder=None):
    """The last recorded check for these settings, or None."""
    try:
        with open(record_path(unet, diffusion, optim, folder)) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m models.parity", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a case in one framework")
    r.add_argument("--framework", required=True)
    r.add_argument("--case", required=True)
    r.add_argument("--out", required=True)
    d = sub.add_parser("describe", help="print a framework's parameter shapes for a UNet or "
                       "DiT spec")
    d.add_argument("--framework", required=True)
    which = d.add_mutually_exclusive_group(required=True)
    which.add_argument("--unet", help="UNetSpec fields as JSON")
    which.add_argument("--dit", help="DiTSpec fields as JSON")
    d.add_argument("--forward", action="store_true")
    c = sub.add_parser("check", help="run a fresh case in torch and every other installed "
                       "framework, and compare")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--frameworks", help="comma-separated frameworks compared with torch "
                   "(default: every installed one)")
    c.add_argument("--specs", help="JSON {unet, diffusion, optim} to check instead of the "
                   "tiny default (harness.py parity --config builds it from a config); "
                   "{dit, diffusion, optim} checks a DiT")
    c.add_argument("--dit", action="store_true",
                   help="check the tiny class-conditional DiT (TINY_DIT) instead of the UNet")
    c.add_argument("--short", action="store_true",
                   help="forward, loss, gradients and one Adam step only (no sampling "
                        "chains): the check of each sweep point")
    c.add_argument("--record-dir", default=None,
                   help="where the verdict is recorded (default results/parity/, or "
                        "$DIFFBENCH_PARITY_DIR)")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        _save(args.out, run_case(args.framework, _load(args.case)))
        return 0
    if args.cmd == "describe":
        spec = DiTSpec(**json.loads(args.dit)) if args.dit else UNetSpec(**json.loads(args.unet))
        print(json.dumps(describe(args.framework, spec, args.forward)))
        return 0
    specs = (TINY_DIT if args.dit else TINY_UNET, TINY_DIFFUSION, TINY_OPTIM)
    if args.specs:
        d = json.loads(args.specs)
        specs = (model_spec(d), DiffusionSpec(**d["diffusion"]), OptimSpec(**d["optim"]))
    frameworks = None
    if args.frameworks:
        from models.registry import FRAMEWORKS, installed, installed_frameworks

        wanted = [f for f in args.frameworks.split(",") if f]
        bad = [f for f in wanted if f not in FRAMEWORKS]
        if bad:
            ap.error(f"--frameworks: {bad} unknown; valid: {list(FRAMEWORKS)}")
        missing = [f for f in wanted if not installed(f)]
        if missing:
            ap.error(f"--frameworks: {missing} not installed here; installed: "
                     f"{list(installed_frameworks())}")
        frameworks = ["torch"] + [f for f in wanted if f != "torch"]
    _, errors = check(frameworks, seed=args.seed, specs=specs, short=args.short)
    rec = write_record(record_path(*specs, args.record_dir), specs, args.seed, errors,
                       short=args.short)
    for fw, table in rec["errors"].items():
        print(f"{fw} vs torch (relative error ||a-b||/||b||, worst tensor per category):")
        for cat, v in table.items():
            tol = v["tolerance"]
            print(f"  {cat:20s} {v['error']:10.3e}  tol {tol if tol else '-':>8}  "
                  f"{'ok' if v['ok'] else 'FAIL'}  ({v['tensor']})")
    print(f"recorded: {record_path(*specs, args.record_dir)}")
    return 0 if rec["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
