"""The project's own Scrapy commands (``COMMANDS_MODULE``), one module per command: ``scrapy -h`` lists them."""
