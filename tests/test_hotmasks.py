"""Monthly hot-pixel masks and the growth of new hot pixels (issue 14 part 3, report §7.1):
the simulator's pixels that turn hot over the dates are recovered, as a rate a month and pixel
by pixel."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time

from nrsdark_dask.cli import main as cli
from nrsdark_dask.instrument import DQ
from nrsdark_dask.stages.hotmasks import bins, fit_growth

GROWTH = 50.0  # new hot pixels a month in the region (exaggerated: the statistics of a test)


@pytest.fixture(scope="module")
def growing(tmp_path_factory):
    """SUBS200A1 (64 x 2048) NRS (4 frames a group), 20 groups (83 s: one exposure's rate is
    good to ~0.05 DN/s, so a single input tells a 1 DN/s pixel), 12 exposures over six months,
    GROWTH pixels turning hot a month."""
    from nrsdark_dask.stages.calibrate import calibrate
    from nrsdark_dask.stages.select import select_inputs, write_manifest
    from nrsdark_dask.simulate import SimConfig, read_truth, simulate_dataset

    root = tmp_path_factory.mktemp("hotmasks")
    simulate_dataset(root / "sim", SimConfig(
        subarray="SUBS200A1", readpatt="NRS", ngroups=20, nexp=12, seed=5, start="2024-01-01",
        end="2024-06-30", gratings={"G395H": 1}, hot_growth=GROWTH), workers=2)
    write_manifest(select_inputs([root / "sim" / "uncal"],
                                 telemetry=root / "sim" / "telemetry.ecsv"), root / "m.ecsv")
    store = root / "s.zarr"
    assert not calibrate(root / "m.ecsv", store, refkit=root / "sim" / "refkit",
                         scheduler="threads")["failed"]
    kit_mask = next((root / "sim" / "refkit").glob("*_mask.fits"))
    return {"store": store, "truth": read_truth(root / "sim" / "truth.fits"), "mask": kit_mask}


def _hot(path):
    with fits.open(path) as h:
        return (h["DQ"].data & DQ["HOT"]) != 0


def test_monthly_masks_recover_the_growth_of_new_hot_pixels(growing, tmp_path, capsys):
    from stdatamodels.jwst import datamodels as dm

    from nrsdark_dask.stages.hotmasks import hot_masks

    tab = hot_masks(growing["store"], tmp_path / "masks", per="month", mask_in=growing["mask"])
    truth = growing["truth"]
    onset = truth["onset_mjd"]
    mjd = Time(list(truth["exposures"]["start"])).mjd
    span = (onset > mjd.min()) & (onset <= mjd.max())
    true_rate = span.sum() / (np.ptp(mjd) / 30.44)  # the Poisson draw's own rate
    got = tab.meta["growth_per_month"]
    print(f"\ngrowth {got:.1f} +- {tab.meta['growth_err']:.1f} a month; truth {true_rate:.1f} "
          f"({span.sum()} onsets in the data's dates), configured {GROWTH}")
    assert abs(got / true_rate - 1) < 0.20 and abs(got / GROWTH - 1) < 0.20
    assert list(tab["label"]) == sorted(set(tab["label"])) and tab["label"][0].startswith("2024-")
    assert tab["inputs"].sum() == 12 and tab["cumulative_new"][0] == 0

    # pixel by pixel: new after the first bin = the pixels that turned hot since
    hot = [_hot(p) for p in tab["mask"]]
    found = np.any(hot[1:], axis=0) & ~hot[0]
    end_first = Time(tab["end"][0]).mjd + 1
    start_last = Time(tab["start"][-1]).mjd
    must = (onset > end_first) & (onset < start_last)  # hot for at least one whole bin
    may = onset <= mjd.max()
    precision, recall = (found & may).sum() / found.sum(), (found & must).sum() / must.sum()
    print(f"new hot pixels: {found.sum()} found, precision {precision:.3f}, recall "
          f"{recall:.3f} ({must.sum()} onsets between the first and last bin)")
    assert precision > 0.95 and recall > 0.95
    # monotone and carrying the comparison mask; first bin's new_vs_mask = the kit's misses
    with fits.open(growing["mask"]) as h:
        kit = h["DQ"].data
    for path, (label, start, end) in zip(tab["mask"], tab["label", "start", "end"]):
        with dm.MaskModel(path) as m:
            m.validate()
            assert m.meta.pedigree == f"INFLIGHT {start} {end}"
            assert m.meta.reftype == "MASK" and m.meta.subarray.name == "SUBS200A1"
            assert ((m.dq & kit) == kit).all()  # nothing of the comparison mask lost
            assert any(label in str(h) for h in m.history)
    unknown = truth["hot"] & ~truth["known_hot"] & ~truth["ipc_neighbour"]
    assert tab["new_vs_mask"][0] >= 0.9 * unknown.sum()
    assert (tmp_path / "masks" / "hot_growth.png").read_bytes()[:4] == b"\x89PNG"


def test_masks_command_per_n_inputs_and_min_inputs(growing, tmp_path, capsys):
    out = tmp_path / "n"
    assert cli.main(["masks", "--store", str(growing["store"]), "--outdir", str(out),
                     "--per", "5"]) == 0
    text = capsys.readouterr().out
    assert "new hot pixels a month" in text and "N001" in text
    files = sorted(out.glob("*_mask_N*.fits"))
    assert [f.name[-9:] for f in files] == ["N001.fits", "N002.fits"]  # 5 + 7 (remainder joins)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[masks]\nmin_inputs = 3\n')
    assert cli.main(["masks", "--store", str(growing["store"]), "--outdir", str(tmp_path / "m"),
                     "--config", str(cfg)]) == 0
    from astropy.table import Table

    tab = Table.read(tmp_path / "m" / "hot_growth.ecsv")
    assert (tab["inputs"] >= 3).all() and tab["inputs"].sum() == 12
    assert list(tab["label"]) == ["2024-02_2024-03", "2024-04_2024-06"]  # 2+3, 2+2+3 inputs


def test_bad_per_is_one_line(growing, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["masks", "--store", str(growing["store"]), "--outdir", str(tmp_path),
                  "--per", "weekly"])
    assert e.value.code == 2 and "--per must be" in capsys.readouterr().err
    cfg = tmp_path / "c.toml"
    cfg.write_text('[masks]\nper = "weekly"\n')
    assert cli.main(["masks", "--store", str(growing["store"]), "--outdir", str(tmp_path),
                     "--config", str(cfg)]) == 2
    assert "[masks] per" in capsys.readouterr().err


def test_bins_and_fit():
    d = np.array(["2024-01-03", "2024-01-30", "2024-02-01", "2024-04-10", "2024-04-11"],
                 "datetime64[s]")
    assert [(lab, idx.tolist()) for lab, idx in bins(d, "month")] == [
        ("2024-01", [0, 1]), ("2024-02", [2]), ("2024-04", [3, 4])]
    assert [idx.tolist() for _, idx in bins(d, 2)] == [[0, 1], [2, 3, 4]]
    assert [idx.tolist() for _, idx in bins(d, 5)] == [[0, 1, 2, 3, 4]]
    t, c = np.array([0, 1, 2.5, 4]), np.array([0, 12, 31, 49])
    fit = fit_growth(t, c)
    slope, icpt = np.polyfit(t, c, 1)
    assert fit["slope"] == pytest.approx(slope) and fit["intercept"] == pytest.approx(icpt)
    assert 0 < fit["slope_err"] < 1 and fit["poisson_err"] == pytest.approx(7 / 4)
