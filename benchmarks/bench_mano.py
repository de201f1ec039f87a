"""ManoLayer forward and forward+backward: the fused op vs the reference it replaced vs smplx.MANO.

    python benchmarks/bench_mano.py [--batches 1 256] [--repeats 15]

Same model file for all three (``handops.mano.synthetic_model(0)`` saved and read back by smplx);
float32, axis-angle poses without PCA, flat hand mean; backward = gradients of betas, global_orient
and hand_pose. Prints median milliseconds per call and the machine load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

import handops
from handops._reference.mano import mano_forward_reference
from handops.mano import layer as layer_module


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    import smplx

    model = handops.mano.synthetic_model(0)
    tmp = tempfile.mkdtemp()
    handops.mano.save(model, tmp)
    smplx_layer = smplx.MANO(model_path=tmp, is_rhand=True, use_pca=False, flat_hand_mean=True)
    ours = handops.ManoLayer(model, use_pca=False, flat_hand_mean=True)
    op = layer_module.mano_skinning

    def reference(m, b, r):  # the ManoLayer body before the op: the reference, transl added afterwards
        return mano_forward_reference(m, b, r)

    print(f"load: {os.getloadavg()}, threads: {torch.get_num_threads()}")
    print(f"{'B':>5} {'provider':>10} {'fwd ms':>10} {'fwd+bwd ms':>12}")
    for batch in args.batches:
        g = torch.Generator().manual_seed(batch)
        betas = torch.randn(batch, 10, generator=g)
        orient = torch.randn(batch, 3, generator=g) * 0.5
        pose = torch.randn(batch, 45, generator=g) * 0.5
        transl = torch.randn(batch, 3, generator=g) * 0.1
        leaves = [t.clone().requires_grad_() for t in (betas, orient, pose)]

        def run_handops(backward):
            def call():
                if backward:
                    out = ours(*leaves, transl=transl)
                    torch.autograd.grad(out.vertices.sum() + out.joints.sum(), leaves)
                else:
                    with torch.no_grad():
                        ours(betas, orient, pose, transl=transl)
            return call

        def run_smplx(backward):
            def call():
                if backward:
                    out = smplx_layer(betas=leaves[0], global_orient=leaves[1], hand_pose=leaves[2], transl=transl)
                    torch.autograd.grad(out.vertices.sum() + out.joints.sum(), leaves)
                else:
                    with torch.no_grad():
                        smplx_layer(betas=betas, global_orient=orient, hand_pose=pose, transl=transl)
            return call

        rows = []
        for name, impl in (("reference", reference), ("op", op)):
            layer_module.mano_skinning = impl
            try:
                rows.append((name, median_ms(run_handops(False), args.repeats), median_ms(run_handops(True), args.repeats)))
            finally:
                layer_module.mano_skinning = op
        rows.append(("smplx", median_ms(run_smplx(False), args.repeats), median_ms(run_smplx(True), args.repeats)))
        for name, fwd, both in rows:
            print(f"{batch:>5} {name:>10} {fwd:>10.3f} {both:>12.3f}")
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
