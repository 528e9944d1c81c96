"""Image and text embeddings in one space: SigLIP or CLIP through transformers."""

from __future__ import annotations

import numpy as np

from modelcache.service.engines.base import LoadSpec


def _features(output):
    return output if hasattr(output, "shape") else output.pooler_output


class VisionEmbedder:
    def __init__(self, spec: LoadSpec) -> None:
        import torch
        from transformers import AutoModel, AutoProcessor

        from modelcache.service.engines.device import torch_dtype

        self.processor = AutoProcessor.from_pretrained(spec.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(spec.path, local_files_only=True, dtype=torch_dtype(spec.device))
        self.model.to(spec.device).eval()
        self.device = spec.device
        self.dtype = torch_dtype(spec.device)
        self.model_type = self.model.config.model_type
        with torch.inference_mode():
            self.dimensions = int(self.embed(["dimension probe"])[0].shape[1])

    def _normalise(self, tensor) -> np.ndarray:
        import torch

        return torch.nn.functional.normalize(tensor.float(), p=2, dim=1).cpu().numpy()

    def embed(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        import torch

        # SigLIP was trained on text padded to its full length; CLIP pads to the longest.
        padding = "max_length" if "siglip" in self.model_type else True
        enc = self.processor(text=texts, padding=padding, truncation=True, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            vectors = _features(self.model.get_text_features(**enc))
        mask = enc.get("attention_mask")
        tokens = mask.sum(dim=1).tolist() if mask is not None else [int(enc["input_ids"].shape[1])] * len(texts)
        return self._normalise(vectors), [int(t) for t in tokens]

    def embed_images(self, images: list) -> np.ndarray:
        import torch

        enc = self.processor(images=images, return_tensors="pt")
        pixels = enc["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            vectors = _features(self.model.get_image_features(pixel_values=pixels))
        return self._normalise(vectors)
