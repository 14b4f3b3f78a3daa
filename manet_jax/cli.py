"""What the command-line tools share: one clear line for a user's mistake, a traceback for a bug.

The project's errors name the file or key and what was expected (ValueError, OSError and
FloatingPointError with their subclasses: a missing data folder, a malformed annotation, a
refused checkpoint, a NaN loss), so the tools print that line and exit with status 1;
`--verbosity=1` shows the traceback as well. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags

from manet_jax import distributed

USER_ERRORS = (ValueError, OSError, FloatingPointError)
NAMED_STEPS = ("best", "latest")


def define_step_flag(
    default: str = "best", help: str = "Checkpoint: 'best' (by eval_accuracy), 'latest' or a step number."
) -> flags.FlagHolder:
    """--step, checked when the flags are parsed: 'best' (by eval_accuracy), 'latest' or a number."""
    holder = flags.DEFINE_string("step", default, help)
    flags.register_validator(
        "step", lambda v: v in NAMED_STEPS or v.isdigit(), message="--step must be 'best', 'latest' or a step number"
    )
    return holder


def step_value(holder: flags.FlagHolder) -> int | str:
    """The --step flag as load_run takes it: 'best', 'latest' or an int."""
    return holder.value if holder.value in NAMED_STEPS else int(holder.value)


def run(main: Callable) -> None:
    """absl's app.run(main), with unknown config keys and the project's errors as one line."""

    def guarded(argv):
        try:
            result = main(argv)
        except BaseException as err:
            distributed.on_error(err)  # one of several processes: a lost peer is named instead (exit 75)
            if not isinstance(err, USER_ERRORS) or _verbose():
                raise
            sys.exit(f"error: {err}\n(--verbosity=1 shows the traceback)")
        distributed.finish()  # one of several processes: the last barrier, then leave in order
        return result

    app.run(guarded, flags_parser=_parse_flags)


def _verbose() -> bool:
    return flags.FLAGS["verbosity"].present and flags.FLAGS.verbosity >= 1


def _parse_flags(argv):
    """absl's parser; a --config.<key> that the config does not have, and a syntax error in the
    config file (its file and line), are named in one line."""
    try:
        return app.parse_flags_with_usage(argv)
    except SyntaxError as err:  # in the --config file (ml_collections imports it while parsing)
        code = f": {err.text.strip()}" if err.text and err.text.strip() else ""
        sys.exit(f"error: {err.filename} line {err.lineno}: {err.msg}{code} (a syntax error in the config file)")
    except (AttributeError, KeyError) as err:
        key = str(err).strip("\"'")
        overrides = [a.lstrip("-").split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        named = [o for o in overrides if key in o.split(".")] or overrides
        sys.exit(
            f"error: {', '.join(named) or key} is not a key of the config ({key!r} does not exist); "
            f"the keys are those of the --config file (manet_jax/defaults.py lists them all)"
        )
