"""MMEngine formats a run's whole config with yapf (about 0.4 s of CPU)
each time it logs it, dumps it, hands it to the visualizer, keeps it in
the message hub and writes it into a checkpoint: six times in a toy
``tools/train.py`` run with two checkpoints, a tenth of such a run's time.
:func:`format_each_config_once` has each distinct config (by content)
formatted once per process; every text is MMEngine's own (the first call
formats, the others return that text).

Used by the suite's own process (``conftest.py``) and by the runs that
import ``faults.py`` (the crash, kill and launcher tests); the other runs
the suite starts as subprocesses format as a user's run does."""


def format_each_config_once():
    from mmengine.config import Config
    if getattr(Config.pretty_text, '_formats_once', False):
        return
    format_text = Config.pretty_text.fget
    texts = {}

    def pretty_text(self):
        key = (self._format_python_code, repr(self.to_dict()))
        if key not in texts:
            texts[key] = format_text(self)
        return texts[key]

    pretty_text._formats_once = True
    Config.pretty_text = property(pretty_text)
