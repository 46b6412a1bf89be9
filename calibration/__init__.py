"""calibration: int8 calibration data (inference preprocessing over an image folder) and QDQ static quantisation.

`reader.ImageFolderCalibrationReader` (an onnxruntime CalibrationDataReader), `quantize.quantize_int8`
(onnxruntime quantize_static, QDQ, TensorRT-compatible symmetric scales) and `quantize.evaluate_int8`
(label agreement / mIoU against fp32). numpy, OpenCV and onnxruntime only: no torch.
"""
