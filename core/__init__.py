"""The bottom layer: what every other package may use and which imports nothing of the project.

Where files go and how they are written atomically (``core.storage``); the records the spiders
yield and the pipelines fill in (``core.items``). Issue 16's layering: core <-
catalog, sites <- models, stages <- pipelines <- crawler; ``tests/test_layers.py`` holds every package to it.
"""
