"""Curation stages as plain functions over pictures and metadata, without Scrapy.

``convert`` and ``ugoira`` turn originals into JPEGs and WebPs, ``filters`` measures pixel
statistics, ``faces`` finds faces, ``classify`` and ``tag`` run the models (``picture_model``: what
they share), ``rules`` reads and checks curation rules and ``decide`` keeps or drops by them,
``dedup`` hashes pictures and groups near duplicates, ``sprites`` cuts a wiki's CSS sprite sheets
into labelled item icons. The crawl runs them through thin Scrapy adapters (pipelines/), ``scrapy
curate`` batch by batch (jobs/curate.py). The layer above models (tests/test_layers.py): it imports
core, catalog, sites and models, never pipelines, jobs or crawler.
"""
