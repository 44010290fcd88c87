"""Scrapy adapter of the classifier stage (stages/classify.py): scores each kept picture in batches.

Off unless ``CLASSIFIER_MODEL`` names a ``classifier.keras`` with its card beside it. The result
goes to ``record["classifier"]``, which the decision stage's rules read and the catalogue stores.
"""

from __future__ import annotations

from pipelines.model_stage import BatchedModelStage
from stages.classify import Classify


class ClassifierPipeline(BatchedModelStage):
    name = "classifier"
    model_setting = "CLASSIFIER_MODEL"
    result_field = "classifier"

    def make_stage(self) -> Classify:
        return Classify(self.model_path)
