"""How well a detector finds the objects of a few images: recall of the
ground truth (telling a trained detector from a random one) beside the
config's own evaluator, on the first images of a loader. Used by
``pcka_det.check`` on the teacher and the student."""
import contextlib
import functools
import io
import logging
from typing import Dict, Optional, Tuple

import torch
from mmengine.logging import MMLogger
from torch import Tensor, nn

from mmdet.structures.bbox import bbox_overlaps


def box_recall(gt_boxes: Tensor, gt_labels: Tensor, boxes: Tensor,
               labels: Tensor, iou: float = 0.5) -> Dict[str, int]:
    """Ground-truth objects of one image found by a detection.

    Args:
        gt_boxes (Tensor): ``(G, 4)`` ground truth, x1y1x2y2.
        gt_labels (Tensor): ``(G,)`` their classes.
        boxes (Tensor): ``(D, 4)`` detections, same coordinates.
        labels (Tensor): ``(D,)`` their classes.
        iou (float): IoU at which a detection finds an object.

    Returns:
        dict: ``objects`` (G), ``found`` (objects overlapped at ``iou`` by a
        detection of their class) and ``found_any_class`` (by any
        detection). One detection may find several objects: a recall for
        telling a detector from a random one, not COCO's matching.
    """
    result = dict(objects=len(gt_boxes), found=0, found_any_class=0)
    if len(gt_boxes) == 0 or len(boxes) == 0:
        return result
    overlap = bbox_overlaps(gt_boxes.float(), boxes.float()) >= iou
    same = gt_labels.view(-1, 1) == labels.view(1, -1)
    result['found'] = int((overlap & same).any(1).sum())
    result['found_any_class'] = int(overlap.any(1).sum())
    return result


def evaluate(detector: nn.Module, loader, evaluator, num_images: int,
             gt: Dict) -> Dict:
    """Metrics of ``detector`` on the first ``num_images`` images of
    ``loader`` (whole batches), plus the recall of :func:`box_recall`.

    Args:
        detector (nn.Module): A detector (its own preprocessor runs).
        loader (DataLoader): The validation loader.
        evaluator (Evaluator): The config's evaluator, ``dataset_meta`` set.
        num_images (int): Images to run, at least.
        gt (dict): :func:`ground_truth` of the loader's dataset.

    Returns:
        dict: ``images``, ``objects``, ``recall``, ``recall_any_class``
        and the evaluator's ``metrics``.
    """
    detector.eval()
    counts = dict(objects=0, found=0, found_any_class=0)
    seen, img_ids = 0, []
    with torch.no_grad():
        for batch in loader:
            outputs = detector.test_step(batch)
            evaluator.process(data_samples=outputs, data_batch=batch)
            for sample in outputs:
                img_ids.append(sample.img_id)
                boxes, labels = gt.get(sample.img_id, (None, None))
                if boxes is None:
                    continue
                pred = sample.pred_instances
                found = box_recall(boxes, labels, pred.bboxes.cpu(),
                                   pred.labels.cpu())
                for key in counts:
                    counts[key] += found[key]
            seen += len(outputs)
            if seen >= num_images:
                break
    logger = MMLogger.get_current_instance()
    level = logger.level
    # the evaluator's own tables and its "results are empty" error: the
    # report shows the metrics, and no detection at all is the recall's job
    logger.setLevel(logging.CRITICAL)
    for metric in evaluator.metrics:
        if hasattr(metric, 'img_ids'):
            # CocoMetric scores every image of its annotation file unless
            # told which: the objects of images not run would count as
            # missed
            metric.img_ids = img_ids
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            metrics = evaluator.evaluate(seen)
    except Exception as e:  # noqa: BLE001  (reported, not fatal)
        metrics = dict(error=f'{type(e).__name__}: {e}')
    finally:
        logger.setLevel(level)
    objects = max(counts['objects'], 1)
    return dict(images=seen, objects=counts['objects'],
                recall=counts['found'] / objects,
                recall_any_class=counts['found_any_class'] / objects,
                metrics={k: round(v, 4) if isinstance(v, float) else v
                         for k, v in metrics.items()})


def ground_truth(dataset, limit: int) -> Dict:
    """The ground truth of the first ``limit`` images, from the dataset's
    own annotations (original image coordinates, ignored boxes left out).

    Args:
        dataset (BaseDataset): The validation dataset.
        limit (int): Images to read.

    Returns:
        dict: ``img_id -> (boxes (G, 4), labels (G,))``.
    """
    gt = {}
    for index in range(min(len(dataset), limit)):
        info = dataset.get_data_info(index)
        instances = [i for i in info.get('instances', [])
                     if not i.get('ignore_flag', 0)]
        gt[info.get('img_id', index)] = (
            torch.tensor([i['bbox'] for i in instances],
                         dtype=torch.float32).view(-1, 4),
            torch.tensor([i['bbox_label'] for i in instances],
                         dtype=torch.long))
    return gt


@functools.lru_cache(maxsize=1)
def _model_zoo_index() -> Dict[str, Tuple[str, float]]:
    """``checkpoint URL -> (model name, box AP)`` from the metafiles mmdet
    installs with its configs."""
    import glob
    import os.path as osp

    import yaml

    import mmdet
    index = {}
    root = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')
    for path in glob.glob(osp.join(root, '*', 'metafile.yml')):
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            continue
        models = data.get('Models') if isinstance(data, dict) else None
        for model in models or []:
            if not isinstance(model, dict):
                continue
            url = model.get('Weights')
            for result in model.get('Results') or []:
                metrics = result.get('Metrics') if isinstance(
                    result, dict) else None
                ap = (metrics or {}).get('box AP')
                if url and ap is not None:
                    index[str(url)] = (model.get('Name', ''), float(ap))
                    break
    return index


def published_box_ap(checkpoint: Optional[str]) -> Optional[Tuple[str, float]]:
    """The model-zoo name and COCO box AP (%) mmdet's metafiles list for a
    checkpoint URL, or None for any other checkpoint.

    Args:
        checkpoint (str, optional): A teacher checkpoint path or URL.

    Returns:
        tuple[str, float], optional: ``(model name, box AP)``.
    """
    if not checkpoint:
        return None
    return _model_zoo_index().get(str(checkpoint))
