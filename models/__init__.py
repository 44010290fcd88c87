"""The machine-learning side: character classifier, tagger, face detector, sprite classifier.

Empty for now (the curation issue fills it); importable so that pipelines can refer to it.
"""
