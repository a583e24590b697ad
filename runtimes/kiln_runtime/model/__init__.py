"""The ``model`` runtime: a class with ``load`` and ``predict``, served as ``POST /predict``.

class Model:
    def load(self) -> None:
        self.scale = 2
    def predict(self, x: float, text: str = "") -> float:
        return x * self.scale
"""
