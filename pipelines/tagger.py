"""Stage: tag each kept picture with a DeepDanbooru or WD14 tagger, in batches, inside the crawl.

Off unless ``TAGGER_PROJECT`` names a DeepDanbooru project folder or a WD14 tagger (``model.onnx``
+ ``selected_tags.csv``; ``models.tagger.load_tagger`` tells them apart). Results go to
``record["model_tags"]`` (and the catalogue's ``image_tags``): tag, category, score, model version.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from pipelines.model_stage import BatchedModelStage


class TaggerPipeline(BatchedModelStage):
    name = "tagger"
    model_setting = "TAGGER_PROJECT"
    result_field = "model_tags"

    def load_model(self) -> Any:
        from models.tagger import load_tagger  # TensorFlow / onnxruntime are imported only when tagging is on

        tagger = load_tagger(
            self.model_path,
            threshold=self.settings.getfloat("TAGGER_THRESHOLD"),
            category_thresholds=dict(self.settings.getdict("TAGGER_CATEGORY_THRESHOLDS")),
        )
        self.category_by_tag = {tag: tagger.category_of(i) for i, tag in enumerate(tagger.tags)}
        return tagger

    def run_model(self, images: list[Image.Image]) -> list[list[dict[str, Any]]]:
        return [
            [
                {"tag": tag, "category": self.category_by_tag[tag], "score": float(score), "model": self.model.version}
                for tag, score in sorted(tags.items(), key=lambda kv: -kv[1])
            ]
            for tags in self.model.predict(images, batch_size=len(images))
        ]
