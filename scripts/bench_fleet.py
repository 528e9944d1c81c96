"""The fleet's figures (issue "The same stack on a cluster"), measured in one run of the real
three-node Swarm of tests/fleet/test_swarm.py:

  1. model upgrade across 3 nodes under 32 clients through the front door
     (scripts/fleet-upgrade, v1 -> v2): failed requests, seconds until every replica serves v2;
  2. a node stopped under load: failed requests, and how long after the stop the last one came;
  3. Hub bytes for the whole fleet (both model sets) against the models' size;
  4. the fleet rollout of v2 against `docker compose up --wait` (docker-compose.yml) on each
     node in turn, each filling from the same registry: two nodes timed, three estimated.

    .venv/bin/python scripts/bench_fleet.py [--json out.json]

Needs what the test needs: the Docker engine, docker-registry, the images
(scripts/build-images --offline, scripts/build-fleet-images). About 6 minutes here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Row(NamedTuple):
    what: str
    figure: str
    goal: str
    met: bool | None


def bench(quick: bool = False) -> dict:
    del quick  # one run is the measurement: it takes minutes and each figure is a count or a span
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fleet.json"
        env = {**os.environ, "MODELCACHE_FLEET_FIGURES": str(out), "MODELCACHE_FLEET_COMPARE": "1"}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/fleet"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        figures = json.loads(out.read_text()) if out.exists() else {}
    figures["tests"] = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    if done.returncode != 0:
        figures["failure"] = done.stdout[-3000:]
    return figures


def targets(f: dict) -> list[Row]:
    rows = []
    up = f.get("upgrade")
    if up:
        rows.append(
            Row(
                "model upgrade across 3 nodes, 32 clients through the front door",
                f"{up['failed']} failed of {up['requests']}; every replica on the new set after {up['total_s']:.1f} s",
                "0 failed",
                up["failed"] == 0,
            )
        )
    lost = f.get("node_lost")
    if lost:
        rows.append(
            Row(
                "a node stopped under load",
                f"{lost['failed']} failed of {lost['requests']}"
                + (f", the last {lost['failed_within_s']:.1f} s after the stop" if lost["failed"] else ""),
                "failures only while the front door notices, then 0",
                True,  # the test asserts none after 6 s; it would have failed otherwise
            )
        )
    if "hub_bytes" in f:
        ratio = f["hub_bytes"] / f["models_bytes"]
        rows.append(Row("Hub bytes for the 3-node fleet", f"{ratio:.3f}x the models' size", "1x", ratio <= 1.02))
    turn = f.get("compose_in_turn")
    if turn and up:
        speed = turn["three_nodes_estimate_s"] / up["total_s"]
        rows.append(
            Row(
                "fleet rollout vs `docker compose up --wait` on each node in turn",
                f"{up['total_s']:.1f} s vs {turn['three_nodes_estimate_s']:.1f} s "
                f"(per node {', '.join(f'{s:.1f}' for s in turn['per_node_s'])} s): {speed:.2f}x",
                "report",
                None,
            )
        )
    return rows


def report(f: dict) -> str:
    rows = targets(f)
    lines = ["| figure | measured | goal | met |", "|---|---|---|---|"]
    lines += [
        f"| {r.what} | {r.figure} | {r.goal} | {'-' if r.met is None else 'yes' if r.met else 'no'} |" for r in rows
    ]
    other = [
        f"3-node Swarm up in {f['swarm_start_s']} s" if "swarm_start_s" in f else "",
        f"images to the registry {f['images_to_registry_s']} s" if "images_to_registry_s" in f else "",
        f"first deploy (3 nodes pull the images, fill, load, serve) {f['first_deploy_s']} s"
        if "first_deploy_s" in f
        else "",
        f"nodes' engine storage at the end {f['node_storage_bytes'] / 2**30:.1f} GiB"
        if "node_storage_bytes" in f
        else "",
    ]
    lines += ["", "Also: " + "; ".join(o for o in other if o) + f". Tests: {f.get('tests', '?')}."]
    if "failure" in f:
        lines += ["", "The run failed:", "```", f["failure"][-1500:], "```"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = bench()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    print(report(figures))


if __name__ == "__main__":
    main()
