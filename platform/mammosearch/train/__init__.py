"""Learning an embedding from the archive's own labels: data, folds, network, fit, export.

`mammosearch train` runs `runner.train_model`: patient-grouped cross-validation with
out-of-fold figures beside the base space, then a final model on every labelled image,
exported as ONNX into a model directory that serves as a backbone (`embed/trained.py`).
"""
