"""The model file MLflow loads for julnet's pyfunc flavour (MLflow "models from code": no pickled objects)."""

import mlflow.models

from julnet.pyfunc import DubbingModel

mlflow.models.set_model(DubbingModel())
