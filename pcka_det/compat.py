"""Version shims, each one small and explained.

(Checkpoints need none: ``pcka_det.checkpoint.read_checkpoint`` passes
``weights_only`` explicitly, ``True`` for URLs and ``False`` for the local
MMEngine checkpoints a user points at, instead of the process-wide
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``.)
"""


def allow_cpu_distributed() -> None:
    """Let MMEngine's ``pytorch`` launcher start on a machine without CUDA.

    MMEngine 0.10.7 calls ``torch.cuda.set_device(local_rank)`` before
    ``init_process_group`` whatever the backend; with a CPU-only torch that
    raises. Without CUDA there is no device to select, so it becomes a no-op.
    """
    import torch
    if not torch.cuda.is_available():
        torch.cuda.set_device = lambda device: None
