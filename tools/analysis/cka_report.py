"""How closely students' FPN features match the teacher's, level by level.

Runs the teacher and one or two students of a distillation config on
validation images and reports, per distilled level, the PCKA intra/inter
similarities (the loss's own ``patch_cka``) and plain linear CKA (positions
as samples), mean and spread over batches; plus a teacher-level x
student-level CKA matrix (images as samples, each level pooled to 4x4).
Writes ``report.json`` and ``cka_report.png``.

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
    parser.add_argument('--num-images', type=int, default=32)
    parser.add_argument('--batch-size', type=int, default=4)
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
    from pcka_det.export import STUDENT_PREFIX
    from pcka_det.models.distiller import state_dict_mismatch
    if not osp.isfile(path):
        raise FileNotFoundError(f'--student-ckpt "{path}" does not exist')
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    state = ckpt.get('state_dict', ckpt)
    if any(k.startswith(STUDENT_PREFIX) for k in state):
        state = {k[len(STUDENT_PREFIX):]: v for k, v in state.items()
                 if k.startswith(STUDENT_PREFIX)}
    problem = state_dict_mismatch(student, state)
    if problem:
        raise RuntimeError(f'--student-ckpt "{path}" does not match the '
                           f'config\'s student: {problem}')
    student.load_state_dict(state)


def level_specs(distiller, default_patch: int) -> Dict[str, tuple]:
    """``name -> (recorder, index, patch_size)`` of every distilled level."""
    from pcka_det.losses import PatchCKALoss
    specs = {}
    for name, (recorder, index) in distiller.loss_mappings.items():
        loss = distiller.distill_losses[name]
        patch = loss.patch_size if isinstance(loss, PatchCKALoss) else \
            default_patch
        specs[name] = (recorder, index, patch)
    return specs


def level_metrics(s: torch.Tensor, t: torch.Tensor, patch: int) -> dict:
    """PCKA intra/inter and plain CKA between two ``(B, C, H, W)`` maps."""
    from pcka_det.losses import cka, patch_cka
    out = {}
    if s.shape[1] == t.shape[1]:
        patch = min(patch, max(1, min(t.shape[2:]) // 2))
        intra, inter = patch_cka(s, t, patch, inter=True)
        out.update(pcka_intra=intra.mean().item(),
                   pcka_inter=inter.mean().item())
    else:  # per-channel similarities need equal widths
        out.update(pcka_intra=float('nan'), pcka_inter=float('nan'))
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
    from pcka_det.compat import allow_mmengine_checkpoints
    from pcka_det.losses import cka
    from pcka_det.models.builder import resolve_config_path
    register_all_modules()
    allow_mmengine_checkpoints()

    cfg = Config.fromfile(resolve_config_path(args.config))
    if cfg.model.get('type') != 'FeatureDistiller':
        raise ValueError(f'{args.config} is not a FeatureDistiller config')
    cfg.model.teacher_ckpt = args.teacher_ckpt
    distiller = MODELS.build(cfg.model).to(args.device).eval()
    specs = level_specs(distiller, args.patch_size)
    students = {}
    for label, path in zip(args.labels, args.student_ckpt):
        load_student_weights(distiller.student, path)
        students[label] = {k: v.clone() for k, v in
                           distiller.student.state_dict().items()}

    loader_cfg = cfg.val_dataloader.copy()
    loader_cfg.batch_size = args.batch_size
    loader = Runner.build_dataloader(loader_cfg)
    per_batch = {label: {name: [] for name in specs} for label in students}
    t_pooled, s_pooled = [], {label: [] for label in students}
    seen = 0
    for batch in loader:
        data = distiller.data_preprocessor(batch, False)
        distiller.teacher_features(data['inputs'])
        t_levels = {n: distiller.teacher_recorders[r].get(i)
                    for n, (r, i, _) in specs.items()}
        t_pooled.append([pooled(f) for f in t_levels.values()])
        for label, state in students.items():
            distiller.student.load_state_dict(state)
            distiller.student.eval()
            distiller.student.extract_feat(data['inputs'])
            s_levels = {n: distiller.student_recorders[r].get(i)
                        for n, (r, i, _) in specs.items()}
            for name, (_, _, patch) in specs.items():
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
                  num_images=seen, levels=list(specs), students={})
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


def format_table(report: dict) -> str:
    labels = list(report['students'])
    head = f'{"level":<12}' + ''.join(
        f'{f"{m} [{label}]":>26}' for m in METRICS for label in labels)
    lines = [head, '-' * len(head)]
    for name in report['levels']:
        row = f'{name:<12}'
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
        panels = ((axes[row][0], grid, list(METRICS), levels,
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
    with open(osp.join(args.out_dir, 'report.json'), 'w') as f:
        json.dump(report, f, indent=1)
    plot(report, osp.join(args.out_dir, 'cka_report.png'))
    print(f'Report: {args.out_dir}/report.json, {args.out_dir}/'
          'cka_report.png')
    return report


if __name__ == '__main__':
    main()
