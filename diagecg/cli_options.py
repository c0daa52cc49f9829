"""What every ``diagecg`` command shares: its exit codes, its ``-v``/``--quiet`` options and the patient
options.

``-q`` means one thing wherever it appears: the question (``diagecg infer -q``). No other subcommand
takes ``-q``; ``--quiet`` (errors only) has no short form, so ``diagecg report rec.hea -q "AF?"`` is an
error that says where questions go instead of a report of a record called "AF?".

Exit codes (the same failure gives the same code in every mode, plain text or ``--json``):

==== ===========================================================================================
code meaning
==== ===========================================================================================
0    everything asked was done
1    it ran, and something failed: a record could not be read or answered (its error line says
     why; the other records were answered), a training stage or an export check failed, or an
     unexpected internal error (shown with its traceback)
2    nothing ran: a bad option, config, bundle, question or record list
3    nothing failed, but a question is not in the bundle's question catalogue: no answer given
     (``diagecg questions`` lists the supported ones)
==== ===========================================================================================
"""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
import logging
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from diagecg.types import PATIENT_LIMITS, PATIENT_SEXES


class ExitCode(enum.IntEnum):
    """The exit codes of every ``diagecg`` command (table in the module docstring)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNSUPPORTED = 3


EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 something failed (a record, a stage, an export check; the error line says "
    "why); 2 nothing ran (bad option, config, bundle, question or record list); 3 a question is not in "
    "the bundle's catalogue (no answer given)."
)


def fail(error: BaseException, code: ExitCode) -> None:
    """End the command: ``error`` as one ``error:`` line on stderr, and ``code``."""
    click.echo(f"error: {' '.join(str(error).split())}", err=True)
    sys.exit(int(code))


# third-party libraries that log every step at INFO; they follow -v, else only their warnings show
NOISY_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "httpx", "urllib3")


@contextlib.contextmanager
def log_level(verbose: bool, quiet: bool) -> Iterator[None]:
    """Root log level for one command (``-v``: debug; ``--quiet``: errors only), restored after, so a
    command run in-process (tests, a host application) leaves logging as it found it."""
    root = logging.getLogger()
    saved = root.level, {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    if verbose:  # otherwise the levels stay as the group's own -v (or its default) set them
        root.setLevel(logging.DEBUG)
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)
    elif quiet:
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)


def verbosity_options() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``-v/--verbose`` and ``--quiet`` to a click command (no ``-q``: that is the question, module
    docstring). The command receives ``quiet`` if it takes it."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        wants_quiet = "quiet" in inspect.signature(fn).parameters

        @functools.wraps(fn)
        def wrapper(*args: Any, verbose: bool, quiet: bool, **kwargs: Any) -> Any:
            if verbose and quiet:
                raise click.UsageError("-v/--verbose and --quiet contradict each other")
            with log_level(verbose, quiet):
                return fn(*args, quiet=quiet, **kwargs) if wants_quiet else fn(*args, **kwargs)

        wrapper = click.option(
            "--quiet", "quiet", is_flag=True, help="Errors only: no warnings, no progress."
        )(wrapper)
        return click.option("-v", "--verbose", "verbose", is_flag=True, help="Log debug messages too.")(
            wrapper
        )

    return decorate


class SexType(click.ParamType):
    """``--sex``: ``male``/``female`` or ``M``/``F`` as DICOM and HL7 write them, any case."""

    name = "sex"
    ALIASES = {"m": "male", "male": "male", "f": "female", "female": "female"}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        sex = self.ALIASES.get(str(value).strip().lower())
        if sex is None:
            self.fail(f"{value!r} is not a sex: one of male, female, M, F (any case)", param, ctx)
        assert sex in PATIENT_SEXES, sex
        return sex

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[male|female|M|F]"


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN (which compares false with both bounds and slipped
    through) and infinities: a usage error, exit code 2."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def patient_options() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--age``, ``--sex``, ``--height-cm`` and ``--weight-kg`` (the command receives ``age``,
    ``sex``, ``height_cm`` and ``weight_kg``; None when not given): each overrides the record header's."""
    options = [
        click.option(
            "--age",
            type=FiniteFloatRange(*PATIENT_LIMITS["age_years"]),
            help="Patient age in years (overrides the header).",
        ),
        click.option(
            "--sex", type=SexType(), help="Patient sex, male/female or M/F, any case (overrides the header)."
        ),
        click.option(
            "--height-cm", type=FiniteFloatRange(*PATIENT_LIMITS["height_cm"]), help="Patient height in cm."
        ),
        click.option(
            "--weight-kg", type=FiniteFloatRange(*PATIENT_LIMITS["weight_kg"]), help="Patient weight in kg."
        ),
    ]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate
