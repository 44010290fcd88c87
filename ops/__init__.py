"""Running crawls unattended: ``scheduled`` (cron/systemd: one crawl per configured tag, with a lock
and a summary line each) and ``deploy`` (build the project's egg and upload it to Scrapyd).

The top layer (tests/test_layers.py): it starts ``scrapy`` commands and reads the catalogue; nothing
in the project imports it. The files cron and systemd use are in deploy/.
"""
