"""Error text the harness records or shows, made readable: terminal escape sequences out (Jittor
colours its log lines, and a pipe or file keeps the codes), and the one line that decides a
failure picked out of a long message (a failed compile's first `error:` line, not the command
that ran it)."""
import os
import re

# ESC [ ... final byte; and the same SGR codes where the ESC byte was lost on the way (a
# terminal log copied into a file or a report shows them as "[38;5;1m").
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\[(?:\d{1,3}(?:;\d{1,3})*)?m(?!\])")
# A compiler's or a library's decisive line, best first.
_DECISIVE = [re.compile(p, re.I) for p in (
    r"\berror\b:",          # g++ / nvcc / clang: "file:12:3: error: ...", "fatal error: x.h"
    r"\berror\b",           # "CUDA error at ...", "... error happened"
    r"\b(Exception|Error)\b",  # a Python exception line: "RuntimeError: ..."
)]
# How much of a failed process's log to search for its decisive line: a compiler's first
# `error:` comes before its notes, and a long compile log puts it far from the end.
DECISIVE_LOG_CHARS = 256 * 1024
# Lines that mention an error without saying what it was.
_NOT_DECISIVE = re.compile(r"Error happend during compilation|Compile (fused )?operator|"
                           r"Run cmd failed|^Traceback|^\s*File \"", re.I)


def strip_ansi(text):
    return _ANSI.sub("", text or "")


def decisive_line(text, limit=300, default=None):
    """The line of an error text a reader needs first: the first compiler `error:` line, else
    the first line naming an error, else `default` (None: the last non-empty line); escape
    codes stripped."""
    lines = [l.strip() for l in strip_ansi(text).splitlines() if l.strip()]
    for pattern in _DECISIVE:
        for line in lines:
            if pattern.search(line) and not _NOT_DECISIVE.search(line):
                return line[:limit]
    if default is not None:
        return default[:limit]
    return lines[-1][:limit] if lines else ""


def failure_line(error, log="", limit=300):
    """The one line to show for a failed process: the decisive line of its error and its log
    (a compiler's `error:` line in the log beats the command line the error quotes), else the
    error's own first line (a Python exception's message names no compiler error, and the
    log's last line is whatever the process printed last)."""
    first = next((l.strip() for l in strip_ansi(error).splitlines() if l.strip()), "")
    return decisive_line(f"{error or ''}\n{log or ''}", limit, default=first)


def log_tail(path, chars):
    """The last `chars` characters (about: bytes) of a process's log, escape codes stripped;
    '' when it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - chars))
            return strip_ansi(f.read().decode(errors="replace")).strip()
    except OSError:
        return ""
