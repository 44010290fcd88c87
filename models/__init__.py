"""The machine-learning side: face detection now; the character classifier and tagger to come.

Each model module loads its weights from files the user supplies (nothing is downloaded at run
time) and has no Scrapy import; the stages in ``pipelines/`` wrap them.
"""
