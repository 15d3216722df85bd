from .guarded_optim_wrapper import GuardedOptimWrapper

__all__ = ['GuardedOptimWrapper']
