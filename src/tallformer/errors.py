"""The one base of every error tallformer raises on purpose, and how such errors list things.

`TallformerError` is what the CLI catches and prints as one line (`error: <message>`,
exit status 2); any other exception is a bug and keeps its traceback. Each part of the
library derives its own error from it (`ConfigError`, `VideoError`, `BankError`, ...), so
a caller can catch one part's errors or all of them.

This module imports nothing of ours (the bottom layer, with `ops`, `config`, `atomic`).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["TallformerError", "TallformerWarning", "name_list"]


class TallformerError(Exception):
    """A failure the user can fix: the message names the file or key and the fix."""


class TallformerWarning(UserWarning):
    """A problem that does not stop the work; the CLI prints it as `warning: <message>`."""


def name_list(names: Iterable[object], limit: int = 10, sep: str = ", ") -> str:
    """The first `limit` names joined by `sep`, then `... and M more` when there are more.

    `name_list(["a", "b", "c"], 2)` -> `"a, b, ... and 1 more"`. With ``sep="\\n  - "``
    it makes an indented list (the caller writes the first bullet).
    """
    items = [str(n) for n in names]
    shown = items[:limit]
    if len(items) > limit:
        shown.append(f"... and {len(items) - limit} more")
    return sep.join(shown)
