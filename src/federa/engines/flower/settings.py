"""``flower:`` where the SuperLink is and how rounds tolerate failures (engine=flower)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from federa.settings import Section


class FlowerSettings(Section):
    """engine=flower: where the SuperLink is and how rounds tolerate failures."""

    mode: Literal["deployment", "simulation"] = "deployment"
    superlink: str = Field("127.0.0.1:9093", description="SuperLink address host:port (flwr run).")
    insecure: bool = True
    root_certificates: str | None = Field(None, description="CA certificate (PEM) of a TLS SuperLink.")
    min_replies: int | None = Field(
        None, ge=1, description="Aggregate a round if at least this many reply; None: half the sampled, rounded up."
    )
    round_timeout_s: float = Field(600.0, gt=0, description="Wait at most this long for a round's replies.")
    secagg_clip_range: float = Field(
        1.0, gt=0, description="secure_aggregation: client deltas must lie in [-x, x]; quantisation step 2x/2**22."
    )
