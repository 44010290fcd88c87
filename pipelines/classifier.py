"""Stage: score each kept picture with the character classifier ("Mona or not"), in batches.

Off unless ``CLASSIFIER_MODEL`` names a ``classifier.keras`` with its card beside it. The result,
``record["classifier"]``, holds the predicted label, the target class's score and the model
version; the decision stage's rules read it, and the catalogue stores it on the ``images`` row.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from pipelines.model_stage import BatchedModelStage


class ClassifierPipeline(BatchedModelStage):
    name = "classifier"
    model_setting = "CLASSIFIER_MODEL"
    result_field = "classifier"

    def load_model(self) -> Any:
        from models.classifier import CharacterClassifier  # TensorFlow only when classifying

        return CharacterClassifier.load(self.model_path)

    def run_model(self, images: list[Image.Image]) -> list[dict[str, Any]]:
        return [
            {"label": p.label, "target": self.model.target, "score": float(p.target_score), "model": self.model.version}
            for p in self.model.predict(images, batch_size=len(images))
        ]
