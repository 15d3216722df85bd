# A teacher of another family for the same student: Faster R-CNN R18-FPN
# (P2-P6) on the machine parts of data/parts/ (README, "Distil your own
# detector", "A teacher of another family"). The model and schedule are the
# toy two-stage teacher's; the data lines are parts_teacher.py's.
_base_ = 'pcka_det::toy/faster_rcnn_r18_toy.py'

data_root = 'data/parts/'
metainfo = dict(
    classes=('nut', 'washer', 'bracket', 'hinge', 'gasket', 'spring'))

model = dict(roi_head=dict(bbox_head=dict(num_classes=6)))
train_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo))
val_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
