"""A model class: load() once, predict() per request, a generator streams."""

from collections.abc import Iterator

from pydantic import BaseModel


class Scaled(BaseModel):
    value: float
    label: str


class Model:
    def load(self) -> None:
        self.factor = 2.0

    def predict(self, x: float, label: str = "none") -> Scaled:
        if x < 0:
            raise ValueError("x must not be negative")
        return Scaled(value=x * self.factor, label=label)


class Counter:
    def load(self) -> None:
        self.words = ["one", "two", "three"]

    def predict(self, n: int = 3) -> Iterator[str]:
        yield from self.words[:n]
