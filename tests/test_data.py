"""ncmse.data: loading from the offline copies, balanced subsampling, and the tensor-resident loader.

Nothing here uses the network: the datasets come from the read-only offline copies in /work/shared/data
(override with NCMSE_OFFLINE_DATA); tests that need them are skipped, with the reason, where absent.
"""

import os
import pickle
import time
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torch.nn.functional as F

from ncmse import data as D
from ncmse import paths
from ncmse.data import Tensors, load_dataset
from ncmse.loader import TensorLoader, balanced_indices, channel_stats, crop_flip, holdout_split, subsample

SHARED = Path(os.environ.get("NCMSE_OFFLINE_DATA", "/work/shared/data"))
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"offline data copy {SHARED} not present")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def indexed(N=1000, K=10, C=3, H=8, W=8, seed=0) -> Tensors:
    """Synthetic data whose sample i carries its index in pixels (0, 0, 0) and (0, 0, 1): i = 256·a + b."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (N, C, H, W), generator=g, dtype=torch.uint8)
    i = torch.arange(N)
    x[:, 0, 0, 0] = (i // 256).to(torch.uint8)
    x[:, 0, 0, 1] = (i % 256).to(torch.uint8)
    return Tensors(x, i % K, [f"c{k}" for k in range(K)], "synthetic")


def raw(loader_batches):
    """Undo the identity-scaled normalization (mean 0, std 1/255 → x unchanged) and stack the batches."""
    xs, ys = zip(*loader_batches, strict=True)
    return torch.cat(xs).round().to(torch.uint8), torch.cat(ys)


def index_of(x):
    return x[:, 0, 0, 0].long() * 256 + x[:, 0, 0, 1].long()


IDENTITY = {"mean": 0.0, "std": 1 / 255}


# ------------------------------------------------------------------------------------------- loading

@needs_shared
@pytest.mark.parametrize("name,source", [("mnist", "MNIST"), ("fashion_mnist", "Fashion-MNIST")])
@pytest.mark.parametrize("split,N", [("train", 60_000), ("test", 10_000)])
def test_mnist_like_from_offline_copy(name, source, split, N):
    ds = load_dataset(name, split, root=SHARED, download=False)
    assert ds.x.shape == (N, 1, 28, 28) and ds.x.dtype == torch.uint8
    assert ds.y.shape == (N,) and ds.y.dtype == torch.int64
    assert ds.K == 10 and len(ds) == N and ds.source == source
    counts = torch.bincount(ds.y, minlength=10)
    assert int(counts.sum()) == N and int(counts.min()) > 0
    if name == "fashion_mnist":
        assert counts.tolist() == [N // 10] * 10
    assert 0 < ds.x.float().mean() < 255 and int(ds.x.max()) == 255
    x0, y0 = ds[0]
    assert x0.shape == (1, 28, 28) and int(y0) == int(ds.y[0])


def test_data_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("NCMSE_DATA_ROOT", raising=False)
    assert D.data_root() == Path(D.__file__).resolve().parent.parent / "data"
    (tmp_path / "env").mkdir()
    monkeypatch.setenv("NCMSE_DATA_ROOT", str(tmp_path / "env"))
    assert D.data_root() == tmp_path / "env"
    assert D.data_root(tmp_path / "explicit") == tmp_path / "explicit"


def test_bad_name_or_split():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet", "train", download=False)
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset("mnist", "val", download=False)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_data_is_a_helpful_file_not_found(name, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, "test", root=tmp_path, download=False)
    msg = str(info.value)
    assert str(tmp_path) in msg and "NCMSE_DATA_ROOT" in msg and "download=True" in msg and "\n" not in msg
    assert isinstance(info.value, D.DataMissing) and info.value.target is None and info.value.failure is None
    assert list(tmp_path.iterdir()) == []            # nothing created in the root


@pytest.mark.parametrize("name,module", [("mnist", "mnist"), ("cifar10", "cifar")])
def test_failed_download_is_a_file_not_found_without_urllib_trace(name, module, tmp_path, monkeypatch):
    import importlib

    def offline(*args, **kwargs):
        raise URLError("Name or service not known")

    monkeypatch.setattr(importlib.import_module(f"torchvision.datasets.{module}"), "download_and_extract_archive",
                        offline)
    root = tmp_path / "new" / "data"                                   # a root that does not exist yet
    with pytest.raises(D.DataMissing, match="failed") as info:
        load_dataset(name, "test", root=root, download=True)
    err = info.value
    assert isinstance(err, FileNotFoundError) and "\n" not in str(err)
    assert err.__cause__ is None and (err.__suppress_context__ or err.__context__ is None)   # no urllib trace
    assert "Name or service not known" in str(err) and "Name or service not known" in err.failure
    assert (err.what, err.root, err.target) == ({"mnist": "MNIST", "cifar10": "CIFAR-10"}[name], root, root)
    assert list(tmp_path.iterdir()) == []            # the folders the failed download created are gone
    again = pickle.loads(pickle.dumps(err))          # a local worker's error reaches the driver whole
    assert type(again) is D.DataMissing and str(again) == str(err) and again.failure == err.failure


@needs_shared
def test_cifar10_jpeg_copy_from_tarball(tmp_path_factory):
    tarball_dir = SHARED / "cifar10-jpeg"
    if not any(tarball_dir.glob("*.tar.gz")):
        pytest.skip(f"no CIFAR-10 JPEG tarball in {tarball_dir}")
    before = sorted(p.name for p in tarball_dir.iterdir())
    cache = tmp_path_factory.mktemp("cache")
    t0 = time.perf_counter()
    ds = load_dataset("cifar10", "test", root=SHARED, download=False, cache_dir=cache)
    first = time.perf_counter() - t0
    assert ds.x.shape == (10_000, 3, 32, 32) and ds.x.dtype == torch.uint8
    assert torch.bincount(ds.y, minlength=10).tolist() == [1000] * 10
    assert ds.classes == CIFAR10_CLASSES and ds.source == "CIFAR-10 (JPEG copy)"
    assert 30 < ds.x.float().mean() < 220                        # decoded pixels, not zeros
    assert sorted(p.name for p in (cache / "cifar10-jpeg").iterdir()) == ["test.pt"]   # the cache, nothing else
    assert sorted(p.name for p in tarball_dir.iterdir()) == before  # nothing written beside the tarball
    t0 = time.perf_counter()
    again = load_dataset("cifar10", "test", root=SHARED, download=False, cache_dir=cache)
    second = time.perf_counter() - t0
    assert torch.equal(again.x, ds.x) and torch.equal(again.y, ds.y) and again.source == ds.source
    assert second < max(2.0, first / 3), (first, second)
    print(f"CIFAR-10 JPEG test split: first load {first:.1f} s (read + decode), cached {second:.2f} s")


def test_cifar10_from_an_image_folder(tmp_path):
    """Any <root>/<name>/<split>/<class>/*.png|jpg layout is read, classes in sorted order, pixels intact."""
    import warnings

    from torchvision.io import encode_png, write_file

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 2, 3, 32, 32), generator=g, dtype=torch.uint8)   # (K, n, C, H, W)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for k, name in enumerate(CIFAR10_CLASSES):
            folder = tmp_path / "data" / "my-cifar" / "test" / name
            folder.mkdir(parents=True)
            for i in range(2):
                write_file(str(folder / f"{i:04d}.png"), encode_png(images[k, i]))
    ds = load_dataset("cifar10", "test", root=tmp_path / "data", download=False, cache_dir=tmp_path / "cache")
    assert ds.classes == CIFAR10_CLASSES and ds.source == "CIFAR-10 (JPEG copy)"
    assert torch.equal(ds.y, torch.arange(10).repeat_interleave(2))
    assert torch.equal(ds.x, images.flatten(0, 1))
    assert (tmp_path / "cache" / "cifar10-jpeg" / "test.pt").is_file()
    with pytest.raises(D.DataMissing, match="CIFAR-10 is not in"):   # no train/ folder
        load_dataset("cifar10", "train", root=tmp_path / "data", download=False, cache_dir=tmp_path / "cache")


# ----------------------------------------------------------------------------- damaged and misplaced files

IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def one_line_naming(err: BaseException, path: Path) -> str:
    """The error's message, checked to be one line that names ``path`` and says how to fix it."""
    msg = str(err)
    assert "\n" not in msg and str(path) in msg and "NCMSE_DATA_ROOT" in msg, msg
    return msg


def copy_idx(src: Path, dst: Path, keep: int | None = None) -> None:
    """Copy an idx file, or only its first ``keep`` bytes (the source is only ever read)."""
    with open(src, "rb") as f:
        dst.write_bytes(f.read() if keep is None else f.read(keep))


def refuse_downloads(monkeypatch):
    """Make any torchvision download fail the test."""
    import importlib

    def no_download(*args, **kwargs):
        raise AssertionError("a download was tried")

    for module in ("mnist", "cifar"):
        monkeypatch.setattr(importlib.import_module(f"torchvision.datasets.{module}"), "download_and_extract_archive",
                            no_download)


@needs_shared
def test_truncated_idx_file_is_a_data_file_error_not_a_download(tmp_path, monkeypatch):
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES:
        copy_idx(SHARED / "FashionMNIST" / "raw" / name, raw / name, 5000 if name == "t10k-images-idx3-ubyte" else None)
    bad = raw / "t10k-images-idx3-ubyte"
    repo_data = tmp_path / "repo-data"
    monkeypatch.setattr(paths, "DATA", repo_data)
    refuse_downloads(monkeypatch)
    for download in (False, True):
        with pytest.raises(D.DataFileError) as info:
            load_dataset("fashion_mnist", "test", root=tmp_path / "root", download=download)
        assert "5,000 bytes" in one_line_naming(info.value, bad) and info.value.path == bad
        assert isinstance(info.value, OSError) and not isinstance(info.value, FileNotFoundError)
    monkeypatch.setenv("NCMSE_DATA_ROOT", str(tmp_path / "root"))        # an offline root: no fallback either
    with pytest.raises(D.DataFileError, match="truncated"):
        load_dataset("fashion_mnist", "train", download=True)
    assert not repo_data.exists()


@pytest.mark.parametrize("header,expect", [((0x00000803, 10_000), "magic number 0x00000803"),
                                           ((0x00000801, 9_999), r"dims \(9999,\)")])
def test_idx_file_with_a_wrong_header(header, expect, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    bad = raw / "t10k-labels-idx1-ubyte"
    bad.write_bytes(b"".join(v.to_bytes(4, "big") for v in header) + bytes(10_000))     # the right size
    with pytest.raises(D.DataFileError, match=expect) as info:
        load_dataset("mnist", "test", root=tmp_path, download=False)
    one_line_naming(info.value, bad)


def test_idx_files_of_the_right_size_and_header_pass_the_check(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, (magic, dims) in D._MNIST_FILES.items():
        head = b"".join(v.to_bytes(4, "big") for v in (magic, *dims))
        (raw / name).write_bytes(head + bytes(int(torch.tensor(dims).prod())))
    D._check_idx_files(raw)                                 # no error


def cifar_images(n=2, seed=0):
    """Random images (10, n, 3, 32, 32) uint8, one row per CIFAR-10 class."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (10, n, 3, 32, 32), generator=g, dtype=torch.uint8)


def write_tarball(path: Path, images: torch.Tensor, splits=("train", "test")) -> Path:
    """A tarball ``copy/<split>/<class>/NNNN.png`` of the images (10, n, 3, 32, 32), like the offline JPEG copy."""
    import io
    import tarfile
    import warnings

    from torchvision.io import encode_png

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), tarfile.open(path, "w:gz") as tf:
        warnings.simplefilter("ignore", DeprecationWarning)
        for split in splits:
            for k, name in enumerate(CIFAR10_CLASSES):
                for i in range(images.shape[1]):
                    data = encode_png(images[k, i]).numpy().tobytes()
                    info = tarfile.TarInfo(f"copy/{split}/{name}/{i:04d}.png")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return path


def test_corrupt_cifar10_batch_is_a_data_file_error_not_the_jpeg_copy(tmp_path, monkeypatch):
    root = tmp_path / "root"
    write_tarball(root / "cifar10-jpeg" / "copy.tar.gz", cifar_images())
    batches = root / "cifar-10-batches-py"
    batches.mkdir()
    for name in ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        (batches / name).write_bytes(b"not a pickle")
    refuse_downloads(monkeypatch)
    for download in (False, True):
        with pytest.raises(D.DataFileError, match="md5") as info:
            load_dataset("cifar10", "test", root=root, download=download, cache_dir=tmp_path / "cache")
        one_line_naming(info.value, batches / "batches.meta")
    assert not (tmp_path / "cache").exists()               # the JPEG copy was not read


def test_cifar10_batch_check_reads_only_the_requested_split(tmp_path, monkeypatch):
    """Good meta and test batch, damaged training batch: the test split loads, the training split is an error."""
    import pickle

    from torchvision import datasets

    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    images = cifar_images(n=1)
    test_batch = {"data": images.flatten(0, 1).flatten(1).numpy(), "labels": list(range(10))}
    (batches / "test_batch").write_bytes(pickle.dumps(test_batch))
    (batches / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR10_CLASSES}))
    (batches / "data_batch_1").write_bytes(b"garbage")
    from torchvision.datasets.utils import calculate_md5

    monkeypatch.setattr(datasets.CIFAR10, "meta", {**datasets.CIFAR10.meta,
                                                   "md5": calculate_md5(str(batches / "batches.meta"))})
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [["test_batch", calculate_md5(str(batches / "test_batch"))]])
    ds = load_dataset("cifar10", "test", root=tmp_path, download=False, cache_dir=tmp_path / "cache")
    assert ds.source == "CIFAR-10" and ds.classes == CIFAR10_CLASSES and torch.equal(ds.x, images.flatten(0, 1))
    with pytest.raises(D.DataFileError, match="data_batch_1 fails its md5 check"):
        load_dataset("cifar10", "train", root=tmp_path, download=False, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("damage", ["torn", "foreign"])
def test_damaged_decoded_cache_is_moved_aside_and_decoded_again(damage, tmp_path, caplog):
    import logging

    images = cifar_images()
    root, cache_dir = tmp_path / "root", tmp_path / "cache"
    write_tarball(root / "cifar10-jpeg" / "copy.tar.gz", images)
    first = load_dataset("cifar10", "test", root=root, download=False, cache_dir=cache_dir)
    assert torch.equal(first.x, images.flatten(0, 1))
    cache = cache_dir / "cifar10-jpeg" / "test.pt"
    corrupt = cache.with_name("test.pt.corrupt")
    corrupt.write_bytes(b"an older one")
    if damage == "torn":
        blob = cache.read_bytes()
        cache.write_bytes(blob[:len(blob) // 2])
    else:
        torch.save({"weights": torch.zeros(3)}, cache)
    damaged = cache.read_bytes()
    with caplog.at_level(logging.WARNING):
        again = load_dataset("cifar10", "test", root=root, download=False, cache_dir=cache_dir)
    assert torch.equal(again.x, first.x) and torch.equal(again.y, first.y) and again.source == "CIFAR-10 (JPEG copy)"
    records = [r for r in caplog.records if r.name.startswith("ncmse")]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    line = records[0].getMessage()
    assert "\n" not in line and str(cache) in line and str(corrupt) in line
    assert corrupt.read_bytes() == b"an older one"              # the older one is kept, the new one beside it
    assert corrupt.with_name("test.pt.corrupt.1").read_bytes() == damaged
    assert torch.load(cache, weights_only=True)["format"] == D._CACHE_FORMAT   # and rebuilt
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_dataset("cifar10", "test", root=root, download=False, cache_dir=cache_dir)
    assert not [r for r in caplog.records if r.name == "ncmse.data"]


def test_truncated_tarball_is_a_data_file_error(tmp_path):
    tarball = write_tarball(tmp_path / "root" / "cifar10-jpeg" / "copy.tar.gz", cifar_images())
    blob = tarball.read_bytes()
    tarball.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(D.DataFileError, match="truncated") as info:
        load_dataset("cifar10", "test", root=tmp_path / "root", download=False, cache_dir=tmp_path / "cache")
    one_line_naming(info.value, tarball)
    tarball.write_bytes(b"")
    with pytest.raises(D.DataFileError) as info:
        load_dataset("cifar10", "test", root=tmp_path / "root", download=False, cache_dir=tmp_path / "cache")
    one_line_naming(info.value, tarball)


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_data_root_env_that_is_not_a_folder(kind, tmp_path, monkeypatch):
    env = tmp_path / "no-such-folder"
    if kind == "a file":
        env.write_text("")
    monkeypatch.setenv("NCMSE_DATA_ROOT", str(env))
    for call in (D.data_root, lambda: load_dataset("mnist", "test", download=False),
                 lambda: D.describe_source("cifar10")):
        with pytest.raises(FileNotFoundError) as info:
            call()
        msg = str(info.value)
        assert msg.startswith(f"NCMSE_DATA_ROOT={env} is not a folder;") and "\n" not in msg and "unset it" in msg
    assert D.data_root(tmp_path) == tmp_path                  # an explicit root wins over the variable


def test_describe_source(tmp_path, monkeypatch):
    import warnings

    from torchvision.io import encode_png, write_file

    repo_data = tmp_path / "repo-data"
    monkeypatch.setattr(paths, "DATA", repo_data)
    monkeypatch.delenv("NCMSE_DATA_ROOT", raising=False)
    root, cache_dir = tmp_path / "root", tmp_path / "cache"
    root.mkdir()
    kw = dict(root=root, cache_dir=cache_dir)
    assert D.describe_source("mnist", **kw) == "MNIST (idx files)"
    assert D.describe_source("Fashion-MNIST", **kw) == "Fashion-MNIST (idx files)"
    assert D.describe_source("cifar10", **kw) == "CIFAR-10 (download)"
    assert D.describe_source("cifar10", download=False, **kw) == "CIFAR-10 (not found)"

    tarball = write_tarball(root / "cifar10-jpeg" / "copy.tar.gz", cifar_images())
    jpeg = f"CIFAR-10 (JPEG copy: copy.tar.gz, {tarball.stat().st_size} bytes)"
    assert D.describe_source("cifar10", **kw) == jpeg
    loaded = load_dataset("cifar10", "test", root=root, download=False, cache_dir=cache_dir)
    assert loaded.source == "CIFAR-10 (JPEG copy)"
    assert D.describe_source("cifar10", **kw) == jpeg                 # the decoded cache stands for the tarball

    with warnings.catch_warnings():                                    # an image folder comes before the tarball
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in CIFAR10_CLASSES:
            (root / "my-cifar" / "train" / name).mkdir(parents=True)
            write_file(str(root / "my-cifar" / "train" / name / "0000.png"), encode_png(cifar_images(1)[0, 0]))
    assert D.describe_source("cifar10", split="train", **kw) == "CIFAR-10 (JPEG copy: my-cifar, 10 class folders)"
    assert D.describe_source("cifar10", split="test", **kw) == jpeg

    (root / "cifar-10-batches-py").mkdir()                              # the real batches appear
    assert D.describe_source("cifar10", **kw) == "CIFAR-10 (python batches)"
    assert D.describe_source("cifar10", download=False, **kw) == "CIFAR-10 (python batches)"
    assert D.describe_source("mnist", **kw) == "MNIST (idx files)"

    (root / "cifar-10-batches-py").rmdir()                              # an offline root: batches downloaded
    monkeypatch.setenv("NCMSE_DATA_ROOT", str(root))                    # into <repo>/data are read with download
    (repo_data / "cifar-10-batches-py").mkdir(parents=True)
    assert D.describe_source("cifar10", cache_dir=cache_dir) == "CIFAR-10 (python batches)"
    assert D.describe_source("cifar10", download=False, cache_dir=cache_dir, split="test") == jpeg


@needs_shared
def test_describe_source_of_the_offline_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DATA", tmp_path / "repo-data")
    tarballs = sorted((SHARED / "cifar10-jpeg").glob("*.tar.gz"))
    if not tarballs:
        pytest.skip(f"no CIFAR-10 JPEG tarball in {SHARED / 'cifar10-jpeg'}")
    got = D.describe_source("cifar10", root=SHARED, cache_dir=tmp_path)
    assert got == f"CIFAR-10 (JPEG copy: {tarballs[0].name}, {tarballs[0].stat().st_size} bytes)"
    monkeypatch.setenv("NCMSE_DATA_ROOT", str(SHARED))
    assert D.describe_source("cifar10", cache_dir=tmp_path) == got
    assert D.describe_source("mnist") == "MNIST (idx files)"


# --------------------------------------------------------------------------------------- subsampling

def test_subsample_is_balanced_and_seeded():
    data = Tensors(torch.zeros(300, 1, 2, 2, dtype=torch.uint8), torch.arange(300) % 3 + (torch.arange(300) < 30),
                   ["a", "b", "c", "d"], "synthetic")
    counts = torch.bincount(data.y, minlength=4).tolist()
    assert counts == [90, 100, 100, 10]
    sub = subsample(data, 10, seed=0)
    assert len(sub) == 40 and torch.bincount(sub.y, minlength=4).tolist() == [10] * 4
    a = balanced_indices(data.y, 8, seed=3, K=4)
    assert torch.equal(a, balanced_indices(data.y, 8, seed=3, K=4))
    assert not torch.equal(a, balanced_indices(data.y, 8, seed=4, K=4))
    assert a.unique().numel() == a.numel() and torch.equal(a, a.sort().values)
    with pytest.raises(ValueError, match="exceeds"):
        subsample(data, 11, seed=0)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="positive integer"):
            subsample(data, bad, seed=0)


def test_subsample_keeps_rows_with_their_labels():
    data = indexed(N=500)
    sub = subsample(data, 7, seed=11)
    idx = index_of(sub.x)
    assert torch.equal(sub.y, data.y[idx]) and torch.equal(sub.x, data.x[idx])
    assert torch.equal(idx, balanced_indices(data.y, 7, seed=11, K=10))


# ----------------------------------------------------------------------------------------- the loader

@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_loader_covers_every_sample_once_per_epoch(augment, drop_last):
    data = indexed(N=1000, K=1000)                       # label = index, so it survives augmentation
    loader = TensorLoader(data, 64, drop_last=drop_last, augment=augment, **IDENTITY)
    assert len(loader) == (1000 // 64 if drop_last else 16)
    batches = list(loader)
    assert len(batches) == len(loader)
    assert all(x.shape == (64, 3, 8, 8) for x, _ in batches[:-1])
    x, y = raw(batches)
    expected = 15 * 64 if drop_last else 1000
    assert y.numel() == expected and y.unique().numel() == expected
    assert not torch.equal(y, torch.arange(expected))          # shuffled
    if not augment:
        assert torch.equal(x, data.x[y]) and torch.equal(index_of(x), y)


def test_loader_order_is_set_by_seed_and_epoch():
    data = indexed(N=1000)

    def order(loader, epoch=None):
        if epoch is not None:
            loader.set_epoch(epoch)
        return index_of(raw(loader)[0])

    a = TensorLoader(data, 100, seed=5, **IDENTITY)
    e0, e1, e2 = order(a), order(a), order(a)                  # each pass advances the epoch
    assert not torch.equal(e0, e1) and not torch.equal(e1, e2)
    assert torch.equal(order(a, 0), e0) and torch.equal(order(a, 2), e2)
    resumed = TensorLoader(data, 100, seed=5, **IDENTITY)
    assert torch.equal(order(resumed, 1), e1)                  # a resumed run sees the same order
    assert torch.equal(order(TensorLoader(data, 37, seed=5, **IDENTITY), 1), e1)   # independent of batch size
    assert not torch.equal(order(TensorLoader(data, 100, seed=6, **IDENTITY), 0), e0)
    plain = TensorLoader(data, 100, shuffle=False, **IDENTITY)
    assert torch.equal(order(plain), torch.arange(1000)) and torch.equal(order(plain), torch.arange(1000))


def naive_candidates(x, p):
    """All (2p+1)² crops × 2 flips of each image, by slicing a padded copy: (B, 2(2p+1)², C, H, W)."""
    B, C, H, W = x.shape
    padded = F.pad(x, (p, p, p, p))
    crops = [padded[:, :, i:i + H, j:j + W] for i in range(2 * p + 1) for j in range(2 * p + 1)]
    crops += [c.flip(-1) for c in crops]
    return torch.stack(crops, 1)


def test_crop_flip_matches_slicing_a_padded_copy():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 5, 7), generator=g, dtype=torch.uint8)
    dy, dx = torch.tensor([0, 8, 4, 3, 8, 0]), torch.tensor([0, 8, 4, 6, 0, 2])
    flip = torch.tensor([False, True, False, True, False, True])
    got = crop_flip(x, dy, dx, flip, padding=4)
    padded = F.pad(x, (4, 4, 4, 4))
    for b in range(6):
        ref = padded[b, :, dy[b]:dy[b] + 5, dx[b]:dx[b] + 7]
        assert torch.equal(got[b], ref.flip(-1) if flip[b] else ref)
    assert torch.equal(got[2], x[2])                           # offset = padding, no flip: the image itself
    assert torch.equal(crop_flip(x.float(), dy, dx, flip, padding=4), got.float())


def test_loader_augmentation_is_applied_and_deterministic():
    data = indexed(N=512, C=3, H=12, W=12)
    kw = dict(seed=2, **IDENTITY)
    plain = TensorLoader(data, 128, **kw)
    aug = TensorLoader(data, 128, augment=True, **kw)
    px, py = raw(plain)
    ax, ay = raw(aug)
    assert ax.shape == px.shape == (512, 3, 12, 12) and torch.equal(ay, py)   # same order, labels kept
    changed = (ax != px).flatten(1).any(1).float().mean()
    assert changed > 0.9                                       # 1/162 of the draws are the identity
    aug.set_epoch(0)
    ax2, _ = raw(aug)
    assert torch.equal(ax, ax2)                                # deterministic for seed and epoch
    ax3, _ = raw(aug)
    assert not torch.equal(ax, ax3)                            # the next epoch draws anew
    # every augmented image is one of the crops/flips of its own original (first 64 checked)
    cand = naive_candidates(px[:64], 4)                        # (64, 162, C, H, W)
    match = (cand == ax[:64, None]).flatten(2).all(2)          # (64, 162)
    assert bool(match.any(1).all())
    first_match = match.float().argmax(1)
    assert bool((first_match >= 81).any()) and bool((first_match < 81).any())   # both flipped and not
    assert bool((first_match % 81 != 40).any())                # offsets other than the centre


def test_loader_normalization():
    data = indexed(N=2000, C=3)
    x, _ = raw(TensorLoader(data, 500, shuffle=False, **IDENTITY))
    assert torch.equal(x, data.x)                              # mean 0, std 1/255: the raw pixels
    mean, std = channel_stats(data)
    ref = data.x.double() / 255
    assert torch.allclose(mean, ref.mean((0, 2, 3))) and torch.allclose(std, ref.std((0, 2, 3), correction=0))
    z = torch.cat([xb for xb, _ in TensorLoader(data, 500)])   # default: the data's own statistics
    assert z.dtype == torch.float32
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std((0, 2, 3), correction=0), torch.ones(3), atol=1e-5)
    given = TensorLoader(data, 500, shuffle=False, mean=[0.5, 0.5, 0.5], std=[0.25, 0.5, 1.0])
    xb, _ = next(iter(given))
    ref = (data.x[:500].float() / 255 - 0.5) / torch.tensor([0.25, 0.5, 1.0])[:, None, None]
    assert torch.allclose(xb, ref, atol=1e-6)


def test_loader_validation():
    data = indexed(N=100)
    for bad in (0, -3, 2.0):
        with pytest.raises(ValueError, match="batch_size"):
            TensorLoader(data, bad)
    with pytest.raises(ValueError, match="one per channel"):
        TensorLoader(data, 10, mean=[0.1, 0.2], std=[1, 1])
    with pytest.raises(ValueError, match="positive"):
        TensorLoader(data, 10, mean=0.0, std=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="epoch"):
        TensorLoader(data, 10).set_epoch(-1)
    with pytest.raises(ValueError, match="uint8"):
        Tensors(torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.int64), ["a"], "x")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loader_same_batches_on_cuda_as_on_cpu():
    data = indexed(N=700)
    cpu = TensorLoader(data, 128, augment=True, seed=3)
    gpu = TensorLoader(data, 128, augment=True, seed=3, device="cuda")
    for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
        assert xg.device.type == "cuda"
        assert torch.equal(yc, yg.cpu()) and torch.allclose(xc, xg.cpu(), atol=1e-6)


def test_holdout_split_is_disjoint_balanced_and_seeded():
    y = torch.arange(6).repeat_interleave(20)
    x = torch.arange(len(y), dtype=torch.uint8).view(-1, 1, 1, 1)     # x identifies the sample
    data = Tensors(x, y, [str(k) for k in range(6)], "toy")
    train, held = holdout_split(data, 12, 5, seed=3)
    assert torch.bincount(train.y, minlength=6).tolist() == [12] * 6
    assert torch.bincount(held.y, minlength=6).tolist() == [5] * 6
    assert not set(train.x.flatten().tolist()) & set(held.x.flatten().tolist())
    again, _ = holdout_split(data, 12, 5, seed=3)
    other, _ = holdout_split(data, 12, 5, seed=4)
    assert torch.equal(train.x, again.x) and not torch.equal(train.x, other.x)
    with pytest.raises(ValueError, match="exceeds"):
        holdout_split(data, 16, 5, seed=0)
    with pytest.raises(ValueError, match="holdout_per_class"):
        holdout_split(data, 10, 0, seed=0)
