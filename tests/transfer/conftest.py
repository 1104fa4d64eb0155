"""A small real slice shared by the transfer tests: 60 Rotten Tomatoes sentences via MiniLM."""

import pytest

N_ITEMS = 60


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("transfer-cache")


@pytest.fixture(scope="session")
def rt_features(feature_cache):
    from attnlens.transfer.features import extract_features

    return extract_features("minilm", "rotten_tomatoes", n_items=N_ITEMS, max_tokens=32,
                            cache_dir=feature_cache, progress=False)
