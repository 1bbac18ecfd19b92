"""Write a synthetic trace in the Mooncake (FAST'25) format, shaped like its conversation trace.

    .venv/bin/python benchmarks/mooncake_trace.py OUT.jsonl [--requests 12000] [--seed 0]

Sessions start from one of a few system prompts and grow turn by turn: a turn's prompt is the
previous turn's prompt (its hash ids) plus new blocks, so later turns share long prefixes with
earlier ones, as in multi-turn chat. Arrivals are Poisson at --rate requests/s; turns of a session
keep their order. Prompts average about 12,000 tokens (the conversation trace's mean is ~12k),
outputs about 350.
"""

import argparse
import json
import random
from pathlib import Path

BLOCK = 512  # tokens per hash id


def requests(n: int, seed: int = 0, rate: float = 3.3) -> list[dict]:
    rng = random.Random(seed)
    next_id = 0

    def new_ids(k: int) -> list[int]:
        nonlocal next_id
        ids = list(range(next_id, next_id + k))
        next_id += k
        return ids

    systems = [new_ids(rng.randint(2, 8)) for _ in range(16)]
    rows, start = [], 0.0
    while len(rows) < n:
        start += rng.expovariate(rate / 3.0)  # a session every ~0.9 s; ~3 turns each
        ids = list(rng.choice(systems)) + new_ids(max(1, round(rng.lognormvariate(2.2, 0.6))))
        t = start
        for _ in range(max(1, round(rng.expovariate(1 / 3.0)))):
            tokens = len(ids) * BLOCK - rng.randint(0, BLOCK - 1)  # the last block partial
            rows.append({"timestamp": round(t * 1000), "input_length": tokens,
                         "output_length": max(1, round(rng.lognormvariate(5.6, 0.7))), "hash_ids": list(ids)})
            t += rng.expovariate(1 / 20.0)  # the user's next turn, ~20 s later
            ids = ids + new_ids(rng.randint(1, 6))  # the answer and the next question
    rows = sorted(rows[:n], key=lambda r: r["timestamp"])
    return rows


def write(path: Path, n: int, seed: int = 0) -> dict:
    rows = requests(n, seed)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    prompt = [r["input_length"] for r in rows]
    return {"requests": len(rows), "mean_prompt_tokens": sum(prompt) / len(rows), "prompt_tokens": sum(prompt),
            "mean_output_tokens": sum(r["output_length"] for r in rows) / len(rows),
            "duration_s": rows[-1]["timestamp"] / 1000, "bytes": path.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--requests", type=int, default=12_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write(args.out, args.requests, args.seed))


if __name__ == "__main__":
    main()
