"""Files that survive a crash and say what is wrong with them: atomic JSON writes, text and JSON reads that name a
damaged file, and the exclusive lock that gives one process a directory.

Temporary names carry the writer's process id, so two processes never write through the same temporary file; the
lock is an advisory ``flock`` on a file in the directory, released by the kernel however its holder ends (a
``kill -9`` included), so a dead holder never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

LOCK_FILE = ".s2s-fast.lock"


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's entry to disk (a directory: the names created or renamed in it)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def temporary_path(path: Path, suffix: str = "tmp") -> Path:
    """A hidden name beside ``path`` that is this process's own: ``dir/.name.<pid>.<suffix>``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{suffix}")


def write_json_atomic(path: Path, value) -> None:
    """Write JSON to ``path`` so that readers see the old content or the new one, never a mix."""
    write_files_atomic({path: json.dumps(value, indent=1) + "\n"})


def write_files_atomic(files: dict) -> None:
    """Write UTF-8 texts ({path: text}) so that readers see the old contents or the new ones: each is written beside
    its file first and renamed over it once all are written, so a write cut short (a full disk, Ctrl-C) leaves every
    earlier file as it was (a file and the settings that describe it stay a pair). A symbolic link is written
    through (its target replaced, the link kept), a file keeps its mode, and what is not a regular file (a FIFO,
    /dev/stdout) or lies in a directory this process cannot write is written in place. An OSError names the path."""
    staged, in_place, current = [], [], None
    try:
        for current, text in files.items():
            if os.path.exists(current) and not os.path.isfile(current):  # through links: /dev/stdout, a FIFO
                in_place.append((Path(current), None, text, current))
                continue
            target = Path(os.path.realpath(current))  # a regular file, or none yet: beside it, through any link
            temporary = _staged(target, text)
            (in_place if temporary is None else staged).append((target, temporary, text, current))
        for target, temporary, _, current in staged:
            os.replace(temporary, target)
    except OSError as error:
        raise _not_written(error, current) from None
    finally:
        for _, temporary, _, _ in staged:
            temporary.unlink(missing_ok=True)
    for directory in {target.parent for target, _, _, _ in staged}:
        fsync_path(directory)
    for target, _, text, path in in_place:
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as error:
            raise _not_written(error, path) from None


def _staged(target: Path, text: str) -> Path | None:
    """``text`` written and flushed to a temporary file beside ``target`` (a regular file, or none yet) with its mode,
    to be renamed over it; None where ``target`` is to be written in place (its directory closed to this process)."""
    exists = target.exists()
    temporary = temporary_path(target)
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            if exists:
                shutil.copymode(target, temporary)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except PermissionError:
        temporary.unlink(missing_ok=True)
        if exists and os.access(target, os.W_OK):
            return None
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _not_written(error: OSError, path) -> OSError:
    return OSError(error.errno, f"{path}: not written ({error.strerror or one_line(error)}); any file there before "
                                "is left as it was")


def read_text(path: Path) -> str:
    """A UTF-8 text file's content, line ends as they are and a leading byte-order mark (Notepad's) left out; a file
    that is not UTF-8 raises ValueError naming it and the byte."""
    return decode_text(Path(path).read_bytes(), str(path))


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 bytes as text (a leading byte-order mark left out); ValueError naming ``name`` and the byte if they are
    not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{name}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def text_lines(text: str) -> list[str]:
    """The lines of ``text`` as ``wc -l`` counts them: broken at each "\n" only, a "\r" before it dropped. Not
    str.splitlines, which also breaks at U+2028, U+0085, form feeds and a lone "\r": a sentence holding one of
    those would shift every line after it against its parallel file, or against decode's outputs."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def one_line(error: BaseException) -> str:
    """An error's message on one line, its whitespace runs (a library's line breaks and indents) made one space; the
    error's type name where it has no message. How every message the toolkit passes on from a library reads."""
    return " ".join(str(error).split()) or type(error).__name__


def read_json(path: Path):
    """The JSON value in ``path``; a file that is not JSON raises ValueError naming it."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: damaged, not JSON ({error})") from None


@contextlib.contextmanager
def locked_directory(directory: Path, purpose: str) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (created if missing) while the block runs.

    Raises:
        BlockingIOError: another process holds it; the message names its process id and ``purpose`` (what the
            holder is doing there, e.g. "s2s-fast train").
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a+") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "unknown"
            raise BlockingIOError(f"{directory} is in use by another {purpose} (pid {holder}); wait for it to end "
                                  "or choose another directory") from None
        try:
            file.truncate(0)
            file.write(f"{os.getpid()}\n")
            file.flush()
            yield
        finally:
            file.truncate(0)
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)
