"""Export-time: an int8 copy of the live-stream frames graph ``models/campplus_frames.onnx``.

    python models/quantize_frames.py --shipped      # every shipped copy, next to its source
    python models/quantize_frames.py [--src models/campplus_frames.onnx]
        [--out /tmp/campplus_frames_int8.onnx]
        [--mode static|dynamic] [--per-channel | --no-per-channel] [--quantize-frontend]
        [--ops Conv] [--keep-float REGEX] [--calib-files 100] [--calib-method percentile]

Uses onnxruntime's own tools (``onnxruntime.quantization``; ``onnx`` is needed, as for the
export): ``quant_pre_process`` (graph optimisation; its symbolic shape pass is skipped,
it cannot prove the dynamic time axis non-negative), then either

* ``static`` (default): QDQ ``quantize_static`` of the ``Conv`` nodes, activations uint8
  and weights int8 per output channel; activation ranges (99.999th percentile) from a
  :class:`~onnxruntime.quantization.CalibrationDataReader` over real speech: two 1 s
  pieces (16,000 samples, the server's 0.5 s piece + 0.5 s context) of VAD speech from
  each of the 100 files of ``../shared/speech/librispeech_trainclean100_251spk_1utt``,
  voices no closed-set benchmark tests on (``bench/quantization.py`` tests on
  LibriSpeech test-other, Common Voice fa and AMI segments);
* ``dynamic``: ``quantize_dynamic`` (int8 weights, activation ranges computed per run;
  onnxruntime runs it as ``ConvInteger``, measured 2.6x *slower* than float32).

Kept float32: the front end (the ``Conv`` that frames, windows and DFTs the PCM, the power
spectrum, the mel ``MatMul``, ``Log`` and the mean normalisation: every node before the
network's first convolution; ``--quantize-frontend`` quantises it too), and the nodes
matched by ``--keep-float`` (default :data:`KEEP_FLOAT`). Quantising everything
(``--ops all``) or every ``Conv`` (``--keep-float ''``) loses much more accuracy; see
``bench/quantization.py``.

The whole graph ``models/campplus.onnx`` (enrolment) and the head are not touched.
Nothing is written into ``models/`` unless ``--out`` or ``--shipped`` says so.
``--shipped`` writes the copies the server runs for the lines in ``model.int8_channels``
(:data:`SHIPPED`: the model's frames graph and each line variant's,
``X_frames.onnx`` -> ``X_frames_int8.onnx``), each calibrated on the same clean pieces
(measured: the copies of the variants stay as close to their float32 graphs on phone-line
and quiet speech as the model's copy on clean speech). The result keeps the
source's metadata plus a ``quantization`` entry describing how it was made.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import logging
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SRC = REPO_ROOT / "models" / "campplus_frames.onnx"
SPEECH = REPO_ROOT.parent / "shared" / "speech"
#: Calibration speakers: never-enrolled LibriSpeech train-clean voices, not a test set.
CALIB_SET = "librispeech_trainclean100_251spk_1utt"
#: Nodes kept in float32 besides the front end (measured: each costs little speed and
#: quantising it costs much fidelity): the network's first convolution (its input is the
#: log-mel fbank), the first trunk TDNN layer, and the two small convolutions of every
#: context-aware-masking layer that turn a context mean into a sigmoid mask.
KEEP_FLOAT = r"^/head/conv1/|^/trunk/tdnn/|/cam_layer/linear[12]/"
#: The frames graphs ``--shipped`` quantises (the model's, then its line variants').
SHIPPED = ("campplus_frames.onnx", "campplus_telephone_frames.onnx", "campplus_far_frames.onnx")
PIECE = 16_000  # samples: 0.5 s piece + 0.5 s context, as the server runs the graph
SAMPLE_RATE = 16_000


def calibration_pieces(speech_dir: Path = SPEECH, n_files: int = 100, per_file: int = 2,
                       piece: int = PIECE, config: Path | None = None) -> list[np.ndarray]:
    """``per_file`` pieces of ``piece`` samples of VAD speech from each of the first
    ``n_files`` files of the calibration set (evenly spread over each file's speech)."""
    from streamer.config import load_config
    from streamer.evaluation import load_manifest, read_audio
    from streamer.segmenter import extract_speech

    vad = load_config(config or REPO_ROOT / "config.yaml").vad
    out: list[np.ndarray] = []
    for u in load_manifest(speech_dir / CALIB_SET)[:n_files]:
        x = extract_speech(read_audio(u.path), vad)
        if len(x) < piece:
            continue
        starts = np.linspace(0, len(x) - piece, per_file).astype(int) if per_file > 1 else [
            (len(x) - piece) // 2]
        out += [np.ascontiguousarray(x[a:a + piece], dtype=np.float32) for a in starts]
    if not out:
        raise RuntimeError(f"no calibration speech found in {speech_dir / CALIB_SET}")
    return out


def frontend_nodes(model: object) -> list[str]:
    """Names of the nodes before the network's first convolution (the fbank front end and
    mean normalisation): everything that precedes the second ``Conv`` in graph order."""
    nodes = list(model.graph.node)  # type: ignore[attr-defined]
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if len(convs) < 2:
        raise ValueError("expected the DFT Conv and the network's convolutions")
    front = nodes[:convs[1]]
    kinds = {n.op_type for n in front}
    if not {"Conv", "MatMul", "Log"} <= kinds:
        raise ValueError(f"front end not recognised (ops {sorted(kinds)})")
    return [n.name for n in front]


class PieceReader:
    """Duck-typed ``CalibrationDataReader``: float32 PCM pieces, one per batch of 1
    (onnx/onnxruntime are imported only inside :func:`quantize`)."""

    def __init__(self, pieces: Sequence[np.ndarray], input_name: str = "pcm") -> None:
        self._pieces = list(pieces)
        self._name = input_name
        self._it: Iterator[np.ndarray] = iter(self._pieces)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {self._name: x[None, :]}

    def rewind(self) -> None:
        self._it = iter(self._pieces)


def quantize(src: Path, out: Path, mode: str = "static", per_channel: bool = True,
             quantize_frontend: bool = False, ops: Sequence[str] | None = ("Conv",),
             pieces: Sequence[np.ndarray] | None = None, calib_method: str = "percentile",
             reduce_range: bool = False, weight_type: str = "int8",
             keep_float: str | None = KEEP_FLOAT) -> dict[str, object]:
    """Write the int8 graph to ``out``; return what was done (for the benchmark's JSON).

    ``ops`` are the operator types to quantise (``None``: every type the tool supports).
    ``pieces`` are the calibration inputs (static mode; default :func:`calibration_pieces`).
    ``keep_float`` is a regular expression of node names left in float32 besides the
    front end (``None``: none); it must match at least one node.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # the symbolic shape pass fails on the dynamic time axis (floor(...) < 0 unknown)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        exclude = [] if quantize_frontend else frontend_nodes(model)
        if keep_float:
            kept_nodes = [n.name for n in model.graph.node if re.search(keep_float, n.name)]
            if not kept_nodes:
                raise ValueError(f"keep_float {keep_float!r} matches no node")
            exclude += [n for n in kept_nodes if n not in exclude]
        wtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[weight_type]
        op_types = list(ops) if ops else None
        if mode == "dynamic":
            quantize_dynamic(str(pre), str(out), op_types_to_quantize=op_types,
                             per_channel=per_channel, reduce_range=reduce_range,
                             weight_type=wtype, nodes_to_exclude=exclude)
            n_calib = 0
        elif mode == "static":
            calib = list(pieces) if pieces is not None else calibration_pieces()
            n_calib = len(calib)
            method = {"minmax": CalibrationMethod.MinMax,
                      "percentile": CalibrationMethod.Percentile,
                      "entropy": CalibrationMethod.Entropy}[calib_method]
            extra: dict[str, object] = {}
            if calib_method == "percentile":
                extra["CalibPercentile"] = 99.999
            quantize_static(str(pre), str(out), PieceReader(calib), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=op_types, per_channel=per_channel,
                            reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=wtype, nodes_to_exclude=exclude,
                            calibrate_method=method, extra_options=extra)
        else:
            raise ValueError(f"mode must be static or dynamic, got {mode!r}")
    q = onnx.load(str(out))
    kept = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    kept["quantization"] = (f"{mode} {'int8' if weight_type == 'int8' else 'uint8'} weights "
                            f"({'per-channel' if per_channel else 'per-tensor'}"
                            f"{', reduce_range' if reduce_range else ''}), ops "
                            f"{','.join(ops) if ops else 'all'}, front end "
                            f"{'quantised' if quantize_frontend else 'float32'}"
                            + (f", float32 nodes {keep_float!r}" if keep_float else "")
                            + (f", calibration {n_calib} x {PIECE} samples of {CALIB_SET} "
                               f"({calib_method})" if mode == "static" else ""))
    del q.metadata_props[:]
    for k, v in kept.items():
        q.metadata_props.add(key=k, value=v)
    onnx.save(q, str(out))
    return {"mode": mode, "per_channel": per_channel, "reduce_range": reduce_range,
            "quantize_frontend": quantize_frontend, "ops": list(ops) if ops else "all",
            "weight_type": weight_type, "keep_float": keep_float, "calibration_pieces": n_calib, "calib_method": calib_method if mode == "static" else None,
            "excluded_nodes": len(exclude), "bytes": out.stat().st_size,
            "seconds": round(time.perf_counter() - t0, 1), "description": kept["quantization"]}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=SRC)
    ap.add_argument("--shipped", action="store_true",
                    help="quantise every shipped frames graph into models/*_frames_int8.onnx")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "campplus_frames_int8.onnx")
    ap.add_argument("--mode", choices=["static", "dynamic"], default="static")
    ap.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--reduce-range", action="store_true", help="7-bit weights (AVX2 saturation)")
    ap.add_argument("--quantize-frontend", action="store_true",
                    help="also quantise the fbank front end (DFT Conv, mel MatMul, Log)")
    ap.add_argument("--ops", default="Conv",
                    help="comma-separated operator types to quantise, or 'all' (default Conv)")
    ap.add_argument("--speech", type=Path, default=SPEECH)
    ap.add_argument("--calib-files", type=int, default=100)
    ap.add_argument("--calib-per-file", type=int, default=2)
    ap.add_argument("--calib-method", choices=["minmax", "percentile", "entropy"], default="percentile",
                    help="percentile = 99.999th percentile of |activation| (default)")
    ap.add_argument("--weight-type", choices=["int8", "uint8"], default="int8")
    ap.add_argument("--keep-float", default=KEEP_FLOAT,
                    help="regex of node names kept float32 besides the front end ('' for none)")
    args = ap.parse_args(argv)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    ops = None if args.ops == "all" else [o for o in args.ops.split(",") if o]
    pieces = (calibration_pieces(args.speech, args.calib_files, args.calib_per_file)
              if args.mode == "static" else None)
    jobs = [(args.src, args.out)]
    if args.shipped:
        jobs = [(SRC.with_name(name), SRC.with_name(name.replace(".onnx", "_int8.onnx")))
                for name in SHIPPED]
    for src, out in jobs:
        info = quantize(src, out, args.mode, args.per_channel, args.quantize_frontend, ops,
                        pieces, args.calib_method, args.reduce_range, args.weight_type,
                        args.keep_float or None)
        print(f"wrote {out} ({info['bytes']:,} bytes) in {info['seconds']} s: "
              f"{info['description']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
