"""The user's first commands, exactly, on a tiny COCO-layout dataset, offline.

``python tools/train.py configs/pcka/retina_r101_r50.py`` starts the
student's backbone from ``torchvision://resnet50`` (mmdet's ``init_cfg``)
and the teacher from a ``download.openmmlab.com`` URL. The hub cache
(``tests/hub_cache.py``) holds random weights under those URLs' file names,
so the real URL code paths (MMEngine's ``load_from_torchvision``,
``pcka_det.checkpoint.read_checkpoint``) run and download nothing. Without
torchvision, or with an empty cache, these tests fail on the download
attempt; they never skip.

The commands get only what points them at the tiny dataset
(``data/coco/{annotations,train2017,val2017}`` in a temporary folder, 2
train images and 1 val image; the training commands use the first train
image only), batch 1 without workers and one epoch (1 iteration), and the
student's ``score_thr=0``: CocoMetric logs no AP at all for an empty
result, and these barely trained models are close to it or below:
untrained RetinaNet students scored at most 0.058 to 0.117 on these images
over 3 seeds (the config keeps boxes over 0.05; the runs are not seeded).

The RetinaNet config is the one run here at full size (1067x800, about 90 s
on 2 cores). The Faster R-CNN config's ``tools/train.py`` run (80 s) left
the suite for time on 2026-12-03: its step runs from its real file and the
cached URLs in ``test_coco_configs.py``, and a two-stage pair trains,
evaluates and exports through ``tools/train.py`` in ``test_toy_families.py``.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from hub_cache import hub_cache  # noqa: F401  (session fixture)

RETINA = 'configs/pcka/retina_r101_r50.py'
RETINA_STUDENT = 'mmdet::retinanet/retinanet_r50_fpn_2x_coco.py'
RETINA_TEACHER_URL = (
    'https://download.openmmlab.com/mmdetection/v2.0/retinanet/'
    'retinanet_r101_fpn_2x_coco/retinanet_r101_fpn_2x_coco_20200131-5560aee8'
    '.pth')

# The 80 COCO category ids (1..90 without the ten unused ones).
COCO_IDS = [i for i in range(1, 91)
            if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]

# What MMEngine logs when PretrainedInit loads the student's backbone.
TORCHVISION_LOG = ('Loads checkpoint by torchvision backend from path: '
                   'torchvision://resnet50')
TIMEOUT = 1200


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    """``<tmp>/data/coco/`` laid out as COCO 2017: the synthetic shapes
    relabelled as the first six COCO classes, categories = the 80 COCO
    categories with their real ids and names."""
    from mmdet.datasets import CocoDataset
    from pcka_det.datasets import SyntheticConfig, generate_dataset
    classes = CocoDataset.METAINFO['classes']
    assert len(classes) == len(COCO_IDS) == 80
    categories = [dict(id=i, name=n, supercategory='coco')
                  for i, n in zip(COCO_IDS, classes)]
    scratch = tmp_path_factory.mktemp('synthetic')
    # 4:3 like most COCO images: resized to 1067x800, every PCKA level of
    # the configs then has >= 2 patches (a square 800x800 leaves P6 at 13x13
    # cells, one 16-cell patch)
    generate_dataset(str(scratch), SyntheticConfig(
        num_train=2, num_val=1, image_size=(320, 240)))
    root = tmp_path_factory.mktemp('coco_home') / 'data' / 'coco'
    (root / 'annotations').mkdir(parents=True)
    for split in ('train', 'val'):
        coco = json.loads(
            (scratch / 'annotations' / f'instances_{split}.json').read_text())
        for ann in coco['annotations']:  # synthetic ids 1..6
            ann['category_id'] = COCO_IDS[ann['category_id'] - 1]
        coco['categories'] = categories
        # filter_empty_gt would drop an image without boxes
        assert {a['image_id'] for a in coco['annotations']} == \
            {im['id'] for im in coco['images']}, split
        (root / 'annotations' / f'instances_{split}2017.json').write_text(
            json.dumps(coco))
        os.rename(scratch / split, root / f'{split}2017')
    return root


RETINA_SCORE_THR = 'model.student.test_cfg.score_thr'
# The training commands take one step, on the first training image (the
# multi-process launchers are run on the toy data: test_distributed.py,
# test_multinode.py).
ONE_STEP = {'train_dataloader.dataset.indices': 1}


def data_options(root, score_thr_key=RETINA_SCORE_THR, **extra) -> list:
    """``--cfg-options`` pointing a COCO config at ``root``.

    mmdet's coco_detection base substitutes ``data_root`` when the config is
    parsed, so overriding ``data_root`` alone would change nothing: every
    key derived from it is set here. ``score_thr_key`` (None: none) is set
    to 0.
    """
    root = str(root) + '/'
    ann_val = root + 'annotations/instances_val2017.json'
    opts = {
        'train_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.data_root': root,
        'test_dataloader.dataset.data_root': root,
        'val_evaluator.ann_file': ann_val,
        'test_evaluator.ann_file': ann_val,
        'train_dataloader.batch_size': 1,
        'train_cfg.max_epochs': 1,
    }
    if score_thr_key:
        opts[score_thr_key] = 0.0
    for loader in ('train', 'val', 'test'):
        opts[f'{loader}_dataloader.num_workers'] = 0
        opts[f'{loader}_dataloader.persistent_workers'] = False
    opts.update(extra)
    return ['--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]


def run_tool(args, env, cwd=ROOT):
    """Run ``args`` in the repository root; stdout and stderr together."""
    return subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          timeout=TIMEOUT)


def check_run(out, work_dir, hub_cache, cached_files):  # noqa: F811
    """Exit 0, validation with a COCO AP, the student exported, the
    pretrained weights read from the cache and nothing downloaded."""
    log = out.stdout
    assert out.returncode == 0, log[-8000:]
    assert 'coco/bbox_mAP' in log, log[-4000:]
    assert osp.isfile(osp.join(work_dir, 'student_last.pth'))
    assert TORCHVISION_LOG in log, log[:8000]
    assert 'Downloading' not in log
    assert 'gives a single patch' not in log
    # the cache holds exactly what the helper wrote: nothing was fetched
    assert sorted(os.listdir(hub_cache.dir)) == sorted(hub_cache.files)
    for path in cached_files:
        assert osp.isfile(path)
    state = torch.load(osp.join(work_dir, 'student_last.pth'),
                       map_location='cpu', weights_only=False)['state_dict']
    assert state and not any(k.startswith(('student.', 'teacher.'))
                             for k in state)


@pytest.fixture(scope='module')
def retina_train(hub_cache, coco_root, tmp_path_factory):  # noqa: F811
    """``tools/train.py configs/pcka/retina_r101_r50.py``, run once."""
    files = hub_cache.fill([RETINA])
    work = tmp_path_factory.mktemp('retina') / 'work'
    out = run_tool([sys.executable, 'tools/train.py', RETINA,
                    '--work-dir', str(work)] + data_options(
                        coco_root, **ONE_STEP), hub_cache.env())
    return work, out, files


@pytest.mark.slow
def test_init_weights_come_from_hub_cache(hub_cache):  # noqa: F811
    """The config as tools/train.py loads it, built and initialised as the
    runner does: the student's backbone holds the cached torchvision
    ResNet-50, the teacher the cached model-zoo checkpoint."""
    from mmdet.registry import MODELS
    from pcka_det.cli import prepare_cfg
    hub_cache.fill([RETINA])
    cfg = prepare_cfg(RETINA)
    assert cfg.model.teacher_ckpt == RETINA_TEACHER_URL
    model = MODELS.build(cfg.model)
    model.init_weights()
    resnet50 = hub_cache.load('torchvision://resnet50')
    assert torch.equal(model.student.backbone.conv1.weight.detach(),
                       resnet50['conv1.weight'])
    assert torch.equal(
        model.student.backbone.layer4[2].conv3.weight.detach(),
        resnet50['layer4.2.conv3.weight'])
    teacher = hub_cache.load(RETINA_TEACHER_URL)['state_dict']
    assert torch.equal(model.teacher.backbone.conv1.weight,
                       teacher['backbone.conv1.weight'])
    assert torch.equal(model.teacher.bbox_head.retina_cls.weight,
                       teacher['bbox_head.retina_cls.weight'])
    # and not by chance: a fresh build differs from the cached weights
    fresh = MODELS.build(cfg.model)
    assert not torch.equal(fresh.student.backbone.conv1.weight.detach(),
                           resnet50['conv1.weight'])


@pytest.mark.slow
def test_train_retina(retina_train, hub_cache):  # noqa: F811
    work, out, files = retina_train
    check_run(out, work, hub_cache, files)


@pytest.mark.slow
def test_plain_mmdet_tests_the_exported_student(
        retina_train, hub_cache, coco_root):  # noqa: F811
    """``tools/test.py`` with ``student_last.pth`` under mmdet's own student
    config (what a user ships): COCO metrics, boxes predicted. (The
    distiller config with a student checkpoint is covered on the toy pair,
    ``test_checkpoint_loading.py``.)"""
    import mmengine
    work, out, _ = retina_train
    assert out.returncode == 0, out.stdout[-8000:]
    test_work = work.parent / 'test_plain'
    pkl = test_work / 'preds.pkl'
    res = run_tool([sys.executable, 'tools/test.py', RETINA_STUDENT,
                    str(work / 'student_last.pth'), '--work-dir',
                    str(test_work), '--out', str(pkl)] +
                   data_options(coco_root, 'model.test_cfg.score_thr'),
                   hub_cache.env())
    assert res.returncode == 0, res.stdout[-8000:]
    assert 'coco/bbox_mAP' in res.stdout, res.stdout[-4000:]
    assert 'Downloading' not in res.stdout
    preds = mmengine.load(str(pkl))
    assert len(preds) == 1
    assert all(len(p['pred_instances']['scores']) > 0 for p in preds)


@pytest.mark.slow
def test_check_retina_reports_the_random_teacher(hub_cache, coco_root,
                                                 tmp_path):  # noqa: F811
    """``tools/check.py configs/pcka/retina_r101_r50.py`` offline: the
    cached teacher URL holds random weights, and the check says so (exit
    1, the teacher's recall fails, its box AP far below the model zoo's is
    a warning); levels, one step and the recipe pass. (The Faster R-CNN
    R101 -> RetinaNet R50 pair passed the same test on 2026-12-02, 31 s
    alone; it left the suite for time.)"""
    config = RETINA
    hub_cache.fill([config])
    out_json = tmp_path / 'check.json'
    out = run_tool([sys.executable, 'tools/check.py', config,
                    '--num-images', '1', '--iters', '0', '--out',
                    str(out_json)] + data_options(coco_root, None),
                   hub_cache.env())
    assert out.returncode == 1, out.stdout[-8000:]
    print(out.stdout[out.stdout.index('pcka_det.check'):])  # README's table
    report = json.loads(out_json.read_text())
    status = {v['check']: v['status'] for v in report['verdicts']}
    assert status == {'levels': 'ok', 'teacher': 'FAIL',
                      'teacher AP': 'WARN', 'step': 'ok'}, status
    teacher = report['evaluation']['teacher']
    assert teacher['recall'] == 0
    published = teacher['published_box_ap']
    assert published['box_ap'] > 30  # RetinaNet R101 2x on COCO val
    [ap_message] = [v['message'] for v in report['verdicts']
                    if v['check'] == 'teacher AP']
    assert ap_message.startswith(
        # no AP at all from CocoMetric when nothing was detected
        f'box AP {100 * teacher["metrics"].get("coco/bbox_mAP", 0):.1f} on '
        f'{teacher["images"]} images, the model zoo lists '
        f'{published["box_ap"]:.1f} for {published["model"]} on COCO val')
    assert report['training_scale']['size'] == [800, 1344]
    assert [lv['patches'] for lv in report['levels']] == [77, 24, 6, 2]
    assert report['recipe']['batch'].startswith('1 per GPU x 16 GPUs')
    assert 'Downloading' not in out.stdout
