"""Text embeddings on ONNX Runtime (``MODELCACHE_TEXT_ENGINE=onnx`` or ``onnx-int8``).

The graph is the one the lock names (``LoadSpec.graph``): the repo's ``onnx/model.onnx``,
or one the downloader exported or quantized. The tokenizer is the repo's
``tokenizer.json`` through the ``tokenizers`` library, and pooling is the same code as the
torch engine's (``engines/text.py``), so the two differ only in how the transformer runs.
Neither torch nor transformers is imported: the process stays small.
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


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class OnnxTextEmbedder(TextEngine):
    def __init__(self, spec: LoadSpec) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        if spec.graph is None:
            raise UnsupportedModel(f"the lock names no ONNX graph for {spec.name}; {TORCH_REMEDY}")
        if not (spec.path / "tokenizer.json").is_file():
            raise UnsupportedModel(
                f"{spec.name} has no tokenizer.json (a fast tokenizer), which the ONNX engine reads; {TORCH_REMEDY}"
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

        options = onnxruntime.SessionOptions()
        # the model process's CPU budget (MODELCACHE_THREADS, else every CPU it may use), as torch gets
        options.intra_op_num_threads = spec.threads or len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Its threads spin between the parallel steps of a forward (fast), but not once the
        # forward is done: idle spinning at normal priority starved the speech-to-text
        # process at nice 10 beside it (a 4.6 s transcription took 91.6 s with embeddings
        # 10 ms apart; 4.7 s without the idle spinning, for 0.7 ms more per request).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = onnxruntime.InferenceSession(str(spec.graph), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        unknown = set(self.inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if "input_ids" not in self.inputs or unknown:
            raise UnsupportedModel(
                f"{spec.graph.name} takes inputs {self.inputs}; the ONNX engine feeds input_ids, attention_mask "
                f"and token_type_ids; {TORCH_REMEDY}"
            )
        outputs = [o.name for o in self.session.get_outputs()]
        named = [n for n in ("last_hidden_state", "token_embeddings") if n in outputs]
        self.output = named[0] if named else outputs[0]
        self._finish(spec.path)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def _hidden(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        columns = {"input_ids": input_ids, "attention_mask": mask}
        feeds = {n: columns.get(n, np.zeros_like(input_ids)) for n in self.inputs}
        hidden = self.session.run([self.output], feeds)[0]
        if hidden.ndim != 3:
            raise UnsupportedModel(f"the graph's output {self.output!r} is not token vectors [batch, tokens, size]")
        return hidden
