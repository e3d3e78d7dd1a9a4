"""Files a CRDS curator would accept as they are (issue 12): selection keywords checked by
CRDS's own matching code, subarray placements and disperser groups split, full-frame masks cut
for subarrays, a MASK from full frames only, settings that act (or are refused), and the
smaller conventions (DQ_DEF bits, very hot pixels that are not RC, the ESA rule's jumps)."""

import numpy as np
import pytest
from astropy.io import fits
from stdatamodels.jwst import datamodels as dm

from nrsdark_dask import instrument as inst
from nrsdark_dask import kernels as K
from nrsdark_dask.cli import main as cli
from nrsdark_dask.reduction.source import BuildError
from nrsdark_dask.stages.build import build, cut_to_store
from nrsdark_dask.stages.select import select_inputs

from conftest import synthetic_store

ALL_NRS = {"NRS", "NRSRAPID", "NRSIRS2", "NRSIRS2RAPID"}


@pytest.fixture(scope="module")
def built(cal_store, sim_cal, tmp_path_factory):
    out = tmp_path_factory.mktemp("crds")
    kit_mask = next((sim_cal["dir"] / "refkit").glob("*_mask.fits"))
    return build(cal_store["path"], out, mask_in=kit_mask)


def _rmap(files: dict, reftype: str, with_grating: bool) -> "object":
    """A CRDS rmap with one match row made from a file's own header, the way a curator's
    rmap insertion reads it (a P_ keyword, trailing '|' dropped, stands for its base
    keyword), matched by crds' own selector code."""
    from crds.core import rmap

    h = fits.getheader(files[reftype])
    keys = ["META.INSTRUMENT.DETECTOR", "META.EXPOSURE.READPATT", "META.SUBARRAY.NAME",
            "META.EXPOSURE.TYPE"]
    vals = [h["DETECTOR"], h["P_READPA"].rstrip("|"), h["SUBARRAY"], h["P_EXP_TY"].rstrip("|")]
    if with_grating:
        keys.append("META.INSTRUMENT.GRATING")
        vals.append(h["P_GRATIN"].rstrip("|"))
    useafter = h["USEAFTER"].replace("T", " ")
    text = f"""header = {{
    'filekind' : '{reftype.upper()}', 'instrument' : 'NIRSPEC', 'mapping' : 'REFERENCE',
    'name' : 'jwst_nirspec_{reftype}_9999.rmap', 'observatory' : 'JWST',
    'parkey' : ({tuple(keys)!r}, ('META.OBSERVATION.DATE', 'META.OBSERVATION.TIME')),
    'sha1sum' : 'none', 'derived_from' : 'test',
}}
selector = Match({{
    {tuple(vals)!r} : UseAfter({{ '{useafter}' : 'ours.fits' }}),
}})
"""
    return rmap.ReferenceMapping.from_string(text, ignore_checksum=True)


def _selected(mapping, **science) -> bool:
    h = {"META.INSTRUMENT.DETECTOR": "NRS1", "META.SUBARRAY.NAME": "SUBS200A1",
         "META.OBSERVATION.DATE": "2030-01-01", "META.OBSERVATION.TIME": "00:00:00",
         "META.INSTRUMENT.GRATING": "G140H", "META.EXPOSURE.READPATT": "NRS",
         "META.EXPOSURE.TYPE": "NRS_FIXEDSLIT"}
    h.update({f"META.{k.replace('__', '.').upper()}": v for k, v in science.items()})
    try:
        return mapping.get_best_ref(h) == "ours.fits"
    except Exception:  # noqa: BLE001 - crds raises for "not found"
        return False


def test_crds_selects_our_files_for_every_nirspec_science_of_the_family(built):
    """DARK and SUPERBIAS from NRSRAPID darks serve NRS and NRSRAPID science of every NIRSpec
    exposure type and of every grating of the subarray's disperser group, and nothing else
    (before: P_READPA named NRSRAPID alone, P_EXP_TY five types, no P_GRATIN)."""
    for reftype in ("dark", "superbias"):
        m = _rmap(built["files"], reftype, with_grating=True)
        for exp_type in inst.NIRSPEC_EXP_TYPES:
            for readpatt in ALL_NRS:
                assert _selected(m, exposure__type=exp_type, exposure__readpatt=readpatt) == \
                    (readpatt in ("NRS", "NRSRAPID")), (reftype, exp_type, readpatt)
        for grating in ("G140M", "G140H", "G235M", "G235H", "G395H", "PRISM", "MIRROR"):
            assert _selected(m, instrument__grating=grating), (reftype, grating)
        assert not _selected(m, instrument__grating="G395M")  # its own SUBS200A1 placement
        assert not _selected(m, instrument__detector="NRS2")


def test_the_exposure_types_are_jwst_s():
    schema = dm.DarkNirspecModel().schema["properties"]["meta"]["properties"]["exposure"]
    enum = schema["properties"]["type"]["enum"]
    assert inst.NIRSPEC_EXP_TYPES == tuple(t for t in enum if t.startswith("NRS_"))
    assert set(inst.family_patterns("TRAD")) == {"NRS", "NRSRAPID"}
    assert set(inst.family_patterns("IRS2")) == {"NRSIRS2", "NRSIRS2RAPID"}


def test_subarray_builds_have_no_mask_and_record_their_settings(built, sim_cal):
    assert set(built["files"]) == {"dark", "superbias"}
    h = fits.getheader(built["files"]["dark"])
    history = "\n".join(str(c) for c in h["HISTORY"])
    assert "Settings [dark]: clip_sigma=3.0" in history and "Settings [delivery]" in history
    assert "Input MASK: " in history
    s = built["stats"]
    assert s["snr_required"] == 2.5 and s["snr"] > 0 and s["deliverable"] == (s["snr"] >= 2.5)


def test_a_full_frame_mask_seeds_a_subarray_build(cal_store, sim_cal, tmp_path):
    """A real CRDS mask is full frame: it is cut to the store's region (SUBSTRT/SUBSIZE)."""
    sub = dm.MaskModel(str(next((sim_cal["dir"] / "refkit").glob("*_mask.fits"))))
    full = np.zeros((2048, 2048), np.uint32)
    y0, x0 = sub.meta.subarray.ystart - 1, sub.meta.subarray.xstart - 1
    full[y0:y0 + sub.dq.shape[0], x0:x0 + sub.dq.shape[1]] = sub.dq
    m = dm.MaskModel(dq=full)
    m.meta.reftype, m.meta.instrument.name, m.meta.instrument.detector = "MASK", "NIRSPEC", "NRS1"
    m.meta.subarray.name, m.meta.subarray.xstart, m.meta.subarray.ystart = "FULL", 1, 1
    m.meta.subarray.xsize = m.meta.subarray.ysize = 2048
    m.save(tmp_path / "full_mask.fits")
    a = build(cal_store["path"], tmp_path / "a", mask_in=tmp_path / "full_mask.fits")["stats"]
    b = build(cal_store["path"], tmp_path / "b", mask_in=next(
        (sim_cal["dir"] / "refkit").glob("*_mask.fits")))["stats"]
    assert a["n_new_hot"] == b["n_new_hot"] > 0
    lay = type("L", (), {"ny": 4, "nx": 4, "ny_raw": 4, "ystart": 3, "xstart": 2})
    plane = np.arange(100).reshape(10, 10)
    np.testing.assert_array_equal(cut_to_store(plane, 1, 1, lay), plane[2:6, 1:5])
    with pytest.raises(BuildError, match="does not contain"):
        cut_to_store(plane, 5, 1, lay)


def test_a_full_frame_build_writes_the_mask(tmp_path):
    h = {"READPATT": "NRSRAPID", "SUBSIZE2": 2048, "SUBSIZE1": 2048, "DETECTOR": "NRS1",
         "SUBARRAY": "FULL", "NGROUPS": 3, "SUBSTRT2": 1, "SUBSTRT1": 1,
         "TFRAME": 10.73676, "TGROUP": 10.73676}
    store = synthetic_store(tmp_path / "full.zarr", h, n_exp=2, hot=[(100, 200), (1500, 7)])
    files = build(store, tmp_path / "out")["files"]
    assert set(files) == {"dark", "mask", "superbias"}
    with dm.MaskModel(files["mask"]) as m:
        assert m.dq.shape == (2048, 2048)
        assert (m.dq[100, 200] & inst.DQ["HOT"]) and (m.dq[1500, 7] & inst.DQ["HOT"])
        assert (m.dq[:4] & inst.DQ["REFERENCE_PIXEL"]).all()
    with dm.DarkNirspecModel(files["dark"]) as d:
        assert not (d.dq & inst.DQ["HOT"]).any()  # the MASK carries HOT
        assert d.dq[100, 200] & inst.DQ["UNRELIABLE_DARK"]


def test_subarray_placements_and_disperser_groups_are_split(sim_cal, tmp_path):
    import shutil

    src = sorted((sim_cal["dir"] / "uncal").glob("*.fits"))[:3]
    for i, (f, grating, ystart) in enumerate(zip(src, ("G140H", "G395M", "G140M"),
                                                 (1041, 1041, 1000))):
        with fits.open(f) as h:
            h[0].header["GRATING"], h[0].header["SUBSTRT2"] = grating, ystart
            h.writeto(tmp_path / f"e{i}_uncal.fits")
    tab = select_inputs([tmp_path], telemetry=sim_cal["dir"] / "telemetry.ecsv")
    groups = {r["name"]: r["group"] for r in tab}
    assert len(set(groups.values())) == 3, groups
    assert groups["e0_uncal.fits"].endswith("_X1Y1041_G140M+G140H+G235M+G235H+G395H+PRISM+MIRROR")
    assert groups["e1_uncal.fits"].endswith("_X1Y1041_G395M")
    assert "_X1Y1000_" in groups["e2_uncal.fits"]
    shutil.rmtree(tmp_path)


def test_settings_that_act_at_ingest_are_refused_at_build(cal_store, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[dark]\nneg_jump_sigma = 4.0\n")
    code = cli.main(["build", "--store", str(cal_store["path"]), "--outdir", str(tmp_path / "o"),
                     "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 2 and "'neg_jump_sigma': 4.0" in err and "act at ingest" in err
    assert not (tmp_path / "o").exists()


def test_the_delivery_thresholds_act(cal_store, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[delivery]\nsnr_trad = 1000.0\n")
    assert cli.main(["build", "--store", str(cal_store["path"]), "--outdir", str(tmp_path / "o"),
                     "--config", str(cfg)]) == 0
    assert "(required 1000.0): NOT deliverable" in capsys.readouterr().out


def test_a_very_hot_pixel_is_not_rc_and_an_rc_pixel_still_is():
    """Groups 2-3 flagged: by saturation of a linear ramp (very hot) or by jumps on the
    decaying excess of an RC pixel (report §4.1.3).  Full-frame TRAD times."""
    t = np.arange(1, 6) * 10.73676
    well = 43000.0
    hot = np.minimum(1500.0 * t, well)  # saturates in group 3
    rc = 60000.0 * (1 - np.exp(-t / 8.0))
    ramp = np.stack([hot, rc], axis=-1)[:, None, :].astype(np.float32)  # (G, 1, 2)
    gdq = np.zeros(ramp.shape, np.uint8)
    gdq[2:, 0, 0] = inst.DQ["SATURATED"]
    gdq[1:3, 0, 1] = inst.DQ["JUMP_DET"]  # jwst sees the curve as jumps
    gdq[3:, 0, 1] = inst.DQ["SATURATED"]
    nxt = K.rc_next_flags(gdq, inst.RC_NEXT_FLAGS, ramp, t, jump_bit=inst.DQ["JUMP_DET"],
                          saturated_bit=inst.DQ["SATURATED"])
    assert nxt.tolist() == [[2 | 4, 1 | 2]]  # very hot: group 3 flagged, bit 2; RC: groups 2-3
    g1 = np.zeros((1, 3, 5), np.float32)  # the two apart (a lit neighbour vetoes)
    g1[0, 1, 1], g1[0, 1, 3] = ramp[0, 0, 0], ramp[0, 0, 1]
    flags = np.zeros((1, 3, 5), np.uint8)
    flags[0, 1, 1], flags[0, 1, 3] = nxt[0, 0], nxt[0, 1]
    cand = K.rc_candidates(g1, flags, None, np.zeros(1), np.full(1, 100.0))  # 1000 DN
    assert cand[0, 1].tolist() == [False, False, False, True, False]
    assert K.rc_candidates(g1, flags & 3, None, np.zeros(1), np.full(1, 100.0))[0, 1, 1]  # before


def test_the_esa_rule_counts_every_jump_and_dq_def_bits_are_bit_numbers(sim_cal):
    jumps = np.array([[[5, 0]], [[5, 0]]], np.int16)  # 5 jumps (any sign) in both inputs
    assert K.telegraph_candidates_esa(jumps, ngroups=100).tolist() == [[True, False]]
    gdq = np.zeros((4, 1, 2), np.uint8)
    gdq[1:, 0, 0] = inst.DQ["JUMP_DET"]
    assert K.jump_counts(gdq, inst.DQ["JUMP_DET"]).tolist() == [[3, 0]]
    with fits.open(next((sim_cal["dir"] / "refkit").glob("*_mask.fits"))) as h:
        table = h["DQ_DEF"].data
        assert all(2 ** int(b) == int(v) for b, v in zip(table["BIT"], table["VALUE"]))


def test_do_not_use_pixels_take_the_average_ramp(cal_store):
    """Report §4.1.4: DO_NOT_USE pixels (here: DO_NOT_USE in every input's PIXELDQ) take the
    average dark ramp in the cube, not rate x t (before: only reference, RC and IPC pixels)."""
    import dask

    from nrsdark_dask.reduction import graph as R
    from nrsdark_dask.store import open_dataset

    ds = open_dataset(cal_store["path"]).load()
    y, x = 30, 1000
    ds["pixeldq"][:, y, x] |= np.uint32(inst.DQ["DO_NOT_USE"])
    ds["ramp"][:, :, y, x] += np.float32(500.0)  # a level a rate projection would not keep
    p = R.build_products(ds.chunk({"y": 64, "x": 256}))
    cube, avg, rate = dask.compute(p["dark_cube"].data[:, y, x], p["average_ramp"].data[:, y, x],
                                   p["dark_rate"].data[y, x])
    np.testing.assert_allclose(cube, avg, rtol=1e-6)
    assert abs(cube[0] - rate * ds.group_time.values[0]) > 400


def test_neg_jump_sigma_acts_at_ingest_and_is_recorded(cal_manifest, sim_cal, tmp_path):
    from nrsdark_dask.stages.calibrate import calibrate
    from nrsdark_dask.store import RampStore, StoreError

    cfg = tmp_path / "c.toml"
    cfg.write_text("[dark]\nneg_jump_sigma = 6.0\n")
    store = tmp_path / "s.zarr"
    calibrate(cal_manifest, store, refkit=sim_cal["dir"] / "refkit", scheduler="sync",
              config=cfg)
    assert RampStore(store).provenance()["ingest"] == {"neg_jump_sigma": 6.0}
    with pytest.raises(StoreError, match="a store holds one setting"):
        calibrate(cal_manifest, store, refkit=sim_cal["dir"] / "refkit", scheduler="sync")
    with pytest.raises(BuildError, match="act at ingest"):
        build(store, tmp_path / "o")
    assert build(store, tmp_path / "o", config=cfg)["stats"]["n_exposures"] == 4
