"""The directory where prometheus_client's gunicorn workers keep their metric files.

gunicorn's master imports this module from gunicorn.conf.py, so it imports only the
standard library at the top: prometheus_client picks its mode when first imported,
and that must happen in the workers, after PROMETHEUS_MULTIPROC_DIR is set.
"""

from pathlib import Path


def reset_directory(path):
    """Create the directory, or empty it of a previous run's files, which would count twice."""
    directory = Path(path)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for leftover in directory.glob("*.db"):
        leftover.unlink()


def mark_worker_dead(pid, path):
    """Drop a dead worker's live gauge values, so they stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(path))
