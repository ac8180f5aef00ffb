"""Caffe-like log lines (``I1123 15:30:00.123 solver] Iteration 500, loss = 0.0712``)
that stay readable under a tqdm progress bar."""
import logging
import sys
import time

_LEVEL_CHAR = {"DEBUG": "D", "INFO": "I", "WARNING": "W", "ERROR": "E", "CRITICAL": "F"}


class CaffeFormatter(logging.Formatter):
    def format(self, record):
        t = time.localtime(record.created)
        stamp = time.strftime("%m%d %H:%M:%S", t) + f".{int(record.msecs):03d}"
        where = record.name.rsplit(".", 1)[-1]
        return f"{_LEVEL_CHAR.get(record.levelname, 'I')}{stamp} {where}] {record.getMessage()}"


class _TqdmAwareHandler(logging.StreamHandler):
    """Writes through ``tqdm.write`` so log lines don't break a live progress bar."""

    def emit(self, record):
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # fall back to the plain handler
            super().emit(record)


def setup_logging(level=logging.INFO, stream=None):
    root = logging.getLogger("wincaffe")
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = _TqdmAwareHandler(stream or sys.stderr)
    handler.setFormatter(CaffeFormatter())
    root.addHandler(handler)
    root.propagate = False
    return root


def get_logger(name):
    return logging.getLogger(f"wincaffe.{name}")
