"""Standard image datasets and the user's own images, all read into uint8 tensors.

Registered names: `mnist`, `fashion-mnist`, `binarized-mnist`, `cifar10`, plus the path
loaders `folder:PATH` and `npz:PATH`.

Where the standard files are looked for, in order:

1. the data folder the user pointed at (`--data-dir` / $DGM_DATA_DIR), which is only ever
   read: nothing is extracted or written next to the user's files;
2. the download cache, `dgm.data.cache_dir()`.

Both use torchvision's layout: `MNIST/raw/train-images-idx3-ubyte.gz` (or the uncompressed
IDX file), `FashionMNIST/raw/...`, `cifar-10-batches-bin/` or `cifar-10-binary.tar.gz`, and
`binarized_mnist/binarized_mnist.npz`. Only a file found in neither place is downloaded, and
only if $DGM_DOWNLOAD is not "0": into a temporary file inside the cache, checked against its
md5 (or, for binarized MNIST, the sha256 of the parsed arrays) and then renamed into place, so
the cache never holds a partial or unverified file. `DatasetSpec.available` only checks that
the files exist; it never downloads or reads them.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import socket
import tarfile
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
import torch

from dgm.data import (
    Dataset,
    DatasetSpec,
    Split,
    cache_dir,
    data_root,
    register_dataset,
    register_path_loader,
    split_by_permutation,
)
from dgm.errors import DgmError

# ----------------------------------------------------------------------------------------
# Finding files locally, or downloading them into the cache
# ----------------------------------------------------------------------------------------

DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation; torchvision's urlopen sets no timeout


@dataclass(frozen=True)
class Resource:
    """One file a dataset needs, as a path relative to a data root.

    `file` is the name a download is saved under (in the cache); `local` lists other forms
    accepted when found locally (e.g. the uncompressed IDX file, or the extracted CIFAR
    folder), preferred over `file` because they are faster to read. `fetch(dest)` downloads
    and verifies the file into `dest` (a temporary path). `origin` says where it comes from,
    for error messages.
    """

    file: str
    fetch: Callable[[Path], None]
    origin: str
    local: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return PurePosixPath(self.file).name


def download_enabled() -> bool:
    """False when $DGM_DOWNLOAD is "0" (or false / no / off)."""
    return os.environ.get("DGM_DOWNLOAD", "1").strip().lower() not in ("0", "false", "no", "off")


def _roots(data_dir: str | Path | None) -> list[tuple[Path, bool]]:
    """The folders searched, in order, each with a flag saying whether it is the cache."""
    roots: list[tuple[Path, bool]] = []
    user = data_root(data_dir)
    cache = cache_dir()
    if user is not None and user.resolve() != cache.resolve():
        roots.append((user, False))
    roots.append((cache, True))
    return roots


def _find_local(res: Resource, roots: list[tuple[Path, bool]]) -> Path | None:
    for root, _ in roots:
        for rel in (*res.local, res.file):
            p = root / rel
            if p.exists():
                return p
    return None


def files_present(resources: Sequence[Resource], data_dir: str | Path | None = None) -> bool:
    """Whether every file is already on disk (data folder or cache): cheap, never downloads."""
    roots = _roots(data_dir)
    return all(_find_local(r, roots) is not None for r in resources)


def find_or_download(dataset: str, resources: Sequence[Resource], data_dir: str | Path | None = None) -> list[Path]:
    """The local path of every resource, downloading the missing ones into the cache.

    Raises DgmError with one paragraph naming the missing files and the folders searched
    when a file is missing and downloading is turned off or fails.
    """
    roots = _roots(data_dir)
    found = [_find_local(r, roots) for r in resources]
    missing = [r for r, p in zip(resources, found) if p is None]
    if not missing:
        return found  # type: ignore[return-value]
    if not download_enabled():
        raise _missing_error(dataset, missing, roots, "downloading is turned off (DGM_DOWNLOAD=0)")
    cache = cache_dir()
    for i, res in enumerate(resources):
        if found[i] is None:
            try:
                found[i] = _download(res, cache)
            except Exception as e:  # offline, HTTP error, bad checksum, unwritable cache ...
                reason = f"downloading {res.name} failed ({_one_line(e)})"
                raise _missing_error(dataset, [r for r, p in zip(resources, found) if p is None], roots, reason) from e
    return found  # type: ignore[return-value]


def _download(res: Resource, cache: Path) -> Path:
    """Fetch `res` into a temporary folder next to its place in the cache, then rename it in."""
    target = cache / res.file
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        tmp = tmp_dir / target.name
        res.fetch(tmp)
        if not tmp.is_file():
            raise DgmError(f"the download of {res.name} produced no file")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def _missing_error(dataset: str, missing: Sequence[Resource], roots: list[tuple[Path, bool]], reason: str) -> DgmError:
    names = _join([r.name for r in missing], "and")
    alternatives = [PurePosixPath(a).name + ("/" if a.endswith("/") else "") for r in missing for a in r.local]
    folders = _unique(str(root / PurePosixPath(r.file).parent) for root, _ in roots for r in missing)
    subfolders = _unique(str(PurePosixPath(r.file).parent) for r in missing)
    layout = (
        "directly in it"
        if subfolders == ["."]
        else "under " + _join([s + "/" for s in subfolders if s != "."], "and")
    )
    no_user_dir = "" if any(not is_cache for _, is_cache in roots) else " (no --data-dir or DGM_DATA_DIR was given)"
    alt = f" (also accepted: {_join(alternatives, 'and')})" if alternatives else ""
    many = len(missing) > 1
    if many:
        were, put, them = "were", "the files, with exactly these names,", "them"
    else:
        were, put, them = "was", "it, with exactly this name,", "it"
    msg = (
        f"Dataset '{dataset}' needs {names}{alt}, which {were} not found in {_join(folders, 'or')}"
        f"{no_user_dir}, and {reason}. Put {put} in one of those folders, "
        f"or point --data-dir / DGM_DATA_DIR at a folder that holds {them} {layout}; "
        f"{'they come' if many else 'it comes'} from {_join(_unique(r.origin for r in missing), 'and')}."
    )
    return DgmError(msg)


def _join(items: Sequence[str], word: str) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {word} " + items[-1]


def _unique(items) -> list[str]:
    return list(dict.fromkeys(items))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def verify_file(path: str | Path, md5: str | None = None, sha256: str | None = None) -> None:
    """Check a downloaded file's checksum; a file that fails is deleted and DgmError raised.

    Only for files dgm itself downloaded into the cache: files in the user's data folder
    are never deleted.
    """
    path = Path(path)
    for algo, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        h = hashlib.new(algo)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != expected.lower():
            path.unlink(missing_ok=True)
            raise DgmError(
                f"{path.name} has {algo} {h.hexdigest()}, expected {expected}: a broken or partial "
                "download, so the file was removed; try again later or fetch it by hand"
            )


@contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    if old is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _fetch_url(url: str, dest: Path) -> None:
    """Download one URL to `dest` with torchvision's helper (redirects, user agent)."""
    from torchvision.datasets.utils import download_url

    with _socket_timeout(DOWNLOAD_TIMEOUT_S):
        download_url(url, str(dest.parent), dest.name)


def download_file(urls: Sequence[str], dest: str | Path, md5: str | None = None, sha256: str | None = None) -> None:
    """Download `dest` from the first mirror that works and passes the checksum."""
    dest = Path(dest)
    errors = []
    for url in urls:
        dest.unlink(missing_ok=True)  # torchvision skips the download if the file exists
        try:
            _fetch_url(url, dest)
            verify_file(dest, md5=md5, sha256=sha256)
            return
        except Exception as e:
            dest.unlink(missing_ok=True)
            errors.append(f"{url}: {_one_line(e)}")
    raise DgmError("; ".join(errors) or f"no URL to download {dest.name} from")


# ----------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: IDX files, read with numpy
# ----------------------------------------------------------------------------------------

IDX_IMAGES = 2051  # magic number of an IDX file of unsigned bytes with 3 dimensions
IDX_LABELS = 2049  # ... with 1 dimension
IDX_FILES = (  # (file, magic), in the order the loaders use them
    ("train-images-idx3-ubyte.gz", IDX_IMAGES),
    ("train-labels-idx1-ubyte.gz", IDX_LABELS),
    ("t10k-images-idx3-ubyte.gz", IDX_IMAGES),
    ("t10k-labels-idx1-ubyte.gz", IDX_LABELS),
)


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped if the name ends in .gz) as a writable uint8 array.

    `magic` is the expected magic number: 2051 for images [N, H, W], 2049 for labels [N].
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = bytearray(f.read())
        else:
            data = bytearray(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise DgmError(f"cannot read {path} ({_one_line(e)}); replace it with a fresh copy") from e
    kind = {IDX_IMAGES: "image", IDX_LABELS: "label"}.get(magic, "IDX")
    got = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if got != magic:
        raise DgmError(
            f"{path} is not an IDX {kind} file: its magic number is {got}, expected {magic}; "
            "replace it with a fresh copy of the official file"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DgmError(
            f"{path} is damaged: {len(data)} bytes, but its header (shape {list(dims)}) says {expected}; "
            "replace it with a fresh copy"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _torchvision_fetch(class_name: str, file: str) -> Callable[[Path], None]:
    """Download `file` from the mirrors and with the md5 that torchvision lists for `class_name`."""

    def fetch(dest: Path) -> None:
        from torchvision import datasets

        cls = getattr(datasets, class_name)
        md5 = dict(cls.resources)[file]
        download_file([mirror + file for mirror in cls.mirrors], dest, md5=md5)

    return fetch


def _idx_resources(folder: str, class_name: str, origin: str) -> tuple[Resource, ...]:
    return tuple(
        Resource(
            file=f"{folder}/raw/{name}",
            fetch=_torchvision_fetch(class_name, name),
            origin=origin,
            local=(f"{folder}/raw/{name[: -len('.gz')]}",),
        )
        for name, _ in IDX_FILES
    )


MNIST_RESOURCES = _idx_resources(
    "MNIST", "MNIST", "torchvision's MNIST mirrors (https://ossci-datasets.s3.amazonaws.com/mnist/)"
)
FASHION_RESOURCES = _idx_resources(
    "FashionMNIST", "FashionMNIST", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
)
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
]


def _hold_out(x: torch.Tensor, y: torch.Tensor | None, n_valid: int) -> tuple[Split, Split]:
    """Train = all but the last `n_valid` rows, valid = the last `n_valid` (own storage each)."""
    n = x.shape[0] - n_valid
    return (
        Split(x[:n].clone(), None if y is None else y[:n].clone()),
        Split(x[n:].clone(), None if y is None else y[n:].clone()),
    )


def _load_idx_dataset(name: str, resources: Sequence[Resource], data_dir, class_names: list[str]) -> Dataset:
    paths = find_or_download(name, resources, data_dir)
    x_train, y_train, x_test, y_test = (read_idx(p, magic) for p, (_, magic) in zip(paths, IDX_FILES))
    for x, y, px, py in ((x_train, y_train, paths[0], paths[1]), (x_test, y_test, paths[2], paths[3])):
        if x.shape[0] != y.shape[0]:
            raise DgmError(f"{px} holds {x.shape[0]} images but {py} holds {y.shape[0]} labels; they must match")
        if y.size and int(y.max()) >= len(class_names):
            raise DgmError(f"{py} has label {int(y.max())}; expected 0 .. {len(class_names) - 1}")
        if x.shape[1:] != x_train.shape[1:]:
            raise DgmError(f"{px} holds {list(x.shape[1:])} images but {paths[0]} holds {list(x_train.shape[1:])}")
    xt = torch.from_numpy(x_train).unsqueeze(1)
    yt = torch.from_numpy(y_train.astype(np.int64))
    # The official 60,000 training images: the first 50,000 train, the last 10,000 valid.
    train, valid = _hold_out(xt, yt, xt.shape[0] // 6)
    test = Split(torch.from_numpy(x_test).unsqueeze(1), torch.from_numpy(y_test.astype(np.int64)))
    return Dataset(name, train, valid, test, levels=256, num_classes=len(class_names), class_names=list(class_names))


def load_mnist(data_dir: str | Path | None = None) -> Dataset:
    """MNIST: 28x28 grey, 256 levels; train/valid = first 50,000 / last 10,000 of the official train set."""
    return _load_idx_dataset("mnist", MNIST_RESOURCES, data_dir, [str(i) for i in range(10)])


def load_fashion_mnist(data_dir: str | Path | None = None) -> Dataset:
    """Fashion-MNIST: same layout and splits as MNIST, with the ten class names."""
    return _load_idx_dataset("fashion-mnist", FASHION_RESOURCES, data_dir, FASHION_CLASSES)


# ----------------------------------------------------------------------------------------
# Statically binarized MNIST (Larochelle & Murray 2011)
# ----------------------------------------------------------------------------------------

BINARIZED_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
BINARIZED_SPLITS = {  # split: (rows, sha256 of the parsed uint8 [rows, 784] array's bytes)
    "train": (50000, "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a"),
    "valid": (10000, "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e"),
    "test": (10000, "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86"),
}


def parse_amat(data: bytes, source: str = "data") -> np.ndarray:
    """The text .amat format (one image per line, 784 values 0/1 separated by spaces) as uint8 [N, 784]."""
    lines = data.split(b"\n")
    out = np.empty((len(lines), 784), np.uint8)
    n = 0
    for i, line in enumerate(lines, 1):
        packed = line.replace(b" ", b"").replace(b"\t", b"").replace(b"\r", b"")
        if not packed:
            continue  # blank line, e.g. after the final newline
        if len(packed) != 784 or packed.translate(None, b"01"):
            raise DgmError(f"{source}, line {i}: expected 784 values 0 or 1 separated by spaces")
        out[n] = np.frombuffer(packed, np.uint8)
        n += 1
    out = out[:n]
    out -= ord("0")
    return out


def _fetch_binarized(dest: Path) -> None:
    """Download the three .amat text files, check the parsed arrays, and save them as one .npz."""
    arrays = {}
    for split, (rows, sha256) in BINARIZED_SPLITS.items():
        amat = dest.parent / f"binarized_mnist_{split}.amat"
        download_file([BINARIZED_URL + amat.name], amat)
        arr = parse_amat(amat.read_bytes(), amat.name)
        amat.unlink()
        got = hashlib.sha256(arr.tobytes()).hexdigest()
        if arr.shape != (rows, 784) or got != sha256:
            raise DgmError(
                f"{amat.name} parses to {arr.shape[0]} rows with sha256 {got}, expected {rows} rows "
                f"with sha256 {sha256}: not the original file"
            )
        arrays[split] = arr
    with open(dest, "wb") as f:
        np.savez_compressed(f, **arrays)


BINARIZED_RESOURCES = (
    Resource(
        file="binarized_mnist/binarized_mnist.npz",
        fetch=_fetch_binarized,
        origin=(
            f"binarized_mnist_{{train,valid,test}}.amat at {BINARIZED_URL} "
            "(saved as this .npz with keys train, valid, test)"
        ),
    ),
)


def _read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, without pickles; raises ValueError for a single-array .npy file."""
    z = np.load(path, allow_pickle=False)
    if not hasattr(z, "files"):
        raise ValueError("it holds a single array (.npy), not named arrays")
    with z:
        return {k: z[k] for k in z.files}


def read_binarized_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The train / valid / test arrays of a binarized-MNIST .npz, as uint8 [N, 1, 28, 28]."""
    try:
        arrays = _read_npz(path)
    except Exception as e:
        raise DgmError(f"cannot read {path} as an .npz ({_one_line(e)}); replace it with a fresh copy") from e
    out = {}
    for split in BINARIZED_SPLITS:
        a = arrays.get(split)
        if a is None or a.ndim != 2 or a.shape[1] != 784 or a.dtype != np.uint8 or (a.size and a.max() > 1):
            got = "missing" if a is None else f"{a.dtype} {list(a.shape)}"
            raise DgmError(f"{path}: '{split}' should be a uint8 array [N, 784] of 0/1 values, got {got}")
        out[split] = a.reshape(-1, 1, 28, 28)
    return out


def load_binarized_mnist(data_dir: str | Path | None = None) -> Dataset:
    """Larochelle & Murray's statically binarized MNIST: fixed 50k / 10k / 10k splits, no labels."""
    (path,) = find_or_download("binarized-mnist", BINARIZED_RESOURCES, data_dir)
    a = read_binarized_npz(path)
    train, valid, test = (Split(torch.from_numpy(np.ascontiguousarray(a[s]))) for s in BINARIZED_SPLITS)
    return Dataset("binarized-mnist", train, valid, test, levels=2, num_classes=None)


# ----------------------------------------------------------------------------------------
# CIFAR-10, binary version
# ----------------------------------------------------------------------------------------

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_CIFAR_RECORD = 1 + 3 * 32 * 32  # 1 label byte, then 1024 red, 1024 green, 1024 blue bytes


def read_cifar10_bin(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) from the `cifar-10-batches-bin` folder or the .tar.gz.

    x is uint8 [N, 3, 32, 32], y int64 [N]. The archive is read in memory, never extracted.
    """
    path = Path(path)
    wanted = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    blobs: dict[str, bytes] = {}
    try:
        if path.is_dir():
            for name in wanted:
                if (path / name).is_file():
                    blobs[name] = (path / name).read_bytes()
        else:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    p = PurePosixPath(member.name)
                    if member.isfile() and p.parent.name == CIFAR10_FOLDER and p.name in wanted:
                        blobs[p.name] = tar.extractfile(member).read()
    except (OSError, EOFError, tarfile.TarError, zlib.error) as e:
        raise DgmError(f"cannot read {path} ({_one_line(e)}); replace it with a fresh copy") from e
    absent = [n for n in wanted if n not in blobs]
    if absent:
        where = path if path.is_dir() else f"{path} (in its folder {CIFAR10_FOLDER}/)"
        raise DgmError(f"{where} lacks {_join(absent, 'and')}; it should be the binary version of CIFAR-10")

    def records(names):
        parts = []
        for name in names:
            b = blobs[name]
            if not b or len(b) % _CIFAR_RECORD:
                raise DgmError(
                    f"{path}: {name} has {len(b)} bytes, not a multiple of {_CIFAR_RECORD} "
                    "(1 label byte + 3072 pixel bytes per image); is this the binary version of CIFAR-10?"
                )
            parts.append(np.frombuffer(b, np.uint8).reshape(-1, _CIFAR_RECORD))
        rec = np.concatenate(parts)
        y = rec[:, 0].astype(np.int64)
        if y.max() >= len(CIFAR10_CLASSES):
            raise DgmError(f"{path}: label {int(y.max())} in {_join(list(names), 'or')}; expected 0 .. 9")
        return np.ascontiguousarray(rec[:, 1:]).reshape(-1, 3, 32, 32), y

    x_train, y_train = records(CIFAR10_TRAIN_FILES)
    x_test, y_test = records([CIFAR10_TEST_FILE])
    return x_train, y_train, x_test, y_test


def _fetch_cifar10(dest: Path) -> None:
    download_file([CIFAR10_URL], dest, md5=CIFAR10_MD5)


CIFAR10_RESOURCES = (
    Resource(file="cifar-10-binary.tar.gz", fetch=_fetch_cifar10, origin=CIFAR10_URL, local=(CIFAR10_FOLDER + "/",)),
)


def load_cifar10(data_dir: str | Path | None = None) -> Dataset:
    """CIFAR-10 (binary version): 3x32x32, 256 levels; valid = last 5,000 of the 50,000 training images."""
    (path,) = find_or_download("cifar10", CIFAR10_RESOURCES, data_dir)
    x_train, y_train, x_test, y_test = read_cifar10_bin(path)
    train, valid = _hold_out(torch.from_numpy(x_train), torch.from_numpy(y_train), x_train.shape[0] // 10)
    test = Split(torch.from_numpy(x_test), torch.from_numpy(y_test))
    return Dataset("cifar10", train, valid, test, levels=256, num_classes=10, class_names=list(CIFAR10_CLASSES))


# ----------------------------------------------------------------------------------------
# folder:PATH, a folder of images
# ----------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


def _image_files(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = [
        p
        for p in found
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _read_image(path: Path) -> np.ndarray:
    """uint8 [H, W] for grey images, [H, W, 3] for colour ones (alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("1", "L", "LA", "La"):
                im = im.convert("L")
            elif mode.startswith(("I", "F")):
                raise DgmError(
                    f"{path} is a {mode} image (16-bit or more per pixel); only 8-bit images are read, "
                    "convert it to 8-bit first"
                )
            else:  # RGB, RGBA, P, PA, CMYK, YCbCr, ...
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DgmError(f"cannot read the image {path} ({_one_line(e)})") from e


def load_folder(path: str | Path) -> Dataset:
    """A folder of same-size images; if it has subfolders, each (sorted by name) is a class.

    Grey images give C=1; if any image has colour, all become C=3 (alpha is dropped).
    Hidden files and folders, and class folders without images, are skipped. The split is a
    fixed, seeded 80 / 10 / 10 permutation.
    """
    path = Path(path)
    name = f"folder:{path}"
    if not path.is_dir():
        raise DgmError(f"{name}: {'no such folder' if not path.exists() else 'not a folder'}")
    loose = _image_files(path, recursive=False)
    class_dirs = sorted((d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)
    classes: list[str] = []
    files: list[Path] = []
    labels: list[int] = []
    for d in class_dirs:
        in_class = _image_files(d, recursive=True)
        if in_class:
            files += in_class
            labels += [len(classes)] * len(in_class)
            classes.append(d.name)
    if classes and loose:
        raise DgmError(
            f"{name}: has class subfolders ({_join(classes, 'and')}) and also images directly in it "
            f"(e.g. {loose[0].name}); move those into a class folder or remove them"
        )
    if not classes:
        files = loose
    if not files:
        raise DgmError(f"{name}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)} files, also in subfolders)")

    images = []
    first_size = None
    for f in files:
        img = _read_image(f)
        size = img.shape[:2]
        if first_size is None:
            first_size = size
        elif size != first_size:
            raise DgmError(
                f"{name}: all images must have one size, but {f} is {size[1]}x{size[0]} (width x height) "
                f"while {files[0]} is {first_size[1]}x{first_size[0]}; resize them to one size first"
            )
        images.append(img)
    if any(img.ndim == 3 for img in images):
        images = [np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img for img in images]
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    else:
        x = torch.from_numpy(np.stack(images)).unsqueeze(1)
    y = torch.tensor(labels, dtype=torch.int64) if classes else None
    train, valid, test = split_by_permutation(x, y, fractions=(0.8, 0.1), seed=0)
    if min(len(train), len(valid), len(test)) == 0:
        raise DgmError(
            f"{name}: only {len(files)} images, too few for non-empty 80/10/10 train / valid / test splits "
            "(at least 10 are needed)"
        )
    return Dataset(
        name, train, valid, test, levels=256,
        num_classes=len(classes) if classes else None,
        class_names=classes or None,
    )


# ----------------------------------------------------------------------------------------
# npz:PATH, the user's arrays
# ----------------------------------------------------------------------------------------

NPZ_KEYS = ("x_train", "x_valid", "x_test", "y_train", "y_valid", "y_test", "levels")
_NPZ_EXPECTED = (
    "keys x_train and x_test (uint8 arrays [N, H, W], [N, C, H, W] or [N, H, W, C] with C 1 or 3), "
    "optionally x_valid, y_train / y_valid / y_test (integer labels [N]) and levels (an integer 2 .. 256)"
)


def _npz_images(name: str, key: str, a: np.ndarray) -> np.ndarray:
    if a.dtype != np.uint8:
        hint = " (for floats in [0, 1] save (x * 255).round().astype(np.uint8))" if a.dtype.kind == "f" else ""
        raise DgmError(f"{name}: {key} has dtype {a.dtype}; expected uint8 pixel values{hint}")
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        if a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3):
            a = a.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    else:
        raise DgmError(f"{name}: {key} has shape {list(a.shape)}; expected [N, H, W], [N, C, H, W] or [N, H, W, C]")
    if a.shape[0] == 0:
        raise DgmError(f"{name}: {key} holds no images")
    return np.ascontiguousarray(a)


def _npz_labels(name: str, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise DgmError(f"{name}: {key} is {y.dtype} {list(y.shape)}; expected integer class labels of shape [N]")
    if y.shape[0] != n:
        raise DgmError(f"{name}: {key} has {y.shape[0]} labels but x_{key[2:]} has {n} images; they must match")
    if y.size and y.min() < 0:
        raise DgmError(f"{name}: {key} has the label {int(y.min())}; labels must be 0 .. num_classes-1")
    return y.astype(np.int64)


def load_npz(path: str | Path) -> Dataset:
    """The user's arrays from an .npz: x_train, x_test, optional x_valid / y_* / levels.

    Without x_valid the last 10 % of x_train is the validation split. Without `levels`, data
    whose pixels are all 0 or 1 is taken as binary (levels 2), anything else as 8-bit (256).
    """
    path = Path(path)
    name = f"npz:{path}"
    if not path.is_file():
        raise DgmError(f"{name}: {'no such file' if not path.exists() else 'not a file'}")
    try:
        arrays = _read_npz(path)
    except Exception as e:  # not a zip, a single .npy array, damaged, or holds pickled objects
        raise DgmError(
            f"{name}: cannot read it as an .npz of plain arrays ({_one_line(e)}); expected {_NPZ_EXPECTED}"
        ) from e
    unknown = sorted(set(arrays) - set(NPZ_KEYS))
    absent = [k for k in ("x_train", "x_test") if k not in arrays]
    if unknown or absent:
        what = "; ".join(
            part
            for part in (
                f"missing {_join(absent, 'and')}" if absent else "",
                f"unexpected {_join(unknown, 'and')}" if unknown else "",
            )
            if part
        )
        raise DgmError(f"{name}: {what}; expected {_NPZ_EXPECTED}")

    x = {k[2:]: _npz_images(name, k, arrays[k]) for k in ("x_train", "x_valid", "x_test") if k in arrays}
    shapes = {s: a.shape[1:] for s, a in x.items()}
    if len(set(shapes.values())) > 1:
        raise DgmError(f"{name}: the splits have different image shapes {shapes}; they must all be one [C, H, W]")
    if "y_valid" in arrays and "valid" not in x:
        raise DgmError(f"{name}: has y_valid but no x_valid")
    y = {
        k[2:]: _npz_labels(name, k, arrays[k], x[k[2:]].shape[0])
        for k in ("y_train", "y_valid", "y_test")
        if k in arrays
    }
    if "valid" not in x:
        n = x["train"].shape[0]
        n_valid = int(round(0.1 * n))
        if n_valid < 1 or n - n_valid < 1:
            raise DgmError(
                f"{name}: x_train has only {n} images, too few to hold out the last 10 % as validation; add x_valid"
            )
        x["valid"], x["train"] = x["train"][n - n_valid :], x["train"][: n - n_valid]
        if "train" in y:
            y["valid"], y["train"] = y["train"][n - n_valid :], y["train"][: n - n_valid]
    if y and len(y) != 3:
        lacking = [f"y_{s}" for s in ("train", "valid", "test") if s not in y]
        raise DgmError(f"{name}: labels must be given for every split or none, but {_join(lacking, 'and')} is missing")

    top = max(int(a.max()) for a in x.values())
    if "levels" in arrays:
        lv = arrays["levels"]
        if lv.size != 1 or lv.dtype.kind not in "iu" or not 2 <= int(lv.reshape(-1)[0]) <= 256:
            raise DgmError(f"{name}: levels is {lv.dtype} {lv.reshape(-1)[:3].tolist()}; expected one integer 2 .. 256")
        levels = int(lv.reshape(-1)[0])
        if top >= levels:
            raise DgmError(
                f"{name}: a pixel has the value {top}, but levels is {levels} (values must be 0 .. {levels - 1})"
            )
    else:
        levels = 2 if top <= 1 else 256

    splits = [
        Split(torch.from_numpy(np.ascontiguousarray(x[s])), torch.from_numpy(np.ascontiguousarray(y[s])) if y else None)
        for s in ("train", "valid", "test")
    ]
    num_classes = max(int(a.max()) for a in y.values() if a.size) + 1 if y else None
    return Dataset(name, *splits, levels=levels, num_classes=num_classes)


# ----------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------


def _available(resources: Sequence[Resource]) -> Callable[[Path | None], bool]:
    return lambda data_dir: files_present(resources, data_dir)


register_dataset(
    DatasetSpec(
        name="mnist",
        loader=load_mnist,
        shape=(1, 28, 28),
        num_classes=10,
        levels=256,
        description="MNIST handwritten digits, 28x28 grey, 50k/10k/10k (MNIST/raw/*.gz, torchvision layout)",
        available=_available(MNIST_RESOURCES),
    )
)
register_dataset(
    DatasetSpec(
        name="fashion-mnist",
        loader=load_fashion_mnist,
        shape=(1, 28, 28),
        num_classes=10,
        levels=256,
        description="Fashion-MNIST clothing images, 28x28 grey, 50k/10k/10k (FashionMNIST/raw/*.gz)",
        available=_available(FASHION_RESOURCES),
    )
)
register_dataset(
    DatasetSpec(
        name="binarized-mnist",
        loader=load_binarized_mnist,
        shape=(1, 28, 28),
        num_classes=None,
        levels=2,
        description="statically binarized MNIST (Larochelle & Murray), 50k/10k/10k, no labels",
        available=_available(BINARIZED_RESOURCES),
    )
)
register_dataset(
    DatasetSpec(
        name="cifar10",
        loader=load_cifar10,
        shape=(3, 32, 32),
        num_classes=10,
        levels=256,
        description="CIFAR-10, 32x32 colour, 45k/5k/10k (binary version: cifar-10-batches-bin/)",
        available=_available(CIFAR10_RESOURCES),
    )
)
register_path_loader("folder", load_folder)
register_path_loader("npz", load_npz)
