"""int8 quantisation of the live-stream frames graph: speed against accuracy.

    python bench/quantization.py [--small] [--out bench/out] [--speech DIR]
        [--int8 PATH ...] [--variants main,per-tensor,...]

The live stream runs every piece of speech (0.5 s plus 0.5 s of context: 16,000 samples)
through ``models/campplus_frames.onnx`` and pools the frames (``streamer.pooling.Stats``,
head graph ``models/campplus_head.onnx``). This benchmark makes int8 copies of that graph
with ``models/quantize_frames.py`` (onnxruntime's quantisation tools; calibration speech
from LibriSpeech train-clean voices that are not tested here) and compares them with the
float32 graph in the same run:

1. speed: ms per 16,000-sample piece at batch 1 and batch 8, onnxruntime with 1 intra-op
   thread, float32 and int8 runs interleaved, median of many runs, and int8 / float32;
2. fidelity: cosine between the int8 and the float32 pooled embedding of the same piece
   (every piece of every test item) and of the same test item (all its pieces pooled);
3. accuracy: closed-set top-1 and EER (protocol of ``bench/accuracy.py``: enrol each
   person on <= 8 s of VAD speech with the float32 *whole* graph ``campplus.onnx``; test
   item = the VAD speech of one other file) on LibriSpeech test-other (10 speakers),
   Common Voice fa and AMI segments, and pooled; test items are embedded as the server
   embeds a segment: the first 1 s piece, then 0.5 s pieces each with 0.5 s of context,
   then the tail (with context), pooled, through the float32 vs the int8 frames graph.

Besides the copies it makes, it measures the shipped copy ``models/campplus_frames_int8.onnx``
(``shipped``: the graph live streams run by default, ``model.int8_channels``).

Adoption criteria (all must hold for a variant): int8 / float32 < 0.8 at batch 1 and 8,
top-1 unchanged on every dataset, EER not worse by more than 0.5 points on any dataset,
median per-piece cosine >= 0.99. Prints a table and writes ``OUT/quantization.json``.
``--small`` is a quick run (a few files, < 60 s). If a variant cannot be made, its error
is recorded and the float32 figures are still measured.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # numpy next to onnxruntime on 2 cores

import argparse
import contextlib
import importlib.util
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import accuracy as acc
import numpy as np
import onnxruntime as ort

from streamer.config import load_config
from streamer.evaluation import SAMPLE_RATE, enrol_test_split, load_manifest
from streamer.pooling import Stats, total
from streamer.stream_embedder import FRAME_SAMPLES, pair_paths, precision_path

PIECE_S, CONTEXT_S, FIRST_S = 0.5, 0.5, 1.0
PIECE = int((PIECE_S + CONTEXT_S) * SAMPLE_RATE)  # 16,000 samples per network run
MIN_TAIL = FRAME_SAMPLES  # a tail shorter than one frame is not pooled
ADOPT = {"max_ratio": 0.8, "max_eer_increase": 0.005, "min_median_cosine": 0.99}

#: name -> keyword arguments of quantize_frames.quantize (the first is the main candidate)
VARIANTS: dict[str, dict[str, Any]] = {
    # the candidate: quantize_frames.py's defaults
    "static_pc": {"mode": "static", "per_channel": True},
    "static_pt": {"mode": "static", "per_channel": False},
    # every Conv but the front end's, MinMax ranges: the tool used out of the box
    "static_pc_every_conv": {"mode": "static", "per_channel": True, "keep_float": None,
                             "calib_method": "minmax"},
    "static_pc_frontend": {"mode": "static", "per_channel": True, "quantize_frontend": True},
    "dynamic_pc": {"mode": "dynamic", "per_channel": True},
    # every operator type the tool supports (not run by default: far off, see README)
    "static_pc_all_ops": {"mode": "static", "per_channel": True, "ops": None},
}
DEFAULT_VARIANTS = ["static_pc", "static_pt", "static_pc_every_conv", "static_pc_frontend",
                    "dynamic_pc"]
SMALL_VARIANTS = ["static_pc"]


def load_quantizer() -> Any:
    spec = importlib.util.spec_from_file_location("quantize_frames", REPO / "models" / "quantize_frames.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def session(path: Path) -> ort.InferenceSession:
    """One intra-op thread, sequential, as ``StreamEmbedder`` opens the graph."""
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    o.log_severity_level = 3
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def r4(x: float) -> float:
    return round(float(x), 4)


# -- pieces -------------------------------------------------------------------------------


def pieces_of(x: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """The server's jobs for a segment ``x``: (pcm, samples pooled at its end).

    First piece: the first FIRST_S (no earlier audio); then every PIECE_S with CONTEXT_S
    before it; then the tail after the last piece, also with context so every run is
    PIECE samples long (segments shorter than PIECE are one run of their own length)."""
    n = len(x)
    if n <= PIECE:
        return [(x, n)]
    out = [(x[:PIECE], PIECE)]
    hop = int(PIECE_S * SAMPLE_RATE)
    end = int(FIRST_S * SAMPLE_RATE)
    while end + hop <= n:
        out.append((x[end + hop - PIECE:end + hop], hop))
        end += hop
    if n - end >= MIN_TAIL:
        out.append((x[n - PIECE:], n - end))
    return out


def frame_stats(sess: ort.InferenceSession, jobs: Sequence[tuple[np.ndarray, int]],
                batch: int = 8) -> list[Stats]:
    """Pooled Stats of each job (equal-length jobs run in batches of ``batch``)."""
    out: list[Stats | None] = [None] * len(jobs)
    groups: dict[int, list[int]] = {}
    for i, (pcm, _) in enumerate(jobs):
        groups.setdefault(len(pcm), []).append(i)
    for idx in groups.values():
        for k in range(0, len(idx), batch):
            chunk = idx[k:k + batch]
            x = np.stack([np.asarray(jobs[i][0], dtype=np.float32) for i in chunk])
            frames = sess.run(["frames"], {"pcm": x})[0]
            for row, i in enumerate(chunk):
                keep = min(frames.shape[2], max(1, round(jobs[i][1] / FRAME_SAMPLES)))
                out[i] = Stats.of_frames(frames[row, :, frames.shape[2] - keep:])
    return [s for s in out if s is not None]


class Head:
    def __init__(self, path: Path) -> None:
        self.sess = session(path)

    def __call__(self, s: Stats) -> np.ndarray:
        v = self.sess.run(["embedding"], {"stats": s.mean_std()[None, :]})[0][0]
        return np.asarray(v, dtype=np.float64)


# -- speed --------------------------------------------------------------------------------


def speed(sessions: dict[str, ort.InferenceSession], pieces: Sequence[np.ndarray],
          runs: dict[int, int]) -> dict[str, Any]:
    """Median ms per run and per piece; graphs interleaved run by run (same load)."""
    out: dict[str, Any] = {}
    for b, n in runs.items():
        x = np.stack([pieces[i % len(pieces)] for i in range(b)]).astype(np.float32)
        for s in sessions.values():  # warm-up
            s.run(["frames"], {"pcm": x})
            s.run(["frames"], {"pcm": x})
        times: dict[str, list[float]] = {k: [] for k in sessions}
        ratios: dict[str, list[float]] = {k: [] for k in sessions}
        for r in range(n):
            order = list(sessions) if r % 2 == 0 else list(reversed(sessions))
            lap: dict[str, float] = {}
            for k in order:
                t0 = time.perf_counter()
                sessions[k].run(["frames"], {"pcm": x})
                lap[k] = time.perf_counter() - t0
            for k in sessions:
                times[k].append(lap[k])
                ratios[k].append(lap[k] / lap["fp32"])
        out[f"batch{b}"] = {
            k: {"ms_per_run": round(1000 * float(np.median(t)), 2),
                "ms_per_piece": round(1000 * float(np.median(t)) / b, 2),
                "ratio_to_fp32": r4(float(np.median(t)) / float(np.median(times["fp32"]))),
                "ratio_to_fp32_paired_median": r4(float(np.median(ratios[k]))),
                "runs": n}
            for k, t in times.items()}
    return out


# -- accuracy -----------------------------------------------------------------------------


def datasets(speech: Path, small: bool) -> list[tuple[str, list[Any], int | None, int | None]]:
    libri = load_manifest(speech / acc.LIBRI)
    cv = load_manifest(speech / "commonvoice_fa")
    ami_root = speech / acc.AMI
    ami = [u for u in load_manifest(ami_root)
           if u.path.relative_to(ami_root).as_posix().startswith("segments/")]
    if small:
        return [(acc.LIBRI, libri, 3, 2), ("ami_segments", ami, 2, 2)]
    return [(acc.LIBRI, libri, None, None), ("commonvoice_fa", cv, None, None),
            ("ami_segments", ami, None, None)]


def eval_accuracy(b: acc.Bench, speech: Path, small: bool, frames: dict[str, ort.InferenceSession],
                  head: Head) -> dict[str, Any]:
    """Per dataset and pooled: top-1 / EER per graph, and int8-vs-fp32 cosines."""
    per: dict[str, Any] = {}
    cents_all, labels_all, offset = [], [], 0
    tests_all: dict[str, list[np.ndarray]] = {k: [] for k in frames}
    piece_cos: dict[str, list[float]] = {k: [] for k in frames if k != "fp32"}
    item_cos: dict[str, list[float]] = {k: [] for k in frames if k != "fp32"}
    for name, utts, max_spk, max_tests in datasets(speech, small):
        enrol, test = enrol_test_split(utts, acc.ENROL_S)
        people = list(enrol)[:max_spk]
        t0 = time.perf_counter()
        cents = np.array([b.embed(b.item([u.path for u in enrol[p]], cap_s=acc.ENROL_S))
                          for p in people])
        labels: list[int] = []
        vecs: dict[str, list[np.ndarray]] = {k: [] for k in frames}
        d_piece: dict[str, list[float]] = {k: [] for k in piece_cos}
        d_item: dict[str, list[float]] = {k: [] for k in item_cos}
        n_pieces, speech_s = 0, 0.0
        for k, p in enumerate(people):
            for u in test[p][:max_tests]:
                x = b.item([u.path])
                jobs = pieces_of(x)
                n_pieces += len(jobs)
                speech_s += len(x) / SAMPLE_RATE
                labels.append(k)
                stats = {g: frame_stats(s, jobs) for g, s in frames.items()}
                ref_pieces = [head(s) for s in stats["fp32"]]
                for g, st in stats.items():
                    v = head(total(st))  # type: ignore[arg-type]
                    vecs[g].append(v)
                    if g != "fp32":
                        d_piece[g] += [float(np.dot(head(s), r)) for s, r in zip(st, ref_pieces)]
                        d_item[g].append(float(np.dot(v, vecs["fp32"][-1])))
        res: dict[str, Any] = {"people": len(people), "test_items": len(labels),
                               "pieces": n_pieces, "test_speech_s": round(speech_s, 1)}
        for g in frames:
            c = acc.closed_set(cents, labels, np.array(vecs[g]))
            res[g] = {"top1": r4(c["top1"]), "eer": r4(c["eer"]),
                      "eer_threshold": r4(c["eer_threshold"]),
                      "genuine_median": r4(float(np.median(c["genuine"])))}
            tests_all[g] += vecs[g]
            if g != "fp32":
                res[g]["cosine_piece"] = cos_summary(d_piece[g])
                res[g]["cosine_item"] = cos_summary(d_item[g])
                piece_cos[g] += d_piece[g]
                item_cos[g] += d_item[g]
        per[name] = res
        cents_all.append(cents)
        labels_all += [lab + offset for lab in labels]
        offset += len(people)
        log(f"  {name}: {len(people)} people, {len(labels)} items, {n_pieces} pieces "
            f"({time.perf_counter() - t0:.0f} s)")
    pooled: dict[str, Any] = {"people": offset, "test_items": len(labels_all)}
    C = np.concatenate(cents_all)
    for g in frames:
        c = acc.closed_set(C, labels_all, np.array(tests_all[g]))
        pooled[g] = {"top1": r4(c["top1"]), "eer": r4(c["eer"]), "eer_threshold": r4(c["eer_threshold"])}
        if g != "fp32":
            pooled[g]["cosine_piece"] = cos_summary(piece_cos[g])
            pooled[g]["cosine_item"] = cos_summary(item_cos[g])
    per["pooled"] = pooled
    return per


def cos_summary(v: Sequence[float]) -> dict[str, Any]:
    a = np.clip(np.asarray(v, dtype=np.float64), -1.0, 1.0)
    if not a.size:
        return {"n": 0}
    return {"n": int(a.size), "median": r4(float(np.median(a))), "p5": r4(float(np.percentile(a, 5))),
            "p1": r4(float(np.percentile(a, 1))), "min": r4(float(a.min())), "mean": r4(float(a.mean()))}


def verdict(name: str, sp: dict[str, Any], accuracy: dict[str, Any]) -> dict[str, Any]:
    ratios = {b: sp[b][name]["ratio_to_fp32"] for b in sp}
    faster = all(r < ADOPT["max_ratio"] for r in ratios.values())
    sets = [k for k in accuracy if k != "pooled"]
    top1_same = all(accuracy[k][name]["top1"] >= accuracy[k]["fp32"]["top1"] for k in sets)
    eer_ok = all(accuracy[k][name]["eer"] - accuracy[k]["fp32"]["eer"] <= ADOPT["max_eer_increase"] + 1e-9
                 for k in sets)
    cos_ok = accuracy["pooled"][name]["cosine_piece"]["median"] >= ADOPT["min_median_cosine"]
    return {"faster": faster, "top1_unchanged": top1_same, "eer_holds": eer_ok,
            "cosine_holds": cos_ok, "adopt": faster and top1_same and eer_ok and cos_ok}


# -- main ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="a few files, one variant (< 60 s)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--speech", type=Path, default=REPO.parent / "shared" / "speech")
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml")
    ap.add_argument("--variants", default=None,
                    help=f"comma-separated, of {', '.join(VARIANTS)} (default: {', '.join(DEFAULT_VARIANTS)}; --small: "
                         f"{', '.join(SMALL_VARIANTS)})")
    ap.add_argument("--int8", type=Path, action="append", default=[],
                    help="also benchmark this ready-made int8 frames graph")
    ap.add_argument("--runs", type=int, default=None, help="timed runs at batch 1 (batch 8: a third)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    cfg = load_config(args.config)
    b = acc.Bench(cfg)
    frames_path, head_path = pair_paths(cfg.model_path)
    names = (args.variants.split(",") if args.variants
             else SMALL_VARIANTS if args.small else DEFAULT_VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}")

    graphs: dict[str, Path] = {"fp32": frames_path}
    made: dict[str, Any] = {}
    errors: dict[str, str] = {}
    tmp = tempfile.TemporaryDirectory()
    try:
        qf = load_quantizer()
        calib = qf.calibration_pieces(args.speech, n_files=4 if args.small else 100,
                                      per_file=2, config=args.config)
        log(f"calibration: {len(calib)} pieces of {qf.PIECE} samples from {qf.CALIB_SET}")
    except Exception as exc:  # noqa: BLE001 - recorded; the float32 figures are still measured
        qf, calib = None, []
        errors["quantizer"] = f"{type(exc).__name__}: {exc}"
        log(f"quantisation tooling unavailable: {errors['quantizer']}")
    for n in names if qf is not None else []:
        out = Path(tmp.name) / f"{n}.onnx"
        try:
            kw = dict(VARIANTS[n])
            with contextlib.redirect_stdout(sys.stderr):  # the calibrator prints progress
                made[n] = qf.quantize(frames_path, out,
                                      pieces=calib if kw["mode"] == "static" else None, **kw)
            session(out)  # loadable
            graphs[n] = out
            log(f"made {n}: {made[n]['description']} ({made[n]['seconds']} s)")
        except Exception as exc:  # noqa: BLE001 - recorded; the other graphs are still measured
            errors[n] = f"{type(exc).__name__}: {exc}"
            log(f"variant {n} failed: {errors[n]}\n{traceback.format_exc(limit=3)}")
    shipped = precision_path(frames_path, "int8")  # the copy model.int8_channels runs
    if shipped.is_file():
        graphs["shipped"] = shipped
        made["shipped"] = {"description": f"shipped file {shipped.name}",
                           "bytes": shipped.stat().st_size}
    for p in args.int8:
        graphs[p.stem] = p
        made[p.stem] = {"description": f"given file {p}", "bytes": p.stat().st_size}

    sessions = {k: session(p) for k, p in graphs.items()}
    runs = args.runs or (6 if args.small else 60)
    sp_pieces = calib or [b.item([u.path])[:PIECE]  # real speech either way
                          for u in load_manifest(args.speech / acc.IMPOSTORS)[:4]]
    log(f"speed: {runs} runs at batch 1, {max(3, runs // 3)} at batch 8")
    sp = speed(sessions, sp_pieces, {1: runs, 8: max(3, runs // 3)})
    log("accuracy:")
    accuracy = eval_accuracy(b, args.speech, args.small, sessions, Head(head_path))
    verdicts = {n: verdict(n, sp, accuracy) for n in graphs if n != "fp32"}
    tmp.cleanup()

    result = {
        "meta": {"small": args.small, "model_id": b.emb.model_id, "frames_graph": frames_path.name,
                 "onnxruntime": ort.__version__, "intra_op_threads": 1, "piece_samples": PIECE,
                 "seconds": round(time.perf_counter() - t_start, 1),
                 "adoption_criteria": ADOPT, "cpu_count": os.cpu_count(),
                 "load_average": [round(v, 2) for v in os.getloadavg()]},
        "variants": made, "errors": errors, "speed": sp, "accuracy": accuracy, "verdict": verdicts,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quantization.json").write_text(json.dumps(result, indent=2) + "\n")
    report(result)
    return 0


def report(res: dict[str, Any]) -> None:
    sp, accy = res["speed"], res["accuracy"]
    graphs = list(sp["batch1"])
    print(f"frames graph int8 vs float32, onnxruntime {res['meta']['onnxruntime']}, 1 thread, "
          f"{res['meta']['piece_samples']}-sample pieces")
    print("\n== speed (median ms per piece; ratio = int8 / float32 in the same run)")
    print(f"{'graph':22s} {'batch 1':>9s} {'ratio':>6s} {'batch 8':>9s} {'ratio':>6s}")
    for g in graphs:
        b1, b8 = sp["batch1"][g], sp["batch8"][g]
        print(f"{g:22s} {b1['ms_per_piece']:9.2f} {b1['ratio_to_fp32']:6.3f} "
              f"{b8['ms_per_piece']:9.2f} {b8['ratio_to_fp32']:6.3f}")
    print("\n== accuracy (top-1 / EER; cosine int8 vs float32 per piece: median, p5, min)")
    for ds, r in accy.items():
        print(f"-- {ds}: {r['people']} people, {r['test_items']} items")
        for g in graphs:
            line = f"   {g:20s} top-1 {100 * r[g]['top1']:5.1f} %  EER {100 * r[g]['eer']:5.2f} %"
            if g != "fp32":
                c = r[g]["cosine_piece"]
                ci = r[g]["cosine_item"]
                line += (f"  cos piece {c['median']:.4f} / {c['p5']:.4f} / {c['min']:.4f}"
                         f"  item {ci['median']:.4f} / {ci['min']:.4f}")
            print(line)
    print("\n== verdict (faster: ratio < 0.8 at batch 1 and 8; top-1 unchanged; EER +<= 0.5 pt; "
          "median piece cosine >= 0.99)")
    for g, v in res["verdict"].items():
        print(f"   {g:20s} " + "  ".join(f"{k} {'yes' if val else 'NO'}" for k, val in v.items()))
    for g, e in res["errors"].items():
        print(f"   {g}: FAILED {e}")


if __name__ == "__main__":
    sys.exit(main())
