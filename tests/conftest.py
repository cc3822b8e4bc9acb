import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def real_data_dir() -> Path | None:
    """Where the real datasets are: $DGM_DATA_DIR if it holds MNIST, else the team's ../shared/data."""
    for folder in (os.environ.get("DGM_DATA_DIR"), SHARED_DATA):
        if folder and (Path(folder).expanduser() / "MNIST" / "raw").is_dir():
            return Path(folder).expanduser()
    return None


@pytest.fixture
def shared_data() -> Path:
    folder = real_data_dir()
    if folder is None:
        pytest.skip(f"real data not found in $DGM_DATA_DIR ({os.environ.get('DGM_DATA_DIR') or 'unset'}) "
                    f"nor at {SHARED_DATA} (the team's shared/data folder)")
    return folder


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def one_sentence(err: str) -> str:
    """The one `dgm: error: ...` line of a command's stderr, asserting there is nothing else (no traceback)."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dgm: error:") and "Traceback" not in err, err
    return lines[0]
