"""Scrapy adapter of the tagger stage (stages/tag.py): tags each kept picture in batches, in the crawl.

Off unless ``TAGGER_PROJECT`` names a DeepDanbooru project folder or a WD14 tagger (``model.onnx``
+ ``selected_tags.csv``). Results go to ``record["model_tags"]`` (and the catalogue's ``image_tags``).
"""

from __future__ import annotations

from pipelines.model_stage import BatchedModelStage
from stages.tag import Tag


class TaggerPipeline(BatchedModelStage):
    name = "tagger"
    model_setting = "TAGGER_PROJECT"
    result_field = "model_tags"

    def make_stage(self) -> Tag:
        return Tag(self.model_path, self.settings.getfloat("TAGGER_THRESHOLD"),
                   dict(self.settings.getdict("TAGGER_CATEGORY_THRESHOLDS")))
