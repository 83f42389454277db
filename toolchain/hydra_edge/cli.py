"""The `hydra-edge` command line: a thin layer over driver.py."""

from __future__ import annotations

import io
import json
import math
import os
import sys
import traceback
import warnings
from pathlib import Path

import click
import numpy as np

from . import __version__, driver
from .build_manifest import COMPILE_AGAIN, REPORT_FILE, TEST_VECTORS, damaged, read_report
from .cli_search import evaluate, search, train
from .errors import HydraEdgeError
from .optimize import AUTO_SIZE_BELOW, OPTIMIZE_CHOICES
from .outdir import atomic_write

DEBUG_ENV = "HYDRA_EDGE_DEBUG"


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:  # the reader went away (| head): stop quietly, as other tools do
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
            sys.exit(141)
        except (HydraEdgeError, FileNotFoundError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:  # a bug: still one line unless the user asks for the trace
            if os.environ.get(DEBUG_ENV):
                traceback.print_exc()
            else:
                click.echo(f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)", err=True)
            sys.exit(70)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hydra-edge")
def main() -> None:
    """Compile small Hydra-attention Vision Transformers to bit-exact int8 C."""
    warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecation chatter


def _warn_line(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


def _shape(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    from .frontend.formats import parse_input_shape

    try:
        return None if value is None else parse_input_shape(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


MAX_TIMEOUT = 1e6  # seconds (11.6 days); more overflows the OS's timers


def _timeout(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """--timeout: seconds above 0 and at most MAX_TIMEOUT (0, a negative, nan or inf are usage errors)."""
    if value is not None and not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT):
        raise click.BadParameter(f"{value} is not a number of seconds: give one above 0 and at most {MAX_TIMEOUT:,.0f}")
    return value


def _load_options(command):
    """The options of a model file that does not say everything itself (TorchScript, pickled modules)."""
    options = [
        click.option("--input-shape", callback=_shape, metavar="C,H,W",
                     help="Input shape without the batch, for a TorchScript archive that does not record it "
                          "(a traced one does) and for a pickled module."),
        click.option("--trust-pickle", is_flag=True,
                     help="Load a file whose loading runs code from it: a pickled nn.Module (torch.save(model); "
                          "needs --module-class), or a .pt2 with pickled weights, constants or custom objects "
                          "(otherwise refused before torch.export.load reads them). DANGER: unpickling runs "
                          "arbitrary code from the file; use only on files you made or trust."),
        click.option("--module-class", metavar="PKG.MODULE:CLASS",
                     help="Import path of a pickled module's class (with --trust-pickle), e.g. mypkg.net:Net."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _options(input_shape: tuple[int, ...] | None, trust_pickle: bool, module_class: str | None) -> driver.LoadOptions:
    return driver.LoadOptions(input_shape, trust_pickle, module_class)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--lowered/--aten", default=True, help="Show the lowered IR (default) or the graph as exported.")
@_load_options
def inspect(model: Path, lowered: bool, input_shape: tuple[int, ...] | None, trust_pickle: bool,
            module_class: str | None) -> None:
    """Print the graph of MODEL (.pt2, TorchScript .pt, .onnx, .tflite)."""
    from .ir.printer import format_graph
    from .passes.pipeline import lower_to_ir

    graph = driver.load_model(model, _options(input_shape, trust_pickle, module_class))
    lower = lowered and not driver.is_prequantised(graph)  # an int8 .tflite is in its final op set already
    click.echo(format_graph(lower_to_ir(graph) if lower else graph))


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--board", default="host", show_default=True, help="Target board (see 'hydra-edge boards').")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), default=Path("build"), show_default=True,
              help="Build folder to write: a new or empty folder, or an old hydra-edge build, which is replaced "
                   "whole once the new build is complete (files you added to it are kept).")
@click.option("--force", is_flag=True,
              help="Also write into a non-empty folder that is not a hydra-edge build: the build's files are "
                   "moved in, replacing only files of the same names; every other file there is left alone.")
@click.option("--calib", type=click.Path(path_type=Path), help=".npz of float inputs (key 'x', shape (N, C, H, W)) for PTQ.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Read at most the first N samples of --calib (with a warning when it holds more).")
@click.option("--calib-percentile", type=click.FloatRange(min=90.0, max=100.0), default=None, metavar="P",
              help="Clip each activation range to the P and 100-P percentiles of its calibration values "
                   "(e.g. 99.99) instead of min/max, so a few outliers do not take the int8 steps.")
@click.option("--rounding", type=click.Choice(["double", "single"]), default="double", show_default=True,
              help="Requantisation rounding: TFLM/CMSIS-NN double rounding, or LiteRT single rounding.")
@click.option("--schedule", type=click.Choice(["greedy", "stream"]), default=None,
              help="Memory schedule: 'stream' (the default) runs the row-local ops as token loops between the steps "
                   "that need every token (attention state, keys and values, pooling); 'greedy' is TFLite Micro's "
                   "planner on the ops one by one (for an int8 .tflite: TFLM's own unfused graph).")
@click.option("--tokens-per-step", type=click.IntRange(min=1), default=None,
              help="Tokens a token loop takes at once: more scratch RAM, fewer kernel calls. Default: 2 (linear "
                   "takes tokens in pairs on the Cortex-M) where that needs no more RAM than 1, else 1.")
@click.option("--optimize", type=click.Choice(OPTIMIZE_CHOICES), default="auto", show_default=True,
              help="What the kernels' code is built for, with the same bits either way: 'speed' (-O2 and every "
                   "SIMD fast path a node takes), 'size' (-Os and one path where speed builds two), 'auto' (size "
                   f"for a model under {AUTO_SIZE_BELOW // 1024} KB of constants, whose image is mostly the "
                   "kernels' code; else speed).")
@_load_options
def compile(model: Path, board: str, out: Path, calib: Path | None, rounding: str, schedule: str | None,  # noqa: A001
            tokens_per_step: int, optimize: str, input_shape: tuple[int, ...] | None, trust_pickle: bool,
            module_class: str | None, force: bool, calib_samples: int, calib_percentile: float | None) -> None:
    """Compile MODEL to int8 C in a self-contained build folder."""
    from rich.progress import Progress

    from .codegen.report import format_report

    warnings.showwarning = _warn_line
    with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("calibrating", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=stage)

        result = driver.compile_model(model, board, out, calib, rounding, progress, schedule, tokens_per_step,
                                      _options(input_shape, trust_pickle, module_class), force=force,
                                      calib_samples=calib_samples, calib_percentile=calib_percentile,
                                      optimize=optimize)
    click.echo(format_report(result.report))
    click.echo(f"memory timeline: {result.folder / driver.MEMORY_PLOT}")
    click.echo(f"wrote {result.folder}/ (build with 'make -C {result.folder}', check with 'hydra-edge validate {result.folder}')")


@main.command()
@click.argument("build", type=click.Path(path_type=Path))
@click.option("--input", "inputs", type=click.Path(path_type=Path), help="int8 .npy inputs (N, ...); default: the build's test vectors.")
@click.option("--sanitize", is_flag=True, help="Build and run with AddressSanitizer and UBSan (host board only).")
@click.option("--timeout", type=float, default=None, callback=_timeout,
              help="Seconds the run may take before it counts as a hang (default: the board's, 120 s under QEMU).")
def validate(build: Path, inputs: Path | None, sanitize: bool, timeout: float | None) -> None:
    """Build the C of BUILD for its board, run it there (natively, or under QEMU), and compare every output
    byte with the reference interpreter."""
    from .codegen.report import format_measured
    from .validate.bitexact import validate_build

    manifest, graph = driver.load_build(build)
    read_report(build)  # a damaged report.json is refused before the run that updates it
    if inputs:
        x = _input_batch(_read_npy(inputs), manifest, inputs)
    else:  # the build's own test vectors
        vectors = build / TEST_VECTORS
        again = f"; {COMPILE_AGAIN}"
        x = _input_batch(_read_npy(vectors, again), manifest, vectors, hint=again)
    result = validate_build(build, graph, x, sanitize=sanitize, timeout=timeout)
    verdict = "BIT-EXACT" if result.ok else "MISMATCH"
    click.echo(f"{verdict}: {result.samples} inputs, {result.bytes_compared} output bytes compared, "
               f"{result.mismatched_bytes} differ (board {manifest['board']}, rounding {manifest['rounding']})")
    for m in result.mismatches:
        click.echo(f"  input {m.sample} byte {m.byte}: reference {m.expected}, target {m.actual}")
    tflm_ok = _check_tflm(build, graph, x)
    data = read_report(build)
    if data and "measured" in data:
        click.echo(_formatted(format_measured, data, build))
    if not result.ok or not tflm_ok:
        sys.exit(1)


def _check_tflm(build: Path, graph, x: np.ndarray) -> bool:
    """A build made from an int8 .tflite: the same inputs on TFLite Micro's interpreter, byte for byte."""
    from .validate.bitexact import compare, reference_outputs
    from .validate.tflm import SOURCE_TFLITE, TflmUnavailable, tflm_outputs

    source = build / SOURCE_TFLITE
    if not source.is_file():
        return True
    try:
        theirs = tflm_outputs(source, x)
    except TflmUnavailable as exc:
        click.echo(f"TFLite Micro not compared: {exc}")
        return True
    result = compare(theirs, reference_outputs(graph, x))
    verdict = "SAME BITS" if result.ok else "MISMATCH"
    click.echo(f"TFLite Micro's interpreter on {SOURCE_TFLITE}: {verdict} ({result.bytes_compared} output bytes, "
               f"{result.mismatched_bytes} differ)")
    for m in result.mismatches:
        click.echo(f"  input {m.sample} byte {m.byte}: TFLM {m.expected}, hydra-edge {m.actual}")
    return result.ok


class InputError(HydraEdgeError, ValueError):
    """An --input file that is not an array of inputs the model takes."""


def _read_npy(path: Path, hint: str = "") -> np.ndarray:
    """The array in a .npy file (allow_pickle off); an InputError naming the file for anything else."""
    if not path.is_file():
        raise InputError(f"{path}: input file not found{hint}" if not path.exists() else f"{path} is a folder, not a .npy file")
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:4] == b"PK\x03\x04":
        raise InputError(f"{path} is a .npz archive, not a .npy file: --input takes one array, written with "
                         f"numpy.save (e.g. np.save('x.npy', np.load('{path.name}')['x']))")
    if head != b"\x93NUMPY":
        raise InputError(f"{path} is not a .npy file (no NumPy header): write the array with numpy.save{hint}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise InputError(f"{path} holds Python objects (a pickled object array), not numbers: save a numeric "
                             f"array (int8, or float for 'hydra-edge run'){hint}") from None
        raise InputError(f"{path} is damaged or truncated ({exc}){hint}") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{path} is damaged or truncated ({type(exc).__name__}: {exc}){hint}") from None


def _input_batch(x: np.ndarray, manifest: dict, path: Path, allow_float: bool = False, hint: str = "") -> np.ndarray:
    """`x` as an int8 (N, *input shape) batch with N >= 1: int8 as is, float (with `allow_float`) quantised with
    the model's input scale after a check that every value is finite."""
    from .quant.quantize import quantize_array

    inp = manifest["input"]
    shape = tuple(inp["shape"])
    floating = allow_float and np.issubdtype(x.dtype, np.floating)
    if x.dtype != np.int8 and not floating:
        takes = "int8 (quantised) or float inputs" if allow_float else \
            "int8 (quantised) inputs (use 'hydra-edge run' for float inputs)"
        raise InputError(f"{path} holds {x.dtype} values; the model takes {takes}{hint}")
    batch = x[None] if x.shape == shape else x
    dims = ", ".join(map(str, shape))
    if tuple(batch.shape[1:]) != shape:
        raise InputError(f"{path}: inputs have shape {x.shape}, the model takes (N, {dims}) or ({dims}){hint}")
    if len(batch) == 0:
        raise InputError(f"{path} holds no inputs (shape {x.shape}): give at least one{hint}")
    if floating:
        bad = np.flatnonzero(~np.isfinite(x))
        if len(bad):
            where = ", ".join(str(int(i)) for i in np.unravel_index(bad[0], x.shape))
            more = f" ({len(bad)} values are not finite)" if len(bad) > 1 else ""
            raise InputError(f"{path}: input[{where}] is {x.reshape(-1)[bad[0]]}{more}; inputs must be finite numbers")
        if inp["scale"] is None or inp["zero_point"] is None:
            raise InputError(f"{path}: the model's input has no quantisation scale in build.json; give int8 inputs")
        batch = quantize_array(batch, inp["scale"], inp["zero_point"])
    return batch


def _formatted(format_fn, data: dict, build: Path) -> str:
    """`format_fn(data)` for a report.json whose entries may be damaged: a BuildFileError naming it if so."""
    try:
        return format_fn(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        why = f"no {exc} entry" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise damaged(build / REPORT_FILE, why) from None


@main.command()
@click.argument("build", type=click.Path(path_type=Path))
@click.option("--input", "input_path", type=click.Path(path_type=Path), required=True,
              help=".npy input: float (quantised with the model's input scale) or int8; (N, C, H, W) or (C, H, W).")
@click.option("-o", "--output", "output_path", type=click.Path(path_type=Path), required=True, help=".npy to write.")
@click.option("--dequantize", is_flag=True, help="Write float outputs (scale * (q - zero_point)) instead of int8.")
@click.option("--timeout", type=float, default=None, callback=_timeout,
              help="Seconds the run may take before it counts as a hang (default: the board's).")
def run(build: Path, input_path: Path, output_path: Path, dequantize: bool, timeout: float | None) -> None:
    """Run the compiled model of BUILD on its board (natively, or under QEMU) and save its outputs."""
    from .quant.quantize import dequantize_array
    from .targets import runner

    manifest = driver.read_manifest(build)
    x = _input_batch(_read_npy(input_path), manifest, input_path, allow_float=True)
    read_report(build)  # a damaged report.json is refused before the run that updates it
    _check_writable(output_path)  # before the run, not after it
    y = runner.run(build, x.reshape(len(x), -1), timeout=timeout)
    out = manifest["output"]
    y = y.reshape(len(x), *out["shape"])
    if dequantize:
        y = dequantize_array(y, out["scale"], out["zero_point"])
    data = io.BytesIO()
    np.save(data, y)
    try:
        atomic_write(output_path, data.getvalue())
    except OSError as exc:
        raise InputError(f"cannot write {output_path}: {exc.strerror or exc}") from None
    click.echo(f"wrote {output_path}: {y.shape} {y.dtype}")


def _check_writable(path: Path) -> None:
    """-o of `run`: a file that can be written whole (replaced atomically if it exists)."""
    if path.is_dir():
        raise InputError(f"-o {path} is a folder: name the .npy file to write")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"-o {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"-o {path}: the folder {parent} is not writable")


@main.command()
@click.argument("build", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--measure/--no-measure", default=True, show_default=True,
              help="On an emulated board: build the images, read flash/RAM from the linked ELF and measure the "
                   "stack under QEMU (once; refreshed by every validate/run) before reporting.")
def report(build: Path, as_json: bool, measure: bool) -> None:
    """RAM, flash and MACs of BUILD, per op; on a cross board also flash/RAM from the ELF and the measured stack."""
    from .codegen.report import format_report
    from .targets import runner

    driver.read_manifest(build)
    read_report(build, required=True)  # before the measurement that updates it
    note = None
    if measure:
        note = runner.measure_for_report(build)
    data = read_report(build, required=True)
    click.echo(json.dumps(data, indent=2) if as_json else _formatted(format_report, data, build))
    if note:
        click.echo(f"note: {note}", err=True)


@main.command()
def boards() -> None:
    """List the boards hydra-edge can compile for."""
    from .boards import list_boards, load_board

    for name in list_boards():
        board = load_board(name)
        click.echo(f"{board.name:<14} {board.description}")


@main.command()
@click.argument("build", type=click.Path(path_type=Path))
@click.option("--tool", type=click.Choice(["openocd", "st-flash"]), default=None,
              help="Flash tool (default: the board's, openocd unless its board.toml says otherwise).")
@click.option("--dry-run", is_flag=True, help="Print the exact commands (make + flash tool); run nothing.")
def flash(build: Path, tool: str | None, dry_run: bool) -> None:
    """Build the device image of BUILD (make device) and program a real board through its ST-LINK."""
    from .targets.flash import flash as flash_board

    plan = flash_board(build, tool, dry_run=dry_run)
    if dry_run:
        click.echo("\n".join(plan.lines()))
        return
    click.echo(f"flashed {build / plan.image} onto the {plan.board} with {plan.tool} (written, verified, reset)")


@main.command()
@click.argument("build", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (always written to BUILD/bench.json).")
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Emulator runs; the counts of all runs must be identical.")
@click.option("--timeout", type=float, default=600.0, show_default=True, callback=_timeout,
              help="Seconds per emulator run.")
@click.option("--portable-kernels", "portable", is_flag=True,
              help="Build the kernels' plain C paths instead of the target's SIMD ones (the same bits; "
                   "written to BUILD/bench-portable.json). The next validate or run rebuilds the SIMD ones.")
@click.option("--functions", is_flag=True,
              help="Also count the instructions of each function of the image (the whole run, the first run): "
                   "which kernel loops, helpers and library calls the time goes to.")
def bench(build: Path, as_json: bool, runs: int, timeout: float, portable: bool, functions: bool) -> None:
    """Instructions per op and per inference of BUILD on its emulated board, and MACs per instruction.

    QEMU counts executed instructions (exactly, with a TCG plugin), not cycles.
    """
    from .targets.icount import BENCH_JSON, BENCH_PORTABLE_JSON, IcountError, format_bench
    from .targets.icount import bench as run_bench

    driver.read_manifest(build)
    read_report(build)  # its per-op figures go into the result: refused here if damaged
    try:
        result = run_bench(build, runs=runs, timeout=timeout, portable=portable, functions=functions)
    except IcountError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(json.dumps(result, indent=2) if as_json else format_bench(result))
    if not as_json:  # a read-only build folder gets no bench.json
        note = result.get("not_written")
        click.echo(f"note: {note}" if note else f"wrote {build / (BENCH_PORTABLE_JSON if portable else BENCH_JSON)}",
                   err=bool(note))
    if not result["repeatable"]:
        sys.exit(1)


main.add_command(search)
main.add_command(evaluate)
main.add_command(train)

if __name__ == "__main__":
    main()
