"""Git revisions as source trees for `harness.py ab`: resolve, describe, check out, remove.

A revision other than the working tree is checked out with `git worktree add --detach` into
a temporary folder. Nothing is installed there: the A/B driver runs each tree's own scripts
with the interpreter of the current one (the shared .venv) and Jittor keeps its one kernel
cache under the user's home, keyed by that interpreter, so neither side pays for a second
setup. `Checkouts` removes every worktree it added, and its folder, on every exit path:
normal return, an exception, Ctrl-C (KeyboardInterrupt) and SIGTERM (which the A/B driver
turns into an exception first).
"""
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from bench.gate.sides import BadInput

WORKING_TREE = "WORKTREE"   # the CANDIDATE default: the checkout as it is, changes and all
GIT_TIMEOUT_S = 120


def _git(repo, *args, check=True):
    try:
        proc = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S)
    except FileNotFoundError:
        raise BadInput("git is not installed: harness.py ab needs git") from None
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, ["git", *args], proc.stdout,
                                            proc.stderr)
    return proc


def repo_root(path):
    """The top folder of the git checkout holding `path`; BadInput when there is none."""
    proc = _git(path, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise BadInput(f"{path}: not a git checkout (harness.py ab compares git revisions; "
                       "clone the repository with its history)")
    return proc.stdout.strip()


@dataclass(frozen=True)
class Revision:
    """One side of an A/B run: what the user named and what that resolved to."""

    name: str            # as given: a branch, tag, sha, HEAD~1, or WORKTREE
    sha: str             # the commit (for WORKTREE: HEAD's, with the changes on top)
    subject: str         # the commit's first line
    dirty: bool          # WORKTREE with uncommitted changes to tracked files
    changed: tuple = ()  # those files (at most 20 named)

    @property
    def is_working_tree(self):
        return self.name == WORKING_TREE

    def label(self):
        short = self.sha[:10]
        if self.is_working_tree:
            return f"working tree (HEAD {short}{', dirty' if self.dirty else ', clean'})"
        return f"{self.name} ({short})" if self.name != self.sha else short

    def to_dict(self):
        return {"name": self.name, "sha": self.sha, "subject": self.subject,
                "dirty": self.dirty, "changed": list(self.changed),
                "working_tree": self.is_working_tree}


def resolve(repo, name):
    """A Revision for `name` (or WORKING_TREE); BadInput naming it when git does not know it."""
    ref = "HEAD" if name == WORKING_TREE else name
    proc = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if proc.returncode != 0:
        if name == WORKING_TREE:
            raise BadInput(f"{repo}: the checkout has no commit yet; commit once, then "
                           "compare a revision with the working tree")
        raise BadInput(f"unknown revision {name!r} in {repo} (give a branch, tag, sha or "
                       "HEAD~N that `git rev-parse` knows)")
    sha = proc.stdout.strip()
    subject = _git(repo, "log", "-1", "--format=%s", sha).stdout.strip()
    changed = ()
    if name == WORKING_TREE:
        status = _git(repo, "status", "--porcelain", "--untracked-files=no").stdout
        changed = tuple(line[3:] for line in status.splitlines() if line.strip())
    return Revision(name, sha, subject, bool(changed), changed[:20])


def require_path(repo, rev, path, what):
    """BadInput unless `path` exists in the revision's tree (checked without a checkout)."""
    if rev.is_working_tree:
        if not os.path.exists(os.path.join(repo, path)):
            raise BadInput(f"the working tree of {repo} has no {path}: {what}")
        return
    proc = _git(repo, "cat-file", "-e", f"{rev.sha}:{path}", check=False)
    if proc.returncode != 0:
        raise BadInput(f"revision {rev.name} ({rev.sha[:10]}) has no {path}: {what}")


class Checkouts:
    """Source trees for revisions, removed again on exit.

        with Checkouts(repo) as co:
            base_dir = co.tree(base_rev)      # a temporary worktree
            cand_dir = co.tree(WORKING_TREE)  # the checkout itself
    """

    def __init__(self, repo):
        self.repo = repo
        self.root = None
        self.added = []

    def __enter__(self):
        self.root = tempfile.mkdtemp(prefix="diffbench-ab-")
        return self

    def tree(self, rev):
        if rev.is_working_tree:
            return self.repo
        path = os.path.join(self.root, f"{len(self.added)}-{rev.sha[:10]}")
        try:
            _git(self.repo, "worktree", "add", "--detach", "--quiet", path, rev.sha)
        except subprocess.CalledProcessError as e:
            raise BadInput(f"git worktree add {rev.name}: {e.stderr.strip() or e}") from None
        self.added.append(path)
        return path

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Remove every worktree added and the temporary folder (safe to call twice)."""
        for path in reversed(self.added):
            _git(self.repo, "worktree", "remove", "--force", path, check=False)
        if self.added:
            _git(self.repo, "worktree", "prune", check=False)
        self.added = []
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


def list_worktrees(repo):
    """The paths of every worktree git knows for `repo` (the checkout itself first)."""
    out = _git(repo, "worktree", "list", "--porcelain").stdout
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]
