"""The demo's report: the COCO metrics of each stage's ``result.json``, the
table it prints and the figure it draws."""
import json

from demo_stages import METHODS

METRICS = [('AP', 'bbox_mAP'), ('AP50', 'bbox_mAP_50'),
           ('AP75', 'bbox_mAP_75'), ('APs', 'bbox_mAP_s'),
           ('APm', 'bbox_mAP_m'), ('APl', 'bbox_mAP_l')]


class MetricsError(RuntimeError):
    """A stage's result lacks a COCO metric the demo reports."""


def table_metrics(name: str, result: dict, path: str) -> dict:
    """The table's metrics (%) from a stage's ``result.json`` contents.

    A missing metric is an error naming the stage, the key and ``path``.
    CocoMetric returns no metric at all when no test image has a single
    detection (it logs "The testing results of the whole dataset is
    empty"; seen for barely trained --tiny models): that, and only that
    (``num_detections`` 0), is an AP of 0. COCOeval's -1 (no ground truth
    box of that size) becomes None, printed as n/a.
    """
    raw = result.get('coco_metrics')
    if raw is None:
        raise MetricsError(f'Stage "{name}": {path} has no "coco_metrics"')
    detections = result.get('num_detections')
    if not raw and detections == 0:
        return {k: 0.0 for k, _ in METRICS}
    out = {}
    for k, m in METRICS:
        key = f'coco/{m}'
        if key not in raw:
            raise MetricsError(
                f'Stage "{name}": metric "{key}" is missing from {path} '
                f'(it has {sorted(raw) or "no metric"}; {detections} '
                'detections on the test set)')
        value = float(raw[key])
        out[k] = None if value < 0 else round(value * 100, 2)
    return out


def read_result(name: str, result_file: str) -> dict:
    """A stage's ``result.json`` with its table ``metrics`` added."""
    with open(result_file) as f:
        result = json.load(f)
    result['metrics'] = table_metrics(name, result, result_file)
    if not result['coco_metrics']:
        print(f'[{name}] no detection on the test set: AP 0')
    return result


def print_table(results: dict, order: list) -> str:
    header = (f'{"model":<16}' + ''.join(f'{k:>7}' for k, _ in METRICS) +
              f'{"train time":>12}')
    lines = [header, '-' * len(header)]
    for name, _, desc in order:
        r = results[name]
        lines.append(f'{desc:<16}' + ''.join(
            f'{"n/a":>7}' if r['metrics'][k] is None else
            f'{r["metrics"][k]:>7.1f}' for k, _ in METRICS) +
            f'{r["train_time_s"] / 60:>10.1f} m')
    table = '\n'.join(lines)
    print(table)
    return table


def plot(results: dict, order: list, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_ap, ax_det, ax_kd) = plt.subplots(1, 3, figsize=(16, 4.2))
    keys = [k for k, _ in METRICS]
    width = 0.8 / len(order)
    for j, (name, _, desc) in enumerate(order):
        vals = [results[name]['metrics'][k] or 0.0 for k in keys]
        ax_ap.bar([i + j * width for i in range(len(keys))], vals, width,
                  label=desc)
    ax_ap.set_xticks([i + width * (len(order) - 1) / 2
                      for i in range(len(keys))], keys)
    ax_ap.set_ylabel('COCO box AP (%)')
    ax_ap.set_title('Validation AP')
    ax_ap.legend(fontsize=8)
    for name, _, desc in order:
        curve = results[name]['losses']
        # the detector's own terms (FCOS adds centre-ness to cls + bbox),
        # not the total and not the stage's distillation terms
        terms = [k for k in curve if k.startswith('loss_')
                 and not k.startswith(f'loss_{name}')]
        if terms:
            ax_det.plot([i for i, _ in curve[terms[0]]],
                        [sum(curve[k][n][1] for k in terms)
                         for n in range(len(curve[terms[0]]))], label=desc)
    ax_det.set_title('Detection loss (all its terms)')
    ax_det.set_xlabel('iteration')
    ax_det.legend(fontsize=8)
    # distillation losses, each relative to its first logged value, since
    # the methods' scales differ
    for name, _, desc in order:
        if name not in METHODS:
            continue
        curve = results[name]['losses']
        levels = [k for k in curve if k.startswith(f'loss_{name}')]
        if not levels:
            continue
        total = [(i, sum(curve[k][n][1] for k in levels))
                 for n, (i, _) in enumerate(curve[levels[0]])]
        ax_kd.plot([i for i, _ in total],
                   [v / max(total[0][1], 1e-12) for _, v in total],
                   label=f'{desc} ({len(levels)} levels)')
    ax_kd.set_title('Distillation loss / its initial value')
    ax_kd.set_xlabel('iteration')
    ax_kd.legend(fontsize=8)
    fig.suptitle(f'{title}: ' + ' / '.join(desc for _, _, desc in order))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
