"""Pipeline steps that make a real model bundle misbehave, for canary tests.

They live in their own module so a model server (with tests/ on its path) can unpickle them.
"""

import time

from sklearn.base import BaseEstimator, TransformerMixin


class Failing(TransformerMixin, BaseEstimator):
    """Raises on every prediction: the server answers 500."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        raise RuntimeError("injected fault")


class Slow(TransformerMixin, BaseEstimator):
    """Answers correctly, `seconds` late."""

    def __init__(self, seconds: float = 0.2):
        self.seconds = seconds

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        time.sleep(self.seconds)
        return X
