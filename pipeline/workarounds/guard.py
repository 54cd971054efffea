"""The one way a workaround touches a framework: check, patch for one run, restore.

Every workaround in this package is a `Workaround`: it names the internals it
relies on (`missing_internals`) and the attributes it replaces (`patches`).
`applied(workaround)` is the only place that changes them:

- If an internal is missing (another Beam release), or checking it fails, it
  logs one warning line and the block runs with the framework's own behaviour.
  A workaround never fails a run.
- Otherwise it replaces all the attributes or none: if one replacement fails,
  those already made are undone, and the block runs without the workaround.
- When the block ends, every replaced attribute is restored exactly as it was
  (or deleted again, where the owner only inherited it), so a second run in the
  same process, or the next test, sees the framework untouched.

Nested and concurrent blocks of the same workaround (two runs in one process)
share one application; the last to end restores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

_LOGGER = logging.getLogger(__name__)
_LOCK = threading.Lock()
# name -> (how many blocks use it, the function that undoes its patches)
_APPLIED: dict[str, tuple[int, Callable[[], None]]] = {}


@dataclasses.dataclass(frozen=True)
class Patch:
    """Set `owner.name` (a class or a module) to `replacement` for the run."""

    owner: Any
    name: str
    replacement: Any


class Workaround:
    """One workaround; subclasses set `name` and `summary` and implement the two
    methods. `session()` may add set-up and tear-down around the patched block."""

    name: str = ""
    # Why it exists, in one line, for the warning when it turns itself off.
    summary: str = ""

    def missing_internals(self) -> list[str]:
        """The framework internals this workaround needs that are not there."""
        raise NotImplementedError

    def patches(self) -> Sequence[Patch]:
        """The replacements, built from the attributes as they are now."""
        raise NotImplementedError

    def session(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


def missing_attributes(owner: Any, names: Sequence[str]) -> list[str]:
    label = getattr(owner, "__name__", repr(owner))
    return [f"{label}.{name}" for name in names if not hasattr(owner, name)]


def missing_parameters(function: Any, parameters: Sequence[str], label: str) -> list[str]:
    """`label` when `function` does not take exactly `parameters`, in that order."""
    try:
        found = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return [f"{label} (no signature)"]
    return [] if found == list(parameters) else [f"{label}({', '.join(parameters)})"]


def missing_in_source(function: Any, snippets: Sequence[str], label: str) -> list[str]:
    """The snippets not found in the source of `function` (white space ignored).
    Without installed sources nothing can be checked, so all are missing."""
    try:
        source = "".join(inspect.getsource(function).split())
    except (OSError, TypeError):
        return [f"{label} (source not installed)"]
    return [f"{label}: {snippet}" for snippet in snippets if "".join(snippet.split()) not in source]


def beam_version() -> str:
    try:
        import apache_beam

        return apache_beam.__version__
    except ImportError:
        return "not installed"


def _apply(patches: Sequence[Patch]) -> Callable[[], None]:
    """Makes every patch, or none (raising the first failure); returns the undo."""
    done: list[tuple[Patch, bool, Any]] = []

    def undo() -> None:
        for patch, owned, original in reversed(done):
            if owned:
                setattr(patch.owner, patch.name, original)
            else:
                # The owner inherited the attribute: remove ours, unmasking it.
                delattr(patch.owner, patch.name)

    try:
        for patch in patches:
            own = vars(patch.owner)
            owned = patch.name in own
            original = own.get(patch.name)
            setattr(patch.owner, patch.name, patch.replacement)
            done.append((patch, owned, original))
    except Exception:
        undo()
        raise
    return undo


def _off(workaround: Workaround, reason: str) -> None:
    _LOGGER.warning(
        "workaround %s is off (%s): %s; the run goes on with Beam's own behaviour",
        workaround.name,
        workaround.summary,
        reason,
    )


def _enter(workaround: Workaround) -> bool:
    try:
        missing = workaround.missing_internals()
    except Exception as error:  # noqa: BLE001 - a check must never fail the run
        missing = [f"checking failed: {type(error).__name__}: {error}"]
    if missing:
        _off(workaround, f"apache-beam {beam_version()} lacks {', '.join(missing)}")
        return False
    with _LOCK:
        depth, undo = _APPLIED.get(workaround.name, (0, None))
        if depth == 0:
            try:
                undo = _apply(workaround.patches())
            except Exception as error:  # noqa: BLE001 - nor may a patch
                _off(workaround, f"patching failed: {type(error).__name__}: {error}")
                return False
        _APPLIED[workaround.name] = (depth + 1, undo)
    return True


def _exit(workaround: Workaround) -> None:
    with _LOCK:
        depth, undo = _APPLIED[workaround.name]
        if depth == 1:
            del _APPLIED[workaround.name]
            undo()
        else:
            _APPLIED[workaround.name] = (depth - 1, undo)


@contextlib.contextmanager
def applied(workaround: Workaround, disabled: Collection[str] = ()) -> Iterator[bool]:
    """Runs the block with `workaround` in force; yields whether it is. Names in
    `disabled` (the --disable_workaround flag) run without it, silently."""
    if workaround.name in disabled or not _enter(workaround):
        yield False
        return
    with contextlib.ExitStack() as stack:
        # Unwound last: the patches outlive the session's own tear-down.
        stack.callback(_exit, workaround)
        try:
            stack.enter_context(workaround.session())
        except Exception as error:  # noqa: BLE001 - its set-up failed: run as Beam would
            stack.close()
            _off(workaround, f"starting failed: {type(error).__name__}: {error}")
            yield False
            return
        yield True


def in_force(name: str) -> bool:
    """Whether a workaround of that name is applied now (for tests)."""
    with _LOCK:
        return name in _APPLIED
