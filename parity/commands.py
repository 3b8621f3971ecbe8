"""What each `parity` subcommand does; `cli.py` only parses arguments."""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import BinaryIO

from parity.core.default_paths import DEFAULT_RESULTS
from parity.core.errors import InputError
from parity.core.files import refuse_to_replace
from parity.golden.journal import regen_lock
from parity.golden.store import FixtureStore
from parity.models.context import Context, check_device
from parity.run.merge import merge_shards
from parity.run.plan import Options, RunPlan, Suite, groups, run_order
from parity.run.regen import check_drift, reference_runs, regenerate
from parity.run.results import RunResult
from parity.run.results_file import read_results, results_json, write_results
from parity.run.shard import parse_shard
from parity.stages import STAGES
from parity.suite.adapter import Unsupported, registered_adapters, unavailable_adapters
from parity.suite.cases import load_case_file, load_cases, parse_case
from parity.suite.checkouts import from_arguments


def print_json(data: object) -> None:
    print(json.dumps(data, ensure_ascii=False))


def _options(args: argparse.Namespace) -> Options:
    if args.checkpoint is not None and not args.checkpoint.is_dir():
        raise InputError(f"checkpoint folder not found: {args.checkpoint}")
    check_device(args.device)
    checkouts = tuple(sorted(from_arguments(args).items()))
    return Options(checkpoint=args.checkpoint, device=args.device, dtype=args.dtype, checkouts=checkouts)


def _apart(*files: tuple[str, Path]) -> None:
    """InputError when two of the named files are one, however spelled (`a/../x`, a symlink, a hard
    link): the later write would silently replace the earlier file, or an input the command reads."""
    for k, (flag_a, a) in enumerate(files):
        for flag_b, b in files[k + 1 :]:
            if os.path.realpath(a) == os.path.realpath(b) or (a.exists() and b.exists() and a.samefile(b)):
                raise InputError(f"{flag_a} {a} and {flag_b} {b} are the same file: one would overwrite the other")


def run(args: argparse.Namespace) -> int:
    shard = parse_shard(args.shard) if args.shard is not None else None
    if args.jobs < 1:
        raise InputError(f"-j must be at least 1, not {args.jobs}")
    if args.json and args.report:
        _apart(("--json", args.json), ("--report", args.report))
    for output in (args.json, args.report):
        if output is not None:
            refuse_to_replace(output)
    cases = load_cases(args.fixtures / "cases", args.cases)
    plan = RunPlan(
        fixtures=args.fixtures, adapters=args.adapters, stages=tuple(args.stages) if args.stages else STAGES,
        mode=args.mode, with_forced=args.with_forced, reference=args.reference, dump=args.dump, blocks=args.blocks,
        images=args.save_images, options=_options(args),
    )
    mine = shard.select(cases) if shard is not None else cases
    if args.jobs > 1 and mine:
        from parity.run.parallel import run_parallel

        results = run_parallel(plan, mine, args.jobs)
    else:
        suite = Suite(plan)
        results = [suite.run(mine, mode) for mode in plan.modes]
    data = results_json(results)
    if shard is not None:
        run_options = {"reference": plan.reference, "blocks": plan.blocks, "dtype": plan.options.dtype}
        data["shard"] = shard.to_json(run_order(cases, plan.options), run_options)
    if args.json:
        write_results(args.json, data)
    if args.report:
        from parity.report.html import write_html

        write_html(data, args.report)
    for r in results:
        _print_summary(r)
    return max(r.exit_code for r in results)


def _print_summary(result: RunResult) -> None:
    failures = result.failures
    counts: dict[str, int] = {}
    for r in result.results:
        counts[r.status] = counts.get(r.status, 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no results"
    print(f"{tally} ({result.seconds:.1f}s, {result.mode})")
    for r in failures:
        print(f"UNEXPECTED {r.case} / {r.adapter} / {r.stage}: {r.summary}")


# The most `parity tokenize` reads at once (all of --stdin, or one --jsonl line), where the tokenizer
# itself has no bound (a 100 MB line aborted the process in its native code): 20x the 200,000-character
# prompt the bad-input table runs. At the limit (`parity tokenize --stdin --json`, 2 busy CPU cores)
# the worst case, 4 MiB of digits (one token per byte), took 22-33 s and peaked at 2.1 GiB resident;
# 4 MiB of prose (1.2M tokens) 19 s and 1.1 GiB.
MAX_TOKENIZE_BYTES = 4 * 2**20
_LIMIT = f"{MAX_TOKENIZE_BYTES // 2**20} MiB"


def _stdin() -> BinaryIO:
    # Python sets sys.stdin to None when file descriptor 0 is closed (`parity tokenize --stdin <&-`).
    if sys.stdin is None:
        raise InputError("--stdin: standard input is closed")
    return sys.stdin.buffer


def _decoded(data: bytes, first_line: int) -> str:
    """Standard input's bytes from line `first_line` on as text; InputError naming the line and byte
    that are not UTF-8 (read as text, Python would have passed them on as surrogates)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        column = e.start - data.rfind(b"\n", 0, e.start)
        raise InputError(f"stdin line {line}: not UTF-8 (byte {column} of the line, 0x{data[e.start]:02x})") from None


def _text(text: str, where: str) -> str:
    """`text`, unless it holds a lone surrogate (from a JSON escape, or a command-line argument that is
    not UTF-8), which has no UTF-8 form and which the tokenizer cannot take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(
            f"{where}: a lone surrogate (U+{ord(text[e.start]):04X} at character {e.start}) is not text"
        ) from None
    return text


def tokenize(args: argparse.Namespace) -> int:
    if args.checkpoint is not None and not args.checkpoint.is_dir():
        raise InputError(f"checkpoint folder not found: {args.checkpoint}")
    # The same tokenizer a run would use (a ComfyUI checkpoint has none: the reference stands in).
    tokenizer = Context(checkpoint=args.checkpoint).tokenizer

    def encode(text: str) -> dict:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"ids": ids, "tokens": tokenizer.convert_ids_to_tokens(ids)}

    if args.jsonl:
        if not args.stdin:
            raise InputError("--jsonl reads standard input: add --stdin")
        stdin = _stdin()
        for n, line in enumerate(iter(partial(stdin.readline, MAX_TOKENIZE_BYTES + 1), b""), 1):
            if len(line) > MAX_TOKENIZE_BYTES:
                raise InputError(f"stdin line {n}: longer than {_LIMIT}, the most parity tokenizes at once")
            try:
                text = json.loads(_decoded(line, n))
            except (json.JSONDecodeError, RecursionError):
                raise InputError(f"stdin line {n}: not a JSON string") from None
            if not isinstance(text, str):
                raise InputError(f"stdin line {n}: expected a JSON string, got {type(text).__name__}")
            print_json(encode(_text(text, f"stdin line {n}")))
        return 0
    if args.stdin:
        data = _stdin().read(MAX_TOKENIZE_BYTES + 1)
        if len(data) > MAX_TOKENIZE_BYTES:
            raise InputError(f"standard input is longer than {_LIMIT}, the most parity tokenizes at once")
        text = _decoded(data, 1)
    else:
        text = _text(args.text, "--text")
    out = encode(text)
    if args.json:
        print_json(out)
    else:
        for i, t in zip(out["ids"], out["tokens"], strict=True):
            print(f"{i}\t{t}")
    return 0


def render(args: argparse.Namespace) -> int:
    cases = load_case_file(args.case)
    if args.case_id is None:
        case = cases[0]
    else:
        matching = [c for c in cases if c.id == args.case_id]
        if not matching:
            raise InputError(f"{args.case.name}: no case with id {args.case_id!r}")
        case = matching[0]
    group = groups([case], [args.adapter], _options(args))[0]
    adapter = group.adapters[args.adapter]
    try:
        adapter.check_supported(case)
        template = adapter.template(case)
        tokens = adapter.tokens(case, template)
    except Unsupported as e:
        raise InputError(f"adapter {args.adapter!r} does not support case {case.id!r}: {e}") from None
    ids = [i for i, m in zip(tokens.input_ids, tokens.attention_mask, strict=True) if m]
    out = {"text": template.text, "ids": ids, "padding": len(tokens.input_ids) - len(ids)}
    if args.json:
        print_json(out)
    else:
        print(template.text)
    return 0


def schedule(args: argparse.Namespace) -> int:
    raw = {"id": "schedule", "prompt": "", "steps": args.steps, "shift": args.shift, "denoise": args.denoise,
           "sampler": args.sampler, "height": args.height, "width": args.width}
    case = parse_case(raw, Path("command line"))
    adapter = groups([case], [args.adapter], _options(args))[0].adapters[args.adapter]
    try:
        adapter.check_supported(case)
        result = adapter.schedule(case)
    except Unsupported as e:
        raise InputError(f"adapter {args.adapter!r}: {e}") from None
    out = {"sampler": case.sampler, "sigmas": result.sigmas.tolist(), "model_t": result.model_t.tolist()}
    if args.json:
        print_json(out)
    else:
        print(f"sampler: {case.sampler}")
        for k, (sigma, t) in enumerate(zip(out["sigmas"], out["model_t"] + [None], strict=True)):
            print(f"{k}\tsigma={sigma:.6f}" + (f"\tmodel_t={t:.6f}" if t is not None else ""))
    return 0


def export(args: argparse.Namespace) -> int:
    from parity.models.export import export_comfyui, export_diffusers

    if args.format == "diffusers":
        print(export_diffusers(args.out, args.size, args.max_shard_size))
    else:
        if args.max_shard_size is not None:
            raise InputError("--max-shard-size shards diffusers folders; ComfyUI files are single files")
        files = export_comfyui(args.out, args.size)
        print(files.dit)
        print(files.text_encoder)
        print(files.vae)
    return 0


def fixtures(args: argparse.Namespace) -> int:
    store = FixtureStore(args.fixtures)
    cases = load_cases(args.fixtures / "cases", args.cases)
    if args.action == "check":
        return _check(store, cases, dict(_options(args).checkouts))
    if args.action == "stale":
        wanted = {store.key(case.id, name) for _, case, name, _ in reference_runs(cases, _options(args))}
        absent = unavailable_adapters(dict(_options(args).checkouts))
        stale = [key for key in store.stale(wanted) if key.split("/", 1)[1] not in absent]
        for key in stale:
            print(key)
        skipped = f" (fixtures of {', '.join(sorted(absent))} not judged: not available here)" if absent else ""
        print(f"{len(stale)} stale fixture(s){skipped}", file=sys.stderr)
        return 0
    if args.action == "rebuild":
        return _rebuild(store, cases)
    if args.check:
        return check_drift(store, cases, _options(args))
    return regenerate(store, cases, _options(args), args.all, args.changelog)


def _rebuild(store: FixtureStore, cases: list) -> int:
    with regen_lock(store.root, "this rebuild"):
        notes = store.rebuild(cases)
    for line in notes:
        print(line)
    recovered = sum(line.endswith(": recovered") for line in notes)
    print(f"{recovered} fixture(s) recovered into {store.manifest_path}; check them with "
          "`parity fixtures check` and `parity fixtures regen --check`", file=sys.stderr)
    return 0


def _check(store: FixtureStore, cases, checkouts: dict[str, Path]) -> int:
    problems = store.check_all()
    for case in cases:
        for name, cls in registered_adapters(checkouts).items():
            if cls.is_reference() and store.entry(case.id, name) is not None:
                try:
                    store.load(case, name)
                except InputError as e:
                    problems.append(str(e))
    for p in dict.fromkeys(problems):
        print(p)
    print(f"{len(set(problems))} problem(s) in {store.root}", file=sys.stderr)
    return 1 if problems else 0


def tables(args: argparse.Namespace) -> int:
    from parity.analysis.tables_command import tables_command

    check_device(args.device)
    return tables_command(args)


def report(args: argparse.Namespace) -> int:
    from parity.report.html import write_html

    shards = [("--merge", shard) for shard in args.merge or ()]
    results = [("--json", args.json or DEFAULT_RESULTS)] if args.json or not shards else []
    _apart(*shards, ("--out", args.out), *results)
    if args.merge:
        results = merge_shards(args.merge)
        data = results_json(results)
        if args.json:
            write_results(args.json, data)
        write_html(data, args.out)
        for r in results:
            _print_summary(r)
        print(args.out)
        return max(r.exit_code for r in results)
    source = args.json or DEFAULT_RESULTS
    data = read_results(source, f"results file not found: {source} (run `parity run --json {source}` first)")
    write_html(data, args.out)
    print(args.out)
    return 0


def case(args: argparse.Namespace) -> int:
    from parity.core.files import atomic_write_bytes
    from parity.suite.workflow_reader import case_comments, case_id_for, case_toml, listed, read_workflow_file

    if args.out is not None:
        _apart(("--from-workflow", args.from_workflow), ("--out", args.out))
        refuse_to_replace(args.out)
    found = read_workflow_file(args.from_workflow)
    fields = {
        "id": case_id_for(args.from_workflow) if args.id is None else args.id,
        "description": f"From {args.from_workflow.name}: {found.summary}.",
        **found.fields,
    }
    # Refused here as the case loader would refuse it, so a written case file always loads.
    parse_case(fields, args.from_workflow)
    text = case_toml(fields, case_comments(args.from_workflow, found))
    if args.out is None:
        sys.stdout.write(text)
    else:
        atomic_write_bytes(args.out, text.encode("utf-8"))
        print(args.out)
    if found.not_understood:
        print(f"parity: {len(found.not_understood)} node(s) not understood, not read into the case:", file=sys.stderr)
        for line in listed(found.not_understood):
            print(f"  {line}", file=sys.stderr)
    return 0
