"""Training data for the workloads: the configured images, the split, and the two loaders.

- The **shared** loader makes every batch, timestep vector and noise tensor in numpy from the
  seed, so each framework sees exactly the same numbers (loss curves are comparable step by
  step); the worker moves them with `backend.to_device`.
- The **native** loader is the framework's own pipeline (`backend.native_loader`: torch
  DataLoader / Jittor Dataset); timesteps still come from numpy, noise from the framework RNG.

Images are uint8 (N, H, W, C) everywhere until a loader turns a batch into float32
(B, C, H, W) in [-1, 1].
"""
import numpy as np

from bench.data.datasets import load_dataset, random_hflip, to_model_range, train_val_split

SPLIT_SEED_OFFSET = 1  # separate streams: data generation, split, batches, validation
BATCH_SEED_OFFSET = 2
VAL_SEED_OFFSET = 3


def load_images(data_cfg, image_size, channels, seed=0):
    """All images of the configured source, uint8 (N, H, W, C), capped at num_samples.

    Reading files is bench/data/datasets.py's job (real formats, search order); this only picks
    the source, checks the shape the model needs and takes a seeded subset.
    """
    source, n = data_cfg["source"], data_cfg["num_samples"]
    if source == "synthetic":
        images = load_dataset("synthetic", None, "train", image_size=image_size,
                              channels=channels, count=n, seed=seed)
    else:
        images = load_dataset(source, data_cfg["path"], "train", image_size=image_size,
                              channels=channels)
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"data.source={source}: reader returned {images.dtype} {images.shape}; "
                         "expected uint8 (N, H, W, C)")
    if images.shape[1:] != (image_size, image_size, channels):
        raise ValueError(f"data.source={source}: images are {images.shape[1:]} (H, W, C) but the "
                         f"model wants ({image_size}, {image_size}, {channels})")
    if n is not None and n < len(images):
        keep = np.random.default_rng(seed).choice(len(images), size=n, replace=False)
        images = images[np.sort(keep)]
    return images


def split(images, val_fraction, seed=0):
    """(train, val): a seeded held-out split, identical for every framework."""
    return train_val_split(images, val_fraction, seed + SPLIT_SEED_OFFSET)


class SharedBatches:
    """Infinite stream of (x0, t, noise) numpy batches from one seeded generator.

    Epochs are reshuffled permutations of the training split (drop_last); t is uniform in
    [0, T) as in DDPM training; noise is standard normal float32.
    """

    def __init__(self, images, batch_size, timesteps, seed=0, hflip=False):
        if len(images) < batch_size:
            raise ValueError(f"train.batch_size={batch_size} exceeds the {len(images)} "
                             "training images")
        self.images, self.batch_size, self.timesteps = images, batch_size, timesteps
        self.hflip = hflip
        self.rng = np.random.default_rng(seed + BATCH_SEED_OFFSET)
        self._order, self._pos = None, 0

    def _next_indices(self):
        if self._order is None or self._pos + self.batch_size > len(self._order):
            self._order, self._pos = self.rng.permutation(len(self.images)), 0
        idx = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx

    def state(self):
        """Where the stream is, as JSON-able data (checkpoints save it: exact resume)."""
        return {"rng": self.rng.bit_generator.state, "pos": self._pos,
                "order": None if self._order is None else self._order.tolist()}

    def set_state(self, state):
        self.rng.bit_generator.state = state["rng"]
        self._pos = state["pos"]
        self._order = None if state["order"] is None else np.asarray(state["order"], np.int64)

    def __iter__(self):
        return self

    def __next__(self):
        batch = self.images[self._next_indices()]
        if self.hflip:
            batch = random_hflip(batch, self.rng)
        x0 = to_model_range(batch)
        t = self.rng.integers(0, self.timesteps, size=self.batch_size, dtype=np.int64)
        noise = self.rng.standard_normal(x0.shape, dtype=np.float32)
        return x0, t, noise


class NativeBatches:
    """Infinite stream of (x0 on device, t numpy, noise=None) from the framework's loader.

    The loader object is re-iterated at the end of each pass (so persistent_workers matters,
    as in a real training loop); timesteps come from numpy like the shared loader's.
    """

    def __init__(self, backend, images, batch_size, timesteps, seed=0, num_workers=0,
                 pin_memory=False, persistent_workers=False):
        self.backend, self.batch_size, self.timesteps = backend, batch_size, timesteps
        self.loader = backend.native_loader(
            images, batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
            pin_memory=pin_memory, persistent_workers=persistent_workers, seed=seed)
        self.rng = np.random.default_rng(seed + BATCH_SEED_OFFSET)
        self._it = None

    def __iter__(self):
        return self

    def _next_batch(self):
        for _ in range(2):  # one retry: the end of a pass starts the next one
            if self._it is None:
                self._it = iter(self.loader)
            try:
                return next(self._it)
            except StopIteration:
                self._it = None
        raise RuntimeError("the native loader yielded no batch (fewer images than batch_size?)")

    def __next__(self):
        x0 = self._next_batch()
        if isinstance(x0, (tuple, list)):  # loaders that yield (images, labels)
            x0 = x0[0]
        if isinstance(x0, np.ndarray):  # a loader that kept numpy arrays
            x0 = self.backend.to_device(x0)
        t = self.rng.integers(0, self.timesteps, size=self.batch_size, dtype=np.int64)
        return x0, t, None


def validation_batches(val_images, batch_size, n_batches, timesteps, seed=0):
    """Fixed (x0, t, noise) numpy batches: the same every epoch and for every framework, so the
    validation loss measures the model, not the draw."""
    rng = np.random.default_rng(seed + VAL_SEED_OFFSET)
    out = []
    for i in range(n_batches):
        idx = (np.arange(batch_size) + i * batch_size) % len(val_images)
        x0 = to_model_range(val_images[idx])
        t = rng.integers(0, timesteps, size=batch_size, dtype=np.int64)
        noise = rng.standard_normal(x0.shape, dtype=np.float32)
        out.append((x0, t, noise))
    return out


LABEL_SEED_OFFSET = 4


class BenchmarkLabels:
    """Class labels for a class-conditional model (a DiT with num_classes > 0): seeded
    numpy draws, the same in every framework, and the label-dropout masks with them (numpy
    too, so both frameworks drop the same labels, as the parity check does). A speed
    benchmark needs labels of the right shape and distribution, not true ones: the synthetic
    images have no classes, and no loader carries labels (docs/DIT.md "In the harness").

    Each call returns the backend's keyword arguments for one batch; data-parallel cells
    draw the global batch's labels and keep their rank's rows (as RankSlice does)."""

    def __init__(self, num_classes, class_dropout, seed=0, rank=0, world_size=1):
        self.num_classes, self.class_dropout = num_classes, class_dropout
        self.rank, self.world_size = rank, world_size
        self.rng = np.random.default_rng(seed + LABEL_SEED_OFFSET)

    def train(self, batch_size):
        """{y, drop} for a training step of the global batch size."""
        y = self.rng.integers(0, self.num_classes, size=batch_size, dtype=np.int64)
        drop = self.rng.random(batch_size) < self.class_dropout if self.class_dropout else None
        part = rank_rows(batch_size, self.rank, self.world_size)
        return {"y": y[part], "drop": None if drop is None else drop[part]}

    def sample(self, batch_size, cfg_scale=None):
        """{y[, cfg_scale]} for a sampling chain (or a validation batch: no guidance)."""
        y = self.rng.integers(0, self.num_classes, size=batch_size, dtype=np.int64)
        return {"y": y, **({"cfg_scale": cfg_scale} if cfg_scale is not None else {})}


def benchmark_labels(spec, seed=0, rank=0, world_size=1):
    """BenchmarkLabels for a class-conditional spec, else None (the UNet, an unconditional
    DiT: no labels)."""
    classes = getattr(spec, "num_classes", 0)
    if not classes:
        return None
    return BenchmarkLabels(classes, spec.class_dropout, seed, rank, world_size)


def rank_rows(batch_size, rank, world_size):
    """Rows [rank * B/N, (rank + 1) * B/N) of a global batch: a rank's share."""
    n = batch_size // world_size
    return slice(rank * n, (rank + 1) * n)


class RankSlice:
    """A rank's share of a stream of global (x0, t, noise) numpy batches: rows
    [rank * B/N, (rank + 1) * B/N) of each (data-parallel cells, docs/DISTRIBUTED.md)."""

    def __init__(self, batches, rank, world_size):
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __iter__(self):
        return self

    def __next__(self):
        x0, t, noise = next(self.batches)
        part = rank_rows(len(t), self.rank, self.world_size)
        return x0[part], t[part], None if noise is None else noise[part]
