"""Let MMEngine's ``pytorch`` launcher start on CPUs: the one MMEngine patch
pcka_det applies, and only when a CPU-only run asks for it (``tools/train.py
--launcher pytorch`` on a machine without CUDA)."""


def allow_cpu_distributed() -> None:
    """Let MMEngine's ``pytorch`` launcher start on a machine without CUDA.

    MMEngine 0.10.7 calls ``torch.cuda.set_device(local_rank)`` before
    ``init_process_group`` whatever the backend; with a CPU-only torch that
    raises. Without CUDA there is no device to select, so it becomes a no-op.
    """
    import torch
    if not torch.cuda.is_available():
        torch.cuda.set_device = lambda device: None
