"""Server CPU per lease + verdict round trip: one uvicorn worker, one sequential client.

    .venv/bin/python bench/lease_cpu.py [--trips 400] [--code DIR]

``bench/lease.py`` measures latency, which on a shared 2-core machine mostly measures the
machine's load. This measures what the server *spends*: CPU seconds of the uvicorn
process (``/proc/<pid>/stat``, user + system) over ``--trips`` sequential lease + verdict
round trips on PostgreSQL, and the trip's wall time for one client with nobody else
queued. It also prints the interpreter's speed on this machine (10 million integer
additions), so figures from different machines can be compared. ``--code DIR`` runs the
server with another checkout's ``backend`` (say ``git worktree add /tmp/old f7d566c``),
for a before / after on the same machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import use_code  # noqa: E402

CODE = use_code()  # ``--code DIR``: the prefill, the migrations and the server use its backend

from bench.common import bench_database, percentile, use_database  # noqa: E402


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def python_speed_s() -> float:
    t0 = time.perf_counter()
    s = 0
    for i in range(10_000_000):
        s += i
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trips", type=int, default=400, help="measured round trips (two halves)")
    ap.add_argument("--code", metavar="DIR", help="run the server with this checkout's code")
    args = ap.parse_args(argv)
    code = CODE
    # uvicorn runs in a subprocess: its working directory and PYTHONPATH pick the checkout
    os.environ["PYTHONPATH"] = os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")])
    import httpx

    import bench.lease
    from bench.lease import free_port, prefill, start_server

    bench.lease.ROOT = code  # start_server runs uvicorn in that directory

    print(f"python speed: 10M integer additions in {python_speed_s():.2f} s; "
          f"load average {os.getloadavg()[0]:.1f}")
    half = args.trips // 2
    with bench_database("postgres") as url:
        use_database(url)
        tokens = prefill(url, 2 * half + 150, 1)
        port = free_port()
        proc = start_server(url, port, 1)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                              headers={"Authorization": f"Bearer {tokens[0]}"}) as client:
                def trip() -> None:
                    task = client.post("/api/v1/tasks/lease", json={}).json()["task"]
                    r = client.post(f"/api/v1/tasks/{task['id']}/verdict", json={"label": "ok"})
                    if r.status_code != 200:
                        raise SystemExit(f"verdict answered {r.status_code}: {r.text}")

                for _ in range(100):  # warm-up: imports, caches, prepared statements
                    trip()
                print(f"code {code}: one uvicorn worker, one sequential moderator")
                for _ in range(2):
                    c0, lat = proc_cpu_s(proc.pid), []
                    for _ in range(half):
                        t0 = time.perf_counter()
                        trip()
                        lat.append(1000 * (time.perf_counter() - t0))
                    cpu_ms = 1000 * (proc_cpu_s(proc.pid) - c0) / half
                    print(f"  {half} trips: server CPU {cpu_ms:.2f} ms per trip; trip p50 "
                          f"{percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms; "
                          f"load {os.getloadavg()[0]:.1f}")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
