"""The conditioning inputs of seed 001's conditional GANs from the command line: `dgm sample RUN --caption TEXT
[--box X0,Y0,X1,Y1]` (text-gan, www-gan), `--input FILE [--reverse]` (pix2pix, cyclegan), each bad input one
sentence; and `dgm eval --metrics conditioning`."""
import json

import numpy as np
import pytest
from PIL import Image

import dgm
from dgm.cli import main
from dgm.data.sprites import load_sprites
from conftest import one_sentence



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("conditional")
    common = {"steps": 2, "batch_size": 8, "quiet": True, "progress": False, "base_channels": 8}
    return {
        "text-gan": dgm.train("text-gan", "sprites", root / "text", text_dim=8, **common).path,
        "www-gan": dgm.train("www-gan", "sprites", root / "www", text_dim=8, **common).path,
        "pix2pix": dgm.train("pix2pix", "sprites", root / "p2p", **common).path,
        "cyclegan": dgm.train("cyclegan", "sprites", root / "cycle", n_blocks=1, patch_layers=1, **common).path,
    }


@pytest.fixture(scope="module")
def test_split():
    return load_sprites(sizes=(10, 10, 10)).test


CELL = 64 + 2  # a 32 px image enlarged to 64 (min_size 48), with 2 px of padding


def test_caption_and_box_draw_n_images(runs, tmp_path, capsys):
    out = tmp_path / "www.png"
    assert main(["sample", str(runs["www-gan"]), "--caption", "a big green square on black", "--box", "2,4,20,22",
                 "--n", "4", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.is_file() and Image.open(out).size[0] > 2 * CELL  # a 2 x 2 grid with the caption above it
    assert main(["sample", str(runs["text-gan"]), "--caption", "a small red heart at the top left on stripes",
                 "--n", "4"]) == 0
    assert (runs["text-gan"] / "samples.png").is_file()


@pytest.mark.parametrize("model, extra, message", [
    ("www-gan", ["--caption", "a red square", "--box", "2,4,40,22"], "canvas"),
    ("www-gan", ["--caption", "a red square", "--box", "2,4,20"], "four whole pixel edges"),
    ("www-gan", ["--caption", "a red square", "--box", "a,b,c,d"], "four whole pixel edges"),
    ("www-gan", ["--caption", "a red square"], "box"),
    ("www-gan", ["--box", "2,4,20,22"], "add --caption"),
    ("www-gan", ["--caption", "  ", "--box", "2,4,20,22"], "empty"),
    ("text-gan", ["--caption", "a pink square"], "'pink' is not in this model's vocabulary"),
    ("text-gan", ["--caption", "a red square", "--box", "2,4,20,22"], "use www-gan"),
    ("text-gan", ["--caption", "a red square", "--label", "2"], "--label picks a class"),
    ("pix2pix", ["--caption", "a red square"], "takes no caption"),
    ("text-gan", ["--reverse"], "add --input"),
])
def test_bad_conditions_areone_sentence(runs, capsys, model, extra, message):
    assert main(["sample", str(runs[model]), *extra]) == 1
    assert message in one_sentence(capsys.readouterr().err)


def test_input_file_is_translated_into_input_output_rows(runs, test_split, tmp_path, capsys):
    masks = tmp_path / "masks.npz"
    np.savez(masks, x=test_split.masks[:3].numpy().astype(np.uint8) * 255)
    assert main(["sample", str(runs["pix2pix"]), "--input", str(masks)]) == 0
    written = runs["pix2pix"] / "translations.png"
    assert capsys.readouterr().out.strip() == str(written)
    assert Image.open(written).size == (2 * CELL + 2, 3 * CELL + 2)
    png = tmp_path / "circle.png"
    Image.fromarray(test_split.x[0].permute(1, 2, 0).numpy()).save(png)
    for extra in ([], ["--reverse"]):
        out = tmp_path / f"cycle{len(extra)}.png"
        assert main(["sample", str(runs["cyclegan"]), "--input", str(png), *extra, "--out", str(out)]) == 0
        assert Image.open(out).size == (2 * CELL + 2, CELL + 2)
    capsys.readouterr()


def test_bad_inputs_areone_sentence(runs, test_split, tmp_path, capsys):
    colour = tmp_path / "colour.npz"
    np.savez(colour, x=test_split.x[:2].numpy())
    assert main(["sample", str(runs["pix2pix"]), "--input", str(colour)]) == 1  # pix2pix reads one channel
    assert "the model needs [N, 1, 32, 32]" in one_sentence(capsys.readouterr().err)
    assert main(["sample", str(runs["pix2pix"]), "--input", str(tmp_path / "none.png")]) == 1
    assert "no file" in one_sentence(capsys.readouterr().err)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert main(["sample", str(runs["cyclegan"]), "--input", str(text)]) == 1
    assert "cannot read" in one_sentence(capsys.readouterr().err)
    assert main(["sample", str(runs["pix2pix"]), "--input", str(colour), "--reverse"]) == 1
    assert "one way only" in one_sentence(capsys.readouterr().err)
    assert main(["sample", str(runs["text-gan"]), "--input", str(colour)]) == 1
    assert "does not translate" in one_sentence(capsys.readouterr().err)


def test_eval_conditioning_scores_caption_models_and_refuses_translators(runs, capsys):
    assert main(["eval", str(runs["www-gan"]), "--metrics", "conditioning", "--n-examples", "20", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    words = ("shape", "colour", "size", "row", "column", "background", "all", "box_iou")
    assert all(0 <= scores[f"conditioning_{w}"] <= 1 for w in words) and scores["conditioning_examples"] == 20
    assert main(["eval", str(runs["pix2pix"]), "--metrics", "conditioning"]) == 1
    assert "does not sample given a condition" in one_sentence(capsys.readouterr().err)



def test_the_serve_page_draws_a_caption_in_a_box_and_refuses_bad_ones(runs):
    httpx = pytest.importorskip("httpx")
    import torch

    from dgm.serve import Background, create_app, load_explorer, png

    with Background(create_app(load_explorer(runs["www-gan"]))) as url, httpx.Client(base_url=url) as client:
        info = client.get("/api/info").json()
        assert info["captions"] and info["boxes"] and "square" in info["vocabulary"]
        caption, box = "a big green square at the top on black", "2,4,20,22"
        r = client.get("/api/sample", params={"caption": caption, "box": box, "n": 4, "seed": 3})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        model = dgm.load(runs["www-gan"])  # the page's picture is the model's own samples for that condition
        x = model.sample(4, y=model.condition_of([caption] * 4, [2, 4, 20, 22]),
                         generator=torch.Generator().manual_seed(3))
        assert r.content == png(x, nrow=2)
        for params, status, words in (({"caption": caption, "box": "2,4,40,22"}, 422, "canvas"),
                                      ({"caption": caption, "box": "2,4"}, 400, "four whole pixel edges"),
                                      ({"box": box}, 400, "give a caption too"),
                                      ({"caption": "a pink square", "box": box}, 422, "'pink'"),
                                      ({"caption": caption}, 422, "box")):
            r = client.get("/api/sample", params=params)
            assert r.status_code == status and words in r.json()["error"], (params, r.text)
    with Background(create_app(load_explorer(runs["text-gan"]))) as url, httpx.Client(base_url=url) as client:
        assert client.get("/api/info").json()["boxes"] is False
        assert client.get("/api/sample", params={"caption": "a red star on white"}).status_code == 200
