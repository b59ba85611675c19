"""``python -m crowd.emulator --port 8089``: run the Toloka emulator standalone."""

from __future__ import annotations

import argparse

import pandas as pd

from crowd.emulator import Emulator, Realism


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m crowd.emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument(
        "--answer-on-poll",
        type=int,
        default=20,
        help="suites answered per GET /api/v1/assignments of a pool",
    )
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--replay", help="CSV with task_key,worker,label columns")
    parser.add_argument("--key-field", default="item_id")
    parser.add_argument(
        "--id-base",
        type=int,
        default=0,
        help="ids start after this (use the one Quorum names, so that no id an earlier "
        "emulator handed out is reused)",
    )
    parser.add_argument(
        "--real-pool",
        action="store_true",
        help="behave like a busy real pool: ACTIVE/SKIPPED/EXPIRED suites, PENDING "
        "operations, 10%% 429s, the pool's quality-control rules evaluated",
    )
    args = parser.parse_args(argv)
    replay = pd.read_csv(args.replay, dtype=str) if args.replay else None
    emu = Emulator(
        seed=args.seed,
        workers=args.workers,
        replay=replay,
        key_field=args.key_field,
        fault_rate=args.fault_rate,
        latency=args.latency,
        answer_on_poll=args.answer_on_poll,
        port=args.port,
        id_base=args.id_base,
        realism=Realism.real_pool() if args.real_pool else None,
    )
    print(f"Toloka emulator on {emu.url} (TolokaClient(token, url={emu.url!r}))", flush=True)
    try:
        emu.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()


if __name__ == "__main__":
    main()
