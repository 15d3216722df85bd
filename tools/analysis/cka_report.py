"""How closely students' FPN features match the teacher's, level by level.

Runs the teacher and one or two students of a distillation config on
validation images and reports, per distilled level, the PCKA intra/inter
similarities (the loss's own ``patch_cka``) and plain linear CKA (positions
as samples), mean and spread over batches; plus a teacher-level x
student-level CKA matrix (images as samples, each level pooled to 4x4).
Writes ``report.json`` and ``cka_report.png``.

The PCKA patch of a level is the loss's ``patch_size`` (``--patch-size`` for
other losses), capped at half the level's shorter side (at least 1) so that
small levels still have several patches per side: on 192 px images the toy
P5 (6x6) is measured with 3-cell patches instead of the loss's 4, P6 (3x3)
with 1 instead of 2. The patch size used per level is printed and stored
(``patch_sizes`` in ``report.json``).

Example:
    python tools/analysis/cka_report.py configs/toy/pcka_retinanet_r18_thin-r18_toy.py \\
        --teacher-ckpt work_dirs/demo/teacher/model.pth \\
        --student-ckpt work_dirs/demo/student/model.pth \\
            work_dirs/demo/pcka/model.pth --labels baseline pcka
"""
import argparse
import json
import os
import os.path as osp
from typing import Dict, List

import torch
import torch.nn.functional as F

METRICS = ('pcka_intra', 'pcka_inter', 'cka')
POOL = 4  # grid each level is pooled to for the cross-level matrix


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f'must be an integer >= 1, got {text!r}')
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='distillation (FeatureDistiller) '
                        'config')
    parser.add_argument('--teacher-ckpt', required=True)
    parser.add_argument('--student-ckpt', nargs='+', required=True,
                        help='one or two student checkpoints (student-only '
                        'or distiller checkpoints)')
    parser.add_argument('--labels', nargs='+',
                        help='names of the students in the report')
    parser.add_argument('--num-images', type=_positive_int, default=32)
    parser.add_argument('--batch-size', type=_positive_int, default=4)
    parser.add_argument('--patch-size', type=int, default=4,
                        help='PCKA patch size for levels whose loss is not '
                        'PatchCKALoss')
    parser.add_argument('--out-dir', default='work_dirs/cka_report')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)
    if len(args.student_ckpt) > 2:
        parser.error('give one or two --student-ckpt')
    if args.labels is None:
        args.labels = [osp.splitext(osp.basename(p))[0]
                       for p in args.student_ckpt]
    if len(args.labels) != len(args.student_ckpt):
        parser.error('--labels needs one name per --student-ckpt')
    return args


def load_student_weights(student: torch.nn.Module, path: str) -> None:
    """Load a student-only or a distiller checkpoint into ``student``."""
    from pcka_det.checkpoint import load_weights
    if not osp.isfile(path):
        raise FileNotFoundError(f'--student-ckpt "{path}" does not exist')
    load_weights(student, path, max_unmatched=0,
                 what="the config's student")


def level_patches(distiller, default_patch: int) -> Dict[str, int]:
    """``name -> patch_size`` of every distilled level: its PCKA loss's, or
    ``default_patch`` for other losses."""
    from pcka_det.losses import PatchCKALoss
    patches = {}
    for name, level in distiller.levels.items():
        if level.is_head:  # a head level (CrossKD) pairs no feature maps
            continue
        loss = distiller.distill_losses[name]
        patches[name] = loss.patch_size if isinstance(loss, PatchCKALoss) \
            else default_patch
    return patches


def level_metrics(s: torch.Tensor, t: torch.Tensor, patch: int) -> dict:
    """PCKA intra/inter and plain CKA between two ``(B, C, H, W)`` maps,
    and the ``patch_size`` used (None when the widths differ)."""
    from pcka_det.losses import cka, fitting_patch_size, patch_cka
    out = {}
    if s.shape[1] == t.shape[1]:
        patch = fitting_patch_size(patch, t.shape[2:])
        intra, inter = patch_cka(s, t, patch, inter=True)
        out.update(pcka_intra=intra.mean().item(),
                   pcka_inter=inter.mean().item(), patch_size=patch)
    else:  # per-channel similarities need equal widths
        out.update(pcka_intra=float('nan'), pcka_inter=float('nan'),
                   patch_size=None)
    if s.shape[2:] != t.shape[2:]:
        s = F.interpolate(s, size=t.shape[2:], mode='bilinear')
    positions = [f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]) for f in (s, t)]
    out['cka'] = cka(*positions, centered=True)[0].item()
    return out


def pooled(feat: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C * POOL * POOL)`` image descriptors."""
    return F.adaptive_avg_pool2d(feat.float(), POOL).flatten(1)


@torch.no_grad()
def collect(args) -> dict:
    """Run the models and compute every number of the report."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    import pcka_det  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from pcka_det.losses import cka
    from pcka_det.config_paths import resolve_config_path
    register_all_modules()

    cfg = Config.fromfile(resolve_config_path(args.config))
    if cfg.model.get('type') != 'FeatureDistiller':
        raise ValueError(f'{args.config} is not a FeatureDistiller config')
    cfg.model.teacher_ckpt = args.teacher_ckpt
    distiller = MODELS.build(cfg.model).to(args.device).eval()
    specs = level_patches(distiller, args.patch_size)
    if not specs:
        raise ValueError(f'{args.config} distils no feature map (its head '
                         'level pairs predictions): nothing to compare.')
    students = {}
    for label, path in zip(args.labels, args.student_ckpt):
        load_student_weights(distiller.student, path)
        students[label] = {k: v.clone() for k, v in
                           distiller.student.state_dict().items()}

    loader_cfg = cfg.val_dataloader.copy()
    loader_cfg.batch_size = args.batch_size
    loader = Runner.build_dataloader(loader_cfg)
    per_batch = {label: {name: [] for name in specs} for label in students}
    sizes = {name: set() for name in specs}  # teacher (H, W) per level
    t_pooled, s_pooled = [], {label: [] for label in students}
    seen = 0
    for batch in loader:
        data = distiller.data_preprocessor(batch, False)
        t_levels = None
        for label, state in students.items():
            distiller.student.load_state_dict(state)
            distiller.student.eval()
            # the teacher runs with each student (the pairing is the
            # distiller's own); its features are the same every time
            _, pairs = distiller.record(data['inputs'], data['data_samples'])
            pairs = {n: p for n, p in pairs.items() if n in specs}
            s_levels = {n: s for n, (s, _) in pairs.items()}
            if t_levels is None:
                t_levels = {n: t for n, (_, t) in pairs.items()}
                t_pooled.append([pooled(f) for f in t_levels.values()])
                for name, feat in t_levels.items():
                    sizes[name].add(tuple(feat.shape[2:]))
            for name, patch in specs.items():
                per_batch[label][name].append(
                    level_metrics(s_levels[name].float(),
                                  t_levels[name].float(), patch))
            s_pooled[label].append([pooled(f) for f in s_levels.values()])
        seen += data['inputs'].shape[0]
        if seen >= args.num_images:
            break

    def stack(rows):
        return [torch.cat([r[i] for r in rows]) for i in range(len(specs))]

    teacher_desc = stack(t_pooled)
    report = dict(config=args.config, teacher_ckpt=args.teacher_ckpt,
                  num_images=seen, levels=list(specs),
                  patch_sizes={
                      name: patch_size_summary(
                          specs[name], sizes[name],
                          [r['patch_size'] for rows in per_batch.values()
                           for r in rows[name]])
                      for name in specs},
                  students={})
    for label, path in zip(args.labels, args.student_ckpt):
        summary = {}
        for name, rows in per_batch[label].items():
            summary[name] = {}
            for m in METRICS:
                vals = torch.tensor([r[m] for r in rows])
                summary[name][m] = dict(
                    mean=vals.mean().item(),
                    std=vals.std().item() if len(vals) > 1 else 0.0)
        student_desc = stack(s_pooled[label])
        matrix = [[cka(t, s, centered=True)[0].item() for s in student_desc]
                  for t in teacher_desc]
        report['students'][label] = dict(checkpoint=path, levels=summary,
                                         cross_level_cka=matrix)
    return report


def patch_size_summary(configured: int, sizes, used) -> dict:
    """``patch_sizes`` entry of one level: the loss's (or ``--patch-size``)
    patch, the sorted distinct patch sizes used and teacher map sizes."""
    return dict(configured=configured,
                used=sorted({p for p in used if p is not None}),
                map_sizes=[list(s) for s in sorted(sizes)])


def patch_label(info: dict) -> str:
    """``'4'``, ``'3 (loss 4)'``, ``'2-4 (loss 4)'`` or ``'-'`` (no PCKA)."""
    used = info['used']
    if not used:
        return '-'
    text = str(used[0]) if len(used) == 1 else f'{used[0]}-{used[-1]}'
    if used != [info['configured']]:
        text += f' (loss {info["configured"]})'
    return text


def patch_note(report: dict) -> str:
    """One line per level measured with a smaller patch than its loss's."""
    lines = []
    for name in report['levels']:
        info = report['patch_sizes'][name]
        if info['used'] and info['used'] != [info['configured']]:
            sizes = ', '.join('x'.join(map(str, s))
                              for s in info['map_sizes'])
            maps = 'map' if len(info['map_sizes']) == 1 else 'maps'
            lines.append(
                f'{name}: PCKA measured with patch {patch_label(info)} on '
                f'its {sizes} {maps} (the report caps the patch at half the '
                'shorter side)')
    return '\n'.join(lines)


def format_table(report: dict) -> str:
    labels = list(report['students'])
    head = f'{"level":<12}{"patch":>13}' + ''.join(
        f'{f"{m} [{label}]":>26}' for m in METRICS for label in labels)
    lines = [head, '-' * len(head)]
    for name in report['levels']:
        row = f'{name:<12}{patch_label(report["patch_sizes"][name]):>13}'
        for m in METRICS:
            for label in labels:
                v = report['students'][label]['levels'][name][m]
                row += f'{v["mean"]:>18.3f} ± {v["std"]:<5.3f}'
        lines.append(row)
    return '\n'.join(lines)


def plot(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    labels, levels = list(report['students']), report['levels']
    fig, axes = plt.subplots(len(labels), 2,
                             figsize=(10, 3.6 * len(labels)), squeeze=False)
    for row, label in enumerate(labels):
        data = report['students'][label]
        grid = [[data['levels'][n][m]['mean'] for m in METRICS]
                for n in levels]
        patched = [f'{n} (patch {patch_label(report["patch_sizes"][n])})'
                   for n in levels]
        panels = ((axes[row][0], grid, list(METRICS), patched,
                   f'{label}: similarity to the teacher'),
                  (axes[row][1], data['cross_level_cka'], levels, levels,
                   f'{label}: CKA, teacher level (rows) x student level'))
        for ax, values, xt, yt, title in panels:
            image = ax.imshow(values, vmin=0, vmax=1, cmap='viridis')
            ax.set_xticks(range(len(xt)), xt, rotation=30)
            ax.set_yticks(range(len(yt)), yt)
            for i, line in enumerate(values):
                for j, v in enumerate(line):
                    ax.text(j, i, f'{v:.2f}', ha='center', va='center',
                            color='w' if v < 0.6 else 'k', fontsize=8)
            ax.set_title(title, fontsize=9)
            fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: List[str] = None) -> dict:
    args = parse_args(argv)
    report = collect(args)
    os.makedirs(args.out_dir, exist_ok=True)
    table = format_table(report)
    report['table'] = table
    print(table)
    note = patch_note(report)
    if note:
        print(note)
    with open(osp.join(args.out_dir, 'report.json'), 'w') as f:
        json.dump(report, f, indent=1)
    plot(report, osp.join(args.out_dir, 'cka_report.png'))
    print(f'Report: {args.out_dir}/report.json, {args.out_dir}/'
          'cka_report.png')
    return report


if __name__ == '__main__':
    main()
