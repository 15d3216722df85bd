# PCKA on the anchor-free toy pair: FCOS R18 teacher -> quarter-width R18
# student, with the student's data, schedule and initialisation, and the toy
# RetinaNet's PCKA settings, not retuned: P3-P6 with 4-cell patches (P3
# 24x24 -> 36 patches) and 2 on the 3x3 P6 (16-cell patches would leave one
# patch per level at 192 px), intra_weight 2 (`make demo DETECTOR=fcos`,
# seed 0: 11.2 AP against 10.1 for the student alone). P7 (2x2) is left
# out: with the halved regress ranges no object of this dataset reaches it.
# `make demo DETECTOR=fcos` sets teacher_ckpt to the teacher it trained.
_base_ = './pcka_retinanet_r18_thin-r18_toy.py'

teacher_ckpt = 'work_dirs/demo_fcos/teacher/model.pth'
model = dict(
    student=dict(
        _delete_=True, cfg_path='pcka_det::toy/fcos_thin-r18_toy.py'),
    teacher=dict(_delete_=True, cfg_path='pcka_det::toy/fcos_r18_toy.py'),
    teacher_ckpt=teacher_ckpt)
