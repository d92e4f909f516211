import pytest
import torch

from internal_rl.backbone import Backbone, BackboneConfig
from internal_rl.discovery import ControlledModel
from internal_rl.metacontroller import Metacontroller, MetacontrollerConfig


@pytest.fixture(autouse=True)
def _one_thread():
    # Small models on an oversubscribed 2-core machine run much faster single-threaded.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _controlled_model(seed: int = 0, switch_bias: float = 0.0) -> ControlledModel:
    torch.manual_seed(seed)
    base = Backbone(BackboneConfig(n_layers=2, d_model=32, n_heads=4, mlp_hidden=64))
    meta = Metacontroller(32, MetacontrollerConfig())
    with torch.no_grad():
        for p in meta.decoder.parameters():
            p.normal_(0, 0.3)
        meta.switch[-1].bias.fill_(switch_bias)
    return ControlledModel(base, meta).eval()


@pytest.fixture
def controlled_model():
    """A factory of tiny random base model + metacontroller pairs whose codes change the actions."""
    return _controlled_model
