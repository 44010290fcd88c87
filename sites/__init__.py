"""The sites' own formats, kept apart from Scrapy: how Pixiv's web API is asked and what it answers.

``sites.pixiv_api`` builds the search and detail URLs and reads the JSON bodies into records; the
spider (crawler/spiders/pixiv.py) only schedules requests. A layer above core that imports nothing
else of the project (tests/test_layers.py), so a pipeline may name a Pixiv file without the crawler.
"""
