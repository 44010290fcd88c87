"""The bottom layer: what every other package may use, and which imports nothing of the project.

Where files live and how they are written atomically (``storage``), the records the spiders yield
and the pipelines fill in (``items``), the one base of the project's errors and their exit codes
(``errors``), the output folder's lock (``output_lock``), worker processes (``workers``) and progress
bars (``progress``). The layers, bottom to top: core <- catalog, sites <- models <- stages <-
pipelines, jobs <- crawler <- ops; tests/test_layers.py holds every package to them.
"""
