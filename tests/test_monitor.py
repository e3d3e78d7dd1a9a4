"""``nrsdark monitor`` (issue 22 item 3): a simulated year of darks arriving in 4 batches
gives the same period darks and records as one run over all of it; a run with nothing new
does nothing; a run killed half-way is finished by the next."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits

from nrsdark_dask import results as R
from nrsdark_dask.cli import main as cli

pytestmark = pytest.mark.xdist_group("monitor")


@pytest.fixture(scope="module")
def year(tmp_path_factory):
    """SUBS200A1 (64 x 2048) TRAD, 10 groups, 12 clean exposures over a year (as periods')."""
    from nrsdark_dask.simulate import SimConfig, simulate_dataset

    root = tmp_path_factory.mktemp("monitor")
    simulate_dataset(root / "sim", SimConfig(subarray="SUBS200A1", ngroups=10, nexp=12,
                                             seed=21, gratings={"G395H": 1}))
    return root


def _config(root, name, inputs, sim):
    (root / name).mkdir()
    path = root / name / "c.toml"
    path.write_text(f'[monitor]\ninputs = ["{inputs}"]\ntelemetry = "{sim}/telemetry.ecsv"\n'
                    f'refkit = "{sim}/refkit"\nstores = "{root / name}/stores"\n'
                    f'outdir = "{root / name}/out"\n[delivery]\nsnr_trad = 0.3\n')
    return path


def _records(db) -> dict:
    with R.ResultsDB(R.resolve(db)) as rdb:
        windows = [(w["label"], w["first_exposure"], w["last_exposure"], w["n_inputs"])
                   for w in rdb.read_table("monitor_windows")]
        snr = sorted(round(a["snr"], 6) for a in rdb.read_table("analyses"))
        (held,) = rdb.read_table("monitor_groups")
        files = {r["id"]: r["path"] for r in rdb.read_table("reffiles")}
        darks = [files[w["reffile_id"]] for w in rdb.read_table("monitor_windows")]
    return {"windows": windows, "snr": snr, "held": (held["n_held"], held["n_more_needed"]),
            "darks": darks}


def test_four_batches_equal_one_run(year, tmp_path, capsys, monkeypatch):
    sim = year / "sim"
    uncal = sorted((sim / "uncal").glob("*_uncal.fits"),
                   key=lambda p: fits.getheader(p)["DATE-OBS"] + fits.getheader(p)["TIME-OBS"])
    one = _config(tmp_path, "one", sim / "uncal", sim)
    assert cli.main(["monitor", str(one)]) == 0
    whole = _records(tmp_path / "one" / "stores" / R.DEFAULT_NAME)
    assert len(whole["windows"]) >= 2, whole
    assert sum(w[3] for w in whole["windows"]) + whole["held"][0] == 12

    arrivals = tmp_path / "arrivals"
    arrivals.mkdir()
    batches = _config(tmp_path, "batches", arrivals, sim)
    import nrsdark_dask.stages.analyze as A

    for b in range(4):
        for f in uncal[3 * b:3 * b + 3]:
            shutil.copy(f, arrivals / f.name)
        if b == 2:  # killed while analysing the first window it builds: the next run goes on
            def killed(*a, **k):
                raise KeyboardInterrupt

            monkeypatch.setattr(A, "analyze", killed)
            assert cli.main(["monitor", str(batches)]) == 130
            monkeypatch.undo()
        assert cli.main(["monitor", str(batches)]) == 0
    out = capsys.readouterr().out
    assert cli.main(["monitor", str(batches)]) == 0
    assert "nothing new" in capsys.readouterr().out
    got = _records(tmp_path / "batches" / "stores" / R.DEFAULT_NAME)
    assert got["windows"] == whole["windows"] and got["snr"] == whole["snr"]
    assert got["held"] == whole["held"]
    for a, b in zip(got["darks"], whole["darks"]):
        with fits.open(a) as ha, fits.open(b) as hb:
            for ext in ("SCI", "ERR", "DQ", "DRK", "UNC"):
                np.testing.assert_array_equal(ha[ext].data, hb[ext].data)
    assert (tmp_path / "batches" / "out" / "trends" / "index.html").exists()
    assert "T0" in out
