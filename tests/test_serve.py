"""`dgm serve`: the sliders' basis (principal directions, a round trip), every endpoint's answer against the
model computed directly, every bad input's status and one sentence, 20 concurrent requests, and the command
(a URL on --port 0, exit 130 on Ctrl-C). Requests go over HTTP to a uvicorn server in a thread."""
import base64
import io
import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

import dgm
from dgm.cli import main
from dgm.errors import DgmError
from dgm.models import given
from dgm.serve import SLIDER_RANGE, Background, create_app, listen, load_explorer, png, slider_basis

httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    tiny = {"quiet": True, "progress": False}
    return {"vae": dgm.train("vae", out=root / "vae", steps=20, latent_dim=12, hidden_dims=(32,), **tiny).path,
            "cvae": dgm.train("cvae", out=root / "cvae", steps=20, latent_dim=2, hidden_dims=(32,), **tiny).path,
            "pixelcnn": dgm.train("pixelcnn", out=root / "pixelcnn", steps=3, channels=8, n_blocks=1, **tiny).path}


@pytest.fixture(scope="module")
def servers(runs):
    """{name: (httpx client, explorer)} with one server per run for the whole module."""
    opened, out = [], {}
    for name, path in runs.items():
        explorer = load_explorer(path)
        background = Background(create_app(explorer))
        url = background.__enter__()
        opened.append(background)
        out[name] = (httpx.Client(base_url=url, timeout=60), explorer)
    yield out
    for client, _ in out.values():
        client.close()
    for background in opened:
        background.__exit__(None, None, None)


def cells(data: bytes, count: int, nrow: int, size: int) -> torch.Tensor:
    """The images [count, C, h, w] in [0, 1] of a PNG grid (2 pixels of padding, cells of `size` pixels
    enlarged by a whole factor), read back to their own resolution."""
    pixels = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32) / 255
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    cell = (pixels.shape[1] - 2) // nrow - 2
    scale = cell // size
    out = []
    for k in range(count):
        r, c = divmod(k, nrow)
        y0, x0 = 2 + r * (cell + 2), 2 + c * (cell + 2)
        out.append(pixels[y0:y0 + cell:scale, x0:x0 + cell:scale].transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


def data_url(x: torch.Tensor, scale: int = 1) -> str:
    """A PNG data URL of one grey image [1, H, W] in [0, 1], enlarged `scale` times (nearest)."""
    pixels = (x[0].numpy() * 255).round().astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def one_sentence(response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    message = response.json()["error"]
    assert message and "\n" not in message and "Traceback" not in message and len(message) < 200, message
    return message


# --- the sliders' basis --------------------------------------------------------------------------------
def test_principal_sliders_are_the_top_eigenvectors_scaled_by_their_spread():
    g = torch.Generator().manual_seed(0)
    rotation = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))[0]
    spread = torch.linspace(3.0, 0.2, 12, dtype=torch.float64)
    codes = (torch.randn(4000, 12, generator=g, dtype=torch.float64) * spread) @ rotation.T + 5.0
    s = slider_basis(codes.float(), 12, k=8)
    assert s.kind == "principal directions" and s.directions.shape == (8, 12)
    cov = torch.cov(codes.T)
    values, vectors = torch.linalg.eigh(cov)
    top = vectors[:, values.argsort(descending=True)[:8]].T.float()
    assert torch.allclose(s.directions @ s.directions.T, torch.eye(8), atol=1e-5)
    assert torch.allclose((s.directions * top).sum(1).abs(), torch.ones(8), atol=1e-4)  # same lines
    assert torch.allclose(s.scales.double() ** 2, values.sort(descending=True).values[:8], rtol=1e-4)
    assert torch.allclose(s.mean.double(), codes.mean(0), atol=1e-5)
    assert (s.directions.gather(1, s.directions.abs().argmax(1, keepdim=True)) > 0).all()  # signs fixed
    t = torch.tensor([0.5, -1.0, 2.0, 0.0, 0.3, -2.5, 1.0, 3.0])
    assert torch.allclose(s.coordinates(s.code(t)[None])[0], t, atol=1e-4)


def test_few_dimensions_are_the_sliders_themselves_and_no_codes_means_the_prior():
    codes = torch.randn(500, 3) * torch.tensor([2.0, 1.0, 0.5]) + torch.tensor([1.0, -1.0, 0.0])
    s = slider_basis(codes, 3)
    assert s.kind == "dimensions" and torch.equal(s.directions, torch.eye(3))
    assert torch.allclose(s.scales, codes.std(0), atol=1e-5)
    assert torch.allclose(s.code(torch.tensor([1.0, 0.0, -2.0])),
                          codes.mean(0) + torch.tensor([1.0, 0.0, -2.0]) * codes.std(0), atol=1e-5)
    prior = slider_basis(None, 20)
    assert prior.directions.shape == (8, 20) and torch.equal(prior.directions, torch.eye(20)[:8])
    assert torch.equal(prior.mean, torch.zeros(20)) and torch.equal(prior.scales, torch.ones(8))


def test_png_grid_reads_back_exactly():
    x = torch.randint(0, 17, (5, 1, 8, 8)).float() / 16
    assert torch.allclose(cells(png(x, nrow=3), 5, 3, 8), x, atol=0.5 / 255)


# --- every endpoint's answer ---------------------------------------------------------------------------
def test_page_and_info(servers):
    client, _ = servers["vae"]
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "/api/decode" in page.text
    info = client.get("/api/info").json()
    assert info["can"] == {"sample": True, "sliders": True, "reconstruct": True, "interpolate": True,
                           "complete": False}
    assert info["sliders"]["kind"] == "principal directions" and info["sliders"]["count"] == 8
    assert info["sliders"]["latent_dim"] == 12 and info["shape"] == [1, 8, 8] and info["test_images"] == 179
    cinfo = servers["cvae"][0].get("/api/info").json()
    assert cinfo["classes"] == 10 and cinfo["conditional"] and cinfo["sliders"]["kind"] == "dimensions"
    pinfo = servers["pixelcnn"][0].get("/api/info").json()
    assert pinfo["can"]["complete"] and not pinfo["can"]["sliders"] and "encoder" in pinfo["why_not"]["reconstruct"]


def test_sample_is_the_seeded_draw(servers):
    client, explorer = servers["vae"]
    a = client.get("/api/sample", params={"n": 6, "seed": 3})
    assert a.status_code == 200 and a.headers["content-type"] == "image/png"
    expected = dgm.api.draw(explorer.model, 6, seed=3)
    assert torch.allclose(cells(a.content, 6, 3, 8), expected, atol=0.5 / 255 + 1e-6)
    assert client.get("/api/sample", params={"n": 6, "seed": 3}).content == a.content
    assert client.get("/api/sample", params={"n": 6, "seed": 4}).content != a.content
    cclient, cexplorer = servers["cvae"]
    labelled = cclient.get("/api/sample", params={"n": 4, "seed": 1, "label": 7})
    expected = dgm.api.draw(cexplorer.model, 4, seed=1, label=7)
    assert torch.allclose(cells(labelled.content, 4, 2, 8), expected, atol=0.5 / 255 + 1e-6)


def test_decode_moves_the_code_along_the_slider_directions(servers):
    client, explorer = servers["vae"]
    s = explorer.sliders
    t = [0.0] * 8
    t[0], t[3] = 2.0, -1.5
    answer = client.post("/api/decode", json={"z": t})
    z = s.mean + (torch.tensor(t) * s.scales) @ s.directions
    with torch.no_grad():
        expected = explorer.model.decode(z[None])
    assert torch.allclose(cells(answer.content, 1, 1, 8), expected, atol=0.5 / 255 + 1e-6)
    centre = client.post("/api/decode", json={"z": [0.0] * 8}).content
    assert centre != answer.content
    cclient, cexplorer = servers["cvae"]
    three, five = (cclient.post("/api/decode", json={"z": [1.0, -1.0], "label": k}).content for k in (3, 5))
    with torch.no_grad():
        z = cexplorer.sliders.code(torch.tensor([1.0, -1.0]))[None]
        expected = cexplorer.model.decode(z, y=torch.tensor([5]))
    assert three != five and torch.allclose(cells(five, 1, 1, 8), expected, atol=0.5 / 255 + 1e-6)


def test_reconstruct_by_index_pixels_and_png_agree(servers):
    client, explorer = servers["vae"]
    x = explorer.test_x[7:8]
    with torch.no_grad():
        expected = explorer.model.decode(explorer.model.encode(x))
    by_index = client.post("/api/reconstruct", json={"image": 7})
    seen, recon = cells(by_index.content, 2, 2, 8)
    assert torch.allclose(seen, x[0], atol=0.5 / 255) and torch.allclose(recon, expected[0], atol=0.5 / 255 + 1e-6)
    # the same image as a pixel array, a PNG of its size and a PNG ten times larger (resized back exactly)
    for image in (x[0, 0].tolist(), data_url(x[0]), data_url(x[0], scale=10)):
        assert client.post("/api/reconstruct", json={"image": image}).content == by_index.content
    # a drawing: transparency counts as black, values are rounded to the model's 17 levels
    drawn = client.post("/api/reconstruct", json={"image": [[0.5 if j == 3 else 0.0 for j in range(8)]] * 8})
    seen = cells(drawn.content, 1, 2, 8)[0, 0]
    assert torch.allclose(seen[:, 3], torch.full((8,), 0.5), atol=0.5 / 255) and seen[:, :3].max() == 0


def test_conditional_reconstruct_uses_the_test_label_or_the_given_one(servers):
    client, explorer = servers["cvae"]
    x, y = explorer.test_x[4:5], explorer.test_y[4:5]
    with torch.no_grad():
        own = explorer.model.decode(explorer.model.encode(x, y=y), y=y)
        other = explorer.model.decode(explorer.model.encode(x, y=(y + 1) % 10), y=(y + 1) % 10)
    assert torch.allclose(cells(client.post("/api/reconstruct", json={"image": 4}).content, 2, 2, 8)[1], own[0],
                          atol=0.5 / 255 + 1e-6)
    answer = client.post("/api/reconstruct", json={"image": 4, "label": int((y + 1) % 10)})
    assert torch.allclose(cells(answer.content, 2, 2, 8)[1], other[0], atol=0.5 / 255 + 1e-6)


def test_interpolation_starts_and_ends_at_the_reconstructions(servers):
    client, explorer = servers["vae"]
    xa, xb = explorer.test_x[0:1], explorer.test_x[1:2]
    with torch.no_grad():
        za, zb = explorer.model.encode(xa), explorer.model.encode(xb)
        ends = explorer.model.decode(torch.cat([za, zb]))
        middle = explorer.model.decode((za + zb) / 2)
    for mode in ("slerp", "lerp"):
        row = cells(client.post("/api/interpolate", json={"a": 0, "b": 1, "steps": 5, "mode": mode}).content,
                    5, 5, 8)
        assert torch.allclose(row[0], ends[0], atol=1.5 / 255) and torch.allclose(row[-1], ends[1], atol=1.5 / 255)
    assert torch.allclose(row[2], middle[0], atol=1.5 / 255)  # lerp: the midpoint of the codes
    drawn = client.post("/api/interpolate", json={"a": data_url(xa[0]), "b": 1, "steps": 3})
    assert drawn.content == client.post("/api/interpolate", json={"a": 0, "b": 1, "steps": 3}).content
    conditional = servers["cvae"][0].post("/api/interpolate", json={"a": 0, "b": 1, "steps": 4})
    assert conditional.status_code == 200


def test_completion_keeps_the_top_rows(servers):
    client, explorer = servers["pixelcnn"]
    x = explorer.test_x[2:3]
    answer = client.post("/api/complete", json={"image": 2, "rows": 3, "n": 3, "seed": 5})
    images = cells(answer.content, 4, 4, 8)
    assert torch.allclose(images[0, :, :3], x[0, :, :3], atol=0.5 / 255)
    assert torch.allclose(images[0, :, 3:], torch.full((1, 5, 8), 0.5), atol=0.5 / 255)  # the rest grey
    assert torch.allclose(images[1:, :, :3], x[:, :, :3].expand(3, -1, -1, -1), atol=0.5 / 255)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        expected = explorer.model.complete(x.expand(3, -1, -1, -1).contiguous(), 3, generator=g)
    assert torch.allclose(images[1:], expected, atol=0.5 / 255)
    assert client.post("/api/complete", json={"image": 2, "rows": 3, "n": 3, "seed": 5}).content == answer.content


def test_models_run_without_gradients(servers):
    client, explorer = servers["vae"]
    seen = []
    decode = explorer.model.decode
    explorer.model.decode = lambda *a, **k: (seen.append(torch.is_grad_enabled()), decode(*a, **k))[1]
    try:
        assert client.post("/api/decode", json={"z": [0.1] * 8}).status_code == 200
        assert client.post("/api/reconstruct", json={"image": 0}).status_code == 200
    finally:
        del explorer.model.decode
    assert seen == [False, False]


# --- bad inputs: a 4xx and one sentence --------------------------------------------------------------------
def _png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD = [  # (run, method, path, query or JSON body, status, words of the message)
    ("vae", "get", "/api/sample", {"n": 0}, 422, "n must be a whole number from 1 to 64"),
    ("vae", "get", "/api/sample", {"n": 10 ** 6}, 422, "from 1 to 64"),
    ("vae", "get", "/api/sample", {"seed": "abc"}, 422, "seed must be a whole number"),
    ("vae", "get", "/api/sample", {"seed": -1}, 422, "seed must be"),
    ("vae", "get", "/api/sample", {"label": 3}, 422, "takes no class labels"),
    ("vae", "get", "/api/sample", {"colour": 1}, 422, "unknown parameter"),
    ("cvae", "get", "/api/sample", {"label": 10}, 422, "label must be a whole number from 0 to 9"),
    ("vae", "get", "/api/test-image", {"index": 179}, 422, "index must be a whole number from 0 to 178"),
    ("vae", "post", "/api/decode", {"z": [0.0] * 7}, 422, "z must be a list of 8 slider values"),
    ("vae", "post", "/api/decode", {"z": [0.0] * 7 + [3.5]}, 422, "slider values must lie in -3 .. 3"),
    ("vae", "post", "/api/decode", {"z": ["a"] * 8}, 422, "z must be a list"),
    ("vae", "post", "/api/decode", {"z": 1.0}, 422, "z must be a list"),
    ("vae", "post", "/api/decode", {"z": [0.0] * 8, "w": 1}, 422, "unknown field"),
    ("cvae", "post", "/api/decode", {"z": [0.0, 0.0], "label": -1}, 422, "label must be"),
    ("cvae", "post", "/api/decode", {"z": [0.0, 0.0], "label": True}, 422, "label must be"),
    ("vae", "post", "/api/reconstruct", {"image": [[0.0] * 7] * 8}, 422, "has shape [8, 7]"),
    ("vae", "post", "/api/reconstruct", {"image": [[[0.0] * 8] * 8] * 3}, 422, "has shape [3, 8, 8]"),
    ("vae", "post", "/api/reconstruct", {"image": [[2.0] * 8] * 8}, 422, "must lie in [0, 1]"),
    ("vae", "post", "/api/reconstruct", {"image": [[0.0] * 8, [0.0]]}, 422, "rectangular array"),
    ("vae", "post", "/api/reconstruct", {"image": 179}, 422, "from 0 to 178"),
    ("vae", "post", "/api/reconstruct", {"image": "hello"}, 422, "must be a data URL"),
    ("vae", "post", "/api/reconstruct", {"image": {"x": 1}}, 422, "must be a test image's index"),
    ("vae", "post", "/api/reconstruct", {"image": "data:image/png;base64,%%%"}, 422, "not valid base64"),
    ("vae", "post", "/api/reconstruct",
     {"image": "data:image/png;base64," + base64.b64encode(b"%PDF-1.4 not an image").decode()}, 422,
     "not an image file"),
    ("vae", "post", "/api/reconstruct",
     {"image": "data:image/png;base64," + base64.b64encode(_png_bytes(5000, 5000)).decode()}, 413,
     "5000 x 5000 pixels"),
    ("vae", "post", "/api/reconstruct", {}, 422, "must be a test image's index"),
    ("cvae", "post", "/api/reconstruct", {"image": [[0.0] * 8] * 8}, 422, "give label"),
    ("vae", "post", "/api/interpolate", {"a": 0, "b": 1, "steps": 1}, 422, "steps must be a whole number from 2"),
    ("vae", "post", "/api/interpolate", {"a": 0, "b": 1, "mode": "cubic"}, 422, "mode must be slerp or lerp"),
    ("vae", "post", "/api/interpolate", {"a": 0}, 422, "b must be"),
    ("vae", "post", "/api/complete", {"image": 0, "rows": 2}, 400, "cannot complete images"),
    ("pixelcnn", "post", "/api/complete", {"image": 0, "rows": 9}, 422, "rows must be a whole number from 0 to 8"),
    ("pixelcnn", "post", "/api/complete", {"image": 0, "n": 100}, 422, "n must be"),
    ("pixelcnn", "post", "/api/reconstruct", {"image": 0}, 400, "has no encoder"),
    ("pixelcnn", "post", "/api/decode", {"z": [0.0]}, 400, "no decoder"),
]


@pytest.mark.parametrize("run, method, path, data, status, words", BAD,
                         ids=[f"{r[0]}{r[2]}-{i}" for i, r in enumerate(BAD)])
def test_bad_input_is_a_4xx_with_one_sentence(servers, run, method, path, data, status, words):
    client = servers[run][0]
    response = client.get(path, params=data) if method == "get" else client.post(path, json=data)
    assert words in one_sentence(response, status)


def test_bad_bodies_and_paths(servers):
    client = servers["vae"][0]
    assert "not valid JSON" in one_sentence(client.post("/api/decode", content=b"{z: [",
                                                        headers={"content-type": "application/json"}), 400)
    assert "JSON object" in one_sentence(client.post("/api/decode", json=[1, 2]), 400)
    nan = client.post("/api/decode", content=b'{"z": [NaN, 0, 0, 0, 0, 0, 0, 0]}',
                      headers={"content-type": "application/json"})
    assert "must lie in" in one_sentence(nan, 422)
    upload = client.post("/api/reconstruct", content=_png_bytes(8, 8), headers={"content-type": "image/png"})
    assert "as JSON" in one_sentence(upload, 415)
    huge = client.post("/api/reconstruct", json={"image": "data:image/png;base64," + "A" * (5 << 20)})
    assert "request body" in one_sentence(huge, 413)
    deep = client.post("/api/reconstruct", content=b"[" * 100000 + b"]" * 100000,
                       headers={"content-type": "application/json"})
    assert one_sentence(deep, 400)
    assert "no page" in one_sentence(client.get("/nothing"), 404)
    assert "not allowed" in one_sentence(client.get("/api/decode"), 405)


def test_an_unexpected_failure_is_a_500_without_a_traceback(servers, monkeypatch):
    client, explorer = servers["vae"]

    def broken(*args):
        raise RuntimeError("secret internals\nTraceback (most recent call last)")

    monkeypatch.setattr(explorer, "sample", broken)
    message = one_sentence(client.get("/api/sample"), 500)
    assert "RuntimeError" in message and "secret" not in message


# --- concurrency, loading once, the command ------------------------------------------------------------------
def test_twenty_concurrent_requests_are_all_answered_correctly(servers):
    client, explorer = servers["vae"]
    bodies = [[round(-SLIDER_RANGE + 0.3 * i, 2)] + [0.0] * 7 for i in range(10)]
    alone = [client.post("/api/decode", json={"z": z}).content for z in bodies]
    samples = {seed: client.get("/api/sample", params={"seed": seed}).content for seed in range(10)}
    barrier = threading.Barrier(20)

    def ask(i: int) -> bytes:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            barrier.wait()
            if i < 10:
                return own.post("/api/decode", json={"z": bodies[i]}).content
            return own.get("/api/sample", params={"seed": i - 10}).content

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, range(20)))
    assert answers[:10] == alone and answers[10:] == [samples[s] for s in range(10)]


def test_the_model_is_loaded_once(runs, monkeypatch):
    calls = []
    load = dgm.load
    monkeypatch.setattr(dgm, "load", lambda *a, **k: (calls.append(a), load(*a, **k))[1])
    app = create_app(load_explorer(runs["pixelcnn"]))
    with Background(app) as url, httpx.Client(base_url=url) as client:
        for seed in range(3):
            assert client.get("/api/sample", params={"n": 2, "seed": seed}).status_code == 200
    assert len(calls) == 1


def test_serve_prints_its_url_and_ctrl_c_exits_130(runs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dgm", "serve", str(runs["vae"]), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"serving {runs['vae']} at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0]
        assert httpx.get(url + "api/info", timeout=30).json()["model"] == "vae"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err and err.count("\n") <= 1, err


def test_serve_refuses_a_missing_run_and_a_bad_port(tmp_path, capsys, runs):
    assert main(["serve", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dgm: error: run folder") and err.count("\n") == 1
    assert main(["serve", str(runs["vae"]), "--port", "70000"]) == 1
    assert "--port must lie in 0 .. 65535" in capsys.readouterr().err


def test_listening_socket_is_tcp_and_a_taken_port_is_one_sentence():
    sock = listen("127.0.0.1", 0)
    try:  # proto IPPROTO_TCP is what makes asyncio set TCP_NODELAY: keep-alive answers without 40 ms waits
        assert sock.proto == socket.IPPROTO_TCP
        with pytest.raises(DgmError, match=r"^cannot listen on 127\.0\.0\.1:\d+ .*choose another --port"):
            listen("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


def test_encode_uses_given(servers):
    """The sliders of a conditional model come from codes encoded with each test image's own label."""
    _, explorer = servers["cvae"]
    with torch.no_grad():
        codes = explorer.model.encode(explorer.test_x, **given(explorer.model, explorer.test_y))
    assert torch.allclose(explorer.sliders.mean, codes.mean(0), atol=1e-5)
    assert torch.allclose(explorer.sliders.scales, codes.std(0), atol=1e-5)
