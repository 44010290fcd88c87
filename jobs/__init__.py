"""Jobs over a finished crawl, run by ``scrapy`` commands and usable as a library: ``curate`` (the
curation stages again, from the catalogue; ``curate_run``: what it shares with its stages),
``identity`` (the character without labels), ``export`` (training datasets), ``report`` (an HTML
contact sheet), ``review`` (keep/drop by hand) and ``isaac_icons`` (the Isaac recognizer's icons).

They run the same stages as the crawl (stages/) and read and write the catalogue only through
catalog/. The layer beside pipelines (tests/test_layers.py): never imported by stages, models,
catalog or core.
"""
