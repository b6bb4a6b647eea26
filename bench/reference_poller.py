"""Reference for the steady-state benchmark: a bare aiohttp loop polling URLs every interval.

    python bench/reference_poller.py --interval 1 --timeout 1 URL [URL ...]

One shared ClientSession, all URLs in parallel each round, the next round `interval` after the
start of the previous one. Runs until SIGTERM/SIGINT; prints nothing (the bench reads /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import aiohttp


async def poll(urls: list[str], interval: float, timeout: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    limit = aiohttp.ClientTimeout(total=timeout)

    async def get(session: aiohttp.ClientSession, url: str) -> None:
        try:
            async with session.get(url, timeout=limit) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            pass

    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            began = loop.time()
            await asyncio.gather(*(get(session, u) for u in urls))
            try:
                async with asyncio.timeout(max(0.0, began + interval - loop.time())):
                    await stop.wait()
            except TimeoutError:
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args()
    asyncio.run(poll(args.urls, args.interval, args.timeout))


if __name__ == "__main__":
    main()
