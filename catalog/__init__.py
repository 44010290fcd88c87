"""The catalogue: one SQLite file (sqlite-utils) of everything fetched, decided and why.

``catalog.store`` holds the schema and the reads and writes of the crawl, curation and export;
``catalog.tags`` the tag aliases, implications and search over them; ``catalog.reading`` the
export's read-only connection and its ``--where`` sandbox. The layer above core: it
imports nothing of the project but ``core`` (tests/test_layers.py).
"""
