"""`dgm serve RUN`: a local web page to explore a trained model, a small ASGI app (Starlette, run by uvicorn).

The page shows what the model can do, asked of its methods as everywhere in dgm: a grid of samples from a
seed (and a class, for a model that samples by label); sliders over the latent code, decoded as they move;
a canvas whose drawing is encoded and reconstructed, or completed from its top rows by a pixel model; and
the decoded path between the codes of two images (test images, or the drawing).

Sliders. With codes from an encoder, slider i moves z along a direction v_i from the mean test code m, in
units of the codes' standard deviation s_i along it: z = m + sum_i t_i s_i v_i, t_i in [-3, 3]. The
directions are the latent dimensions themselves when there are at most 8, else the top 8 principal
directions of the test codes (computed once, at start). A model without an encoder moves its first
dimensions of z ~ N(0, I): m = 0, s_i = 1.

Endpoints (JSON in, PNG or JSON out; a mistake is a 4xx whose body is {"error": one sentence}):

    GET  /                               the page
    GET  /api/info                       what the model can do, its sliders, classes, image shape, limits
    GET  /api/sample?n=16&seed=0&label=  PNG: a grid of n samples
    GET  /api/test-image?index=0         PNG: one test image
    POST /api/decode       {"z": [t_1, ..., t_k], "label": 3}                  PNG: the decoded slider code
    POST /api/reconstruct  {"image": IMAGE, "label": 3}                        PNG: the image as the model
                                                                                  sees it, its reconstruction
    POST /api/interpolate  {"a": IMAGE, "b": IMAGE, "steps": 8, "mode": "slerp", "label_a", "label_b"}
                                                                               PNG: decodes along the path
    POST /api/complete     {"image": IMAGE, "rows": 4, "n": 4, "seed": 0, "label": 3}
                                                                               PNG: kept rows, n completions

IMAGE is a test image's index, a data URL of an image file (resized to the model's size, transparency on
black), or a pixel array [H, W] or [C, H, W] of values in [0, 1]; images are rounded to the model's levels.
The model is loaded once and evaluated under torch.no_grad(), one request at a time (a lock: pixel models
switch modes while sampling), in Starlette's thread pool, so the server stays responsive meanwhile.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import re
import socket
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dgm.errors import DgmError
from dgm.models import batch_fields, given

MAX_BODY = 4 << 20  # bytes of a request body
MAX_PIXELS = 4096 * 4096  # of an uploaded image, before it is resized
MAX_SAMPLES = 64
MAX_STEPS = 16
MAX_COMPLETIONS = 8
MAX_SLIDERS = 8
SLIDER_RANGE = 3.0  # sliders move t_i in [-3, 3] standard deviations
MAX_CODES = 2000  # test images encoded for the sliders' directions
log = logging.getLogger("dgm.serve")


class ApiError(Exception):
    """A request the server refuses: its HTTP status and one sentence saying what to send instead."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def whole_number(value: Any, name: str, low: int, high: int) -> int:
    """value as an int in low .. high (a JSON integer, or the text of one from a query string)."""
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,20}", value.strip()):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(422, f"{name} must be a whole number from {low} to {high}, got {_shown(value)}")
    return value


@dataclass
class Sliders:
    """z = mean + (t * scales) @ directions for slider values t [k]."""

    mean: torch.Tensor  # [D]
    directions: torch.Tensor  # [k, D], orthonormal rows
    scales: torch.Tensor  # [k]
    kind: str  # "dimensions" or "principal directions"

    def code(self, t: torch.Tensor) -> torch.Tensor:
        return self.mean + (t * self.scales) @ self.directions

    def coordinates(self, z: torch.Tensor) -> torch.Tensor:
        """The slider values t of codes z [B, D] (their projection, where k < D): [B, k]."""
        return ((z - self.mean) @ self.directions.T) / self.scales.clamp_min(1e-12)


def slider_basis(codes: torch.Tensor | None, latent_dim: int, k: int = MAX_SLIDERS) -> Sliders:
    """The sliders of codes [N, D]: the dimensions (D <= k) or the top k principal directions, about the
    mean code, scaled by the codes' standard deviation along each; without codes the first k dimensions of
    N(0, I). A principal direction's sign is fixed so that its largest entry is positive."""
    if codes is None or len(codes) < 2:
        d = min(k, latent_dim)
        return Sliders(torch.zeros(latent_dim), torch.eye(latent_dim)[:d], torch.ones(d), "dimensions")
    codes = codes.double()
    mean = codes.mean(0)
    if codes.shape[1] <= k:
        directions = torch.eye(codes.shape[1], dtype=codes.dtype)
        kind = "dimensions"
    else:
        directions = torch.linalg.svd(codes - mean, full_matrices=False)[2][:k]  # rows: principal directions
        signs = directions.gather(1, directions.abs().argmax(1, keepdim=True)).sign()
        directions = directions * signs
        kind = "principal directions"
    scales = ((codes - mean) @ directions.T).std(0)
    return Sliders(mean.float(), directions.float(), scales.float(), kind)


def png(images: torch.Tensor, nrow: int, min_size: int = 64) -> bytes:
    """PNG of images [N, C, H, W] in [0, 1] as a grid, nrow per row, 2 pixels of grey between; each image
    enlarged by a whole factor (nearest neighbour) to at least min_size pixels wide."""
    from PIL import Image
    from torchvision.utils import make_grid

    images = images.detach().float().cpu().clamp(0, 1)
    scale = max(1, -(-min_size // images.shape[-1]))
    if scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=0.5)
    if len(images) == 1:  # make_grid returns a lone image as it is
        grid = torch.nn.functional.pad(grid, (2, 2, 2, 2), value=0.5)
    pixels = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if images.shape[1] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def scatter_png(points: torch.Tensor) -> bytes:
    """PNG of 2-D points [N, 2] (samples of a model of toy points); a Figure without pyplot, so thread-safe."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4), dpi=80)
    ax = fig.subplots()
    p = points.detach().float().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=3)
    ax.set_aspect("equal")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


class Explorer:
    """A loaded model, its test images and its sliders: what every endpoint computes with."""

    def __init__(self, model: torch.nn.Module, dataset=None, name: str = "", data_note: str | None = None):
        self.model = model.eval()
        self.cfg = model.cfg
        self.name = name
        self.shape = tuple(self.cfg.data_shape)
        self.images = len(self.shape) == 3
        self.levels = self.cfg.levels
        self.lock = threading.Lock()
        self.device = next(model.parameters()).device
        self.data_note = data_note
        self.test_x: torch.Tensor | None = None
        self.test_y: torch.Tensor | None = None
        self.class_names = None
        if dataset is not None and self.images and tuple(dataset.shape) == self.shape:
            g = torch.Generator().manual_seed(0)  # a dynamically binarized set draws its pixels once
            self.test_x = dataset.to_float(dataset.test.x, generator=g)
            field = batch_fields(model, dataset, dataset.test)[0]
            self.test_y = None if field is None else field
            self.class_names = dataset.class_names
        with torch.no_grad():
            self.sliders = self._sliders()

    # --- what the model can do ------------------------------------------------------------------
    def has(self, method: str) -> bool:
        return callable(getattr(self.model, method, None))

    @property
    def conditional(self) -> bool:
        return bool(getattr(self.model, "conditional", False))

    @property
    def classes(self) -> int | None:
        """How many class labels the page may give (None: the model takes none)."""
        takes = self.conditional or getattr(self.model, "samples_by_label", False)
        return self.cfg.num_classes if takes and self.cfg.num_classes else None

    def decoder(self) -> Callable | None:
        """decode(z, y) or, for a model without an encoder, generate(z, y)."""
        for method in ("decode", "generate"):
            if self.has(method):
                return getattr(self.model, method)
        return None

    def reasons(self) -> dict[str, str]:
        """Why each part of the page is off for this model (absent: on)."""
        why: dict[str, str] = {}
        labelled = not self.conditional or self.classes is not None
        if not self.has("sample"):
            why["sample"] = f"{type(self.model).__name__} cannot sample"
        if not self.images:
            for part in ("sliders", "reconstruct", "interpolate", "complete"):
                why[part] = f"this model's data are points of shape {self.shape}, not images"
            return why
        if self.sliders is None:
            why["sliders"] = f"{type(self.model).__name__} has no decoder of a latent code"
        elif not labelled:
            why["sliders"] = "the model is conditioned on vectors this page cannot set"
        if not (self.has("encode") and self.has("decode")):
            why["reconstruct"] = why["interpolate"] = f"{type(self.model).__name__} has no encoder and decoder"
        if not self.has("complete"):
            why["complete"] = f"{type(self.model).__name__} cannot complete images (autoregressive models can)"
        return why

    def info(self) -> dict[str, Any]:
        why = self.reasons()
        sliders = self.sliders
        return {
            "model": self.cfg.name, "run": self.name, "shape": list(self.shape), "levels": self.levels,
            "classes": self.classes, "conditional": self.conditional,
            "captions": self.has("condition_of"), "boxes": bool(getattr(self.cfg, "box", False)),
            "vocabulary": list(getattr(self.cfg, "vocabulary", ())) if self.has("condition_of") else None,
            "class_names": self.class_names if self.classes else None,
            "test_images": 0 if self.test_x is None else len(self.test_x),
            "data_note": self.data_note,
            "can": {part: part not in why for part in ("sample", "sliders", "reconstruct", "interpolate",
                                                         "complete")},
            "why_not": why,
            "sliders": None if sliders is None else {
                "count": len(sliders.scales), "range": SLIDER_RANGE, "kind": sliders.kind,
                "latent_dim": sliders.mean.shape[0], "scales": [round(s, 6) for s in sliders.scales.tolist()]},
            "limits": {"n": MAX_SAMPLES, "steps": MAX_STEPS, "completions": MAX_COMPLETIONS,
                       "rows": self.shape[1] if self.images else None, "body_bytes": MAX_BODY},
        }

    def _sliders(self) -> Sliders | None:
        if not self.images or self.decoder() is None:
            return None
        if self.has("encode") and self.test_x is not None and (not self.conditional or self.test_y is not None):
            x, y = self.test_x[:MAX_CODES], None if self.test_y is None else self.test_y[:MAX_CODES]
            codes = torch.cat([self.model.encode(x[i:i + 500].to(self.device),
                                                 **given(self.model, None if y is None else y[i:i + 500]))
                               for i in range(0, len(x), 500)]).cpu()
            return slider_basis(codes.flatten(1), codes.flatten(1).shape[1])
        latent_dim = getattr(self.cfg, "latent_dim", None)
        return None if not latent_dim else slider_basis(None, latent_dim)

    # --- inputs -----------------------------------------------------------------------------------
    def label(self, value: Any, name: str = "label") -> int | None:
        if value is None:
            return None
        if self.classes is None:
            raise ApiError(422, f"{name} was given, but {type(self.model).__name__} takes no class labels")
        return whole_number(value, name, 0, self.classes - 1)

    def condition(self, label: int | None, test_field: torch.Tensor | None, name: str) -> dict[str, Any]:
        """The keyword y for a conditional model: the label given, else the test image's own field."""
        if not self.conditional:
            return {}
        if label is not None:
            return {"y": torch.tensor([label], device=self.device)}
        if test_field is not None:
            return {"y": test_field.to(self.device)}
        raise ApiError(422, f"{type(self.model).__name__} is conditional, so a drawn image needs its class: "
                            f"give {name}")

    def image(self, value: Any, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x [1, C, H, W] in [0, 1] rounded to the model's levels, the test image's field or None)."""
        c, h, w = self.shape
        if isinstance(value, int) and not isinstance(value, bool):
            if self.test_x is None:
                raise ApiError(422, f"{name} is a test image's index, but the run's test images are not loaded"
                                    + (f" ({self.data_note})" if self.data_note else ""))
            index = whole_number(value, name, 0, len(self.test_x) - 1)
            return self.test_x[index:index + 1], None if self.test_y is None else self.test_y[index:index + 1]
        if isinstance(value, str):
            x = self._decode_image_file(value, name)
        elif isinstance(value, list):
            try:
                a = np.asarray(value, dtype=np.float64)
            except (ValueError, TypeError, RecursionError):
                raise ApiError(422, f"{name} must be a rectangular array of numbers") from None
            sent = list(a.shape)
            if c == 1 and a.ndim == 2:
                a = a[None]
            if a.shape != (c, h, w):
                shapes = f"[{c}, {h}, {w}]" + (f" or [{h}, {w}]" if c == 1 else "")
                raise ApiError(422, f"{name} has shape {sent}; this model takes {shapes}")
            if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
                raise ApiError(422, f"{name}'s pixel values must lie in [0, 1]")
            x = torch.from_numpy(a).float()
        else:
            raise ApiError(422, f"{name} must be a test image's index, a data URL of an image or a pixel array, "
                                f"got {_shown(value)}")
        if self.levels >= 2:
            x = torch.round(x * (self.levels - 1)) / (self.levels - 1)
        return x[None], None

    def _decode_image_file(self, value: str, name: str) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        c, h, w = self.shape
        head = re.match(r"data:image/[\w.+-]+;base64,", value)
        if not head:
            raise ApiError(422, f"{name} must be a data URL such as data:image/png;base64,..., a test image's "
                                "index or a pixel array")
        try:
            raw = base64.b64decode(value[head.end():], validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, f"{name} is not valid base64 after its data:image header") from None
        try:
            picture = Image.open(io.BytesIO(raw))
            width, height = picture.size
            if width * height > MAX_PIXELS:
                raise ApiError(413, f"{name} is {width} x {height} pixels; send at most "
                                    f"{int(MAX_PIXELS ** 0.5)} x {int(MAX_PIXELS ** 0.5)}")
            rgba = picture.convert("RGBA")
        except Image.DecompressionBombError:
            raise ApiError(413, f"{name} is too many pixels to open; send a smaller image") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise ApiError(422, f"{name} is not an image file that can be read (send a PNG)") from None
        on_black = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
        resized = on_black.convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.BOX)
        pixels = np.asarray(resized, dtype=np.float32) / 255
        return torch.from_numpy(pixels[None] if c == 1 else pixels.transpose(2, 0, 1).copy())

    # --- what the endpoints compute (under the lock and torch.no_grad()) ----------------------------
    def require(self, part: str) -> None:
        why = self.reasons().get(part)
        if why:
            raise ApiError(400, f"this page part is off: {why}")

    def sample(self, n: int, seed: int, label: int | None, caption: str | None = None,
               box: list[int] | None = None) -> bytes:
        from dgm.api import draw

        self.require("sample")
        if caption is None and box is None:
            x = draw(self.model, n, seed=seed, label=label)
        elif not self.has("condition_of"):
            raise ApiError(400, f"{type(self.model).__name__} takes no caption or box; text-gan and www-gan do")
        elif caption is None:
            raise ApiError(400, "a box places the object a caption describes; give a caption too")
        else:  # the model's own sentence for an empty caption, an unknown word or a box off the canvas (422)
            y = self.model.condition_of([caption] * n, box)
            x = self.model.sample(n, y=y, generator=torch.Generator(device=self.device).manual_seed(seed))
        if x.dim() != 4:
            return scatter_png(x)
        return png(x, nrow=math.ceil(n ** 0.5))

    def test_image(self, index: int) -> bytes:
        x, _ = self.image(index, "index")
        return png(x, nrow=1, min_size=128)

    def decode(self, t: torch.Tensor, label: int | None) -> bytes:
        self.require("sliders")
        z = self.sliders.code(t)[None].to(self.device)
        y = {"y": torch.tensor([label or 0], device=self.device)} if self.conditional else {}
        return png(self.decoder()(z, **y), nrow=1, min_size=128)

    def reconstruct(self, x, field, label: int | None) -> bytes:
        self.require("reconstruct")
        y = self.condition(label, field, "label")
        x = x.to(self.device)
        return png(torch.cat([x, self.model.decode(self.model.encode(x, **y), **y)]), nrow=2, min_size=128)

    def interpolate(self, a, b, steps: int, mode: str) -> bytes:
        from dgm.viz import label_mix, slerp

        self.require("interpolate")
        (xa, ya), (xb, yb) = a, b
        za = self.model.encode(xa.to(self.device), **ya)[0]
        zb = self.model.encode(xb.to(self.device), **yb)[0]
        t = torch.linspace(0, 1, steps, device=za.device)
        if mode == "slerp" and min(za.norm(), zb.norm()) > 1e-6:
            z = slerp(za, zb, t)
        else:
            z = za + t[:, None] * (zb - za)
        y = {}
        if self.conditional:  # the condition moves with the code where the model takes mixed vectors
            y = ({"y": label_mix(self.model, ya["y"], yb["y"], t)[0]} if self.has("condition")
                 and not ya["y"].is_floating_point() else {"y": ya["y"].expand(steps, *ya["y"].shape[1:])})
        return png(self.model.decode(z, **y), nrow=steps)

    def complete(self, x, field, rows: int, n: int, seed: int, label: int | None) -> bytes:
        self.require("complete")
        if self.conditional:
            y = label if label is not None else None if field is None else field.expand(n, *field.shape[1:])
            if y is None:
                raise ApiError(422, f"{type(self.model).__name__} is conditional, so a drawn image needs its "
                                    "class: give label")
        else:
            y = None
        x = x.to(self.device)
        g = torch.Generator(device=x.device).manual_seed(seed)
        done = self.model.complete(x.expand(n, -1, -1, -1).contiguous(), rows, y=y, generator=g)
        kept = x.clone()
        kept[:, :, rows:] = 0.5
        return png(torch.cat([kept, done]), nrow=n + 1)


# --- the web app ----------------------------------------------------------------------------------
def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


def _png_response(data: bytes):
    from starlette.responses import Response

    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


async def _json_body(request, fields: tuple[str, ...]) -> dict[str, Any]:
    """The request's JSON object, refused when it is not JSON, too large or has fields not in `fields`."""
    if "json" not in request.headers.get("content-type", ""):
        raise ApiError(415, "send the request body as JSON, with Content-Type: application/json")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise ApiError(413, f"the request body is {int(length)} bytes; send at most {MAX_BODY}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, f"the request body is over {MAX_BODY} bytes; send a smaller image")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object with the fields {', '.join(fields)}")
    unknown = [k for k in body if k not in fields]
    if unknown:
        raise ApiError(422, f"unknown field {_shown(unknown[0])}; this endpoint takes {', '.join(fields)}")
    return body


def _query(request, fields: tuple[str, ...]) -> dict[str, str]:
    unknown = [k for k in request.query_params if k not in fields]
    if unknown:
        raise ApiError(422, f"unknown parameter {_shown(unknown[0])}; this endpoint takes {', '.join(fields)}")
    return {k: v for k, v in request.query_params.items() if v != ""}


def create_app(explorer: Explorer):
    """The Starlette app over a loaded model: the page and its JSON API (see the module docstring)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    def evaluate(fn, *args):
        with explorer.lock, torch.no_grad():
            return fn(*args)

    async def compute(fn, *args):
        return await run_in_threadpool(evaluate, fn, *args)

    def endpoint(fn):
        async def handler(request):
            try:
                return await fn(request)
            except ApiError as e:
                return _error(e.status, str(e))
            except DgmError as e:  # the library's one sentence about a value it refuses
                return _error(422, str(e))
            except Exception as e:
                return await unexpected(request, e)
        return handler

    async def index(request):
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def info(request):
        _query(request, ())
        return JSONResponse(explorer.info())

    async def sample(request):
        q = _query(request, ("n", "seed", "label", "caption", "box"))
        n = whole_number(q.get("n", 16), "n", 1, MAX_SAMPLES)
        seed = whole_number(q.get("seed", 0), "seed", 0, 2 ** 63 - 1)
        box = None
        if q.get("box") not in (None, ""):
            parts = q["box"].split(",")
            if len(parts) != 4:
                raise ApiError(400, f"box takes four whole pixel edges x0,y0,x1,y1, got '{q['box']}'")
            box = [whole_number(v, "box", 0, 1 << 16) for v in parts]
        caption = q.get("caption") if q.get("caption") not in (None, "") or box is not None else None
        return _png_response(await compute(explorer.sample, n, seed, explorer.label(q.get("label")), caption, box))

    async def test_image(request):
        q = _query(request, ("index",))
        if explorer.test_x is None:
            raise ApiError(404, "the run's test images are not loaded"
                                + (f" ({explorer.data_note})" if explorer.data_note else ""))
        index = whole_number(q.get("index", 0), "index", 0, len(explorer.test_x) - 1)
        return _png_response(await compute(explorer.test_image, index))

    async def decode(request):
        body = await _json_body(request, ("z", "label"))
        explorer.require("sliders")
        k = len(explorer.sliders.scales)
        z = body.get("z")
        if not isinstance(z, list) or len(z) != k or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in z):
            raise ApiError(422, f"z must be a list of {k} slider values, got {_shown(z)}")
        if not all(math.isfinite(v) and abs(v) <= SLIDER_RANGE for v in z):
            raise ApiError(422, f"slider values must lie in -{SLIDER_RANGE:g} .. {SLIDER_RANGE:g}, got {_shown(z)}")
        label = explorer.label(body.get("label"))
        return _png_response(await compute(explorer.decode, torch.tensor(z, dtype=torch.float32), label))

    async def reconstruct(request):
        body = await _json_body(request, ("image", "label"))
        explorer.require("reconstruct")
        x, field = explorer.image(body.get("image"), "image")
        return _png_response(await compute(explorer.reconstruct, x, field, explorer.label(body.get("label"))))

    async def interpolate(request):
        body = await _json_body(request, ("a", "b", "steps", "mode", "label_a", "label_b"))
        explorer.require("interpolate")
        ends = []
        for key in ("a", "b"):
            x, field = explorer.image(body.get(key), key)
            ends.append((x, explorer.condition(explorer.label(body.get(f"label_{key}"), f"label_{key}"), field,
                                               f"label_{key}")))
        steps = whole_number(body.get("steps", 8), "steps", 2, MAX_STEPS)
        mode = body.get("mode", "slerp")
        if mode not in ("slerp", "lerp"):
            raise ApiError(422, f"mode must be slerp or lerp, got {_shown(mode)}")
        return _png_response(await compute(explorer.interpolate, ends[0], ends[1], steps, mode))

    async def complete(request):
        body = await _json_body(request, ("image", "rows", "n", "seed", "label"))
        explorer.require("complete")
        x, field = explorer.image(body.get("image"), "image")
        rows = whole_number(body.get("rows", explorer.shape[1] // 2), "rows", 0, explorer.shape[1])
        n = whole_number(body.get("n", 4), "n", 1, MAX_COMPLETIONS)
        seed = whole_number(body.get("seed", 0), "seed", 0, 2 ** 63 - 1)
        label = explorer.label(body.get("label"))
        return _png_response(await compute(explorer.complete, x, field, rows, n, seed, label))

    async def http_error(request, exc):
        messages = {404: f"no page {request.url.path}; the API is under /api (see /api/info)",
                    405: f"{request.method} is not allowed on {request.url.path}"}
        return _error(exc.status_code, messages.get(exc.status_code, str(exc.detail)))

    async def unexpected(request, exc):  # never a traceback in a response; the console gets it
        log.error("dgm serve: %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"the server failed on this request ({type(exc).__name__}); its console says why")

    routes = [Route("/", index), Route("/api/info", endpoint(info)),
              Route("/api/sample", endpoint(sample)), Route("/api/test-image", endpoint(test_image)),
              Route("/api/decode", endpoint(decode), methods=["POST"]),
              Route("/api/reconstruct", endpoint(reconstruct), methods=["POST"]),
              Route("/api/interpolate", endpoint(interpolate), methods=["POST"]),
              Route("/api/complete", endpoint(complete), methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: unexpected})
    app.state.explorer = explorer
    return app


def load_explorer(run: str | Path, data_dir: str | Path | None = None) -> Explorer:
    """The run's best weights (on the CPU) and its test images; a run whose data cannot be found still
    serves what needs no test images, and says why the rest is off."""
    import dgm
    from dgm.runs import load_data, read_config

    model = dgm.load(run)
    dataset, note = None, None
    try:
        dataset = load_data(read_config(run), data_dir)
    except DgmError as e:
        note = str(e)
    return Explorer(model, dataset, name=str(run), data_note=note)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or a DgmError saying why there cannot be one."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # proto IPPROTO_TCP (not 0): asyncio then sets TCP_NODELAY on every connection, so a keep-alive answer
        # written in two parts does not wait 40 ms for the client's delayed ACK
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)  # connections wait in the queue from now on, before the server starts accepting
    except OSError as e:
        raise DgmError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port or --host") \
            from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def server(app):
    """A uvicorn server of app on the bound socket: `.run(sockets=[sock])` serves until Ctrl-C (in the main
    thread) or `should_exit`; quiet but for warnings."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))


class Background:
    """A server in a thread (for tests and benchmarks): `with Background(app) as url: ...`."""

    def __init__(self, app, host: str = "127.0.0.1"):
        self.sock = listen(host, 0)
        self.url = url_of(self.sock)
        self.server = server(app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            raise RuntimeError("the background server did not start")
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, data_dir: str | Path | None = None,
          announce: Callable[[str], None] = print) -> None:
    """Load the run once and serve its page on host:port until Ctrl-C (a KeyboardInterrupt afterwards)."""
    if not 0 <= port <= 65535:
        raise DgmError(f"--port must lie in 0 .. 65535 (0: any free port), got {port}")
    app = create_app(load_explorer(run, data_dir))
    sock = listen(host, port)
    announce(f"serving {run} at {url_of(sock)} (Ctrl-C stops)")
    try:
        server(app).run(sockets=[sock])
    finally:
        sock.close()


__all__ = ["ApiError", "Background", "Explorer", "Sliders", "create_app", "listen", "load_explorer", "png",
           "serve", "slider_basis"]
