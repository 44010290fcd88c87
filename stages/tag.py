"""Stage: tag each picture with a DeepDanbooru or WD14 tagger (``models.taggers.load_tagger`` tells
them apart). One result per picture: its tags, best first, each with its category, score and the
tagger's version; the catalogue keeps them in ``image_tags``, the tag rules and captions read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from PIL import Image

from stages.picture_model import PictureModel


class Tag(PictureModel):
    """A tagger project as a stage; TensorFlow or onnxruntime is imported on load."""

    name = "tag"

    def __init__(self, project: str | Path, threshold: float, category_thresholds: Mapping[str, float] | None = None):
        super().__init__()
        self.project = Path(project)
        self.threshold = threshold
        self.category_thresholds = dict(category_thresholds or {})
        self.category_by_tag: dict[str, Any] = {}

    @property
    def version(self) -> str:
        """The tagger's version; raises ``models.tagger.TaggerError`` when the project is not one."""
        if self.model is not None:
            return str(self.model.version)
        from models.taggers import tagger_version

        return tagger_version(self.project)

    def _load(self) -> Any:
        from models.taggers import load_tagger

        tagger = load_tagger(self.project, threshold=self.threshold, category_thresholds=self.category_thresholds)
        self.category_by_tag = {tag: tagger.category_of(i) for i, tag in enumerate(tagger.tags)}
        return tagger

    def _predict(self, images: list[Image.Image]) -> list[list[dict[str, Any]]]:
        return [
            [
                {"tag": tag, "category": self.category_by_tag[tag], "score": float(score), "model": self.model.version}
                for tag, score in sorted(tags.items(), key=lambda kv: -kv[1])
            ]
            for tags in self.model.predict(images, batch_size=len(images))
        ]
