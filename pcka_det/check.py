"""Pre-flight check of a training config, before days of GPU time.

``python -m pcka_det.check CONFIG`` (or ``tools/check.py``) builds the run
the config describes, on this machine's GPU if it has one, and looks at it
on a few of the config's own images:

* **recipe**: teacher, student, distilled levels with their feature shapes
  and patches at the training scale, losses, optimizer, batch, schedule,
  hooks;
* **teacher**: evaluated with the config's own evaluator on
  ``--num-images`` validation images, next to the student at its
  initialisation; a teacher whose classes differ from the dataset's, or
  whose recall is near zero, fails;
* **one training step**: per level, the loss, its ratio to the detection
  loss and the gradient it sends to the student's neck, against the
  detection loss's; a level at 0 or non-finite, a ratio outside
  :data:`RATIO_BAND`, or a teacher that received gradient, fails;
* **cost**: seconds per iteration and peak memory of the student alone and
  of the distiller on the same batch, the teacher's share, the projected
  time of the schedule.

It prints a table, writes the same as JSON (``--out``) and exits 1 when a
check fails. Nothing is written into the config's work dir.

Example:
    python -m pcka_det.check configs/pcka/retina_r101_r50.py
    python -m pcka_det.check my_distill.py --num-images 20 --out check.json
"""
import argparse
import contextlib
import copy
import io
import json
import logging
import math
import sys
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.evaluator import Evaluator
from mmengine.logging import MMLogger
from mmengine.registry import HOOKS, init_default_scope
from mmengine.runner import Runner, set_random_seed
from torch import Tensor, nn

from mmdet.registry import MODELS
from .benchmark import RELIABLE_SPREAD, measure_rounds
from .checkpoint import load_weights
from .cli import prepare_cfg
from .datasets import padded_training_scale, validate_dataloaders
from .evaluation import evaluate, ground_truth, published_box_ap
from .rng import rng_state, set_rng_state
from .engine.runner import unscaled_batch
from .fileio import atomic_write_text
from .models import (FeatureDistiller, get_module, head_num_classes,
                     smaller_teacher_warning)
from .options import command_contract, parse_command

# A level's distillation loss divided by the detection loss, at the first
# step, outside which the check fails. 1 means the level pulls as hard as
# the detection loss; the band spans a factor of 20 either side of it: it
# catches a weight off by more than an order of magnitude (a unit or a
# scale mistake), where one side drowns the other. Finer tuning is not its
# job (README, "Distil your own detector", says what it misses).
RATIO_BAND = (0.05, 20.0)
# Recall at IoU 0.5 below which the teacher is not a trained detector for
# this dataset (a trained one finds most objects; a random head none).
MIN_TEACHER_RECALL = 0.05
FAIL, WARN, OK = 'FAIL', 'WARN', 'ok'


class Report:
    """What the check found: sections of facts and a list of verdicts."""

    def __init__(self, config: str) -> None:
        self.data: Dict = dict(config=config, verdicts=[])

    def verdict(self, check: str, status: str, message: str) -> None:
        """Record one verdict (``FAIL``, ``WARN`` or ``ok``)."""
        self.data['verdicts'].append(
            dict(check=check, status=status, message=message))

    @property
    def failed(self) -> List[dict]:
        """The FAIL verdicts so far."""
        return [v for v in self.data['verdicts'] if v['status'] == FAIL]

    def __setitem__(self, key: str, value) -> None:
        self.data[key] = value


# ----------------------------------------------------------------- helpers


def grad_norm(loss: Tensor, params: List[nn.Parameter]) -> float:
    """L2 norm of the gradient ``loss`` alone sends to ``params``."""
    if not isinstance(loss, Tensor) or not loss.requires_grad:
        return 0.
    grads = torch.autograd.grad(loss, params, retain_graph=True,
                                allow_unused=True)
    return math.sqrt(sum(float(g.float().pow(2).sum())
                         for g in grads if g is not None))


def _loader(cfg: Config, name: str):
    loader = cfg[name].copy()
    # a few batches: no worker processes to start
    loader.update(num_workers=0, persistent_workers=False)
    return Runner.build_dataloader(
        loader, seed=cfg.get('randomness', {}).get('seed') or 0)


def _type_name(cfg) -> str:
    kind = cfg.get('type', '?') if isinstance(cfg, dict) else cfg
    return kind if isinstance(kind, str) else getattr(kind, '__name__',
                                                      str(kind))


def _loss_text(loss: nn.Module) -> str:
    parts = [type(loss).__name__]
    for attr in ('intra_weight', 'inter_weight', 'loss_weight', 'tau',
                 'patch_size', 'cls_weight', 'giou_weight', 'ld_weight'):
        value = getattr(loss, attr, None)
        if value is not None and not (attr == 'loss_weight' and value == 1):
            parts.append(f'{attr.replace("_weight", "")} {value:g}')
    return ' '.join(parts)


# ----------------------------------------------------------------- sections


def check_recipe(report: Report, cfg: Config, model: nn.Module,
                 train_len: int, gpus: Optional[int]) -> None:
    """Fill ``report['recipe']``: models and checkpoints, optimizer, batch
    per GPU x GPUs, schedule (its ``iterations`` in all), hooks.

    Args:
        report (Report): The report to fill.
        cfg (Config): The full config.
        model (nn.Module): The built model (a distiller or a detector).
        train_len (int): Images of the training set.
        gpus (int, optional): GPUs of the real run; default from
            ``auto_scale_lr.base_batch_size`` (else 1).
    """
    loader = cfg.train_dataloader
    batch = int(loader.batch_size)
    scale_lr = cfg.get('auto_scale_lr') or {}
    gpus_from = '--gpus'
    if gpus is None:
        base = scale_lr.get('base_batch_size')
        gpus = max(1, int(base) // batch) if base else 1
        gpus_from = (f'as auto_scale_lr.base_batch_size {base} / {batch} per '
                     'GPU assumes; --gpus N for yours' if base else
                     'default; --gpus N for yours')
    train_cfg = cfg.get('train_cfg') or {}
    per_epoch = math.ceil(train_len / (batch * gpus))
    if 'max_iters' in train_cfg:
        iters = int(train_cfg.max_iters)
        schedule = f'{iters} iterations'
    else:
        epochs = int(train_cfg.get('max_epochs', 1))
        iters = epochs * per_epoch
        schedule = (f'{epochs} epochs x {per_epoch} iterations '
                    f'({train_len} images) = {iters} iterations')
    optim = cfg.optim_wrapper.get('optimizer', {})
    hooks = [_type_name(h) for h in cfg.get('custom_hooks') or []]
    if isinstance(model, FeatureDistiller):
        hooks.append('ExportStudentHook (DistillRunner)')
    recipe = dict(
        optimizer=f'{_type_name(optim)} lr {optim.get("lr")}',
        batch=f'{batch} per GPU x {gpus} GPU{"s" if gpus != 1 else ""} '
        f'({gpus_from}) = '
        f'{batch * gpus} images',
        auto_scale_lr=(f'base_batch_size {scale_lr.get("base_batch_size")}, '
                       f'{"on" if scale_lr.get("enable") else "off"}')
        if scale_lr else 'not set',
        schedule=schedule,
        hooks=', '.join(hooks) or 'none',
        iterations=iters,
        gpus=gpus)
    if isinstance(model, FeatureDistiller):
        spec = cfg.model
        recipe.update(
            teacher=f'{spec.teacher.get("cfg_path", _type_name(spec.teacher))}'
            f' <- {spec.get("teacher_ckpt")}',
            student=spec.student.get('cfg_path', _type_name(spec.student))
            + (f' <- {spec.student_ckpt}' if spec.get('student_ckpt')
               else ''))
    else:
        recipe.update(student=_type_name(cfg.model), teacher='none (not a '
                      'distillation config)')
    report['recipe'] = recipe
    if gpus_from == '--gpus':
        problem = unscaled_batch(batch, gpus, scale_lr)
        if problem:
            report.verdict('recipe lr', WARN, problem)


def check_levels(report: Report, cfg: Config,
                 model: FeatureDistiller) -> bool:
    """The distiller's pre-flight at the padded training scale: fills
    ``report['levels']`` (shapes, patches, connector per level).

    Args:
        report (Report): The report to fill.
        cfg (Config): The full config.
        model (FeatureDistiller): The distiller.

    Returns:
        bool: Every level is paired (False: a FAIL verdict was added).
    """
    size, source = padded_training_scale(cfg, model.data_preprocessor)
    report['training_scale'] = dict(size=list(size), source=source)
    try:
        levels = model.preflight(size)
    except (ValueError, IndexError) as e:
        report.verdict('levels', FAIL, str(e))
        return False
    for level in levels:
        key = level.get('level', level['name'])  # a head level's rows
        level['loss'] = _loss_text(model.distill_losses[key])
        level['connector'] = type(model.connectors[key]).__name__ \
            if key in model.connectors else None
    report['levels'] = levels
    if 'assumed' in source:
        report.verdict('levels', WARN, f'{source}: the levels were checked '
                       f'at {size[0]}x{size[1]}. If your images are '
                       'smaller, add the Resize your data needs to the '
                       'training pipeline.')
    report.verdict('levels', OK, f'{len(levels)} levels paired at '
                   f'{size[0]}x{size[1]}, each with >= 2 patches where the '
                   'loss has patches')
    return True


def check_teacher(report: Report, cfg: Config, model: nn.Module,
                  classes: Sequence[str], num_images: int) -> None:
    """The teacher's classes against the dataset's, and the teacher and
    the student evaluated (:func:`evaluate`); fills
    ``report['evaluation']`` and adds the teacher's verdicts.

    Args:
        report (Report): The report to fill.
        cfg (Config): The full config.
        model (nn.Module): A distiller (a plain detector: the student only).
        classes (Sequence[str]): The training set's classes.
        num_images (int): Validation images to evaluate on (0: none).
    """
    distiller = isinstance(model, FeatureDistiller)
    if distiller:
        counts = head_num_classes(model.teacher)
        if counts and counts != [len(classes)]:
            report.verdict(
                'teacher classes', FAIL,
                f'the teacher\'s heads predict {counts} classes, the '
                f'dataset has {len(classes)} ({list(classes)[:6]}...): '
                'the checkpoint is for another dataset, or the teacher '
                'config\'s num_classes / the dataset\'s metainfo.classes is '
                'wrong.')
        swapped = smaller_teacher_warning(model.teacher, model.student)
        if swapped:
            report.verdict('teacher size', WARN,
                           swapped.replace('swapped?', 'swapped '
                                           '(model.teacher / model.student)?'))
        names = model.frozen_teacher.checkpoint_classes
        if names is not None and list(names) != list(classes):
            differ = [(i, a, b) for i, (a, b) in enumerate(
                zip(names, classes)) if a != b][:3]
            report.verdict(
                'teacher classes', FAIL,
                f'the teacher checkpoint was trained on classes {names[:6]}'
                f'{"..." if len(names) > 6 else ""} ({len(names)}), the '
                f'dataset\'s are {list(classes)[:6]}'
                f'{"..." if len(classes) > 6 else ""} ({len(classes)}); '
                f'first differences {differ}. Set metainfo.classes in the '
                'same order as the teacher was trained with, or use a '
                'teacher trained on this dataset.')
    skip = ('--num-images is 0' if num_images <= 0 else
            'the config has no val_dataloader' if not cfg.get(
                'val_dataloader') else 'the config has no val_evaluator'
            if not cfg.get('val_evaluator') else None)
    if skip:
        report.verdict('teacher', WARN, f'not evaluated: {skip}')
        return
    loader = _loader(cfg, 'val_dataloader')
    evaluator = Evaluator(cfg.val_evaluator)
    evaluator.dataset_meta = loader.dataset.metainfo
    gt = ground_truth(loader.dataset, num_images + loader.batch_size)
    results = {}
    if distiller:
        frozen = model.frozen_teacher
        dtype = frozen.dtype
        frozen.model.float()  # its own preprocessor, in full precision
        try:
            results['teacher'] = evaluate(model.teacher, loader, evaluator,
                                          num_images, gt)
        finally:
            frozen.model.to(dtype=dtype)
            frozen.model.eval()
    student = model.student if distiller else model
    results['student (initialisation)'] = evaluate(
        student, loader, evaluator, num_images, gt)
    report['evaluation'] = results
    if not distiller:
        return
    found = results['teacher']
    if found['objects'] == 0:
        report.verdict('teacher', WARN, f'the first {found["images"]} '
                       'validation images hold no object; recall unknown')
    elif found['recall'] < MIN_TEACHER_RECALL:
        hint = ''
        # most objects found, but with other classes: a random head does
        # not do that (a random Faster R-CNN's boxes find a third)
        if found['recall_any_class'] >= 0.5:
            hint = (f' It finds {found["recall_any_class"]:.0%} of them '
                    'with a wrong class: the class order of the checkpoint '
                    'and of metainfo.classes likely differ.')
        report.verdict(
            'teacher', FAIL,
            f'the teacher finds {found["recall"]:.1%} of the '
            f'{found["objects"]} objects in {found["images"]} validation '
            f'images (IoU 0.5; a trained detector finds most, the check '
            f'fails below {MIN_TEACHER_RECALL:.0%}): it is not a trained '
            'detector for this data. Likely causes: teacher_ckpt is a '
            'random or an ImageNet-only checkpoint, a checkpoint for another '
            'dataset, a wrong metainfo.classes, or a data_preprocessor '
            '(mean/std, bgr_to_rgb) other than the one it was trained with.'
            + hint)
    else:
        report.verdict('teacher', OK, f'recall {found["recall"]:.0%} of '
                       f'{found["objects"]} objects at IoU 0.5 on '
                       f'{found["images"]} images')
    teacher_ap_verdict(report, found, cfg.model.get('teacher_ckpt'))


def teacher_ap_verdict(report: Report, found: Dict,
                       teacher_ckpt: Optional[str]) -> None:
    """The teacher's measured box AP beside the AP mmdet's model zoo lists
    for its checkpoint URL (:func:`published_box_ap`); a WARN when it is
    below half of it: preprocessing (mean/std, bgr_to_rgb), the data or the
    class order differ from the teacher's training.

    Args:
        report (Report): The report to add to.
        found (dict): The teacher's :func:`evaluate` result.
        teacher_ckpt (str, optional): The teacher checkpoint.
    """
    published = published_box_ap(teacher_ckpt)
    metrics = found.get('metrics')
    if published is None or metrics is None or 'error' in metrics:
        return
    # mmdet's CocoMetric reports no AP at all when nothing was detected
    measured = metrics.get('coco/bbox_mAP', 0.0)
    if not isinstance(measured, (int, float)):
        return
    name, ap = published
    measured = 100 * measured
    found['published_box_ap'] = dict(model=name, box_ap=ap)
    text = (f'box AP {measured:.1f} on {found["images"]} images, the model '
            f'zoo lists {ap:.1f} for {name} on COCO val')
    if measured < ap / 2:
        report.verdict(
            'teacher AP', WARN, text + ': far below it points to the '
            'preprocessing (data_preprocessor mean/std, bgr_to_rgb), the '
            'data or the class order differing from the teacher\'s '
            'training (on few images the AP is noisy: --num-images more).')
    else:
        report.verdict('teacher AP', OK, text)


def level_verdict(loss: float, ratio: float, nonfinite: bool
                  ) -> Optional[str]:
    """What is wrong with one level at the first step, or None.

    Args:
        loss (float): The level's distillation loss.
        ratio (float): ``loss`` / the detection loss.
        nonfinite (bool): The distiller found the loss NaN/Inf (and, with
            ``nonfinite='skip'``, zeroed it).

    Returns:
        str, optional: The problem, in words.
    """
    low, high = RATIO_BAND
    if nonfinite or not math.isfinite(loss):
        return ('the loss is NaN/Inf: the level would be skipped every step '
                '(nonfinite=skip) or stop the run (raise). Look for an '
                'all-zero channel or an fp16 overflow in its features.')
    if loss == 0:
        return ('the loss is 0 at the first step: the level trains nothing '
                '(its weights are 0, or student and teacher features '
                'already agree: a shared module, or the same recorder read '
                'twice).')
    if not low <= ratio <= high:
        return (f'the loss is {ratio:.3g}x the detection loss, outside '
                f'[{low:g}, {high:g}] (pcka_det.check.RATIO_BAND, 20x either '
                'side of an equal pull): ' + (
                    'its weight is too small to change the student; raise '
                    'it.' if ratio < low else
                    'it drowns the detection loss (and, with gradient '
                    'clipping, shrinks its gradient); lower its weight.'))
    return None


def head_level_modules(conv: int) -> List[str]:
    """The student modules a head level's gradient enters by: its head
    convs up to conv ``conv`` in both towers, or the neck for 0."""
    if conv == 0:
        return ['neck']
    return [f'bbox_head.{tower}.{j}' for tower in ('cls_convs', 'reg_convs')
            for j in range(conv)]


def check_step(report: Report, model: FeatureDistiller, data: dict) -> None:
    """One training step's losses and the gradients they send to the
    student's distilled modules (the recorded ones: the neck, usually; a
    head level's: its head convs up to conv k), per level; fills
    ``report['step']`` and adds a verdict per broken level
    (:func:`level_verdict`) or for a teacher that received gradient. A
    head level has a row per term (``<name>_cls_p3``, ...) and one for
    their sum (``<name>``), which the ratio band judges; a non-finite term
    fails on its own.

    Args:
        report (Report): The report to fill.
        model (FeatureDistiller): The distiller, in its training state.
        data (dict): A preprocessed batch (``inputs``, ``data_samples``).
    """
    model.train()
    # the modules whose outputs are distilled (the neck, usually; for a
    # head level the student's head convs up to conv k): where the
    # distillation gradient enters the student and meets the detection
    # loss's (further back it is only mixed, and costs a backward through
    # the backbone per level)
    recorded = dict.fromkeys(
        path for level in model.levels.values()
        for path in (head_level_modules(level.head_conv) if level.is_head
                     else [model.student_recorders[level.recorder].source]))
    params = list(dict.fromkeys(
        p for path in recorded
        for p in get_module(model.student, path, 'student').parameters()
        if p.requires_grad))
    model.zero_grad(set_to_none=True)
    same = _same_weights(model.student, model.teacher)
    if same:
        report.verdict(
            'step self-distillation', WARN,
            'teacher and student are the same network with the same '
            'weights: every level\'s loss is (near) 0 at the start by '
            'construction, and raising its weight does not change that. '
            'Self-distillation only teaches once the student moves; '
            'distil from a stronger teacher to gain.')
    losses = model.loss(data['inputs'], data['data_samples'])
    nonfinite = model.nonfinite_streaks()  # zeroed by nonfinite='skip'
    # every term (a feature level; a head level's per-FPN-level terms)
    keys = {term: key for term, (_, key) in model.terms.items()}
    # the detection terms, summed as the optimizer step sums them
    det = model.parse_losses({k: v for k, v in losses.items()
                              if k not in keys.values()})[0]
    det_value = float(det.detach())
    det_grad = grad_norm(det, params)
    rows = [dict(name='detection', loss=det_value, ratio=1.0,
                 grad=det_grad, grad_ratio=1.0)]

    def row(name, value):
        loss = float(value.detach())
        grad = grad_norm(value, params)
        ratio = loss / det_value if det_value else math.inf
        rows.append(dict(name=name, loss=loss, ratio=ratio, grad=grad,
                         grad_ratio=grad / det_grad if det_grad else math.inf))
        return loss, ratio

    def verdict(name, level, loss, ratio, bad):
        problem = level_verdict(loss, ratio, bad)
        if problem and same and not bad:
            problem = None  # 0 by construction, said once below
        if problem:
            weight = _weight_key(model.distill_losses[level])
            report.verdict(f'step {name}', FAIL, f'loss {loss:.4g} '
                           f'(detection {det_value:.4g}): {problem}'
                           + (f' (model.distill_losses.{level}.loss.{weight})'
                              if weight and 'weight' in problem else ''))

    for name, level in model.levels.items():
        if not level.is_head:
            loss, ratio = row(name, losses[keys[name]])
            verdict(name, name, loss, ratio, nonfinite.get(name, 0) > 0)
            continue
        # a head level: a row per term, then its sum, which the ratio band
        # judges (one FPN level's share may be small by nature)
        terms = [t for t, (lv, _) in model.terms.items() if lv == name]
        for term in terms:
            loss, ratio = row(term, losses[keys[term]])
            if nonfinite.get(term, 0) or not math.isfinite(loss):
                verdict(term, name, loss, ratio, True)
        loss, ratio = row(name, sum(losses[keys[t]] for t in terms))
        verdict(name, name, loss, ratio, any(
            nonfinite.get(t, 0) for t in terms))
    distill = sum(losses[k] for k in keys.values())
    total = float(distill.detach())
    grad = grad_norm(distill, params)
    rows.append(dict(name='all distillation', loss=total,
                     ratio=total / det_value if det_value else math.inf,
                     grad=grad,
                     grad_ratio=grad / det_grad if det_grad else math.inf))
    # a teacher parameter that requires grad is trained (or keeps its
    # activations) every step
    touched = sorted(n for n, p in model.teacher.named_parameters()
                     if p.requires_grad or p.grad is not None)
    if touched:
        report.verdict('step teacher', FAIL,
                       f'the teacher received gradient ({touched[:3]}...): '
                       'it would be trained, or its memory kept, every step.')
    model.zero_grad(set_to_none=True)
    report['step'] = rows
    if not any(v['check'].startswith('step') for v in report.failed):
        report.verdict('step', OK, 'every level has a finite, non-zero '
                       f'loss within {RATIO_BAND[0]:g}-{RATIO_BAND[1]:g}x '
                       'the detection loss')


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models have the same parameter names, shapes and
    values."""
    own, theirs = a.state_dict(), b.state_dict()
    return own.keys() == theirs.keys() and all(
        own[k].shape == theirs[k].shape and
        torch.equal(own[k].float(), theirs[k].float().to(own[k].device))
        for k in own)


def _weight_key(loss: nn.Module) -> Optional[str]:
    """The argument that weights a distillation loss."""
    for key in ('intra_weight', 'loss_weight', 'cls_weight'):
        if getattr(loss, key, None) is not None:
            return key
    return None


def check_cost(report: Report, model: nn.Module, data: dict,
               device: torch.device, iters: int) -> None:
    """Seconds per iteration of the student alone, the distiller and the
    teacher's forward on the same batch, timed interleaved in rounds
    (:func:`~pcka_det.benchmark.measure_rounds`), peak memory per run on a
    GPU, and the schedule's projected time; fills ``report['cost']``.

    Args:
        report (Report): The report to fill (its recipe first).
        model (nn.Module): A distiller or a plain detector.
        data (dict): A preprocessed batch (``inputs``, ``data_samples``).
        device (torch.device): Where the model runs.
        iters (int): Timed rounds, after one warm-up of each run.
    """
    inputs, samples = data['inputs'], data['data_samples']
    distiller = isinstance(model, FeatureDistiller)
    student = model.student if distiller else model
    model.train()

    def step(fn):
        def run():
            model.parse_losses(fn(inputs, samples))[0].backward()
            model.zero_grad(set_to_none=True)
        return run

    runs = {'student alone': step(student.loss)}
    if distiller:
        runs['distiller'] = step(model.loss)

        def teacher_only():
            with model.recording():
                feats = model.teacher_features(inputs, samples)
                if model.cross_head is not None:  # a head level's too
                    model.teacher_head(feats)
        runs['teacher forward'] = teacher_only
    found = measure_rounds(runs, iters, device)
    rows = {name: dict(seconds=r['time'], spread=r['spread'],
                       peak_mib=None if r['peak'] is None
                       else r['peak'] / 2**20)
            for name, r in found['runs'].items()}
    main = rows['distiller' if distiller else 'student alone']['seconds']
    recipe = report.data['recipe']
    schedule_iters = recipe['iterations']
    cost = dict(device=str(device), iterations_timed=iters,
                batch=len(samples), rows=rows,
                unreliable=found['unreliable'],
                projected_hours=main * schedule_iters / 3600,
                projected=f'{schedule_iters} iterations x {main:.3g} s = '
                f'{_duration(main * schedule_iters)} at this '
                f'{device.type.upper()}\'s speed ({recipe["gpus"]} GPU'
                f'{"s" if recipe["gpus"] != 1 else ""}, '
                'validation not counted)')
    if distiller:
        cost['overhead'] = main / rows['student alone']['seconds']
        cost['teacher_share'] = rows['teacher forward']['seconds'] / main
    report['cost'] = cost


def cost_notes(cost: dict) -> List[str]:
    """What the cost figures can be trusted for: the ratios, the teacher's
    share (never a part larger than its whole without the reason) and the
    projection, with the spreads that make them unreliable.

    Args:
        cost (dict): ``report['cost']`` (:func:`check_cost`).

    Returns:
        list[str]: Lines for the report.
    """
    out = []
    if 'overhead' in cost:
        out.append(f'distiller / student {cost["overhead"]:.2f}x; teacher '
                   f'forward {cost["teacher_share"]:.0%} of a distiller '
                   'iteration')
        if cost['teacher_share'] > 1:
            out.append(
                'the teacher\'s forward timed longer than the distiller '
                'iteration that contains it: the machine\'s load changed '
                'between runs; the ratios above are not reliable')
    out.append(f'projected: {cost["projected"]}')
    unreliable = cost.get('unreliable') or []
    if unreliable:
        spreads = ', '.join(
            f'{name} {cost["rows"][name]["spread"]:.0%}'
            for name in unreliable)
        out.append(
            f'unreliable: slowest and fastest round differ by more than '
            f'{RELIABLE_SPREAD:.0%} of the median ({spreads}); another job '
            'is likely sharing this machine: rerun when it is idle, or with '
            'more --iters')
    return out


# ----------------------------------------------------------------- report


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f'{seconds / 60:.1f} min'
    if seconds < 3 * 86400:
        return f'{seconds / 3600:.1f} h'
    return f'{seconds / 86400:.1f} days'


def _shape(shape) -> str:
    return 'x'.join(map(str, shape)) if shape else '-'


def render(data: dict) -> str:
    """The report as the table ``pcka_det.check`` prints."""
    out = [f'pcka_det.check {data["config"]}  ({data.get("device", "?")})']

    def table(title, header, rows):
        rows = [[str(c) for c in r] for r in rows]
        widths = [max(len(r[i]) for r in [header] + rows)
                  for i in range(len(header))]
        out.append('')
        out.append(title)
        for r in ([header] if any(header) else []) + rows:
            out.append('  ' + '  '.join(c.ljust(w) for c, w in
                                        zip(r, widths)).rstrip())

    if 'recipe' in data:
        keys = ('teacher', 'student', 'optimizer', 'batch', 'auto_scale_lr',
                'schedule', 'hooks')
        table('Recipe', ['', ''], [[k, data['recipe'][k]] for k in keys])
    if 'levels' in data:
        scale = data['training_scale']
        table(f'Levels at the training scale {scale["size"][0]}x'
              f'{scale["size"][1]} ({scale["source"]})',
              ['level', 'loss', 'student', 'teacher', 'patches',
               'connector'],
              [[lv['name'], lv['loss'], _shape(lv['student']),
                _shape(lv['teacher']), lv['patches'] if lv['patches']
                is not None else '-', lv['connector'] or '-']
               for lv in data['levels']])
    if 'evaluation' in data:
        rows = []
        for name, r in data['evaluation'].items():
            metrics = ', '.join(f'{k.split("/")[-1]} {v}' for k, v in
                                list(r['metrics'].items())[:3]) or '-'
            rows.append([name, r['images'], f'{r["recall"]:.3f}',
                         f'{r["recall_any_class"]:.3f}', metrics])
        table('Evaluation (recall: objects found at IoU 0.5)',
              ['model', 'images', 'recall', 'any class', 'metrics'], rows)
    if 'step' in data:
        table('One training step (ratios to the detection loss; gradient '
              'norms at the student\'s recorded modules)',
              ['term', 'loss', 'ratio', 'grad norm', 'grad ratio'],
              [[r['name'], f'{r["loss"]:.4g}', f'{r["ratio"]:.3g}',
                f'{r["grad"]:.3g}', f'{r["grad_ratio"]:.3g}']
               for r in data['step']])
    if 'cost' in data:
        cost = data['cost']
        rows = [[name, f'{r["seconds"]:.3g}', f'{r["spread"]:.0%}',
                 '-' if r['peak_mib'] is None else f'{r["peak_mib"]:.0f}']
                for name, r in cost['rows'].items()]
        table(f'Cost on {cost["device"]}, batch {cost["batch"]}: median of '
              f'{cost["iterations_timed"]} interleaved rounds after a '
              'warm-up (spread: slowest - fastest round, of the median); '
              + ('peak memory allocated above the model\'s, in the warm-up'
                 if cost['device'].startswith('cuda') else 'peak memory: on '
                 'a GPU only; on a CPU see tools/benchmark/benchmark_overhead.py'),
              ['run', 's/iter', 'spread', 'peak MiB'], rows)
        out.extend(f'  {line}' for line in cost_notes(cost))
    table('Verdicts', ['', 'check', ''],
          [[v['status'], v['check'], v['message']] for v in data['verdicts']])
    fails = sum(v['status'] == FAIL for v in data['verdicts'])
    warns = sum(v['status'] == WARN for v in data['verdicts'])
    out.append('')
    out.append(f'{"FAILED" if fails else "PASSED"}: {fails} failed, '
               f'{warns} warnings')
    return '\n'.join(out)


# ----------------------------------------------------------------- CLI


def run_check(config: str,
              cfg_options: Optional[dict] = None,
              num_images: int = 50,
              iters: int = 3,
              gpus: Optional[int] = None,
              device: Optional[str] = None) -> dict:
    """Run every check of the module docstring on ``config``.

    Args:
        config (str): Config path (``pcka_det::``/``mmdet::`` scopes work).
        cfg_options (dict, optional): ``--cfg-options`` overrides.
        num_images (int): Validation images the teacher and the student are
            evaluated on (0 skips the evaluation).
        iters (int): Iterations timed per cost row (0 skips the cost).
        gpus (int, optional): GPUs of the real run, for the batch and the
            projected time; default from ``auto_scale_lr``.
        device (str, optional): ``cuda``/``cpu``; default the GPU if any.

    Returns:
        dict: The report (``verdicts``: list of ``check``/``status``/
        ``message``; ``FAIL`` in any means the run should not start).
    """

    report = Report(config)
    device = torch.device(device or ('cuda' if torch.cuda.is_available()
                                     else 'cpu'))
    report['device'] = str(device)
    state = rng_state()
    try:
        _run_sections(report, config, cfg_options, num_images, iters, gpus,
                      device)
    finally:
        # the run's seed was set for the step's batch and the student's
        # initialisation; the caller's random streams are given back
        set_rng_state(state)
    return report.data


class _Stop(Exception):
    """A section failed in a way the later ones depend on."""


def _section(report: Report, check: str):
    """Context turning an exception of a section into a FAIL verdict named
    ``check`` (what training would raise, reported instead of a
    traceback); the run then stops."""

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except _Stop:
            raise
        except Exception as e:  # noqa: BLE001
            report.verdict(check, FAIL, f'{type(e).__name__}: {e}')
            raise _Stop from e

    return guard()


def _run_sections(report: Report, config: str, cfg_options, num_images: int,
                  iters: int, gpus: Optional[int],
                  device: torch.device) -> None:
    try:
        with _section(report, 'config'):
            cfg = prepare_cfg(config, cfg_options)
            init_default_scope(cfg.get('default_scope', 'mmdet'))
            for hook in cfg.get('custom_hooks') or []:
                HOOKS.build(copy.deepcopy(hook))
        names = ['train_dataloader']
        if cfg.get('val_dataloader'):
            names.append('val_dataloader')
        with _section(report, 'data'):
            for message in validate_dataloaders(cfg, names, log=False):
                report.verdict('data', WARN, message)
        with _section(report, 'build'):
            set_random_seed(cfg.get('randomness', {}).get('seed') or 0)
            model = MODELS.build(cfg.model)
            model.init_weights()
            if cfg.get('load_from'):
                load_weights(model, cfg.load_from)
            model.to(device)
        distiller = isinstance(model, FeatureDistiller)
        with _section(report, 'data'):
            train_loader = _loader(cfg, 'train_dataloader')
            batch = next(iter(train_loader))
        classes = train_loader.dataset.metainfo.get('classes') or ()
        check_recipe(report, cfg, model, len(train_loader.dataset), gpus)
        with _section(report, 'levels'):
            paired = check_levels(report, cfg, model) if distiller else True
        with _section(report, 'teacher'):
            check_teacher(report, cfg, model, classes, num_images)
        if not paired:
            return
        data = model.data_preprocessor(batch, True)
        if distiller:
            with _section(report, 'step'):
                check_step(report, model, data)
        if iters > 0:
            with _section(report, 'cost'):
                check_cost(report, model, data, device, iters)
    except _Stop:
        return


def _strict_json(obj):
    """``obj`` with NaN/Inf floats as strings (strict JSON has neither)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict_json(v) for v in obj]
    return obj


def build_parser() -> argparse.ArgumentParser:
    """The check's flags."""
    parser = argparse.ArgumentParser(
        description='Check a (distillation) training config before '
        'training: recipe, teacher quality, one step, cost.')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--num-images', type=int, default=50,
                        help='validation images to evaluate the teacher and '
                        'the student on, at least (whole batches; 0: skip)')
    parser.add_argument('--iters', type=int, default=3,
                        help='iterations timed per cost row (0: skip)')
    parser.add_argument('--gpus', type=int, default=None,
                        help='GPUs of the real run (default: from '
                        'auto_scale_lr.base_batch_size, else 1)')
    parser.add_argument('--device', default=None,
                        help='cuda or cpu (default: the GPU if any)')
    parser.add_argument('--out', help='also write the report as JSON here')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, as tools/train.py does')
    return parser


CONTRACT = command_contract(
    'pcka_det.check', build_parser(),
    'Check a training config before training (tools/check.py): recipe, '
    'teacher quality, one step, cost; exit 1 on a FAIL.',
    bounds={'--num-images': (0, None), '--iters': (0, None),
            '--gpus': (1, None)})


def parse_args(argv=None) -> argparse.Namespace:
    return parse_command(build_parser(), 'pcka_det.check', argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # the report is the output: MMEngine's initialisation and dataset
    # chatter (INFO, pycocotools' prints) stay out of it, warnings do not
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            data = run_check(args.config, args.cfg_options, args.num_images,
                             args.iters, args.gpus, args.device)
    finally:
        logger.setLevel(level)
    print(render(data))
    if args.out:
        atomic_write_text(args.out, json.dumps(_strict_json(data),
                                               indent=2, default=str))
    return 1 if any(v['status'] == FAIL for v in data['verdicts']) else 0


if __name__ == '__main__':
    sys.exit(main())
