"""Fixtures the model tests share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def drawn_heads_detector():
    """The learned face detector and its crop verifier, trained once for the session, briefly, on drawn
    heads (tests/models/test_face_heatmap.py ``train_on_scenes``): the heatmap and the verifier tests
    both read it (about 40 s on 2 cores; two trainings took 65 s)."""
    from tests.models.test_face_heatmap import train_on_scenes

    return train_on_scenes(260, verifier_steps=150)
