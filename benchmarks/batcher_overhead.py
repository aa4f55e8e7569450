"""What the dynamic batcher costs and what it gains, measured side by side in one run.

1. Added latency at batch 1: ``DynamicBatcher.submit()`` against calling the same function
   through ``loop.run_in_executor`` on one worker thread, one request at a time; the
   median of each repeat, and the median over repeats of the difference.
2. Throughput at concurrency 8 on a function that costs a fixed time per batch plus a
   time per row (``time.sleep``, which releases the GIL as ONNX Runtime does): run
   directly through ``run_in_executor``, through the batcher with dynamic batching off,
   and with it on.

    python benchmarks/batcher_overhead.py                    # defaults, about 20 s
    python benchmarks/batcher_overhead.py --uvloop --repeats 7 --requests 5000
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import platform
import statistics
import time
from collections.abc import Awaitable, Callable

import numpy as np

from edgetier.batching import DynamicBatcher

Tensors = dict[str, np.ndarray]


def tiny_model(inputs: Tensors) -> Tensors:
    """A model that costs next to nothing, so that only the plumbing is measured."""
    return {"y": inputs["x"] * 2.0}


def costly_model(fixed_s: float, per_row_s: float) -> Callable[[Tensors], Tensors]:
    def run(inputs: Tensors) -> Tensors:
        time.sleep(fixed_s + per_row_s * len(inputs["x"]))
        return {"y": inputs["x"] * 2.0}

    return run


async def latencies_us(call: Callable[[], Awaitable[object]], n: int) -> list[float]:
    for _ in range(min(200, n)):  # warm-up
        await call()
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await call()
        out.append((time.perf_counter_ns() - t0) / 1e3)
    return out


async def added_latency(repeats: int, requests: int) -> None:
    loop = asyncio.get_running_loop()
    inputs = {"x": np.ones((1, 16), np.float32)}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    async def direct() -> object:
        return await loop.run_in_executor(pool, tiny_model, inputs)

    diffs = []
    print(f"\n1. Added latency at batch 1 ({requests} sequential requests per repeat)")
    print(f"{'repeat':>6} {'direct p50 us':>14} {'batcher p50 us':>15} {'added us':>9}")
    async with DynamicBatcher(tiny_model, max_batch_size=8, name="tiny") as batcher:

        async def batched() -> object:
            return await batcher.submit(inputs)

        for r in range(repeats):
            # alternate the order so that drifts of a noisy machine do not favour one side
            first, second = (direct, batched) if r % 2 == 0 else (batched, direct)
            a = statistics.median(await latencies_us(first, requests))
            b = statistics.median(await latencies_us(second, requests))
            d, s = (a, b) if r % 2 == 0 else (b, a)
            diffs.append(s - d)
            print(f"{r + 1:>6} {d:>14.1f} {s:>15.1f} {s - d:>9.1f}")
    pool.shutdown()
    print(f"median added latency over {repeats} repeats: {statistics.median(diffs):.1f} us")


async def throughput(
    call: Callable[[np.ndarray], Awaitable[object]], concurrency: int, duration_s: float
) -> float:
    done = 0
    stop_at = time.perf_counter() + duration_s

    async def client(i: int) -> None:
        nonlocal done
        x = np.full((1, 16), i, np.float32)
        while time.perf_counter() < stop_at:
            await call(x)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return done / (time.perf_counter() - t0)


async def batching_gain(
    repeats: int, concurrency: int, duration_s: float, fixed_ms: float, per_row_ms: float
) -> None:
    loop = asyncio.get_running_loop()
    model = costly_model(fixed_ms / 1e3, per_row_ms / 1e3)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    print(
        f"\n2. Throughput at concurrency {concurrency}, model cost {fixed_ms} ms per batch "
        f"+ {per_row_ms} ms per row, one instance, {duration_s} s per run"
    )
    print(f"{'repeat':>6} {'direct infer/s':>15} {'batching off':>13} {'batching on':>12}")
    gains, off_ratio = [], []
    for r in range(repeats):

        async def direct(x: np.ndarray) -> object:
            return await loop.run_in_executor(pool, model, {"x": x})

        raw = await throughput(direct, concurrency, duration_s)
        results = []
        for dynamic in (False, True):
            async with DynamicBatcher(model, max_batch_size=8, dynamic=dynamic) as b:

                async def batched(x: np.ndarray, b: DynamicBatcher = b) -> object:
                    return await b.submit({"x": x})

                results.append(await throughput(batched, concurrency, duration_s))
        off, on = results
        gains.append(on / off)
        off_ratio.append(off / raw)
        print(f"{r + 1:>6} {raw:>15.1f} {off:>13.1f} {on:>12.1f}")
    pool.shutdown()
    print(f"batching off / direct: {statistics.median(off_ratio):.3f} (median)")
    print(f"batching on / off:     {statistics.median(gains):.2f}x (median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=1.0)
    parser.add_argument("--fixed-ms", type=float, default=2.0)
    parser.add_argument("--per-row-ms", type=float, default=0.25)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the server")
    args = parser.parse_args()
    print(
        f"{platform.node()} | {platform.processor() or platform.machine()} | "
        f"Python {platform.python_version()} | numpy {np.__version__} | "
        f"{'uvloop' if args.uvloop else 'asyncio'} | {time.strftime('%Y-%m-%d %H:%M')}"
    )

    async def run() -> None:
        await added_latency(args.repeats, args.requests)
        await batching_gain(
            args.repeats, args.concurrency, args.duration_s, args.fixed_ms, args.per_row_ms
        )

    if args.uvloop:
        import uvloop

        uvloop.run(run())
    else:
        asyncio.run(run())


if __name__ == "__main__":
    main()
