import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from rlhf_app.store import Store  # noqa: E402
from tiny import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def sharp_model_dir(tmp_path_factory):
    """A tiny model that can learn (see `build_tiny_model`'s norm_gain)."""
    return build_tiny_model(tmp_path_factory.mktemp("sharp") / "model", norm_gain=3.0)


@pytest.fixture
def one_torch_thread():
    """Tiny matrices: a second torch thread only adds synchronisation, and the cores are shared."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "rlhf.db")


@pytest.fixture
def tiny(tiny_model_dir, tmp_path):
    from rlhf_app.models import load_model

    return load_model(str(tiny_model_dir), tmp_path, device="cpu")
