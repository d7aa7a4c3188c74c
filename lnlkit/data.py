"""Data sets: CIFAR-10/100, CIFAR-10N/100N human labels, and small embedded sets.

Every loader returns :class:`LabelledData` splits. Images are stored once as uint8
arrays of shape (N, H, W, C); tabular inputs (two moons) as float32 (N, D).

Where data comes from, in order:

1. the data roots: ``$LNLKIT_DATA`` (one folder, or several separated by ``os.pathsep``)
   and the cache folder (``$LNLKIT_CACHE``, default ``~/.cache/lnlkit``);
2. for CIFAR-10, the offline JPEG archive ``cifar10-jpeg.tar.gz`` under a data root
   (decoded once, cached as arrays);
3. the official download (torchvision's CIFAR archives, the CIFAR-N label files from
   their authors) into the cache folder.

When nothing is found and nothing can be downloaded, :class:`DataUnavailableError`
names the files and where to put them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .files import atomic_write, cache_dir, check_writable, digest

CIFAR10_JPEG_ARCHIVE = "cifar10-jpeg.tar.gz"
CIFAR10_JPEG_SHA256 = "89c58f4846e1f187375c2534522821d7943a1bb21e5620c0e565139a6c3da2f1"
CIFAR_N_URL = "https://raw.githubusercontent.com/UCSC-REAL/cifar-10-100n/main/data/{}"
CIFAR_N_FILES = {"cifar10": "CIFAR-10_human.pt", "cifar100": "CIFAR-100_human.pt"}
CIFAR_N_SHA256 = {  # the files as published by CIFAR-N's authors
    "CIFAR-10_human.pt": "873e69c39cb9b5e97fb6bae2d60bb59b38a5cbc31d2b868f7903dcb2b9dd2310",
    "CIFAR-100_human.pt": "bd2d80409754d420292d622e15e25248ba21e37d27429efac49c8da723f44394",
}
# Label-set names used across lnlkit -> (data set, key in the CIFAR-N file).
CIFAR_N_LABEL_SETS = {
    "aggre": ("cifar10", "aggre_label"),
    "random1": ("cifar10", "random_label1"),
    "random2": ("cifar10", "random_label2"),
    "random3": ("cifar10", "random_label3"),
    "worst": ("cifar10", "worse_label"),
    "noisy100": ("cifar100", "noisy_label"),
}
DATASETS = ("cifar10", "cifar100", "digits", "moons")


class DataUnavailableError(RuntimeError):
    """Raised when a data set is neither on disk nor downloadable; the message says what to fetch."""


@dataclass
class LabelledData:
    """One split of a data set: inputs, clean labels, class names and, once noise is drawn, noisy labels.

    ``labels`` are always the clean labels. A training split carries ``noisy_labels`` too
    (see :meth:`with_noisy_labels`); methods train on those, and the clean ones serve only to
    measure (label precision, noise detection).
    """

    inputs: np.ndarray  # uint8 (N, H, W, C) images, or float32 (N, D) features
    labels: np.ndarray  # int64 (N,) clean labels
    classes: list[str]
    name: str
    source: str  # where the data came from, e.g. "CIFAR-10 JPEG mirror"
    meta: dict = field(default_factory=dict)
    noisy_labels: np.ndarray | None = None  # int64 (N,) when noise has been drawn

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.inputs) != len(self.labels):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.labels)} labels")
        if self.noisy_labels is not None:
            self.noisy_labels = np.asarray(self.noisy_labels, dtype=np.int64)
            if self.noisy_labels.shape != self.labels.shape:
                raise ValueError(f"{len(self.noisy_labels)} noisy labels for {len(self.labels)} samples")

    def with_noisy_labels(self, noisy_labels) -> "LabelledData":
        """The same samples with noisy labels attached (drawn on this whole split)."""
        return LabelledData(self.inputs, self.labels, self.classes, self.name, self.source, dict(self.meta),
                            np.asarray(noisy_labels))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_image(self) -> bool:
        return self.inputs.ndim == 4

    def subset(self, indices) -> "LabelledData":
        indices = np.asarray(indices)
        noisy = None if self.noisy_labels is None else self.noisy_labels[indices]
        return LabelledData(self.inputs[indices], self.labels[indices], self.classes,
                            self.name, self.source, dict(self.meta), noisy)

    def digest(self, noisy: bool = True) -> str:
        """A digest of the inputs, clean labels and (with ``noisy``) noisy labels: what cached stages key on."""
        return digest(self.inputs, self.labels,
                      self.noisy_labels if noisy and self.noisy_labels is not None else b"")

    def flat_pixels_chw(self) -> np.ndarray:
        """Inputs flattened per sample; images in CHW order as float 0-255 (Xia et al.'s x)."""
        if self.is_image:
            return self.inputs.transpose(0, 3, 1, 2).reshape(len(self), -1)
        return self.inputs.reshape(len(self), -1)


@dataclass
class DataSplits:
    train: LabelledData
    test: LabelledData


# ---------------------------------------------------------------- paths


def data_roots() -> list[Path]:
    """Folders searched for data, in order: $LNLKIT_DATA entries, then the cache folder."""
    roots = [Path(p) for p in os.environ.get("LNLKIT_DATA", "").split(os.pathsep) if p]
    return roots + [cache_dir()]


def find_file(*relative_candidates: str) -> Path | None:
    for root in data_roots():
        for rel in relative_candidates:
            if (root / rel).exists():
                return root / rel
    return None


def _roots_text() -> str:
    return ", ".join(str(r) for r in data_roots())


# ---------------------------------------------------------------- safe unpickling

# The only globals the CIFAR python batches and the CIFAR-N label files need.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays and plain containers, and refuses anything else."""

    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            import importlib

            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a pickle")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a pickle that references tensor storages")


def safe_load_pickle(path: str | Path, encoding: str = "ASCII"):
    """Load a pickle (plain, or inside a ``torch.save`` zip) without executing arbitrary code."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            member = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            payload = archive.read(member)
    else:
        payload = path.read_bytes()
    return _RestrictedUnpickler(io.BytesIO(payload), encoding=encoding).load()


# ---------------------------------------------------------------- CIFAR


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_decoded(cached: Path) -> dict | None:
    """The decoded arrays, or None (and the file removed) when the cache is damaged."""
    try:
        with np.load(cached) as z:
            arrays = {k: z[k] for k in z.files} | {"classes": [str(c) for c in z["classes"]]}
        if arrays["train_x"].shape == (50000, 32, 32, 3) and arrays["test_x"].shape == (10000, 32, 32, 3):
            return arrays
    except Exception:  # truncated or foreign: decoded again below
        pass
    cached.unlink(missing_ok=True)
    return None


def _decode_cifar10_jpeg(archive: Path) -> dict:
    """Decode the JPEG mirror once (after checking it is the known, complete archive); cache the arrays."""
    checksum = _sha256(archive)
    cached = cache_dir() / f"cifar10-jpeg-{checksum[:12]}.npz"
    if cached.exists() and (arrays := _load_decoded(cached)) is not None:
        return arrays
    if checksum != CIFAR10_JPEG_SHA256:
        raise DataUnavailableError(
            f"{archive} is not the complete CIFAR-10 JPEG archive (its sha256 is {checksum[:16]}..., the "
            f"published one {CIFAR10_JPEG_SHA256[:16]}...): it is damaged or incomplete; copy it again.")
    check_writable(cache_dir(), "cache folder", "point LNLKIT_CACHE at a writable folder")
    from PIL import Image
    from tqdm import tqdm

    images = {"train": np.empty((50000, 32, 32, 3), np.uint8), "test": np.empty((10000, 32, 32, 3), np.uint8)}
    filled = {"train": np.zeros(50000, bool), "test": np.zeros(10000, bool)}
    meta = None
    try:
        with tarfile.open(archive) as tar:
            for member in tqdm(tar, total=60001, desc="decoding CIFAR-10 JPEG mirror", mininterval=2,
                               disable=None):
                if member.name.endswith("labels.json"):
                    meta = json.load(tar.extractfile(member))
                elif member.name.endswith(".jpg"):
                    split, stem = member.name.split("/")[-2:]
                    img = Image.open(tar.extractfile(member)).convert("RGB")
                    images[split][int(stem[:-4])] = np.asarray(img)
                    filled[split][int(stem[:-4])] = True
    except (tarfile.TarError, EOFError, OSError, ValueError, KeyError) as error:
        raise DataUnavailableError(f"{archive} cannot be read ({type(error).__name__}: {error}); copy it again.") \
            from None
    found = int(filled["train"].sum() + filled["test"].sum())
    if meta is None or found < 60000:  # never cache (or use) a partial decode
        raise DataUnavailableError(f"{archive} is incomplete: {found:,} of 60,000 images"
                                   + ("" if meta else " and no labels.json") + "; copy it again.")
    arrays = {
        "train_x": images["train"], "train_y": np.asarray(meta["train_labels"], np.int64),
        "test_x": images["test"], "test_y": np.asarray(meta["test_labels"], np.int64),
        "classes": np.asarray(meta["classes"]),
    }
    with atomic_write(cached, suffix=".npz") as tmp:  # an interrupted decode leaves no half-written cache
        np.savez(tmp, **arrays)
    return arrays | {"classes": list(meta["classes"])}


def _read_cifar_batches(folder: Path, train_files, test_file, label_key, meta_file, names_key):
    def read(name):
        batch = safe_load_pickle(folder / name, encoding="latin1")
        x = np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return x, np.asarray(batch[label_key], np.int64)

    parts = [read(f) for f in train_files]
    test_x, test_y = read(test_file)
    classes = list(safe_load_pickle(folder / meta_file, encoding="latin1")[names_key])
    return {"train_x": np.concatenate([p[0] for p in parts]), "train_y": np.concatenate([p[1] for p in parts]),
            "test_x": test_x, "test_y": test_y, "classes": classes}


_CIFAR_LAYOUT = {
    "cifar10": dict(folder="cifar-10-batches-py", train_files=[f"data_batch_{i}" for i in range(1, 6)],
                    test_file="test_batch", label_key="labels", meta_file="batches.meta", names_key="label_names"),
    "cifar100": dict(folder="cifar-100-python", train_files=["train"], test_file="test",
                     label_key="fine_labels", meta_file="meta", names_key="fine_label_names"),
}


def _download_cifar(name: str) -> Path:
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import download_and_extract_archive

    spec = CIFAR10 if name == "cifar10" else CIFAR100
    download_and_extract_archive(spec.url, str(cache_dir()), filename=spec.filename, md5=spec.tgz_md5)
    return cache_dir() / _CIFAR_LAYOUT[name]["folder"]


def load_cifar(name: str = "cifar10", download: bool = True) -> DataSplits:
    """CIFAR-10 or CIFAR-100: official python batches, else the JPEG mirror (CIFAR-10), else download."""
    if name not in _CIFAR_LAYOUT:
        raise ValueError(f"unknown CIFAR data set {name!r}; choose 'cifar10' or 'cifar100'")
    layout = dict(_CIFAR_LAYOUT[name])
    folder = find_file(layout.pop("folder"))
    archive = find_file(CIFAR10_JPEG_ARCHIVE) if name == "cifar10" else None
    if folder is not None:
        arrays, source = _read_cifar_batches(folder, **layout), f"{name.upper()} official python batches"
    elif archive is not None:
        arrays, source = _decode_cifar10_jpeg(archive), "CIFAR-10 JPEG mirror"
    else:
        try:
            if not download:
                raise OSError("download disabled")
            arrays, source = _read_cifar_batches(_download_cifar(name), **layout), f"{name.upper()} official python batches"
        except Exception as err:  # no network, disk full, ...: one clear message instead
            raise DataUnavailableError(
                f"{name.upper()} was not found and could not be downloaded ({type(err).__name__}: {err}).\n"
                f"Put the official '{_CIFAR_LAYOUT[name]['folder']}/' folder"
                + (f" or the offline archive '{CIFAR10_JPEG_ARCHIVE}'" if name == "cifar10" else "")
                + f" into one of: {_roots_text()} (set LNLKIT_DATA to add a folder)."
            ) from None
    classes = [str(c) for c in arrays["classes"]]
    return DataSplits(LabelledData(arrays["train_x"], arrays["train_y"], classes, name, source),
                      LabelledData(arrays["test_x"], arrays["test_y"], classes, name, source))


def load_cifar_n(label_set: str, download: bool = True) -> dict[str, np.ndarray]:
    """Human noisy labels of CIFAR-10N/100N by name ('aggre', 'random1'-'random3', 'worst', 'noisy100').

    Returns ``{"noisy": ..., "clean": ...}`` in canonical CIFAR train order.
    """
    if label_set not in CIFAR_N_LABEL_SETS:
        raise ValueError(f"unknown label set {label_set!r}; choose from {sorted(CIFAR_N_LABEL_SETS)}")
    dataset, key = CIFAR_N_LABEL_SETS[label_set]
    filename = CIFAR_N_FILES[dataset]
    path = find_file(filename, f"cifar-10n/{filename}", f"cifar-n/{filename}")
    if path is None:
        path = cache_dir() / filename
        try:
            if not download:
                raise OSError("download disabled")
            with urllib.request.urlopen(CIFAR_N_URL.format(filename), timeout=30) as response:
                payload = response.read()
            if hashlib.sha256(payload).hexdigest() != CIFAR_N_SHA256[filename]:
                raise OSError("the downloaded file does not match the published sha256")
            with atomic_write(path) as tmp:  # verified first, then moved into place
                tmp.write_bytes(payload)
        except Exception as err:
            raise DataUnavailableError(
                f"The CIFAR-N label file '{filename}' was not found and could not be downloaded "
                f"({type(err).__name__}: {err}).\nDownload it from {CIFAR_N_URL.format(filename)} and put it into "
                f"one of: {_roots_text()} (or a 'cifar-10n/' folder inside one)."
            ) from None
    if (checksum := _sha256(path)) != CIFAR_N_SHA256[filename]:
        raise DataUnavailableError(
            f"{path} is not the published CIFAR-N file (sha256 {checksum[:16]}..., expected "
            f"{CIFAR_N_SHA256[filename][:16]}...): it is damaged or was replaced; download it again from "
            f"{CIFAR_N_URL.format(filename)}.")
    table = safe_load_pickle(path)
    return {"noisy": np.asarray(table[key], np.int64), "clean": np.asarray(table["clean_label"], np.int64),
            "file": str(path)}


# ---------------------------------------------------------------- embedded smoke-profile data


def canonical_order(images: np.ndarray) -> np.ndarray:
    """An order of ``images`` that depends on their content only, not on how they were split or shuffled.

    A stage that learns from the images alone (SimCLR) sorts them this way, so that every
    split of the same images (another noise rate draws another validation split) reuses one
    cached result. Identical images may tie; their order cannot change the content.
    """
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    keys = np.array([hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in flat], dtype="S8")
    return np.argsort(keys, kind="stable")


def split_indices(strata: np.ndarray, size: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices (rest, split off) with ``size`` (a fraction or a count) split off, stratified by ``strata``.

    The one split function of lnlkit: the digits train/test split, the clean held-out split
    and the noisy validation split all use it.
    """
    from sklearn.model_selection import train_test_split

    if isinstance(size, float) and not 0.0 < size < 1.0:
        raise ValueError(f"a split fraction must lie in (0, 1), got {size}")
    rest, held = train_test_split(np.arange(len(strata)), test_size=size, stratify=strata, random_state=seed)
    return np.sort(rest), np.sort(held)


def hold_out(data: LabelledData, fraction: float, seed: int = 0) -> tuple[LabelledData, LabelledData]:
    """Split ``data`` into (rest, held-out), the held-out part stratified by clean class (proxy external knowledge).

    Noise drawn before the split stays attached to each sample, so an image keeps its noisy
    label whether or not a part is held out.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must lie in (0, 1), got {fraction}")
    rest, held = split_indices(data.labels, float(fraction), seed)
    return data.subset(rest), data.subset(held)


def validation_split(data: LabelledData, fraction: float, seed: int = 0) -> tuple[LabelledData, LabelledData]:
    """Split a noisy training set into (train, validation), stratified by the *noisy* label (all one observes)."""
    if data.noisy_labels is None:
        raise ValueError("a validation split is made from noisy labels: attach them first (with_noisy_labels)")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must lie in (0, 1), got {fraction}")
    rest, val = split_indices(data.noisy_labels, float(fraction), seed)
    return data.subset(rest), data.subset(val)


def load_digits() -> DataSplits:
    """scikit-learn's 8x8 handwritten digits as 1-channel uint8 images; fixed 1200/597 split."""
    from sklearn.datasets import load_digits as sk_digits

    raw = sk_digits()
    images = np.round(raw.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (1797, 8, 8, 1)
    train_idx, test_idx = split_indices(raw.target, 597, seed=0)
    classes = [str(c) for c in range(10)]
    full = LabelledData(images, raw.target, classes, "digits", "scikit-learn digits (embedded)")
    return DataSplits(full.subset(train_idx), full.subset(test_idx))


def load_moons(n_train: int = 1000, n_test: int = 1000, noise: float = 0.15, seed: int = 0) -> DataSplits:
    """Two moons (scikit-learn), 2-D float features; the data set of CausalNL's Fig. 2."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n_train + n_test, noise=noise, random_state=seed)
    full = LabelledData(x.astype(np.float32), y, ["upper moon", "lower moon"], "moons",
                        f"scikit-learn make_moons(noise={noise}, random_state={seed})")
    return DataSplits(full.subset(np.arange(n_train)), full.subset(np.arange(n_train, n_train + n_test)))


def load_dataset(name: str, download: bool = True) -> DataSplits:
    """Train/test splits of one of :data:`DATASETS`."""
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, download=download)
    if name == "digits":
        return load_digits()
    if name == "moons":
        return load_moons()
    raise ValueError(f"unknown data set {name!r}; choose from {DATASETS}")
