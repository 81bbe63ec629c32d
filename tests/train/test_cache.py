"""Decoded-image store and feature cache: exact round trips and identity separation."""

from __future__ import annotations

import numpy as np
import torch

from bloomseg.data.dataset import load_sample, scan_split
from bloomseg.model.files import module_fingerprint
from bloomseg.model.network import SegmentationModel
from bloomseg.train.cache import FeatureCache, ImageStore, content_key
from conftest import tiny_vit, write_dataset


def test_features_read_back_equal_recomputed(tmp_path):
    model = SegmentationModel("fusion", tiny_vit())
    x = torch.randn(2, 3, 42, 42)
    with torch.no_grad():
        maps = model.features(x)
    cache = FeatureCache(tmp_path, {"backbone": module_fingerprint(model.backbone)})
    stacked = torch.stack(maps, dim=1).numpy()
    assert cache.get("img", "t42_0_0", 3) is None
    cache.put("img", "t42_0_0", 3, stacked[0])
    back = cache.get("img", "t42_0_0", 3)
    assert back.dtype == np.float16
    # features are float16-exact, so the cache loses nothing
    np.testing.assert_array_equal(back.astype(np.float32), stacked[0])
    with torch.no_grad():
        again = torch.stack(model.features(x), dim=1).numpy()
    np.testing.assert_array_equal(again[0], back.astype(np.float32))


def test_identity_separates_backbones_and_damage_is_a_miss(tmp_path):
    a = FeatureCache(tmp_path, {"backbone": module_fingerprint(tiny_vit(seed=0))})
    b = FeatureCache(tmp_path, {"backbone": module_fingerprint(tiny_vit(seed=1))})
    same = FeatureCache(tmp_path, {"backbone": module_fingerprint(tiny_vit(seed=0))})
    assert a.folder != b.folder and a.folder == same.folder
    assert (a.folder / "identity.json").is_file()
    a.put("img", "v", 0, np.ones((1, 2, 3, 3), np.float32))
    assert b.get("img", "v", 0) is None
    (a.folder / "img" / "v_k0.npy").write_bytes(b"torn")
    assert a.get("img", "v", 0) is None


def test_fingerprint_follows_values_not_objects():
    assert module_fingerprint(tiny_vit(seed=2)) == module_fingerprint(tiny_vit(seed=2))
    vit = tiny_vit(seed=2)
    with torch.no_grad():
        vit.norm.bias[0] += 1e-6
    assert module_fingerprint(vit) != module_fingerprint(tiny_vit(seed=2))


def test_image_store_decodes_once_and_follows_content(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=1, n_test=0)
    sample = scan_split(data).samples[0]
    store = ImageStore(tmp_path / "store")
    image, mask = store.load(sample)
    expected_image, expected_mask = load_sample(sample)
    np.testing.assert_array_equal(image, expected_image)
    np.testing.assert_array_equal(mask, expected_mask)
    assert isinstance(image, np.memmap)
    key = content_key(sample)
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [
        f"{key}.mask.npy", f"{key}.rgb.npy"]
    from PIL import Image

    Image.fromarray(expected_image[::-1].copy()).save(sample.image)
    assert content_key(sample) != key
    np.testing.assert_array_equal(store.load(sample)[0], expected_image[::-1])
