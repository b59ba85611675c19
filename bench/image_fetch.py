"""The embed stage's image loading: guarded downloads from a loopback server, and PDQ.

Run from the repository root::

    .venv/bin/python bench/image_fetch.py               # 200 images, 8 download threads
    .venv/bin/python bench/image_fetch.py --n 500 --workers 16 --delay 0.05

A loopback HTTP server answers each request with a scikit-image photo (a JPEG of about
``--width`` px) after ``--delay`` seconds (a CDN's latency). We time
``backend.media.images.fetch_remote`` (the guarded ``fetch_image`` per URL, in parallel
threads) and ``ml.hashes.pdq_hash`` per image. Figures depend on the machine's load (it
is shared); the script prints what it ran on.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _jpeg(width: int) -> bytes:
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.astronaut()).convert("RGB")
    image = image.resize((width, width * image.height // image.width))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--delay", type=float, default=0.02, help="server latency, seconds")
    args = ap.parse_args()

    from backend.media.images import fetch_remote
    from backend.media.settings import ImageFetchSettings
    from ml.hashes import pdq_hash

    body = _jpeg(args.width)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            time.sleep(args.delay)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    cfg = ImageFetchSettings(hosts=["127.0.0.1"], workers=args.workers, timeout_s=30)
    refs = {i: f"{base}/{i}.jpg" for i in range(args.n)}
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          f"(shared); {args.n} images of {len(body):,} bytes, server latency "
          f"{args.delay * 1000:.0f} ms")
    t0 = time.perf_counter()
    got = fetch_remote(refs, cfg=cfg)
    dt = time.perf_counter() - t0
    ok = sum(g.content is not None for g in got.values())
    print(f"fetch_remote, {args.workers} threads: {ok}/{args.n} fetched in {dt:.2f} s = "
          f"{args.n / dt:.0f} images/s")
    cfg1 = ImageFetchSettings(hosts=["127.0.0.1"], workers=1, timeout_s=30)
    few = dict(list(refs.items())[:min(40, args.n)])
    t0 = time.perf_counter()
    fetch_remote(few, cfg=cfg1)
    dt1 = time.perf_counter() - t0
    print(f"fetch_remote, 1 thread: {len(few)} in {dt1:.2f} s = {len(few) / dt1:.0f} images/s")
    t0 = time.perf_counter()
    for g in list(got.values())[:100]:
        pdq_hash(g.content)
    n_pdq = min(100, len(got))
    print(f"pdq_hash: {(time.perf_counter() - t0) / n_pdq * 1000:.1f} ms per image")
    server.shutdown()


if __name__ == "__main__":
    main()
