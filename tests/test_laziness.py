"""Laziness, counted (issue 20): graph builders compute nothing, and each command computes as
often as it says (``raise_if_dask_computes`` and the ``computes`` fixture count every compute
on a local scheduler: ``dask.compute``, ``.compute()``, ``np.asarray``, a command's own
``scheduler="threads"``)."""

import numpy as np
import pytest

from nrsdark_dask.config import Config
from nrsdark_dask.reduction import delivery
from nrsdark_dask.reduction import graph as R
from nrsdark_dask.stages import cull as C
from nrsdark_dask.stages.build import build
from nrsdark_dask.stages.periods import periods
from nrsdark_dask.store import open_dataset

from conftest import raise_if_dask_computes


def test_the_counters_count_every_kind_of_compute(cal_store, computes):
    ds = open_dataset(cal_store["path"])
    ds.rate[0, :2, :2].values  # np.asarray through xarray
    ds.rate.data[0, 0, 0].compute()
    ds.rate.data[0, 0, 0].compute(scheduler="sync")
    assert computes == ["default", "default", "sync"]
    with pytest.raises(RuntimeError, match="too many dask computes: 2 > 1"):
        with raise_if_dask_computes(1):
            float(ds.rate.data[0, 0, 0])
            np.asarray(ds.rate.data[0, :1, :1])


def test_graph_builders_compute_nothing(cal_store, tmp_path):
    from dataclasses import replace

    ds = open_dataset(cal_store["path"])
    with raise_if_dask_computes():
        R.build_products(ds)
        delivery.rate_snr(ds)
        R.frame_statistics(ds)
        frames = C.mean_frames(ds)
        C.diagnose(ds, frames, replace(Config().cull, min_exposures=3),
                   np.ones(ds.sizes["exposure"], bool))


def test_a_build_computes_once(cal_store, tmp_path, computes):
    build(cal_store["path"], tmp_path / "out")
    assert computes == ["threads"]


def test_cull_computes_the_mean_frames_once_then_once_a_pass(cal_store, computes, tmp_path):
    (tmp_path / "c.toml").write_text("[cull]\nmin_exposures = 3\n")
    tab, _ = C.cull(cal_store["path"], cfg=tmp_path / "c.toml")
    assert len(computes) == 1 + tab.meta["passes"] and tab.meta["passes"] <= C.MAX_PASSES


def test_periods_compute_each_prediction_and_each_build_once(cal_store, computes, tmp_path):
    tab = periods(cal_store["path"], tmp_path / "p")
    assert list(tab["label"]) == ["master"]  # 4 inputs: too few for a period
    assert len(computes) == 2  # the SNR of all inputs, then the master's build
