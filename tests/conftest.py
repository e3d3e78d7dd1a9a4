"""Shared simulated data sets (small: subarrays, few groups) and helpers."""

import contextlib
import logging
import socket
import subprocess

import pytest

from nrsdark_dask.simulate import SimConfig, read_truth, simulate_dataset


# Files that share a session data set too dear to make twice: under pytest-xdist
# (`make test`: -n 2 --dist loadgroup) each worker makes the session fixtures its files use,
# so these files run on one worker.  ``sci`` takes ~3 min to make.
SHARED_DATA = ("sci",)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """One xdist group per test file (what ``--dist loadfile`` does: a file's module fixtures
    are made once), except that the files using a :data:`SHARED_DATA` fixture share a group."""
    files = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)
    for name, group in files.items():
        used = {f for item in group for f in getattr(item, "fixturenames", ())}
        shared = sorted(used.intersection(SHARED_DATA))
        for item in group:
            item.add_marker(pytest.mark.xdist_group(shared[0] if shared else name))


@pytest.fixture(autouse=True, scope="session")
def _quiet_jwst():
    logging.getLogger("stpipe").setLevel(logging.WARNING)
    logging.getLogger("jwst").setLevel(logging.WARNING)
    logging.getLogger("stcal").setLevel(logging.WARNING)


class CountingScheduler:
    """A dask scheduler that records each compute as ``name`` in ``calls`` (shared between
    schedulers to count them together) and raises above ``max_computes`` (xarray's
    ``raise_if_dask_computes``); runs the graph on ``base`` (default: dask's threads)."""

    def __init__(self, max_computes=None, base=None, name="default", calls=None):
        import dask.threaded

        self.max_computes, self.name = max_computes, name
        self.base = base or dask.threaded.get
        self.calls = [] if calls is None else calls

    def __call__(self, dsk, keys, **kwargs):
        self.calls.append(self.name)
        if self.max_computes is not None and len(self.calls) > self.max_computes:
            raise RuntimeError(f"too many dask computes: {len(self.calls)} > "
                               f"{self.max_computes}")
        return self.base(dsk, keys, **kwargs)


@contextlib.contextmanager
def raise_if_dask_computes(max_computes=0):
    """Any compute beyond ``max_computes`` (``dask.compute``, ``.compute()``, ``np.asarray``
    of a dask array...) on the default scheduler raises."""
    import dask

    scheduler = CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler


@pytest.fixture
def computes(monkeypatch):
    """Every compute on a local dask scheduler, whatever the code under test configures
    (the default, or ``scheduler="threads"``/``"sync"`` as a command sets it): a list of the
    scheduler names used, one entry a compute."""
    import dask
    import dask.base

    calls = []
    for name, fn in list(dask.base.named_schedulers.items()):
        monkeypatch.setitem(dask.base.named_schedulers, name,
                            CountingScheduler(base=fn, name=name, calls=calls))
    with dask.config.set(scheduler=CountingScheduler(calls=calls)):
        yield calls


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def deny(self, *args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", deny)
    monkeypatch.setattr(socket.socket, "connect_ex", deny)
    monkeypatch.delenv("CRDS_SERVER_URL", raising=False)


def _make(tmp_path_factory, name, **kw):
    out = tmp_path_factory.mktemp(name) / "data"
    summary = simulate_dataset(out, SimConfig(**kw))
    return {"dir": out, "summary": summary, "truth": read_truth(out / "truth.fits")}


@pytest.fixture(scope="session")
def sim_trad(tmp_path_factory):
    """ALLSLITS (256 x 2048) TRAD, 12 groups, 4 exposures: one after a mode switch, one with
    persistence (so at least two are clean), a grating mix with PRISM (glow) and MIRROR."""
    return _make(tmp_path_factory, "trad", subarray="ALLSLITS", ngroups=12, nexp=4, seed=3,
                 artifacts=True, mode_switch_fraction=0.25, persistence_fraction=0.25,
                 gratings={"G140H": 1, "PRISM": 1, "MIRROR": 1})


@pytest.fixture(scope="session")
def sim_irs2(tmp_path_factory):
    """IRS2 full frame (3200 x 2048 raw), 5 groups, 1 exposure."""
    return _make(tmp_path_factory, "irs2", readout="irs2", ngroups=5, nexp=1, seed=5)


@pytest.fixture(scope="session")
def sim_cal(tmp_path_factory):
    """SUBS200A1 (64 x 2048) TRAD, 10 groups, 4 clean exposures: the calibration tests' input."""
    return _make(tmp_path_factory, "cal", subarray="SUBS200A1", ngroups=10, nexp=4, seed=4,
                 gratings={"G395H": 1})


@pytest.fixture(scope="session")
def cal_manifest(sim_cal, tmp_path_factory):
    from nrsdark_dask.stages.select import select_inputs, write_manifest

    d = sim_cal["dir"]
    path = tmp_path_factory.mktemp("manifest") / "manifest.ecsv"
    write_manifest(select_inputs([d / "uncal"], telemetry=d / "telemetry.ecsv"), path)
    return path


@pytest.fixture(scope="session")
def cal_store(sim_cal, cal_manifest, tmp_path_factory):
    """The sim_cal exposures calibrated into a store on the in-process threads cluster."""
    from nrsdark_dask.stages.calibrate import calibrate

    path = tmp_path_factory.mktemp("store") / "cal.zarr"
    summary = calibrate(cal_manifest, path, refkit=sim_cal["dir"] / "refkit",
                        scheduler="threads")
    return {"path": path, "summary": summary}


@pytest.fixture
def damaged_copy(cal_store, tmp_path_factory):
    """A function giving a fresh copy of the cal_store store, to damage."""
    import shutil

    def make():
        dst = tmp_path_factory.mktemp("damaged") / "d.zarr"
        shutil.copytree(cal_store["path"], dst)
        return dst
    return make


@pytest.fixture(scope="session")
def sci(tmp_path_factory):
    """Monitor-like ramps for the science tests: SUBS400A1 (128 x 2048), 60 groups, 11 clean
    exposures; 10 calibrated into a store on the threads cluster (~1.5 min), the last one held
    out as the "science" exposure of the real-consumer test."""
    from nrsdark_dask.stages.calibrate import calibrate
    from nrsdark_dask.stages.select import select_inputs, write_manifest

    sim = _make(tmp_path_factory, "sci", subarray="SUBS400A1", ngroups=60, nexp=11, seed=11,
                gratings={"G140H": 1})
    d = sim["dir"]
    held_out = sorted((d / "uncal").glob("*.fits"))[-1]
    (d.parent / "held_out.txt").write_text(f"{held_out.name} held out for the consumer test\n")
    manifest = d.parent / "manifest.ecsv"
    write_manifest(select_inputs([d / "uncal"], telemetry=d / "telemetry.ecsv",
                                 exclude=d.parent / "held_out.txt"), manifest)
    store = d.parent / "sci.zarr"
    calibrate(manifest, store, refkit=d / "refkit", scheduler="threads")
    return {**sim, "store": store, "held_out": held_out}


def copy_store(src, dst, group_chunk=None, order=None):
    """The exposures of store ``src`` committed into a new store ``dst`` (through the store
    API: ``write_staging`` + ``commit``), in dataset order or in ``order`` (positions in
    ``src``'s dataset order), with ramps chunked every ``group_chunk`` groups (default: as
    ``src``)."""
    from dataclasses import replace

    from nrsdark_dask.store import (EXPOSURE_COORDS, RampStore, StoreLayout, open_dataset,
                                    write_staging)

    ds = open_dataset(src, decode_times=False)
    layout = StoreLayout(**ds.attrs["layout"])
    if group_chunk:
        layout = replace(layout, group_chunk=group_chunk, schema=2)
    store = RampStore.create(dst, layout, dict(ds.attrs["provenance"]))
    with store.writer():
        for i in range(ds.sizes["exposure"]) if order is None else order:
            name = str(ds.exposure.values[i])
            one = ds.isel(exposure=i).load()
            write_staging(dst, name, layout, {v: one[v].values for v in layout.variables()})
            store.commit(name, {c: one[c].values.item() for c in EXPOSURE_COORDS
                                if c != "exposure" and c in one.coords})
    return dst


def kill_worker_running(address, target, task: str, timeout: float, join: float):
    """Run ``target()`` in a thread while watching the cluster at ``address``: SIGKILL the
    first worker seen processing a task whose key holds ``task``, then wait up to ``join`` s
    for ``target``.  Returns ``(pid, key)`` of the kill, or None if ``target`` ended (or
    ``timeout`` s passed) first."""
    import os
    import signal
    import threading
    import time

    from distributed import Client

    with Client(address, timeout=30) as client:
        pids = client.run(os.getpid)  # {worker address: pid}
        thread = threading.Thread(target=target)
        thread.start()
        victim = None
        deadline = time.time() + timeout
        while victim is None and thread.is_alive() and time.time() < deadline:
            for addr, keys in client.processing().items():
                keys = [k for k in keys if task in str(k)]
                if keys:
                    victim = pids[addr], keys[0]
                    os.kill(victim[0], signal.SIGKILL)
                    break
            time.sleep(0.005)
        thread.join(join)
    return victim


class DaskProcesses:
    """A real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 (ports chosen by
    the OS, found through the scheduler file), each worker single-threaded, without a nanny
    (so a SIGKILL of its pid really loses it), declaring ``MEMORY`` like a production
    worker.  Torn down (killed) by :meth:`close`."""

    def __init__(self, tmp_path, n_workers=2, memory="3GB"):
        import json
        import subprocess
        import sys
        import time
        from pathlib import Path

        dask_bin = str(Path(sys.executable).parent / "dask")
        self.dir = tmp_path
        self.procs = []
        sched_file = tmp_path / "scheduler.json"

        def start(*args, log):
            f = open(tmp_path / log, "w")
            p = subprocess.Popen([dask_bin, *args], stdout=f, stderr=subprocess.STDOUT)
            self.procs.append(p)
            return p

        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
              "127.0.0.1:0", "--scheduler-file", str(sched_file), log="scheduler.log")
        deadline = time.time() + 60
        while not sched_file.exists() or not sched_file.read_text().strip():
            if time.time() > deadline or self.procs[0].poll() is not None:
                self.close()
                raise RuntimeError("dask scheduler did not start: "
                                   + (tmp_path / "scheduler.log").read_text()[-2000:])
            time.sleep(0.1)
        self.address = json.loads(sched_file.read_text())["address"]
        mem = int(float(memory.rstrip("GB")) * 1e9)
        self.workers = [start("worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                              "--no-nanny", "--host", "127.0.0.1", "--memory-limit", memory,
                              "--resources", f"MEMORY={mem}", "--dashboard-address",
                              "127.0.0.1:0", log=f"worker{i}.log") for i in range(n_workers)]
        from distributed import Client

        with Client(self.address, timeout=30) as c:
            c.wait_for_workers(n_workers, timeout=60)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()


def synthetic_store(path, h: dict, n_exp: int, seed: int = 0, hot=()):
    """A store written through the store API without jwst (like ``calibrate`` writes one):
    ``h`` the primary-header keywords ``StoreLayout.from_header`` reads; per exposure white
    noise (9 DN) on a 0.01 DN/s dark, and pixels ``hot`` ((y, x) pairs) at 50 DN/s; the ingest
    summaries made by calibrate's own ``ingest.pixel_summaries``."""
    import numpy as np

    from nrsdark_dask.calibration.ingest import group1_statistics, pixel_summaries
    from nrsdark_dask.store import RampStore, StoreLayout, write_staging

    layout = StoreLayout.from_header(h, has_bias=True)
    store = RampStore.create(path, layout, provenance={"ingest": {"neg_jump_sigma": 3.0}})
    rng = np.random.default_rng(seed)
    t = layout.group_times().astype(np.float32)[:, None, None]
    rate = np.full((layout.ny, layout.nx), 0.01, np.float32)
    for y, x in hot:
        rate[y, x] = 50.0
    with store.writer():
        for e in range(n_exp):
            ramp = rate * t + rng.normal(0, 9, (layout.ngroups, layout.ny, layout.nx)).astype(
                np.float32)
            gdq = np.zeros(ramp.shape, np.uint8)
            g1 = ramp[0].copy()
            bias = 12000 + rng.normal(0, 5, (2, layout.ny_raw, layout.nx)).astype(np.float32)
            data = {"ramp": ramp, "groupdq": gdq, "pixeldq": np.zeros(rate.shape, np.uint32),
                    "rate": (rate + rng.normal(0, 0.05, rate.shape)).astype(np.float32),
                    "rate_err": np.full(rate.shape, 0.05, np.float32), "bias_groups": bias,
                    **pixel_summaries(ramp, gdq, 12.7, layout.group_times(), 3.0)}
            name = f"synthetic_{e}_uncal.fits@{e:012d}"
            write_staging(path, name, layout, data)
            m, s = group1_statistics(g1, layout)
            store.commit(name, {"date": 1.7e9 + 86400 * e, "grating": "G140H", "asic_dt": 0.01,
                                "g1_mean": m, "g1_std": s, "diff_sigma": 12.7,
                                "bias_level": 12000.0, "detector": layout.detector,
                                "readpatt": layout.readpatt, "subarray": layout.subarray,
                                "ngroups": layout.ngroups, "input_kind": "uncal",
                                "input_file": name, "input_sha256": f"{e:064d}",
                                "jwst_version": "synthetic", "crds_context": "",
                                "references": "{}"})
    return path


@pytest.fixture
def small_mount(tmp_path):
    """``mount(size, readonly)``: a real tmpfs of ``size`` in tmp_path (root only; skipped
    where mounting is not allowed), unmounted after the test."""
    mounted = []

    def mount(size="1m", readonly=False):
        mnt = tmp_path / f"mnt{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
        mounted.append(mnt)
        if readonly:
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
