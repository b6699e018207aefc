"""ONNX Runtime and OpenVINO run the same exported model to the same vectors; `auto` picks
OpenVINO for int8 models only, and a setting can name either engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mammosearch.config import get_settings, settings_from_env
from mammosearch.embed import load_embedder, onnx_engines
from mammosearch.embed.onnx_engines import CHOICES_FILE, choose_engine, openvino_installed
from mammosearch.embed.onnx_runtime import OnnxEmbedder
from mammosearch.embed.quantize import quantize_int8
from tests.unit.embed.test_embed_precision import _images, _min_cosine


def test_auto_gives_fp32_to_onnx_runtime_and_int8_by_the_cpu_without_a_measurement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nowhere to keep a measurement: OpenVINO for int8 only where the CPU has VNNI/AMX."""
    assert choose_engine("auto", quantized=False) == "onnxruntime"
    for int8_dot_product in (False, True):
        monkeypatch.setattr(onnx_engines, "has_int8_dot_product", lambda v=int8_dot_product: v)
        expected = "openvino" if int8_dot_product and openvino_installed() else "onnxruntime"
        assert choose_engine("auto", quantized=True) == expected
    assert choose_engine("onnxruntime", quantized=True) == "onnxruntime"
    assert choose_engine("openvino", quantized=False) == "openvino"
    with pytest.raises(ValueError, match="MAMMOSEARCH_ONNX_ENGINE='tensorrt'.*auto, onnxruntime"):
        choose_engine("tensorrt", quantized=False)


def test_the_setting_names_the_engine(monkeypatch: pytest.MonkeyPatch, onnx_dir: Path) -> None:
    fp32 = load_embedder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)
    assert fp32.describe()["engine"] == "onnxruntime"
    assert settings_from_env({"MAMMOSEARCH_ONNX_ENGINE": "openvino"}).onnx_engine == "openvino"
    pytest.importorskip("openvino")
    monkeypatch.setenv("MAMMOSEARCH_ONNX_ENGINE", "openvino")
    get_settings.cache_clear()
    try:
        assert OnnxEmbedder(fp32.path).describe()["engine"] == "openvino"
    finally:
        monkeypatch.delenv("MAMMOSEARCH_ONNX_ENGINE")
        get_settings.cache_clear()


def test_both_engines_give_the_same_space(onnx_dir: Path) -> None:
    """fp32: the same vectors; int8: the same within rounding (each engine's int8 kernels),
    the same images and threads in one process."""
    pytest.importorskip("openvino")
    fp32 = load_embedder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)
    int8_path = quantize_int8(fp32.path, _images(4, seed=3), fp32.input_size_px)
    queries = _images(6, seed=8)
    for path, floor in ((fp32.path, 0.9999), (int8_path, 0.99)):
        runtime = OnnxEmbedder(path, engine="onnxruntime")
        openvino = OnnxEmbedder(path, engine="openvino")
        assert runtime.identity == openvino.identity
        by_runtime, by_openvino = runtime.embed_pil(queries), openvino.embed_pil(queries)
        assert by_runtime.shape == by_openvino.shape == (6, fp32.dim)
        assert _min_cosine(by_runtime, by_openvino) > floor, path.name
    served = OnnxEmbedder(int8_path).describe()["engine"]  # measured here, once
    (measured,) = json.loads((int8_path.parent / CHOICES_FILE).read_text()).values()
    assert served == measured["engine"]
    assert OnnxEmbedder(fp32.path).describe()["engine"] == "onnxruntime"


def _tiny_model(path: Path) -> Path:
    """(n, 3, h, w) -> (n, 3): a global average pool, which both engines run in microseconds."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["vectors"])],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["n", 3])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_auto_measures_an_int8_models_engines_once_per_model_and_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The faster engine here serves; the measurement is kept and reused, and taken again
    for another CPU (the machine changes under the product)."""
    pytest.importorskip("openvino")
    model = _tiny_model(tmp_path / "tiny.onnx")
    chosen = choose_engine("auto", True, model, tmp_path, input_size_px=8)
    choices = json.loads((tmp_path / CHOICES_FILE).read_text())
    (record,) = choices.values()
    speeds = record["images_per_s"]
    assert chosen == record["engine"] == max(speeds, key=speeds.__getitem__)
    assert set(speeds) == {"onnxruntime", "openvino"}

    other = "openvino" if chosen == "onnxruntime" else "onnxruntime"
    (key,) = choices
    choices[key]["engine"] = other  # a stored choice is obeyed, not measured again
    (tmp_path / CHOICES_FILE).write_text(json.dumps(choices))
    assert choose_engine("auto", True, model, tmp_path, input_size_px=8) == other

    monkeypatch.setattr(onnx_engines, "vector_extensions", lambda: "avx2")
    choose_engine("auto", True, model, tmp_path, input_size_px=8)
    assert len(json.loads((tmp_path / CHOICES_FILE).read_text())) == 2


def test_openvino_computes_float_parts_in_float32_on_every_cpu(onnx_dir: Path) -> None:
    """Not bfloat16 where the CPU has it (OpenVINO's default there): an image must embed
    to the same vector on every worker of an archive, whatever its CPU."""
    pytest.importorskip("openvino")
    from mammosearch.embed.onnx_engines import OpenVinoEngine

    fp32 = load_embedder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)
    engine = OpenVinoEngine(fp32.path)
    assert str(engine.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"


def test_an_openvino_model_serves_many_threads_at_once(onnx_dir: Path) -> None:
    """One infer request per thread: concurrent web requests never share one."""
    pytest.importorskip("openvino")
    from concurrent.futures import ThreadPoolExecutor

    fp32 = load_embedder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)
    embedder = OnnxEmbedder(fp32.path, engine="openvino")
    queries = [_images(1, seed=seed) for seed in range(8)]
    alone = [embedder.embed_pil(query) for query in queries]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(embedder.embed_pil, queries))
    for single, concurrent in zip(alone, together, strict=True):
        np.testing.assert_allclose(concurrent, single, rtol=0, atol=1e-5)


def test_onnx_runtime_threads_do_not_spin_between_runs(onnx_dir: Path) -> None:
    """A spinning thread pool doubled the CPU of embedding one uploaded image."""
    fp32 = load_embedder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)
    options = OnnxEmbedder(fp32.path, engine="onnxruntime").engine.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
