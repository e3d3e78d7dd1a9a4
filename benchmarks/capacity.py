"""From 2 cores to a cluster (issue 28 part 5): replay recorded tiled-calibration task graphs in
a list-scheduling simulation of 1-256 single-thread workers.

    python benchmarks/capacity.py RECORD.json [RECORD.json ...] [--check local1.json ...]

Each RECORD is what ``nrsdark calibrate --record-tasks FILE`` wrote: every exposure's task graph
(each task's kind and dependencies) and each task's measured start, stop and worker.  The
simulation runs copies of the recorded exposures' graphs on W workers of one thread each:

* a task is ready when its dependencies are done; a free worker takes the ready task of the
  oldest exposure first, and within it the task with the longest path to the exposure's end
  (critical-path-first list scheduling);
* a task takes its recorded duration (the last run of it);
* exposures enter as the driver admits them (``tiled.graph.exposures_in_flight``: enough for
  every worker, no disk limit here: a cluster's scratch is per worker);
* transfers, scheduling latency and the driver's commits are not modelled (the check against
  measured runs says how much that leaves out).

Printed and written to ``results/capacity.json``: per W, the wall of N exposures and the
exposures per hour; per recorded exposure, its critical path (the serial chain of stages that
bounds one exposure's wall however many workers) and its total task time; with ``--check``,
the simulated wall of each given recording's own run against its measured wall.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import metric, print_metrics, write_result  # noqa: E402

WORKERS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def graphs(doc: dict) -> list[dict]:
    """Per recorded exposure: ``{task: (duration s, [deps], kind)}`` from its last runs."""
    out = []
    for exp in doc["exposures"]:
        runs = exp["runs"]
        g = {}
        for name, task in exp["tasks"].items():
            mine = [r for r in runs.get(name, []) if r.get("start") and r.get("stop")]
            g[name] = (mine[-1]["stop"] - mine[-1]["start"] if mine else 0.0, task["deps"],
                       task["kind"])
        out.append(g)
    return out


def critical_path(g: dict) -> tuple[float, list[str]]:
    """The longest chain of task durations through the graph, and its tasks."""
    memo: dict = {}

    def longest(name):  # longest path ending at name
        if name not in memo:
            dur, deps, _ = g[name]
            best = max(((longest(d)[0], d) for d in deps), default=(0.0, None))
            memo[name] = (best[0] + dur, best[1])
        return memo[name]

    end = max(g, key=lambda n: longest(n)[0])
    chain, n = [], end
    while n is not None:
        chain.append(n)
        n = longest(n)[1]
    return longest(end)[0], chain[::-1]


def tail_length(g: dict) -> dict:
    """Each task's longest path to the exposure's end (its priority)."""
    children: dict = {n: [] for n in g}
    for n, (_, deps, _) in g.items():
        for d in deps:
            children[d].append(n)
    memo: dict = {}

    def tail(n):
        if n not in memo:
            memo[n] = g[n][0] + max((tail(c) for c in children[n]), default=0.0)
        return memo[n]

    return {n: tail(n) for n in g}


def simulate(exposures: list[dict], workers: int, slabs: int) -> float:
    """Wall of running ``exposures`` (graphs) on ``workers`` single-thread workers."""
    flying = 1 + math.ceil(workers / max(1, slabs))
    tails = [tail_length(g) for g in exposures]
    waiting = [{n: len(set(deps)) for n, (_, deps, _) in g.items()} for g in exposures]
    children = []
    for g in exposures:
        ch: dict = {n: [] for n in g}
        for n, (_, deps, _) in g.items():
            for d in set(deps):
                ch[d].append(n)
        children.append(ch)
    left = [len(g) for g in exposures]
    ready: list = []  # (exposure, -tail, name)
    admitted = 0
    in_flight = 0

    def admit(now):
        nonlocal admitted, in_flight
        while admitted < len(exposures) and in_flight < flying:
            e = admitted
            for n, k in waiting[e].items():
                if k == 0:
                    heapq.heappush(ready, (e, -tails[e][n], n))
            admitted += 1
            in_flight += 1

    now, free = 0.0, workers
    running: list = []  # (finish time, exposure, name)
    admit(now)
    while ready or running:
        while free and ready:
            e, _, n = heapq.heappop(ready)
            heapq.heappush(running, (now + exposures[e][n][0], e, n))
            free -= 1
        now, e, n = heapq.heappop(running)
        free += 1
        left[e] -= 1
        for c in children[e][n]:
            waiting[e][c] -= 1
            if waiting[e][c] == 0:
                heapq.heappush(ready, (e, -tails[e][c], c))
        if left[e] == 0:
            in_flight -= 1
            admit(now)
    return now


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", nargs="+", help="calibrate --record-tasks files: the graphs")
    ap.add_argument("--check", nargs="*", default=[],
                    help="recordings whose measured wall to compare with their simulation")
    ap.add_argument("--epoch", default="19:irs2,25:trad",
                    help="exposures of each recorded family in one epoch (default the "
                    "report's: 19 IRS2 200 + 25 TRAD 88 per detector)")
    ap.add_argument("--case", default="epoch")
    args = ap.parse_args(argv)
    docs = [json.loads(Path(p).read_text()) for p in args.records]
    by_family = {}
    for doc in docs:
        fam = doc["layout"]["family"].lower()
        by_family[fam] = (graphs(doc)[0], doc)
    metrics, details = [], {"per_exposure": {}, "walls": {}, "checks": []}
    for fam, (g, doc) in by_family.items():
        cp, chain = critical_path(g)
        total = sum(d for d, _, _ in g.values())
        kinds: dict = {}
        for d, _, k in g.values():
            kinds[k] = kinds.get(k, 0.0) + d
        stages: list = []
        for n in chain:
            k = g[n][2]
            if stages and stages[-1][0] == k:
                stages[-1][1] += g[n][0]
            else:
                stages.append([k, g[n][0]])
        details["per_exposure"][fam] = {"critical_path_s": cp, "task_time_s": total,
                                        "stages_on_critical_path": stages,
                                        "task_time_by_kind": kinds,
                                        "ngroups": doc["layout"]["ngroups"]}
        metrics += [metric(f"{fam} {doc['layout']['ngroups']} groups: task time of one "
                           "exposure", total, "s", fmt="{:.0f}"),
                    metric(f"{fam}: critical path of one exposure", cp, "s", fmt="{:.0f}",
                           note=" -> ".join(f"{k} {s:.0f}" for k, s in stages))]
    epoch = []
    for item in args.epoch.split(","):
        n, fam = item.split(":")
        if fam in by_family:
            epoch += [by_family[fam][0]] * int(n)
    slabs = max(len([n for n in g if g[n][2] == "jump-slab"]) for g, _ in by_family.values())
    for w in WORKERS:
        wall = simulate(epoch, w, slabs)
        details["walls"][w] = wall
        metrics.append(metric(f"epoch of {len(epoch)} exposures on {w} workers", wall / 3600,
                              "h", fmt="{:.2f}",
                              note=f"{3600 * len(epoch) / wall:.1f} exposures/h"))
    for path in args.check:
        doc = json.loads(Path(path).read_text())
        gs = graphs(doc)
        n_workers = sum(doc["workers"].values()) if doc.get("workers") else 1
        sim = simulate(gs, n_workers, slabs)
        measured = doc["ended"] - doc["started"]
        details["checks"].append({"record": str(path), "workers": n_workers,
                                  "measured_s": measured, "simulated_s": sim})
        metrics.append(metric(f"check {Path(path).name}: simulated / measured wall "
                              f"({n_workers} workers)", sim / measured, "", fmt="{:.2f}",
                              note=f"{sim:.0f} s / {measured:.0f} s"))
    print_metrics(metrics)
    write_result("capacity", args.case, "Tiled calibration from 2 cores to a cluster "
                 "(list-scheduling replay of recorded task graphs)", metrics, details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
