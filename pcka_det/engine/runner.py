"""MMEngine's Runner with the checks a distillation run needs."""
import copy
import os.path as osp
from typing import Dict, List, Optional, Tuple

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from mmengine.runner.checkpoint import load_state_dict
from mmengine.visualization import Visualizer

from ..checkpoint import (STUDENT_PREFIX, CorruptCheckpointError,
                          fit_checkpoint, mismatch, newest_readable,
                          read_checkpoint)
from ..datasets import padded_training_scale
from ..models import FeatureDistiller, unwrap_model
from ..options import Contract, Option, OptionError, declare, validate
from .train_loop import ExactResumeEpochBasedTrainLoop


CONTRACT = declare(Contract(
    'DistillRunner', 'config',
    'Runs every config of ours (runner_type); these are its own keys.',
    options=(Option('resume_fallback', 'bool', True, 'resume from the '
                    'newest readable checkpoint when the one asked for is '
                    'truncated or corrupt (False: an error naming both)',
                    examples=(False, )),
             Option('resume_override', 'bool', False, 'resume from a '
                    'checkpoint whose model config (distiller, levels, '
                    'losses and weights, teacher checkpoint, student) '
                    'differs from this run\'s, on purpose (logged); '
                    'False: refused, naming the keys',
                    examples=(True, ))),
    run_rules=(('teacher-ckpt-override', 'a top-level teacher_ckpt changed '
                'after the config copied it into model (by --cfg-options '
                'or a child config) while model.teacher_ckpt kept the old '
                'value is refused, naming both; set model.teacher_ckpt'),
               ('one-student-init', 'load_from (without resume) and '
                'model.student_ckpt together are refused: load_from would '
                'replace the student student_ckpt loaded'),
               ('resume-same-run', '--resume from a checkpoint whose saved '
                'config differs in the model part (distiller type, '
                'recorders, distill_losses, teacher, teacher_ckpt, student) '
                'is refused, naming the keys, unless resume_override=True; '
                'a checkpoint without a saved config: a warning'))))

# The parts of a distiller's config a resumed run must share with the run
# that saved the checkpoint (a plain detector: its whole model config)
SAME_RUN_KEYS = ('type', 'student', 'teacher', 'teacher_ckpt', 'recorders',
                 'distill_losses')


def _diff(there, here, path: str, out: List[str]) -> None:
    """Append ``"<path>: <there> there, <here> here"`` for each leaf that
    differs; a sub-tree on one side only is one line."""
    if isinstance(there, dict) and isinstance(here, dict):
        for key in sorted(set(there) | set(here), key=str):
            if key not in there:
                out.append(f'{path}.{key}: unset there, set here')
            elif key not in here:
                out.append(f'{path}.{key}: set there, unset here')
            else:
                _diff(there[key], here[key], f'{path}.{key}', out)
    elif isinstance(there, (list, tuple)) and \
            isinstance(here, (list, tuple)) and len(there) == len(here):
        for i, (a, b) in enumerate(zip(there, here)):
            _diff(a, b, f'{path}[{i}]', out)
    else:
        a, b = (v.__name__ if isinstance(v, type) else v
                for v in (there, here))
        if a != b:
            out.append(f'{path}: {a!r} there, {b!r} here')


def model_differences(saved: dict, model: dict) -> List[str]:
    """What differs between the model config a checkpoint was saved with
    and this run's, in the parts that make it another run.

    Args:
        saved (dict): ``model`` of the checkpoint's saved config.
        model (dict): ``model`` of this run's config.

    Returns:
        list[str]: ``"model.<key>: <saved> there, <this> here"``, sorted.
    """
    keys = SAME_RUN_KEYS if _is_distiller(model) or _is_distiller(saved) \
        else sorted(set(saved) | set(model))
    out: List[str] = []
    _diff({k: saved[k] for k in keys if k in saved},
          {k: model[k] for k in keys if k in model}, 'model', out)
    return out


def _type_name(value) -> Optional[str]:
    """A config ``type`` (a class or a possibly scoped string) as a bare
    class name."""
    if value is None:
        return None
    if isinstance(value, type):
        return value.__name__
    return str(value).rsplit('.', 1)[-1]


def _is_distiller(model_cfg) -> bool:
    """Whether a ``model`` config builds a :class:`FeatureDistiller`."""
    kind = (model_cfg or {}).get('type') if isinstance(model_cfg,
                                                       dict) else None
    if isinstance(kind, type):
        return issubclass(kind, FeatureDistiller)
    if not kind:
        return False
    from mmdet.registry import MODELS
    try:
        cls = MODELS.get(kind)
    except KeyError:
        return False
    return isinstance(cls, type) and issubclass(cls, FeatureDistiller)


def declare_run_components(cfg) -> List[str]:
    """Write into ``cfg`` the run components a distillation run needs where
    it does not declare them, and say what was written.

    Every config we ship (and every config ``pcka_det.new_config`` writes)
    declares them itself; this covers a user's plain config and mmdet's own
    ``tools/train.py``. The config is changed before the runner is built,
    so the config dumped into the work dir names what ran.

    * ``train_cfg``: ``EpochBasedTrainLoop`` ->
      :class:`~pcka_det.engine.train_loop.ExactResumeEpochBasedTrainLoop`
      (same arguments).
    * ``optim_wrapper``: a plain ``OptimWrapper`` (no custom constructor)
      -> :class:`~pcka_det.engine.GuardedOptimWrapper`, ``AmpOptimWrapper``
      -> :class:`~pcka_det.engine.GuardedAmpOptimWrapper` (same
      arguments).
    * ``default_hooks.checkpoint`` and ``custom_hooks``: ``CheckpointHook``
      -> :class:`~pcka_det.engine.hooks.AtomicCheckpointHook` (same
      arguments; a missing checkpoint hook is MMEngine's default,
      ``interval=1``).
    * ``default_hooks.nonfinite_guard``:
      :class:`~pcka_det.engine.hooks.NonFiniteGuardHook` when no hook of
      that type is declared.
    * ``default_hooks.export_student``:
      :class:`~pcka_det.engine.hooks.ExportStudentHook` for a
      ``FeatureDistiller`` model when none is declared.

    Args:
        cfg (Config): The run's config, changed in place.

    Returns:
        list[str]: One line per component written, for the run's log.
    """
    lines = []

    def note(key, old, new, why):
        lines.append(f'{key}: {old or "not declared"} -> {new} ({why}); '
                     f'declare {key}.type=\'{new}\' in the config to '
                     'make this explicit.')

    loop = cfg.get('train_cfg')
    if isinstance(loop, dict) and (
            _type_name(loop.get('type')) == 'EpochBasedTrainLoop'
            or ('type' not in loop and loop.get('by_epoch'))):
        old = _type_name(loop.get('type'))
        loop.pop('by_epoch', None)
        loop['type'] = 'ExactResumeEpochBasedTrainLoop'
        note('train_cfg', old, loop['type'],
             'resume continues where the run stopped, with its random '
             'states')
    wrapper = cfg.get('optim_wrapper')
    if isinstance(wrapper, dict) and 'constructor' not in wrapper and \
            _type_name(wrapper.get('type', 'OptimWrapper')) == 'OptimWrapper':
        old = _type_name(wrapper.get('type'))
        wrapper['type'] = 'GuardedOptimWrapper'
        note('optim_wrapper', old, wrapper['type'],
             'a non-finite gradient skips the step')
    elif isinstance(wrapper, dict) and \
            _type_name(wrapper.get('type')) == 'AmpOptimWrapper':
        wrapper['type'] = 'GuardedAmpOptimWrapper'
        note('optim_wrapper', 'AmpOptimWrapper', wrapper['type'],
             'a step the loss scaler skips puts back the BN statistics, '
             'and a non-finite loss is told from a scale overflow')
    if cfg.get('default_hooks') is None:
        cfg['default_hooks'] = {}
    hooks = cfg['default_hooks']
    if 'checkpoint' not in hooks:  # MMEngine's default, made atomic
        hooks['checkpoint'] = dict(type='AtomicCheckpointHook', interval=1)
        note('default_hooks.checkpoint', None, 'AtomicCheckpointHook',
             'MMEngine\'s default interval=1, and a kill while saving never '
             'loses the previous checkpoint')
    declared = [h for h in [*hooks.values(), *(cfg.get('custom_hooks') or [])]
                if isinstance(h, dict)]
    for where, hook in [('default_hooks.checkpoint', hooks['checkpoint'])] + [
            (f'custom_hooks[{i}]', h)
            for i, h in enumerate(cfg.get('custom_hooks') or [])]:
        if isinstance(hook, dict) and \
                _type_name(hook.get('type')) == 'CheckpointHook':
            hook['type'] = 'AtomicCheckpointHook'
            note(where, 'CheckpointHook', hook['type'],
                 'a kill while saving never loses the previous checkpoint')
    types = {_type_name(h.get('type')) for h in declared}
    if 'NonFiniteGuardHook' not in types:
        hooks['nonfinite_guard'] = dict(type='NonFiniteGuardHook')
        note('default_hooks.nonfinite_guard', None, 'NonFiniteGuardHook',
             'skipped steps are logged and bounded')
    if _is_distiller(cfg.get('model')) and 'ExportStudentHook' not in types:
        hooks['export_student'] = dict(type='ExportStudentHook')
        note('default_hooks.export_student', None, 'ExportStudentHook',
             'the student is saved as a plain mmdet checkpoint')
    return lines


def unscaled_batch(batch_per_gpu: int, gpus: int,
                   auto_scale_lr: Optional[dict]) -> Optional[str]:
    """Why the learning rate does not fit the total batch, or None.

    A recipe's lr is tuned for ``auto_scale_lr.base_batch_size``; trained
    with another total batch and ``auto_scale_lr`` off, it is off by their
    ratio (yzd-v/FGD#52 lost 1.2 AP this way).

    Args:
        batch_per_gpu (int): ``train_dataloader.batch_size``.
        gpus (int): Processes of the run.
        auto_scale_lr (dict, optional): The config's ``auto_scale_lr``.

    Returns:
        str, optional: The warning, with both numbers and the fix.
    """
    scale = auto_scale_lr or {}
    base = scale.get('base_batch_size')
    total = batch_per_gpu * gpus
    if not base or scale.get('enable') or total == int(base):
        return None
    return (f'the total batch is {total} ({batch_per_gpu} per GPU x {gpus} '
            f'GPU{"s" if gpus != 1 else ""}) but the learning rate is the '
            f'recipe\'s for auto_scale_lr.base_batch_size {base}, and '
            'auto_scale_lr is off: pass --auto-scale-lr (lr x '
            f'{total / int(base):g}), or train with {base} images per step.')


def check_pretrained_sources(model) -> None:
    """Fail now, not after the data is loaded, when a ``Pretrained`` init of
    ``model`` needs torchvision (``torchvision://`` URLs) and it is missing.

    Args:
        model (nn.Module): A detector, before ``init_weights``.
    """
    for name, module in model.named_modules():
        inits = getattr(module, 'init_cfg', None) or []
        for init in inits if isinstance(inits, list) else [inits]:
            source = str(init.get('checkpoint', '')) if isinstance(
                init, dict) else ''
            if not source.startswith('torchvision://'):
                continue
            try:
                import torchvision  # noqa: F401
            except ImportError as e:
                raise ModuleNotFoundError(
                    f'{name or "the model"} initialises from "{source}", '
                    'which MMEngine reads through torchvision, and '
                    f'torchvision cannot be imported ({e}). Install the '
                    'torchvision built for your torch (make install does), '
                    'or set the backbone\'s init_cfg to a local file.'
                ) from e


def _visualizer_name_taken(name: str) -> bool:
    """Whether a visualizer of any class already holds ``name`` (MMEngine
    keeps one instance table per class)."""
    classes = [Visualizer]
    while classes:
        cls = classes.pop()
        if cls.check_instance_created(name):
            return True
        classes.extend(cls.__subclasses__())
    return False


class FormattedOnceConfig(Config):
    """A run's config that formats each distinct content once.

    MMEngine formats the whole config with yapf for the log, the dumped
    file, the visualizer, the message hub and every checkpoint's meta
    (``Config.pretty_text``: about 0.4 s of CPU each for a toy config, six
    times in a two-checkpoint run). This config keeps the text of each
    content it formatted, so a run spends that once; the text is
    MMEngine's own, and a changed config (another content) is formatted
    anew. Only the runner's own config is of this class (no process-wide
    change to ``Config``).
    """
    _texts: Dict[Tuple[bool, str], str] = {}

    @classmethod
    def of(cls, cfg) -> 'FormattedOnceConfig':
        """``cfg`` (a ``Config``, ``ConfigDict`` or dict, as
        ``Runner.from_cfg`` takes) as this class, sharing its content."""
        if not isinstance(cfg, Config):
            cfg = Config(cfg)
        other = cls.__new__(cls)
        other.__dict__.update(cfg.__dict__)
        return other

    @property
    def pretty_text(self) -> str:
        """MMEngine's ``pretty_text``, computed once per content."""
        key = (self._format_python_code, repr(self.to_dict()))
        if key not in self._texts:
            self._texts[key] = Config.pretty_text.fget(self)
        return self._texts[key]


@RUNNERS.register_module()
class DistillRunner(Runner):
    """``Runner`` that loads checkpoints strictly enough to never fail
    silently, and always exports the student after training.

    * ``load_from``, ``--resume`` and ``tools/test.py CONFIG CKPT`` map keys
      between a ``FeatureDistiller`` and a plain detector (a student-only
      checkpoint into the distiller's student, a distiller checkpoint's
      student into a plain detector) and raise when more than
      :data:`pcka_det.checkpoint.MAX_UNMATCHED` keys stay unmatched, where
      MMEngine would warn and go on with random weights.
    * Checkpoints from URLs are read with ``weights_only=True``
      (:func:`pcka_det.checkpoint.read_checkpoint`).
    * The run components a distillation run needs (an exact-resume loop,
      a guarded optimizer wrapper, atomic checkpoints, the non-finite
      guard and the student export) are written into a config that does
      not declare them, before the runner is built, one log line each
      (:func:`declare_run_components`): the dumped config names what ran.
    * ``train()`` first runs the distiller's pre-flight check
      (:meth:`FeatureDistiller.preflight`) on one dummy image of the training
      scale, before the dataloaders are built: a level that is not paired,
      a wrong connector or index, or a PCKA level of one patch fails in
      seconds.
    * Each run writes its ``vis_data`` into its own work dir, a second run
      in one process included (:meth:`build_visualizer`).

    Every distillation config selects it with ``runner_type='DistillRunner'``
    (``configs/_base_/distill_runtime.py``); ``tools/train.py`` and
    ``tools/test.py`` use it for any config that names no runner.
    """

    # pcka_det.test sets it: every weight of the checkpoint must fit, where
    # load_from fine-tuning tolerates a few re-sized layers
    strict_load = False

    @classmethod
    def from_cfg(cls, cfg) -> 'DistillRunner':
        """Build from ``cfg`` with the run components it does not declare
        written in (:func:`declare_run_components`), one log line each.

        Args:
            cfg (Config): The run's config (not changed).

        Returns:
            DistillRunner: The runner.
        """
        cfg = copy.deepcopy(cfg)
        model = cfg.get('model') or {}
        if cfg.get('load_from') and not cfg.get('resume') and \
                model.get('student_ckpt') and _is_distiller(model):
            raise OptionError(
                f'load_from ({cfg.load_from}) and model.student_ckpt '
                f'({model.student_ckpt}) are both set: load_from is loaded '
                'after student_ckpt and replaces it, so student_ckpt would '
                'do nothing (rule "one-student-init"). Keep one of them.')
        validate('DistillRunner', {
            o.name: cfg[o.name] for o in CONTRACT.options if o.name in cfg})
        lines = declare_run_components(cfg)
        runner = super().from_cfg(FormattedOnceConfig.of(cfg))
        for line in lines:
            runner.logger.info(f'DistillRunner: {line}')
        return runner

    def build_visualizer(self, visualizer=None):
        """MMEngine's, except that the run's visualizer is its own.

        mmdet's runtime names every run's visualizer ``'visualizer'`` and
        MMEngine returns an existing instance of that name, so a second
        run in one process (a notebook or a script that trains twice)
        would write its ``vis_data`` (``scalars.json``, ``config.py``)
        into the first run's work dir, or fail once that dir is gone. A
        name already taken gets the run's experiment name appended; a
        process's first run is unchanged.

        Args:
            visualizer (Visualizer | dict | None): The config's
                ``visualizer``.

        Returns:
            Visualizer: The run's visualizer.
        """
        if isinstance(visualizer, dict) and visualizer.get('name'):
            name, base, n = visualizer['name'], visualizer['name'], 0
            while _visualizer_name_taken(name):
                n += 1
                name = f'{base}_{self._experiment_name}' + (
                    f'_{n}' if n > 1 else '')
            visualizer = dict(visualizer, name=name)
        return super().build_visualizer(visualizer)

    def train(self):
        """Pre-flight check of a distiller, then MMEngine's training."""
        model = unwrap_model(self.model)
        if isinstance(model, FeatureDistiller):
            if model.predict_with == 'teacher':
                raise OptionError(
                    "model.predict_with = 'teacher' in a training run: "
                    'every validation would report the teacher\'s AP and '
                    'the best checkpoint would be picked on it (rule '
                    '"not-teacher-in-training"). Remove it from the '
                    'training config; evaluate the teacher with '
                    'pcka_det.test --cfg-options model.predict_with=teacher.')
            check_pretrained_sources(model.student)
            loader = self.cfg.get('train_dataloader') or {}
            problem = unscaled_batch(int(loader.get('batch_size', 1)),
                                     self.world_size,
                                     self.cfg.get('auto_scale_lr'))
            if problem:
                self.logger.warning(f'Learning rate: {problem}')
            size, source = padded_training_scale(self.cfg,
                                                 model.data_preprocessor)
            self.logger.info(f'Pre-flight image size {size[0]}x{size[1]} '
                             f'({source}).')
            model.preflight(size)
        return super().train()

    def resume(self, filename: str, resume_optimizer: bool = True,
               resume_param_scheduler: bool = True,
               map_location='default') -> None:
        """MMEngine's resume, from the newest checkpoint that can be read.

        ``filename`` (``--resume PATH``, or what ``last_checkpoint`` names)
        is read first. If it is truncated or corrupt (or, for ``--resume``
        without a path, missing), the newest readable ``epoch_*.pth`` /
        ``iter_*.pth`` next to it is used, with a warning naming both; with
        ``resume_fallback = False`` in the config that is an error naming
        both instead. Every rank restores its own random states.
        """
        checkpoint, e = None, None
        try:
            checkpoint = read_checkpoint(filename)
        except FileNotFoundError as err:
            if self._load_from is not None:  # --resume PATH: a typo?
                raise
            e = err
        except CorruptCheckpointError as err:
            e = err
        if checkpoint is None:
            fallback, checkpoint = newest_readable(
                osp.dirname(osp.abspath(filename)), exclude=filename)
            if fallback is None:
                raise e
            if not self.cfg.get('resume_fallback', True):
                raise RuntimeError(
                    f'Cannot resume from "{filename}": {e} The newest '
                    f'readable checkpoint is "{fallback}"; resume from it '
                    f'(--resume {fallback}) or set resume_fallback=True.'
                ) from e
            self.logger.warning(
                f'Cannot resume from "{filename}" ({e}); resuming from the '
                f'newest readable checkpoint, "{fallback}", instead.')
            filename = fallback
        self._refuse_another_run(filename, checkpoint)
        self._preloaded = (filename, checkpoint)
        try:
            super().resume(filename, resume_optimizer,
                           resume_param_scheduler, map_location)
        finally:
            self._preloaded = None
        if isinstance(self._train_loop, ExactResumeEpochBasedTrainLoop):
            self._train_loop.pending_rng_state = self._own_rng_state(
                checkpoint.get('rng_state'))
            loader = self.cfg.get('train_dataloader') or {}
            if checkpoint.get('rng_state') is None:
                self.logger.warning(
                    f'{filename} holds no random states (written by another '
                    'tool?): random augmentation after the resume differs '
                    'from an uninterrupted run.')
            elif loader.get('persistent_workers') and \
                    loader.get('num_workers', 0) > 0 and \
                    not self._train_loop.samples_seeded:
                self.logger.warning(
                    'Resuming with persistent_workers=True: the data '
                    'workers\' random streams cannot be restored, so random '
                    'augmentation after the resume differs from an '
                    'uninterrupted run (set persistent_workers=False for a '
                    'bit-exact resume).')

    def _refuse_another_run(self, filename: str, checkpoint: dict) -> None:
        """Rule "resume-same-run": the checkpoint's saved config (MMEngine
        keeps it in ``meta['cfg']``) must build the same model as this
        run's, or a resume continues (or, finished, exports) another
        method's student."""
        from mmengine.config import Config
        text = (checkpoint.get('meta') or {}).get('cfg')
        if not text:
            self.logger.warning(
                f'{filename} holds no saved config (written by another '
                'tool?): cannot check that it belongs to this run '
                '(distiller, levels, teacher, student).')
            return
        try:
            saved = Config.fromstring(text, file_format='.py').get(
                'model') or {}
        except Exception as e:  # an old or foreign config text
            self.logger.warning(
                f'The config saved in {filename} does not parse ({e}): '
                'cannot check that it belongs to this run.')
            return
        differ = model_differences(saved.to_dict() if hasattr(
            saved, 'to_dict') else dict(saved), self.cfg.get('model') or {})
        if not differ:
            return
        shown = '; '.join(differ[:6]) + (
            f'; and {len(differ) - 6} more' if len(differ) > 6 else '')
        if self.cfg.get('resume_override', False):
            self.logger.warning(
                f'Resuming from {filename}, saved by another run, on purpose '
                f'(resume_override=True): {shown}.')
            return
        raise OptionError(
            f'Cannot resume from {filename}: it was saved by another run '
            f'(its model config differs: {shown}) (rule "resume-same-run"). '
            'Resume that run with its own config, train this one in a new '
            '--work-dir, or pass --cfg-options resume_override=True to '
            'continue from this checkpoint on purpose.')

    def _own_rng_state(self, states):
        """This rank's random states from a checkpoint's list (one per rank
        of the run that saved it)."""
        if isinstance(states, dict):  # a single process's
            states = [states]
        if not states:
            return None
        if len(states) != self.world_size:
            self.logger.warning(
                f'The checkpoint was saved by {len(states)} processes, this '
                f'run has {self.world_size}: the data order and random '
                'augmentation after the resume differ from an uninterrupted '
                'run.')
        return states[min(self.rank, len(states) - 1)]

    def load_checkpoint(self,
                        filename: str,
                        map_location='cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]) -> dict:
        """Load ``filename`` into the model (see the class docstring).

        Args:
            filename (str): Local path or URL.
            map_location: As for ``torch.load``.
            strict (bool): Passed to the final ``load_state_dict``.
            revise_keys (list): ``(pattern, replacement)`` pairs applied to
                the keys first, as in MMEngine.

        Returns:
            dict: The checkpoint.
        """
        preloaded = getattr(self, '_preloaded', None)
        if preloaded is not None and preloaded[0] == filename:
            checkpoint = preloaded[1]  # read (and checked) by resume()
        else:
            checkpoint = read_checkpoint(filename, map_location)
        model = unwrap_model(self.model)
        state, note = fit_checkpoint(model, checkpoint, filename,
                                     revise_keys=revise_keys)
        if note:
            self.logger.info(f'{filename} is {note}.')
        if self.strict_load:
            count, problem = mismatch(
                model, state,
                STUDENT_PREFIX if note.startswith('a detector') else None)
            if count:
                raise RuntimeError(
                    f'Checkpoint "{filename}" does not fit this config '
                    f'exactly ({problem}), and a test loads strictly: a '
                    're-sized or missing layer would be tested at its '
                    'random initialisation (e.g. a head of another class '
                    'count). Test with the config the checkpoint was '
                    'trained with.')
        # Hooks see the weights under the model's own key names: EMAHook
        # copies checkpoint['state_dict'] into its averaged model (and, when
        # resuming, swaps it with 'ema_state_dict' in place), so a
        # student-only checkpoint must already read 'student.*' here.
        checkpoint = ({**checkpoint, 'state_dict': state}
                      if 'state_dict' in checkpoint else dict(state_dict=state))
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        load_state_dict(model, checkpoint['state_dict'], strict, self.logger)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint
