"""PyTorch's scaled_dot_product_attention (flash backend) on the shapes of
kernels/attention_bench, printed as the same table.

q, k and v are bf16 views of [B, L, H, D] rows (the model's layout) seen as
[B, H, L, D], which the flash backend reads without a copy. Packed documents
(/N) have no counterpart in this API: those cases are timed as one causal
sequence, an upper bound on what a document mask would cost. Times are medians
of CUDA-event timings after warm-up.

    python3 kernels/attention_bench_torch.py --cases=8x12x2048x64,2x12x8192x64
"""
import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def time_ms(fn, reps):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def run(case, reps):
    shape, _, doc = case.partition("/")
    b, h, l, d = (int(x) for x in shape.split("x"))
    def make():
        return torch.empty(b, l, h, d, device="cuda", dtype=torch.bfloat16).uniform_(-1, 1) \
            .transpose(1, 2).requires_grad_()
    q, k, v = make(), make(), make()
    grad = torch.empty(b, l, h, d, device="cuda", dtype=torch.bfloat16).uniform_(-1, 1) \
        .transpose(1, 2)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        def forward():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        def backward():
            torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)
        fwd = time_ms(forward, reps)
        bwd = time_ms(backward, reps)
    flops = 4.0 * b * h * d * l * (l + 1) / 2
    print(f"| {b} x {h} x {l} x {d} | {l} (asked {doc or l}) | {fwd:.3f} | {flops / fwd / 1e9:.0f} "
          f"| {bwd:.3f} | {2.5 * flops / bwd / 1e9:.0f} | {fwd + bwd:.3f} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="8x12x2048x64,8x12x2048x64/256,2x12x8192x64")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    print(f"\ntorch {torch.__version__} scaled_dot_product_attention (flash), "
          f"{torch.cuda.get_device_name()}, median of {args.reps}\n")
    print("| B x H x L x D | document | fwd ms | fwd TFLOP/s | bwd ms | bwd TFLOP/s | fwd+bwd ms |")
    print("|---|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        run(case, args.reps)


if __name__ == "__main__":
    main()
