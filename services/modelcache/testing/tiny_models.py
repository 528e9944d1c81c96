"""Small, deterministic, *loadable* model repos for the test mirror.

Every builder returns ``dict[str, bytes]`` (repo-relative POSIX path -> file content), ready to be
published on :class:`modelcache.testing.hfmirror.HFMirror` and later loaded offline from a hub-cache
snapshot directory. Same library versions in, byte-identical files out: weights come from fixed
seeds, the SentencePiece model is trained single-threaded on a fixed text, and the ONNX graph is
built from constants.

- :func:`tiny_siglip_repo`: a random ``SiglipModel`` + ``SiglipProcessor`` (SentencePiece tokenizer).
- :func:`tiny_clip_repo`: a random ``CLIPModel`` + ``CLIPProcessor`` (byte-level BPE tokenizer).
- :func:`yunet_like_onnx`: an ONNX graph with OpenCV YuNet's exact inputs and outputs, which
  ``cv2.FaceDetectorYN`` runs; it "detects" bright grid cells (see its docstring).

torch, transformers, sentencepiece and onnx are imported inside the builders, so importing this
module costs nothing and needs none of them.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------

SEED = 1234

# Plain English text (written for these tests) that the SigLIP SentencePiece model is trained on.
# It has to be varied enough for a unigram vocabulary of SIGLIP_VOCAB_SIZE pieces.
_CORPUS = """\
A photo of a cat sitting on a red chair near the open window.
A photo of a dog running across the green park on a sunny afternoon.
The quick brown fox jumps over the lazy dog while the children laugh.
Two people walk along the beach at sunset, holding hands and talking quietly.
A bowl of fresh fruit with apples, bananas and oranges stands on the kitchen table.
The old man reads a newspaper on a wooden bench in the middle of the square.
A small boat floats on the calm lake, surrounded by tall mountains covered in snow.
Three birds sit on a power line above a busy street full of cars and buses.
A woman with a yellow umbrella waits for the train at a crowded station.
The chef slices onions and tomatoes for a soup that smells of garlic and pepper.
A child draws a house, a tree and a bright sun with colourful crayons.
The library is quiet; students study for their exams between long rows of books.
A black and white photograph shows a city skyline at night with glowing windows.
Farmers harvest wheat in golden fields while a tractor moves slowly behind them.
The musician plays a guitar on the corner, and a few people stop to listen.
A cup of hot coffee and a slice of chocolate cake wait on a plate by the laptop.
Rain falls on the roof of the garage, and water runs down into the garden.
A group of friends plays football on a dusty field after school.
The museum displays ancient coins, broken pottery and a statue of a horse.
A close-up picture of a flower with purple petals and a bee collecting pollen.
The doctor listens to the heartbeat of a patient and writes a short note.
An airplane takes off from the airport as the clouds turn pink in the evening.
A teacher explains a difficult problem on the blackboard with a piece of chalk.
The baker opens the shop early, and the smell of warm bread fills the street.
A portrait of a smiling girl with curly hair and a blue scarf around her neck.
Snow covers the village, and smoke rises from every chimney into the cold air.
A cyclist rides up a steep hill, breathing hard but never giving up.
The fisherman throws his net into the sea and waits patiently for the catch.
A family eats dinner together, sharing stories about their day at work and school.
The robot on the factory floor lifts heavy boxes and places them on a moving belt.
A face looks out of the train window, watching forests and rivers pass by.
The night sky is full of stars, and the moon shines over the sleeping town.
Someone left a bicycle leaning against the fence next to the blue door.
A painting of a ship in a storm hangs above the fireplace in the living room.
The gardener waters roses, cuts the grass and plants seeds for the spring.
Every morning the neighbour walks her two small dogs around the block.
A laptop, a notebook and a pen lie on the desk beside a cup of green tea.
The hikers follow a narrow path through the forest to reach the waterfall.
A picture of a person wearing glasses, a hat and a warm winter jacket.
Kids build a sandcastle with towers, walls and a deep moat filled with water.
"""

SIGLIP_VOCAB_SIZE = 256


def _collect(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory``, keyed by its POSIX path relative to it, sorted."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def seeded_model(model_class, config):
    """``model_class(config)`` in eval mode, its random weights drawn from the fixed seed."""
    import torch

    torch.manual_seed(SEED)
    return model_class(config).eval()


def _save_seeded(model_class, config, processor, out: Path) -> dict[str, bytes]:
    """Build ``model_class(config)`` from the fixed seed, save it with its processor, return the files."""
    seeded_model(model_class, config).save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return _collect(out)


def write_repo(files: dict[str, bytes], directory: Path) -> Path:
    """Write a repo dict (as returned by the builders) under ``directory``; return ``directory``."""
    directory = Path(directory)
    for rel, content in files.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return directory


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide transformers' progress bars and warnings while building; restore them afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------------------------
# SigLIP
# --------------------------------------------------------------------------------------------


def _sentencepiece_model(vocab_size: int = SIGLIP_VOCAB_SIZE) -> bytes:
    """A unigram SentencePiece model trained on ``_CORPUS``, laid out like SigLIP's ``spiece.model``.

    Ids 0/1/2 are ``<pad>``/``</s>``/``<unk>`` as in google/siglip-*; there is no BOS. The
    normaliser is ``identity`` (SiglipTokenizer lower-cases and strips punctuation itself), which
    keeps the file a few KiB instead of the ~240 KiB that the NFKC character map costs.
    """
    import sentencepiece as spm

    sink = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS.lower().splitlines()),
        model_writer=sink,
        model_type="unigram",
        vocab_size=vocab_size,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        normalization_rule_name="identity",
        character_coverage=1.0,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        minloglevel=2,
    )
    return sink.getvalue()


def siglip_processor(workdir: Path, *, image_size: int, max_length: int):
    """A ``SiglipProcessor`` as google/siglip-* have: the SentencePiece tokenizer of
    :func:`_sentencepiece_model` (its ``spiece.model`` written into ``workdir``, which must not
    exist yet) with ``model_max_length`` ``max_length``, and an image processor that resizes to
    ``image_size`` x ``image_size`` and normalises with mean and std 0.5. The image processor is
    built with the PIL backend (the default one needs torchvision) and is saved as
    ``SiglipImageProcessor``, like the real checkpoints'."""
    from transformers import SiglipImageProcessorPil, SiglipProcessor, SiglipTokenizer

    spiece = Path(workdir) / "spiece.model"
    spiece.parent.mkdir(parents=True)
    spiece.write_bytes(_sentencepiece_model())
    tokenizer = SiglipTokenizer(vocab_file=str(spiece), model_max_length=max_length)
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_siglip_repo() -> dict[str, bytes]:
    """A random SigLIP checkpoint with its processor, as ``save_pretrained`` writes them.

    Architecture: text and vision towers with hidden size 32, 2 layers, 2 heads, MLP 64; text
    vocabulary ``SIGLIP_VOCAB_SIZE`` with 16 positions (the tokenizer's ``model_max_length`` is 16,
    so ``padding="max_length"`` works as with the real checkpoints); 32x32 images in 8x8 patches.
    ``get_image_features`` / ``get_text_features`` give ``pooler_output`` of shape ``(N, 32)``
    (transformers 5 returns a ``BaseModelOutputWithPooling`` there, not a tensor).

    The image processor is built with the PIL backend (the default one needs torchvision) but is
    saved as ``SiglipImageProcessor``, like the real checkpoints; loading picks whichever backend
    is installed. Files, as transformers 5.23 writes them: config.json, model.safetensors,
    processor_config.json (the image processor nested inside; no preprocessor_config.json),
    spiece.model, tokenizer_config.json (no special_tokens_map.json). About 250 KB.
    """
    from transformers import SiglipConfig, SiglipModel

    with _quiet(), tempfile.TemporaryDirectory(prefix="tiny-siglip-") as tmp:
        root = Path(tmp)
        processor = siglip_processor(root / "src", image_size=32, max_length=16)
        tokenizer = processor.tokenizer
        config = SiglipConfig(
            text_config={
                "vocab_size": tokenizer.vocab_size,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "max_position_embeddings": 16,
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "bos_token_id": None,
            },
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 32,
                "patch_size": 8,
            },
        )
        return _save_seeded(SiglipModel, config, processor, root / "repo")


# --------------------------------------------------------------------------------------------
# CLIP
# --------------------------------------------------------------------------------------------

#: Words that get whole-word BPE merges in the tiny CLIP vocabulary (every other word is spelt
#: out byte by byte). Enough to check that merges.txt is read.
CLIP_MERGED_WORDS = ("a", "photo", "of", "cat", "dog", "face", "the")


def _byte_alphabet() -> list[str]:
    """The 256 printable characters that byte-level BPE uses for the bytes 0..255, in byte order.

    Bytes that are already visible Latin-1 characters stand for themselves; every other byte
    (controls, space, DEL, NBSP, soft hyphen...) is shifted to a code point from U+0100 upwards,
    in increasing byte order. This is the mapping GPT-2 and CLIP use.
    """
    visible = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    alphabet = []
    shifted = 0
    for byte in range(256):
        if byte in visible:
            alphabet.append(chr(byte))
        else:
            alphabet.append(chr(256 + shifted))
            shifted += 1
    return alphabet


def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-shaped byte-level BPE vocabulary: bytes, bytes + ``</w>``, a few merges, specials.

    The order follows openai/clip-vit-*: the 256 byte symbols, the same with the end-of-word
    marker, then one entry per merge, then ``<|startoftext|>`` and ``<|endoftext|>``.
    """
    alphabet = _byte_alphabet()
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet]
    merges: list[tuple[str, str]] = []
    known = set(tokens)
    for word in CLIP_MERGED_WORDS:
        symbols = [*list(word[:-1]), word[-1] + "</w>"]
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            merged = pair[0] + pair[1]
            if merged not in known:
                merges.append(pair)
                tokens.append(merged)
                known.add(merged)
            symbols = [merged, *symbols[2:]]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def tiny_clip_repo() -> dict[str, bytes]:
    """A random CLIP checkpoint with its processor, as ``save_pretrained`` writes them.

    Architecture: text and vision towers with hidden size 32, 2 layers, 4 heads, MLP 64, projection
    dim 16; the text side has a byte-level BPE vocabulary (see :func:`_clip_vocab_and_merges`) and
    16 positions (``model_max_length`` 16); 30x30 images (shortest edge 30, centre crop 30) in
    10x10 patches. ``get_image_features`` / ``get_text_features`` give ``pooler_output`` of shape
    ``(N, 16)``.

    Files, as transformers 5.23 writes them: config.json, model.safetensors, processor_config.json,
    tokenizer.json, tokenizer_config.json; transformers 5 writes no vocab.json / merges.txt (it
    would read them, merges header-only included, if tokenizer.json were absent). About 270 KB.
    """
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    with _quiet(), tempfile.TemporaryDirectory(prefix="tiny-clip-") as tmp:
        root = Path(tmp)
        tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)  # type: ignore[arg-type]
        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": 30},
            crop_size={"height": 30, "width": 30},
        )
        processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)

        config = CLIPConfig(
            text_config={
                "vocab_size": len(vocab),
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "max_position_embeddings": 16,
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
                "projection_dim": 16,
            },
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "image_size": 30,
                "patch_size": 10,
                "projection_dim": 16,
            },
            projection_dim=16,
        )
        return _save_seeded(CLIPModel, config, processor, root / "repo")


# --------------------------------------------------------------------------------------------
# YuNet-like face detector
# --------------------------------------------------------------------------------------------

YUNET_STRIDES = (8, 16, 32)
#: Brightness (mean of the B, G and R values, 0..255) at which a cell scores exactly 0.5.
YUNET_MIDPOINT = 127.5
#: Brightness units per unit of logit: score = sigmoid((brightness - MIDPOINT) / TEMPERATURE).
YUNET_TEMPERATURE = 8.0
#: Landmarks as fractions of the detected cell, in YuNet's order: right eye, left eye, nose tip,
#: right mouth corner, left mouth corner (the subject's right is the image's left).
YUNET_LANDMARKS = ((0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8))


def yunet_brightness_for_score(score: float) -> float:
    """The cell brightness at which the YuNet-like graph reports ``score`` (0 < score < 1)."""
    import math

    return YUNET_MIDPOINT + YUNET_TEMPERATURE * math.log(score / (1.0 - score))


def yunet_like_onnx(input_size: tuple[int, int] | None = (320, 320)) -> bytes:
    """An ONNX model with the I/O of OpenCV's YuNet (face_detection_yunet_2023mar.onnx).

    Input ``input``: float32 ``[1, 3, H, W]``, the raw 0..255 BGR pixels that
    ``cv2.FaceDetectorYN`` feeds (it pads the image with black up to multiples of 32 first).
    ``input_size`` is ``(width, height)`` as in ``FaceDetectorYN.create``; it only sets the shape
    the file *declares* (the real 2023mar file declares a static 640 x 640; ``None`` declares
    symbolic ``height``/``width`` like the 2026may re-export). Every operator is shape-agnostic,
    so the graph runs at any size that is a multiple of 32, and with OpenCV 5.0's default (new)
    DNN engine ``setInputSize`` works whatever is declared. Under the classic engine
    (``OPENCV_FORCE_DNN_ENGINE=1``) ``create`` fails on a static declaration and ``setInputSize``
    fails on any model ("Input shape redefinition is not allowed"), the real YuNet included.
    Opset 13, IR version 8, about 2.5 KB.

    Outputs, for each stride s in 8, 16, 32, with N = (H/s) * (W/s) cells in row-major order:
    ``cls_s`` and ``obj_s`` ``[1, N, 1]``, ``bbox_s`` ``[1, N, 4]``, ``kps_s`` ``[1, N, 10]``
    (N declared as a number for a static ``input_size``, which must then be multiples of 32, and
    left unnamed for ``None``).

    What it "detects": every s x s cell of the padded image whose brightness b (the mean of all
    its B, G, R values) is high. ``cls = obj = sigmoid((b - 127.5) / 8)``, so the score that
    FaceDetectorYN reports, ``sqrt(cls * obj)``, is that sigmoid: 0.5 at b = 127.5, 0.9 at
    b ~ 145.1 (:func:`yunet_brightness_for_score`), ~1 for white, ~1e-7 for black. ``bbox`` is the
    constant ``(0.5, 0.5, 0, 0)``, which FaceDetectorYN decodes to the cell itself
    (x = col*s, y = row*s, w = h = s); ``kps`` are the constant cell fractions in
    ``YUNET_LANDMARKS``. So a white square on black gives one face per 8-, 16- and 32-pixel grid
    cell that it covers enough of (at least 57% of the cell for score_threshold 0.9); cells of one
    stride do not overlap and nested ones have IoU <= 0.25, so NMS at YuNet's usual 0.3 keeps them
    all (a grid-aligned 64 x 64 white square: 64 + 16 + 4 = 84 faces). All black gives none.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    height: str | int
    width: str | int
    if input_size is None:
        height, width = "height", "width"
    else:
        w, h = (int(v) for v in input_size)
        if w <= 0 or h <= 0 or w % 32 or h % 32:
            raise ValueError(f"declared input size must be positive multiples of 32, got {input_size!r}")
        width, height = w, h

    def cells(stride: int) -> int | None:
        if isinstance(height, str) or isinstance(width, str):
            return None
        return (height // stride) * (width // stride)

    def const(name: str, values) -> onnx.TensorProto:
        array = np.asarray(values)
        array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
        return numpy_helper.from_array(array, name)

    kps_bias = [fraction for point in YUNET_LANDMARKS for fraction in point]
    initializers = [
        # 1x1 convolutions over the pooled B, G, R means.
        const("score_w", np.full((1, 3, 1, 1), 1.0 / (3.0 * YUNET_TEMPERATURE))),
        const("score_b", [-YUNET_MIDPOINT / YUNET_TEMPERATURE]),
        const("bbox_w", np.zeros((4, 3, 1, 1))),
        const("bbox_b", [0.5, 0.5, 0.0, 0.0]),
        const("kps_w", np.zeros((10, 3, 1, 1))),
        const("kps_b", kps_bias),
        const("shape_1", [1, -1, 1]),
        const("shape_4", [1, -1, 4]),
        const("shape_10", [1, -1, 10]),
    ]
    nodes = []
    outputs: dict[str, list] = {"cls": [], "obj": [], "bbox": [], "kps": []}
    for s in YUNET_STRIDES:
        pooled, logit = f"pool_{s}", f"logit_{s}"
        nodes += [
            helper.make_node("AveragePool", ["input"], [pooled], kernel_shape=[s, s], strides=[s, s]),
            helper.make_node("Conv", [pooled, "score_w", "score_b"], [logit]),
        ]
        for head in ("cls", "obj"):
            nodes += [
                helper.make_node("Sigmoid", [logit], [f"{head}_map_{s}"]),
                helper.make_node("Reshape", [f"{head}_map_{s}", "shape_1"], [f"{head}_{s}"]),
            ]
            outputs[head].append(helper.make_tensor_value_info(f"{head}_{s}", TensorProto.FLOAT, [1, cells(s), 1]))
        for head, channels in (("bbox", 4), ("kps", 10)):
            nodes += [
                helper.make_node("Conv", [pooled, f"{head}_w", f"{head}_b"], [f"{head}_map_{s}"]),
                helper.make_node("Transpose", [f"{head}_map_{s}"], [f"{head}_nhwc_{s}"], perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", [f"{head}_nhwc_{s}", f"shape_{channels}"], [f"{head}_{s}"]),
            ]
            outputs[head].append(
                helper.make_tensor_value_info(f"{head}_{s}", TensorProto.FLOAT, [1, cells(s), channels])
            )

    graph = helper.make_graph(
        nodes,
        "yunet_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, height, width])],
        outputs["cls"] + outputs["obj"] + outputs["bbox"] + outputs["kps"],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="modelcache-tests",
        opset_imports=[helper.make_opsetid("", 13)],
        ir_version=8,
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# --------------------------------------------------------------------------------------------
# Text embeddings: a tiny random BERT, with MiniLM's tokenizer or a small WordPiece one of its own
# --------------------------------------------------------------------------------------------

_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _wordpiece_vocab() -> dict[str, int]:
    """A small uncased WordPiece vocabulary: the specials, every word of ``_CORPUS``, and every
    printable ASCII character alone and as a ``##`` continuation (so any English text tokenizes
    into known pieces, never all ``[UNK]``)."""
    import re

    words = sorted(set(re.findall(r"[a-z]+", _CORPUS.lower())))
    chars = [chr(c) for c in range(ord("!"), ord("~") + 1) if not chr(c).isupper()]
    tokens = [*_BERT_SPECIALS, *chars, *(f"##{c}" for c in chars), *(w for w in words if len(w) > 1)]
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}


def tiny_bert_repo(tokenizer_dir: Path | None = None) -> dict[str, bytes]:
    """A loadable text-embedding repo (hidden size 64, 2 layers, mean pooling + normalise, as
    a sentence-transformers repo declares them), with the tokenizer of ``tokenizer_dir``, or
    (``None``) an uncased WordPiece tokenizer of about 400 pieces built from
    :func:`_wordpiece_vocab`: then the whole repo needs no file from anywhere. About 0.5 MB."""
    import json
    import tempfile

    from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer

    with _quiet(), tempfile.TemporaryDirectory() as tmp:
        tokenizer: Any
        if tokenizer_dir is None:
            tokenizer = BertTokenizer(vocab=_wordpiece_vocab(), do_lower_case=True, model_max_length=128)
        else:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=128,
        )
        root = Path(tmp)
        files = _save_seeded(BertModel, config, tokenizer, root / "repo")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    files["modules.json"] = json.dumps(modules).encode()
    files["1_Pooling/config.json"] = json.dumps(
        {"word_embedding_dimension": 64, "pooling_mode_mean_tokens": True}
    ).encode()
    files["sentence_bert_config.json"] = json.dumps({"max_seq_length": 128}).encode()
    return files


# --------------------------------------------------------------------------------------------
# Whisper: a random openai-whisper checkpoint with tiny.en's vocabulary and alignment-head layout
# --------------------------------------------------------------------------------------------

#: Dimensions of the random checkpoint. The text side keeps tiny.en's 4 layers x 6 heads (the
#: service sets openai-whisper's alignment heads for ``tiny.en``, a mask of exactly that shape)
#: and its vocabulary size 51864 (English-only: the ``.en`` tokenizer); everything else is small.
TINY_WHISPER_DIMS = {
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 48,
    "n_audio_head": 6,
    "n_audio_layer": 1,
    "n_vocab": 51864,
    "n_text_ctx": 448,
    "n_text_state": 48,
    "n_text_head": 6,
    "n_text_layer": 4,
}


#: End-of-text in the English-only (GPT-2) vocabulary.
TINY_WHISPER_EOT = 50256


def tiny_whisper_checkpoint() -> bytes:
    """A random Whisper in openai-whisper's checkpoint format (``torch.save`` of ``{"dims": {...},
    "model_state_dict": {...}}``, float16, ``dims`` a plain dict so ``weights_only=True`` loads it),
    to be served as ``tiny.en.pt``. It transcribes any audio to the empty text, at once. Built
    from the weights' shapes alone, so openai-whisper itself is not needed; about 6 MB.

    The tensors are exactly those ``whisper.model.Whisper(ModelDimensions(**TINY_WHISPER_DIMS))``
    has; see :func:`random_whisper_checkpoint`.
    """
    return random_whisper_checkpoint(TINY_WHISPER_DIMS)


def random_whisper_checkpoint(dims: dict[str, int]) -> bytes:
    """A random openai-whisper checkpoint of any size (``dims`` as in ``whisper.model.ModelDimensions``),
    in the format of :func:`tiny_whisper_checkpoint`, that transcribes any audio to the empty text.

    The tensors are exactly those ``whisper.model.Whisper(ModelDimensions(**dims))`` has, with its
    initial values where they matter (the audio encoder's sinusoidal positions, layer norms at
    1/0) and seeded random values elsewhere, so a forward costs what the real model's costs. The
    end-of-text id is the English-only vocabulary's (50256) for 51864 tokens, the multilingual
    one's (50257) otherwise; the first timestamp is 107 ids above it in both.
    """
    import math

    import torch

    d = dims
    eot = TINY_WHISPER_EOT if d["n_vocab"] == 51864 else TINY_WHISPER_EOT + 1
    generator = torch.Generator().manual_seed(SEED)
    state: dict[str, torch.Tensor] = {}

    def rand(name: str, *shape: int, scale: float = 0.02) -> None:
        state[name] = torch.randn(*shape, generator=generator) * scale

    def norm(name: str, width: int) -> None:
        state[f"{name}.weight"] = torch.ones(width)
        state[f"{name}.bias"] = torch.zeros(width)

    def block(prefix: str, width: int, cross: bool) -> None:
        parts = [("attn", "attn_ln")] + ([("cross_attn", "cross_attn_ln")] if cross else [])
        for attn, ln in parts:
            for proj in ("query", "key", "value", "out"):
                rand(f"{prefix}.{attn}.{proj}.weight", width, width)
                if proj != "key":  # whisper's key projection has no bias
                    state[f"{prefix}.{attn}.{proj}.bias"] = torch.zeros(width)
            norm(f"{prefix}.{ln}", width)
        rand(f"{prefix}.mlp.0.weight", 4 * width, width)
        state[f"{prefix}.mlp.0.bias"] = torch.zeros(4 * width)
        rand(f"{prefix}.mlp.2.weight", width, 4 * width)
        state[f"{prefix}.mlp.2.bias"] = torch.zeros(width)
        norm(f"{prefix}.mlp_ln", width)

    audio, text = d["n_audio_state"], d["n_text_state"]
    rand("encoder.conv1.weight", audio, d["n_mels"], 3)
    state["encoder.conv1.bias"] = torch.zeros(audio)
    rand("encoder.conv2.weight", audio, audio, 3)
    state["encoder.conv2.bias"] = torch.zeros(audio)
    # openai-whisper's sinusoids(n_audio_ctx, n_audio_state)
    increment = math.log(10000) / (audio // 2 - 1)
    inv = torch.exp(-increment * torch.arange(audio // 2))
    scaled = torch.arange(d["n_audio_ctx"])[:, None] * inv[None, :]
    state["encoder.positional_embedding"] = torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)
    for i in range(d["n_audio_layer"]):
        block(f"encoder.blocks.{i}", audio, cross=False)
    norm("encoder.ln_post", audio)
    rand("decoder.token_embedding.weight", d["n_vocab"], text)
    rand("decoder.positional_embedding", d["n_text_ctx"], text, scale=0.01)
    for i in range(d["n_text_layer"]):
        block(f"decoder.blocks.{i}", text, cross=True)
    # Make it answer at once: the final layer norm outputs one fixed vector v at every position,
    # and end-of-text's embedding is v scaled up, so end-of-text wins every step where the
    # decoding rules allow it (right after the initial timestamp, 107 ids above it).
    v = torch.randn(text, generator=generator)
    state["decoder.ln.weight"] = torch.zeros(text)
    state["decoder.ln.bias"] = v
    state["decoder.token_embedding.weight"][eot] = v * 0.5
    # and the first timestamp nearly as high: "<|0.00|>" is then a confident first token, the
    # decoding's average log-probability stays high and no temperature fallback is tried
    state["decoder.token_embedding.weight"][eot + 107] = v * 0.45
    out = io.BytesIO()
    checkpoint = {"dims": dict(d), "model_state_dict": {k: v.half() for k, v in sorted(state.items())}}
    torch.save(checkpoint, out)
    return out.getvalue()
