"""Time and memory of the PCKA loss against the per-channel reference.

Shapes are RetinaNet's FPN at 1333x800 with 2 images (P3..P7, C=256). Each
measurement runs in a fresh subprocess so that its peak memory (peak RSS
increase on a CPU, ``max_memory_allocated`` on a GPU) is its own.

Example:
    python tools/benchmark/benchmark_loss.py
    python tools/benchmark/benchmark_loss.py --device cuda --repeats 20
"""
import argparse
import json
import sys

import torch

from pcka_det.benchmark import run_isolated

LEVELS = [(100, 168), (50, 84), (25, 42), (13, 21), (7, 11)]


def make_inputs(batch, channels, device):
    g = torch.Generator().manual_seed(0)
    feats = []
    for h, w in LEVELS:
        t = torch.relu(torch.randn(batch, channels, h, w, generator=g))
        s = torch.relu(t + torch.randn(batch, channels, h, w, generator=g))
        feats.append((s.to(device).requires_grad_(), t.to(device)))
    return feats


def step(impl, feats, patch_size, inter):
    """One training step's loss over the levels: forward + backward."""
    from pcka_det.losses import PatchCKALoss, patch_count, to_patches
    from pcka_det.testing.reference import per_channel_reference
    loss = PatchCKALoss(patch_size, 10.0, 10.0 if inter else None)
    total = 0
    for s, t in feats:
        if impl == 'ours':
            total = total + loss(s, t)
            continue
        intra, inter_sim = per_channel_reference(
            to_patches(s, patch_size), to_patches(t, patch_size))
        if patch_count(s, patch_size) == 1:
            intra = torch.ones_like(intra)  # the official code crashes
        total = total + loss.combine(intra, inter_sim if inter else None)
    total.backward()
    return total


def worker(args):
    """Measure one (impl, inter) configuration; print a JSON line."""
    from pcka_det.benchmark import measure
    torch.set_num_threads(args.threads) if args.threads else None
    dev = torch.device(args.device)
    feats = make_inputs(args.batch, args.channels, dev)

    def one_step():
        for s, _t in feats:
            s.grad = None
        return step(args.impl, feats, args.patch_size, args.inter)

    repeats = args.repeats if args.impl == 'ours' else args.ref_repeats
    r = measure(one_step, repeats, dev)
    print(json.dumps(dict(time=r['time'], peak=r['peak'],
                          value=float(r['result']))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--patch-size', type=int, default=16)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--ref-repeats', type=int, default=1)
    parser.add_argument('--threads', type=int, default=0)
    parser.add_argument('--impl', choices=['ours', 'reference'])
    parser.add_argument('--inter', action='store_true')
    parser.add_argument('--json', help='also write the results here')
    args = parser.parse_args()
    if args.impl:
        return worker(args)

    common = [
        '--device', args.device, '--batch', str(args.batch), '--channels',
        str(args.channels), '--patch-size', str(args.patch_size),
        '--repeats', str(args.repeats), '--ref-repeats',
        str(args.ref_repeats), '--threads', str(args.threads)
    ]
    results = {}
    for inter in (False, True):
        for impl in ('ours', 'reference'):
            cmd = [sys.executable, __file__, '--impl', impl] + common
            cmd += ['--inter'] if inter else []
            results[(impl, inter)] = run_isolated(cmd)

    print(f'PCKA loss, RetinaNet FPN P3-P7 {LEVELS}, B={args.batch}, '
          f'C={args.channels}, patch {args.patch_size}, device '
          f'{args.device}, forward+backward, median time')
    header = (f'{"terms":<13}{"impl":<11}{"time (ms)":>11}'
              f'{"peak MiB":>10}{"loss":>12}')
    print(header)
    print('-' * len(header))
    summary = {}
    for inter in (False, True):
        name = 'intra+inter' if inter else 'intra'
        for impl in ('ours', 'reference'):
            r = results[(impl, inter)]
            print(f'{name:<13}{impl:<11}{r["time"] * 1e3:>11.1f}'
                  f'{r["peak"] / 2**20:>10.1f}{r["value"]:>12.5f}')
        ours, ref = results[('ours', inter)], results[('reference', inter)]
        speed = ref['time'] / ours['time']
        mem = ours['peak'] / max(ref['peak'], 1)
        print(f'{"":<13}{"ratio":<11}{speed:>10.1f}x'
              f'{mem:>9.3f}x  (speed-up; memory ours/reference)')
        summary[name] = dict(ours=ours, reference=ref, speedup=speed,
                             memory_ratio=mem)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(summary, f, indent=2)


if __name__ == '__main__':
    main()
