"""What the model stages (classify, tag) share: read pictures, load the model once, one result each.

The crawl runs a stage in batches on its own thread (pipelines/model_stage.py); ``scrapy curate``
runs it batch after batch (jobs/curate.py). Both call ``results``, so a picture gets the
same result, or the same reason it got none, whichever ran it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from models.imaging import to_8bit


def open_pictures(root: Path, paths: Sequence[str]) -> tuple[list[Image.Image], list[int], list[Any]]:
    """The readable pictures, their positions, and per position why a picture could not be read
    (None where it could)."""
    images: list[Image.Image] = []
    readable: list[int] = []
    errors: list[Any] = []
    for i, relative in enumerate(paths):
        try:
            with Image.open(root / relative) as image:
                image = to_8bit(image)  # 16-bit grayscale: scaled, where convert would clip it to white
                images.append(image.convert("RGBA") if image.mode in ("RGBA", "LA", "P") else image.convert("RGB"))
            readable.append(i)
            errors.append(None)
        except OSError as exc:
            errors.append(f"could not read {relative}: {exc}")
    return images, readable, errors


class PictureModel:
    """A model loaded on first use; ``results`` gives one result per picture, or the reason as a str.

    Subclasses define ``version`` (known without loading: a file hash), ``_load`` and ``_predict``;
    ``predict`` runs the model on pictures already open.
    """

    name = "model"

    def __init__(self) -> None:
        self.model: Any = None

    @property
    def version(self) -> str:
        raise NotImplementedError

    def load(self) -> Any:
        if self.model is None:
            self.model = self._load()
        return self.model

    def predict(self, images: list[Image.Image]) -> list[Any]:
        """One result per picture, in order."""
        self.load()
        return self._predict(images)

    def results(self, root: Path, paths: Sequence[str]) -> list[Any]:
        images, readable, results = open_pictures(root, paths)
        if images:
            for i, result in zip(readable, self.predict(images), strict=True):
                results[i] = result
        return results

    def _load(self) -> Any:
        raise NotImplementedError

    def _predict(self, images: list[Image.Image]) -> list[Any]:
        raise NotImplementedError
