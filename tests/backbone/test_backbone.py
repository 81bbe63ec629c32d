"""``load_backbone``: the public way to get a frozen DinoBloom feature extractor."""

from __future__ import annotations

import shutil

import pytest
import torch

import bloomseg
from bloomseg.backbone.registry import cached_path
from bloomseg.errors import WeightsError


def test_load_from_path_is_frozen_and_eval(small_checkpoints):
    model = bloomseg.load_backbone("dinobloom-s", weights=small_checkpoints["timm"])
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert all(not m.training for m in model.modules())
    with torch.inference_mode():
        out = model(torch.zeros(3, 3, 224, 448))
    assert out.shape == (3, 384, 16, 32)


def test_load_from_cache(small_checkpoints, bloomseg_home):
    target = cached_path("dinobloom-s")
    target.parent.mkdir(parents=True)
    shutil.copy(small_checkpoints["dinobloom"], target)
    from_cache = bloomseg.load_backbone("dinobloom-s")
    from_path = bloomseg.load_backbone("dinobloom-s", weights=small_checkpoints["dinov2"])
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(from_cache(x), from_path(x), atol=0, rtol=0)


def test_missing_cached_weights_say_how_to_get_them(bloomseg_home):
    with pytest.raises(WeightsError) as err:
        bloomseg.load_backbone("dinobloom-b")
    message = str(err.value)
    assert str(cached_path("dinobloom-b")) in message
    assert "bloomseg weights download dinobloom-b" in message and "--weights" in message


def test_wrong_size_for_the_name(small_checkpoints):
    with pytest.raises(WeightsError, match="holds a vit_small .* dinobloom-b is a vit_base"):
        bloomseg.load_backbone("dinobloom-b", weights=small_checkpoints["dinobloom"])


def test_plain_dinov2_name(small_checkpoints):
    model = bloomseg.load_backbone("dinov2-s", weights=small_checkpoints["dinov2"])
    assert model.embed_dim == 384
