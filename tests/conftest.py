"""Shared fixtures: where the real assets are, and skipping cleanly where they are not.

The assets live in `../shared/assets` beside the checkout (CI always has them); set
PERCEPTION_ASSETS to point elsewhere. Tests that need them skip with the reason when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("PERCEPTION_ASSETS", REPO.parent / "shared" / "assets"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs the shared assets ({path} is absent; set PERCEPTION_ASSETS)")
    return path


@pytest.fixture(scope="session")
def assets() -> Path:
    return _require(ASSETS)


@pytest.fixture(scope="session")
def models_mirror(assets: Path) -> Path:
    """The shared models folder, used as the zoo's mirror (no download in tests)."""
    return _require(assets / "models")


@pytest.fixture(scope="session")
def drives(assets: Path) -> Path:
    return _require(assets / "drives")


@pytest.fixture(scope="session")
def video_path(drives: Path) -> Path:
    return _require(drives / "udacity_lanelines_p1" / "solidWhiteRight.mp4")


@pytest.fixture(autouse=True, scope="session")
def _mirror_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Point the model cache at a temp folder and the mirror at the shared models."""
    os.environ.setdefault("PERCEPTION_CACHE_DIR", str(tmp_path_factory.mktemp("model-cache")))
    if (ASSETS / "models").exists():
        os.environ.setdefault("PERCEPTION_MODELS_MIRROR", str(ASSETS / "models"))
