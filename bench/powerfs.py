"""What the power-loss layer costs (faults/powerfs): one etcd member with its data on the layer, beside one with its
data in its container, the same load on each (the load generator's closed loop: put/range 50/50 over 32 keys, every
put fsynced by etcd before it answers), in rounds that alternate.

Reported: answered ops/s on each and their ratio (the median of the rounds' layered/plain), latency, and the layer
helper's own CPU per 1,000 operations (its container's cgroup). Single members, so the figure is the layer's and
not a cluster's replication; they are started and removed here, named `<run id>-powerfs-*`.
"""

from __future__ import annotations

import statistics
import time
import urllib.request

from python_on_whales import docker

from activities.images import ensure_images
from bench.loadgen import _measure
from bench.measure import containers_cpu_s
from durable_chaos.faults.powerfs import Layer, powerfs_image
from subjects.etcd import etcd_image


def _etcd(name: str, port: int, volumes: list) -> str:
    docker.run(etcd_image().ref, ["--name", "etcd1", "--data-dir", "/etcd-data",
                                  "--listen-client-urls", "http://0.0.0.0:2379",
                                  "--advertise-client-urls", f"http://127.0.0.1:{port}"],
               entrypoint="etcd", detach=True, name=name, publish=[(f"127.0.0.1:{port}", 2379)], volumes=volumes)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).read()
            return url
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer: {docker.container.logs(name)[-500:]}") from None
            time.sleep(0.1)


def figures(run_id: str, port_base: int, seconds: float, rounds: int, concurrency: int, timeout: float,
            say=print) -> dict:
    ensure_images([powerfs_image(), etcd_image()])
    layer = Layer(f"{run_id}-powerfs", "etcd1")
    names = {"plain": f"{run_id}-powerfs-plain", "layered": f"{run_id}-powerfs-layered"}
    try:
        layer.start()
        urls = {"plain": _etcd(names["plain"], port_base, []),
                "layered": _etcd(names["layered"], port_base + 1, [layer.volume("/etcd-data")])}
        helper = docker.container.inspect(layer.helper).id
        runs: dict[str, list[dict]] = {"plain": [], "layered": []}
        helper_cpu = 0.0
        for k in range(rounds):
            for side in (("plain", "layered") if k % 2 == 0 else ("layered", "plain")):
                cpu0 = containers_cpu_s([helper]).get(helper, 0.0)
                r = _measure("closed", urls[side], seconds, concurrency, timeout)
                if side == "layered":
                    r["helper_cpu_s"] = round(containers_cpu_s([helper]).get(helper, 0.0) - cpu0, 3)
                    helper_cpu += r["helper_cpu_s"]
                runs[side].append(r)
                say(f"  round {k + 1}/{rounds} {side}: {r['ops_s']} ops/s, p50 {r['p50_ms']} ms")
        stats = layer.ask("stats")
    finally:
        for name in names.values():
            docker.container.remove(name, force=True)
        layer.remove()
    ratios = [lay["ops_s"] / plain["ops_s"] for plain, lay in zip(runs["plain"], runs["layered"]) if plain["ops_s"]]
    layered_ops = sum(r["ok"] for r in runs["layered"])

    def median(side: str, key: str) -> float:
        return round(statistics.median(r[key] for r in runs[side]), 3)

    return {
        "seconds": seconds, "rounds": rounds, "concurrency": concurrency,
        "plain_ops_s": median("plain", "ops_s"), "layered_ops_s": median("layered", "ops_s"),
        "ratio": round(statistics.median(ratios), 3) if ratios else None,
        "plain_p50_ms": median("plain", "p50_ms"), "layered_p50_ms": median("layered", "p50_ms"),
        "plain_p99_ms": median("plain", "p99_ms"), "layered_p99_ms": median("layered", "p99_ms"),
        "helper_cpu_per_1k_ops_s": round(1000 * helper_cpu / layered_ops, 4) if layered_ops else None,
        "synced_mb": round(stats["synced_bytes_total"] / 2**20, 1),
        "runs": runs,
    }
