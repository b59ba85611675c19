"""The encoder's time per item by batch size under torch's two OpenMP wait policies.

    .venv/bin/python bench/omp_policy.py [--encoder minilm] [--threads 2] [--batches 1,5,64]

``ml/__init__.py`` sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it:
threads sleep between parallel regions instead of spinning. This bench runs the same
encoding in two fresh processes, one with ``OMP_WAIT_POLICY=ACTIVE`` (spinning, libgomp's
behaviour when the variable is unset) and one with ``PASSIVE`` (Quorum's default), each
with ``--threads`` torch threads, and prints the median milliseconds per item for each
batch size (a route job of one ingest call of 5 items is a batch of 5). Run it beside the
load the worker will share its cores with: on an idle machine the two are close; on busy
cores spinning threads wait for each other's time slices.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(encoder: str, threads: int, batches: list[int]) -> dict[int, float]:
    sys.path.insert(0, str(ROOT))
    import statistics

    import torch

    from bench.routing_lock import rows
    from ml.encoders import create_encoder
    from ml.inputs import ItemInput

    torch.set_num_threads(threads)
    enc = create_encoder(encoder)
    items = [ItemInput(title=r["title"], description=r["description"]) for r in rows(400)]
    enc.encode(items[:16])  # warm up
    out = {}
    for n in batches:
        per_item = []
        for k in range(max(3, 40 // n)):
            chunk = items[(k * n) % 300:(k * n) % 300 + n]
            t = time.perf_counter()
            enc.encode(chunk, batch_size=max(n, 1))
            per_item.append((time.perf_counter() - t) / len(chunk) * 1000)
        out[n] = statistics.median(per_item)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--batches", default="1,5,64")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b]
    if args.child:
        print(json.dumps(measure(args.encoder, args.threads, batches)))
        return
    load = os.getloadavg()[0]
    results = {}
    for policy in ("ACTIVE", "PASSIVE"):
        env = dict(os.environ, OMP_WAIT_POLICY=policy, HF_HUB_OFFLINE="1")
        out = subprocess.run([sys.executable, __file__, "--child", "--encoder", args.encoder,
                              "--threads", str(args.threads), "--batches", args.batches],
                             env=env, capture_output=True, text=True, check=True, cwd=ROOT)
        results[policy] = {int(k): v for k, v in json.loads(out.stdout.splitlines()[-1]).items()}
    print(f"{args.encoder}, {args.threads} torch threads, load average {load:.1f} at the "
          "start; ms per item (median):")
    print("| batch | OMP_WAIT_POLICY=ACTIVE | PASSIVE (Quorum's default) | ratio |")
    print("|---|---|---|---|")
    for n in batches:
        a, p = results["ACTIVE"][n], results["PASSIVE"][n]
        print(f"| {n} | {a:.1f} | {p:.1f} | {a / p:.2f}× |")


if __name__ == "__main__":
    main()
