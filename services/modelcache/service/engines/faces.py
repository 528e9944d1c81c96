"""Face detection with OpenCV's FaceDetectorYN and the YuNet ONNX model."""

from __future__ import annotations

import numpy as np

from modelcache.service.engines.base import Face, LoadSpec


class YuNetDetector:
    def __init__(self, spec: LoadSpec) -> None:
        import cv2

        self.detector = cv2.FaceDetectorYN.create(str(spec.path), "", (320, 320), 0.9, 0.3, 5000)
        probe = np.zeros((64, 64, 3), np.uint8)
        self.detect(probe, score_threshold=0.9, nms_threshold=0.3, top_k=10)  # fail now, not at the first request

    def detect(self, image_bgr: np.ndarray, *, score_threshold: float, nms_threshold: float, top_k: int) -> list[Face]:
        height, width = image_bgr.shape[:2]
        detector = self.detector
        detector.setInputSize((width, height))
        detector.setScoreThreshold(float(score_threshold))
        detector.setNMSThreshold(float(nms_threshold))
        detector.setTopK(int(top_k))
        _count, rows = detector.detect(image_bgr)
        faces = []
        for row in rows if rows is not None else []:
            values = [float(v) for v in row]
            marks = [(values[4 + 2 * i], values[5 + 2 * i]) for i in range(5)]
            faces.append(Face(values[0], values[1], values[2], values[3], marks, values[14]))
        return faces
