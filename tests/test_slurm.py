"""The cluster docs' Slurm recipe, run for real (slow): a one-node Slurm on this machine
(Debian's ``slurm-wlm`` and ``munge``: ``munged``, ``slurmctld`` and ``slurmd`` started by the
test as root, on 127.0.0.1), the Python block of ``docs/cluster.md``'s "Slurm or PBS" section
executed as written (dask-jobqueue's ``SLURMCluster``: workers as Slurm jobs), then
``nrsdark calibrate`` and ``nrsdark build`` through its scheduler address, as the docs say.
Skipped, with the reason, where Slurm is not installed or the test does not run as root."""

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from nrsdark_dask.cli import main as cli

DOCS = Path(__file__).parents[1] / "docs" / "cluster.md"
pytestmark = pytest.mark.slow


def _docs_block() -> str:
    """The Python block of the docs' Slurm section."""
    text = DOCS.read_text()
    section = text[text.index("## Slurm or PBS"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo")
               if not shutil.which(b) and not Path(f"/usr/sbin/{b}").exists()]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing; make test-all "
                    "installs Debian's slurm-wlm and munge where it runs as root)")
    if os.geteuid() != 0:
        pytest.skip("a one-node Slurm needs root to start munged, slurmctld and slurmd")
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue (the test extra) is not installed")
    root = tmp_path_factory.mktemp("slurm")
    for d in ("state", "spool", "munge"):
        (root / d).mkdir()
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = root / "munge" / "munge.socket"
    for parent in sock.parents:  # munged wants every folder above its socket executable by all
        if str(parent) in ("/", "/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)
    conf = root / "slurm.conf"
    host = socket.gethostname().split(".")[0]
    real_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)
    conf.write_text(f"""ClusterName=nrsdark
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory={real_mb} State=UNKNOWN
PartitionName=normal Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    env = dict(os.environ, SLURM_CONF=str(conf))
    procs = [subprocess.Popen(["munged", "-F", "--key-file", str(key), "--socket", str(sock),
                               "--pid-file", str(root / "munge" / "munged.pid"),
                               "--log-file", str(root / "munge" / "munged.log"),
                               "--seed-file", str(root / "munge" / "seed")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)]
    time.sleep(1)
    for daemon in ("slurmctld", "slurmd"):
        procs.append(subprocess.Popen([daemon, "-D"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT))
    try:
        deadline = time.time() + 60
        while True:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                                 text=True)
            if out.stdout.strip() in ("idle", "mix", "alloc"):
                break
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                logs = "".join((root / f).read_text()[-1500:] for f in
                               ("slurmctld.log", "slurmd.log") if (root / f).exists())
                pytest.fail(f"one-node Slurm did not come up: {out.stdout!r} {out.stderr!r}\n"
                            f"{logs}")
            time.sleep(0.5)
        yield {"env": env, "root": root}
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_the_docs_slurm_recipe_calibrates_and_builds(slurm, sim_cal, cal_manifest, cal_store,
                                                     tmp_path, monkeypatch):
    """The docs' block as written (16 jobs asked for: the 2-CPU node runs 2, the rest wait),
    then calibrate and build with its address; the store equals a threaded run's."""
    from nrsdark_dask.store import store_differences

    for k, v in slurm["env"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)  # the jobs' slurm-<id>.out files land where sbatch runs
    scope: dict = {}
    exec(compile(_docs_block(), str(DOCS), "exec"), scope)  # the docs' own commands
    cluster = scope["cluster"]
    try:
        from distributed import Client

        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=180)
        address = cluster.scheduler_address
        store, outdir = tmp_path / "s.zarr", tmp_path / "reffiles"
        assert cli.main(["calibrate", str(cal_manifest), "--store", str(store),
                         "--refkit", str(sim_cal["dir"] / "refkit"),
                         "--scheduler", address]) == 0
        status = cli.main(["build", "--store", str(store), "--outdir", str(outdir),
                           "--scheduler", address])
        assert status in (0, 1)  # 1: a verdict (not deliverable from a few inputs)
        assert len(list(outdir.glob("*.fits"))) >= 2  # SUPERBIAS and DARK
        jobs = subprocess.run(["squeue", "-h", "-o", "%T"], capture_output=True, text=True,
                              env=slurm["env"]).stdout.split()
        assert jobs.count("RUNNING") == 2  # the workers were Slurm jobs
    finally:
        cluster.close()
    assert store_differences(store, cal_store["path"]) == []
