"""Files without pickle: atomic writes, safetensors for tensors, JSON for everything else.

`pack_state` turns a nested state (an optimizer's state_dict, say) into a flat dict of
tensors plus a JSON skeleton that says where each tensor goes; `unpack_state` reverses
it exactly, including integer dict keys.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dgm.errors import DgmError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file and its metadata; a missing or damaged file is a DgmError."""
    path = Path(path)
    if not path.is_file():
        raise DgmError(f"{path} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as e:
        raise DgmError(f"{path} is corrupt or not a safetensors file ({e}); restore it or start a new run") from None


def pack_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """JSON skeleton of `obj`; every tensor moves into `tensors` under a key starting with prefix."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}#{len(tensors)}"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__items__": [[pack_state(k, tensors, prefix), pack_state(v, tensors, prefix)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [pack_state(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [pack_state(v, tensors, prefix) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} without pickle")


def unpack_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__tuple__" in skeleton:
            return tuple(unpack_state(v, tensors) for v in skeleton["__tuple__"])
        return {unpack_state(k, tensors): unpack_state(v, tensors) for k, v in skeleton["__items__"]}
    if isinstance(skeleton, list):
        return [unpack_state(v, tensors) for v in skeleton]
    return skeleton


def read_images(path: Path, shape: tuple[int, int, int], levels: int) -> torch.Tensor:
    """Images [N, C, H, W] in [0, 1], rounded to `levels` values, from an .npz holding an array `x`
    ([N, C, H, W] or [N, H, W]; floats in [0, 1] or uint8 0..255) or from one image file of size H x W."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise DgmError(f"no file {path}; give an .npz with an array x, or a PNG image")
    c, h, w = shape
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                if "x" not in f:
                    raise DgmError(f"{path} has no array named x (it has: {', '.join(f.files) or 'nothing'})")
                x = f["x"]
        except (OSError, ValueError) as e:
            raise DgmError(f"cannot read {path} as an .npz file ({e})") from None
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            x = np.asarray(Image.open(path).convert("L" if c == 1 else "RGB"))
        except (UnidentifiedImageError, OSError):
            raise DgmError(f"cannot read {path} as an image; give a PNG or an .npz with an array x") from None
        x = x[None, None] if c == 1 else x.transpose(2, 0, 1)[None]
    if x.ndim == 3 and c == 1:
        x = x[:, None]
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise DgmError(f"{path} holds images of shape {tuple(x.shape)}, the model needs [N, {c}, {h}, {w}]"
                       + (f" or [N, {h}, {w}]" if c == 1 else ""))
    x = torch.from_numpy(x.astype(np.float32) / 255 if x.dtype == np.uint8 else x.astype(np.float32))
    if x.numel() == 0 or x.min() < 0 or x.max() > 1:
        raise DgmError(f"{path}: pixel values must lie in [0, 1] (floats) or 0..255 (uint8)")
    return torch.round(x * (levels - 1)) / (levels - 1)
