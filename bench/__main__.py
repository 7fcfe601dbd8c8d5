"""`make bench`: run every benchmark and print its figures."""

from __future__ import annotations

import asyncio
import logging
import os

from bench import delivery, updates, voting
from bench import points as points_bench
from bench import reports as reports_bench
from bench import tasks as tasks_bench


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    postgres = os.environ.get("LINLI_BENCH_DATABASE_URL") or os.environ.get(
        "LINLI_TEST_DATABASE_URL"
    )
    asyncio.run(updates.main(postgres))
    asyncio.run(delivery.main(postgres))
    asyncio.run(points_bench.main(postgres))
    asyncio.run(reports_bench.main(postgres))
    asyncio.run(tasks_bench.main(postgres))
    asyncio.run(voting.main(postgres))


if __name__ == "__main__":
    main()
