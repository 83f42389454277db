"""The same Hydra ViTs as fully int8 .tflite files, and TFLite Micro's smallest working arena for them.

Runs in the converter venv (.venv-tflite: torch 2.13.0, litert-torch, ai-edge-quantizer, tflite-micro),
never in the main .venv. benchmarks/memory_vs_tflm.py calls it through a subprocess:

    .venv-tflite/bin/python benchmarks/tflite_models.py measure CONFIGS.json   # JSON lines on stdout
    .venv-tflite/bin/python benchmarks/tflite_models.py fit --dim 128 --depth 6 --budget 327680

The recipe (docs/memory.md says the same):

1. Build hydra_edge.models.hydra_vit.HydraViT(cfg) with a fixed seed, then `tflm_variant` copies its weights
   into a twin written in forms TFLM's int8 kernels have: GELU as x*sigmoid(1.702x) (MUL, LOGISTIC),
   LayerNorm as mean / squared difference / rsqrt (MEAN, SUB, MUL, ADD, RSQRT), phi (the L2 normalisation
   of q and k per token) as x * rsqrt(sum(x^2) + eps) (MUL, SUM, ADD, RSQRT).
2. litert_torch.convert(model, (example,)) -> float .tflite.
3. ai-edge-quantizer, recipe static_wi8_ai8 (weights int8 per channel, activations int8), calibrated on
   CALIB_SAMPLES standard-normal inputs -> int8 .tflite, cached under benchmarks/.cache/.
4. tflite-micro's Python interpreter: the smallest arena with which the interpreter builds (AllocateTensors)
   and one inference runs, found by bisection to ARENA_STEP bytes. The "Arena allocation total" TFLM
   prints can be lower than what works (planning needs temporary room), so the printed figure is kept
   only for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "toolchain"))  # hydra_edge.models is plain torch: no install needed here

import numpy as np
import torch
from fit_search import largest_grid  # benchmarks/ is on sys.path: the script's own folder
from hydra_edge.models.hydra_vit import HydraViT, HydraViTConfig
from torch import nn

CACHE = ROOT / "benchmarks" / ".cache"
RECIPE_VERSION = "r2"  # bump when the recipe changes: cached .tflite files are keyed by it
CALIB_SAMPLES = 8
ARENA_STEP = 256  # bisection resolution, bytes
LN_EPS = 1e-5
PHI_EPS = 1e-12
SEED = 0

# Ops TFLM's int8 kernels cover for this network (anything else in a converted model is reported).
EXPECTED_OPS = {
    "CONV_2D", "RESHAPE", "TRANSPOSE", "ADD", "SUB", "MUL", "MEAN", "SUM", "RSQRT", "SQUARED_DIFFERENCE",
    "FULLY_CONNECTED", "BATCH_MATMUL", "LOGISTIC", "L2_NORMALIZATION", "QUANTIZE", "DEQUANTIZE",
}


# ---------------------------------------------------------------- the TFLM-friendly twin

class TfliteLayerNorm(nn.Module):
    """LayerNorm over the last axis as MEAN, SUB, MUL (square), MEAN, ADD, RSQRT, MUL, ADD."""

    def __init__(self, dim: int, eps: float = LN_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=-1, keepdim=True)
        d = x - mu
        var = (d * d).mean(dim=-1, keepdim=True)
        return d * torch.rsqrt(var + self.eps) * self.weight + self.bias


def tflite_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def tflite_phi(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + PHI_EPS)


class TfliteHydraViT(nn.Module):
    """HydraViT with the same parameter names, in forms TFLM's int8 kernels support."""

    def __init__(self, cfg: HydraViTConfig) -> None:
        super().__init__()
        ref = HydraViT(cfg)  # the module tree and parameter names of the real model
        self.cfg = cfg
        self.patch_embed = ref.patch_embed
        self.pos_embed = ref.pos_embed
        self.blocks = ref.blocks
        for block in self.blocks:
            block.norm1 = TfliteLayerNorm(cfg.embed_dim)
            block.norm2 = TfliteLayerNorm(cfg.embed_dim)
        self.norm = TfliteLayerNorm(cfg.embed_dim)
        self.head = ref.head

    def _block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        a = block.attn
        h = block.norm1(x)
        q, k, v = tflite_phi(a.q(h)), tflite_phi(a.k(h)), a.v(h)
        kv = (k * v).sum(dim=-2, keepdim=True)  # (1, 1, D): the Hydra attention state
        x = x + a.proj(q * kv)
        m = block.mlp
        return x + m.fc2(tflite_gelu(m.fc1(block.norm2(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (1, T, D)
        x = x + self.pos_embed
        for block in self.blocks:
            x = self._block(block, x)
        x = self.norm(x).mean(dim=1)
        return self.head(x)


def tflm_variant(cfg: HydraViTConfig) -> tuple[HydraViT, TfliteHydraViT]:
    """The hydra-edge model (seeded) and its TFLM-form twin carrying the same weights."""
    torch.manual_seed(SEED)
    model = HydraViT(cfg).eval()
    twin = TfliteHydraViT(cfg).eval()
    missing = twin.load_state_dict(model.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    return model, twin


def check_twin(model: nn.Module, twin: nn.Module, name: str, tolerance: float = 0.05) -> float:
    """The twin must compute the same function as the model it stands for, up to the GELU approximation
    x*sigmoid(1.702x) (about 0.02 at most per element): the largest difference on two seeded inputs, at most
    `tolerance` times the largest logit (or 1)."""
    cfg = model.cfg
    x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
        err = float((twin(x) - ref).abs().max())
    if err > tolerance * max(1.0, float(ref.abs().max())):
        raise RuntimeError(f"{name}: the TFLM-form twin differs from HydraViT by {err}")
    return err


def twin_from_pt2(path: Path, config: Path | None = None) -> tuple[HydraViT, TfliteHydraViT]:
    """A HydraViT exported with hydra_edge.models.hydra_vit.export_pt2 (its config in the JSON beside it,
    as examples/train_cifar10.py writes: {"config": {...}}) and its TFLM-form twin carrying its weights."""
    path = Path(path)
    config = Path(config) if config else path.with_suffix(".json")
    cfg = HydraViTConfig(**json.loads(config.read_text())["config"])
    program = torch.export.load(str(path))
    model = HydraViT(cfg).eval()
    model.load_state_dict(program.state_dict, strict=True)
    twin = TfliteHydraViT(cfg).eval()
    twin.load_state_dict(program.state_dict, strict=True)
    x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # the weights loaded are the program's: the same logits as the program itself
        err = float((program.module()(x[:1]) - model(x[:1])).abs().max())
    if err > 1e-4:
        raise RuntimeError(f"{path.name}: HydraViT with the program's weights differs from it by {err}")
    # A trained model's GELU inputs spread wider than a seeded one's, and the approximation's error grows
    # through the blocks: on examples/hydra_vit_cifar10.pt2 the logits differ by up to 0.23 here (largest
    # logit 3.0) and 0.55 on its 100 CIFAR-10 samples (largest 5.3), the top-1 class on 95 of them.
    check_twin(model, twin, path.name, tolerance=0.15)
    return model, twin


def make_config(image_size: int, patch_size: int, dim: int, depth: int, mlp_ratio: float) -> HydraViTConfig:
    return replace(HydraViTConfig(), image_size=image_size, patch_size=patch_size, embed_dim=dim, depth=depth,
                   mlp_ratio=mlp_ratio)


# ---------------------------------------------------------------- conversion

def config_key(cfg: HydraViTConfig) -> str:
    return (f"hydra_i{cfg.image_size}_p{cfg.patch_size}_d{cfg.embed_dim}_L{cfg.depth}_m{cfg.mlp_ratio:g}"
            f"_c{cfg.num_classes}_s{SEED}_{RECIPE_VERSION}")


def convert_int8(cfg: HydraViTConfig, cache: Path = CACHE, log=print) -> Path:
    """Float convert with litert-torch, then static int8 with ai-edge-quantizer; cached."""
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{config_key(cfg)}.int8.tflite"
    if out.exists():
        return out
    import litert_torch
    from ai_edge_quantizer import quantizer, recipe

    model, twin = tflm_variant(cfg)
    example = torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size)
    check_twin(model, twin, config_key(cfg))
    t0 = time.perf_counter()
    float_path = cache / f"{config_key(cfg)}.float.tflite"
    litert_torch.convert(twin, (example,)).export(str(float_path))
    t1 = time.perf_counter()
    qt = quantizer.Quantizer(str(float_path))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    sig = _signature(float_path)
    rng = np.random.default_rng(SEED)
    samples = [{sig["input"]: rng.standard_normal(example.shape).astype(np.float32)} for _ in range(CALIB_SAMPLES)]
    calib = qt.calibrate({sig["key"]: samples})
    tmp = out.with_suffix(".tmp")
    qt.quantize(calib).export_model(str(tmp), overwrite=True)
    moved = inline_buffers(tmp)
    os.replace(tmp, out)
    float_path.unlink(missing_ok=True)
    log(f"  converted {out.name}: float {t1 - t0:.1f}s, int8 {time.perf_counter() - t1:.1f}s, "
        f"{moved} buffers moved inline")
    return out


def inline_buffers(path: Path) -> int:
    """Rewrite a .tflite whose constant buffers sit after the flatbuffer (Buffer.offset/size, the layout
    ai-edge-quantizer 0.10 exports) with every buffer inline (Buffer.data). TFLM does not point into
    offset buffers: it gives their tensors room in the arena, so the weights would be counted as RAM.
    Returns how many buffers moved."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    buf = path.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(buf, 0)
    moved = 0
    for b in model.buffers or []:
        if b.offset and b.offset > 1:
            b.data = np.frombuffer(buf[b.offset:b.offset + b.size], dtype=np.uint8)
            b.offset, b.size = 0, 0
            moved += 1
    if moved:
        builder = flatbuffers.Builder(len(buf) + 1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        path.write_bytes(builder.Output())
    check = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    if any(check.Buffers(i).Offset() > 1 for i in range(check.BuffersLength())):
        raise RuntimeError(f"{path.name}: buffers still stored by offset after inlining")
    return moved


def _signature(path: Path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    sigs = interp.get_signature_list()
    if len(sigs) != 1:
        raise RuntimeError(f"{path.name}: expected one signature, got {list(sigs)}")
    key, io = next(iter(sigs.items()))
    if len(io["inputs"]) != 1:
        raise RuntimeError(f"{path.name}: expected one input, got {io['inputs']}")
    return {"key": key, "input": io["inputs"][0]}


def model_ops(path: Path) -> tuple[list[str], list[str]]:
    """(the builtin op names in the model, the tensor types seen) via LiteRT's own reader."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    ops = sorted({d["op_name"] for d in interp._get_ops_details()})
    types = sorted({np.dtype(d["dtype"]).name for d in interp.get_tensor_details()})
    return ops, types


def graph_live_peak(path: Path) -> dict:
    """The most activation bytes live at once in the .tflite's own op order (a tensor lives from the op
    that writes it to the last op that reads it): a lower bound for any arena planner without in-place
    reuse on this graph, TFLM's included."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    details = {d["index"]: d for d in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    first: dict[int, int] = {d["index"]: 0 for d in interp.get_input_details()}
    last: dict[int, int] = {}
    for i, op in enumerate(ops):
        for t in op["inputs"]:
            if t in first:
                last[t] = i
        for t in op["outputs"]:
            first.setdefault(t, i)
            last[t] = max(last.get(t, i), i)
    for d in interp.get_output_details():
        last[d["index"]] = len(ops) - 1

    def nbytes(t: int) -> int:
        return int(np.prod(details[t]["shape"])) * np.dtype(details[t]["dtype"]).itemsize

    live = [sum(nbytes(t) for t in first if first[t] <= i <= last.get(t, first[t])) for i in range(len(ops))]
    at = int(np.argmax(live))
    return {"live_peak_bytes": int(live[at]), "live_peak_op": f"{at}:{ops[at]['op_name']}", "n_ops": len(ops)}


# ---------------------------------------------------------------- TFLM's arena

class _CaptureFd2:
    """Capture C-level stderr (file descriptor 2), where TFLM prints."""

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile(mode="w+b")
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors="replace")
        self._file.close()
        return False


def tflm_try(path: Path, arena: int, x: np.ndarray, report: bool = False) -> tuple[bool, str]:
    """Does TFLM build and run the model with an arena of `arena` bytes? (ok, what it printed on fd 2)"""
    from tflite_micro.python.tflite_micro import runtime

    err = ""
    with _CaptureFd2() as cap:
        try:
            interp = runtime.Interpreter.from_file(str(path), arena_size=int(arena))
            interp.set_input(x, 0)
            interp.invoke()
            interp.get_output(0)
            if report:
                interp.print_allocations()
            ok = True
        except Exception as exc:  # noqa: BLE001 - TFLM raises RuntimeError on a short arena
            ok, err = False, f"{type(exc).__name__}: {exc}"
        interp = None
    return ok, cap.text + ("\n" + err if err else "")


def tflm_arena(path: Path, step: int = ARENA_STEP) -> dict:
    """The smallest working arena (bisection to `step` bytes), and what TFLM itself prints."""
    from tflite_micro.python.tflite_micro import runtime  # noqa: F401 - fail early if missing

    interp_shape, dtype = _tflm_input(path)
    x = np.zeros(interp_shape, dtype=dtype)
    hi = 64 * 1024
    while True:
        ok, text = tflm_try(path, hi, x)
        if ok:
            break
        if "unsupported" in text.lower() or "didn't find op" in text.lower() or "failed to get registration" in text.lower():
            raise RuntimeError(f"{path.name}: TFLM cannot run this model:\n{_tail(text)}")
        if hi > 256 * 1024 * 1024:
            raise RuntimeError(f"{path.name}: TFLM fails even with a {hi:,} B arena:\n{_tail(text)}")
        hi *= 2
    lo = 0  # an arena known to fail (or 0)
    while hi - lo > step:
        mid = (lo + hi) // 2 // 16 * 16
        if mid <= lo:
            break
        ok, _ = tflm_try(path, mid, x)
        lo, hi = (lo, mid) if ok else (mid, hi)
    ok, text = tflm_try(path, hi, x, report=True)
    if not ok:
        raise RuntimeError(f"{path.name}: TFLM's arena bisection is not monotone at {hi} B:\n{_tail(text)}")
    printed = _printed_allocations(text)
    if "total" not in printed:
        raise RuntimeError(f"{path.name}: TFLM printed no 'Arena allocation total':\n{_tail(text)}")
    return {
        "arena_bytes": hi,  # the smallest arena that works, to `step` bytes
        "resolution_bytes": step,
        # TFLM's own account at that arena: head = activations and scratch (planned, shared), tail = persistent
        # (TfLiteEvalTensor structs, node structs, per-channel multipliers and other op data).
        "printed_total_bytes": printed.get("total"),
        "head_bytes": printed.get("head"),
        "tail_bytes": printed.get("tail"),
        "tail_parts": printed.get("parts", {}),
    }


def _tflm_input(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    from ai_edge_litert.interpreter import Interpreter

    d = Interpreter(model_path=str(path)).get_input_details()[0]
    return tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"])


def _printed_allocations(text: str) -> dict:
    """Parse the RecordingMicroAllocator's print_allocations() lines."""
    out: dict = {"parts": {}}
    for line in text.splitlines():
        if "[RecordingMicroAllocator]" not in line:
            continue
        body = line.split("]", 1)[1].strip()
        for key in ("total", "head", "tail"):
            if body.startswith(f"Arena allocation {key} "):
                out[key] = int(body.split()[3])
        if body.startswith("'") and " used " in body:
            name = body[1:body.index("'", 1)]
            out["parts"][name] = int(body.split(" used ")[1].split()[0])
    return out


def _tail(text: str, n: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


# ---------------------------------------------------------------- entry points

def measure(cfg: HydraViTConfig, log) -> dict:
    path = convert_int8(cfg, log=log)
    ops, types = model_ops(path)
    unexpected = sorted(set(ops) - EXPECTED_OPS)
    if "float32" in types and "QUANTIZE" not in ops:
        log(f"  warning: {path.name} has float32 tensors")
    result = {"key": config_key(cfg), "tflite": str(path.relative_to(ROOT)), "bytes": path.stat().st_size,
              "ops": ops, "tensor_types": types, "unexpected_ops": unexpected}
    result.update(graph_live_peak(path))
    t0 = time.perf_counter()
    result.update(tflm_arena(path))
    result["bisect_s"] = round(time.perf_counter() - t0, 2)
    return result


def fit(dim: int, depth: int, patch: int, mlp_ratio: float, budget: int, log) -> dict:
    """The largest square token grid n x n (image n*patch) whose TFLM arena fits `budget` bytes."""
    def arena(n: int) -> int:
        a = measure(make_config(n * patch, patch, dim, depth, mlp_ratio), log)["arena_bytes"]
        log(f"  TFLM fit: {n * n} tokens -> {a:,} B")
        return a

    n, arenas = largest_grid(arena, budget)
    return {"dim": dim, "depth": depth, "patch_size": patch, "budget_bytes": budget, "grid": n,
            "max_tokens": n * n, "arena_at_max": arenas.get(n), "arena_next": arenas.get(n + 1),
            "probes": {str(k * k): v for k, v in sorted(arenas.items())}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="convert + measure each config of a JSON list; one JSON line each")
    m.add_argument("configs", type=Path, help="JSON list of {image_size, patch_size, dim, depth, mlp_ratio}")
    f = sub.add_parser("fit", help="largest token count whose TFLM arena fits a budget")
    f.add_argument("--dim", type=int, default=128)
    f.add_argument("--depth", type=int, default=6)
    f.add_argument("--patch", type=int, default=4)
    f.add_argument("--mlp-ratio", type=float, default=2.0)
    f.add_argument("--budget", type=int, default=320 * 1024)
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    # The converters print to stdout (Python and C level): send all of that to stderr and keep the real
    # stdout for the JSON lines alone.
    sys.stdout.flush()
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def emit(obj: dict) -> None:
        results.write(json.dumps(obj) + "\n")
        results.flush()

    if args.cmd == "measure":
        for c in json.loads(args.configs.read_text()):
            cfg = make_config(c["image_size"], c["patch_size"], c["dim"], c["depth"], c.get("mlp_ratio", 2.0))
            emit({"config": c, **measure(cfg, log)})
    else:
        emit(fit(args.dim, args.depth, args.patch, args.mlp_ratio, args.budget, log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
