"""PyTorch twin of `mnist --dense`: the reference MLP (784 -> 512 relu -> 10) on MNIST
pixels mapped to 2x - 1 (a dense input, no zeros), Glorot-uniform weights and zero
biases, Keras-form RMSprop (v = rho v + (1 - rho) g^2; w -= lr g / sqrt(v + eps),
lr 1e-3, rho 0.9, eps 1e-7, as horn and Keras compute it), softmax cross-entropy,
batch 128, first 45,000 rows train, last 15,000 validate after each epoch,
flush-to-zero on. Prints one JSON line with the keys of ../shared/bench/torch_mnist.py.

Usage: python scripts/torch_mnist_dense.py [seed]   (ANCHOR_THREADS, default 2;
ANCHOR_EPOCHS, default 10). Needs ../shared/bench/anchor_data.py beside the repo."""
import json
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "bench"))
NT = int(os.environ.get("ANCHOR_THREADS", "2"))
EPOCHS = int(os.environ.get("ANCHOR_EPOCHS", "10"))
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import anchor_data  # noqa: E402

torch.set_num_threads(NT)
torch.set_flush_denormal(True)
torch.manual_seed(seed)

xtr, _, xte, _, ytr, yte = anchor_data.mnist()
xtr_t = torch.from_numpy(xtr) * 2.0 - 1.0
xte_t = torch.from_numpy(xte) * 2.0 - 1.0
ytr_t, yte_t = torch.from_numpy(ytr), torch.from_numpy(yte)
x_fit, y_fit = xtr_t[:45000].contiguous(), ytr_t[:45000]
x_val, y_val = xtr_t[45000:].contiguous(), ytr_t[45000:]

model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
for m in model:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
params = list(model.parameters())
vs = [torch.zeros_like(p) for p in params]
LR, RHO, EPS = 1e-3, 0.9, 1e-7


@torch.no_grad()
def rmsprop_step():
    for p, v in zip(params, vs):
        g = p.grad
        v.mul_(RHO).addcmul_(g, g, value=1.0 - RHO)
        p.addcdiv_(g, (v + EPS).sqrt_(), value=-LR)


@torch.no_grad()
def evaluate(x, y, bs=32):
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, x.shape[0], bs):
        out = model(x[i:i + bs])
        loss += F.cross_entropy(out, y[i:i + bs], reduction="sum").item()
        correct += (out.argmax(1) == y[i:i + bs]).sum().item()
    return loss / x.shape[0], correct / x.shape[0]


@torch.no_grad()
def predict(x, bs):
    model.eval()
    return torch.cat([F.softmax(model(x[i:i + bs]), 1) for i in range(0, x.shape[0], bs)])


g = torch.Generator().manual_seed(seed)
times = []
t_fit = time.perf_counter()
for epoch in range(EPOCHS):
    t0 = time.perf_counter()
    model.train()
    perm = torch.randperm(45000, generator=g)
    for i in range(0, 45000, 128):
        idx = perm[i:i + 128]
        loss = F.cross_entropy(model(x_fit[idx]), y_fit[idx])
        for p in params:
            p.grad = None
        loss.backward()
        rmsprop_step()
    evaluate(x_val, y_val)
    times.append(time.perf_counter() - t0)
fit_s = time.perf_counter() - t_fit


def timed(f, n=3):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        r = f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), r


eval_s, (tl, ta) = timed(lambda: evaluate(xte_t, yte_t))
pred_s, _ = timed(lambda: predict(xte_t, 32))
pred_big_s, _ = timed(lambda: predict(xte_t, 10000))
print(json.dumps(dict(
    system=f"pytorch {torch.__version__} hand loop, dense input", seed=seed, threads=NT,
    epoch_s=[round(t, 3) for t in times],
    epoch_median_2_10=round(statistics.median(times[1:]) if len(times) > 1 else times[0], 3),
    fit_s=round(fit_s, 3), test_loss=tl, test_acc=ta, evaluate_s=round(eval_s, 3),
    predict_b32_s=round(pred_s, 3), predict_b10000_s=round(pred_big_s, 3),
    peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
)))
