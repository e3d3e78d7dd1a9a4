"""Automatic artifact culling (issue 13): kernels against plain numpy and injected truth, then
a small simulated set through jwst, ``nrsdark cull``, ``select --cull`` and ``build --cull``."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from nrsdark_dask.cli import main as cli
from nrsdark_dask.config import CullConfig
from nrsdark_dask.kernels import artifacts as art

ALLSLITS_Y = np.arange(896, 1152)
ALLSLITS_X = np.arange(2048)


def test_leave_one_out_median_equals_numpy():
    rng = np.random.default_rng(1)
    for n_exp in (2, 3, 4, 7, 8):
        s = rng.normal(size=(n_exp, 33, 17))
        s[rng.random(s.shape) < 0.25] = np.nan
        s[:, 0, 0] = np.nan  # a pixel with nothing anywhere
        with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
            slow = np.stack([np.nanmedian(np.delete(s, e, 0), 0) for e in range(n_exp)])
        np.testing.assert_allclose(art.leave_one_out_median(s), slow, equal_nan=True)


def test_picture_frame_recovers_an_injected_amplitude():
    rng = np.random.default_rng(2)
    d = art.edge_distance(ALLSLITS_Y, ALLSLITS_X)
    found = []
    for amp in (0.0, 3.0, 12.0):
        img = rng.normal(0, 17.0, (256, 2048)) + amp * np.exp(-d / 60.0)
        a, err = art.picture_frame(img, ALLSLITS_Y, ALLSLITS_X)
        assert abs(a - amp) < 4 * err and err < 0.6, (amp, a, err)
        found.append(a)
    assert found[2] > found[1] > found[0]
    # a subarray far from every edge has no picture frame to measure
    assert np.isnan(art.picture_frame(np.zeros((32, 64)), np.arange(900, 932),
                                      np.arange(900, 964))[0])


def test_stripe_score_is_the_matched_filter_snr():
    """Eight noise images, one with 45-degree stripes, one with stripes along the rows: the
    directional periodogram scores the diagonal one at its matched-filter SNR, nothing else
    over the limit."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[896:1152, 0:2048]
    err = np.full((256, 2048), 0.08)
    images = [rng.normal(0, 0.08, err.shape) for _ in range(8)]
    amp = 0.004  # expected SNR amp sqrt(N/2) / sigma = 0.004 * 512 / 0.08 = 25.6
    images[2] += amp * np.sin(2 * np.pi * (xx + yy) / 150.0 + 1.0)
    images[5] += 3 * amp * np.sin(2 * np.pi * yy / 100.0)  # along rows: not glow
    spectra = [art.stripe_spectra(img, err) for img in images]
    power = np.stack([p for p, _, _, _ in spectra])
    periods, angles = spectra[0][1], spectra[0][2]
    score, cell = art.stripe_scores(power)
    assert 21 < score[2] < 30, score
    assert max(np.delete(score, 2)) < CullConfig().glow_sigma, score
    # 256 rows resolve the angle to ~10 degrees; along rows the period is 150 px whatever
    # the angle found, i.e. 150 cos(angle) along the projection (+-2 bins: 5 bins summed)
    angle, period = angles[cell[2]], periods[cell[2]]
    assert abs(angle - 45) <= 10 and abs(period - 150 * np.cos(np.radians(angle))) < 16
    # leaving the striped image out of the reference changes nothing for the others
    ref = np.ones(8, bool)
    ref[2] = False
    again, _ = art.stripe_scores(power, ref)
    assert again[2] > 21 and max(np.delete(again, 2)) < CullConfig().glow_sigma


def test_large_scale_structure_sees_rings_not_column_noise():
    rng = np.random.default_rng(6)
    y, x = np.mgrid[896:1152, 0:2048]
    noise = rng.normal(0, 17.0, y.shape)
    columns = noise + rng.normal(0, 3.0, 2048)[None, :]  # 1/f read noise: column offsets
    rings = noise + 3.0 * np.cos(2 * np.pi * np.hypot(y - 1400, x - 700) / 90.0)
    assert 0.7 < art.large_scale_structure(noise) < 1.4
    assert 0.7 < art.large_scale_structure(columns) < 1.4
    assert art.large_scale_structure(rings) > 4


def test_extended_positive_finds_a_trace_not_noise_or_hot_pixels():
    rng = np.random.default_rng(4)
    err = np.full((256, 2048), 0.08)
    noise = rng.normal(0, 0.08, err.shape)
    hot = noise.copy()
    hot[rng.integers(0, 256, 300), rng.integers(0, 2048, 300)] += 5.0  # isolated pixels
    assert art.extended_positive(hot, err)[0] < CullConfig().persistence_sigma
    trace = noise.copy()
    trace[100:104, 300:1800] += 0.04  # a slit trace at half the noise per pixel
    score, area, level = art.extended_positive(trace, err)
    # the whole trace's mean has SNR 0.5 sqrt(6000) = 39; noise breaks it into pieces, of
    # which the best is still far over the limit
    assert score > CullConfig().persistence_sigma and area > 500 and 0.02 < level < 0.08
    nulls = [art.extended_positive(rng.normal(0, 0.08, err.shape), err)[0] for _ in range(4)]
    assert max(nulls) < 0.6 * CullConfig().persistence_sigma, nulls


def test_extended_positive_is_not_fooled_by_errors_too_small_in_a_third_of_the_pixels():
    """jwst's rate_err on a long dark ramp: a third of the pixels (where stcal's Poisson term
    came out zero) carry read noise only, 4x under the true scatter.  A clean residual then
    scored over the limit before the errors were floored at the image's robust sigma; now
    it scores as noise, the trace under the same errors is still found, and a region's rate
    has its score's sign even with a very hot pixel of large error and negative residual."""
    rng = np.random.default_rng(7)
    shape, limit = (256, 2048), CullConfig().persistence_sigma
    err = np.full(shape, 0.005)
    err[rng.random(shape) < 1 / 3] = 0.00125  # read noise only
    clean = [rng.normal(0, 0.0045, shape) for _ in range(3)]
    small = err < 0.005
    assert 3 < np.std(clean[0][small] / err[small]) < 4  # the scatter of z there
    scores = [art.extended_positive(c, err)[0] for c in clean]
    print(f"\nclean, errors too small in a third: scores {np.round(scores, 1)}, limit {limit}")
    assert max(scores) < 0.6 * limit  # 11.7, 12.7, 13.0 before the floor
    trace = clean[0].copy()
    trace[100:104, 300:1800] += 0.0025  # half the noise per pixel, as in the test above
    trace[101, 900] = -49.0  # a very hot pixel's residual, with its large error
    err_hot = err.copy()
    err_hot[101, 900] = 36.5
    score, area, level = art.extended_positive(trace, err_hot)
    assert score > limit and area > 500 and 0.001 < level < 0.004
    # pixels with no rate (NaN: snowball cores left out) weigh nothing in the region's rate:
    # a 0.005 DN/s trace with every other column NaN reads ~0.005, not half of it
    gappy = clean[1].copy()
    gappy[100:104, 300:1800] += 0.005
    gappy[100:104, 300:1800:2] = np.nan
    score, area, level = art.extended_positive(gappy, np.full(shape, 0.005))
    assert score > limit and 0.0035 < level < 0.006, level  # 0.0023 when NaN pixels weighed


def test_tree_rings_are_bias_and_glow_is_light():
    """Issue 21: a mode switch's tree rings are a decaying bias, so its rate image holds only
    their derivative (1/600 s); in a 256-row strip that derivative scores on the stripe
    detector.  The same stripes, stronger in the bias image, mark it as rings; glow, which
    leaves nothing in the bias image, stays glow."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[896:1152, 0:2048]
    err = np.full((256, 2048), 0.08)
    rings = 24.0 * 0.5 * np.cos(2 * np.pi * np.hypot(yy - 1400.0, xx - 700.0) / 90.0)
    rate = [rng.normal(0, 0.08, err.shape) for _ in range(8)]
    bias = [rng.normal(0, 17.0, err.shape) for _ in range(8)]
    rate[1] += rings / 600.0 * 0.4  # the rings' derivative: as in the demo's rate (~14 sigma)
    bias[1] += rings  # 0.2 K: 24 DN
    rate[4] += 0.004 * np.sin(2 * np.pi * (xx + yy) / 150.0)  # glow: rate only
    power = np.stack([art.stripe_spectra(r, err)[0] for r in rate])
    bias_power = np.stack([art.stripe_spectra(b, art.robust_sigma(b))[0] for b in bias])
    glow, cell, in_bias, is_rings = art.glow_scores(power, bias_power)
    limit = CullConfig().glow_sigma
    assert glow[1] > limit and in_bias[1] > glow[1] and is_rings[1]
    assert glow[4] > limit and in_bias[4] < 4 and not is_rings[4]
    assert (glow[[0, 2, 3, 5, 6, 7]] < limit).all()  # noise: neither


# --- the pipeline, against simulation truth ---------------------------------------------------
@pytest.fixture(scope="module")
def artifact_store(tmp_path_factory):
    """ALLSLITS, 10 groups, 9 exposures: two after a mode switch (0.2 K, the top of the
    report's subarray range), one with persistence (report sizes), the PRISM ones with MSA
    glow 10x the default crest: sizes well over the detection limits on 10 groups (the docs
    cull page gives the limits measured on 20 groups by benchmarks/cull_limits.py)."""
    from nrsdark_dask.stages.calibrate import calibrate
    from nrsdark_dask.config import SelectConfig
    from nrsdark_dask.stages.select import select_inputs, write_manifest
    from nrsdark_dask.simulate import SimConfig, read_truth, simulate_dataset

    root = tmp_path_factory.mktemp("cull")
    sim = root / "sim"
    simulate_dataset(sim, SimConfig(subarray="ALLSLITS", ngroups=10, nexp=9, seed=13,
                                    artifacts=True, switch_dt=0.2, glow_rate=0.06,
                                    mode_switch_fraction=0.2, persistence_fraction=0.1,
                                    gratings={"G140H": 3, "PRISM": 1}))
    tab = select_inputs([sim / "uncal"], cfg=SelectConfig(accept_without_telemetry=True))
    write_manifest(tab, root / "manifest.ecsv")
    store = root / "s.zarr"
    summary = calibrate(root / "manifest.ecsv", store, refkit=sim / "refkit", scheduler="threads")
    assert not summary["failed"]
    return {"root": root, "sim": sim, "store": store, "truth": read_truth(sim / "truth.fits")}


def test_cull_finds_every_injected_artifact_and_no_clean_exposure(artifact_store, capsys):
    root, store = artifact_store["root"], artifact_store["store"]
    out = root / "culled.ecsv"
    assert cli.main(["cull", "--store", str(store), "-o", str(out), "--scheduler", "sync"]) == 0
    printed = capsys.readouterr().out
    tab = Table.read(out, format="ascii.ecsv")
    assert list(tab.colnames[:5]) == ["exposure", "artifact", "score", "culled", "reason"]
    truth = {str(r["filename"]): r for r in artifact_store["truth"]["exposures"]}
    kinds = ("mode_switch", "glow", "persistence")
    seen = {k: [0, 0] for k in kinds}
    false_culls = []
    for row in tab:
        t = truth[row["exposure"].split("@")[0]]
        has = [k for k in kinds if t[k]]
        for k in has:
            seen[k][0] += 1
            seen[k][1] += bool(row["culled"])
        if not has and row["culled"]:
            false_culls.append(row["exposure"])
        if has and row["culled"]:
            assert row["artifact"] in has, (row["artifact"], has, row["reason"])
    recall = {k: (c / n if n else None) for k, (n, c) in seen.items()}
    assert all(n > 0 for n, _ in seen.values()), seen  # the set holds every kind
    assert recall == {k: 1.0 for k in kinds}, seen
    assert false_culls == []
    assert f"{int(tab['culled'].sum())} culled" in printed
    pngs = sorted((root / "culled_png").glob("*.png"))
    assert len(pngs) == int(tab["culled"].sum())
    with open(pngs[0], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_build_and_select_take_the_cull_table(artifact_store, tmp_path, capsys):
    root, store, sim = artifact_store["root"], artifact_store["store"], artifact_store["sim"]
    out = root / "culled.ecsv"
    if not out.exists():
        assert cli.main(["cull", "--store", str(store), "-o", str(out)]) == 0
    tab = Table.read(out, format="ascii.ecsv")
    n_culled = int(tab["culled"].sum())
    # a scientist overrules the first cull by hand: edit the culled column
    first = int(np.flatnonzero(tab["culled"])[0])
    tab["culled"][first] = False
    edited = tmp_path / "edited.ecsv"
    tab.write(edited, format="ascii.ecsv")
    assert cli.main(["build", "--store", str(store), "--outdir", str(tmp_path / "ref"),
                     "--cull", str(edited), "--scheduler", "sync"]) == 0
    printed = capsys.readouterr().out
    assert f"inputs {len(tab) - n_culled + 1};" in printed
    dark = next((tmp_path / "ref").glob("*dark*.fits"))
    history = str(fits.getheader(dark)["HISTORY"])
    assert f"Culled: {n_culled - 1} exposure(s) left out by edited.ecsv" in history
    # select merges the cull with the hand-made exclusions
    manifest = tmp_path / "m.ecsv"
    assert cli.main(["select", str(sim / "uncal"), "--accept-no-telemetry", "--cull", str(out),
                     "-o", str(manifest)]) == 0
    m = Table.read(manifest, format="ascii.ecsv")
    rejected = {r["name"]: r["reason"] for r in m if not r["accepted"]}
    for row in tab[tab["culled"]]:
        assert rejected[row["exposure"].split("@")[0]].startswith("culled automatically: ")


def test_cull_refuses_what_it_cannot_judge(artifact_store, tmp_path, capsys):
    from nrsdark_dask.store import StoreError, open_dataset

    store = artifact_store["store"]
    bad = tmp_path / "bad.ecsv"
    Table({"exposure": ["nothere.fits@0123456789ab"], "culled": [True]}).write(bad)
    assert cli.main(["build", "--store", str(store), "--outdir", str(tmp_path / "o"),
                     "--cull", str(bad)]) == 2
    assert "not in" in capsys.readouterr().err
    with pytest.raises(StoreError, match="every exposure"):
        open_dataset(store, exclude=[str(e) for e in open_dataset(store).exposure.values])
    assert cli.main(["cull", "--store", str(store), "-o", str(tmp_path / "x.txt")]) == 2
    assert "must end in .ecsv" in capsys.readouterr().err
    cfg = tmp_path / "c.toml"
    cfg.write_text("[cull]\nmin_exposures = 50\n")
    assert cli.main(["cull", "--store", str(store), "-o", str(tmp_path / "y.ecsv"),
                     "--config", str(cfg)]) == 2
    assert "needs at least 50" in capsys.readouterr().err


def test_cull_on_a_local_cluster_equals_the_in_process_run(artifact_store, tmp_path):
    from nrsdark_dask.stages.cull import KINDS, cull

    # the in-process run: the first test's table (sync scheduler) where it is there
    out = artifact_store["root"] / "culled.ecsv"
    local = (Table.read(out, format="ascii.ecsv").filled("") if out.exists()  # "" read as masked
             else cull(artifact_store["store"], scheduler="threads")[0])
    cluster, _ = cull(artifact_store["store"], scheduler="local:2", scratch=tmp_path)
    for col in ("exposure", "artifact", "culled", *[f"score_{k}" for k in KINDS]):
        assert list(cluster[col]) == list(local[col]), col
    assert list(tmp_path.iterdir()) == []  # the scratch copy of the mean frames is gone


def test_bias_image_and_few_group_pixels(artifact_store):
    """Issue 21, on the store: (1) light added to an exposure's rate (a bright glow-like
    patch) leaves its bias image, and so its mode-switch score, alone, while the mean frame
    would have carried it; (2) pixels with few usable groups (a snowball's core, whose rate
    carries a pedestal) make no persistence region once left out."""
    import dask
    import dask.array as da

    from nrsdark_dask.stages import cull as C
    from nrsdark_dask.config import Config
    from nrsdark_dask.store import open_dataset

    ds = open_dataset(artifact_store["store"])
    truth = {str(r["filename"]): r for r in artifact_store["truth"]["exposures"]}
    clean = [i for i, e in enumerate(ds.exposure.values)
             if not any(truth[str(e).split("@")[0]][k]
                        for k in ("mode_switch", "glow", "persistence"))]
    e = clean[0]
    cfg = Config().cull
    frames = C.mean_frames(ds)
    patch = np.zeros(ds.rate.shape, np.float32)
    patch[e, 100:180, 600:1400] = 0.5  # DN/s of extra light in one clean exposure
    t_mean = float(np.mean(ds.group_time.values))
    lit = ds.copy()
    lit["rate"] = ds.rate + patch
    lit_frames = frames + da.from_array(patch * t_mean, chunks=frames.chunks)
    with dask.config.set(scheduler="threads"):
        base = dask.compute(*C.diagnose(ds, frames, cfg))
        bias_lit = dask.compute(*C.diagnose(lit, lit_frames, cfg))
    assert bias_lit[e]["structure"] == pytest.approx(base[e]["structure"], rel=1e-6)
    assert bias_lit[e]["persistence"] > 100  # the light is in the rate
    # the mean frame (what the mode switch was scored on before) carries it
    mean_res = art.residuals(np.asarray(lit_frames), np.ones(ds.rate.shape, bool))
    assert art.large_scale_structure(mean_res[e]) > 3 * base[e]["structure"]

    # a snowball core: 60 pixels whose rate carries +3 DN/s from one usable group
    core = np.zeros(ds.rate.shape, np.float32)
    core[e, 60:66, 300:310] = 3.0
    hit = ds.copy()
    hit["rate"] = ds.rate + core
    good = da.from_array(np.where(core > 0, 1, ds.sizes["group"]).astype(np.int16),
                         chunks=ds.rate.data.chunks)
    with dask.config.set(scheduler="threads"):
        kept = dask.compute(*C.diagnose(hit, frames, cfg))[e]
        masked = dask.compute(*C.diagnose(hit, frames, cfg, good=good))[e]
    assert kept["persistence"] > cfg.persistence_sigma
    assert masked["persistence"] < cfg.persistence_sigma
    assert masked["persistence"] == pytest.approx(base[e]["persistence"], rel=0.3, abs=2)


def test_a_bright_glow_is_glow_not_persistence():
    """Issue 21: a bright glow's crests are extended positive regions; once its stripes are
    taken out (the residual less its mean along the stripes' lines) no region is left, while
    a slit trace along x survives the same destriping."""
    rng = np.random.default_rng(8)
    yy, xx = np.mgrid[896:1152, 0:2048]
    err = np.full((256, 2048), 0.08)
    glow = rng.normal(0, 0.08, err.shape) + 0.15 * (1 + np.sin(2 * np.pi * (xx + yy) / 150.0))
    power, period, angle, profiles = art.stripe_spectra(glow, err)
    a = float(angle[int(np.argmax(power))])
    limit = CullConfig().persistence_sigma
    assert art.extended_positive(glow, err)[0] > 5 * limit  # the crests, raw
    assert art.extended_positive(art.destripe(glow, a, profiles[a]), err)[0] < limit
    trace = glow.copy()
    trace[100:104, 300:1800] += 0.2
    power, period, angle, profiles = art.stripe_spectra(trace, err)
    a = float(angle[int(np.argmax(power))])
    assert art.extended_positive(art.destripe(trace, a, profiles[a]), err)[0] > limit


def test_too_few_left_takes_back_the_least_severe_culls():
    """Issue 21: where half a set carries a bright artifact, the first pass culls clean
    exposures too (the artifact, in the medians, prints into them); the next pass's reference
    takes back the culls least over their limits until min_exposures - 1 are left."""
    from nrsdark_dask.stages.cull import reference_after

    cfg = CullConfig()
    tab = Table({"culled": [True] * 9 + [False] * 3,
                 "artifact": ["glow"] * 6 + ["persistence"] * 3 + [""] * 3,
                 "score": [20.0, 21, 19, 22, 18, 20, 13.7, 12.7, 12.9, 1, 2, 3]})
    keep = reference_after(tab, cfg)
    assert keep.sum() == cfg.min_exposures - 1
    assert keep.tolist() == [False] * 7 + [True] + [False] + [True] * 3  # 12.7 of 12 back
    tab["culled"][:] = False
    assert reference_after(tab, cfg).all()
