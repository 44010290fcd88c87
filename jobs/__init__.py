"""Jobs over a finished crawl, run by ``scrapy`` commands and usable as a library: ``curate`` (the
curation stages again, from the catalogue), ``identity`` (the character without labels), ``export``
(training datasets), ``report`` (an HTML contact sheet) and ``review`` (keep/drop by hand).

They run the same stages as the crawl (stages/) and read and write the catalogue only through
catalog/. The layer beside pipelines (tests/test_layers.py): never imported by stages, models,
catalog or core.
"""
