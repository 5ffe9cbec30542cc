"""Flow control between inserts and samples (after Reverb's rate limiter).

The limiter tracks ``diff = samples_per_insert * inserted - sampled`` (counted from
the moment the buffer first reaches ``min_size``) and keeps it inside
``[-tolerance, +tolerance]``:

* sampling is allowed once ``size >= min_size`` and while the sample keeps
  ``diff - n >= -tolerance`` (a fast learner cannot overfit a slow fleet);
* inserting is allowed while ``diff + spi * n <= +tolerance`` (a fast fleet is
  slowed down instead of racing past the learner).

With ``samples_per_insert == 0`` the band is off and only ``min_size`` applies.
Settings whose band is narrower than one sample call or one insert would leave both
sides waiting forever; they are refused at construction.
"""

from __future__ import annotations


class RateLimiterError(ValueError):
    pass


class RateLimiter:
    def __init__(
        self,
        min_size: int,
        samples_per_insert: float = 0.0,
        tolerance: float = 0.0,
        max_sample: int = 1,
        max_insert: int = 1,
    ):
        if min_size < 1:
            raise RateLimiterError(f"min_size: must be >= 1, got {min_size}")
        if samples_per_insert < 0:
            raise RateLimiterError(f"samples_per_insert: must be >= 0, got {samples_per_insert}")
        if samples_per_insert > 0:
            need = max(max_sample, samples_per_insert * max_insert)
            if tolerance < need:
                raise RateLimiterError(
                    f"tolerance: {tolerance} is below one sample call or insert ({need:g} "
                    "sampled transitions); samplers and inserters would deadlock"
                )
        self.min_size = min_size
        self.spi = float(samples_per_insert)
        self.tolerance = float(tolerance)
        self.inserted = 0  # counted once min_size is reached
        self.sampled = 0
        self._started = False

    @property
    def diff(self) -> float:
        return self.spi * self.inserted - self.sampled

    def can_insert(self, n: int) -> bool:
        """An insert of ``n`` transitions keeps the band (the buffer's size is no part
        of it: before ``min_size`` every insert is admitted)."""
        if self.spi == 0 or not self._started:
            return True
        return self.diff + self.spi * n <= self.tolerance

    def largest_insert(self) -> int | None:
        """The most transitions one insert can ever be admitted with (None = no limit)."""
        if self.spi == 0:
            return None
        return int(2 * self.tolerance / self.spi)

    def can_sample(self, size: int, n: int) -> bool:
        if size < self.min_size:
            return False
        if self.spi == 0:
            return True
        return self.diff - n >= -self.tolerance

    def why_not_sample(self, size: int, n: int) -> str:
        if size < self.min_size:
            return f"buffer holds {size} of min_size {self.min_size} transitions"
        return (
            f"samples-per-insert band: {self.sampled} sampled vs {self.inserted} inserted "
            f"at ratio {self.spi:g} (tolerance {self.tolerance:g})"
        )

    def record_insert(self, size_after: int, n: int) -> None:
        if self._started:
            self.inserted += n
        elif size_after >= self.min_size:
            self._started = True

    def record_sample(self, n: int) -> None:
        self.sampled += n
