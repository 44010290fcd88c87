"""Stage: score each picture with the character classifier ("Mona or not").

The result holds the predicted label, the target class's score and the model version; the
decision rules read it (``{"if": "classifier", "min": 0.8}``) and the catalogue stores it on the
picture's ``images`` row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from stages.picture_model import PictureModel


class Classify(PictureModel):
    """A ``classifier.keras`` (with its card beside it) as a stage, TensorFlow imported on load; or a
    ``.npz`` linear model of the labelling loop (``scrapy classifier train --from-catalog``)."""

    name = "classify"

    def __init__(self, model_path: str | Path):
        super().__init__()
        self.model_path = Path(model_path)

    @property
    def version(self) -> str:
        if self.model is not None:
            return str(self.model.version)
        from models.classifier import model_version

        return model_version(self.model_path)

    def _load(self) -> Any:
        if self.model_path.suffix == ".npz":  # the labelling loop's linear model (models/label_learner.py)
            from models.label_learner import LinearClassifier

            return LinearClassifier.load(self.model_path)
        from models.classifier import CharacterClassifier

        return CharacterClassifier.load(self.model_path)

    def _predict(self, images: list[Image.Image]) -> list[dict[str, Any]]:
        return [self._result(p) for p in self.model.predict(images, batch_size=len(images))]

    def results_from_features(self, features: Any) -> list[dict[str, Any]]:
        """A linear model's results from features computed already (the review's retrain reads them
        from its feature cache): what ``results`` gives for the same pictures."""
        model = self.load()
        return [self._result(p) for p in model.predictions(model.scores(features))]

    def _result(self, prediction: Any) -> dict[str, Any]:
        return {"label": prediction.label, "target": self.model.target, "score": float(prediction.target_score),
                "model": self.model.version}
