"""A real MiniLM capture of a few Rotten Tomatoes sentences, shared by the lens tests."""

import pytest

SENTENCES = [
    "the rock is destined to be the 21st century's new conan .",
    "a gorgeous , witty , seductive movie .",
    "effective but too-tepid biopic",
]


@pytest.fixture(scope="session")
def minilm_capture():
    from attnlens.backbones.capture import capture_text

    return capture_text(SENTENCES)
