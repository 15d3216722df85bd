# A user's own teacher, trained with plain mmdet: RetinaNet R18-FPN on a
# COCO-format dataset of machine parts in data/parts/ (README, "Distil your
# own detector"). The model and schedule are the toy teacher's (from
# scratch, 192 px images); the data lines are what any user writes for
# their own dataset.
_base_ = 'pcka_det::toy/retinanet_r18_toy.py'

data_root = 'data/parts/'
metainfo = dict(
    classes=('nut', 'washer', 'bracket', 'hinge', 'gasket', 'spring'))

model = dict(bbox_head=dict(num_classes=6))
train_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo))
val_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
