"""MLflow "models from code" entry point for :class:`ImrOutcomePyfunc`.

MLflow copies this file into the logged model and runs it at load time, so the model is
defined by code rather than a pickle. Never imported by the package itself.
"""

import mlflow.models

from imr_outcome.model.pyfunc import ImrOutcomePyfunc

mlflow.models.set_model(ImrOutcomePyfunc())
