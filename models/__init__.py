"""The machine learning, without Scrapy: every model the curation stages and commands run, and the
code that trains them.

Face detectors (``faces``: the cascade and animeface; ``face_heatmap`` and ``face_verifier``: the
learned detector; ``face_yolo``: a pretrained YOLO in ONNX), the character classifier
(``classifier``), the taggers (``taggers`` picks DeepDanbooru, ``tagger``, or WD14, ``wd14``), the
identity embedder (``identity``), crops and training sizes (``crops``), the segmentation and DCGAN
trainers (``segment``, ``gan``, with ``labelme`` annotations), the Isaac item recognizer (``isaac/``),
and what the models share (``inference``, ``imaging``, ``torch_common``, ``training``).

Weights come from files the user names (nothing is downloaded at run time); TensorFlow, torch and
onnxruntime are imported only when a model loads. A layer above core, catalog and sites
(tests/test_layers.py): stages/, pipelines/ and jobs/ wrap these, never the other way round.
"""
