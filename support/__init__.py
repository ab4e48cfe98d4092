"""Support a reader may skip: what no chapter teaches.

Finding MNIST and image folders (`mnist`, `image_data`), flags (`flags`),
run folders, backups and resuming (`run_folder`, `callbacks`), numerics
(`numerics`), fast prediction over many images (`batch_prediction`), the
numbers in metrics.json (`evaluation`, `digit_classifier`) and one-line
errors (`errors`). The lesson is in the chapters and `training_loops.py`.
"""
