"""Dataset sources: MNIST-style IDX files, binarized MNIST, CIFAR-10 binary, folder:, npz:.

Everything runs offline: the real data comes from the shared read-only folder (tests skip
with a reason when it is absent), everything else is written by the tests into tmp_path.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dgm.data import dataset_specs, load_dataset
from dgm.data import sources
from dgm.errors import DgmError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_mnist = pytest.mark.skipif(
    not (SHARED / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"the shared MNIST files are not at {SHARED / 'MNIST' / 'raw'}",
)
needs_binarized = pytest.mark.skipif(
    not (SHARED / "binarized_mnist" / "binarized_mnist.npz").is_file(),
    reason=f"the shared binarized MNIST file is not at {SHARED / 'binarized_mnist'}",
)


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No test may download: downloads off, an empty cache, no data dir from the environment."""
    monkeypatch.setenv("DGM_DOWNLOAD", "0")
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DGM_DATA_DIR", raising=False)

    def no_network(url, dest):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(sources, "_fetch_url", no_network)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


# ---------------------------------------------------------------- registry


def test_registered_names():
    names = {s.name for s in dataset_specs()}
    assert {"mnist", "fashion-mnist", "binarized-mnist", "cifar10"} <= names
    spec = {s.name: s for s in dataset_specs()}
    assert spec["binarized-mnist"].levels == 2 and spec["binarized-mnist"].num_classes is None
    assert spec["cifar10"].shape == (3, 32, 32) and spec["cifar10"].levels == 256


def test_idx_tables_match_torchvision():
    from torchvision import datasets

    pairs = ((datasets.MNIST, sources.MNIST_RESOURCES), (datasets.FashionMNIST, sources.FASHION_RESOURCES))
    for cls, resources in pairs:
        assert {r.name for r in resources} == {name for name, _ in cls.resources}
    assert sources.FASHION_CLASSES == datasets.FashionMNIST.classes


# ---------------------------------------------------------------- real data (shared folder)


@needs_mnist
def test_mnist_from_shared_folder():
    spec = {s.name: s for s in dataset_specs()}["mnist"]
    assert spec.available(SHARED)
    ds = load_dataset("mnist", data_dir=SHARED)
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [50000, 10000, 10000]
    assert ds.shape == (1, 28, 28) and ds.levels == 256 and ds.num_classes == 10
    assert ds.class_names == [str(i) for i in range(10)]
    for split in (ds.train, ds.valid, ds.test):
        assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64
        assert split.y.shape == (len(split),)
        assert sorted(split.y.unique().tolist()) == list(range(10))
    all_train = torch.cat([ds.train.x, ds.valid.x])
    assert round(all_train.double().mean().item(), 4) == 33.3184
    assert round(ds.test.x.double().mean().item(), 4) == 33.7912
    assert ds.train.y[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first labels


@needs_binarized
def test_binarized_mnist_from_shared_folder():
    ds = load_dataset("binarized-mnist", data_dir=SHARED)
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [50000, 10000, 10000]
    assert ds.levels == 2 and ds.num_classes is None and ds.shape == (1, 28, 28)
    assert ds.train.y is None and ds.test.y is None
    assert ds.test.x.dtype == torch.uint8 and int(ds.test.x.max()) == 1
    assert abs(ds.test.x.double().mean().item() - 0.13251) < 5e-5
    with pytest.raises(DgmError, match="already binary"):
        load_dataset("binarized-mnist", data_dir=SHARED, binarize="dynamic")


@needs_binarized
def test_binarized_hashes_match_shared_arrays():
    # The download path checks the parsed .amat arrays against these hard-coded hashes.
    with np.load(SHARED / "binarized_mnist" / "binarized_mnist.npz", allow_pickle=False) as z:
        for split, (rows, sha256) in sources.BINARIZED_SPLITS.items():
            assert z[split].shape == (rows, 784)
            assert hashlib.sha256(z[split].tobytes()).hexdigest() == sha256


def test_parse_amat():
    rows = np.random.default_rng(0).integers(0, 2, size=(3, 784), dtype=np.uint8)
    text = "".join(" ".join(str(v) for v in r) + "\n" for r in rows).encode()
    assert np.array_equal(sources.parse_amat(text), rows)
    assert np.array_equal(sources.parse_amat(text.replace(b"\n", b"\r\n")), rows)
    lines = text.split(b"\n")
    lines[1] += b" 1"
    with pytest.raises(DgmError, match="line 2"):
        sources.parse_amat(b"\n".join(lines))


# ---------------------------------------------------------------- IDX files (Fashion-MNIST layout)


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_set(raw: Path, n_train=12, n_test=4, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": (rng.integers(0, 256, (n_train, 28, 28)), 2051),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10, 2049),
        "t10k-images-idx3-ubyte": (rng.integers(0, 256, (n_test, 28, 28)), 2051),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10, 2049),
    }
    raw.mkdir(parents=True, exist_ok=True)
    for name, (arr, magic) in arrays.items():
        data = idx_bytes(arr, magic)
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / name).write_bytes(data)
    return {name: arr for name, (arr, _) in arrays.items()}


def test_fashion_mnist_from_small_idx_set(tmp_path):
    root = tmp_path / "data"
    arrays = write_idx_set(root / "FashionMNIST" / "raw")
    before = files_under(root)
    ds = load_dataset("fashion-mnist", data_dir=root)
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [10, 2, 4]  # valid = last sixth of train
    assert ds.shape == (1, 28, 28) and ds.levels == 256 and ds.num_classes == 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[-1] == "Ankle boot"
    assert ds.train.x.dtype == torch.uint8 and ds.train.y.dtype == torch.int64
    images = arrays["train-images-idx3-ubyte"]
    assert np.array_equal(torch.cat([ds.train.x, ds.valid.x])[:, 0].numpy(), images)
    assert ds.valid.y.tolist() == [0, 1] and ds.test.y.tolist() == [0, 1, 2, 3]
    assert files_under(root) == before  # nothing is written next to the user's files
    assert files_under(tmp_path / "cache") == set()


def test_uncompressed_idx_files_are_accepted(tmp_path):
    root = tmp_path / "data"
    write_idx_set(root / "MNIST" / "raw", gz=False)
    assert {s.name: s for s in dataset_specs()}["mnist"].available(root)
    ds = load_dataset("mnist", data_dir=root)
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [10, 2, 4]


def test_idx_bad_magic_is_an_error(tmp_path):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    write_idx_set(raw)
    images = np.zeros((12, 28, 28), np.uint8)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 2049)))
    with pytest.raises(DgmError, match="magic number is 2049, expected 2051"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "data")


def test_idx_damaged_files_are_errors(tmp_path):
    path = tmp_path / "x.gz"
    data = idx_bytes(np.zeros((3, 28, 28), np.uint8), 2051)
    path.write_bytes(gzip.compress(data[:-5]))
    with pytest.raises(DgmError, match="damaged"):
        sources.read_idx(path, 2051)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DgmError, match="cannot read"):
        sources.read_idx(path, 2051)
    # image and label counts must agree
    raw = tmp_path / "data" / "MNIST" / "raw"
    write_idx_set(raw)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(3), 2049)))
    with pytest.raises(DgmError, match="4 images but .* 3 labels"):
        load_dataset("mnist", data_dir=tmp_path / "data")


# ---------------------------------------------------------------- missing files, downloads


def test_missing_offline_names_files_and_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not {s.name: s for s in dataset_specs()}["mnist"].available(empty)
    with pytest.raises(DgmError) as info:
        load_dataset("mnist", data_dir=empty)
    msg = str(info.value)
    assert "train-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert str(empty / "MNIST" / "raw") in msg
    assert str(tmp_path / "cache" / "MNIST" / "raw") in msg
    assert "DGM_DOWNLOAD=0" in msg and "--data-dir" in msg and "DGM_DATA_DIR" in msg
    assert "\n" not in msg
    assert files_under(empty) == set()


def test_missing_cifar_offline(tmp_path):
    with pytest.raises(DgmError, match="cifar-10-binary.tar.gz .*cifar-10-batches-bin/"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_verify_file_rejects_wrong_md5(tmp_path):
    cached = tmp_path / "cache" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"an HTML error page, not the data")
    with pytest.raises(DgmError, match="md5 .* expected ec29112dd5afa0611ce80d1b7f02629c"):
        sources.verify_file(cached, md5="ec29112dd5afa0611ce80d1b7f02629c")
    assert not cached.exists()
    cached.write_bytes(b"good")
    sources.verify_file(cached, md5=hashlib.md5(b"good").hexdigest(), sha256=hashlib.sha256(b"good").hexdigest())
    assert cached.exists()
    with pytest.raises(DgmError, match="sha256"):
        sources.verify_file(cached, sha256="0" * 64)
    assert not cached.exists()


def test_download_tries_mirrors_and_checks_md5(tmp_path, monkeypatch):
    served = {"http://a/f.bin": b"corrupt", "http://b/f.bin": b"payload"}
    calls = []

    def fake_fetch(url, dest):
        calls.append(url)
        if url not in served:
            raise OSError("offline")
        dest.write_bytes(served[url])

    monkeypatch.setattr(sources, "_fetch_url", fake_fetch)
    dest = tmp_path / "f.bin"
    sources.download_file(["http://a/f.bin", "http://b/f.bin"], dest, md5=hashlib.md5(b"payload").hexdigest())
    assert dest.read_bytes() == b"payload" and calls == ["http://a/f.bin", "http://b/f.bin"]
    with pytest.raises(DgmError, match="http://a/f.bin: .*md5.*http://c/f.bin: offline"):
        sources.download_file(["http://a/f.bin", "http://c/f.bin"], dest, md5=hashlib.md5(b"payload").hexdigest())
    assert not dest.exists()


def test_find_or_download_is_atomic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DOWNLOAD", "1")
    content = {"data": b"corrupt"}
    fetched = []

    def fetch(dest: Path):
        fetched.append(dest)
        dest.write_bytes(content["data"])
        sources.verify_file(dest, md5=hashlib.md5(b"good").hexdigest())

    res = sources.Resource(file="toy/raw/toy.bin", fetch=fetch, origin="http://example.invalid/")
    user = tmp_path / "user"
    user.mkdir()
    cache = tmp_path / "cache"
    with pytest.raises(DgmError, match=r"toy.bin.*downloading toy.bin failed \(.*md5"):
        sources.find_or_download("toy", [res], user)
    assert files_under(cache) == {"toy", "toy/raw"}  # no partial or temporary file is left
    content["data"] = b"good"
    (path,) = sources.find_or_download("toy", [res], user)
    assert path == cache / "toy" / "raw" / "toy.bin" and path.read_bytes() == b"good"
    assert fetched[-1] != path  # written elsewhere first, then renamed into place
    assert files_under(cache) == {"toy", "toy/raw", "toy/raw/toy.bin"}
    assert files_under(user) == set()
    n = len(fetched)
    assert sources.find_or_download("toy", [res], user) == [path] and len(fetched) == n
    # a copy in the user's folder wins over the cache
    (user / "toy" / "raw").mkdir(parents=True)
    (user / "toy" / "raw" / "toy.bin").write_bytes(b"mine")
    assert sources.find_or_download("toy", [res], user) == [user / "toy" / "raw" / "toy.bin"]


def test_download_disabled_never_fetches(tmp_path):
    def fetch(dest):
        raise AssertionError("must not download")

    res = sources.Resource(file="toy.bin", fetch=fetch, origin="http://example.invalid/")
    assert not sources.files_present([res], tmp_path)
    with pytest.raises(DgmError, match="needs toy.bin, which was not found in .*DGM_DOWNLOAD=0"):
        sources.find_or_download("toy", [res], tmp_path)


@needs_mnist
def test_mnist_download_uses_torchvision_md5s(tmp_path, monkeypatch):
    """The download path end to end, with a fake mirror serving the shared files (no network)."""
    monkeypatch.setenv("DGM_DOWNLOAD", "1")
    served = []

    def serve_shared(url, dest):
        dest.write_bytes((SHARED / "MNIST" / "raw" / url.rsplit("/", 1)[1]).read_bytes())

    def fake_fetch(url, dest):
        served.append(url)
        if "t10k-labels" in url:
            dest.write_bytes(b"garbage")
        else:
            serve_shared(url, dest)

    monkeypatch.setattr(sources, "_fetch_url", fake_fetch)
    with pytest.raises(DgmError, match=r"downloading t10k-labels-idx1-ubyte.gz failed \(.*md5"):
        load_dataset("mnist", data_dir=tmp_path / "nothing")
    cached = tmp_path / "cache" / "MNIST" / "raw"
    assert files_under(cached) == {name for name, _ in sources.IDX_FILES[:3]}  # the bad file was not kept
    assert all(url.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/") for url in served[:3])

    monkeypatch.setattr(sources, "_fetch_url", serve_shared)
    ds = load_dataset("mnist")
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [50000, 10000, 10000]
    assert files_under(cached) == {name for name, _ in sources.IDX_FILES}


# ---------------------------------------------------------------- CIFAR-10 binary


def write_cifar(folder: Path, per_batch=2, n_test=3):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n in [(f"data_batch_{i}.bin", per_batch) for i in range(1, 6)] + [("test_batch.bin", n_test)]:
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 256, (n, 3, 32, 32)).astype(np.uint8)
        (folder / name).write_bytes(np.concatenate([y[:, None], x.reshape(n, -1)], axis=1).tobytes())
        out[name] = (x, y)
    return out


def test_cifar10_reader_folder_and_tar(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    arrays = write_cifar(folder)
    x_train, y_train, x_test, y_test = sources.read_cifar10_bin(folder)
    assert x_train.shape == (10, 3, 32, 32) and x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert np.array_equal(x_train[:2], arrays["data_batch_1.bin"][0])  # red plane first, then green, blue
    assert np.array_equal(x_train[8:], arrays["data_batch_5.bin"][0])
    assert np.array_equal(y_test, arrays["test_batch.bin"][1]) and x_test.shape == (3, 3, 32, 32)

    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-bin")
    for a, b in zip(sources.read_cifar10_bin(archive), (x_train, y_train, x_test, y_test)):
        assert np.array_equal(a, b)

    ds = load_dataset("cifar10", data_dir=tmp_path)  # finds the extracted folder
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [9, 1, 3]
    assert ds.shape == (3, 32, 32) and ds.class_names[0] == "airplane"


def test_cifar10_reader_errors(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar(folder)
    (folder / "data_batch_3.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DgmError, match="data_batch_3.bin has 100 bytes"):
        sources.read_cifar10_bin(folder)
    (folder / "test_batch.bin").unlink()
    with pytest.raises(DgmError, match="lacks test_batch.bin"):
        sources.read_cifar10_bin(folder)


# ---------------------------------------------------------------- folder:PATH


def save_png(path: Path, arr: np.ndarray):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_folder_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(2)
    written = {}
    for cls, n in (("cats", 6), ("dogs", 5)):
        for i in range(n):
            img = rng.integers(0, 256, (8, 6), dtype=np.uint8)
            save_png(tmp_path / "imgs" / cls / f"{i}.png", img)
            written[img.tobytes()] = cls
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}")
    assert ds.shape == (1, 8, 6) and ds.levels == 256 and ds.num_classes == 2
    assert ds.class_names == ["cats", "dogs"]
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [9, 1, 1]
    for split in (ds.train, ds.valid, ds.test):
        assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64
        for x, y in zip(split.x, split.y):
            assert written[x[0].numpy().tobytes()] == ds.class_names[y]
    again = load_dataset(f"folder:{tmp_path / 'imgs'}")
    assert torch.equal(again.train.x, ds.train.x)  # the split is fixed


def test_folder_colour_without_classes(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(10):
        if i == 0:
            save_png(tmp_path / f"{i}.png", rng.integers(0, 256, (5, 7, 4), dtype=np.uint8))  # RGBA
        elif i == 1:
            save_png(tmp_path / f"{i}.png", rng.integers(0, 256, (5, 7), dtype=np.uint8))  # grey
        else:
            save_png(tmp_path / f"{i}.png", rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    ds = sources.load_folder(tmp_path)
    assert ds.shape == (3, 5, 7) and ds.num_classes is None and ds.train.y is None
    assert len(ds.train) + len(ds.valid) + len(ds.test) == 10


def test_folder_errors(tmp_path):
    with pytest.raises(DgmError, match="no such folder"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DgmError, match="no images found"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    for i in range(10):
        save_png(tmp_path / "mixed" / f"a{i}.png", np.zeros((8, 8), np.uint8))
    save_png(tmp_path / "mixed" / "b.png", np.zeros((9, 8), np.uint8))
    with pytest.raises(DgmError, match=r"b\.png is 8x9 \(width x height\) while .*a0\.png is 8x8"):
        load_dataset(f"folder:{tmp_path / 'mixed'}")
    for i in range(3):
        save_png(tmp_path / "few" / f"{i}.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DgmError, match="only 3 images"):
        load_dataset(f"folder:{tmp_path / 'few'}")
    (tmp_path / "broken").mkdir()
    for i in range(10):
        save_png(tmp_path / "broken" / f"{i}.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "broken" / "5.png").write_bytes(b"not a png")
    with pytest.raises(DgmError, match="cannot read the image .*5.png"):
        load_dataset(f"folder:{tmp_path / 'broken'}")


# ---------------------------------------------------------------- npz:PATH


def test_npz_good(tmp_path):
    rng = np.random.default_rng(4)
    x_train = rng.integers(0, 256, (20, 6, 5, 3), dtype=np.uint8)  # NHWC colour
    x_test = rng.integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, x_test=x_test, y_train=np.arange(20) % 3, y_test=np.array([0, 1, 2, 3]))
    ds = load_dataset(f"npz:{path}")
    assert ds.shape == (3, 6, 5) and ds.levels == 256 and ds.num_classes == 4
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [18, 2, 4]  # valid = last 10 % of train
    assert torch.equal(ds.valid.x, torch.from_numpy(x_train[18:]).permute(0, 3, 1, 2))
    assert ds.valid.y.tolist() == [0, 1] and ds.train.y.dtype == torch.int64

    binary = rng.integers(0, 2, (10, 4, 4), dtype=np.uint8)  # [N, H, W], values 0/1, no labels
    np.savez(path, x_train=binary, x_valid=binary[:2], x_test=binary[:3])
    ds = sources.load_npz(path)
    assert ds.shape == (1, 4, 4) and ds.levels == 2 and ds.num_classes is None and ds.train.y is None
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [10, 2, 3]

    np.savez(path, x_train=binary[:, None], x_test=binary[:2, None], levels=np.array(5))
    ds = sources.load_npz(path)
    assert ds.levels == 5 and ds.shape == (1, 4, 4) and [len(ds.train), len(ds.valid)] == [9, 1]


def u8(*shape, value=0):
    return np.full(shape, value, np.uint8)


GOOD_X = dict(x_train=u8(10, 4, 4), x_test=u8(2, 4, 4))


@pytest.mark.parametrize(
    "arrays, match",
    [
        (dict(x_train=u8(10, 4, 4)), "missing x_test"),
        (dict(x_train=np.zeros((10, 4, 4)), x_test=np.zeros((2, 4, 4))), "x_train has dtype float64; expected uint8"),
        (dict(GOOD_X, y_train=np.zeros(9, int), y_test=np.zeros(2, int)), "y_train has 9 labels but x_train has 10"),
        (dict(GOOD_X, y_train=np.zeros(10, int)), "y_test is missing"),
        (dict(x_train=u8(10, 4, 4), x_test=u8(2, 4, 5)), "different image shapes"),
        (dict(GOOD_X, x_val=u8(2, 4, 4)), "unexpected x_val"),
        (dict(x_train=u8(10, 4, 4, value=7), x_test=u8(2, 4, 4), levels=np.array(4)), "value 7, but levels is 4"),
        (dict(GOOD_X, levels=np.array(300)), "expected one integer 2 .. 256"),
        (dict(GOOD_X, y_train=np.zeros(10), y_test=np.zeros(2)), "expected integer class labels"),
        (dict(GOOD_X, y_valid=np.zeros(2, int)), "y_valid but no x_valid"),
        (dict(x_train=u8(10, 4), x_test=u8(2, 4)), r"shape \[10, 4\]"),
    ],
)
def test_npz_bad(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DgmError, match=match):
        load_dataset(f"npz:{path}")


def test_npz_unreadable(tmp_path):
    with pytest.raises(DgmError, match="no such file"):
        sources.load_npz(tmp_path / "none.npz")
    path = tmp_path / "obj.npz"
    np.savez(path, x_train=np.array([{"a": 1}], dtype=object), x_test=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DgmError, match="cannot read it as an .npz of plain arrays"):
        sources.load_npz(path)
    path.write_bytes(b"garbage")
    with pytest.raises(DgmError, match="cannot read"):
        sources.load_npz(path)
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    path.write_bytes(buf.getvalue())
    with pytest.raises(DgmError, match=r"single array \(.npy\)"):
        sources.load_npz(path)
