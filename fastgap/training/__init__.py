"""Training internals: target selection and splits (``targets``), the epoch loop (``loop``).

The entry point is ``fastgap.train.train(TrainConfig)``.
"""
