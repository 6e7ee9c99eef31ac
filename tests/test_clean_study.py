"""`[data] clean = true`: what the audit flags never reaches the split, and the removal is listed."""

from pathlib import Path

import numpy as np

from bcauto.config import parse_study
from bcauto.data import Dataset
from bcauto.plugins import components
from bcauto.study import SearchRequest, prepare_data
from bcauto_builtin.sources.synthetic import generate


def request_for(data, clean):
    cfg = parse_study(
        f"[data]\nimage_size = 32\nclean = {'true' if clean else 'false'}\n[study]\nshift_validation = false", Path("clean.toml")
    )
    return SearchRequest(cfg=cfg, data=data, study_name="clean", trials=1, storage="", tracking_uri="", seed=0, timeout=None)


def test_clean_removes_flagged_images_before_the_split():
    images, labels = generate(300, 32, seed=0)
    images = np.concatenate([images, images[:5], np.zeros((1, 32, 32, 3), np.uint8)])  # 5 exact copies, 1 blank
    labels = np.concatenate([labels, labels[:5], labels[:1]])
    data = Dataset(images, labels.astype(np.int64), tuple(f"c{i}" for i in range(8)), "dirty")
    kept = prepare_data(request_for(data, clean=True), components())
    untouched = prepare_data(request_for(data, clean=False), components())
    assert len(untouched.train.labels) + len(untouched.val.labels) == 306 and not untouched.removed
    total = len(kept.train.labels) + len(kept.val.labels)
    assert total == 306 - len(kept.removed) and len(kept.removed) >= 6
    removed = {r["index"] for r in kept.removed}
    assert 305 in removed, "the blank image is removed"
    assert all({"index", "kinds", "reasons"} <= set(r) for r in kept.removed)
