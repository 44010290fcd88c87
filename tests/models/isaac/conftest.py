"""Icons and a small trained recognizer, shared by the Isaac tests.

The icons are sliced from the captured wiki files in ../shared/fixtures/isaac at run time (never
copied here); the tests skip with the reason when those files are absent. The recognizer is
trained once per session on 20 classes spread over both kinds: a real run, short enough for CI.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jobs.isaac_icons import icons_from_fixtures
from models.isaac.icons import FIXTURES_DIR, IconSet
from models.isaac.synthesis import BACKGROUND_DIR, Backgrounds
from models.isaac.train import RunOptions, TrainConfig, TrainResult, train

SMALL_CLASSES = 20
SMALL_CONFIG = TrainConfig(steps=250, batch_size=64, learning_rate=3e-3, seed=3)


def require_fixtures() -> None:
    needed = [FIXTURES_DIR / "id_mapping_dict.json", FIXTURES_DIR / "Collectibles_sprite.png", BACKGROUND_DIR]
    missing = [str(path) for path in needed if not path.exists()]
    if missing:
        pytest.skip(f"captured Isaac wiki files missing ({', '.join(missing)}): they live in ../shared/fixtures/isaac")


@pytest.fixture(scope="session")
def isaac_icons() -> IconSet:
    require_fixtures()
    return icons_from_fixtures()


@pytest.fixture(scope="session")
def small_icons(isaac_icons) -> IconSet:
    return isaac_icons.spread(SMALL_CLASSES)


@pytest.fixture(scope="session")
def backgrounds() -> Backgrounds:
    require_fixtures()
    return Backgrounds.load()


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, small_icons, backgrounds) -> tuple[TrainResult, float]:
    """A recognizer of 20 classes + none, trained for real (16,000 crops), and how long it took."""
    out: Path = tmp_path_factory.mktemp("isaac-model")
    started = time.monotonic()
    result = train(small_icons, out, SMALL_CONFIG,
                   RunOptions(eval_every=10**9, checkpoint_every=10**9, val_per_class=5, progress=False),
                   backgrounds=backgrounds)
    return result, time.monotonic() - started
