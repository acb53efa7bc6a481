"""PyTorch twin of `cargo bench --bench latency`: inference latency of the reference
model (784 -> 512 relu -> 10 softmax, Glorot-uniform weights) on one MNIST test image,
one dense row (the pixels mapped to 2x - 1) and blocks of 8 and 32 dense rows. Each
figure is the median (and 99th percentile) of 10,000 calls under torch.inference_mode,
in microseconds; the last line is JSON with the keys of horn's bench.

Usage: python scripts/torch_predict_latency.py   (ANCHOR_THREADS, default 2).
Needs ../shared/bench/anchor_data.py beside the repository."""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "bench"))
NT = int(os.environ.get("ANCHOR_THREADS", "2"))
CALLS = 10_000

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import anchor_data  # noqa: E402

torch.set_num_threads(NT)
torch.set_flush_denormal(True)
torch.manual_seed(1)

_, _, xte, _, _, _ = anchor_data.mnist()
xte = torch.from_numpy(xte).reshape(-1, 784)
model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10), nn.Softmax(dim=1))
for m in model:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
model.eval()

cases = [
    ("mnist_1", xte[:1].contiguous()),
    ("dense_1", (xte[:1] * 2.0 - 1.0).contiguous()),
    ("dense_8", (xte[:8] * 2.0 - 1.0).contiguous()),
    ("dense_32", (xte[:32] * 2.0 - 1.0).contiguous()),
]
out = {}
with torch.inference_mode():
    for name, x in cases:
        for _ in range(100):
            model(x)
        times = []
        for _ in range(CALLS):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1e6)
        times.sort()
        median, p99 = times[CALLS // 2], times[CALLS * 99 // 100]
        print(f"{name:<10} median {median:8.1f} us   p99 {p99:8.1f} us")
        out[f"{name}_us"] = round(median, 2)
print(json.dumps(out))
