"""What every command-line main shares: clean stops, one-line errors, --verbose, a log file.

Imported first by each main (``from experiments import cli``) so that its first act
is to install the SIGTERM/SIGINT handlers (vae_jax.training.preemption), before
the seconds-long imports of JAX and TensorFlow: a stop asked at any moment is a
request acted on at the next safe point, never a traceback.

``cli.run(main)`` then runs the absl main and turns how it ends into one line:
a stop exits 0 with what was saved; a known error (a bad config field, a workdir
it must not touch, a full disk) prints "FATAL Type: what, and what would be
valid". The full traceback, and every library's log noise (orbax prints hundreds
of lines for one failed write), go to the log file WORKDIR/<command>.log, and to
the terminal only with --verbose.
"""

import os  # pylint: disable=g-bad-import-order

# TensorFlow's C++ start-up lines go to the terminal before any Python filter can see
# them: silenced before it loads, for every main. TF_CPP_MIN_LOG_LEVEL no longer stops
# the oneDNN notice TF prints on CPUs where it enables oneDNN (seen on Intel Xeons, with
# absl's "All log messages before absl::InitializeLog()" around it): oneDNN is turned off
# instead, which changes no figure here, as TF only reads data. A user's settings win.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from vae_jax.training import preemption  # pylint: disable=g-bad-import-order

preemption.install()

# pylint: disable=g-import-not-at-top,wrong-import-position,g-bad-import-order
import errno
import logging as py_logging
import os
import sys
import threading
from typing import Callable, Optional

from absl import app
from absl import flags
from absl import logging

_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Print full tracebacks and every library's log lines on the terminal "
    "(the log file WORKDIR/<command>.log has them always).")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The project's own code, whose log lines the terminal shows: its packages, not every
# file under REPO (launch.sh setup makes .venv there, and JAX's, orbax's and TFDS's
# lines come from it).
PACKAGES = ("vae_jax", "experiments", "studies", "configs")
_OURS = tuple(os.path.join(REPO, package) + os.sep for package in PACKAGES)
# Errors that explain themselves in one line, by module: only modules already
# imported are looked at (an error's class is loaded with its module), so the sweep
# driver never imports TensorFlow to classify an error.
USER_ERRORS = {
    "vae_jax.core.checks": ("ConfigError",),
    "vae_jax.training.workdir": ("WorkdirError",),
    "vae_jax.data.datasets": ("DatasetUnavailableError",),
    "vae_jax.data.idx": ("IdxError",),
    "vae_jax.data.tfds_files": ("ManualFileError",),
    "vae_jax.data.binarized_mnist": ("EmbeddedDataError",),
    "vae_jax.training.step": ("NonFiniteError",),
    "vae_jax.training.checkpoints": ("CheckpointError",),
    "vae_jax.training.metrics": ("MetricsError",),
    "vae_jax.analysis.sweeps": ("SweepError",),
    "vae_jax.analysis.tables": ("TableError",),
    "vae_jax.analysis.readme_row": ("RowError",),
}
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free space, then rerun the same command (it resumes)",
    errno.EDQUOT: "the disk quota is exceeded: free space, then rerun the same command",
    errno.EACCES: "this user may not access it: fix its permissions or use another path",
    errno.EPERM: "this user may not access it: fix its permissions or use another path",
    errno.EROFS: "the file system is read-only: use a path on a writable one",
    errno.ENOENT: "no such file or directory: check the path",
    errno.ENOTDIR: "a component of the path is a file, not a directory: check the path",
    errno.EISDIR: "it is a directory where a file is expected: check the path",
}


def _user_errors() -> tuple[type, ...]:
  found = []
  for module, names in USER_ERRORS.items():
    if module in sys.modules:
      found += [getattr(sys.modules[module], name) for name in names]
  return tuple(found)


def one_line(error: BaseException) -> str:
  """The terminal's line for an error: its type, what is wrong and what would do."""
  if isinstance(error, OSError) and error.errno is not None:
    path = error.filename or ""
    advice = _OS_ADVICE.get(error.errno, error.strerror or "")
    return f"FATAL {type(error).__name__}: {path}{': ' if path else ''}{advice}."
  text = " ".join(str(error).split()) or "(no message)"
  if isinstance(error, _user_errors()):
    return f"FATAL {type(error).__name__}: {text}"
  if len(text) > 300:
    text = text[:300] + " ..."
  return (f"FATAL {type(error).__name__}: {text} (unexpected: the traceback is in the log "
          f"file; --verbose prints it)")


class _Terminal(py_logging.Filter):
  """On the terminal: the project's log lines, other libraries' one-line errors only."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if _VERBOSE.present and _VERBOSE.value:
      return True
    if record.exc_info:
      return False  # the traceback is in the log file; the terminal gets the FATAL line
    ours = os.path.abspath(record.pathname).startswith(_OURS)
    return ours or record.levelno >= py_logging.ERROR and "\n" not in record.getMessage()


class _LogFile(py_logging.Handler):
  """Appends every record to DIRECTORY/NAME once the directory exists and is writable.

  Records are held until then: the log file must not create the workdir (a run
  refused at validation leaves nothing behind), and the first lines of a run come
  before its workdir is made.
  """

  def __init__(self, directory: str, name: str):
    super().__init__(level=py_logging.DEBUG)
    self.path = os.path.join(os.path.abspath(directory), name)
    self._held: list[str] = []
    self._file = None
    self.setFormatter(logging.PythonFormatter())

  def emit(self, record: py_logging.LogRecord) -> None:
    try:
      text = self.format(record) + "\n"
      if self._file is not None and not _same_file(self._file, self.path):
        self._file.close()  # moved away (--overwrite sets the old run aside): a new file
        self._file = None
      if self._file is None:
        self._held = self._held[-10_000:] + [text]
        directory = os.path.dirname(self.path)
        if not (os.path.isdir(directory) and os.access(directory, os.W_OK)):
          return
        self._file = open(self.path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
        text, self._held = "".join(self._held), []
      self._file.write(text)
      self._file.flush()
    except (OSError, ValueError):  # a full disk (or a closed file at exit): not a 2nd error
      pass

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    super().close()


def _same_file(file, path: str) -> bool:
  try:
    return os.path.samestat(os.fstat(file.fileno()), os.stat(path))
  except OSError:
    return False


def log_to_file(directory: Optional[str], name: str) -> Optional[_LogFile]:
  """Also logs to DIRECTORY/NAME.log (for a main that picks its workdir itself)."""
  if not directory:
    return None
  handler = _LogFile(directory, f"{name}.log")
  py_logging.getLogger().addHandler(handler)
  return handler


def _errors_to_the_log() -> None:
  """Errors Python would print itself (from threads, C++ callbacks, finalizers) go to the log.

  On a full disk, tensorstore's writer threads call into an asyncio loop that orbax
  has closed, and CPython prints each failure's traceback (sys.excepthook) on the
  terminal: dozens of them around the one line that says what happened.
  """
  def log(text, exc_type, value, tb):
    logging.error("%s", text, exc_info=(exc_type, value, tb))
  sys.excepthook = lambda t, v, tb: log("Uncaught error", t, v, tb)
  sys.unraisablehook = lambda u: log(f"Ignored error in {u.object!r}", u.exc_type,
                                     u.exc_value, u.exc_traceback)
  threading.excepthook = lambda a: log(f"Error in thread {a.thread}", a.exc_type,
                                       a.exc_value, a.exc_traceback)


def run(main: Callable[[list[str]], None], name: str, workdir_flag: str = "workdir") -> None:
  """``absl.app.run(main)``; ``name``: the log file's name (WORKDIR/NAME.log)."""

  def wrapped(argv: list[str]) -> None:
    logging.get_absl_handler().addFilter(_Terminal())
    log_file = log_to_file(getattr(flags.FLAGS, workdir_flag, None)
                            if workdir_flag in flags.FLAGS else None, name)
    if not _VERBOSE.value:
      _errors_to_the_log()
    try:
      main(argv)
    except preemption.Stopped as e:
      logging.warning("%s", e)  # exit status 0: nothing lost; the same command resumes
      preemption.exit_if_abandoned(0)  # not waiting for a long device call left running
    except (app.UsageError, SystemExit):
      raise
    except Exception as e:  # pylint: disable=broad-except  # every error: one line
      line = one_line(e)
      logging.error("%s", line, exc_info=e)  # the log file (and --verbose) get the traceback
      if _VERBOSE.value:
        raise
      where = f" Log: {log_file.path}" if log_file and log_file._file else ""  # pylint: disable=protected-access
      sys.exit(line + (where if "unexpected" in line else ""))

  app.run(wrapped)
