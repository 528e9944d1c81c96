"""Text embeddings from an ONNX graph: on ONNX Runtime (``MODELCACHE_TEXT_ENGINE=onnx`` or
``onnx-int8``) or on OpenVINO (``openvino``, which reads the same fp32 graph).

The graph is the one the lock names (``LoadSpec.graph``): the repo's own, or one the
downloader exported or quantized. The tokenizer is the repo's ``tokenizer.json`` through
the ``tokenizers`` library, and pooling is the same code as the torch engine's
(``engines/text.py``), so the engines differ only in how the transformer runs. Neither
torch nor transformers is imported: the process stays small.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from modelcache.service.engines.base import LoadSpec
from modelcache.service.engines.text import TextEngine, length_limit, read_pooling
from modelcache.service.faults import UnsupportedModel

TORCH_REMEDY = "set MODELCACHE_TEXT_ENGINE=torch for this model"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _threads(spec: LoadSpec) -> int:
    """The model process's CPU budget (MODELCACHE_THREADS, else every CPU it may use), as torch gets."""
    return spec.threads or len(os.sched_getaffinity(0))


class GraphTextEmbedder(TextEngine):
    """The repo's tokenizer and limits, and a graph that takes ``INPUTS`` and gives token
    vectors; a subclass opens the graph (``_open``) and runs it (``_run``)."""

    runtime = ""

    def __init__(self, spec: LoadSpec) -> None:
        from tokenizers import Tokenizer

        if spec.graph is None:
            raise UnsupportedModel(f"the lock names no ONNX graph for {spec.name}; {TORCH_REMEDY}")
        if not (spec.path / "tokenizer.json").is_file():
            raise UnsupportedModel(
                f"{spec.name} has no tokenizer.json (a fast tokenizer), which the {self.runtime} engine reads; "
                f"{TORCH_REMEDY}"
            )
        self.pooling = read_pooling(spec.path)
        config = _json(spec.path / "config.json")
        tokenizer_config = _json(spec.path / "tokenizer_config.json")
        declared = tokenizer_config.get("model_max_length")
        self.max_length = length_limit(
            self.pooling,
            declared if isinstance(declared, int) else None,
            config.get("max_position_embeddings"),
        )
        self.tokenizer = Tokenizer.from_file(str(spec.path / "tokenizer.json"))
        self.tokenizer.no_padding()  # TextEngine pads the ids of texts and of token-id inputs alike
        self.tokenizer.enable_truncation(self.max_length)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        pad = tokenizer_config.get("pad_token")
        pad_id = self.tokenizer.token_to_id(pad) if isinstance(pad, str) else None
        self.pad_id = pad_id if pad_id is not None else int(config.get("pad_token_id") or 0)

        inputs, outputs = self._open(spec.graph, _threads(spec))
        self.inputs = inputs
        if "input_ids" not in inputs or set(inputs) - set(INPUTS):
            raise UnsupportedModel(
                f"{spec.graph.name} takes inputs {inputs}; the engine feeds {', '.join(INPUTS)}; {TORCH_REMEDY}"
            )
        named = [n for n in ("last_hidden_state", "token_embeddings") if n in outputs]
        self.output = named[0] if named else outputs[0]
        self._finish(spec.path)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def _hidden(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        columns = {"input_ids": input_ids, "attention_mask": mask}
        hidden = self._run({n: columns.get(n, np.zeros_like(input_ids)) for n in self.inputs})
        if hidden.ndim != 3:
            raise UnsupportedModel(f"the graph's output {self.output!r} is not token vectors [batch, tokens, size]")
        return hidden

    def _open(self, graph: Path, threads: int) -> tuple[list[str], list[str]]:
        """Load the graph; its input names and output names."""
        raise NotImplementedError

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class OnnxTextEmbedder(GraphTextEmbedder):
    runtime = "ONNX"

    def _open(self, graph: Path, threads: int) -> tuple[list[str], list[str]]:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Its threads spin between the parallel steps of a forward (fast), but not once the
        # forward is done: idle spinning at normal priority starved the speech-to-text
        # process at nice 10 beside it (a 4.6 s transcription took 91.6 s with embeddings
        # 10 ms apart; 4.7 s without the idle spinning, for 0.7 ms more per request).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        return [i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()]

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([self.output], feeds)[0]


class OpenVinoTextEmbedder(GraphTextEmbedder):
    """OpenVINO's CPU plugin on the fp32 ONNX graph, in its latency mode (one stream, every
    thread of the budget on one request). It picks the precision the CPU runs fastest:
    bfloat16 on CPUs with AMX or AVX-512 BF16, float32 elsewhere (both within cosine 0.999
    of the torch engine, tested)."""

    runtime = "OpenVINO"

    def _open(self, graph: Path, threads: int) -> tuple[list[str], list[str]]:
        import openvino

        core = openvino.Core()
        model = core.read_model(str(graph))
        self.compiled = core.compile_model(
            model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        )
        self.request = self.compiled.create_infer_request()
        inputs = [i.get_any_name() for i in self.compiled.inputs]
        outputs = [o.get_any_name() for o in self.compiled.outputs]
        return inputs, outputs

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        result = self.request.infer(feeds)
        return np.array(result[self.compiled.output(self.output)])  # a copy: the request's buffer is reused
