"""The segmentation model: what freezing leaves as it was while the rest trains."""

from __future__ import annotations

import pytest
import torch

from bloomseg.model.network import SegmentationModel


def _step(model: SegmentationModel) -> dict[str, torch.Tensor]:
    """One optimiser step on a random batch; the state before it."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    optimiser = torch.optim.SGD([p for g in model.parameter_groups(0.1) for p in g["params"]],
                                lr=0.1)
    model(torch.randn(2, 3, 32, 32)).mean().backward()
    optimiser.step()
    return before


@pytest.mark.parametrize("part", ["none", "norms", "encoder", "encoder+norms"])
def test_freezing_keeps_exactly_its_part(part):
    torch.manual_seed(0)
    model = SegmentationModel("unet", out_channels=2, unet_levels=2)
    model.freeze(part)
    before = _step(model)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    encoder = {k for k in after if k.startswith("head.down.")}
    stats = {k for k in after if k.endswith(("running_mean", "running_var"))}
    if "encoder" in part:
        assert not changed & encoder
    else:
        assert changed & encoder
    if "norms" in part:
        assert not changed & stats
    else:
        assert changed & stats - (encoder if "encoder" in part else set())
    assert changed - encoder - stats  # the decoder always learns
    assert model.training  # the frozen parts are in eval mode, the model itself is not


def test_an_unknown_part_is_refused():
    with pytest.raises(ValueError, match="freeze 'decoder'"):
        SegmentationModel("unet", unet_levels=2).freeze("decoder")
