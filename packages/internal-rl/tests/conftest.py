import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Small models on an oversubscribed 2-core machine run much faster single-threaded.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
