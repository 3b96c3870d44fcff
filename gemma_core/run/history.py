"""Bounded metric histories: a million-step run holds as many points as a thousand-step one."""

from __future__ import annotations


class BoundedSeries:
    """Keeps at most ``capacity`` points; when full, every other point is dropped.

    Points then arrive with a doubled stride, so the kept points stay evenly
    spread over the whole run, the first included.
    """

    def __init__(self, capacity: int = 2048) -> None:
        self.capacity = capacity - capacity % 2
        self.points: list[tuple] = []
        self.stride = 1
        self._count = 0

    def append(self, point: tuple) -> None:
        if self._count % self.stride == 0:
            self.points.append(point)
            if len(self.points) >= self.capacity:
                self.points = self.points[::2]
                self.stride *= 2
        self._count += 1

    def snapshot(self) -> tuple[tuple, ...]:
        return tuple(self.points)
