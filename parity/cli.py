"""The `parity` command. Exit status: 0 success / no unexpected divergence, 1 unexpected
divergence (or fixtures that changed on regen), 2 bad input with one line on stderr, 3 internal
error (a bug, never a verdict on an implementation), 130 Ctrl-C."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from parity.core.default_paths import DEFAULT_FIXTURES, DEFAULT_RESULTS
from parity.core.errors import InputError, first_line
from parity.suite.checkouts import declared

INTERNAL_ERROR = 3
DEBUG_VARIABLE = "PARITY_DEBUG"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line and exit 2 like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"parity: error: {message} (see `{self.prog} --help`)\n")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, help="a Z-Image checkpoint folder (replaces the tiny defaults)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), help="override every case's dtype")
    p.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES, help="fixture root (default: fixtures)")
    _checkouts(p)


def _checkouts(p: argparse.ArgumentParser) -> None:
    for checkout in declared().values():
        p.add_argument(
            checkout.option, type=Path, metavar="DIR", dest=checkout.dest,
            help=f"{checkout.what}, for the adapters that import it (or {checkout.variable}=DIR)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="parity", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--debug", action="store_true", help=f"print the traceback of an internal error (or set {DEBUG_VARIABLE}=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run cases x adapters x stages against the golden fixtures")
    run.add_argument("--cases", default="*", help="glob over case ids or case-file stems")
    run.add_argument("--adapters", type=_csv, help="comma-separated adapter names (default: all default ones)")
    run.add_argument("--stages", type=_csv, help="comma-separated stages (default: every implemented stage)")
    run.add_argument("--reference", help="compare against this reference instead of each case's default")
    run.add_argument("--mode", choices=("free", "forced"), default="free")
    run.add_argument(
        "--with-forced", action="store_true",
        help="also run teacher-forced (declared divergences checked in both modes; the report overlays both)",
    )
    run.add_argument(
        "--blocks", action="store_true",
        help="for each denoise divergence, rerun its first divergent step per block to name where it starts",
    )
    run.add_argument("--dump", type=Path, help="write every adapter's stage outputs under DIR/<case>/")
    run.add_argument(
        "--save-images", type=Path, metavar="DIR",
        help="write each adapter's decoded image as DIR/<case>/<adapter>.png, and the golden fixture's as "
        "<reference>.fixture.png (the run's own mode; with --with-forced, the free-running images)",
    )
    run.add_argument("--report", type=Path, help="write the HTML report here")
    run.add_argument("--json", type=Path, help="write the machine-readable results here")
    run.add_argument(
        "--shard", metavar="I/N",
        help="run only shard I of N (1 <= I <= N): the cases sorted by id, the k-th (from 0) in shard k mod N + 1; "
        "join the shards' --json results with `parity report --merge`",
    )
    run.add_argument(
        "-j", "--jobs", type=int, default=1, metavar="N",
        help="run cases in N worker processes, each with 1/N of the torch threads (default: 1, in this process)",
    )
    _common(run)

    tok = sub.add_parser("tokenize", help="tokenize text with the reference (or a checkpoint's) tokenizer")
    source = tok.add_mutually_exclusive_group(required=True)
    source.add_argument("--text")
    source.add_argument("--stdin", action="store_true", help="read the text from standard input")
    tok.add_argument("--json", action="store_true", help="print {'ids': [...], 'tokens': [...]}")
    tok.add_argument("--jsonl", action="store_true", help="with --stdin: one JSON string per line in, one object out")
    tok.add_argument("--checkpoint", type=Path)

    render = sub.add_parser("render", help="one adapter's template and token ids for one case")
    render.add_argument("--adapter", required=True)
    render.add_argument("--case", type=Path, required=True, help="a case file (TOML)")
    render.add_argument("--case-id", help="which case in the file (default: the first)")
    render.add_argument("--json", action="store_true")
    _common(render)

    schedule = sub.add_parser("schedule", help="one adapter's sigmas and DiT time input")
    schedule.add_argument("--adapter", required=True)
    schedule.add_argument("--steps", type=int, required=True)
    schedule.add_argument("--shift", type=float, default=3.0)
    schedule.add_argument("--denoise", type=float, default=1.0, help="denoising strength in (0, 1]")
    schedule.add_argument(
        "--height", type=int, default=1024, help="image height in pixels (where the schedule depends on the size)"
    )
    schedule.add_argument("--width", type=int, default=1024, help="image width in pixels")
    schedule.add_argument(
        "--sampler", default="euler", help="euler or res_multistep (the case key); an adapter without it says so"
    )
    schedule.add_argument("--json", action="store_true", help="print {'sigmas': [...], 'model_t': [...]}")
    _common(schedule)

    export = sub.add_parser("export", help="write a synthetic model as a checkpoint the real library loads")
    export.add_argument("--format", choices=("diffusers", "comfyui"), required=True)
    export.add_argument("--out", type=Path, required=True, help="an empty or new folder")
    export.add_argument(
        "--size", choices=("tiny", "mid"), default="tiny",
        help="tiny: the reference model the fixtures use; mid: ~1.3 GiB with the real shapes' ratios (benchmarks)",
    )
    export.add_argument(
        "--max-shard-size", help="diffusers format: shard the transformer and text encoder, e.g. 200MB"
    )

    fixtures = sub.add_parser(
        "fixtures", help="check, regenerate or list stale golden fixtures, or rebuild a lost manifest from the files"
    )
    fixtures.add_argument("action", choices=("check", "regen", "stale", "rebuild"))
    fixtures.add_argument(
        "--all", action="store_true", help="regen: accept every change without failing (default: exit 1 if any moved)"
    )
    fixtures.add_argument(
        "--check", action="store_true",
        help="regen: rerun the live references and fail if they no longer reproduce the stored fixtures; write nothing",
    )
    fixtures.add_argument("--cases", default="*")
    fixtures.add_argument("--changelog", type=Path, default=Path("reports/fixture-changelog.md"))
    _common(fixtures)

    tables = sub.add_parser(
        "tables", help="Markdown tables of observed implementation differences, capabilities and claims"
    )
    tables.add_argument(
        "--adapters", type=_csv, help="comma-separated adapter names, one column each (default: every default one)"
    )
    tables.add_argument("--claims", type=Path, help="the claims ledger (default: <fixtures>/claims.toml)")
    tables.add_argument("--out", type=Path, help="also write the Markdown here")
    tables.add_argument("--check", action="store_true", help="exit 1 when a verdict differs from the ledger's")
    tables.add_argument("--checkpoint", type=Path, help="a Z-Image checkpoint folder (replaces the tiny defaults)")
    tables.add_argument("--device", default="cpu")
    tables.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES, help="fixture root (default: fixtures)")
    _checkouts(tables)

    report = sub.add_parser("report", help="render the HTML report from a results JSON, or merge shards' results")
    report.add_argument(
        "--json", type=Path,
        help=f"the results to render (default: {DEFAULT_RESULTS}); with --merge, where to write the merged results",
    )
    report.add_argument(
        "--merge", type=Path, nargs="+", metavar="SHARD_JSON",
        help="join every shard's `parity run --shard I/N --json` results into the unsharded run's; "
        "exit 1 on an unexpected divergence, like the run",
    )
    report.add_argument("--out", type=Path, default=Path("reports/parity.html"))

    case = sub.add_parser("case", help="write a case file from another tool's workflow file")
    case.add_argument(
        "--from-workflow", type=Path, required=True, metavar="FILE",
        help="a ComfyUI workflow (UI or API JSON); nodes not understood are listed on stderr and in the file",
    )
    case.add_argument("--out", type=Path, metavar="CASE_TOML", help="write the case here (default: standard output)")
    case.add_argument("--id", help="the case id (default: from the file name)")
    return parser


def one_line(message: str) -> str:
    """`message` with every control character escaped: a newline or terminal escape in a user's
    string (a case id, a file name) can neither split the line nor reach the terminal raw."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in message)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from parity import commands

        return getattr(commands, args.command)(args)
    except InputError as e:
        print(f"parity: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("parity: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # anything else is the tool failing: its own status, so CI never reads it as a divergence
        if args.debug or os.environ.get(DEBUG_VARIABLE):
            traceback.print_exc()
        detail = f": {one_line(first_line(e))}" if str(e).strip() else ""
        print(
            f"parity: internal error: {type(e).__name__}{detail}"
            + f" (a failure of parity itself, not a divergence; rerun with `parity --debug {args.command} ...` "
            f"or {DEBUG_VARIABLE}=1 for the traceback)",
            file=sys.stderr,
        )
        return INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
