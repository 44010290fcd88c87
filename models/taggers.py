"""Which tagger a path holds, and loading it: a WD14 tagger (``model.onnx`` + ``selected_tags.csv``,
models/wd14.py) or a DeepDanbooru project folder (models/tagger.py).

The one entry point the tag stage (stages/tag.py) uses; it sits above both taggers, which share only
``TaggerError`` (models/tagger.py), so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.tagger import DeepDanbooruTagger, project_version
from models.wd14 import WD14Tagger, wd14_files, wd14_project_version


def load_tagger(
    path: str | Path, *, threshold: float = 0.5, category_thresholds: dict[str, float] | None = None
) -> Any:
    """``WD14Tagger`` for ``model.onnx`` + ``selected_tags.csv``, else ``DeepDanbooruTagger``.

    Both give ``tags``, ``version``, ``category_of(i)`` and ``predict(images, batch_size)``.
    """
    loader = WD14Tagger.load if wd14_files(path) else DeepDanbooruTagger.load
    return loader(path, threshold=threshold, category_thresholds=category_thresholds)


def tagger_version(path: str | Path) -> str:
    """The version ``load_tagger`` would give, without loading a model."""
    return wd14_project_version(path) if wd14_files(path) else project_version(path)
