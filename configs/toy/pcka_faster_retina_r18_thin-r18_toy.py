# PCKA across families: toy Faster R-CNN R18 teacher (FPN P2-P6) -> the
# quarter-width RetinaNet R18 student (P3-P7), as `make demo
# DETECTOR=faster_retina` trains it. The demo's PCKA settings (4-cell
# patches, 2 on P6, intra 2: see pcka_retinanet_r18_thin-r18_toy.py) on the
# strides both necks produce, 8-64: student output i <-> teacher output
# i + 1, as `python -m pcka_det.new_config` pairs them. A one-stage student:
# no inter term, as in the RetinaNet pair.
_base_ = './pcka_retinanet_r18_thin-r18_toy.py'

model = dict(
    teacher=dict(cfg_path='pcka_det::toy/faster_rcnn_r18_toy.py'),
    distill_losses={
        f'pcka_p{level + 3}': dict(
            index=dict(_delete_=True, student=level, teacher=level + 1))
        for level in range(4)
    })
