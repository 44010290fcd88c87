"""The SQLite catalogue: ``Catalog``, one connection with every read and write of it.

The catalogue records everything fetched and decided, and why, and it is what makes crawls
incremental: an artwork whose id and ``updateDate`` are catalogued with all its pages is not
fetched again. ``search_coverage`` remembers, per search query, how far down the results are known
to be complete, so that the "stop after N known artworks" rule only fires inside that range and
an interrupted crawl can never leave a gap (see ``PixivSpider``). ``curation_runs`` remembers which
model version last looked at each picture in each curation stage, so that ``scrapy curate``
(``jobs/curate.py``) skips what the same model has already seen.

The schema is in catalog/schema.py; the reads and writes are split by who makes them: the crawl
(catalog/crawls.py), curation, review and export (catalog/curation.py), merging node catalogues
(catalog/merge.py) and the wiki sprites (catalog/sprites.py). This module puts them together and
is where the rest of the project imports them from.
"""

from __future__ import annotations

from catalog.crawls import Coverage, CrawlRecords, KnownArtwork, crawl_started_by, stages_tried
from catalog.curation import CurationRecords, StoredPicture, read_manual_decisions
from catalog.merge import CatalogMerge
from catalog.schema import LOCAL_PREFIX, SCHEMA_VERSION, connect_read_only, utc_now
from catalog.sprites import SpriteRecords

__all__ = [
    "LOCAL_PREFIX", "SCHEMA_VERSION", "Catalog", "Coverage", "KnownArtwork", "StoredPicture", "connect_read_only",
    "crawl_started_by", "read_manual_decisions", "stages_tried", "utc_now",
]


class Catalog(CrawlRecords, CurationRecords, CatalogMerge, SpriteRecords):
    """One connection to the catalogue, with every read and write: the crawl's (catalog/crawls.py),
    curation's (catalog/curation.py), merging (catalog/merge.py) and the sprites' (catalog/sprites.py);
    the schema is in catalog/schema.py. Writers are single-threaded (Scrapy's reactor thread)."""
