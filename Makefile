# Two commands: `make demo` and `make test`. Both create/refresh the virtualenv in .venv first
# (re-installed whenever pyproject.toml changes).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := demo

.PHONY: venv browser postgresql slurm test test-all docs demo clean-demo bench bench-calibrate

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,docs]'
	touch $(STAMP)

venv: $(STAMP)

# Headless Chromium for the QA report's rendering test (Debian's `chromium`): installed with
# apt where we run as root and it is missing; elsewhere that test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	    && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	    >/dev/null 2>&1 || echo "chromium not installed: the QA rendering test will skip"; }

# PostgreSQL for the results database's server test (Debian's `postgresql`): installed with
# apt where we run as root and it is missing; elsewhere that test skips and says why.
postgresql:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	    || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	    && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    postgresql) >/dev/null 2>&1 || echo "postgresql not installed: its test will skip"; }

# A one-node Slurm for the slow test of the cluster docs' recipe (Debian's `slurm-wlm` and
# `munge`): installed with apt where we run as root and it is missing; elsewhere that test skips.
slurm:
	@command -v slurmctld >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	    && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    slurm-wlm munge) >/dev/null 2>&1 || echo "slurm not installed: its test will skip"; }

# CI set: small simulated inputs; the `slow` marker (full frames) is skipped.
test: venv browser postgresql
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q --durations=15

# Everything, including the slow full-frame cases.
test-all: venv browser postgresql slurm
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q --durations=15 -m ''

# The Sphinx site (docs/): warnings are errors, as in CI; open docs/_build/html/index.html
docs: venv
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs/_build/html/index.html"

# The built-in simulated data set: NRS1 SUBS200A1 TRAD (NRS: 4 frames a group), 80 groups, 12
# exposures with the report's §3 artifacts and a grating mix that the pre-filter must cull; the
# last (clean) exposure is held out as the science exposure.  Then the pipeline in one command
# (select -> calibrate -> cull -> build -> analyze, nrsdark_dask/configs/demo.toml: deliverable,
# exit 0), the period darks (a short history in the results database), the report's §8
# science check of the new files against the first period's, and the trend site.
DEMO_SCIENCE := jw90001002001_02101_00002_nrs1_uncal.fits
DEMO_MASK := $(DEMO)/sim/refkit/nrsdark_sim_nrs1_subs200a1_trad_mask.fits
DEMO_DB := stores/nrsdark_results.sqlite
demo: venv clean-demo
	mkdir -p $(DEMO)/science
	$(BIN)/nrsdark simulate $(DEMO)/sim --subarray SUBS200A1 --readpatt NRS --ngroups 80 \
	    --nexp 12 --artifacts --glow-rate 0.02 --gratings 'G140H:3,G395H:2,PRISM,MIRROR' \
	    --workers 2 --seed 2026
	mv $(DEMO)/sim/uncal/$(DEMO_SCIENCE) $(DEMO)/science/
	$(BIN)/nrsdark run nrsdark_dask/configs/demo.toml
	$(BIN)/nrsdark periods --store stores/demo.zarr --outdir $(DEMO)/periods \
	    --cull $(DEMO)/run/culled.ecsv --mask-in $(DEMO_MASK) \
	    --config nrsdark_dask/configs/demo.toml --db $(DEMO_DB)
	$(BIN)/nrsdark check-science $(DEMO)/science/$(DEMO_SCIENCE) --new $(DEMO)/run/reffiles \
	    --old $(DEMO)/periods/T0 --refkit $(DEMO)/sim/refkit -o $(DEMO)/check --db $(DEMO_DB)
	$(BIN)/nrsdark trends --db $(DEMO_DB) -o $(DEMO)/trends
	@echo
	@echo "make demo: the outputs (README, 'Five minutes with the demo')"
	@echo "  $(DEMO)/run/manifest.ecsv               the pre-filter's choice and the yield table"
	@echo "  $(DEMO)/run/culled.ecsv, culled_png/    the automatic cull and its pictures"
	@echo "  $(DEMO)/run/reffiles/*.fits             SUPERBIAS and DARK (deliverable)"
	@echo "  $(DEMO)/run/reffiles/qa/report.html     the QA report"
	@echo "  $(DEMO)/periods/                        period darks T0, T1 and the master"
	@echo "  $(DEMO)/check/check_science.html        new files against T0 on a science exposure"
	@echo "  $(DEMO)/trends/index.html               the trend site"
	@echo "  stores/demo.zarr, $(DEMO_DB)   the calibrated ramps, the results database"

clean-demo:
	rm -rf $(DEMO)/sim $(DEMO)/.sim.tmp-* $(DEMO)/science $(DEMO)/run $(DEMO)/periods \
	    $(DEMO)/check $(DEMO)/trends stores/demo.zarr $(DEMO_DB)

# Benchmarks (issue 9; not part of `make test`): clipping kernel vs astropy, build vs the
# in-memory script on the 503 MB ALLSLITS store (made once, cached in benchmarks/data/; the
# first run calibrates it: some minutes), 1 vs 2 workers, build vs a cold read of the store,
# calibrate on already-calibrated full frames (memory per exposure), task counts of full-frame
# builds (metadata-only stores).
# BENCH_BIG=1 adds the larger-than-RAM case (37 GB store written to benchmarks/data/, needs
# ~48 GB free disk; 30-60 min).  Writes benchmarks/results/*.json and SUMMARY.md;
# see benchmarks/README.md.  Run it alone on a quiet machine.
BENCH_BIG ?= 0
BENCH_BUILD_ARGS ?=
bench: venv
	rc=0; \
	$(BIN)/python benchmarks/bench_kernel.py || rc=1; \
	$(BIN)/python benchmarks/bench_kernel.py --outliers 0.001 || rc=1; \
	$(BIN)/python benchmarks/bench_build.py $(if $(filter 1,$(BENCH_BIG)),--big) \
	    $(BENCH_BUILD_ARGS) || rc=1; \
	$(BIN)/python benchmarks/bench_calibrate_calibrated.py --label latest || rc=1; \
	$(BIN)/python benchmarks/task_counts.py || rc=1; \
	exit $$rc

# Tiled calibration against jwst's whole-exposure run (issue 18; not in `make bench`: ~20 min):
# one TRAD FULL 88-group exposure whole vs tiled on local:2, then tiled on 1, 2 and 4 workers.
# The flagship IRS2 case and the report's monitor are longer still (benchmarks/README.md):
#   .venv/bin/python benchmarks/bench_tiled.py irs2      (~50 min, ~60 GB free disk)
#   .venv/bin/python benchmarks/bench_tiled.py monitor   (~1 h, ~70 GB free disk)
bench-calibrate: venv
	rc=0; \
	$(BIN)/python benchmarks/bench_tiled.py trad88 || rc=1; \
	$(BIN)/python benchmarks/bench_tiled.py scaling || rc=1; \
	exit $$rc
