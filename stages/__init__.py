"""Curation stages as plain functions over pictures and metadata, without Scrapy.

``stages.dedup`` hashes pictures and groups near duplicates; ``stages.sprites`` cuts a wiki's CSS
sprite sheets into labelled item icons. The layer beside models (tests/test_layers.py): it imports
core, catalog, sites and models, never pipelines (the Scrapy adapters) or crawler. The other
stages' functions still live in their pipelines/ modules and move here with issue 16.
"""
